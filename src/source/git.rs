//! [`GitSource`]: a bare cache of one remote, fetched on demand, resolved to a
//! [`Revision`], and materialised as [`Snapshot`]s. All libgit2 work runs in
//! `spawn_blocking`, and each blocking task opens its own `Repository`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once, Weak};
use std::time::{Duration, Instant};

use git2::{
    AutotagOption, Cred, CredentialType, FetchOptions, ObjectType, Oid, RemoteCallbacks, Repository,
};
use tracing::Instrument;

use super::classify::{Observed, local_error, network_error};
use super::error::SourceError;
use super::lock::{self, CacheLock, LockError};
use super::snapshot::{self, Snapshot, SnapshotInner};
use super::tree::Limits;
use super::{GitAuth, GitReference, GitSourceConfig, Revision};
use crate::redact::{Redactor, host_of};

/// The user name GitHub expects with an installation or personal access token.
const TOKEN_USER: &str = "x-access-token";
/// Deepest directory nesting of a snapshot.
const MAX_DEPTH: usize = 64;
/// Longest wait for another process's snapshot of the same cache.
const LOCK_WAIT: Duration = Duration::from_secs(60);
/// Extra time granted to a blocking fetch past its deadline before giving up on it.
const GRACE: Duration = Duration::from_secs(2);

/// A fleet repo on a git remote, cached under [`GitSourceConfig::cache_dir`].
///
/// Cloning is cheap (an `Arc`); clones share the cache and serialise their work on it.
#[derive(Clone)]
pub struct GitSource {
    inner: Arc<Inner>,
}

struct Inner {
    config: GitSourceConfig,
    redactor: Redactor,
    repo_dir: PathBuf,
    snapshots_dir: PathBuf,
    /// One fetch or snapshot at a time on the cache.
    lock: Arc<tokio::sync::Mutex<()>>,
    /// Snapshots handed out and still alive: never pruned.
    live: Mutex<HashMap<String, Weak<SnapshotInner>>>,
}

impl std::fmt::Debug for GitSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitSource")
            .field("url", &self.url_for_display())
            .field("reference", &self.inner.config.reference)
            .field("repo_dir", &self.inner.repo_dir)
            .finish_non_exhaustive()
    }
}

impl GitSource {
    /// Checks the configuration; does no I/O. The cache is created by the first fetch.
    pub fn new(config: GitSourceConfig) -> Result<Self, SourceError> {
        let redactor = config.auth.redactor(&config.url);
        let invalid = |reason: String| SourceError::InvalidConfig {
            url: redactor.display_url().to_owned(),
            reason,
        };
        if config.url.trim().is_empty() {
            return Err(invalid("the URL is empty".into()));
        }
        check_reference(&config.reference).map_err(|e| invalid(e.to_string()))?;
        if config.timeout.is_zero() {
            return Err(invalid("the timeout must be positive".into()));
        }
        if config.keep_snapshots == 0 {
            return Err(invalid("at least one snapshot must be kept".into()));
        }
        set_libgit2_timeouts(config.timeout);
        let key = Oid::hash_object(ObjectType::Blob, redactor.display_url().as_bytes())
            .map_err(|e| invalid(redactor.text(e.message())))?;
        let repo_dir = config.cache_dir.join(&key.to_string()[..16]);
        let snapshots_dir = config.cache_dir.join("snapshots");
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                redactor,
                repo_dir,
                snapshots_dir,
                lock: Arc::default(),
                live: Mutex::default(),
            }),
        })
    }

    /// The remote URL without credentials, for logs, status pages and errors.
    pub fn url_for_display(&self) -> &str {
        self.inner.redactor.display_url()
    }

    /// What this source follows.
    pub fn reference(&self) -> &GitReference {
        &self.inner.config.reference
    }

    /// The bare repository cache: `<cache_dir>/<first 16 hex of the URL's hash>`.
    pub fn repo_dir(&self) -> &Path {
        &self.inner.repo_dir
    }

    /// Where snapshots are written: `<cache_dir>/snapshots`.
    pub fn snapshots_dir(&self) -> &Path {
        &self.inner.snapshots_dir
    }

    /// Fetches the reference from the remote (creating the cache on first use) and
    /// resolves it to a commit. A [`GitReference::Commit`] already in the cache is
    /// resolved without contacting the remote.
    pub async fn fetch(&self) -> Result<Revision, SourceError> {
        let span = tracing::info_span!(
            "git_fetch",
            url = %self.url_for_display(),
            reference = %self.inner.config.reference,
            commit = tracing::field::Empty,
        );
        let result = self.fetch_inner().instrument(span.clone()).await;
        match &result {
            Ok(rev) => {
                span.record("commit", rev.commit.as_str());
                span.in_scope(|| tracing::info!(revision = %rev, "fetched"));
            }
            Err(err) => {
                span.in_scope(|| tracing::warn!(error = %err, kind = err.label(), "fetch failed"))
            }
        }
        result
    }

    async fn fetch_inner(&self) -> Result<Revision, SourceError> {
        let timeout = self.inner.config.timeout;
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + timeout;
        let timed_out = || SourceError::Unreachable {
            url: self.url_for_display().to_owned(),
            reason: format!("timed out after {}s", timeout.as_secs_f32()),
        };
        let guard = tokio::time::timeout_at(deadline, self.inner.lock.clone().lock_owned())
            .await
            .map_err(|_| timed_out())?;
        let cancel = Arc::new(AtomicBool::new(false));
        let inner = self.inner.clone();
        let cancel_task = cancel.clone();
        let work = blocking(self.url_for_display(), move || {
            let _guard = guard;
            fetch_blocking(&inner, started + timeout, &cancel_task)
        });
        match tokio::time::timeout_at(deadline + GRACE, work).await {
            Ok(result) => result,
            Err(_) => {
                cancel.store(true, Ordering::Relaxed);
                Err(timed_out())
            }
        }
    }

    /// Materialises the tree of `revision` under `<cache_dir>/snapshots/<commit>/`
    /// (reusing it when it is already there) and prunes old snapshots. The commit must
    /// be in the cache, i.e. returned by an earlier [`GitSource::fetch`]; no network is
    /// used, so a snapshot of a fetched revision works while the remote is down.
    pub async fn snapshot(&self, revision: &Revision) -> Result<Snapshot, SourceError> {
        let span = tracing::info_span!(
            "git_snapshot",
            url = %self.url_for_display(),
            commit = %revision.commit,
        );
        self.snapshot_inner(revision).instrument(span).await
    }

    async fn snapshot_inner(&self, revision: &Revision) -> Result<Snapshot, SourceError> {
        if let Some(live) = self.live_snapshot(&revision.commit) {
            return Ok(live);
        }
        let guard = self.inner.lock.clone().lock_owned().await;
        let mut protect: HashSet<String> = self.live_commits();
        protect.insert(revision.commit.clone());
        let inner = self.inner.clone();
        let commit = revision.commit.clone();
        let written = blocking(self.url_for_display(), move || {
            let _guard = guard;
            let _lock = lock_cache(&inner, Instant::now() + inner.config.timeout.max(LOCK_WAIT))?;
            let repo = open_existing(&inner)?;
            let limits = Limits {
                max_bytes: inner.config.max_snapshot_bytes,
                max_entries: inner.config.max_snapshot_entries,
                max_depth: MAX_DEPTH,
            };
            let written = snapshot::materialize(
                &repo,
                &commit,
                &inner.snapshots_dir,
                limits,
                &inner.redactor,
            )?;
            let removed =
                snapshot::prune(&inner.snapshots_dir, inner.config.keep_snapshots, &protect);
            tracing::info!(
                path = %written.path.display(),
                reused = written.reused,
                files = written.files,
                bytes = written.bytes,
                pruned = removed,
                "snapshot ready"
            );
            Ok(written)
        })
        .await?;
        let snapshot = Snapshot::new(written.path, revision.clone());
        let mut live = self.inner.live.lock().unwrap_or_else(|e| e.into_inner());
        live.retain(|_, weak| weak.strong_count() > 0);
        live.insert(revision.commit.clone(), snapshot.downgrade());
        Ok(snapshot)
    }

    fn live_snapshot(&self, commit: &str) -> Option<Snapshot> {
        let live = self.inner.live.lock().unwrap_or_else(|e| e.into_inner());
        live.get(commit)
            .and_then(Snapshot::upgrade)
            .filter(|s| s.path().is_dir())
    }

    fn live_commits(&self) -> HashSet<String> {
        let live = self.inner.live.lock().unwrap_or_else(|e| e.into_inner());
        live.iter()
            .filter(|(_, weak)| weak.strong_count() > 0)
            .map(|(commit, _)| commit.clone())
            .collect()
    }
}

/// Runs `work` on the blocking pool, inside the caller's span and tracing subscriber.
async fn blocking<T: Send + 'static>(
    url: &str,
    work: impl FnOnce() -> Result<T, SourceError> + Send + 'static,
) -> Result<T, SourceError> {
    let span = tracing::Span::current();
    let dispatch = tracing::dispatcher::get_default(Clone::clone);
    let task = tokio::task::spawn_blocking(move || {
        tracing::dispatcher::with_default(&dispatch, || span.in_scope(work))
    });
    match task.await {
        Ok(result) => result,
        Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
        Err(_) => Err(SourceError::Io {
            url: url.to_owned(),
            context: "running git work".into(),
            source: std::io::Error::other("the task was cancelled (runtime shutting down)"),
        }),
    }
}

fn check_reference(reference: &GitReference) -> Result<(), BadReference> {
    match reference {
        GitReference::Branch(name)
            if git2::Reference::is_valid_name(&format!("refs/heads/{name}")) =>
        {
            Ok(())
        }
        GitReference::Tag(name) if git2::Reference::is_valid_name(&format!("refs/tags/{name}")) => {
            Ok(())
        }
        GitReference::Commit(id)
            if (7..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            Ok(())
        }
        GitReference::Commit(id) => Err(BadReference::Commit(id.clone())),
        other => Err(BadReference::Name(other.to_string())),
    }
}

/// A branch, tag or commit that git would refuse.
#[derive(Debug, thiserror::Error)]
enum BadReference {
    #[error("`{0}` is not a commit id (7 to 64 hex digits)")]
    Commit(String),
    #[error("{0} is not a valid git reference name")]
    Name(String),
}

/// libgit2's socket timeouts are process-wide; they are set once, from the first source.
fn set_libgit2_timeouts(timeout: Duration) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: these only store an integer in libgit2's global settings; `Once` keeps
        // them from racing with each other.
        unsafe {
            let _ = git2::opts::set_server_connect_timeout_in_milliseconds(ms.min(30_000));
            let _ = git2::opts::set_server_timeout_in_milliseconds(ms);
        }
    });
}

/// Takes the cross-process lock of the cache and clears what a crashed writer left.
fn lock_cache(inner: &Inner, deadline: Instant) -> Result<CacheLock, SourceError> {
    let io = |source| SourceError::Io {
        url: inner.redactor.display_url().to_owned(),
        context: format!("locking the cache {}", inner.repo_dir.display()),
        source,
    };
    let held = lock::acquire(&inner.repo_dir, deadline).map_err(|err| match err {
        LockError::Busy => io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "another process holds it",
        )),
        LockError::Io(source) => io(source),
    })?;
    lock::remove_stale_git_locks(&inner.repo_dir, &held);
    Ok(held)
}

fn open_existing(inner: &Inner) -> Result<Repository, SourceError> {
    Repository::open_bare(&inner.repo_dir).map_err(|e| {
        if e.code() == git2::ErrorCode::NotFound {
            SourceError::ReferenceNotFound {
                url: inner.redactor.display_url().to_owned(),
                reference: "commit in the local cache (nothing was fetched yet)".into(),
            }
        } else {
            local_error(&e, &inner.redactor)
        }
    })
}

/// Opens the cache, or creates it; a cache that cannot be opened is discarded.
fn open_or_init(inner: &Inner) -> Result<Repository, SourceError> {
    let io = |context: &str| {
        let url = inner.redactor.display_url().to_owned();
        let context = format!("{context} {}", inner.repo_dir.display());
        move |source| SourceError::Io {
            url,
            context,
            source,
        }
    };
    if inner.repo_dir.exists() {
        match Repository::open_bare(&inner.repo_dir) {
            Ok(repo) => return Ok(repo),
            Err(err) => {
                tracing::warn!(
                    path = %inner.repo_dir.display(),
                    error = %inner.redactor.text(err.message()),
                    "cached repository is unreadable; starting a new one"
                );
                std::fs::remove_dir_all(&inner.repo_dir).map_err(io("removing"))?;
            }
        }
    }
    std::fs::create_dir_all(&inner.config.cache_dir).map_err(io("creating the cache for"))?;
    Repository::init_bare(&inner.repo_dir).map_err(|e| SourceError::Io {
        url: inner.redactor.display_url().to_owned(),
        context: format!("creating {}", inner.repo_dir.display()),
        source: std::io::Error::other(inner.redactor.text(e.message())),
    })
}

fn revision_of(commit: &git2::Commit<'_>) -> Revision {
    Revision {
        commit: commit.id().to_string(),
        summary: String::from_utf8_lossy(commit.summary_bytes().unwrap_or_default()).into_owned(),
    }
}

fn refspecs(reference: &GitReference) -> Vec<String> {
    match reference {
        GitReference::Branch(name) => {
            vec![format!("+refs/heads/{name}:refs/remotes/origin/{name}")]
        }
        GitReference::Tag(name) => vec![format!("+refs/tags/{name}:refs/tags/{name}")],
        // Servers need not serve arbitrary commits by id: fetch every branch and tag.
        GitReference::Commit(_) => vec![
            "+refs/heads/*:refs/remotes/origin/*".into(),
            "+refs/tags/*:refs/tags/*".into(),
        ],
    }
}

fn fetch_blocking(
    inner: &Inner,
    deadline: Instant,
    cancel: &AtomicBool,
) -> Result<Revision, SourceError> {
    let config = &inner.config;
    let redactor = &inner.redactor;
    let url = redactor.display_url().to_owned();
    let _lock = lock_cache(inner, deadline)?;
    let repo = open_or_init(inner)?;
    if let GitReference::Commit(prefix) = &config.reference
        && let Ok(commit) = repo.find_commit_by_prefix(prefix)
    {
        tracing::debug!("commit already cached; not contacting the remote");
        return Ok(revision_of(&commit));
    }
    if matches!(config.auth, GitAuth::Token(_)) && config.url.starts_with("http://") {
        tracing::warn!(url = %url, "sending a token over plain http");
    }
    let observed = Observed::default();
    let mut remote = repo
        .remote_anonymous(&config.url)
        .map_err(|e| network_error(&e, &observed, redactor, config.timeout))?;
    let mut options = FetchOptions::new();
    options
        .remote_callbacks(callbacks(
            &config.auth,
            &config.url,
            redactor,
            &observed,
            deadline,
            cancel,
        ))
        .download_tags(AutotagOption::None)
        .update_fetchhead(false);
    let started = Instant::now();
    remote
        .fetch(&refspecs(&config.reference), Some(&mut options), None)
        .map_err(|e| network_error(&e, &observed, redactor, config.timeout))?;
    drop(options);
    let stats = remote.stats();
    tracing::debug!(
        objects = stats.received_objects(),
        bytes = stats.received_bytes(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "fetch transferred"
    );
    let not_found = || SourceError::ReferenceNotFound {
        url: url.clone(),
        reference: config.reference.to_string(),
    };
    let advertised_name = match &config.reference {
        GitReference::Branch(name) => Some(format!("refs/heads/{name}")),
        GitReference::Tag(name) => Some(format!("refs/tags/{name}")),
        GitReference::Commit(_) => None,
    };
    let commit = match advertised_name {
        Some(name) => {
            let oid = advertised(&remote, &repo, &name).ok_or_else(not_found)?;
            let object = repo
                .find_object(oid, None)
                .map_err(|_| SourceError::Corrupt {
                    url: url.clone(),
                    reason: format!("the remote advertised {oid} for {name} but did not send it"),
                })?;
            object
                .peel_to_commit()
                .map_err(|_| SourceError::ReferenceNotFound {
                    url: url.clone(),
                    reference: format!("{} (it does not point to a commit)", config.reference),
                })?
        }
        None => match &config.reference {
            GitReference::Commit(prefix) => {
                repo.find_commit_by_prefix(prefix)
                    .map_err(|e| match e.code() {
                        git2::ErrorCode::NotFound => not_found(),
                        git2::ErrorCode::Ambiguous => SourceError::InvalidConfig {
                            url: url.clone(),
                            reason: format!("commit prefix `{prefix}` is ambiguous"),
                        },
                        _ => local_error(&e, redactor),
                    })?
            }
            _ => unreachable!("branches and tags have an advertised name"),
        },
    };
    Ok(revision_of(&commit))
}

/// The id the remote advertised for `name` during the fetch. If the transport kept no
/// list, the ref the fetch just wrote is used.
fn advertised(remote: &git2::Remote<'_>, repo: &Repository, name: &str) -> Option<Oid> {
    match remote.list() {
        Ok(heads) => heads.iter().find(|h| h.name() == name).map(|h| h.oid()),
        Err(_) => {
            let local = name
                .strip_prefix("refs/heads/")
                .map_or_else(|| name.to_owned(), |b| format!("refs/remotes/origin/{b}"));
            repo.refname_to_id(&local).ok()
        }
    }
}

fn callbacks<'a>(
    auth: &'a GitAuth,
    url: &'a str,
    redactor: &'a Redactor,
    observed: &'a Observed,
    deadline: Instant,
    cancel: &'a AtomicBool,
) -> RemoteCallbacks<'a> {
    let expired = move || {
        let expired = cancel.load(Ordering::Relaxed) || Instant::now() >= deadline;
        if expired {
            observed.timed_out.set(true);
        }
        expired
    };
    let mut callbacks = RemoteCallbacks::new();
    callbacks.credentials(move |request_url, user_from_url, allowed| {
        if expired() {
            return Err(git2::Error::from_str("deadline passed"));
        }
        credentials(
            auth,
            url,
            redactor,
            observed,
            request_url,
            user_from_url,
            allowed,
        )
    });
    callbacks.transfer_progress(move |_| !expired());
    callbacks.sideband_progress(move |_| !expired());
    callbacks
}

/// Answers libgit2's request for credentials. A secret is offered once; a second
/// request means the remote refused it.
fn credentials(
    auth: &GitAuth,
    url: &str,
    redactor: &Redactor,
    observed: &Observed,
    request_url: &str,
    user_from_url: Option<&str>,
    allowed: CredentialType,
) -> Result<Cred, git2::Error> {
    let offer = || {
        let n = observed.offered.get() + 1;
        observed.offered.set(n);
        if n > 1 {
            tracing::debug!(url = %redactor.display_url(), "credentials rejected");
            Err(git2::Error::from_str("the remote rejected the credentials"))
        } else {
            Ok(())
        }
    };
    let missing = |why: &str| {
        observed.missing.set(true);
        Err(git2::Error::from_str(why))
    };
    match auth {
        GitAuth::None => missing("the remote asks for credentials; none are configured"),
        GitAuth::Token(token) => {
            if host_of(request_url) != host_of(url) {
                observed.wrong_host.set(true);
                return Err(git2::Error::from_str(
                    "refusing to send credentials to another host",
                ));
            }
            if !allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
                return missing("the remote does not accept a token");
            }
            offer()?;
            tracing::debug!(url = %redactor.display_url(), "sending token");
            Cred::userpass_plaintext(TOKEN_USER, token.expose())
        }
        GitAuth::SshKey {
            private_key,
            passphrase,
        } => {
            let user = user_from_url.unwrap_or("git");
            if allowed.contains(CredentialType::USERNAME) {
                return Cred::username(user);
            }
            if !allowed.intersects(CredentialType::SSH_KEY | CredentialType::SSH_MEMORY) {
                return missing("the remote does not accept an SSH key");
            }
            offer()?;
            tracing::debug!(url = %redactor.display_url(), user, "sending SSH key");
            Cred::ssh_key_from_memory(
                user,
                None,
                private_key.expose(),
                passphrase.as_ref().map(|p| p.expose()),
            )
            .map_err(|e| git2::Error::from_str(&redactor.text(e.message())))
        }
    }
}
