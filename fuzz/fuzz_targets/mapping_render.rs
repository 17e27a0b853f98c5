//! Arbitrary bytes that are JSON, rendered through every view of the shipped mapping files as
//! if Glance had sent them: rendering may refuse a value, never panic.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(doc) = serde_json::from_slice::<Value>(data) else { return };
    let ctx = common::context();
    // The document as one image, and, for a list page, each of its images.
    let mut images = vec![&doc];
    if let Some(Value::Array(list)) = doc.get("images") {
        images.extend(list);
    }
    for mapping in [&*common::NOVA_MAPPING, &*common::ALLIANCE_MAPPING] {
        for view in common::views(mapping) {
            for image in &images {
                if let Ok(out) = view.render(image, &ctx) {
                    serde_json::to_vec(&out).expect("a rendered view serializes");
                }
            }
        }
    }
});
