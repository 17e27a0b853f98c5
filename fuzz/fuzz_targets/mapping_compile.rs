//! Arbitrary bytes as a mapping file: compiling must return Ok or Err, never panic. A file
//! that compiles is then used: its views render a fixed image and its routes are looked up.
#![no_main]

mod common;

use image_gateway::alliance::AllianceAction;
use image_gateway::mapping::{split_path, Action, Mapping};
use image_gateway::nova::NovaAction;
use libfuzzer_sys::fuzz_target;
use serde_json::json;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    try_file::<NovaAction>(text);
    try_file::<AllianceAction>(text);
});

fn try_file<A: Action>(text: &str) {
    if let Ok(mapping) = Mapping::<A>::compile("fuzz.toml", text) {
        let image = json!({
            "os_distro": "ubuntu", "auto_disk_config": "True", "instance_uuid": "0b8e6a0e-5d7c-4d0b-9d7e-3c4f2b1a0e9d",
            "block_device_mapping": "[{\"boot_index\": 0}]", "name": "n", "status": "active", "size": 1,
            "min_ram": 0, "owner": "p", "id": "5d1f0f6e-7b8a-4c3d-9e2f-1a0b9c8d7e6f", "tags": ["a"],
            "created_at": "2025-01-02T03:04:05Z", "updated_at": "2025-01-02T03:04:05.123456",
        });
        let ctx = common::context();
        for view in mapping.views() {
            let _ = view.render(&image, &ctx);
        }
        if let Some(segments) = split_path("/images/detail") {
            let _ = mapping.routes.lookup("GET", &segments);
        }
    }
}
