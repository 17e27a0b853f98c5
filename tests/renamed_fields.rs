//! Output fields are the mapping file's to name: with `id` and `metadata` renamed in a copy of
//! `mappings/nova.toml` (and `id` in `mappings/alliance.toml`), served through `mappings_dir`,
//! pagination and every metadata call still work, because handlers take what they need from
//! the Glance image, never from the rendered answer.

mod common;

use std::sync::OnceLock;

use common::{client, send, Answer, Gateway, GlanceFixtures, Harness};
use serde_json::{json, Value};

struct World {
    h: &'static Harness,
    gw: Gateway,
    /// Holds the renamed mapping files for as long as the gateway runs.
    _mappings: tempfile::TempDir,
}

/// `field = {` at the start of a line becomes `renamed = {`, in every view; the file must
/// have held such a line.
fn rename(text: &str, field: &str, renamed: &str) -> String {
    let from = format!("\n{field} = {{");
    assert!(text.contains(&from), "no field `{field}` to rename");
    text.replace(&from, &format!("\n{renamed} = {{"))
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings");
        let nova = std::fs::read_to_string(shipped.join("nova.toml")).unwrap();
        let nova = rename(&rename(&nova, "id", "ident"), "metadata", "meta_data");
        let alliance = std::fs::read_to_string(shipped.join("alliance.toml")).unwrap();
        let alliance = rename(&alliance, "id", "ident");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("nova.toml"), nova).unwrap();
        std::fs::write(dir.path().join("alliance.toml"), alliance).unwrap();
        std::fs::copy(shipped.join("glance_v1.toml"), dir.path().join("glance_v1.toml")).unwrap();
        let h = Harness::get();
        let mappings_dir = dir.path().to_owned();
        let gw = h.gateway(|c| {
            c.mappings_dir = Some(mappings_dir);
            c.alliance.namespaces.insert("ccsr1".into(), common::trusted_headers_namespace());
        });
        World { h, gw, _mappings: dir }
    })
}

impl World {
    fn glance(&self) -> GlanceFixtures<'_> {
        GlanceFixtures { h: self.h, http: client() }
    }

    async fn nova(&self, method: &str, path_or_url: &str, body: Option<Value>) -> Answer {
        let url = match path_or_url.starts_with("http") {
            true => path_or_url.to_owned(),
            false => format!("{}{path_or_url}", self.gw.base),
        };
        let mut req = client().request(method.parse().unwrap(), url).headers(self.h.member());
        if let Some(body) = body {
            req = req.json(&body);
        }
        send(req).await
    }
}

#[tokio::test]
async fn pagination_follows_glance_ids_whatever_the_id_field_is_called() {
    let w = world();
    let batch = uuid::Uuid::new_v4().simple().to_string();
    let mut ids = Vec::new();
    for n in 0..3 {
        let image = w.glance().create(json!({"name": format!("page-{n}"), "batch": batch})).await;
        ids.push(image["id"].as_str().unwrap().to_owned());
    }
    let first = w.nova("GET", &format!("/v2.1/images/detail?limit=2&property-batch={batch}"), None).await;
    assert_eq!(first.status, 200, "{}", first.text);
    let page = first.json();
    let listed: Vec<&str> = page["images"].as_array().unwrap().iter().map(|i| i["ident"].as_str().unwrap()).collect();
    assert_eq!(listed.len(), 2, "{page}");
    assert!(page["images"][0].get("id").is_none(), "the field is renamed: {page}");
    let next = page["images_links"][0]["href"].as_str().unwrap_or_else(|| panic!("no next link: {page}"));
    assert!(next.ends_with(&format!("marker={}", listed[1])), "{next}");
    assert!(ids.contains(&listed[1].to_owned()), "the marker is a Glance id: {next}");

    let second = w.nova("GET", next, None).await;
    assert_eq!(second.status, 200, "{}", second.text);
    let rest = second.json();
    let more: Vec<&str> = rest["images"].as_array().unwrap().iter().map(|i| i["ident"].as_str().unwrap()).collect();
    assert_eq!(more.len(), 1, "{rest}");
    let mut all: Vec<&str> = listed.iter().chain(&more).copied().collect();
    all.sort_unstable();
    let mut want: Vec<&str> = ids.iter().map(String::as_str).collect();
    want.sort_unstable();
    assert_eq!(all, want, "every image once, across both pages");
    assert!(rest.get("images_links").is_none(), "{rest}");

    // The short list has the renamed field too.
    let basic = w.nova("GET", &format!("/v2.1/images?limit=2&property-batch={batch}"), None).await.json();
    assert_eq!(basic["images"][1]["ident"].as_str(), Some(listed[1]), "{basic}");
    assert!(basic["images_links"][0]["href"].as_str().unwrap().ends_with(&format!("marker={}", listed[1])));
}

#[tokio::test]
async fn metadata_calls_work_whatever_the_metadata_field_is_called() {
    let w = world();
    let image = w.glance().create(json!({"name": "renamed", "os_distro": "ubuntu", "architecture": "x86_64"})).await;
    let id = image["id"].as_str().unwrap().to_owned();
    let base = format!("/v2.1/images/{id}/metadata");

    let shown = w.nova("GET", &format!("/v2.1/images/{id}"), None).await.json();
    assert_eq!(shown["image"]["ident"], json!(id), "{shown}");
    assert_eq!(shown["image"]["meta_data"]["os_distro"], json!("ubuntu"), "{shown}");

    let listed = w.nova("GET", &base, None).await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    assert_eq!(listed.json(), json!({"meta_data": {"os_distro": "ubuntu", "architecture": "x86_64"}}));

    let item = w.nova("GET", &format!("{base}/os_distro"), None).await;
    assert_eq!((item.status, item.json()), (200, json!({"meta": {"os_distro": "ubuntu"}})), "{}", item.text);
    let missing = w.nova("GET", &format!("{base}/nothing"), None).await;
    assert_eq!(missing.status, 404, "{}", missing.text);

    let set = w.nova("PUT", &format!("{base}/os_version"), Some(json!({"meta": {"os_version": "24.04"}}))).await;
    assert_eq!((set.status, set.json()), (200, json!({"meta": {"os_version": "24.04"}})), "{}", set.text);
    assert_eq!(w.glance().get(&id).await["os_version"], json!("24.04"));
    let item = w.nova("GET", &format!("{base}/os_version"), None).await;
    assert_eq!(item.json(), json!({"meta": {"os_version": "24.04"}}));

    let merged = w.nova("POST", &base, Some(json!({"metadata": {"hw_rng": "true"}}))).await;
    assert_eq!(merged.status, 200, "{}", merged.text);
    assert_eq!(merged.json()["meta_data"]["hw_rng"], json!("true"), "{}", merged.text);

    let deleted = w.nova("DELETE", &format!("{base}/architecture"), None).await;
    assert_eq!(deleted.status, 204, "{}", deleted.text);
    assert!(w.glance().get(&id).await.get("architecture").is_none());
    let gone = w.nova("GET", &format!("{base}/architecture"), None).await;
    assert_eq!(gone.status, 404, "{}", gone.text);
}

/// Alliance's calls by name resolve to the Glance image, and act on its Glance id.
#[tokio::test]
async fn alliance_acts_on_glance_ids_whatever_the_id_field_is_called() {
    let w = world();
    let env = uuid::Uuid::new_v4().simple().to_string();
    let call = |method: &str, path: String, body: Option<Value>| {
        let mut req = client()
            .request(method.parse().unwrap(), format!("{}{path}", w.gw.base))
            .header("x-target-ns", "ccsr1")
            .header("x-environment-id", &env);
        if let Some(body) = body {
            req = req.json(&body);
        }
        send(req)
    };
    let created = call("POST", "/images".into(), Some(json!({"image": {"name": "by-name"}}))).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.json()["ident"].as_str().unwrap().to_owned();
    assert!(created.header("location").unwrap().ends_with(&format!("/images/{id}")));

    let updated = call("PATCH", "/images/by-name".into(), Some(json!({"image": {"min_ram": 64}}))).await;
    assert_eq!((updated.status, updated.json()["min_ram"].clone()), (200, json!(64)), "{}", updated.text);
    assert_eq!(updated.json()["ident"], json!(id));

    let deleted = call("DELETE", "/images/by-name".into(), None).await;
    assert_eq!(deleted.status, 200, "{}", deleted.text);
    let gone = call("GET", format!("/images/{id}"), None).await;
    assert_eq!(gone.status, 404, "{}", gone.text);
}
