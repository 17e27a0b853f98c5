//! Watching the directories of files that are read again when they change: the listener's
//! certificate ([`crate::tls::server`]) and the configuration with its mapping files
//! ([`crate::server::reload`]).
//!
//! Kubernetes updates a mounted ConfigMap or Secret by writing the new files into a new
//! directory and swapping the `..data` symlink the file names point through, and editors write
//! a new file and rename it over the old one: either way the file's own inode changes, so
//! directories are watched, not files. A directory that is itself a symlink is watched through
//! its parent too, and resolved again at each [`DirWatch::follow`]: the kernel's watch stays on
//! the directory the link pointed to, which a swap deletes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio::time::Instant;

/// However busy the directories are, a burst of changes is acted on no later than this after
/// its first change.
pub const SETTLE_MAX: Duration = Duration::from_secs(2);

/// Directories being watched; the watch, and the stream of changes [`DirWatch::start`]
/// returned with it, end when this is dropped.
pub struct DirWatch {
    watcher: Box<dyn notify::Watcher + Send>,
    /// Each path watched, as asked for, with what it resolved to then (`None`: it did not
    /// exist, and is not watched until it does).
    watched: Vec<(PathBuf, Option<PathBuf>)>,
    /// What the files are, for the log ("the listener certificate's files").
    what: &'static str,
}

impl std::fmt::Debug for DirWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirWatch").field("what", &self.what).field("watched", &self.watched).finish_non_exhaustive()
    }
}

impl DirWatch {
    /// Watches `dirs` with the kernel's notifications, or, where they cannot be had (no inotify
    /// instance or watch left), by reading them every `poll`. Each change sends a `()`.
    pub fn start(
        what: &'static str,
        dirs: &[PathBuf],
        poll: Duration,
    ) -> notify::Result<(DirWatch, UnboundedReceiver<()>)> {
        let (handler, changes) = handler(what);
        let notified =
            notify::recommended_watcher(handler.clone()).and_then(|w| DirWatch::new(Box::new(w), what, dirs));
        let watch = match notified {
            Ok(watch) => watch,
            Err(e) => {
                tracing::warn!("cannot watch {what} ({e}): reading them every {poll:?}");
                DirWatch::polling(handler, what, dirs, poll)?
            }
        };
        Ok((watch, changes))
    }

    /// The fallback: reading `dirs` every `poll` (symlinks followed, so that a swapped `..data`
    /// shows as its new directory).
    fn polling(
        handler: impl notify::EventHandler,
        what: &'static str,
        dirs: &[PathBuf],
        poll: Duration,
    ) -> notify::Result<DirWatch> {
        let config = notify::Config::default().with_poll_interval(poll);
        DirWatch::new(Box::new(notify::PollWatcher::new(handler, config)?), what, dirs)
    }

    fn new(watcher: Box<dyn notify::Watcher + Send>, what: &'static str, dirs: &[PathBuf]) -> notify::Result<DirWatch> {
        let mut watch = DirWatch { watcher, watched: Vec::new(), what };
        for dir in wanted(dirs) {
            watch.add(dir)?;
        }
        Ok(watch)
    }

    /// Watches `dirs` from now on: the ones no longer asked for are let go, and the ones that
    /// resolve elsewhere than when they were watched (a symlink swapped) are watched again.
    pub fn follow(&mut self, dirs: &[PathBuf]) {
        let wanted = wanted(dirs);
        for (path, resolved) in std::mem::take(&mut self.watched) {
            if wanted.contains(&path) && std::fs::canonicalize(&path).ok() == resolved {
                self.watched.push((path, resolved));
            } else if resolved.is_some() {
                // Fails when the kernel has already dropped the watch of a deleted directory.
                let _ = self.watcher.unwatch(&path);
            }
        }
        for dir in wanted {
            if !self.watched.iter().any(|(path, _)| *path == dir) {
                if let Err(e) = self.add(dir) {
                    tracing::warn!("cannot watch {}: {e}", self.what);
                }
            }
        }
    }

    fn add(&mut self, dir: PathBuf) -> notify::Result<()> {
        let resolved = std::fs::canonicalize(&dir).ok();
        if resolved.is_some() {
            self.watcher.watch(&dir, RecursiveMode::NonRecursive)?;
        }
        self.watched.push((dir, resolved));
        Ok(())
    }
}

/// What turns the watcher's events into changes: every event but a file opened or read (a
/// reload's own reading included).
fn handler(what: &'static str) -> (impl notify::EventHandler + Clone, UnboundedReceiver<()>) {
    let (changed, changes) = unbounded_channel();
    let handler = move |event: notify::Result<notify::Event>| match event {
        Ok(event) if matches!(event.kind, EventKind::Access(kind) if kind != AccessKind::Close(AccessMode::Write)) => {}
        Ok(_) => {
            let _ = changed.send(());
        }
        Err(e) => tracing::warn!("watching {what}: {e}"),
    };
    (handler, changes)
}

/// `dirs`, each preceded by its parent when it is a symlink.
fn wanted(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut wanted = Vec::new();
    for dir in dirs {
        let link = std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink());
        for path in link.then(|| directory_of(dir)).into_iter().chain([dir.clone()]) {
            if !wanted.contains(&path) {
                wanted.push(path);
            }
        }
    }
    wanted
}

/// The directory a file name is in (`.` for a bare name).
pub fn directory_of(file: &Path) -> PathBuf {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Waits for the next burst of changes and for it to settle: until no change came for
/// `settle`, or [`SETTLE_MAX`] after its first. `false` once the watch has ended.
pub async fn settled(changes: &mut UnboundedReceiver<()>, settle: Duration) -> bool {
    if changes.recv().await.is_none() {
        return false;
    }
    let latest = Instant::now() + SETTLE_MAX.max(settle);
    loop {
        let quiet_until = (Instant::now() + settle).min(latest);
        match tokio::time::timeout_at(quiet_until, changes.recv()).await {
            Ok(Some(())) => {}
            // Settled, or the watch ended during the burst: the burst is acted on all the same.
            Err(_) | Ok(None) => return true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc::UnboundedSender;

    const SETTLE: Duration = Duration::from_millis(300);

    /// Sends a change at each of `at` (milliseconds from now), then ends the stream.
    fn changes_at(at: &'static [u64]) -> UnboundedReceiver<()> {
        let (tx, rx) = unbounded_channel();
        let start = Instant::now();
        tokio::spawn(async move {
            let tx: UnboundedSender<()> = tx;
            for ms in at {
                tokio::time::sleep_until(start + Duration::from_millis(*ms)).await;
                tx.send(()).unwrap();
            }
            // Keeps the stream open long after, so that its end does not settle a burst.
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
        rx
    }

    async fn settled_after(changes: &mut UnboundedReceiver<()>, start: Instant) -> Duration {
        assert!(settled(changes, SETTLE).await);
        start.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_settles_once_quiet_for_the_settling_time() {
        let start = Instant::now();
        // The kubelet's swap: three events close together; then a second burst later.
        let mut changes = changes_at(&[0, 5, 120, 1000]);
        assert_eq!(settled_after(&mut changes, start).await, Duration::from_millis(420));
        assert_eq!(settled_after(&mut changes, start).await, Duration::from_millis(1300));
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_that_never_quiets_is_acted_on_after_settle_max() {
        let start = Instant::now();
        let mut changes = changes_at(&[0, 200, 400, 600, 800, 1000, 1200, 1400, 1600, 1800, 2000, 2200]);
        assert_eq!(settled_after(&mut changes, start).await, SETTLE_MAX);
    }

    #[tokio::test(start_paused = true)]
    async fn the_end_of_the_watch_ends_the_wait() {
        let (tx, mut rx) = unbounded_channel::<()>();
        drop(tx);
        assert!(!settled(&mut rx, SETTLE).await);
    }

    #[test]
    fn a_swapped_symlink_is_watched_again_where_it_now_points() {
        let dir = tempfile::tempdir().unwrap();
        for generation in ["..1", "..2"] {
            std::fs::create_dir(dir.path().join(generation)).unwrap();
        }
        let mappings = dir.path().join("mappings");
        std::os::unix::fs::symlink("..1", &mappings).unwrap();
        let (mut watch, _changes) = DirWatch::start("test files", std::slice::from_ref(&mappings), SETTLE).unwrap();
        let resolved = |watch: &DirWatch| watch.watched.iter().find(|(p, _)| *p == mappings).unwrap().1.clone();
        assert_eq!(resolved(&watch), Some(dir.path().canonicalize().unwrap().join("..1")));

        std::os::unix::fs::symlink("..2", dir.path().join("tmp")).unwrap();
        std::fs::rename(dir.path().join("tmp"), &mappings).unwrap();
        std::fs::remove_dir(dir.path().join("..1")).unwrap();
        watch.follow(std::slice::from_ref(&mappings));
        assert_eq!(resolved(&watch), Some(dir.path().canonicalize().unwrap().join("..2")));
        assert_eq!(watch.watched.len(), 2, "the parent and the link: {watch:?}");

        watch.follow(&[]);
        assert!(watch.watched.is_empty(), "{watch:?}");
    }

    /// Without the kernel's notifications, the polling fallback still sees a kubelet's swap.
    #[tokio::test]
    async fn the_polling_fallback_sees_a_swap() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("..1")).unwrap();
        std::fs::write(dir.path().join("..1/nova.toml"), "a").unwrap();
        std::os::unix::fs::symlink("..1", dir.path().join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/nova.toml", dir.path().join("nova.toml")).unwrap();
        let (handler, mut changes) = handler("test files");
        let poll = Duration::from_millis(20);
        let _watch = DirWatch::polling(handler, "test files", &[dir.path().to_owned()], poll).unwrap();
        // Nothing changed: the first scans report nothing.
        let quiet = tokio::time::timeout(poll * 5, changes.recv()).await;
        assert!(quiet.is_err(), "a change reported before any: {quiet:?}");

        std::fs::create_dir(dir.path().join("..2")).unwrap();
        std::fs::write(dir.path().join("..2/nova.toml"), "b").unwrap();
        std::os::unix::fs::symlink("..2", dir.path().join("..data_tmp")).unwrap();
        std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
        std::fs::remove_dir_all(dir.path().join("..1")).unwrap();
        let seen = tokio::time::timeout(Duration::from_secs(10), changes.recv()).await;
        assert_eq!(seen, Ok(Some(())), "the swap was not seen");
    }

    #[test]
    fn a_symlinked_directory_is_watched_through_its_parent_too() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("..2026_12_02");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("mappings")).unwrap();
        let plain = dir.path().join("config");
        std::fs::create_dir(&plain).unwrap();
        let dirs = [dir.path().join("mappings"), plain.clone(), dir.path().join("mappings")];
        assert_eq!(wanted(&dirs), [dir.path().to_owned(), dir.path().join("mappings"), plain]);
    }
}
