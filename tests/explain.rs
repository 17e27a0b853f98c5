//! `image-gateway explain` and `image-gateway test` as an operator runs them, on copies of
//! the shipped configuration, mapping files and golden cases.

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_image-gateway");
const IMAGE: &str = "8a1e3c5d-2f4b-4c6d-8e9f-0a1b2c3d4e5f";

/// A copy of the shipped config, mappings and golden cases in a scratch directory.
fn scratch() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    copy_tree(&root.join("config"), &dir.path().join("config"));
    copy_tree(&root.join("mappings"), &dir.path().join("mappings"));
    dir
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_tree(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// Runs the command in `dir` with its shipped config: (success, stdout, stderr).
fn run(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg("config/gateway.toml")
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// A page of Glance v2 images holding one image, as Glance answers `GET /v2/images`.
fn glance_page(dir: &Path) -> String {
    let page = serde_json::json!({
        "images": [{
            "id": IMAGE, "name": "cirros", "status": "active", "visibility": "public", "protected": false,
            "size": 21430272, "min_ram": 64, "min_disk": 1, "container_format": "bare", "disk_format": "qcow2",
            "created_at": "2024-05-06T07:08:09Z", "updated_at": "2024-05-06T07:09:10Z", "tags": [],
            "checksum": null, "owner": "p", "os_distro": "cirros",
            "file": format!("/v2/images/{IMAGE}/file"), "self": format!("/v2/images/{IMAGE}"),
            "schema": "/v2/schemas/image"
        }],
        "first": "/v2/images", "schema": "/v2/schemas/images"
    });
    let path = dir.join("page.json");
    std::fs::write(&path, page.to_string()).unwrap();
    path.display().to_string()
}

#[test]
fn explain_shows_the_route_and_the_translated_glance_call() {
    let dir = scratch();
    let target = "/v2.1/images/detail?status=ACTIVE&property-os_distro=cirros&changes-since=2024-01-01T00:00:00Z";
    let (ok, out, err) = run(dir.path(), &["explain", "GET", target, "-H", "OpenStack-API-Version: compute 2.40"]);
    assert!(ok, "{err}");
    assert!(out.contains("Route:   nova.images.detail (nova dialect"), "{out}");
    assert!(out.contains("GET /v2.1/images/detail → action list_images"), "{out}");
    assert!(out.contains("view image_detail") && out.contains("query map image_filters"), "{out}");
    // Nova lowercases the status, strips `property-` and reads changes-since as updated_at >=.
    assert!(
        out.contains(
            "GET /v2/images?status=active&os_distro=cirros&updated_at=gte%3A2024-01-01T00%3A00%3A00Z&limit=1000"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "status=ACTIVE → query.image_filters.param.status = { upstream = \"status\", transform = \"lowercase\" }"
        ),
        "{out}"
    );
    // 2.40 is past the proxy API's removal (2.35); the shipped config does not enforce it.
    assert!(out.contains("used:      2.40"), "{out}");
    assert!(out.contains("served: Nova removed the call after 2.35, but nova.enforce_removal is off"), "{out}");
    // No Glance answer was given: it says so and shows no dialect answer.
    assert!(out.contains("answered by NO ANSWER GIVEN"), "{out}");
    assert!(out.contains("Stopped: Glance call 2 has no answer (0 given)"), "{out}");
    assert!(!out.contains("Answer:"), "{out}");
}

#[test]
fn explain_says_why_no_route_matched() {
    let dir = scratch();
    let (ok, out, err) = run(dir.path(), &["explain", "POST", &format!("/v2.1/images/{IMAGE}")]);
    assert!(ok, "{err}");
    assert!(out.contains("Route:   NONE under the nova mount `/v2.1`: method not allowed"), "{out}");
    assert!(out.contains("routed for GET, DELETE"), "{out}");
    assert!(out.contains("nearest: GET /v2.1/images/{id} (nova.images.show)"), "{out}");
    assert!(out.contains("Glance calls:\n  (none)"), "{out}");

    let (ok, out, err) = run(dir.path(), &["explain", "GET", "/v2.1/images/x/y/z/w"]);
    assert!(ok, "{err}");
    assert!(out.contains("Route:   NONE under the nova mount `/v2.1`: no route's path template matches"), "{out}");
    assert!(out.contains("answered as nova.unmatched"), "{out}");
    assert!(out.contains("Answer:  404"), "{out}");
}

#[test]
fn explain_with_an_upstream_answer_shows_the_answer_and_the_rule_of_each_field() {
    let dir = scratch();
    let page = glance_page(dir.path());
    let (ok, out, err) = run(dir.path(), &["explain", "GET", "/v2.1/images/detail", "--upstream-answer", &page]);
    assert!(ok, "{err}");
    assert!(out.contains("answered by upstream answer 1 (status 200)"), "{out}");
    assert!(out.contains("Answer:  200"), "{out}");
    assert!(out.contains("\"OS-EXT-IMG-SIZE:size\": 21430272"), "{out}");
    assert!(out.contains("\"status\": \"ACTIVE\""), "{out}");
    assert!(out.contains("OS-EXT-IMG-SIZE:size ← path = \"$.size\", default = 0"), "{out}");
    assert!(out.contains("status               ← path = \"$.status\", table = \"nova_status\""), "{out}");
    assert!(out.contains("table.nova_status = { values = { active = \"ACTIVE\""), "{out}");
    assert!(out.contains("server               ← path = \"$.instance_uuid\""), "{out}");
    assert!(out.contains("(not in the answer)"), "the snapshot-only fields are absent: {out}");

    let (ok, out, err) =
        run(dir.path(), &["explain", "GET", "/v2.1/images/detail", "--upstream-answer", &page, "--json"]);
    assert!(ok, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["route"]["id"], "nova.images.detail");
    assert_eq!(report["answer"]["status"], 200);
    assert_eq!(report["answer"]["body"]["images"][0]["minRam"], 64);
    let size = report["fields"].as_array().unwrap().iter().find(|f| f["field"] == "OS-EXT-IMG-SIZE:size").unwrap();
    assert_eq!(size["rule"], "path = \"$.size\", default = 0");
    assert_eq!(size["in_answer"], true);
}

#[test]
fn explain_refuses_a_malformed_header_or_answer_file() {
    let dir = scratch();
    let (ok, _, err) = run(dir.path(), &["explain", "GET", "/v2.1/images", "-H", "no colon"]);
    assert!(!ok && err.contains("header `no colon` is not 'Name: value'"), "{err}");
    std::fs::write(dir.path().join("bad.json"), "{not json").unwrap();
    let (ok, _, err) = run(dir.path(), &["explain", "GET", "/v2.1/images", "--upstream-answer", "bad.json"]);
    assert!(!ok && err.contains("bad.json: not JSON"), "{err}");
}

#[test]
fn the_shipped_golden_cases_pass_and_cover_every_route() {
    let dir = scratch();
    let (ok, out, err) = run(dir.path(), &["test"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("ok     nova/show.toml (nova.images.show)"), "{out}");
    assert!(out.contains(" 0 failed (mappings/tests)"), "{out}");
    assert!(!out.contains("no case for route nova") && !out.contains("no case for route alliance"), "{out}");
    assert!(!out.contains("no case for view nova") && !out.contains("no case for view alliance"), "{out}");
    let (ok, out, err) = run(dir.path(), &["check"]);
    assert!(ok, "{out}{err}");
}

/// An operator renames an output field: the shipped cases catch it, with a readable diff,
/// and `check` fails naming them.
#[test]
fn a_renamed_field_fails_the_golden_cases_with_a_diff() {
    let dir = scratch();
    let nova = dir.path().join("mappings/nova.toml");
    let text = std::fs::read_to_string(&nova).unwrap();
    let renamed = text.replacen("minRam = { path = \"$.min_ram\"", "min_ram = { path = \"$.min_ram\"", 1);
    assert_ne!(renamed, text);
    std::fs::write(&nova, renamed).unwrap();

    let (ok, out, _) = run(dir.path(), &["test"]);
    assert!(!ok, "{out}");
    assert!(out.contains("FAILED nova/show.toml (nova.images.show): GET /images/{id}"), "{out}");
    assert!(out.contains("    --- expected\n    +++ got\n"), "{out}");
    assert!(out.contains("    -      \"minRam\": 64,\n    +      \"min_ram\": 64,\n"), "{out}");
    // The basic view has no minRam: its case still passes.
    assert!(out.contains("ok     nova/list_filters.toml"), "{out}");

    let (ok, out, err) = run(dir.path(), &["check"]);
    assert!(!ok, "{out}");
    assert!(out.contains("FAILED nova/show.toml"), "{out}");
    assert!(err.contains("mappings/tests: golden cases fail"), "{err}");
}

#[test]
fn a_case_that_gives_too_few_answers_says_which_call_went_unanswered() {
    let dir = scratch();
    let case = dir.path().join("mappings/tests/nova/delete.toml");
    let text = std::fs::read_to_string(&case).unwrap();
    let start = text.find("[[glance]]").unwrap();
    let end = text.find("[expect]").unwrap();
    std::fs::write(&case, format!("{}{}", &text[..start], &text[end..])).unwrap();
    let (ok, out, _) = run(dir.path(), &["test"]);
    assert!(!ok, "{out}");
    assert!(out.contains("FAILED nova/delete.toml"), "{out}");
    assert!(
        out.contains(&format!("called Glance once more than the case answers (0 given): DELETE /v2/images/{IMAGE}")),
        "{out}"
    );
}

/// A configuration that serves Nova alone skips the Alliance cases rather than failing them.
#[test]
fn cases_of_a_dialect_not_served_are_skipped() {
    let dir = scratch();
    let config = dir.path().join("config/gateway.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let nowhere = text.replacen("mounts = [\"\"]", "mounts = []", 1);
    assert_ne!(nowhere, text);
    std::fs::write(&config, nowhere).unwrap();
    let (ok, out, err) = run(dir.path(), &["test"]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("skipped mappings/tests/alliance: the configuration serves dialect `alliance` nowhere"),
        "{out}"
    );
    assert!(out.contains("ok     nova/show.toml") && !out.contains("alliance/show.toml"), "{out}");
}
