//! Which dialects are served, from which mapping file and where, is the configuration's
//! (`[dialects.*]`), not the code's.

mod common;

use common::{client, send, Harness};
use image_gateway::config::{DialectConfig, DialectKind};
use serde_json::json;

#[tokio::test]
async fn dialects_are_served_at_their_configured_mounts_from_their_configured_files() {
    let h = Harness::get();
    let dir = tempfile::tempdir().unwrap();
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings");
    // A file of another name, with a field renamed, shows that this file is the one served.
    let nova = std::fs::read_to_string(shipped.join("nova.toml")).unwrap().replace("\nname = {", "\ntitle = {");
    std::fs::write(dir.path().join("compute-images.toml"), nova).unwrap();
    std::fs::copy(shipped.join("alliance.toml"), dir.path().join("alliance.toml")).unwrap();
    std::fs::copy(shipped.join("glance_v1.toml"), dir.path().join("glance_v1.toml")).unwrap();
    let mappings_dir = dir.path().to_owned();
    let gw = h.gateway(|c| {
        c.mappings_dir = Some(mappings_dir);
        c.dialects.insert(
            "nova".into(),
            DialectConfig {
                kind: DialectKind::Nova,
                mapping: "compute-images.toml".into(),
                mounts: vec!["/compute/v2.1".into()],
                legacy_mounts: Vec::new(),
            },
        );
        c.dialects.get_mut("alliance").unwrap().mounts = vec!["/alliance".into(), "/ccsr".into()];
        c.alliance.namespaces.insert("ccsr1".into(), common::trusted_headers_namespace());
    });
    let image = h.block_on(async {
        let a = send(
            client().post(format!("{}/v2/images", h.glance_url)).headers(h.admin()).json(&json!({"name": "mounted"})),
        )
        .await;
        a.json()
    });
    let id = image["id"].as_str().unwrap();
    let get = |path: &str| send(client().get(format!("{}{path}", gw.base)).headers(h.member()));

    let shown = get(&format!("/compute/v2.1/images/{id}")).await;
    assert_eq!(shown.status, 200, "{}", shown.text);
    assert_eq!(shown.json()["image"]["title"], json!("mounted"), "{}", shown.text);
    // The default mounts serve nothing now; the root lists the one root there is.
    for gone in [format!("/v2.1/images/{id}"), format!("/v2/images/{id}"), format!("/images/{id}")] {
        assert_eq!(get(&gone).await.status, 404, "{gone}");
    }
    let versions = get("/").await.json();
    assert_eq!(versions["versions"].as_array().unwrap().len(), 1, "{versions}");
    assert!(versions["versions"][0]["links"][0]["href"].as_str().unwrap().ends_with("/compute/v2.1/"));

    for mount in ["/alliance", "/ccsr"] {
        let a = send(
            client()
                .get(format!("{}{mount}/images", gw.base))
                .header("x-target-ns", "ccsr1")
                .header("x-environment-id", &h.project),
        )
        .await;
        assert_eq!(a.status, 200, "{mount}: {}", a.text);
        assert!(a.json()["images"].as_array().unwrap().iter().any(|i| i["id"] == id), "{mount}: {}", a.text);
    }
}
