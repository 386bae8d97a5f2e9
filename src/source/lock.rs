//! Exclusive use of a cache across processes: an advisory lock on `<repo_dir>.lock`,
//! held for each fetch and snapshot. Holding it also makes it safe to delete the
//! `*.lock` files a crashed git process left in the repository, which would otherwise
//! make every later fetch fail.

use std::fs::{self, File, TryLockError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The held lock; released on drop.
#[derive(Debug)]
pub(crate) struct CacheLock {
    _file: File,
}

/// Why the lock was not taken.
#[derive(Debug)]
pub(crate) enum LockError {
    /// Another process held it until the deadline.
    Busy,
    /// The lock file cannot be opened or locked.
    Io(std::io::Error),
}

/// Takes the lock on `repo_dir`, waiting at most until `deadline`.
pub(crate) fn acquire(repo_dir: &Path, deadline: Instant) -> Result<CacheLock, LockError> {
    let path = lock_path(repo_dir);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(LockError::Io)?;
    }
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(LockError::Io)?;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(CacheLock { _file: file }),
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(TryLockError::WouldBlock) => return Err(LockError::Busy),
            Err(TryLockError::Error(err)) => return Err(LockError::Io(err)),
        }
    }
}

fn lock_path(repo_dir: &Path) -> PathBuf {
    let mut name = repo_dir.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    repo_dir.with_file_name(name)
}

/// Removes `*.lock` files under `repo_dir` (refs, packed-refs, config, HEAD). Only call
/// while holding the [`CacheLock`]: then no live git process of drover owns them.
/// Returns how many were removed.
pub(crate) fn remove_stale_git_locks(repo_dir: &Path, _held: &CacheLock) -> usize {
    fn walk(dir: &Path, depth: usize, removed: &mut usize) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() && depth < 16 && entry.file_name() != "objects" {
                walk(&path, depth + 1, removed);
            } else if kind.is_file()
                && path.extension().is_some_and(|e| e == "lock")
                && fs::remove_file(&path).is_ok()
            {
                tracing::warn!(path = %path.display(), "removed a stale git lock file");
                *removed += 1;
            }
        }
    }
    let mut removed = 0;
    walk(repo_dir, 0, &mut removed);
    removed
}
