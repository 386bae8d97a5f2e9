//! Read-only snapshots of a commit's tree under `<cache>/snapshots/<commit>/`: written
//! from the object database into a temporary directory, then renamed into place, reused
//! when already complete, and pruned to the last few.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use git2::{Oid, Repository};

use super::Revision;
use super::classify::local_error;
use super::error::SourceError;
use super::tree::{self, Kind, Limits};
use crate::redact::Redactor;

/// Prefix of snapshots being written.
const TMP_PREFIX: &str = ".tmp-";
/// Temporary directories older than this are left over from a crash and removed.
const STALE_TMP: Duration = Duration::from_secs(600);

/// The files of one commit, on disk, read-only. The directory stays in place at least
/// as long as this value (or a clone) is alive in the process that made it.
#[derive(Debug, Clone)]
pub struct Snapshot {
    inner: Arc<SnapshotInner>,
}

#[derive(Debug)]
pub(crate) struct SnapshotInner {
    path: PathBuf,
    revision: Revision,
}

impl Snapshot {
    pub(crate) fn new(path: PathBuf, revision: Revision) -> Self {
        Self {
            inner: Arc::new(SnapshotInner { path, revision }),
        }
    }

    /// The snapshot's root directory, ready for [`crate::fleet::validate_dir`].
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The commit this snapshot holds.
    pub fn revision(&self) -> &Revision {
        &self.inner.revision
    }

    pub(crate) fn downgrade(&self) -> std::sync::Weak<SnapshotInner> {
        Arc::downgrade(&self.inner)
    }

    pub(crate) fn upgrade(weak: &std::sync::Weak<SnapshotInner>) -> Option<Self> {
        weak.upgrade().map(|inner| Self { inner })
    }
}

/// What [`materialize`] did.
#[derive(Debug)]
pub(crate) struct Written {
    pub path: PathBuf,
    pub reused: bool,
    pub files: usize,
    pub bytes: u64,
}

/// Whether `id` is a full lowercase SHA-1 or SHA-256 commit id (so it is safe as a
/// directory name).
pub(crate) fn is_full_commit_id(id: &str) -> bool {
    matches!(id.len(), 40 | 64) && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Writes the tree of `commit` to `<snapshots_dir>/<commit>`, unless it is already there.
pub(crate) fn materialize(
    repo: &Repository,
    commit: &str,
    snapshots_dir: &Path,
    limits: Limits,
    redactor: &Redactor,
) -> Result<Written, SourceError> {
    let url = || redactor.display_url().to_owned();
    let io = |context: String| {
        let url = url();
        move |source| SourceError::Io {
            url,
            context,
            source,
        }
    };
    if !is_full_commit_id(commit) {
        return Err(SourceError::InvalidConfig {
            url: url(),
            reason: format!("`{commit}` is not a full commit id"),
        });
    }
    let target = snapshots_dir.join(commit);
    if target.is_dir() {
        touch(&target);
        return Ok(Written {
            path: target,
            reused: true,
            files: 0,
            bytes: 0,
        });
    }
    let oid = Oid::from_str(commit).map_err(|e| local_error(&e, redactor))?;
    let found = match repo.find_commit(oid) {
        Ok(found) => found,
        Err(e) if e.code() == git2::ErrorCode::NotFound => {
            return Err(SourceError::ReferenceNotFound {
                url: url(),
                reference: format!("commit `{commit}` in the local cache (fetch it first)"),
            });
        }
        Err(e) => return Err(local_error(&e, redactor)),
    };
    let tree = found.tree().map_err(|e| local_error(&e, redactor))?;
    let listing = tree::list(repo, &tree, limits).map_err(|err| match err {
        tree::TreeError::Refused(path, refusal) => SourceError::Refused {
            url: url(),
            commit: commit.to_owned(),
            path,
            refusal,
        },
        tree::TreeError::Git(e) => local_error(&e, redactor),
    })?;

    fs::create_dir_all(snapshots_dir)
        .map_err(io(format!("creating {}", snapshots_dir.display())))?;
    let tmp = snapshots_dir.join(tmp_name(commit));
    fs::create_dir(&tmp).map_err(io(format!("creating {}", tmp.display())))?;
    let result = write_entries(repo, &tmp, &listing.entries, redactor);
    if let Err(err) = result {
        let _ = remove_tree(&tmp);
        return Err(err);
    }
    let files = listing
        .entries
        .iter()
        .filter(|e| !matches!(e.kind, Kind::Dir))
        .count();
    match fs::rename(&tmp, &target) {
        Ok(()) => Ok(Written {
            path: target,
            reused: false,
            files,
            bytes: listing.bytes,
        }),
        // Another writer finished the same commit first; theirs is as good as ours.
        Err(_) if target.is_dir() => {
            let _ = remove_tree(&tmp);
            Ok(Written {
                path: target,
                reused: true,
                files,
                bytes: listing.bytes,
            })
        }
        Err(source) => {
            let _ = remove_tree(&tmp);
            Err(io(format!("renaming into {}", target.display()))(source))
        }
    }
}

fn tmp_name(commit: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{TMP_PREFIX}{commit}-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Writes files, directories and symlinks, then makes everything read-only.
fn write_entries(
    repo: &Repository,
    root: &Path,
    entries: &[tree::Entry],
    redactor: &Redactor,
) -> Result<(), SourceError> {
    let io = |path: &Path| {
        let url = redactor.display_url().to_owned();
        let context = format!("writing {}", path.display());
        move |source| SourceError::Io {
            url,
            context,
            source,
        }
    };
    for entry in entries {
        let path = root.join(&entry.path);
        match &entry.kind {
            Kind::Dir => fs::create_dir(&path).map_err(io(&path))?,
            Kind::File { oid, executable } => {
                let blob = repo
                    .find_blob(*oid)
                    .map_err(|e| local_error(&e, redactor))?;
                fs::write(&path, blob.content()).map_err(io(&path))?;
                let mode = if *executable { 0o555 } else { 0o444 };
                fs::set_permissions(&path, fs::Permissions::from_mode(mode)).map_err(io(&path))?;
            }
            Kind::Symlink { target } => symlink(target, &path).map_err(io(&path))?,
        }
    }
    // Children first, so no directory is read-only while something is still written in it.
    for entry in entries.iter().rev() {
        if matches!(entry.kind, Kind::Dir) {
            let path = root.join(&entry.path);
            fs::set_permissions(&path, fs::Permissions::from_mode(0o555)).map_err(io(&path))?;
        }
    }
    fs::set_permissions(root, fs::Permissions::from_mode(0o555)).map_err(io(root))?;
    Ok(())
}

/// Marks a snapshot as recently used (pruning keeps the most recently used).
fn touch(dir: &Path) {
    if let Ok(file) = fs::File::open(dir) {
        let _ = file.set_modified(SystemTime::now());
    }
}

/// Removes all but the `keep` most recently used snapshots, never one in `protect`, and
/// temporary directories left over from crashes. Returns how many snapshots were removed.
pub(crate) fn prune(snapshots_dir: &Path, keep: usize, protect: &HashSet<String>) -> usize {
    let Ok(read) = fs::read_dir(snapshots_dir) else {
        return 0;
    };
    let mut complete = Vec::new();
    for entry in read.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(meta) = entry.metadata() else { continue };
        let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        if name.starts_with(TMP_PREFIX) {
            let age = SystemTime::now()
                .duration_since(modified)
                .unwrap_or_default();
            if age > STALE_TMP {
                let _ = remove_tree(&entry.path());
            }
        } else if meta.is_dir() && is_full_commit_id(&name) {
            complete.push((modified, name, entry.path()));
        }
    }
    complete.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let mut removed = 0;
    for (_, name, path) in complete.into_iter().skip(keep) {
        if protect.contains(&name) {
            continue;
        }
        match remove_tree(&path) {
            Ok(()) => removed += 1,
            Err(err) => {
                tracing::warn!(path = %path.display(), error = %err, "cannot remove old snapshot")
            }
        }
    }
    removed
}

/// Removes a read-only tree: directories are made writable first.
pub(crate) fn remove_tree(path: &Path) -> std::io::Result<()> {
    make_writable(path)?;
    fs::remove_dir_all(path)
}

fn make_writable(path: &Path) -> std::io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    if meta.is_dir() {
        fs::set_permissions(path, fs::Permissions::from_mode(0o755))?;
        for entry in fs::read_dir(path)? {
            make_writable(&entry?.path())?;
        }
    }
    Ok(())
}
