//! Reloading the configuration and mapping files, on SIGHUP and, with `reload.watch`, when the
//! files change (a Kubernetes ConfigMap update, an editor's save).
//!
//! Both triggers feed one task ([`Reload::run`]), so that reloads never overlap and each is the
//! same: read the configuration and every mapping file again, build a new gateway, and swap its
//! router in (requests already running keep the one they started on). A set that does not load
//! is logged with its reason, counted, and the running set keeps serving. A change that leaves
//! the files as the last reload read them (a swap to identical content, the events of a
//! reload's own reading, a change SIGHUP already reloaded) does nothing. The listen address,
//! `[server]` and `[reload]` cannot change without a restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::Router;
use tokio::sync::mpsc;

use super::{router, ConfigSource, Lifecycle};
use crate::app::App;
use crate::config::{Config, ReloadConfig, ServerConfig};
use crate::layers::metrics::ReloadTrigger;
use crate::watch::{self, DirWatch};

/// How often the files are read for changes where the kernel cannot report them.
const POLL_INTERVAL: Duration = Duration::from_secs(5);

/// The reload task and what runs it.
struct Reload {
    source: ConfigSource,
    /// What the running process was started with, and keeps.
    listen: std::net::SocketAddr,
    server: ServerConfig,
    reload: ReloadConfig,
    /// The gateway serving now, which the next one replaces ([`App::reload`]).
    app: Arc<App>,
    lifecycle: Arc<Lifecycle>,
    current: Arc<ArcSwap<Router>>,
    /// The directories of the files, when `reload.watch` is on and they could be watched.
    watch: Option<DirWatch>,
    /// What the files held when last read ([`fingerprint`]).
    last: Vec<u8>,
}

/// Starts reloading `current` (the router of `app`) on SIGHUP and, with `reload.watch`, when
/// the files change.
pub(super) fn start(source: ConfigSource, app: Arc<App>, lifecycle: Arc<Lifecycle>, current: Arc<ArcSwap<Router>>) {
    let (triggers, triggered) = mpsc::channel(4);
    // Here rather than in the task, so that SIGHUP is caught (not fatal) once this returns.
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(hangups) => {
            tokio::spawn(on_sighup(hangups, triggers.clone()));
        }
        Err(e) => tracing::warn!("cannot listen for SIGHUP ({e}): reloading on it is off"),
    }
    let config = &app.config;
    let watch = config.reload.watch.then(|| watch_files(&source, config, triggers)).flatten();
    let reload = Reload {
        last: fingerprint(&source.path, config.mappings_dir.as_deref()),
        listen: config.listen,
        server: config.server.clone(),
        reload: config.reload.clone(),
        source,
        app,
        lifecycle,
        current,
        watch,
    };
    tokio::spawn(reload.run(triggered));
}

async fn on_sighup(mut hangups: tokio::signal::unix::Signal, triggers: mpsc::Sender<ReloadTrigger>) {
    while hangups.recv().await.is_some() {
        if triggers.send(ReloadTrigger::Signal).await.is_err() {
            return;
        }
    }
}

/// Watches the directories of the files, asking for a reload once each burst of changes
/// there has settled.
fn watch_files(source: &ConfigSource, config: &Config, triggers: mpsc::Sender<ReloadTrigger>) -> Option<DirWatch> {
    let dirs = watched_dirs(source, config);
    let (watch, mut changes) = match DirWatch::start("the configuration and mapping files", &dirs, POLL_INTERVAL) {
        Ok(started) => started,
        Err(e) => {
            tracing::error!("cannot watch the configuration and mapping files ({e}): they reload on SIGHUP only");
            return None;
        }
    };
    let settle = Duration::from_millis(config.reload.debounce_ms);
    // Ends when the watch is dropped.
    tokio::spawn(async move {
        while watch::settled(&mut changes, settle).await {
            if triggers.send(ReloadTrigger::Change).await.is_err() {
                return;
            }
        }
    });
    tracing::info!(dirs = ?dirs, "watching the configuration and mapping files: they reload when changed");
    Some(watch)
}

/// The directories holding the configuration file and the mapping files.
fn watched_dirs(source: &ConfigSource, config: &Config) -> Vec<PathBuf> {
    std::iter::once(watch::directory_of(&source.path)).chain(config.mappings_dir.clone()).collect()
}

/// What a reload reads, as a SHA-256 digest: the configuration file and each file of the
/// mappings directory (its names starting with `.` are Kubernetes' `..data` and timestamped
/// directories, reached through the file names). A file that cannot be read counts by why.
fn fingerprint(config: &Path, mappings_dir: Option<&Path>) -> Vec<u8> {
    let mut files = vec![(PathBuf::new(), std::fs::read(config))];
    if let Some(dir) = mappings_dir {
        let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(|entry| entry.ok())
            .filter(|entry| !entry.file_name().as_encoded_bytes().starts_with(b"."))
            .map(|entry| entry.path())
            .collect();
        names.sort();
        files.extend(names.into_iter().map(|path| {
            let content = std::fs::read(&path);
            (path, content)
        }));
    }
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    for (path, content) in files {
        // Lengths first, so that where one part ends is part of the digest.
        let name = path.as_os_str().as_encoded_bytes();
        digest.update(&name.len().to_le_bytes());
        digest.update(name);
        match content {
            Ok(bytes) => {
                digest.update(&bytes.len().to_le_bytes());
                digest.update(&bytes);
            }
            Err(e) => digest.update(format!("unreadable: {}", e.kind()).as_bytes()),
        }
    }
    digest.finish().as_ref().to_vec()
}

impl Reload {
    async fn run(mut self, mut triggered: mpsc::Receiver<ReloadTrigger>) {
        while let Some(trigger) = triggered.recv().await {
            self.reload(trigger);
        }
    }

    fn reload(&mut self, trigger: ReloadTrigger) {
        let files = fingerprint(&self.source.path, self.app.config.mappings_dir.as_deref());
        // SIGHUP reloads whatever the files hold: the operator asked for it.
        if trigger == ReloadTrigger::Signal || files != self.last {
            self.last = files;
            self.load(trigger);
        } else {
            tracing::info!("configuration and mapping files unchanged: nothing to reload");
        }
        // Every change is a chance to re-resolve the directories: a swap of `..data` under a
        // symlinked mappings_dir leaves the old watch on a deleted directory.
        if let Some(watch) = &mut self.watch {
            watch.follow(&watched_dirs(&self.source, &self.app.config));
        }
    }

    fn load(&mut self, trigger: ReloadTrigger) {
        let config = self.source.path.display().to_string();
        let trigger_name = match trigger {
            ReloadTrigger::Signal => "SIGHUP",
            ReloadTrigger::Change => "files changed",
        };
        let loaded = Config::load(&self.source.path, self.source.explicit)
            .map_err(|e| e.to_string())
            .and_then(|config| self.app.reload(config).map_err(|e| e.to_string()));
        let metrics = self.app.metrics.clone();
        match loaded {
            Ok(next) => {
                if next.config.listen != self.listen {
                    tracing::warn!(listen = %next.config.listen, "a new listen address takes a restart; still on {}", self.listen);
                }
                if next.config.server != self.server {
                    tracing::warn!("new [server] limits take a restart; the running ones stay");
                }
                if next.config.reload != self.reload {
                    tracing::warn!("a new [reload] takes a restart; the running one stays");
                }
                if next.config.tracing.otlp_endpoint != self.app.config.tracing.otlp_endpoint {
                    tracing::warn!("a new tracing.otlp_endpoint takes a restart; spans go where they went");
                }
                self.app = Arc::new(next);
                self.current.store(Arc::new(router(self.app.clone(), self.lifecycle.clone())));
                metrics.record_reload(trigger, true);
                tracing::info!(config, trigger = trigger_name, "configuration reloaded");
            }
            Err(reason) => {
                metrics.record_reload(trigger, false);
                tracing::error!(
                    config,
                    trigger = trigger_name,
                    %reason,
                    "reload rejected: still serving the previous configuration"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_changes_with_any_file_read_and_only_with_them() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("gateway.toml");
        let mappings = dir.path().join("mappings");
        std::fs::create_dir(&mappings).unwrap();
        std::fs::write(&config, "listen = \"127.0.0.1:1\"\n").unwrap();
        std::fs::write(mappings.join("nova.toml"), "a").unwrap();
        let print = || fingerprint(&config, Some(&mappings));
        let first = print();
        assert_eq!(print(), first, "the same files, the same print");

        // Kubernetes' own entries do not count: the files are reached through their names.
        std::fs::create_dir(mappings.join("..2026_12_02_10_00_00.1")).unwrap();
        assert_eq!(print(), first);

        std::fs::write(mappings.join("nova.toml"), "b").unwrap();
        let changed = print();
        assert_ne!(changed, first, "a mapping file changed");
        std::fs::write(mappings.join("nova.toml"), "a").unwrap();
        assert_eq!(print(), first, "changed back");

        std::fs::write(mappings.join("alliance.toml"), "").unwrap();
        assert_ne!(print(), first, "a new, even empty, mapping file");
        std::fs::remove_file(mappings.join("alliance.toml")).unwrap();

        std::fs::write(&config, "listen = \"127.0.0.1:2\"\n").unwrap();
        assert_ne!(print(), first, "the configuration changed");
        std::fs::remove_file(&config).unwrap();
        assert_ne!(print(), first, "the configuration is gone");
    }
}
