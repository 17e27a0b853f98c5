//! Arbitrary bytes that are JSON, rendered through every view of the shipped mapping files as
//! if Glance had sent them: rendering may refuse a value, never panic, and what it writes is JSON.
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
                // The two ways out (bytes for lists, a value for answers edited first) write the
                // same bytes. (Compared as bytes: serde_json's float parsing is not exact, so a
                // number read back from the output may differ in its last bit.)
                if let Ok(out) = view.render_ref(image, &ctx) {
                    let bytes = serde_json::to_vec(&out).expect("a rendered view serializes");
                    serde_json::from_slice::<Value>(&bytes).expect("the gateway writes JSON");
                    let value = view.render(image, &ctx).expect("both ways render the same image");
                    assert_eq!(bytes, serde_json::to_vec(&value).expect("a value serializes"));
                }
            }
        }
    }
});
