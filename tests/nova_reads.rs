//! Nova's image read calls through the gateway, field by field, against a Glance.
//!
//! Expected answers are computed here from what the fixtures hold in Glance and from Nova's
//! documented rules (`shared/reference/nova-image-proxy.md` §2-§3), independently of the
//! mapping file the gateway uses.

mod common;

use std::collections::BTreeSet;
use std::sync::OnceLock;

use common::{client, send, Answer, Gateway, GlanceFixtures, Harness};
use serde_json::{json, Map, Value};

const SERVER1: &str = "6a0c3b1e-4e8f-4a53-9c55-d1b7f0f1a001";
const SERVER2: &str = "6a0c3b1e-4e8f-4a53-9c55-d1b7f0f1a002";
const BULK: usize = 20;

struct World {
    h: &'static Harness,
    gw: Gateway,
    /// Fixtures as Glance holds them, by a short name.
    images: Vec<(&'static str, Value)>,
}

impl World {
    fn image(&self, name: &str) -> &Value {
        &self.images.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("no fixture {name}")).1
    }

    fn id(&self, name: &str) -> String {
        self.image(name)["id"].as_str().unwrap().to_owned()
    }

    fn ids_where(&self, keep: impl Fn(&Value) -> bool) -> BTreeSet<String> {
        self.images.iter().filter(|(_, i)| keep(i)).map(|(_, i)| i["id"].as_str().unwrap().to_owned()).collect()
    }

    async fn get(&self, path: &str) -> Answer {
        send(client().get(format!("{}{path}", self.gw.base)).headers(self.h.member())).await
    }

    async fn get_with(&self, path: &str, name: &str, value: &str) -> Answer {
        send(client().get(format!("{}{path}", self.gw.base)).headers(self.h.member()).header(name, value)).await
    }

    /// Nova's detailed view of a fixture, from the reference's rules.
    fn expected_detail(&self, image: &Value, prefix: &str) -> Value {
        let id = image["id"].as_str().unwrap();
        let host = self.gw.base.clone();
        let (status, progress) = match image["status"].as_str().unwrap() {
            "active" => ("ACTIVE", 100),
            "queued" => ("SAVING", 25),
            "saving" => ("SAVING", 50),
            "killed" => ("ERROR", 0),
            "deleted" | "pending_delete" => ("DELETED", 0),
            _ => ("UNKNOWN", 0),
        };
        let mut metadata = Map::new();
        for (k, v) in image.as_object().unwrap() {
            if !common::GLANCE_BASE_PROPERTIES.contains(&k.as_str()) {
                let v = match (k.as_str(), v.as_str()) {
                    ("block_device_mapping" | "mappings", Some(s)) => serde_json::from_str(s).unwrap_or(v.clone()),
                    _ => v.clone(),
                };
                metadata.insert(k.clone(), v);
            }
        }
        let mut out = json!({
            "id": id,
            "name": image["name"],
            "minRam": image["min_ram"].as_u64().unwrap_or(0),
            "minDisk": image["min_disk"].as_u64().unwrap_or(0),
            "metadata": metadata,
            "created": image["created_at"],
            "updated": image["updated_at"],
            "status": status,
            "progress": progress,
            "OS-EXT-IMG-SIZE:size": image["size"].as_u64().unwrap_or(0),
            "links": [
                {"rel": "self", "href": format!("{host}/v2.1{prefix}/images/{id}")},
                {"rel": "bookmark", "href": format!("{host}{prefix}/images/{id}")},
                {"rel": "alternate", "type": "application/vnd.openstack.image", "href": format!("{}/images/{id}", self.h.glance_url)},
            ],
        });
        if let Some(server) = image["instance_uuid"].as_str() {
            out["server"] = json!({"id": server, "links": [
                {"rel": "self", "href": format!("{host}/v2.1{prefix}/servers/{server}")},
                {"rel": "bookmark", "href": format!("{host}{prefix}/servers/{server}")},
            ]});
        }
        if let Some(auto) = image["auto_disk_config"].as_str() {
            let truthy = ["1", "t", "true", "on", "y", "yes"].contains(&auto.to_lowercase().as_str());
            out["OS-DCF:diskConfig"] = json!(if truthy { "AUTO" } else { "MANUAL" });
        }
        out
    }
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let h = Harness::get();
        let gw = h.gateway(|_| {});
        let images = h.block_on(fixtures(h));
        World { h, gw, images }
    })
}

async fn fixtures(h: &'static Harness) -> Vec<(&'static str, Value)> {
    let g = GlanceFixtures { h, http: client() };
    let mut out = vec![
        ("alpha", g.active(json!({"name": "alpha", "os_distro": "ubuntu", "min_ram": 512, "min_disk": 10}), 1024).await),
        ("beta", g.active(json!({"name": "beta", "architecture": "x86_64"}), 2048).await),
        ("queued", g.create(json!({"name": "waiting", "min_ram": 512})).await),
        ("protected", g.active(json!({"name": "keep me", "protected": true}), 16).await),
        ("snap-a", g.active(json!({"name": "snap-a", "instance_uuid": SERVER1, "image_type": "snapshot"}), 16).await),
        ("snap-b", g.create(json!({"name": "snap-b", "instance_uuid": SERVER1, "image_type": "snapshot"})).await),
        ("snap-c", g.active(json!({"name": "snap-c", "instance_uuid": SERVER2, "image_type": "snapshot"}), 16).await),
        ("auto-true", g.active(json!({"name": "auto-true", "auto_disk_config": "True"}), 16).await),
        ("auto-false", g.active(json!({"name": "auto-false", "auto_disk_config": "False"}), 16).await),
        ("unicode", g.active(json!({"name": "Ünïcödé 画像"}), 16).await),
        ("bdm", g.create(json!({"name": "volume-backed", "block_device_mapping": "[{\"source_type\": \"volume\", \"boot_index\": 0}]", "mappings": "[]"})).await),
        ("nameless", g.create(json!({})).await),
        // The image of Rackspace's sample listing (seed 001), metadata and all.
        (
            "rackspace",
            g.active(
                json!({"name": "Ubuntu 13.10 (Saucy Salamander) (PVHVM)", "min_ram": 512, "min_disk": 20, "vm_mode": "hvm",
                    "os_distro": "ubuntu", "image_type": "base", "auto_disk_config": "disabled", "os_type": "linux",
                    "com.rackspace__1__visible_core": "1", "org.openstack__1__os_distro": "com.ubuntu", "cache_in_nova": "True"}),
                32,
            )
            .await,
        ),
    ];
    let deact = g.active(json!({"name": "retired"}), 16).await;
    let id = deact["id"].as_str().unwrap().to_owned();
    g.deactivate(&id).await;
    out.push(("deactivated", g.get(&id).await));
    const BULK_NAMES: [&str; BULK] = [
        "bulk-00", "bulk-01", "bulk-02", "bulk-03", "bulk-04", "bulk-05", "bulk-06", "bulk-07", "bulk-08", "bulk-09",
        "bulk-10", "bulk-11", "bulk-12", "bulk-13", "bulk-14", "bulk-15", "bulk-16", "bulk-17", "bulk-18", "bulk-19",
    ];
    for (i, name) in BULK_NAMES.into_iter().enumerate() {
        let image =
            if i % 2 == 0 { g.active(json!({"name": name}), 8).await } else { g.create(json!({"name": name})).await };
        out.push((name, image));
    }
    out
}

fn ids_of(list: &Value) -> Vec<String> {
    list["images"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn show_matches_glance_field_by_field() {
    let w = world();
    assert!(w.images.len() >= 30);
    for (name, image) in &w.images {
        let id = image["id"].as_str().unwrap();
        let a = w.get(&format!("/v2.1/images/{id}")).await;
        assert_eq!(a.status, 200, "{name}: {}", a.text);
        assert_eq!(a.json(), json!({"image": w.expected_detail(image, "")}), "{name}");
        assert_eq!(a.header("content-type"), Some("application/json"));
    }
}

#[tokio::test]
async fn the_views_cover_every_kind_of_image() {
    // Guards the fixtures themselves: each rule of the view is exercised by some image.
    let w = world();
    let show = |name: &str| w.expected_detail(w.image(name), "");
    assert_eq!(show("alpha")["status"], "ACTIVE");
    assert_eq!(show("alpha")["OS-EXT-IMG-SIZE:size"], 1024);
    assert_eq!(show("alpha")["metadata"], json!({"os_distro": "ubuntu"}));
    assert_eq!((show("queued")["status"].clone(), show("queued")["progress"].clone()), (json!("SAVING"), json!(25)));
    assert_eq!(show("queued")["OS-EXT-IMG-SIZE:size"], 0);
    assert_eq!(show("deactivated")["status"], "UNKNOWN");
    assert_eq!(show("snap-a")["server"]["id"], SERVER1);
    assert_eq!(show("auto-true")["OS-DCF:diskConfig"], "AUTO");
    assert_eq!(show("auto-false")["OS-DCF:diskConfig"], "MANUAL");
    assert_eq!(show("bdm")["metadata"]["block_device_mapping"][0]["boot_index"], 0);
    assert_eq!(show("nameless")["name"], Value::Null);
    assert_eq!(show("rackspace")["OS-DCF:diskConfig"], "MANUAL");
    assert_eq!(show("rackspace")["metadata"]["com.rackspace__1__visible_core"], "1");
    assert!(show("beta").get("server").is_none() && show("beta").get("OS-DCF:diskConfig").is_none());
}

#[tokio::test]
async fn detail_lists_every_image_as_show_does_in_glance_order() {
    let w = world();
    let a = w.get("/v2.1/images/detail").await;
    assert_eq!(a.status, 200, "{}", a.text);
    let body = a.json();
    assert!(body.get("images_links").is_none(), "no next link below max_limit: {body}");
    let listed: Vec<&Value> = body["images"].as_array().unwrap().iter().collect();
    for (name, image) in &w.images {
        let entry = listed.iter().find(|i| i["id"] == image["id"]).unwrap_or_else(|| panic!("{name} not listed"));
        assert_eq!(**entry, w.expected_detail(image, ""), "{name}");
    }
    // Same order as Glance's own list for the same caller.
    let glance =
        send(client().get(format!("{}/v2/images?limit=1000", w.h.glance_url)).headers(w.h.member())).await.json();
    assert_eq!(ids_of(&body), ids_of(&glance));
}

#[tokio::test]
async fn basic_list_has_id_name_and_links_only() {
    let w = world();
    let body = w.get("/v2.1/images").await.json();
    let listed = body["images"].as_array().unwrap();
    assert_eq!(listed.len(), w.images.len());
    for (name, image) in &w.images {
        let entry = listed.iter().find(|i| i["id"] == image["id"]).unwrap_or_else(|| panic!("{name} not listed"));
        let full = w.expected_detail(image, "");
        assert_eq!(*entry, json!({"id": full["id"], "name": full["name"], "links": full["links"]}), "{name}");
    }
}

#[tokio::test]
async fn project_id_routes_put_the_project_in_links() {
    let w = world();
    let prefix = format!("/{}", w.h.project);
    let alpha = w.image("alpha");
    let a = w.get(&format!("/v2.1{prefix}/images/{}", w.id("alpha"))).await;
    assert_eq!(a.json(), json!({"image": w.expected_detail(alpha, &prefix)}));
    let list = w.get(&format!("/v2.1{prefix}/images?name=alpha")).await.json();
    assert_eq!(list["images"][0]["links"], w.expected_detail(alpha, &prefix)["links"]);
    // Not hex: no such route, as in Nova.
    assert_eq!(w.get("/v2.1/not_a_project/images").await.status, 404);
    // Another project than the caller's: Nova's 400.
    let a = w.get("/v2.1/00000000000000000000000000000abc/images").await;
    assert_eq!(a.status, 400);
    assert_eq!(
        a.json()["badRequest"]["message"],
        format!("Malformed request URL: URL's project_id '00000000000000000000000000000abc' doesn't match Context's project_id '{}'", w.h.project)
    );
}

#[tokio::test]
async fn filters_translate_as_nova_does() {
    let w = world();
    let status_is = |s: &'static str| move |i: &Value| i["status"] == s;
    let prop_is = |k: &'static str, v: &'static str| move |i: &Value| i[k] == v;
    let newest = w.images.iter().map(|(_, i)| i["updated_at"].as_str().unwrap().to_owned()).max().unwrap();
    let cases: Vec<(String, BTreeSet<String>)> = vec![
        ("status=ACTIVE".into(), w.ids_where(status_is("active"))),
        // Lowercased only: SAVING matches `saving`, never `queued`.
        ("status=SAVING".into(), w.ids_where(status_is("saving"))),
        ("name=alpha".into(), w.ids_where(prop_is("name", "alpha"))),
        ("name=in:alpha,beta".into(), w.ids_where(|i| i["name"] == "alpha" || i["name"] == "beta")),
        (
            format!("name={}", "%C3%9Cn%C3%AFc%C3%B6d%C3%A9%20%E7%94%BB%E5%83%8F"),
            w.ids_where(prop_is("name", "Ünïcödé 画像")),
        ),
        (format!("server={SERVER1}"), w.ids_where(prop_is("instance_uuid", SERVER1))),
        (format!("server=http://nova.example/v2.1/servers/{SERVER2}"), w.ids_where(prop_is("instance_uuid", SERVER2))),
        ("type=snapshot".into(), w.ids_where(prop_is("image_type", "snapshot"))),
        ("type=SNAPSHOT".into(), w.ids_where(prop_is("image_type", "snapshot"))),
        ("type=base".into(), w.ids_where(prop_is("image_type", "base"))),
        ("minRam=512".into(), w.ids_where(|i| i["min_ram"] == 512)),
        ("minDisk=10".into(), w.ids_where(|i| i["min_disk"] == 10)),
        ("property-os_distro=ubuntu".into(), w.ids_where(prop_is("os_distro", "ubuntu"))),
        ("changes-since=2000-01-01T00:00:00Z".into(), w.ids_where(|_| true)),
        ("changes-since=2999-01-01T00:00:00Z".into(), BTreeSet::new()),
        // An image's own `updated` time finds it (`>=`, as tempest's changes-since test needs).
        (format!("changes-since={newest}"), w.ids_where(|i| i["updated_at"].as_str().unwrap() >= newest.as_str())),
        // Unknown parameters are dropped, not forwarded: this lists everything.
        ("sort_key=name&visibility=public".into(), w.ids_where(|_| true)),
    ];
    for (query, want) in cases {
        assert!(!want.is_empty() || query.contains("2999") || query.contains("SAVING"), "case {query} selects nothing");
        for path in ["/v2.1/images", "/v2.1/images/detail"] {
            let a = w.get(&format!("{path}?{query}")).await;
            assert_eq!(a.status, 200, "{path}?{query}: {}", a.text);
            let got: BTreeSet<String> = ids_of(&a.json()).into_iter().collect();
            assert_eq!(got, want, "{path}?{query}");
        }
    }
}

#[tokio::test]
async fn bad_filters_are_nova_400s() {
    let w = world();
    for query in ["changes-since=garbage", "name=foo:bar", &format!("marker={}", uuid::Uuid::new_v4())] {
        let a = w.get(&format!("/v2.1/images/detail?{query}")).await;
        assert_eq!(a.status, 400, "{query}: {}", a.text);
        let fault = &a.json()["badRequest"];
        assert_eq!(fault["code"], 400, "{query}");
        assert!(fault["message"].as_str().unwrap().starts_with("HTTP "), "{query}: {fault}");
    }
    for (value, reason) in
        [("0", "0 is less than the minimum of 1"), ("-1", "does not match"), ("abc", "does not match")]
    {
        for key in ["limit", "page_size", "offset"] {
            let a = w.get(&format!("/v2.1/images?{key}={value}")).await;
            assert_eq!(a.status, 400, "{key}={value}");
            let message = a.json()["badRequest"]["message"].as_str().unwrap().to_owned();
            assert!(
                message.starts_with(&format!("Invalid input for query parameters {key}. Value: {value}."))
                    && message.contains(reason),
                "{message}"
            );
        }
    }
}

#[tokio::test]
async fn pagination_follows_next_links_to_the_end() {
    let w = world();
    let all = ids_of(&w.get("/v2.1/images/detail").await.json());
    let mut seen = Vec::new();
    let mut url = format!("{}/v2.1/images/detail?limit=7", w.gw.base);
    let mut pages = 0;
    loop {
        pages += 1;
        assert!(pages <= all.len(), "pagination does not end");
        let a = send(client().get(&url).headers(w.h.member())).await;
        assert_eq!(a.status, 200, "{url}: {}", a.text);
        let body = a.json();
        let page = ids_of(&body);
        assert!(page.len() <= 7);
        seen.extend(page.iter().cloned());
        match body.get("images_links") {
            Some(links) => {
                // A next link exactly when the page is full, pointing after its last image.
                assert_eq!(page.len(), 7, "{body}");
                assert_eq!(links.as_array().unwrap().len(), 1);
                assert_eq!(links[0]["rel"], "next");
                let href = links[0]["href"].as_str().unwrap();
                assert_eq!(href, format!("{}/v2.1/images/detail?limit=7&marker={}", w.gw.base, page.last().unwrap()));
                url = href.to_owned();
            }
            None => {
                assert!(page.len() < 7 || all.len() % 7 == 0);
                break;
            }
        }
    }
    assert_eq!(seen, all, "paging gives the same images in the same order");
    // limit larger than what exists: everything, and no next link.
    let body = w.get("/v2.1/images?limit=1000").await.json();
    assert_eq!(ids_of(&body).len(), all.len());
    assert!(body.get("images_links").is_none());
}

#[tokio::test]
async fn next_links_keep_known_parameters_sorted() {
    let w = world();
    let a = w.get("/v2.1/images?type=snapshot&limit=2&foo=bar&status=active&status=ACTIVE").await.json();
    let ids = ids_of(&a);
    assert_eq!(ids.len(), 2);
    let href = a["images_links"][0]["href"].as_str().unwrap();
    // Sorted by key then value, one value per key (the last after sorting), unknown `foo` gone.
    assert_eq!(href, format!("{}/v2.1/images?limit=2&status=active&type=snapshot&marker={}", w.gw.base, ids[1]));
}

#[tokio::test]
async fn missing_images_and_unknown_routes() {
    let w = world();
    let a = w.get(&format!("/v2.1/images/{}", uuid::Uuid::new_v4())).await;
    assert_eq!(a.status, 404);
    assert_eq!(a.json(), json!({"itemNotFound": {"code": 404, "message": "Image not found."}}));
    assert_eq!(a.header("openstack-api-version"), Some("compute 2.1"));
    for (method, path) in [
        ("POST", "/v2.1/images"),
        ("PUT", "/v2.1/images/x"),
        ("GET", "/v2.1/images/x/nothing"),
        ("DELETE", "/v2.1/images/"),
    ] {
        let request =
            || client().request(method.parse().unwrap(), format!("{}{path}", w.gw.base)).headers(w.h.member());
        let a = send(request()).await;
        assert_eq!(a.status, 404, "{method} {path}");
        assert_eq!(a.header("content-type"), Some("text/html; charset=UTF-8"), "{method} {path}");
        assert!(a.text.contains("The resource could not be found."));
        assert!(a.header("openstack-api-version").is_none());
        assert!(a.header("x-compute-request-id").is_some());
        let a = send(request().header("accept", "application/json")).await;
        assert_eq!(a.json()["code"], "404 Not Found", "{method} {path}");
    }
    // Path tricks name no image. Sent raw: an HTTP client would normalise dot segments away.
    for path in
        ["/v2.1/images/..", "/v2.1/images/%2e%2e", "/v2.1/images/a%00b", "/v2.1/images/%2Fetc", "/v2.1/images/%FF"]
    {
        let status = common::raw_get(&w.gw.base, path, &w.h.member());
        assert_eq!(status, 404, "{path}");
    }
}

#[tokio::test]
async fn microversions_are_read_echoed_and_served_beyond_2_35() {
    let w = world();
    let path = format!("/v2.1/images/{}", w.id("alpha"));
    for (header, value, echoed) in [
        ("openstack-api-version", "compute 2.35", "2.35"),
        ("openstack-api-version", "compute 2.36", "2.36"),
        ("openstack-api-version", "compute 2.90", "2.90"),
        ("x-openstack-nova-api-version", "2.38", "2.38"),
    ] {
        let a = w.get_with(&path, header, value).await;
        assert_eq!(a.status, 200, "{value}: {}", a.text);
        assert_eq!(a.header("openstack-api-version"), Some(format!("compute {echoed}").as_str()));
        assert_eq!(a.header("x-openstack-nova-api-version"), Some(echoed));
        let vary: Vec<_> = a.headers.get_all("vary").iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(vary, ["OpenStack-API-Version", "X-OpenStack-Nova-API-Version"]);
    }
    let latest = w.get_with(&path, "openstack-api-version", "compute latest").await;
    assert_eq!(
        latest.header("x-openstack-nova-api-version"),
        Some(image_gateway::config::Config::default().nova.max_microversion.as_str())
    );

    let a = w.get_with(&path, "openstack-api-version", "compute abc").await;
    assert_eq!(a.status, 400);
    assert!(a.header("openstack-api-version").is_none(), "a malformed version is not echoed");
    assert_eq!(
        a.json()["badRequest"]["message"],
        "API Version String abc is of invalid format. Must be of format MajorNum.MinorNum."
    );
    let a = w.get_with(&path, "openstack-api-version", "compute 3.0").await;
    assert_eq!(a.status, 406);
    assert_eq!(a.header("openstack-api-version"), Some("compute 3.0"), "an unsupported one is");
    assert_eq!(a.json()["computeFault"]["code"], 406);

    // The legacy root runs as 2.1 and says nothing about versions.
    let a = w.get_with(&path.replace("/v2.1/", "/v2/"), "openstack-api-version", "compute 3.0").await;
    assert_eq!(a.status, 200);
    assert!(a.header("openstack-api-version").is_none() && a.header("vary").is_none());
    let body = a.json();
    assert_eq!(body["image"]["links"][0]["href"], format!("{}/v2/images/{}", w.gw.base, w.id("alpha")));
    assert_eq!(body["image"]["links"][1]["href"], format!("{}/images/{}", w.gw.base, w.id("alpha")));
}

#[tokio::test]
async fn enforce_removal_answers_like_nova_after_2_35() {
    let w = world();
    let strict = w.h.gateway(|c| c.nova.enforce_removal = true);
    let path = format!("{}/v2.1/images/{}", strict.base, w.id("alpha"));
    let at = |v: &'static str| {
        send(client().get(&path).headers(w.h.member()).header("openstack-api-version", format!("compute {v}")))
    };
    assert_eq!(at("2.35").await.status, 200);
    let a = at("2.36").await;
    assert_eq!(a.status, 404);
    assert_eq!(a.json(), json!({"itemNotFound": {"code": 404, "message": "The resource could not be found."}}));
    assert_eq!(a.header("openstack-api-version"), Some("compute 2.36"));
}

#[tokio::test]
async fn request_ids_are_kept_or_made_and_echoed() {
    let w = world();
    let mine = "req-1b2c3d4e-0000-4000-8000-000000000001";
    let a = w.get_with("/v2.1/images?limit=1", "x-openstack-request-id", mine).await;
    assert_eq!(a.header("x-openstack-request-id"), Some(mine));
    assert_eq!(a.header("x-compute-request-id"), Some(mine));
    let a = w.get_with("/v2.1/images?limit=1", "x-openstack-request-id", "forged id").await;
    let made = a.header("x-openstack-request-id").unwrap();
    assert!(made.starts_with("req-") && made != "forged id" && made.len() == 40, "{made}");
}

#[tokio::test]
async fn operations_endpoints() {
    let w = world();
    let get = |p: &'static str| send(client().get(format!("{}{p}", w.gw.base)));
    assert_eq!(get("/healthz").await.status, 200);
    assert_eq!(get("/readyz").await.status, 200);
    w.get(&format!("/v2.1/images/{}", w.id("beta"))).await;
    let m = get("/metrics").await;
    assert!(m.header("content-type").unwrap().starts_with("text/plain; version=0.0.4"));
    for needle in [
        r#"image_gateway_requests_total{dialect="nova",route="nova.images.show",status="200"}"#,
        r#"image_gateway_upstream_duration_seconds_bucket{dialect="nova",route="nova.images.show""#,
        r#"image_gateway_own_duration_seconds_count{dialect="nova",route="nova.images.show"}"#,
        "image_gateway_requests_in_flight",
    ] {
        assert!(m.text.contains(needle), "{needle} missing");
    }
    // Labels are route ids, never image ids.
    assert!(!m.text.contains(&w.id("beta")));
}

/// Readiness is the replica's own: a Glance outage is answered with Nova's 503s and shown in
/// the upstream metrics, never by failing `/readyz` (which would empty the Service).
#[tokio::test]
async fn a_gateway_whose_glance_is_down_stays_ready_and_says_so_in_nova_terms_and_metrics() {
    let h = Harness::get();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let gw = h.gateway(|c| {
        c.glance.url = Some(dead.parse().unwrap());
        c.glance.circuit_breaker_failures = 2;
    });
    let metric = |name: &str| {
        let text = gw.metrics.render();
        let line = text.lines().find(|l| l.starts_with(&format!("{name}{{upstream=\"glance\"}} ")));
        line.and_then(|l| l.rsplit(' ').next()).map(str::to_owned).unwrap_or_else(|| panic!("no {name}:\n{text}"))
    };
    assert_eq!(metric("image_gateway_upstream_up"), "1", "up until a call fails");
    for _ in 0..2 {
        let a = send(client().get(format!("{}/v2.1/images/detail", gw.base)).headers(h.member())).await;
        assert_eq!(a.status, 503, "{}", a.text);
        assert_eq!(a.json()["serviceUnavailable"]["code"], 503);
        assert_eq!(a.header("retry-after"), None, "Glance was tried: no promise of when it is back");
    }
    let a = send(client().get(format!("{}/v2.1/images/detail", gw.base)).headers(h.member())).await;
    assert_eq!((a.status, a.json()["serviceUnavailable"]["code"].as_u64()), (503, Some(503)));
    assert!(a.header("retry-after").is_some_and(|s| s.parse::<u64>().is_ok()), "the open circuit says when");
    assert_eq!(metric("image_gateway_upstream_up"), "0");
    assert_eq!(metric("image_gateway_circuit_breaker_state"), "1");
    assert_eq!(metric("image_gateway_circuit_breaker_opened_total"), "1");
    assert_eq!(metric("image_gateway_circuit_breaker_refused_total"), "1");
    let a = send(client().get(format!("{}/readyz", gw.base))).await;
    assert_eq!((a.status, a.text.as_str()), (200, "ready\n"));
}

#[tokio::test]
async fn oversized_bodies_are_refused_in_nova_terms() {
    let w = world();
    let small = w.h.gateway(|c| c.limits.body_limit_bytes = 1024);
    let url = format!("{}/v2.1/images/{}", small.base, w.id("alpha"));
    let a = send(client().get(&url).headers(w.h.member()).body(vec![b'x'; 4096])).await;
    assert_eq!(a.status, 413, "{}", a.text);
    assert_eq!(a.json()["overLimit"]["code"], 413);
    let a = send(client().get(&url).headers(w.h.member()).body(vec![b'x'; 1024])).await;
    assert_eq!(a.status, 200, "at the limit is fine: {}", a.text);
}
