//! Differential tests: the same requests to Nova 34 and to the gateway, both in front of the
//! same Glance, must get the same answers (links compared modulo host and port), except for
//! the differences `docs/compatibility.md` lists, which are asserted as such.
//!
//! They need a real Nova: `scripts/test.sh` starts Glance (accepting Nova's forwarded token)
//! and Nova, sets `IG_TEST_GLANCE_URL` and `IG_TEST_NOVA_URL`, and runs them with `--ignored`.

mod common;

use common::{client, send, Answer, Gateway, GlanceFixtures, Harness};
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{json, Value};

/// One caller (a project of its own, so parallel tests never see each other's images) and
/// both servers.
struct Pair {
    h: &'static Harness,
    gw: Gateway,
    nova: String,
    project: String,
}

impl Pair {
    fn new() -> Pair {
        let nova = std::env::var("IG_TEST_NOVA_URL").expect("IG_TEST_NOVA_URL: run through scripts/test.sh");
        assert!(std::env::var("IG_TEST_GLANCE_URL").is_ok(), "IG_TEST_GLANCE_URL: run through scripts/test.sh");
        let h = Harness::get();
        Pair {
            h,
            gw: h.gateway(|_| {}),
            nova: nova.trim_end_matches('/').to_owned(),
            project: uuid::Uuid::new_v4().simple().to_string(),
        }
    }

    /// What Nova needs (it forwards only the token; the test Glance reads the identity from
    /// it), which the gateway forwards as is.
    fn identity(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        let token = format!("gw:{}:tester:member,reader", self.project);
        h.insert("x-auth-token", HeaderValue::from_str(&token).unwrap());
        h.insert("x-user-id", HeaderValue::from_static("tester"));
        h.insert("x-project-id", HeaderValue::from_str(&self.project).unwrap());
        h.insert("x-roles", HeaderValue::from_static("member,reader"));
        h
    }

    fn glance(&self) -> GlanceFixtures<'_> {
        GlanceFixtures { h: self.h, http: client() }
    }

    /// Creates an image owned by this pair's project.
    async fn image(&self, body: Value, data: Option<usize>) -> Value {
        let mut headers = self.h.admin();
        headers.insert("x-project-id", HeaderValue::from_str(&self.project).unwrap());
        let mut body = body;
        if data.is_some() {
            body["disk_format"] = json!("raw");
            body["container_format"] = json!("bare");
        }
        let a =
            send(client().post(format!("{}/v2/images", self.h.glance_url)).headers(headers.clone()).json(&body)).await;
        assert_eq!(a.status, 201, "{}", a.text);
        let id = a.json()["id"].as_str().unwrap().to_owned();
        if let Some(size) = data {
            let url = format!("{}/v2/images/{id}/file", self.h.glance_url);
            let up = client().put(url).headers(headers).header("content-type", "application/octet-stream");
            assert_eq!(send(up.body(vec![1u8; size])).await.status, 204);
        }
        self.glance().get(&id).await
    }

    async fn to(&self, base: &str, method: &str, path: &str, extra: &[(&str, &str)], body: Option<&Value>) -> Answer {
        let mut req = client().request(method.parse().unwrap(), format!("{base}{path}")).headers(self.identity());
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        send(req).await
    }

    /// Sends one request to both and returns (Nova's, the gateway's) answers.
    async fn both(&self, method: &str, path: &str, extra: &[(&str, &str)], body: Option<&Value>) -> (Answer, Answer) {
        let nova = self.to(&self.nova, method, path, extra, body).await;
        let gw = self.to(&self.gw.base, method, path, extra, body).await;
        (nova, gw)
    }

    /// Asserts the two answers are the same: status, body (links modulo host), and the
    /// headers a client acts on.
    fn assert_same(&self, case: &str, nova: &Answer, gw: &Answer) {
        assert_eq!(nova.status, gw.status, "{case}: status\nnova: {}\ngateway: {}", nova.text, gw.text);
        let nova_body = nova.text.replace(&self.nova, &self.gw.base);
        match (serde_json::from_str::<Value>(&nova_body), serde_json::from_str::<Value>(&gw.text)) {
            (Ok(n), Ok(g)) => assert_eq!(n, g, "{case}: body"),
            _ => assert_eq!(nova_body, gw.text, "{case}: body"),
        }
        for name in ["content-type", "openstack-api-version", "x-openstack-nova-api-version"] {
            assert_eq!(nova.header(name), gw.header(name), "{case}: {name}");
        }
        let vary =
            |a: &Answer| a.headers.get_all("vary").iter().map(|v| v.to_str().unwrap().to_owned()).collect::<Vec<_>>();
        assert_eq!(vary(nova), vary(gw), "{case}: vary");
        for name in ["x-openstack-request-id", "x-compute-request-id"] {
            assert_eq!(nova.header(name).is_some(), gw.header(name).is_some(), "{case}: {name}");
        }
    }

    async fn same(&self, method: &str, path: &str, extra: &[(&str, &str)], body: Option<&Value>) {
        let (nova, gw) = self.both(method, path, extra, body).await;
        self.assert_same(&format!("{method} {path} {extra:?}"), &nova, &gw);
    }
}

/// Fixtures of every kind the views distinguish.
async fn fixtures(p: &Pair) -> Vec<Value> {
    let mut images = vec![
        p.image(json!({"name": "alpha", "os_distro": "ubuntu", "min_ram": 512, "min_disk": 10}), Some(1024)).await,
        p.image(json!({"name": "queued"}), None).await,
        p.image(
            json!({"name": "snap", "instance_uuid": "6b0f2a7e-3c1d-4e5f-8a9b-0c1d2e3f4a5b", "image_type": "snapshot"}),
            Some(64),
        )
        .await,
        p.image(json!({"name": "auto", "auto_disk_config": "True"}), Some(64)).await,
        p.image(json!({"name": "manual", "auto_disk_config": "False"}), None).await,
        p.image(json!({"name": "Ünïcödé 画像"}), Some(64)).await,
        p.image(json!({"name": "bdm", "block_device_mapping": "[{\"source_type\": \"volume\"}]"}), None).await,
        p.image(json!({"name": "protected", "protected": true}), Some(64)).await,
    ];
    let deactivated = p.image(json!({"name": "retired"}), Some(64)).await;
    let id = deactivated["id"].as_str().unwrap().to_owned();
    p.glance().deactivate(&id).await;
    images.push(p.glance().get(&id).await);
    images
}

fn id(image: &Value) -> &str {
    image["id"].as_str().unwrap()
}

#[tokio::test]
#[ignore = "needs a real Nova and Glance: scripts/test.sh runs it"]
async fn reads_match_nova() {
    let p = Pair::new();
    let images = fixtures(&p).await;
    let pid = &p.project;
    let mut paths = vec![
        "/v2.1/images".to_owned(),
        "/v2.1/images/detail".into(),
        format!("/v2.1/{pid}/images/detail"),
        format!("/v2.1/{pid}/images"),
        "/v2/images/detail".into(),
        format!("/v2/{pid}/images"),
    ];
    for image in &images {
        paths.push(format!("/v2.1/images/{}", id(image)));
    }
    paths.push(format!("/v2.1/{pid}/images/{}", id(&images[0])));
    paths.push(format!("/v2/images/{}", id(&images[0])));
    for query in [
        "status=ACTIVE",
        "status=SAVING",
        "status=active",
        "name=alpha",
        "name=foo:bar",
        "name=in:alpha,auto",
        "name=%C3%9Cn%C3%AFc%C3%B6d%C3%A9%20%E7%94%BB%E5%83%8F",
        "server=6b0f2a7e-3c1d-4e5f-8a9b-0c1d2e3f4a5b",
        "server=http://nova.example/v2.1/servers/6b0f2a7e-3c1d-4e5f-8a9b-0c1d2e3f4a5b",
        "type=snapshot",
        "minRam=512",
        "minDisk=10",
        "changes-since=2000-01-01T00:00:00Z",
        "changes-since=garbage",
        "property-image_type=snapshot",
        "foo=bar",
        "limit=1",
        "limit=2",
        "limit=0",
        "limit=-1",
        "limit=abc",
        "limit=2&foo=bar&name=alpha",
        "page_size=3",
        "offset=3",
        "limit=5000",
        "zzz=1&status=ACTIVE&property-image_type=snapshot&limit=1&name=snap",
        "marker=3f2e1d0c-9b8a-4765-8432-10fedcba9876",
    ] {
        paths.push(format!("/v2.1/images/detail?{query}"));
    }
    paths.push("/v2.1/images?limit=2".into());
    paths.push(format!("/v2.1/{pid}/images?limit=2"));
    paths.push("/v2/images/detail?limit=2".into());
    paths.push(format!("/v2.1/images/detail?limit=2&marker={}", id(&images[3])));
    paths.push(format!("/v2.1/images/detail?limit={}", images.len()));
    paths.push(format!("/v2.1/images/{}", uuid::Uuid::new_v4()));
    for path in &paths {
        p.same("GET", path, &[], None).await;
    }
    let show = format!("/v2.1/images/{}", id(&images[0]));
    for version in [
        "compute 2.1",
        "compute 2.35",
        "compute abc",
        "compute 3.0",
        "compute 2.999",
        "image 2.5",
        "compute 2.30, image 2.5",
    ] {
        p.same("GET", &show, &[("openstack-api-version", version)], None).await;
        p.same("GET", "/v2.1/images/detail", &[("openstack-api-version", version)], None).await;
    }
    p.same("GET", &show, &[("accept", "application/json")], None).await;
    // Another project's id in the URL.
    p.same("GET", "/v2.1/00000000000000000000000000000abc/images", &[], None).await;
}

#[tokio::test]
#[ignore = "needs a real Nova and Glance: scripts/test.sh runs it"]
async fn removed_microversions_are_served_on_purpose() {
    let p = Pair::new();
    let image = p.image(json!({"name": "kept"}), Some(16)).await;
    let path = format!("/v2.1/images/{}", id(&image));
    for version in ["compute 2.36", "compute latest"] {
        let (nova, gw) = p.both("GET", &path, &[("openstack-api-version", version)], None).await;
        // docs/compatibility.md #1: Nova refuses, the gateway answers as at 2.35.
        assert_eq!(nova.status, 404, "{version}");
        assert_eq!(gw.status, 200, "{version}");
        assert_eq!(nova.header("openstack-api-version"), gw.header("openstack-api-version"), "{version}");
        let (nova_ok, _) = p.both("GET", &path, &[], None).await;
        assert_eq!(gw.json(), serde_json::from_str::<Value>(&nova_ok.text.replace(&p.nova, &p.gw.base)).unwrap());
    }
    let meta = format!("{path}/metadata");
    let (nova, gw) = p.both("GET", &meta, &[("openstack-api-version", "compute 2.38")], None).await;
    p.assert_same("metadata at 2.38", &nova, &gw);
    let (nova, gw) = p.both("GET", &meta, &[("openstack-api-version", "compute 2.39")], None).await;
    assert_eq!((nova.status, gw.status), (404, 200));
}

#[tokio::test]
#[ignore = "needs a real Nova and Glance: scripts/test.sh runs it"]
async fn route_misses_match_nova() {
    let p = Pair::new();
    let image = p.image(json!({"name": "x"}), None).await;
    for (method, path) in [
        ("POST", "/v2.1/images".to_owned()),
        ("PUT", format!("/v2.1/images/{}", id(&image))),
        ("DELETE", "/v2.1/images/".into()),
        ("GET", format!("/v2.1/images/{}/nothing", id(&image))),
        ("GET", "/v2.1/not_hex/images".into()),
    ] {
        p.same(method, &path, &[], None).await;
        p.same(method, &path, &[("accept", "application/json")], None).await;
    }
}

/// A write sent to Nova for one image and to the gateway for its twin: same answer (modulo
/// the id) and the same properties in Glance afterwards.
async fn twin_write(p: &Pair, image: Value, method: &str, tail: &str, body: Option<Value>) {
    let a = p.image(image.clone(), None).await;
    let b = p.image(image, None).await;
    let nova = p.to(&p.nova, method, &format!("/v2.1/images/{}{tail}", id(&a)), &[], body.as_ref()).await;
    let gw = p.to(&p.gw.base, method, &format!("/v2.1/images/{}{tail}", id(&b)), &[], body.as_ref()).await;
    let nova_text = nova.text.replace(id(&a), id(&b));
    let nova = Answer { text: nova_text, ..nova };
    p.assert_same(&format!("{method} {tail} {body:?}"), &nova, &gw);
    let props = |image: Value| {
        let mut o = image.as_object().unwrap().clone();
        for key in ["id", "created_at", "updated_at", "self", "file", "visibility"] {
            o.remove(key);
        }
        Value::Object(o)
    };
    let (after_a, after_b) = (p.glance().get(id(&a)).await, p.glance().get(id(&b)).await);
    assert_eq!(props(after_a.clone()), props(after_b.clone()), "{method} {tail}: Glance state");
    // docs/compatibility.md: Nova rewrites `shared` visibility to `private` on every metadata
    // write; the gateway leaves visibility alone.
    assert_eq!(after_b["visibility"], "shared", "{method} {tail}: visibility");
}

#[tokio::test]
#[ignore = "needs a real Nova and Glance: scripts/test.sh runs it"]
async fn metadata_writes_match_nova() {
    let p = Pair::new();
    let base = json!({"name": "meta", "os_distro": "ubuntu", "architecture": "x86_64"});
    let meta = "/metadata";
    twin_write(&p, base.clone(), "GET", meta, None).await;
    twin_write(&p, base.clone(), "GET", "/metadata/os_distro", None).await;
    twin_write(&p, base.clone(), "GET", "/metadata/missing", None).await;
    twin_write(&p, base.clone(), "POST", meta, Some(json!({"metadata": {"os_version": "22.04", "Label": "x"}}))).await;
    twin_write(&p, base.clone(), "POST", meta, Some(json!({"metadata": {}}))).await;
    twin_write(
        &p,
        base.clone(),
        "PUT",
        meta,
        Some(json!({"metadata": {"os_version": "22.04", "architecture": "arm"}})),
    )
    .await;
    twin_write(&p, base.clone(), "PUT", meta, Some(json!({"metadata": {}}))).await;
    twin_write(&p, base.clone(), "PUT", "/metadata/os_distro", Some(json!({"meta": {"os_distro": "debian"}}))).await;
    twin_write(&p, base.clone(), "PUT", "/metadata/new", Some(json!({"meta": {"new": "v"}}))).await;
    twin_write(&p, base.clone(), "DELETE", "/metadata/os_distro", None).await;
    twin_write(&p, base.clone(), "DELETE", "/metadata/missing", None).await;
    for bad in [
        json!({"metadata": "x"}),
        json!({"metadata": {"k": 1}}),
        json!({"metadata": {"k": null}}),
        json!({"metadata": {"a/b": "v"}}),
        json!({"metadata": {"": "v"}}),
        json!({"metadata": {"k": "v".repeat(256)}}),
        json!({"metadata": {}, "extra": 1}),
        json!({"meta": {"k": "v"}}),
        json!([]),
    ] {
        twin_write(&p, base.clone(), "POST", meta, Some(bad.clone())).await;
        twin_write(&p, base.clone(), "PUT", meta, Some(bad)).await;
    }
    for bad in [json!({"meta": {"other": "v"}}), json!({"meta": {"os_distro": "a", "x": "b"}}), json!({"meta": {}})] {
        twin_write(&p, base.clone(), "PUT", "/metadata/os_distro", Some(bad)).await;
    }
}

#[tokio::test]
#[ignore = "needs a real Nova and Glance: scripts/test.sh runs it"]
async fn deletes_and_missing_images_match_nova() {
    let p = Pair::new();
    for image in [json!({"name": "active"}), json!({"name": "protected", "protected": true})] {
        let a = p.image(image.clone(), Some(16)).await;
        let b = p.image(image, Some(16)).await;
        let nova = p.to(&p.nova, "DELETE", &format!("/v2.1/images/{}", id(&a)), &[], None).await;
        let gw = p.to(&p.gw.base, "DELETE", &format!("/v2.1/images/{}", id(&b)), &[], None).await;
        p.assert_same("delete", &nova, &gw);
    }
    let missing = uuid::Uuid::new_v4().to_string();
    for path in [format!("/v2.1/images/{missing}"), "/v2.1/images/-1".into(), "/v2.1/images/detail".into()] {
        p.same("DELETE", &path, &[], None).await;
    }
    let meta = format!("/v2.1/images/{missing}/metadata");
    let body = json!({"metadata": {"k": "v"}});
    p.same("GET", &meta, &[], None).await;
    p.same("POST", &meta, &[], Some(&body)).await;
    p.same("PUT", &meta, &[], Some(&body)).await;
    p.same("GET", &format!("{meta}/k"), &[], None).await;
    p.same("PUT", &format!("{meta}/k"), &[], Some(&json!({"meta": {"k": "v"}}))).await;
    p.same("DELETE", &format!("{meta}/k"), &[], None).await;
    // An invalid body on a missing image: the body check comes first.
    p.same("POST", &meta, &[], Some(&json!({"metadata": {"k": 1}}))).await;
}

/// Ids that cannot name a Glance image are answered by the gateway without asking Glance, and
/// still as Nova answers them; past 8 KiB of request target the gateway answers 414 itself
/// (docs/compatibility.md), where this Nova (under uWSGI) asks Glance and answers 404.
#[tokio::test]
#[ignore = "needs a real Nova and Glance: scripts/test.sh runs it"]
async fn malformed_and_over_long_ids_match_nova() {
    let p = Pair::new();
    let image = p.image(json!({"name": "upper"}), Some(16)).await;
    let upper = id(&image).to_uppercase();
    let long = "x".repeat(5000);
    let ids = [
        "-1",
        "0",
        "not-a-uuid",
        "0b7e3a5c1f2d4e6a8b9c0d1e2f3a4b5c",
        "0b7e3a5c-1f2d-4e6a-8b9c-0d1e2f3a4b5c0",
        "%C3%A9t%C3%A9",
        "a%20b",
        upper.as_str(),
        long.as_str(),
    ];
    for id in ids {
        for (method, tail) in [("GET", ""), ("DELETE", ""), ("GET", "/metadata"), ("GET", "/metadata/k")] {
            p.same(method, &format!("/v2.1/images/{id}{tail}"), &[], None).await;
        }
        let body = json!({"metadata": {"k": "v"}});
        p.same("POST", &format!("/v2.1/images/{id}/metadata"), &[], Some(&body)).await;
    }
    let too_long = format!("/v2.1/images/{}", "x".repeat(20_000));
    let (nova, gw) = p.both("GET", &too_long, &[], None).await;
    assert_eq!((nova.status, gw.status), (404, 414), "gateway: {}", gw.text);
    assert_eq!(gw.json()["computeFault"]["code"], 414);
}

#[tokio::test]
#[ignore = "needs a real Nova and Glance: scripts/test.sh runs it"]
async fn version_documents_match_nova() {
    let p = Pair::new();
    for path in ["/", "/v2.1", "/v2.1/", "/v2", "/v2/"] {
        let nova = send(client().get(format!("{}{path}", p.nova))).await;
        let gw = send(client().get(format!("{}{path}", p.gw.base))).await;
        let nova = Answer { text: nova.text.replace(&p.nova, &p.gw.base), ..nova };
        assert_eq!(nova.status, gw.status, "{path}");
        assert_eq!(nova.json(), gw.json(), "{path}");
    }
}
