//! Nova's image metadata calls, image delete and version documents through the gateway,
//! checked against what Glance holds afterwards. Each test makes its own images.

mod common;

use std::sync::OnceLock;

use common::{client, send, Answer, Gateway, GlanceFixtures, Harness};
use serde_json::{json, Value};

struct World {
    h: &'static Harness,
    gw: Gateway,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let h = Harness::get();
        World { h, gw: h.gateway(|_| {}) }
    })
}

impl World {
    fn glance(&self) -> GlanceFixtures<'_> {
        GlanceFixtures { h: self.h, http: client() }
    }

    /// A fresh shared image with three custom properties.
    async fn image(&self) -> String {
        let image = self
            .glance()
            .create(json!({"name": "meta", "os_distro": "ubuntu", "architecture": "x86_64", "kernel_id": "6a0c3b1e-4e8f-4a53-9c55-d1b7f0f1a00f", "tags": ["keep"]}))
            .await;
        image["id"].as_str().unwrap().to_owned()
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        let mut req =
            client().request(method.parse().unwrap(), format!("{}{path}", self.gw.base)).headers(self.h.member());
        if let Some(body) = body {
            req = req.json(&body);
        }
        send(req).await
    }

    async fn raw(&self, method: &str, path: &str, content_type: Option<&str>, body: &str) -> Answer {
        let mut req = client()
            .request(method.parse().unwrap(), format!("{}{path}", self.gw.base))
            .headers(self.h.member())
            .body(body.to_owned());
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        send(req).await
    }

    /// Glance's image, and its custom properties alone.
    async fn glance_properties(&self, id: &str) -> (Value, Value) {
        let image = self.glance().get(id).await;
        let props = image
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| !common::GLANCE_BASE_PROPERTIES.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        (image, Value::Object(props))
    }
}

fn random_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[tokio::test]
async fn metadata_reads() {
    let w = world();
    let id = w.image().await;
    let a = w.call("GET", &format!("/v2.1/images/{id}/metadata"), None).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json(), json!({"metadata": w.glance_properties(&id).await.1}));
    let a = w.call("GET", &format!("/v2.1/images/{id}/metadata/os_distro"), None).await;
    assert_eq!(a.json(), json!({"meta": {"os_distro": "ubuntu"}}));
    let a = w.call("GET", &format!("/v2.1/images/{id}/metadata/missing"), None).await;
    assert_eq!(a.status, 404);
    assert_eq!(a.json(), json!({"itemNotFound": {"code": 404, "message": "The resource could not be found."}}));
}

#[tokio::test]
async fn put_replaces_and_echoes_without_touching_anything_else() {
    let w = world();
    let id = w.image().await;
    let (before, _) = w.glance_properties(&id).await;
    let body = json!({"metadata": {"os_version": "22.04", "architecture": "arm"}});
    let a = w.call("PUT", &format!("/v2.1/images/{id}/metadata"), Some(body.clone())).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json(), body);
    let (after, props) = w.glance_properties(&id).await;
    assert_eq!(props, body["metadata"]);
    for base in ["visibility", "name", "tags", "min_ram", "protected", "owner"] {
        assert_eq!(after[base], before[base], "{base} changed");
    }
    // Renaming a key while keeping its value works (Nova's jsonpatch `move` fails here).
    let a =
        w.call("PUT", &format!("/v2.1/images/{id}/metadata"), Some(json!({"metadata": {"os_release": "22.04"}}))).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(w.glance_properties(&id).await.1, json!({"os_release": "22.04"}));
    // And an empty body clears everything.
    let a = w.call("PUT", &format!("/v2.1/images/{id}/metadata"), Some(json!({"metadata": {}}))).await;
    assert_eq!((a.status, a.json()), (200, json!({"metadata": {}})));
    assert_eq!(w.glance_properties(&id).await.1, json!({}));
}

#[tokio::test]
async fn post_merges_and_answers_with_what_glance_holds() {
    let w = world();
    let id = w.image().await;
    let a = w
        .call(
            "POST",
            &format!("/v2.1/images/{id}/metadata"),
            Some(json!({"metadata": {"os_distro": "debian", "Label": "x"}})),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let props = w.glance_properties(&id).await.1;
    assert_eq!(props["os_distro"], "debian");
    assert_eq!(props["Label"], "x");
    assert_eq!(props["architecture"], "x86_64");
    assert_eq!(a.json(), json!({"metadata": props}));
}

#[tokio::test]
async fn item_put_and_delete() {
    let w = world();
    let id = w.image().await;
    let path = format!("/v2.1/images/{id}/metadata/os_distro");
    let a = w.call("PUT", &path, Some(json!({"meta": {"os_distro": "debian"}}))).await;
    assert_eq!((a.status, a.json()), (200, json!({"meta": {"os_distro": "debian"}})));
    let a = w.call("PUT", &format!("/v2.1/images/{id}/metadata/new"), Some(json!({"meta": {"new": "v"}}))).await;
    assert_eq!(a.status, 200);
    let props = w.glance_properties(&id).await.1;
    assert_eq!((props["os_distro"].clone(), props["new"].clone()), (json!("debian"), json!("v")));

    let a = w.call("DELETE", &path, None).await;
    assert_eq!(a.status, 204);
    assert!(a.text.is_empty());
    assert!(w.glance_properties(&id).await.1.get("os_distro").is_none());
    let a = w.call("DELETE", &path, None).await;
    assert_eq!(a.status, 404);
    assert_eq!(a.json()["itemNotFound"]["message"], "Invalid metadata key");
}

#[tokio::test]
async fn bad_bodies_are_refused_before_the_image_is_looked_up() {
    let w = world();
    let missing = random_id();
    let meta = format!("/v2.1/images/{missing}/metadata");
    for (method, path, body) in [
        ("POST", meta.clone(), json!({"metadata": {"k": 1}})),
        ("PUT", meta.clone(), json!({"metadata": {"a/b": "v"}})),
        ("PUT", meta.clone(), json!({"metadata": {}, "extra": 1})),
        ("POST", meta.clone(), json!({"meta": {"k": "v"}})),
        ("PUT", format!("{meta}/k"), json!({"meta": {"other": "v"}})),
        ("PUT", format!("{meta}/k"), json!({"meta": {"k": "v", "j": "w"}})),
        ("PUT", meta.clone(), json!({"metadata": {"k": "v".repeat(256)}})),
    ] {
        let a = w.call(method, &path, Some(body.clone())).await;
        assert_eq!(a.status, 400, "{method} {path} {body}: {}", a.text);
        assert_eq!(a.json()["badRequest"]["code"], 400);
    }
    let a = w.call("PUT", &format!("{meta}/k"), Some(json!({"meta": {"other": "v"}}))).await;
    assert_eq!(a.json()["badRequest"]["message"], "Request body and URI mismatch");
    let a = w.raw("POST", &meta, Some("application/json"), "{bad").await;
    assert_eq!((a.status, a.json()["badRequest"]["message"].clone()), (400, json!("Malformed request body")));
    let a = w.raw("POST", &meta, Some("application/xml"), "{}").await;
    assert_eq!(a.status, 415);
    assert_eq!(a.json(), json!({"badMediaType": {"code": 415, "message": "Unsupported Content-Type"}}));
    // text/plain and no Content-Type are read as JSON, as Nova does: the image lookup decides.
    for ct in [Some("text/plain"), None] {
        let a = w.raw("POST", &meta, ct, r#"{"metadata": {"k": "v"}}"#).await;
        assert_eq!(a.status, 404, "{ct:?}: {}", a.text);
    }
    // The legacy root strips unknown top-level keys instead.
    let a = w.call("PUT", &format!("/v2/images/{missing}/metadata"), Some(json!({"metadata": {}, "extra": 1}))).await;
    assert_eq!(a.status, 404, "{}", a.text);
}

#[tokio::test]
async fn every_metadata_call_on_a_missing_image_is_404() {
    let w = world();
    let meta = format!("/v2.1/images/{}/metadata", random_id());
    for (method, path, body) in [
        ("GET", meta.clone(), None),
        ("POST", meta.clone(), Some(json!({"metadata": {"k": "v"}}))),
        ("PUT", meta.clone(), Some(json!({"metadata": {"k": "v"}}))),
        ("GET", format!("{meta}/k"), None),
        ("PUT", format!("{meta}/k"), Some(json!({"meta": {"k": "v"}}))),
        ("DELETE", format!("{meta}/k"), None),
    ] {
        let a = w.call(method, &path, body).await;
        assert_eq!(a.status, 404, "{method} {path}: {}", a.text);
        assert_eq!(a.json(), json!({"itemNotFound": {"code": 404, "message": "Image not found."}}), "{method} {path}");
    }
}

#[tokio::test]
async fn the_metadata_quota_counts_what_the_image_would_hold() {
    let w = world();
    let small = w.h.gateway(|c| c.nova.metadata_items = 4);
    let id = w.image().await; // three properties
    let call = |method: &'static str, path: String, body: Value| {
        send(
            client()
                .request(method.parse().unwrap(), format!("{}{path}", small.base))
                .headers(w.h.member())
                .json(&body),
        )
    };
    let meta = format!("/v2.1/images/{id}/metadata");
    assert_eq!(call("POST", meta.clone(), json!({"metadata": {"d": "4"}})).await.status, 200, "exactly the limit");
    let a = call("POST", meta.clone(), json!({"metadata": {"e": "5"}})).await;
    assert_eq!(a.status, 403);
    assert_eq!(a.json(), json!({"forbidden": {"code": 403, "message": "Image metadata limit exceeded"}}));
    assert_eq!(call("PUT", format!("{meta}/e"), json!({"meta": {"e": "5"}})).await.status, 403);
    let five = json!({"metadata": {"a": "1", "b": "2", "c": "3", "d": "4", "e": "5"}});
    assert_eq!(call("PUT", meta.clone(), five).await.status, 403);
    assert_eq!(w.glance_properties(&id).await.1.as_object().unwrap().len(), 4, "nothing half-written");
}

#[tokio::test]
async fn delete_as_nova() {
    let w = world();
    let id = w.image().await;
    let a = w.call("DELETE", &format!("/v2.1/images/{id}"), None).await;
    assert_eq!(a.status, 204, "{}", a.text);
    assert!(a.text.is_empty());
    assert_eq!(a.header("content-type"), Some("application/json"));
    assert_eq!(w.call("GET", &format!("/v2.1/images/{id}"), None).await.status, 404);
    for missing in [random_id(), "-1".into(), format!("{}1", random_id()), "detail".into()] {
        let a = w.call("DELETE", &format!("/v2.1/images/{missing}"), None).await;
        assert_eq!(a.status, 404, "{missing}");
        assert_eq!(a.json(), json!({"itemNotFound": {"code": 404, "message": "Image not found."}}));
    }
    let protected = w.glance().create(json!({"name": "keep", "protected": true})).await;
    let a = w.call("DELETE", &format!("/v2.1/images/{}", protected["id"].as_str().unwrap()), None).await;
    assert_eq!(a.status, 403);
    assert_eq!(a.json(), json!({"forbidden": {"code": 403, "message": "You are not allowed to delete the image."}}));
}

#[tokio::test]
async fn version_documents() {
    let w = world();
    let get = |path: &'static str| send(client().get(format!("{}{path}", w.gw.base)));
    let root = get("/").await.json();
    assert_eq!(root["versions"][0]["id"], "v2.0");
    assert_eq!(root["versions"][1]["links"][0]["href"], format!("{}/v2.1/", w.gw.base));
    for path in ["/v2.1", "/v2.1/"] {
        let a = get(path).await;
        assert_eq!(a.status, 200, "{path}");
        assert_eq!(a.json()["version"]["id"], "v2.1");
        assert_eq!(a.json()["version"]["version"], image_gateway::config::Config::default().nova.max_microversion);
        assert_eq!(a.header("openstack-api-version"), Some("compute 2.1"));
        // Every self link can be followed back to the same document.
        let href = a.json()["version"]["links"][0]["href"].as_str().unwrap().to_owned();
        let again = send(client().get(&href)).await.json();
        assert_eq!(again["version"]["links"][0]["href"], href);
    }
    for path in ["/v2", "/v2/"] {
        let a = get(path).await;
        assert_eq!(a.json()["version"]["id"], "v2.0", "{path}");
        assert!(a.header("openstack-api-version").is_none());
    }
}
