//! Benchmarks of the mapping engine on a realistic Glance v2 list page.
//!
//! Every benchmark reads the same bytes: a 1000-image `GET /v2/images` answer shaped as Glance 33
//! serves it (custom properties first, then the base keys in the serializer's order). Compare:
//!
//! - `list_1000/baseline_parse_serialize`: `serde_json` parse + serialize of the page, the floor
//!   any JSON-rewriting gateway pays;
//! - `list_1000/nova_detail`: the gateway's work for `GET /v2.1/images/detail` (parse, render every
//!   image with `image_detail`, wrap in `{"images": [...]}`, serialize); the project target is at
//!   most 1.0× the baseline;
//! - `list_1000/nova_basic`: the same for `GET /v2.1/images` (`image_basic`);
//! - `list_1000/alliance_image`: the same for the Alliance `GET /images` (`image`);
//! - `compile/nova_toml`: compiling `mappings/nova.toml` (done once at start).
//!
//! Before the criterion runs it prints, for each view, the median ratio to the baseline over
//! rounds that alternate the two (the figure to compare with the 1.0× target).
//!
//! Run: `cargo bench --bench mapping -- --warm-up-time 1 --measurement-time 5`.

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use image_gateway::alliance::AllianceMapping;
use image_gateway::mapping::{for_each_object, LinkBases, Node, View, ViewContext};
use image_gateway::nova::NovaMapping;
use serde_json::{json, Map, Value};

const NOVA: &str = include_str!("../mappings/nova.toml");
const ALLIANCE: &str = include_str!("../mappings/alliance.toml");
const IMAGES: usize = 1000;

/// A tiny deterministic generator (SplitMix64), so every run benchmarks the same page.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }

    fn hex(&mut self, len: usize) -> String {
        (0..len).map(|_| char::from_digit(self.below(16) as u32, 16).unwrap_or('0')).collect()
    }

    fn uuid(&mut self) -> String {
        let h = self.hex(32);
        format!("{}-{}-4{}-a{}-{}", &h[..8], &h[8..12], &h[13..16], &h[17..20], &h[20..])
    }

    fn time(&mut self) -> String {
        let (month, day) = (1 + self.below(12), 1 + self.below(28));
        let (h, m, s) = (self.below(24), self.below(60), self.below(60));
        format!("2025-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
    }
}

/// One image as Glance 33 lists it: custom properties first, then the base keys.
fn image(rng: &mut Rng, owner: &str) -> Value {
    let id = rng.uuid();
    let mut out = Map::new();

    // 3 to 6 custom properties; a third of the images are Nova snapshots (instance_uuid,
    // image_type, ...) and some carry auto_disk_config.
    let snapshot = rng.below(3) == 0;
    let mut custom: Vec<(&str, Value)> = vec![
        ("os_distro", json!(rng.pick(&["ubuntu", "debian", "centos", "rhel", "windows"]))),
        ("os_version", json!(rng.pick(&["22.04", "24.04", "12", "9", "2022"]))),
        ("hw_disk_bus", json!(rng.pick(&["virtio", "scsi"]))),
    ];
    if snapshot {
        custom.push(("instance_uuid", json!(rng.uuid())));
        custom.push(("image_type", json!("snapshot")));
        custom.push(("base_image_ref", json!(rng.uuid())));
    } else {
        let extras: &[(&str, &[&str])] = &[
            ("architecture", &["x86_64", "aarch64"]),
            ("hw_vif_model", &["virtio", "e1000"]),
            ("hw_qemu_guest_agent", &["yes", "no"]),
        ];
        for (key, values) in extras.iter().take(rng.below(3) as usize) {
            custom.push((key, json!(rng.pick(values))));
        }
    }
    if custom.len() < 6 && rng.below(2) == 0 {
        custom.push(("auto_disk_config", json!(rng.pick(&["True", "False"]))));
    }
    for (k, v) in custom {
        out.insert(k.to_owned(), v);
    }

    let size = 50_000_000 + rng.below(4_000_000_000);
    let (created, updated) = (rng.time(), rng.time());
    let min_ram = [0, 512, 1024, 2048][rng.below(4) as usize];
    let tags: Vec<&str> = (0..rng.below(3)).map(|_| rng.pick(&["golden", "ci", "gpu", "lts"])).collect();
    let base = json!({
        "name": format!("image-{}", rng.hex(8)),
        "disk_format": rng.pick(&["qcow2", "raw", "vmdk"]),
        "container_format": "bare",
        "visibility": rng.pick(&["public", "private", "shared", "community"]),
        "size": size,
        "virtual_size": size * 2,
        "status": rng.pick(&["active", "active", "active", "active", "queued", "saving", "killed"]),
        "checksum": rng.hex(32),
        "protected": rng.below(5) == 0,
        "min_ram": min_ram,
        "min_disk": rng.below(40),
        "owner": owner,
        "os_hidden": false,
        "os_hash_algo": "sha512",
        "os_hash_value": rng.hex(128),
        "id": id,
        "created_at": created,
        "updated_at": updated,
        "tags": tags,
        "self": format!("/v2/images/{id}"),
        "file": format!("/v2/images/{id}/file"),
        "schema": "/v2/schemas/image",
    });
    if let Value::Object(base) = base {
        out.extend(base);
    }
    Value::Object(out)
}

/// The Glance v2 list page, as bytes.
fn glance_page() -> Vec<u8> {
    let mut rng = Rng(0x1DC0_FFEE);
    let owners: Vec<String> = (0..4).map(|_| rng.hex(32)).collect();
    let images: Vec<Value> = (0..IMAGES).map(|i| image(&mut rng, &owners[i % owners.len()])).collect();
    let last = images.last().and_then(|i| i["id"].as_str()).unwrap_or_default().to_owned();
    let page = json!({
        "images": images,
        "first": "/v2/images?limit=1000",
        "next": format!("/v2/images?marker={last}&limit=1000"),
        "schema": "/v2/schemas/images",
    });
    serde_json::to_vec(&page).expect("serializable")
}

/// What the gateway does with one Glance page (`crate::list`): walk its `images` raw, render
/// each onto the answer as it is read, wrap.
fn translate(page: &[u8], view: &View, ctx: &ViewContext<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(4096);
    out.extend_from_slice(br#"{"images":["#);
    let mut written = 0;
    for_each_object(page, "images", |image| view.append_to(Node::Object(image), ctx, &mut out, &mut written))
        .expect("render");
    out.extend_from_slice(b"]}");
    out
}

/// The median over `rounds` of `b`'s time ÷ `a`'s, each round timing one of each, after a
/// tenth as many rounds of warm-up.
fn alternated_ratio<A, B>(rounds: usize, mut a: impl FnMut() -> A, mut b: impl FnMut() -> B) -> f64 {
    let time = |f: &mut dyn FnMut()| {
        let started = Instant::now();
        f();
        started.elapsed().as_secs_f64()
    };
    for _ in 0..rounds / 10 {
        black_box((a(), b()));
    }
    let mut ratios: Vec<f64> = (0..rounds)
        .map(|_| {
            let ta = time(&mut || drop(black_box(a())));
            time(&mut || drop(black_box(b()))) / ta
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    ratios[rounds / 2]
}

fn benches(c: &mut Criterion) {
    let page = glance_page();
    let nova = NovaMapping::compile("nova.toml", NOVA).expect("nova.toml");
    let alliance = AllianceMapping::compile("alliance.toml", ALLIANCE).expect("alliance");
    let base = image_gateway::glance::embedded::base_properties();
    let project = "9f1e3b2c4d5a6b7c8d9e0f1a2b3c4d5e";
    let nova_links = LinkBases {
        versioned: format!("http://gateway.example:8774/v2.1/{project}"),
        unversioned: format!("http://gateway.example:8774/{project}"),
        image_service: "http://glance.example:9292".into(),
    };
    let no_links = LinkBases::default();
    let nova_ctx = ViewContext { links: &nova_links, base_properties: &base };
    let alliance_ctx = ViewContext { links: &no_links, base_properties: &base };
    let no_view = |name: &str| panic!("no view {name}");
    let detail = nova.view("image_detail").unwrap_or_else(|| no_view("image_detail")).clone();
    let basic = nova.view("image_basic").unwrap_or_else(|| no_view("image_basic")).clone();
    let alliance_image = alliance.view("image").unwrap_or_else(|| no_view("image")).clone();

    let sizes = [
        ("glance page", page.len()),
        ("nova detail", translate(&page, &detail, &nova_ctx).len()),
        ("nova basic", translate(&page, &basic, &nova_ctx).len()),
        ("alliance", translate(&page, &alliance_image, &alliance_ctx).len()),
    ];
    for (what, len) in sizes {
        eprintln!("{what}: {len} bytes");
    }

    // Criterion times one benchmark after another, so a machine whose speed drifts (a shared
    // VM) skews their ratio; rounds that alternate the two give a ratio drift cannot bend.
    let baseline = || {
        let doc: Value = serde_json::from_slice(black_box(&page)).expect("valid JSON");
        serde_json::to_vec(&doc).expect("serializable")
    };
    for (name, view, ctx) in [
        ("nova_detail", &detail, &nova_ctx),
        ("nova_basic", &basic, &nova_ctx),
        ("alliance_image", &alliance_image, &alliance_ctx),
    ] {
        let ratio = alternated_ratio(101, baseline, || translate(black_box(&page), view, ctx));
        eprintln!("{name} ÷ baseline_parse_serialize: {ratio:.2}× (median of 101 alternated rounds)");
    }

    let mut group = c.benchmark_group("list_1000");
    group.throughput(Throughput::Bytes(page.len() as u64));
    group.bench_function("baseline_parse_serialize", |b| b.iter(baseline));
    group.bench_function("nova_detail", |b| b.iter(|| translate(black_box(&page), &detail, &nova_ctx)));
    group.bench_function("nova_basic", |b| b.iter(|| translate(black_box(&page), &basic, &nova_ctx)));
    group.bench_function("alliance_image", |b| b.iter(|| translate(black_box(&page), &alliance_image, &alliance_ctx)));
    // Render only (input already parsed), to tell the view's share from the parser's.
    let parsed: Value = serde_json::from_slice(&page).expect("valid JSON");
    let images = parsed["images"].as_array().cloned().unwrap_or_default();
    group.bench_function("nova_detail_render_only", |b| {
        b.iter(|| {
            black_box(&images)
                .iter()
                .map(|i| detail.render_ref(Node::Tree(i), &nova_ctx))
                .collect::<Result<Vec<_>, _>>()
        })
    });
    group.finish();

    c.bench_function("compile/nova_toml", |b| b.iter(|| NovaMapping::compile("nova.toml", black_box(NOVA))));
}

criterion_group!(mapping, benches);
criterion_main!(mapping);
