//! The Glance v1 dialect through the gateway, against a Glance (the embedded store, or the
//! real Glance 33 with `IG_TEST_GLANCE_URL`).
//!
//! Expected answers come from Glance v1's own rules (Queens `glance/api/v1/`, reference
//! glance-api.md §6) applied to what the fixtures hold in Glance v2, not from the mapping file.

mod common;

use std::sync::OnceLock;

use common::{client, send, Answer, Gateway, GlanceFixtures, Harness};
use serde_json::{json, Map, Value};

const MOUNT: &str = "/image-v1";

/// One test at a time: the test Glance (one uWSGI worker on sqlite) does not take this file's
/// disturbances in its stride when they overlap. A copy-from import runs in a thread of its own
/// and locks other writes out ("database is locked", a 500), and alongside uploads cut off in
/// the middle, uWSGI's router was seen to answer other requests with garbage ("invalid HTTP
/// version"). Run one by one, as here, the tests pass against it every time.
static GLANCE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct World {
    h: &'static Harness,
    gw: Gateway,
    /// Marks this run's images (custom property `run`), so lists see only them.
    run: String,
    images: Vec<(&'static str, Value)>,
    /// The bytes of the `active` fixture.
    data: Vec<u8>,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let h = Harness::get();
        let gw = h.gateway(|_| {});
        let run = uuid::Uuid::new_v4().simple().to_string();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let images = h.block_on(fixtures(h, &run, &data));
        World { h, gw, run, images, data }
    })
}

async fn fixtures(h: &'static Harness, run: &str, data: &[u8]) -> Vec<(&'static str, Value)> {
    let g = GlanceFixtures { h, http: client() };
    let queued = g.create(json!({"name": format!("q-{run}"), "run": run, "os_distro": "cirros", "min_ram": 64})).await;
    let public = g
        .create(json!({"name": format!("p-{run}"), "run": run, "visibility": "public", "disk_format": "qcow2", "container_format": "bare"}))
        .await;
    let active = g
        .create(json!({"name": format!("a-{run}"), "run": run, "disk_format": "raw", "container_format": "bare", "visibility": "private"}))
        .await;
    let active_id = active["id"].as_str().unwrap().to_owned();
    g.upload(&active_id, data.to_vec()).await;
    let active = g.get(&active_id).await;
    let deactivated = g.active(json!({"name": format!("d-{run}"), "run": run}), 10).await;
    g.deactivate(deactivated["id"].as_str().unwrap()).await;
    let deactivated = g.get(deactivated["id"].as_str().unwrap()).await;
    vec![("queued", queued), ("public", public), ("active", active), ("deactivated", deactivated)]
}

impl World {
    fn image(&self, name: &str) -> &Value {
        &self.images.iter().find(|(n, _)| *n == name).unwrap().1
    }

    fn id(&self, name: &str) -> String {
        self.image(name)["id"].as_str().unwrap().to_owned()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{MOUNT}{path}", self.gw.base)
    }

    async fn get(&self, path: &str) -> Answer {
        send(client().get(self.url(path)).headers(self.h.member())).await
    }

    async fn head(&self, path: &str) -> Answer {
        send(client().head(self.url(path)).headers(self.h.member())).await
    }

    /// This run's images in a v1 list, by name, in the order listed.
    async fn names(&self, path: &str, query: &str) -> Vec<String> {
        let a = self.get(&format!("{path}?property-run={}&{query}", self.run)).await;
        assert_eq!(a.status, 200, "{query}: {}", a.text);
        a.json()["images"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap()[..1].to_owned()).collect()
    }

    /// v1's detailed image for a v2 fixture, by v1's rules (reference §6.3, §6.5).
    fn expected(&self, image: &Value) -> Value {
        let mut properties = Map::new();
        for (k, v) in image.as_object().unwrap() {
            if !common::GLANCE_BASE_PROPERTIES.contains(&k.as_str()) && !k.starts_with("os_glance_") {
                properties.insert(k.clone(), v.clone());
            }
        }
        json!({
            "id": image["id"],
            "name": image["name"],
            "status": image["status"],
            "is_public": image["visibility"] == "public",
            "protected": image["protected"],
            "container_format": image["container_format"],
            "disk_format": image["disk_format"],
            "size": image["size"].as_u64().unwrap_or(0),
            "virtual_size": image["virtual_size"],
            "checksum": image["checksum"],
            "min_disk": image["min_disk"],
            "min_ram": image["min_ram"],
            "owner": image["owner"],
            "created_at": v1_time(image["created_at"].as_str().unwrap()),
            "updated_at": v1_time(image["updated_at"].as_str().unwrap()),
            "deleted": false,
            "deleted_at": null,
            "properties": properties,
        })
    }
}

/// Glance v2's `2024-05-01T10:20:30Z` as v1 wrote it: microseconds, no zone.
fn v1_time(v2: &str) -> String {
    let (seconds, _) = v2.split_once('Z').unwrap();
    match seconds.split_once('.') {
        Some((whole, fraction)) => format!("{whole}.{fraction:0<6}"),
        None => format!("{seconds}.000000"),
    }
}

fn header(a: &Answer, name: &str) -> Option<String> {
    a.headers.get(name).map(|v| String::from_utf8(v.as_bytes().to_vec()).unwrap())
}

/// The headers v1 gave for an image: every non-null field, Python-`str`ed.
fn expected_headers(v1: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (k, v) in v1.as_object().unwrap() {
        let text = |v: &Value| match v {
            Value::Bool(b) => Some(if *b { "True".to_owned() } else { "False".to_owned() }),
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        };
        if k == "properties" {
            for (pk, pv) in v.as_object().unwrap() {
                out.push((format!("x-image-meta-property-{pk}"), text(pv).unwrap()));
            }
        } else if let Some(t) = text(v) {
            out.push((format!("x-image-meta-{k}"), t));
        }
    }
    out
}

#[tokio::test]
async fn the_mount_answers_a_v1_only_version_document() {
    let _glance = GLANCE.lock().await;
    let w = world();
    let a = send(client().get(format!("{}{MOUNT}", w.gw.base))).await;
    assert_eq!(a.status, 300, "{} {:?}", a.text, a.headers);
    let href = format!("{}{MOUNT}/v1/", w.gw.base);
    let link = json!([{"rel": "self", "href": href}]);
    assert_eq!(
        a.json(),
        json!({"versions": [
            {"id": "v1.1", "status": "DEPRECATED", "links": link},
            {"id": "v1.0", "status": "DEPRECATED", "links": link},
        ]})
    );
    // glanceclient asks `<endpoint>/versions` and takes only a 200 there.
    let versions = send(client().get(format!("{}{MOUNT}/versions", w.gw.base))).await;
    assert_eq!((versions.status, versions.json()), (200, a.json()));
    assert_eq!(send(client().get(format!("{}{MOUNT}/", w.gw.base))).await.status, 300);
}

#[tokio::test]
async fn detail_lists_images_in_v1_shape() {
    let _glance = GLANCE.lock().await;
    let w = world();
    let a = w.get(&format!("/v1/images/detail?property-run={}&sort_key=name&sort_dir=asc", w.run)).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.header("content-type"), Some("application/json"));
    let want: Vec<Value> =
        ["active", "deactivated", "public", "queued"].iter().map(|n| w.expected(w.image(n))).collect();
    assert_eq!(a.json(), json!({ "images": want }));
    let queued = &a.json()["images"][3];
    assert_eq!((queued["size"].clone(), queued["properties"]["os_distro"].clone()), (json!(0), json!("cirros")));
    let created = queued["created_at"].as_str().unwrap();
    assert!(created.len() == 26 && !created.ends_with('Z'), "{created}");
}

#[tokio::test]
async fn the_brief_list_has_six_fields() {
    let _glance = GLANCE.lock().await;
    let w = world();
    let a = w.get(&format!("/v1/images?property-run={}&name=a-{}", w.run, w.run)).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let i = w.image("active");
    assert_eq!(
        a.json(),
        json!({"images": [{"id": i["id"], "name": i["name"], "size": w.data.len(), "disk_format": "raw",
                           "container_format": "bare", "checksum": i["checksum"]}]})
    );
}

#[tokio::test]
async fn list_filters_sorting_and_paging() {
    let _glance = GLANCE.lock().await;
    let w = world();
    let d = "/v1/images/detail";
    assert_eq!(w.names(d, "sort_key=name&sort_dir=asc").await, ["a", "d", "p", "q"]);
    assert_eq!(w.names(d, "sort_key=name&sort_dir=desc").await, ["q", "p", "d", "a"]);
    assert_eq!(w.names(d, "sort_key=name&sort_dir=asc&is_public=true").await, ["p"]);
    assert_eq!(w.names(d, "sort_key=name&sort_dir=asc&is_public=True").await, ["p"]);
    assert_eq!(w.names(d, "sort_key=name&sort_dir=asc&is_public=false").await, ["a", "d", "q"]);
    assert_eq!(w.names(d, "sort_key=name&sort_dir=asc&is_public=false&limit=2").await, ["a", "d"]);
    assert_eq!(w.names(d, "sort_key=name&sort_dir=asc&is_public=none").await, ["a", "d", "p", "q"]);
    assert_eq!(w.names(d, "status=queued&sort_key=name&sort_dir=asc").await, ["p", "q"]);
    assert_eq!(w.names(d, "status=active").await, ["a"]);
    assert_eq!(w.names(d, "disk_format=qcow2").await, ["p"]);
    assert_eq!(w.names(d, "container_format=bare&sort_key=name&sort_dir=asc").await, ["a", "d", "p"]);
    assert_eq!(w.names(d, &format!("name=q-{}", w.run)).await, ["q"]);
    assert_eq!(w.names(d, "property-os_distro=cirros").await, ["q"]);
    assert_eq!(w.names(d, "size_min=1000&sort_key=name&sort_dir=asc").await, ["a"]);
    assert_eq!(w.names(d, "size_max=100&sort_key=name&sort_dir=asc").await, ["d"]);
    assert_eq!(w.names(d, "min_ram=64").await, ["q"]);
    assert_eq!(w.names(d, "protected=0&sort_key=name&sort_dir=asc&limit=1").await, ["a"]);
    assert_eq!(w.names(d, "protected=true").await, Vec::<String>::new());
    assert_eq!(w.names(d, "changes-since=2000-01-01T00:00:00&sort_key=name&sort_dir=asc").await, ["a", "d", "p", "q"]);
    assert_eq!(w.names(d, "changes-since=2999-01-01T00:00:00").await, Vec::<String>::new());
    // Paging as glanceclient does it: marker = last id, until a short page.
    let first = w.get(&format!("{d}?property-run={}&sort_key=name&sort_dir=asc&limit=2", w.run)).await.json();
    let last = first["images"][1]["id"].as_str().unwrap().to_owned();
    assert_eq!(w.names(d, &format!("sort_key=name&sort_dir=asc&limit=2&marker={last}")).await, ["p", "q"]);
    let unhyphenated = last.replace('-', "").to_uppercase();
    assert_eq!(w.names(d, &format!("sort_key=name&sort_dir=asc&limit=2&marker={unhyphenated}")).await, ["p", "q"]);
    assert_eq!(w.names(d, "limit=0").await, Vec::<String>::new());
}

#[tokio::test]
async fn bad_list_parameters_are_v1_400s() {
    let _glance = GLANCE.lock().await;
    let w = world();
    for (query, text) in [
        ("limit=x", "limit param must be an integer"),
        ("limit=-1", "limit param must be positive"),
        ("marker=nope", "Invalid marker format"),
        ("sort_key=owner", "Unsupported sort_key. Acceptable values: name, status"),
        ("sort_dir=up", "Unsupported sort_dir. Acceptable values: asc, desc"),
        ("size_min=-5", "Bad value passed to filter size_min got -5"),
        ("size_max=big", "Bad value passed to filter size_max got big"),
        ("min_ram=1.5", "Bad value passed to filter min_ram got 1.5"),
        ("is_public=maybe", "Bad value passed to filter is_public got maybe"),
        ("protected=none", "protected must be True, or False"),
        ("changes-since=yesterday", "Unrecognized changes-since value"),
    ] {
        for path in ["/v1/images", "/v1/images/detail"] {
            let a = w.get(&format!("{path}?{query}")).await;
            assert_eq!(a.status, 400, "{path}?{query}: {}", a.text);
            assert!(a.text.contains(text), "{path}?{query}: {}", a.text);
        }
    }
}

#[tokio::test]
async fn head_says_the_image_in_headers() {
    let _glance = GLANCE.lock().await;
    let w = world();
    for name in ["queued", "active", "public", "deactivated"] {
        let a = w.head(&format!("/v1/images/{}", w.id(name))).await;
        assert_eq!(a.status, 200, "{name}");
        let want = expected_headers(&w.expected(w.image(name)));
        for (k, v) in &want {
            assert_eq!(header(&a, k).as_deref(), Some(v.as_str()), "{name}: {k}");
        }
        let meta = a.headers.keys().filter(|k| k.as_str().starts_with("x-image-meta-")).count();
        assert_eq!(meta, want.len(), "{name}: {:?}", a.headers);
        assert_eq!(header(&a, "etag"), w.image(name)["checksum"].as_str().map(str::to_owned), "{name}");
    }
    let a = w.head(&format!("/v1/images/{}", w.id("queued"))).await;
    assert_eq!(header(&a, "x-image-meta-size").as_deref(), Some("0"));
    assert_eq!(header(&a, "x-image-meta-is_public").as_deref(), Some("False"));
    assert_eq!(header(&a, "x-image-meta-deleted").as_deref(), Some("False"));
    assert_eq!(header(&a, "x-image-meta-property-os_distro").as_deref(), Some("cirros"));
    assert_eq!(header(&a, "x-image-meta-deleted_at"), None);
    let missing = uuid::Uuid::new_v4();
    assert_eq!(w.head(&format!("/v1/images/{missing}")).await.status, 404);
    assert_eq!(w.head("/v1/images/not-an-id").await.status, 404);
}

#[tokio::test]
async fn get_streams_the_bytes_under_the_image_headers() {
    let _glance = GLANCE.lock().await;
    let w = world();
    let a = w.get(&format!("/v1/images/{}", w.id("active"))).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("content-type"), Some("application/octet-stream"));
    assert_eq!(a.header("content-length"), Some(w.data.len().to_string().as_str()));
    assert_eq!(header(&a, "x-image-meta-id"), Some(w.id("active")));
    assert_eq!(header(&a, "x-image-meta-status").as_deref(), Some("active"));
    assert_eq!(header(&a, "x-image-meta-checksum"), w.image("active")["checksum"].as_str().map(str::to_owned));
    let bytes = client().get(w.url(&format!("/v1/images/{}", w.id("active")))).headers(w.h.member()).send().await;
    assert_eq!(bytes.unwrap().bytes().await.unwrap().as_ref(), w.data.as_slice());
    // As v1: an image that is not active has no bytes to give; a deactivated one is refused.
    let queued = w.get(&format!("/v1/images/{}", w.id("queued"))).await;
    assert_eq!(queued.status, 404, "{}", queued.text);
    assert!(queued.text.contains("is not active"), "{}", queued.text);
    assert_eq!(w.get(&format!("/v1/images/{}", w.id("deactivated"))).await.status, 403);
    assert_eq!(w.get(&format!("/v1/images/{}", uuid::Uuid::new_v4())).await.status, 404);
}

#[tokio::test]
async fn errors_are_webob_pages_and_route_misses_are_404_or_405() {
    let _glance = GLANCE.lock().await;
    let w = world();
    let missing = uuid::Uuid::new_v4();
    let html =
        send(client().get(w.url(&format!("/v1/images/{missing}"))).headers(w.h.member()).header("accept", "*/*")).await;
    assert_eq!(html.status, 404);
    assert_eq!(html.header("content-type"), Some("text/html; charset=UTF-8"));
    assert!(html.text.contains(&format!("Image with identifier {missing} not found")), "{}", html.text);
    let text =
        send(client().get(w.url("/v1/images?limit=x")).headers(w.h.member()).header("accept", "text/plain")).await;
    assert_eq!(text.header("content-type"), Some("text/plain; charset=UTF-8"));
    assert_eq!(text.text, "400 Bad Request\n\nlimit param must be an integer\n\n   ");
    assert_eq!(w.get("/v1/nothing").await.status, 404);
    let post = send(client().patch(w.url("/v1/images")).headers(w.h.member())).await;
    assert_eq!(post.status, 405);
    assert!(post.header("allow").is_some_and(|a| a.starts_with("GET")), "{:?}", post.headers);
    // HEAD of the detail list is not HEAD of an image called `detail`.
    let head = w.head("/v1/images/detail").await;
    assert_eq!((head.status, head.header("allow")), (405, Some("GET")), "{:?}", head.headers);
}

#[tokio::test]
async fn v1_calls_are_counted_by_route() {
    let _glance = GLANCE.lock().await;
    let w = world();
    w.get(&format!("/v1/images/detail?property-run={}", w.run)).await;
    let text = send(client().get(format!("{}/metrics", w.gw.base))).await.text;
    let counted = text
        .lines()
        .any(|l| l.starts_with("image_gateway_requests_total{") && l.contains(r#"route="glance_v1.images.detail""#));
    assert!(counted, "{text}");
}

/// A v1 request with `x-image-meta-*` headers (and other headers) as pairs.
fn v1_request(w: &World, method: reqwest::Method, path: &str, headers: &[(&str, &str)]) -> reqwest::RequestBuilder {
    let mut req = client().request(method, w.url(path)).headers(w.h.member());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req
}

/// `bytes` as a chunked body of 64 KiB pieces, as glanceclient sends a file.
fn chunked(bytes: Vec<u8>) -> reqwest::Body {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = bytes.chunks(64 << 10).map(|c| Ok(c.to_vec())).collect();
    reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))
}

/// The images of this test's project Glance holds under `name`.
async fn glance_named(w: &World, name: &str) -> Vec<Value> {
    let url = format!("{}/v2/images?name={name}", w.h.glance_url);
    let a = send(client().get(url).headers(w.h.admin())).await;
    assert_eq!(a.status, 200, "{}", a.text);
    a.json()["images"].as_array().unwrap().clone()
}

fn unique(what: &str) -> String {
    format!("{what}-{}", uuid::Uuid::new_v4().simple())
}

#[tokio::test]
async fn create_streams_a_multi_mib_body_into_glance_and_get_streams_it_back() {
    let _glance = GLANCE.lock().await;
    let w = world();
    let name = unique("upload");
    let bytes: Vec<u8> = (0..(6 << 20) as u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let size = bytes.len().to_string();
    let a = send(
        v1_request(
            w,
            reqwest::Method::POST,
            "/v1/images",
            &[
                ("x-image-meta-name", &name),
                ("x-image-meta-disk_format", "raw"),
                ("x-image-meta-container_format", "bare"),
                ("x-image-meta-min_ram", "128"),
                ("x-image-meta-size", &size),
                ("x-image-meta-property-os_distro", "cirros"),
                ("x-image-meta-property-Hw-Disk-Bus", "scsi"),
                ("content-type", "application/octet-stream"),
            ],
        )
        .body(chunked(bytes.clone())),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.text);
    let image = a.json()["image"].clone();
    let id = image["id"].as_str().unwrap().to_owned();
    assert_eq!(a.header("location"), Some(w.url(&format!("/v1/images/{id}")).as_str()));
    let stored = glance_named(w, &name).await;
    assert_eq!(stored.len(), 1);
    let stored = &stored[0];
    assert_eq!(image, w.expected(stored));
    assert_eq!((stored["status"].as_str(), stored["size"].as_u64()), (Some("active"), Some(bytes.len() as u64)));
    assert_eq!((stored["os_distro"].as_str(), stored["hw_disk_bus"].as_str()), (Some("cirros"), Some("scsi")));
    assert_eq!(stored["min_ram"], 128);
    let down = client().get(w.url(&format!("/v1/images/{id}"))).headers(w.h.member()).send().await.unwrap();
    assert_eq!(down.status(), 200);
    assert_eq!(down.content_length(), Some(bytes.len() as u64));
    assert!(down.bytes().await.unwrap() == bytes, "the bytes downloaded are the bytes uploaded");
}

#[tokio::test]
async fn a_reserved_image_takes_its_bytes_with_a_put() {
    let _glance = GLANCE.lock().await;
    let w = world();
    let name = unique("reserve");
    let a = send(v1_request(w, reqwest::Method::POST, "/v1/images", &[("x-image-meta-name", &name)])).await;
    assert_eq!(a.status, 201, "{}", a.text);
    let image = a.json()["image"].clone();
    assert_eq!((image["status"].as_str(), image["size"].as_u64()), (Some("queued"), Some(0)));
    let id = image["id"].as_str().unwrap().to_owned();
    // Without formats, v1 would not take the bytes; nothing reaches Glance.
    let path = format!("/v1/images/{id}");
    let refused = send(v1_request(w, reqwest::Method::PUT, &path, &[]).body(vec![1u8; 10])).await;
    assert_eq!(refused.status, 400, "{}", refused.text);
    assert!(refused.text.contains("Disk format is not specified."), "{}", refused.text);
    let put = send(
        v1_request(
            w,
            reqwest::Method::PUT,
            &path,
            &[
                // Glance 33 inspects the bytes: these are raw.
                ("x-image-meta-disk_format", "raw"),
                ("x-image-meta-container_format", "bare"),
                ("x-glance-registry-purge-props", "false"),
            ],
        )
        .body(chunked(vec![9u8; 200_000])),
    )
    .await;
    assert_eq!(put.status, 200, "{}", put.text);
    assert_eq!(put.json()["image"]["status"], "active");
    assert_eq!(put.json()["image"]["size"], 200_000);
    // Bytes for an image that has them: v1's 409.
    let again = send(v1_request(w, reqwest::Method::PUT, &path, &[]).body(vec![1u8; 10])).await;
    assert_eq!(again.status, 409, "{}", again.text);
    assert!(again.text.contains("Cannot upload to an unqueued image"), "{}", again.text);
}

/// Headers, a body if any, and what the 400 says.
type Mistake = (&'static [(&'static str, &'static str)], Option<Vec<u8>>, &'static str);

#[tokio::test]
async fn client_mistakes_are_400s_and_make_no_image() {
    let _glance = GLANCE.lock().await;
    let w = world();
    let name = unique("mistake");
    let cases: [Mistake; 9] = [
        (&[("x-image-meta-colour", "red")], None, "Bad header: x-image-meta-colour"),
        (&[("x-image-meta-size", "ten")], None, "Cannot convert image size 'ten' to an integer."),
        (&[("x-image-meta-min_ram", "-5")], None, "Cannot be a negative value."),
        (&[("x-image-meta-is_public", "true"), ("x-image-meta-location", "http://x/y")], None, "not supported"),
        (
            &[
                ("x-glance-api-copy-from", "http://127.0.0.1:9/x"),
                ("x-image-meta-disk_format", "raw"),
                ("x-image-meta-container_format", "bare"),
            ],
            Some(vec![1, 2, 3]),
            "It's invalid to provide multiple image sources.",
        ),
        (&[("x-glance-api-copy-from", "file:///etc/passwd")], None, "External sources are not supported"),
        (
            &[
                ("x-image-meta-disk_format", "raw"),
                ("x-image-meta-container_format", "bare"),
                ("x-image-meta-size", "5"),
            ],
            Some(vec![0; 9]),
            "does not match the 9 bytes",
        ),
        (&[("x-image-meta-container_format", "bare")], Some(vec![0; 9]), "Disk format is not specified."),
        (
            &[
                ("x-image-meta-disk_format", "raw"),
                ("x-image-meta-container_format", "bare"),
                ("content-type", "text/plain"),
            ],
            Some(vec![0; 9]),
            "Content-Type must be application/octet-stream",
        ),
    ];
    for (headers, body, text) in cases {
        let mut all = headers.to_vec();
        all.push(("x-image-meta-name", &name));
        all.push(("accept", "text/plain"));
        let mut req = v1_request(w, reqwest::Method::POST, "/v1/images", &all);
        if let Some(body) = body {
            req = req.body(body);
        }
        let a = send(req).await;
        assert_eq!(a.status, 400, "{headers:?}: {}", a.text);
        assert!(a.text.contains(text), "{headers:?}: {}", a.text);
    }
    assert!(glance_named(w, &name).await.is_empty(), "a refused create made an image");
}

#[tokio::test]
async fn an_upload_that_fails_midway_leaves_no_image() {
    let _glance = GLANCE.lock().await;
    let w = world();
    // The body ends before the size it declares: the upload fails in Glance, and the image the
    // create made is deleted before the client gets its 400.
    let name = unique("short");
    let a = send(
        v1_request(
            w,
            reqwest::Method::POST,
            "/v1/images",
            &[
                ("x-image-meta-name", &name),
                ("x-image-meta-disk_format", "raw"),
                ("x-image-meta-container_format", "bare"),
                ("x-image-meta-size", "3000000"),
            ],
        )
        .body(chunked(vec![5u8; 1_000_000])),
    )
    .await;
    assert_eq!(a.status, 400, "{}", a.text);
    assert!(a.text.contains("not the 3000000 it declared"), "{}", a.text);
    assert!(glance_named(w, &name).await.is_empty(), "the half-made image stayed");
    // The client goes away in the middle of its body: the image goes too.
    let name = unique("gone");
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let body = reqwest::Body::wrap_stream(tokio_stream_of(rx));
    let req = v1_request(
        w,
        reqwest::Method::POST,
        "/v1/images",
        &[("x-image-meta-name", &name), ("x-image-meta-disk_format", "raw"), ("x-image-meta-container_format", "bare")],
    )
    .body(body);
    let sending = tokio::spawn(req.send());
    tx.send(Ok(vec![1u8; 100_000])).await.unwrap();
    // Glance has made the image by the time the body flows into its upload.
    let made = wait_until(|| async { glance_named(w, &name).await.len() == 1 }).await;
    assert!(made, "the create never reached Glance");
    tx.send(Err(std::io::Error::other("the client fell over"))).await.unwrap();
    drop(tx);
    let _ = sending.await.unwrap();
    let gone = wait_until(|| async { glance_named(w, &name).await.is_empty() }).await;
    assert!(gone, "the image of an abandoned upload stayed");
}

fn tokio_stream_of(
    rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })
}

/// Waits for something another task does (Glance's state after a request the client
/// abandoned): true once `done`, false after 10 s.
async fn wait_until<F, Fut>(done: F) -> bool
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if done().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn put_updates_fields_and_properties_and_purges_unless_told_not_to() {
    let _glance = GLANCE.lock().await;
    let w = world();
    let name = unique("update");
    let created = send(v1_request(
        w,
        reqwest::Method::POST,
        "/v1/images",
        &[("x-image-meta-name", &name), ("x-image-meta-property-a", "1"), ("x-image-meta-property-b", "2")],
    ))
    .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.json()["image"]["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/images/{id}");
    let renamed = format!("{name}-renamed");
    // glanceclient's image-update: purge off, one property changed, one added.
    let a = send(v1_request(
        w,
        reqwest::Method::PUT,
        &path,
        &[
            ("x-glance-registry-purge-props", "false"),
            ("x-image-meta-name", &renamed),
            ("x-image-meta-min_disk", "3"),
            ("x-image-meta-protected", "True"),
            ("x-image-meta-property-b", "20"),
            ("x-image-meta-property-c", "3"),
        ],
    ))
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let stored = &glance_named(w, &renamed).await[0];
    assert_eq!(a.json()["image"], w.expected(stored));
    assert_eq!((stored["a"].as_str(), stored["b"].as_str(), stored["c"].as_str()), (Some("1"), Some("20"), Some("3")));
    assert_eq!((stored["min_disk"].as_u64(), stored["protected"].as_bool()), (Some(3), Some(true)));
    // A protected image is not deleted: Glance's 403 reaches the client.
    let refused = send(v1_request(w, reqwest::Method::DELETE, &path, &[])).await;
    assert_eq!(refused.status, 403, "{}", refused.text);
    // Purge (v1's default): the properties not sent again go.
    let a = send(v1_request(
        w,
        reqwest::Method::PUT,
        &path,
        &[("x-image-meta-protected", "False"), ("x-image-meta-property-c", "3")],
    ))
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json()["image"]["properties"], json!({"c": "3"}));
    let stored = &glance_named(w, &renamed).await[0];
    assert!(stored.get("a").is_none() && stored.get("b").is_none(), "{stored}");
    // What v1 never let a client change, refused before Glance hears of it.
    for (header, value) in
        [("x-image-meta-id", "0b7e3a5c-1f2d-4e6a-8b9c-0d1e2f3a4b5c"), ("x-image-meta-status", "active")]
    {
        let a = send(v1_request(w, reqwest::Method::PUT, &path, &[(header, value)])).await;
        assert_eq!(a.status, 403, "{header}: {}", a.text);
    }
    assert_eq!(send(v1_request(w, reqwest::Method::PUT, &path, &[("x-image-meta-oops", "1")])).await.status, 400);
    let missing = format!("/v1/images/{}", uuid::Uuid::new_v4());
    assert_eq!(send(v1_request(w, reqwest::Method::PUT, &missing, &[("x-image-meta-name", "x")])).await.status, 404);
    // Delete: 200 with nothing in it, as Queens' code answered; then the image is gone.
    let deleted = send(v1_request(w, reqwest::Method::DELETE, &path, &[])).await;
    assert_eq!((deleted.status, deleted.text.as_str()), (200, ""));
    assert_eq!(w.head(&path).await.status, 404);
    assert!(glance_named(w, &renamed).await.is_empty());
    assert_eq!(send(v1_request(w, reqwest::Method::DELETE, &path, &[])).await.status, 404);
}

#[tokio::test]
async fn members_go_through_glance_v2_members() {
    let _glance = GLANCE.lock().await;
    let w = world();
    let name = unique("members");
    let created = send(v1_request(w, reqwest::Method::POST, "/v1/images", &[("x-image-meta-name", &name)])).await;
    let id = created.json()["image"]["id"].as_str().unwrap().to_owned();
    // Glance v2 keeps members for shared images only: a private one is made shared first.
    let patch = send(
        client()
            .patch(format!("{}/v2/images/{id}", w.h.glance_url))
            .headers(w.h.member())
            .header("content-type", "application/openstack-images-v2.1-json-patch")
            .body(r#"[{"op": "replace", "path": "/visibility", "value": "private"}]"#),
    )
    .await;
    assert_eq!(patch.status, 200, "{}", patch.text);
    let (t1, t2, t3) = (unique("tenant"), unique("tenant"), unique("tenant"));
    let members = format!("/v1/images/{id}/members");
    let a = send(v1_request(w, reqwest::Method::PUT, &format!("{members}/{t1}"), &[])).await;
    assert_eq!(a.status, 204, "{}", a.text);
    assert_eq!(glance_named(w, &name).await[0]["visibility"], "shared");
    // Again: v1's PUT is idempotent.
    assert_eq!(send(v1_request(w, reqwest::Method::PUT, &format!("{members}/{t1}"), &[])).await.status, 204);
    let listed = w.get(&members).await;
    assert_eq!(listed.json(), json!({"members": [{"member_id": t1, "can_share": false}]}));
    let body = json!({"memberships": [{"member_id": t2, "can_share": false}, {"member_id": t3}]});
    let replaced = send(v1_request(w, reqwest::Method::PUT, &members, &[]).json(&body)).await;
    assert_eq!(replaced.status, 204, "{}", replaced.text);
    let v2 = send(client().get(format!("{}/v2/images/{id}/members", w.h.glance_url)).headers(w.h.member())).await;
    let mut ids: Vec<String> =
        v2.json()["members"].as_array().unwrap().iter().map(|m| m["member_id"].as_str().unwrap().to_owned()).collect();
    ids.sort();
    let mut want = vec![t2.clone(), t3.clone()];
    want.sort();
    assert_eq!(ids, want);
    let shared = w.get(&format!("/v1/shared-images/{t2}")).await;
    assert_eq!(shared.json(), json!({"shared_images": [{"image_id": id, "can_share": false}]}));
    assert_eq!(w.get(&format!("/v1/shared-images/{t1}")).await.json(), json!({"shared_images": []}));
    let removed = send(v1_request(w, reqwest::Method::DELETE, &format!("{members}/{t2}"), &[])).await;
    assert_eq!(removed.status, 204, "{}", removed.text);
    assert_eq!(w.get(&members).await.json(), json!({"members": [{"member_id": t3, "can_share": false}]}));
    assert_eq!(send(v1_request(w, reqwest::Method::DELETE, &format!("{members}/{t2}"), &[])).await.status, 404);
    let bad = send(v1_request(w, reqwest::Method::PUT, &members, &[]).json(&json!({"memberships": [{"id": 1}]}))).await;
    assert_eq!(bad.status, 400, "{}", bad.text);
    let unknown = format!("/v1/images/{}/members", uuid::Uuid::new_v4());
    assert_eq!(w.get(&unknown).await.status, 404);
}

/// Serves `bytes` at `http://127.0.0.1:<port>/image` for as long as the test runs.
async fn serve_bytes(bytes: Vec<u8>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route("/image", axum::routing::get(move || async move { bytes.clone() }));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/image")
}

#[tokio::test]
async fn copy_from_becomes_a_web_download_import() {
    let _glance = GLANCE.lock().await;
    let w = world();
    let bytes: Vec<u8> = (0..50_000u32).map(|i| (i % 7) as u8).collect();
    // Glance fetches from the test's own runtime: serve from the harness's, which outlives it.
    let url = w.h.block_on(serve_bytes(bytes.clone()));
    let name = unique("copy");
    let a = send(v1_request(
        w,
        reqwest::Method::POST,
        "/v1/images",
        &[
            ("x-image-meta-name", &name),
            ("x-image-meta-disk_format", "raw"),
            ("x-image-meta-container_format", "bare"),
            ("x-glance-api-copy-from", &url),
        ],
    ))
    .await;
    assert_eq!(a.status, 201, "{}", a.text);
    let id = a.json()["image"]["id"].as_str().unwrap().to_owned();
    // The import runs in Glance after the answer, as v1's copy did.
    let path = format!("/v1/images/{id}");
    let active =
        wait_until(|| async { header(&w.head(&path).await, "x-image-meta-status").as_deref() == Some("active") });
    assert!(active.await, "the copy never finished");
    let down = client().get(w.url(&path)).headers(w.h.member()).send().await.unwrap();
    assert!(down.bytes().await.unwrap() == bytes);
    // A copy Glance will not make leaves no image behind.
    let name = unique("nocopy");
    let refused = send(v1_request(
        w,
        reqwest::Method::POST,
        "/v1/images",
        &[
            ("x-image-meta-name", &name),
            ("x-image-meta-disk_format", "raw"),
            ("x-image-meta-container_format", "bare"),
            ("x-glance-api-copy-from", "http://192.0.2.1:81/nowhere"),
        ],
    ))
    .await;
    assert_eq!(refused.status, 400, "{}", refused.text);
    assert!(glance_named(w, &name).await.is_empty());
}

#[tokio::test]
async fn a_checksum_that_does_not_match_the_bytes_leaves_no_image() {
    let _glance = GLANCE.lock().await;
    let w = world();
    let name = unique("checksum");
    let a = send(
        v1_request(
            w,
            reqwest::Method::POST,
            "/v1/images",
            &[
                ("x-image-meta-name", &name),
                ("x-image-meta-disk_format", "raw"),
                ("x-image-meta-container_format", "bare"),
                ("x-image-meta-checksum", "00000000000000000000000000000000"),
            ],
        )
        .body(vec![1u8; 1000]),
    )
    .await;
    if w.h.real_glance {
        assert_eq!(a.status, 400, "{}", a.text);
        assert!(a.text.contains("did not match"), "{}", a.text);
        assert!(glance_named(w, &name).await.is_empty());
    } else {
        // The in-memory store computes no checksums: there is nothing to compare.
        assert_eq!(a.status, 201, "{}", a.text);
    }
}

#[tokio::test]
async fn max_image_bytes_refuses_larger_uploads_declared_or_not() {
    let _glance = GLANCE.lock().await;
    let w = world();
    let gw = w.h.gateway(|c| c.glance_v1.max_image_bytes = Some(100_000));
    for (framing, body) in
        [("declared", reqwest::Body::from(vec![0u8; 150_000])), ("chunked", chunked(vec![0u8; 150_000]))]
    {
        let name = unique("big");
        let a = send(
            client()
                .post(format!("{}{MOUNT}/v1/images", gw.base))
                .headers(w.h.member())
                .header("x-image-meta-name", &name)
                .header("x-image-meta-disk_format", "raw")
                .header("x-image-meta-container_format", "bare")
                .body(body),
        )
        .await;
        assert_eq!(a.status, 413, "{framing}: {}", a.text);
        assert!(a.text.contains("larger than 100000 bytes"), "{framing}: {}", a.text);
        assert!(glance_named(w, &name).await.is_empty(), "{framing}");
    }
}

#[tokio::test]
async fn renamed_output_fields_change_the_answer_not_the_calls() {
    let _glance = GLANCE.lock().await;
    let w = world();
    // A copy of the shipped file with `id`, `status` and `properties` renamed in every view.
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings");
    let mut text = std::fs::read_to_string(shipped.join("glance_v1.toml")).unwrap();
    for (field, renamed) in [("id", "image_id"), ("status", "state"), ("properties", "extra")] {
        let from = format!("\n{field} = {{");
        assert!(text.contains(&from), "no field `{field}`");
        text = text.replace(&from, &format!("\n{renamed} = {{"));
    }
    let dir = tempfile::tempdir().unwrap();
    for file in ["nova.toml", "alliance.toml"] {
        std::fs::copy(shipped.join(file), dir.path().join(file)).unwrap();
    }
    std::fs::write(dir.path().join("glance_v1.toml"), text).unwrap();
    let mappings_dir = dir.path().to_owned();
    let gw = w.h.gateway(|c| c.mappings_dir = Some(mappings_dir));
    let get = |path: String| send(client().get(format!("{}{MOUNT}{path}", gw.base)).headers(w.h.member()));
    // Paging still follows Glance's ids, whatever the answer calls them.
    let query = format!("property-run={}&sort_key=name&sort_dir=asc&limit=2", w.run);
    let first = get(format!("/v1/images/detail?{query}")).await.json();
    let images = first["images"].as_array().unwrap();
    assert_eq!(images.len(), 2);
    assert!(images[0].get("id").is_none() && images[0]["image_id"] == w.id("active"), "{first}");
    assert_eq!(images[0]["state"], "active");
    let marker = images[1]["image_id"].as_str().unwrap();
    let next = get(format!("/v1/images/detail?{query}&marker={marker}")).await.json();
    let names: Vec<&str> =
        next["images"].as_array().unwrap().iter().map(|i| &i["name"].as_str().unwrap()[..1]).collect();
    assert_eq!(names, ["p", "q"]);
    // Headers follow the view's names; an object-valued field is still the properties.
    let head =
        send(client().head(format!("{}{MOUNT}/v1/images/{}", gw.base, w.id("queued"))).headers(w.h.member())).await;
    assert_eq!(header(&head, "x-image-meta-image_id"), Some(w.id("queued")));
    assert_eq!(header(&head, "x-image-meta-state").as_deref(), Some("queued"));
    assert_eq!(header(&head, "x-image-meta-property-os_distro").as_deref(), Some("cirros"));
    assert_eq!(header(&head, "x-image-meta-id"), None);
    // Downloads and writes take the image from Glance, not from the answer.
    let bytes = client().get(format!("{}{MOUNT}/v1/images/{}", gw.base, w.id("active"))).headers(w.h.member());
    assert!(bytes.send().await.unwrap().bytes().await.unwrap() == w.data);
}

/// Over HTTP/2 a body has neither `Content-Length` nor chunked framing: its frames say there
/// is one. Such a request, handed to the gateway's router as the server hands it, is still an
/// upload.
#[tokio::test]
async fn a_body_without_length_or_chunking_is_an_upload() {
    use tower::ServiceExt as _;
    // The in-memory store, every caller in its one project: no identity to pass in-process.
    let config = image_gateway::config::Config::default();
    let metrics = std::sync::Arc::new(image_gateway::layers::metrics::Metrics::new());
    let app = std::sync::Arc::new(image_gateway::app::App::load(config, metrics, None).unwrap());
    let router = image_gateway::server::router(app, std::sync::Arc::new(image_gateway::server::Lifecycle::default()));
    let frames = futures_util::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(vec![3u8; 70_000]))]);
    let request = http::Request::post("/image-v1/v1/images")
        .header("x-image-meta-name", "h2")
        .header("x-image-meta-disk_format", "raw")
        .header("x-image-meta-container_format", "bare")
        .body(axum::body::Body::from_stream(frames))
        .unwrap();
    let response = router.oneshot(request).await.unwrap();
    assert_eq!(response.status(), 201);
    let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    let image: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((image["image"]["status"].as_str(), image["image"]["size"].as_u64()), (Some("active"), Some(70_000)));
}
