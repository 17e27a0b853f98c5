//! Arbitrary bytes that are JSON, rendered through every view of the shipped mapping files as
//! if Glance had sent them: rendering may refuse a value, never panic, and what it writes is JSON.
//! A list page is also walked raw, as the gateway walks Glance's pages: each image rendered
//! from its raw text says the same as the same image rendered from a parsed tree.
#![no_main]

mod common;

use image_gateway::mapping::{for_each_object, Node};
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
    for view in common::views() {
        for image in &images {
            // The two ways out of a tree (bytes for lists, a value for answers edited first)
            // write the same bytes. (Compared as bytes: serde_json's float parsing is not
            // exact, so a number read back from the output may differ in its last bit.)
            if let Ok(out) = view.render_ref(Node::Tree(image), &ctx) {
                let bytes = serde_json::to_vec(&out).expect("a rendered view serializes");
                serde_json::from_slice::<Value>(&bytes).expect("the gateway writes JSON");
                let value = view.render(image, &ctx).expect("both ways render the same image");
                assert_eq!(bytes, serde_json::to_vec(&value).expect("a value serializes"));
            }
        }
        // Raw: the page's own text for each number and string, so the output read back
        // equals the tree's rendering (parsed from the same text) exactly. Only for pages
        // the gateway would walk to the end: a refused one may have shown images first.
        if for_each_object(data, "images", |_| Ok::<_, String>(())).is_err() {
            continue;
        }
        let mut trees = images.iter().skip(1);
        let _ = for_each_object(data, "images", |raw| {
            let tree = trees.next().expect("as many raw images as parsed ones");
            let from_raw = view.render_ref(Node::Object(raw), &ctx).map(|r| serde_json::to_vec(&r));
            match (from_raw, view.render(tree, &ctx)) {
                (Ok(bytes), Ok(value)) => {
                    let bytes = bytes.expect("a rendered view serializes");
                    let read: Value = serde_json::from_slice(&bytes).expect("the gateway writes JSON");
                    assert_eq!(read, value, "raw and parsed renderings differ");
                }
                (Err(_), Err(_)) => {}
                (raw, tree) => panic!("raw {:?} but tree {:?}", raw.map(drop), tree.map(drop)),
            }
            Ok::<_, String>(())
        });
    }
});
