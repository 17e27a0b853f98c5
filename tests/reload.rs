//! Reload on change, in the binary: the configuration and mapping files laid out as the kubelet
//! mounts a ConfigMap, updated as it updates one, while clients keep calling.

mod common;

use common::process::{as_member, Process};

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Concurrent clients, each on its own kept-alive connection.
const CLIENTS: usize = 4;
/// What a wait for the gateway to act may take before the test fails: a generous bound, not
/// the figure promised (2 s, which the test prints).
const PATIENCE: Duration = Duration::from_secs(10);

/// Publishes `files` into the ConfigMap volume `volume` as the kubelet's atomic writer does: a
/// new timestamped directory, a `..data_tmp` symlink to it renamed over `..data`, a symlink per
/// file name through `..data`, then the previous directory removed.
fn publish(volume: &Path, generation: u32, files: &[(&str, &str)]) {
    std::fs::create_dir_all(volume).unwrap();
    let previous = std::fs::read_link(volume.join("..data")).ok();
    let dir = format!("..2026_12_02_10_00_{generation:02}.{}", 100 + generation);
    std::fs::create_dir(volume.join(&dir)).unwrap();
    for (name, content) in files {
        std::fs::write(volume.join(&dir).join(name), content).unwrap();
    }
    std::os::unix::fs::symlink(&dir, volume.join("..data_tmp")).unwrap();
    std::fs::rename(volume.join("..data_tmp"), volume.join("..data")).unwrap();
    for (name, _) in files {
        if std::fs::symlink_metadata(volume.join(name)).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(name), volume.join(name)).unwrap();
        }
    }
    if let Some(previous) = previous {
        std::fs::remove_dir_all(volume.join(previous)).unwrap();
    }
}

/// The shipped mapping files (name, content), with `nova.toml` as `nova` says.
fn mappings_with(nova: &str) -> Vec<(String, String)> {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings");
    let mut files: Vec<(String, String)> = std::fs::read_dir(shipped)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "toml"))
        .map(|path| (path.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read_to_string(&path).unwrap()))
        .collect();
    files.iter_mut().find(|(name, _)| name == "nova.toml").unwrap().1 = nova.to_owned();
    files
}

/// [`publish`]es the shipped mapping files, with `nova.toml` as `nova` says.
fn publish_mappings(volume: &Path, generation: u32, nova: &str) {
    let files = mappings_with(nova);
    let files: Vec<(&str, &str)> = files.iter().map(|(name, content)| (name.as_str(), content.as_str())).collect();
    publish(volume, generation, &files);
}

/// The shipped `nova.toml`.
fn shipped_nova() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings/nova.toml")).unwrap()
}

/// Polls `done` until it holds, or fails after [`PATIENCE`].
async fn until(what: &str, mut done: impl AsyncFnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done().await {
        assert!(start.elapsed() < PATIENCE, "no {what} within {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

async fn text(client: &reqwest::Client, url: String) -> String {
    client.get(url).send().await.unwrap().text().await.unwrap()
}

/// The Nova name of the image's minimum RAM (64) in an answer to `/v2.1/images/detail`; what
/// came instead, for a failed call or an answer of another shape.
async fn ram_field(client: &reqwest::Client, base: &str) -> Result<String, String> {
    let answer = as_member(client.get(format!("{base}/v2.1/images/detail")))
        .send()
        .await
        .map_err(|e| format!("no answer: {e}"))?;
    let status = answer.status();
    let body = answer.text().await.map_err(|e| format!("{status}, body cut: {e}"))?;
    let image = serde_json::from_str::<serde_json::Value>(&body).ok().map(|v| v["images"][0].clone());
    let field = ["minRam", "ramMinimum"].into_iter().find(|f| image.as_ref().is_some_and(|i| i[f] == 64));
    match field {
        Some(field) if status == 200 => Ok(field.to_owned()),
        _ => Err(format!("{status}: {body}")),
    }
}

/// A ConfigMap update of a mapping file under steady load: the new mapping answers within the
/// debounce (the time taken is printed), no request fails across the swap, a swap to the same
/// content reloads nothing, and a broken update is refused, logged naming the file and what is
/// wrong in it, and counted, while the previous set keeps answering.
#[test]
fn a_configmap_update_under_load_reloads_without_a_failed_request() {
    let root = tempfile::tempdir().unwrap();
    let nova = shipped_nova();
    let (config_volume, mappings_volume) = (root.path().join("config"), root.path().join("mappings"));
    let config = format!("mappings_dir = \"{}\"\n", mappings_volume.display());
    publish(&config_volume, 1, &[("gateway.toml", &config)]);
    publish_mappings(&mappings_volume, 1, &nova);
    let served = Process::start(root.path(), &["--config", "config/gateway.toml"], &[]);
    let base = served.base.clone();

    served.block_on(async {
        image_gateway::install_crypto_provider();
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let created = as_member(client.post(format!("{base}/image/v2/images")))
            .json(&serde_json::json!({"name": "swapped", "min_ram": 64}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        assert_eq!(ram_field(&client, &base).await.unwrap(), "minRam");
        let metrics = || text(&client, format!("{base}/metrics"));

        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicUsize::new(0));
        let load: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let (stop, answered, base) = (stop.clone(), answered.clone(), base.clone());
                // Its own client: its own kept-alive connection, across the swap.
                let client = reqwest::Client::builder().no_proxy().build().unwrap();
                tokio::spawn(async move {
                    let mut failures = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        match ram_field(&client, &base).await {
                            Ok(_) => {
                                answered.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(failure) => failures.push(failure),
                        }
                    }
                    failures
                })
            })
            .collect();
        let answered_past = |n: usize| {
            let answered = answered.clone();
            async move || answered.load(Ordering::Relaxed) >= n
        };
        until("load", answered_past(50)).await;

        // The same files again: the swap is seen, and nothing reloads.
        publish_mappings(&mappings_volume, 2, &nova);
        until("notice of unchanged files", async || served.log().contains("unchanged")).await;
        let m = metrics().await;
        assert!(m.contains(r#"image_gateway_config_reloads_total{result="success"} 0"#), "{m}");

        // A renamed field: answered within the debounce, under load.
        let renamed = nova.replacen("\nminRam = {", "\nramMinimum = {", 1);
        assert_ne!(renamed, nova);
        publish_mappings(&mappings_volume, 3, &renamed);
        let took =
            until("renamed field", async || ram_field(&client, &base).await.is_ok_and(|f| f == "ramMinimum")).await;
        let before = answered.load(Ordering::Relaxed);
        until("load after the swap", answered_past(before + 50)).await;

        // A broken mapping file: refused, counted, logged; the renamed field still answers.
        let broken = renamed.replacen("table = \"nova_status\"", "table = \"missing\"", 1);
        assert_ne!(broken, renamed);
        publish_mappings(&mappings_volume, 4, &broken);
        until("refused reload", async || {
            metrics().await.contains(r#"image_gateway_config_reloads_total{result="failure"} 1"#)
        })
        .await;
        let before = answered.load(Ordering::Relaxed);
        until("load after the refusal", answered_past(before + 50)).await;
        assert_eq!(ram_field(&client, &base).await.unwrap(), "ramMinimum");

        stop.store(true, Ordering::Relaxed);
        let mut failures = Vec::new();
        for client in load {
            failures.extend(client.await.unwrap());
        }
        let total = answered.load(Ordering::Relaxed);
        assert!(
            failures.is_empty(),
            "{} of {total} requests failed: {:?}",
            failures.len(),
            &failures[..3.min(failures.len())]
        );

        let m = metrics().await;
        for line in [
            r#"image_gateway_config_reloads_total{result="success"} 1"#,
            r#"image_gateway_config_reloads_total{result="failure"} 1"#,
            r#"image_gateway_config_reload_triggers_total{trigger="change"} 2"#,
            r#"image_gateway_config_reload_triggers_total{trigger="signal"} 0"#,
        ] {
            assert!(m.contains(line), "no {line} in {m}");
        }
        let log = served.log();
        let refusal = log.lines().find(|l| l.contains("reload rejected")).unwrap_or_else(|| panic!("{log}"));
        assert!(refusal.contains("nova.toml") && refusal.contains("no table named `missing`"), "{refusal}");
        eprintln!("renamed field served {took:?} after the swap; {total} requests by {CLIENTS} clients, none failed");
    });
}

/// Outside Kubernetes: an editor saving the configuration file (a new file renamed over the
/// old one) in a plain directory is reloaded too, a new mount served without a signal.
#[test]
fn an_edited_configuration_file_is_reloaded() {
    let root = tempfile::tempdir().unwrap();
    let config = root.path().join("gateway.toml");
    std::fs::write(&config, "").unwrap();
    let served = Process::start(root.path(), &["--config", "gateway.toml"], &[]);
    let base = served.base.clone();
    served.block_on(async {
        image_gateway::install_crypto_provider();
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let status = async |path: &str| as_member(client.get(format!("{base}{path}"))).send().await.unwrap().status();
        assert_eq!(status("/compute/v2.1/images/detail").await, 404);

        let saved = root.path().join(".gateway.toml.swp");
        let edited = "[dialects.nova]\nkind = \"nova\"\nmapping = \"nova.toml\"\nmounts = [\"/compute/v2.1\"]\n";
        std::fs::write(&saved, edited).unwrap();
        std::fs::rename(&saved, &config).unwrap();
        until("the new mount", async || status("/compute/v2.1/images/detail").await == 200).await;
        let m = text(&client, format!("{base}/metrics")).await;
        assert!(m.contains(r#"image_gateway_config_reloads_total{result="success"} 1"#), "{m}");
    });
}

/// SIGHUP and the watch go through one reload: a change that SIGHUP already reloaded is not
/// reloaded again when the watch reports it (a long debounce makes sure the signal comes first).
#[test]
fn a_change_sighup_already_reloaded_is_not_reloaded_again() {
    let root = tempfile::tempdir().unwrap();
    let mappings = root.path().join("mappings");
    std::fs::create_dir(&mappings).unwrap();
    for (name, content) in mappings_with(&shipped_nova()) {
        std::fs::write(mappings.join(name), content).unwrap();
    }
    std::fs::write(root.path().join("gateway.toml"), format!("mappings_dir = \"{}\"\n", mappings.display())).unwrap();
    let served =
        Process::start(root.path(), &["--config", "gateway.toml"], &[("IMAGE_GATEWAY_RELOAD__DEBOUNCE_MS", "2000")]);
    // Logged once SIGHUP is caught: before, it would end the process.
    served.log_once(|log| log.contains("watching the configuration"));
    let nova = std::fs::read_to_string(mappings.join("nova.toml")).unwrap();
    std::fs::write(mappings.join("nova.toml"), nova.replacen("\nminRam = {", "\nramMinimum = {", 1)).unwrap();
    let hup = std::process::Command::new("kill").arg("-HUP").arg(served.child.id().to_string()).status().unwrap();
    assert!(hup.success());
    let base = served.base.clone();
    served.block_on(async {
        until("notice of unchanged files", async || served.log().contains("unchanged")).await;
        image_gateway::install_crypto_provider();
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let m = text(&client, format!("{base}/metrics")).await;
        for line in [
            r#"image_gateway_config_reloads_total{result="success"} 1"#,
            r#"image_gateway_config_reload_triggers_total{trigger="signal"} 1"#,
            r#"image_gateway_config_reload_triggers_total{trigger="change"} 0"#,
        ] {
            assert!(m.contains(line), "no {line} in {m}");
        }
    });
}
