//! Local directory mode (`drover serve --dir ./fleet`): watch a fleet directory and send
//! one [`WatchEvent`] per burst of changes to its YAML files.
//!
//! notify-debouncer-full merges the events of each file; a forwarding thread then merges
//! batches that arrive within one debounce period of each other, so saving many files at
//! once (a `git checkout`, an editor's "save all") gives one event.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use notify_debouncer_full::notify::{EventKind, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use tokio::sync::mpsc;

/// Capacity of the event channel. Each event means "reload"; when the receiver lags,
/// later events are dropped because the queued one already asks for a reload.
const CHANNEL_CAPACITY: usize = 1;
/// Shortest debounce period used (a zero period would make the debouncer spin).
const MIN_DEBOUNCE: Duration = Duration::from_millis(10);
/// A burst longer than this many debounce periods is split (so a constant stream of
/// writes cannot delay reloads forever).
const MAX_BURST_PERIODS: u32 = 10;

/// Something changed under the watched directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// Changed paths, relative to the watched directory, sorted. Informative only: the
    /// receiver should reload the whole directory.
    pub paths: Vec<PathBuf>,
    /// The watcher lost track of changes (an overflow or an error); reload everything.
    pub rescan: bool,
}

/// Why watching could not start.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The directory cannot be resolved.
    #[error("cannot watch {path}: {source}")]
    Dir {
        /// The directory given.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The OS watcher failed.
    #[error("cannot watch {path}: {source}")]
    Notify {
        /// The directory given.
        path: PathBuf,
        /// Why.
        #[source]
        source: notify_debouncer_full::notify::Error,
    },
}

/// Keeps the watch alive; dropping it stops watching and closes the event channel.
pub struct DirWatcher {
    root: PathBuf,
    _debouncer: Debouncer<RecommendedWatcher, RecommendedCache>,
}

impl DirWatcher {
    /// The watched directory (canonical).
    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl std::fmt::Debug for DirWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirWatcher")
            .field("root", &self.root)
            .finish()
    }
}

/// Watches `dir` recursively. Changes to `*.yaml` / `*.yml` files (and to directories,
/// which may hold them) outside hidden paths produce events, at most one per `debounce`
/// period of quiet (at least 10 ms).
pub fn watch(
    dir: &Path,
    debounce: Duration,
) -> Result<(DirWatcher, mpsc::Receiver<WatchEvent>), WatchError> {
    let root = dir.canonicalize().map_err(|source| WatchError::Dir {
        path: dir.to_path_buf(),
        source,
    })?;
    let notify_err = |source| WatchError::Notify {
        path: dir.to_path_buf(),
        source,
    };
    let debounce = debounce.max(MIN_DEBOUNCE);
    let (raw_tx, raw_rx) = std_mpsc::channel::<DebounceEventResult>();
    let mut debouncer = new_debouncer(debounce, None, raw_tx).map_err(notify_err)?;
    debouncer
        .watch(&root, RecursiveMode::Recursive)
        .map_err(notify_err)?;
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    let forward_root = root.clone();
    std::thread::Builder::new()
        .name("drover-watch".into())
        .spawn(move || forward(&forward_root, debounce, &raw_rx, &tx))
        .map_err(|source| WatchError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
    tracing::info!(dir = %root.display(), ?debounce, "watching fleet directory");
    Ok((
        DirWatcher {
            root,
            _debouncer: debouncer,
        },
        rx,
    ))
}

/// Merges debounced batches into bursts and sends one event per burst. Ends when the
/// debouncer is dropped or the receiver is closed.
fn forward(
    root: &Path,
    debounce: Duration,
    raw: &std_mpsc::Receiver<DebounceEventResult>,
    tx: &mpsc::Sender<WatchEvent>,
) {
    while let Ok(first) = raw.recv() {
        let mut pending = Pending::default();
        pending.add(root, first);
        let burst_end = Instant::now() + debounce * MAX_BURST_PERIODS;
        loop {
            let wait = debounce.min(burst_end.saturating_duration_since(Instant::now()));
            match raw.recv_timeout(wait) {
                Ok(more) if Instant::now() < burst_end => pending.add(root, more),
                Ok(more) => {
                    pending.add(root, more);
                    break;
                }
                Err(std_mpsc::RecvTimeoutError::Timeout) => break,
                Err(std_mpsc::RecvTimeoutError::Disconnected) => {
                    let _ = send(tx, pending);
                    return;
                }
            }
        }
        if send(tx, pending).is_err() {
            return;
        }
    }
}

#[derive(Default)]
struct Pending {
    paths: BTreeSet<PathBuf>,
    rescan: bool,
}

impl Pending {
    fn add(&mut self, root: &Path, batch: DebounceEventResult) {
        match batch {
            Ok(events) => {
                for event in events {
                    if event.need_rescan() {
                        self.rescan = true;
                    }
                    for path in &event.paths {
                        if let Some(relative) = relevant(root, path, &event.kind) {
                            self.paths.insert(relative);
                        }
                    }
                }
            }
            Err(errors) => {
                for error in errors {
                    tracing::warn!(error = %error, "file watcher error; rescanning");
                }
                self.rescan = true;
            }
        }
    }
}

/// Sends the burst if it holds anything. `Err` when the receiver is gone.
fn send(tx: &mpsc::Sender<WatchEvent>, pending: Pending) -> Result<(), ()> {
    if pending.paths.is_empty() && !pending.rescan {
        return Ok(());
    }
    let event = WatchEvent {
        paths: pending.paths.into_iter().collect(),
        rescan: pending.rescan,
    };
    tracing::debug!(
        paths = event.paths.len(),
        rescan = event.rescan,
        "fleet directory changed"
    );
    match tx.try_send(event) {
        Ok(()) => Ok(()),
        Err(mpsc::error::TrySendError::Full(_)) => {
            tracing::debug!("a reload is already queued; change merged into it");
            Ok(())
        }
        Err(mpsc::error::TrySendError::Closed(_)) => Err(()),
    }
}

/// The path relative to `root` if a change to it can matter to the fleet: a YAML file,
/// or a directory created, removed or renamed (which may hold YAML files). Hidden paths
/// (any component starting with `.`) never matter, like for the fleet loader.
fn relevant(root: &Path, path: &Path, kind: &EventKind) -> Option<PathBuf> {
    // Reads (the service's own, when it digests the directory) change nothing; counting
    // them would make every poll trigger the next one.
    if matches!(kind, EventKind::Access(_)) {
        return None;
    }
    let relative = path.strip_prefix(root).ok()?;
    let hidden = relative.components().any(|c| match c {
        Component::Normal(name) => name.to_string_lossy().starts_with('.'),
        _ => false,
    });
    if hidden || relative.as_os_str().is_empty() {
        return None;
    }
    let yaml = relative
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"));
    let structural = matches!(
        kind,
        EventKind::Create(_)
            | EventKind::Remove(_)
            | EventKind::Modify(notify_debouncer_full::notify::event::ModifyKind::Name(_))
    ) && (path.is_dir() || (relative.extension().is_none() && !path.exists()));
    (yaml || structural).then(|| relative.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify_debouncer_full::notify::event::{CreateKind, DataChange, ModifyKind};

    #[test]
    fn only_visible_yaml_files_matter() {
        let root = Path::new("/nonexistent-root");
        let modify = EventKind::Modify(ModifyKind::Data(DataChange::Any));
        let create = EventKind::Create(CreateKind::File);
        for (path, expected) in [
            ("sites/a.yaml", true),
            ("b.YML", true),
            ("notes.txt", false),
            (".hidden.yaml", false),
            (".git/config.yaml", false),
            ("sites/.a.yaml.swp", false),
            ("gone-dir", false),
        ] {
            assert_eq!(
                relevant(root, &root.join(path), &modify).is_some(),
                expected,
                "{path}"
            );
        }
        // A removed or created directory (gone now, no extension) may have held YAML.
        assert!(relevant(root, &root.join("gone-dir"), &create).is_some());
        assert!(relevant(Path::new("/elsewhere"), &root.join("a.yaml"), &modify).is_none());
        let read = EventKind::Access(notify_debouncer_full::notify::event::AccessKind::Close(
            notify_debouncer_full::notify::event::AccessMode::Read,
        ));
        assert!(relevant(root, &root.join("a.yaml"), &read).is_none());
    }
}
