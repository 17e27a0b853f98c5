//! Arbitrary bytes as what a client controls: a request path, a query string, a JSON body and
//! a microversion header. Each parser may refuse them, never panic.
#![no_main]

mod common;

use http::{HeaderMap, HeaderValue};
use image_gateway::mapping::{split_path, ApiVersion};
use image_gateway::nova::microversion;
use libfuzzer_sys::fuzz_target;

const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"];
const MAX_VERSION: ApiVersion = ApiVersion::new(2, 104);

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // The path, split and routed.
    if let Some(segments) = split_path(&text) {
        for method in METHODS {
            let _ = common::NOVA_MAPPING.routes.lookup(method, &segments);
            let _ = common::ALLIANCE_MAPPING.routes.lookup(method, &segments);
        }
    }

    // The query string, through every query map.
    let query: Vec<(String, String)> = url::form_urlencoded::parse(data).into_owned().collect();
    for map in common::queries() {
        let _ = map.translate(&query);
        for (key, _) in &query {
            let _ = map.knows(key);
        }
    }

    // The body, against the Alliance create/update schema.
    if let Ok(body) = serde_json::from_slice(data) {
        let schema = common::ALLIANCE_MAPPING.request("image").expect("alliance.toml has request.image");
        let _ = schema.parse(&body);
    }

    // The microversion headers: the standard one, the legacy one, and both at once.
    if let Ok(value) = HeaderValue::from_bytes(data) {
        for names in [
            &[microversion::HEADER][..],
            &[microversion::LEGACY_HEADER],
            &[microversion::LEGACY_HEADER, microversion::HEADER],
        ] {
            let mut headers = HeaderMap::new();
            for name in names {
                headers.append(*name, value.clone());
            }
            let _ = microversion::requested(&headers, MAX_VERSION);
        }
    }
});
