//! Where the fleet repo comes from: a git remote fetched into a local cache and
//! materialised as read-only snapshots ([`GitSource`]), or a local directory watched for
//! changes ([`watch`]).
//!
//! The git side never uses a worktree: a [`Revision`] is resolved from the remote's
//! advertised refs and a [`Snapshot`] is written from the object database, so nothing
//! uncommitted can leak into what drover reconciles. `docs/source.md` describes the cache
//! layout, authentication and what is refused.

mod classify;
mod error;
mod git;
mod lock;
mod snapshot;
mod tree;
mod watch;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::credentials::Secret;

pub use crate::redact::strip_credentials;
pub use error::{Refusal, SourceError};
pub use git::GitSource;
pub use snapshot::Snapshot;
pub use watch::{DirWatcher, WatchError, WatchEvent, watch};

/// What to follow on the remote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitReference {
    /// The tip of a branch (`refs/heads/<name>`); moves as the branch moves.
    Branch(String),
    /// A tag (`refs/tags/<name>`), annotated or lightweight.
    Tag(String),
    /// A fixed commit, by full id or a prefix of at least 7 hex digits.
    Commit(String),
}

impl fmt::Display for GitReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Branch(name) => write!(f, "branch `{name}`"),
            Self::Tag(name) => write!(f, "tag `{name}`"),
            Self::Commit(id) => write!(f, "commit `{id}`"),
        }
    }
}

/// How to authenticate to the remote. Values come from `Secret`s resolved by the caller
/// (see [`crate::credentials::resolve`]) and never appear in errors or logs.
#[derive(Debug, Clone, Default)]
pub enum GitAuth {
    /// No credentials (public repositories, `file://`, `git://`).
    #[default]
    None,
    /// An HTTPS token, sent as basic auth with the user `x-access-token`, as GitHub expects
    /// for App installation tokens and personal access tokens.
    Token(Secret),
    /// An SSH private key (PEM or OpenSSH format) for `ssh://` and `user@host:path` URLs.
    SshKey {
        /// The private key text.
        private_key: Secret,
        /// The key's passphrase, if it has one.
        passphrase: Option<Secret>,
    },
}

impl GitAuth {
    /// The redactor of a remote: its URL shown without credentials, and every secret of
    /// this auth masked (an SSH key line by line, since a message may quote part of it).
    pub(crate) fn redactor(&self, raw_url: &str) -> crate::redact::Redactor {
        let mut r = crate::redact::Redactor::new().with_url(raw_url);
        match self {
            GitAuth::None => {}
            GitAuth::Token(token) => r.know(token.expose()),
            GitAuth::SshKey {
                private_key,
                passphrase,
            } => {
                r.know(private_key.expose());
                for line in private_key.expose().lines().map(str::trim) {
                    if line.len() >= 8 && !line.starts_with("-----") {
                        r.know(line);
                    }
                }
                if let Some(p) = passphrase {
                    r.know(p.expose());
                }
            }
        }
        r
    }
}

/// Everything a [`GitSource`] needs. Build it with [`GitSourceConfig::new`] and override
/// fields with struct update syntax.
#[derive(Debug, Clone)]
pub struct GitSourceConfig {
    /// The remote URL: `https://`, `http://`, `ssh://`, `user@host:path`, `git://` or
    /// `file://`. Credentials embedded in it are stripped from every message.
    pub url: String,
    /// What to follow.
    pub reference: GitReference,
    /// Cache directory owned by this source: the bare repository and the snapshots.
    pub cache_dir: PathBuf,
    /// Credentials.
    pub auth: GitAuth,
    /// Deadline of one fetch, connection included.
    pub timeout: Duration,
    /// How many snapshots to keep on disk (snapshots still held by the process are kept
    /// in addition).
    pub keep_snapshots: usize,
    /// Largest total size of the files of one snapshot, in bytes.
    pub max_snapshot_bytes: u64,
    /// Largest number of tree entries (files, directories, symlinks) of one snapshot.
    pub max_snapshot_entries: usize,
}

impl GitSourceConfig {
    /// A configuration with no credentials and the default limits: a 60 s fetch timeout,
    /// 5 snapshots kept, 64 MiB and 20 000 entries per snapshot.
    pub fn new(
        url: impl Into<String>,
        reference: GitReference,
        cache_dir: impl Into<PathBuf>,
    ) -> Self {
        Self {
            url: url.into(),
            reference,
            cache_dir: cache_dir.into(),
            auth: GitAuth::None,
            timeout: Duration::from_secs(60),
            keep_snapshots: 5,
            max_snapshot_bytes: 64 * 1024 * 1024,
            max_snapshot_entries: 20_000,
        }
    }
}

/// A resolved commit of the fleet repo.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Revision {
    /// The full commit id (lowercase hex).
    pub commit: String,
    /// The first line of the commit message.
    pub summary: String,
}

impl Revision {
    /// The first 12 hex digits of the commit id.
    pub fn short(&self) -> &str {
        &self.commit[..self.commit.len().min(12)]
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.summary.is_empty() {
            f.write_str(self.short())
        } else {
            write!(f, "{} ({})", self.short(), self.summary)
        }
    }
}
