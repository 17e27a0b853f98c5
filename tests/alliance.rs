//! The Alliance v1 dialect through the gateway: every call of the seed, copy_from, header
//! checks, bad bodies, and two environments that cannot see each other.

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use common::{client, send, Answer, Gateway, GlanceFixtures, Harness};
use image_gateway::config::NamespaceConfig;
use serde_json::{json, Value};

struct World {
    h: &'static Harness,
    gw: Gateway,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let h = Harness::get();
        let gw = h.gateway(|c| {
            c.alliance.namespaces.insert("ccsr1".into(), common::trusted_headers_namespace());
            // Only tokens prove anything there. Neither is reached: the calls bring no token.
            let locked =
                NamespaceConfig { glance_url: Some("http://127.0.0.1:9".parse().unwrap()), ..Default::default() };
            c.alliance.namespaces.insert("locked".into(), locked);
            c.keystone.url = Some("http://127.0.0.1:9/v3".parse().unwrap());
        });
        World { h, gw }
    })
}

fn env() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl World {
    async fn call(&self, env: &str, method: &str, path: &str, body: Option<Value>) -> Answer {
        let mut req = client()
            .request(method.parse().unwrap(), format!("{}{path}", self.gw.base))
            .header("x-target-ns", "ccsr1")
            .header("x-environment-id", env);
        if let Some(body) = body {
            req = req.json(&body);
        }
        send(req).await
    }

    async fn create(&self, env: &str, image: Value) -> Value {
        let a = self.call(env, "POST", "/images", Some(json!({"image": image}))).await;
        assert_eq!(a.status, 201, "{}", a.text);
        a.json()
    }
}

#[tokio::test]
async fn every_seed_call() {
    let w = world();
    let e = env();
    // POST /images (seed example 3, without copy_from)
    let a = w
        .call(&e, "POST", "/images/", Some(json!({"image": {"name": "remote_image", "disk_format": "qcow2", "container_format": "bare", "min_ram": 1, "min_disk": 500}})))
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    let created = a.json();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(a.header("location"), Some(format!("{}/images/{id}", w.gw.base).as_str()));
    for (key, want) in [
        ("status", json!("queued")),
        ("name", json!("remote_image")),
        ("tags", json!([])),
        ("container_format", json!("bare")),
        ("disk_format", json!("qcow2")),
        ("min_ram", json!(1)),
        ("min_disk", json!(500)),
        ("visibility", json!("private")),
        ("owner", json!(e)),
        ("schema", json!("/v2/schemas/image")),
        ("protected", json!(false)),
        ("file", json!(format!("/v2/images/{id}/file"))),
        ("checksum", Value::Null),
        ("virtual_size", Value::Null),
        ("size", Value::Null),
    ] {
        assert_eq!(created[key], want, "{key} in {created}");
    }
    assert!(created.get("copy_from").is_none());

    // GET /images/{id} and GET /images
    let shown = w.call(&e, "GET", &format!("/images/{id}"), None).await;
    assert_eq!((shown.status, shown.json()), (200, created.clone()));
    let listed = w.call(&e, "GET", "/images/", None).await.json();
    assert_eq!(listed, json!({"images": [created.clone()]}));

    // PATCH /images/{id} (seed example 5) and the same body again, which changes nothing.
    let update = json!({"image": {"name": "ubuntu_image", "disk_format": "ari", "container_format": "bare", "min_ram": 1, "min_disk": 500}});
    for _ in 0..2 {
        let a = w.call(&e, "PATCH", &format!("/images/{id}"), Some(update.clone())).await;
        assert_eq!(a.status, 200, "{}", a.text);
        assert_eq!((a.json()["name"].clone(), a.json()["disk_format"].clone()), (json!("ubuntu_image"), json!("ari")));
    }
    // PUT /images/<image_name>
    let a = w.call(&e, "PUT", "/images/ubuntu_image", Some(json!({"image": {"min_ram": 64}}))).await;
    assert_eq!((a.status, a.json()["min_ram"].clone(), a.json()["id"].clone()), (200, json!(64), json!(id)));
    let a = w.call(&e, "PUT", "/images/no_such_name", Some(json!({"image": {"min_ram": 64}}))).await;
    assert_eq!(a.status, 404, "{}", a.text);

    // DELETE /images/{id}: 200, no body.
    let a = w.call(&e, "DELETE", &format!("/images/{id}"), None).await;
    assert_eq!((a.status, a.text.as_str()), (200, ""));
    assert_eq!(w.call(&e, "GET", &format!("/images/{id}"), None).await.status, 404);
}

#[tokio::test]
async fn names_are_resolved_within_the_environment() {
    let w = world();
    let e = env();
    w.create(&e, json!({"name": "twin"})).await;
    w.create(&e, json!({"name": "twin"})).await;
    let a = w.call(&e, "PUT", "/images/twin", Some(json!({"image": {"min_ram": 1}}))).await;
    assert_eq!(a.status, 409, "{}", a.text);
    assert_eq!(a.json()["error"]["code"], 409);
    // A name with a colon is a name, not a Glance filter operator.
    w.create(&e, json!({"name": "in:odd:name"})).await;
    let a = w.call(&e, "DELETE", "/images/in:odd:name", None).await;
    assert_eq!(a.status, 200, "{}", a.text);
}

#[tokio::test]
async fn environments_cannot_see_each_other() {
    let w = world();
    let (a_env, b_env) = (env(), env());
    let mine = w.create(&a_env, json!({"name": "a-secret"})).await;
    let id = mine["id"].as_str().unwrap();
    let probes = [
        ("GET", format!("/images/{id}"), None),
        ("PATCH", format!("/images/{id}"), Some(json!({"image": {"name": "stolen"}}))),
        ("PUT", format!("/images/{id}"), Some(json!({"image": {"name": "stolen"}}))),
        ("PUT", "/images/a-secret".to_owned(), Some(json!({"image": {"name": "stolen"}}))),
        ("GET", "/images/a-secret".to_owned(), None),
        ("DELETE", format!("/images/{id}"), None),
        ("DELETE", "/images/a-secret".to_owned(), None),
    ];
    for (method, path, body) in probes {
        let a = w.call(&b_env, method, &path, body).await;
        assert_eq!(a.status, 404, "B {method} {path}: {}", a.text);
    }
    let listed = w.call(&b_env, "GET", "/images", None).await.json();
    assert!(listed["images"].as_array().unwrap().iter().all(|i| i["id"] != id), "{listed}");
    // And A's image is untouched.
    let a = w.call(&a_env, "GET", &format!("/images/{id}"), None).await;
    assert_eq!((a.status, a.json()["name"].clone()), (200, json!("a-secret")));
}

#[tokio::test]
async fn target_headers_are_never_guessed() {
    let w = world();
    let url = format!("{}/images", w.gw.base);
    let cases = [
        (None, Some("e1"), 400, "X-Target-Ns is missing"),
        (Some("nowhere"), Some("e1"), 400, "no configured namespace: `nowhere`"),
        (Some("ccsr1"), None, 400, "X-Environment-Id is missing"),
        (Some("ccsr1"), Some("not a project!"), 400, "X-Environment-Id must be a project id"),
        (Some("locked"), Some("e1"), 401, "Send X-Auth-Token"),
    ];
    for (ns, environment, status, message) in cases {
        let mut req = client().get(&url);
        if let Some(ns) = ns {
            req = req.header("x-target-ns", ns);
        }
        if let Some(environment) = environment {
            req = req.header("x-environment-id", environment);
        }
        let a = send(req).await;
        assert_eq!(a.status, status, "{ns:?} {environment:?}: {}", a.text);
        assert!(a.json()["error"]["message"].as_str().unwrap().contains(message), "{}", a.text);
    }
}

#[tokio::test]
async fn bad_bodies_are_refused_before_glance_sees_them() {
    let w = world();
    let e = env();
    let cases = [
        json!({"image": {"name": "x", "min_ram": "64"}}),
        json!({"image": {"name": "x", "min_ram": -1}}),
        json!({"image": {"name": "x", "id": "6a0c3b1e-4e8f-4a53-9c55-d1b7f0f1a001"}}),
        json!({"image": {"name": "x", "status": "active"}}),
        json!({"image": {"name": "x", "flavour": "vanilla"}}),
        json!({"image": {"name": "x", "disk_format": "floppy"}}),
        json!({"image": {"name": "x", "copy_from": "file:///etc/passwd"}}),
        json!({"name": "x"}),
        json!([]),
    ];
    for body in cases {
        let a = w.call(&e, "POST", "/images", Some(body.clone())).await;
        assert_eq!(a.status, 400, "{body}: {}", a.text);
        assert_eq!(a.json()["error"]["title"], "Bad Request");
    }
    let raw = |ct: &'static str, body: &'static str| {
        send(
            client()
                .post(format!("{}/images", w.gw.base))
                .header("x-target-ns", "ccsr1")
                .header("x-environment-id", e.clone())
                .header("content-type", ct)
                .body(body),
        )
    };
    assert_eq!(raw("application/json", "{bad").await.status, 400);
    assert_eq!(raw("application/xml", "<image/>").await.status, 415);
    assert!(w.h.owned_image_ids(&e).await.is_empty(), "nothing was created");
    // copy_from cannot be set on an existing image.
    let image = w.create(&e, json!({"name": "y"})).await;
    let a = w
        .call(
            &e,
            "PATCH",
            &format!("/images/{}", image["id"].as_str().unwrap()),
            Some(json!({"image": {"copy_from": "http://127.0.0.1:1/x"}})),
        )
        .await;
    assert_eq!(a.status, 400, "{}", a.text);
}

/// A loopback HTTP server that serves `bytes` at any path, then stops after `hits` requests.
fn serve_file(bytes: Vec<u8>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for stream in listener.incoming().take(4) {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n", bytes.len());
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&bytes);
        }
    });
    format!("http://127.0.0.1:{}/cirros.raw", addr.port())
}

#[tokio::test]
async fn copy_from_imports_the_bytes() {
    let w = world();
    let e = env();
    let bytes: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    let uri = serve_file(bytes.clone());
    let created = w
        .create(&e, json!({"name": "remote_image", "disk_format": "raw", "container_format": "bare", "copy_from": uri}))
        .await;
    assert_eq!(created["copy_from"], json!(uri));
    assert!(matches!(created["status"].as_str(), Some("queued" | "importing" | "active")), "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let mut shown = Value::Null;
    for _ in 0..120 {
        shown = w.call(&e, "GET", &format!("/images/{id}"), None).await.json();
        if shown["status"] == "active" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(shown["status"], "active", "{shown}");
    assert_eq!(shown["size"], 1024 * 1024);
    assert_eq!(shown["copy_from"], json!(uri), "still echoed");
    // The seed's update (Example 5) on the imported image: the formats can no longer change,
    // the rest is applied, and the answer is the image as it now is (Example 6).
    let update = json!({"image": {"name": "ubuntu_image", "disk_format": "ari", "container_format": "bare", "min_ram": 1, "min_disk": 500}});
    let updated = w.call(&e, "PUT", &format!("/images/{id}"), Some(update)).await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    let updated = updated.json();
    assert_eq!(
        [
            &updated["name"],
            &updated["disk_format"],
            &updated["container_format"],
            &updated["min_ram"],
            &updated["min_disk"]
        ],
        [&json!("ubuntu_image"), &json!("raw"), &json!("bare"), &json!(1), &json!(500)],
        "{updated}"
    );
    let g = GlanceFixtures { h: w.h, http: client() };
    let mut headers = w.h.member();
    headers.insert("x-project-id", e.parse().unwrap());
    let data = g
        .http
        .get(format!("{}/v2/images/{id}/file", w.h.glance_url))
        .headers(headers)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(data[..] == bytes[..], "the imported bytes differ");
}

#[tokio::test]
async fn a_copy_that_cannot_start_leaves_nothing_behind() {
    let w = world();
    let e = env();
    let a = w
        .call(&e, "POST", "/images", Some(json!({"image": {"name": "doomed", "disk_format": "raw", "container_format": "bare", "copy_from": "https://images.example.invalid/x.img"}})))
        .await;
    assert_eq!(a.status, 400, "{}", a.text);
    assert!(a.json()["error"]["message"].as_str().unwrap().contains("cannot be imported"), "{}", a.text);
    assert!(w.h.owned_image_ids(&e).await.is_empty(), "the half-made image was deleted");
}
