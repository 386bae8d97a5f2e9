//! The fleet-repo source against real git: repositories made with the `git` CLI and
//! served over `file://`, `git://` (git daemon) and smart HTTP with token auth
//! (git http-backend), plus the local directory watcher.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::git_server::{Fixture, GitDaemon, HttpGitServer, free_port, git};
use drover::credentials::Secret;
use drover::fleet::{LoadOptions, validate_dir};
use drover::source::{
    GitAuth, GitReference, GitSource, GitSourceConfig, Refusal, Revision, SourceError, watch,
};

const TOKEN: &str = "ghs_TestTokenDoNotLeak1234567890";

fn branch(name: &str) -> GitReference {
    GitReference::Branch(name.into())
}

fn source(url: &str, reference: GitReference, cache: &Path) -> GitSource {
    GitSource::new(GitSourceConfig {
        timeout: Duration::from_secs(30),
        ..GitSourceConfig::new(url, reference, cache)
    })
    .unwrap()
}

fn with_token(url: &str, cache: &Path, token: &str) -> GitSource {
    GitSource::new(GitSourceConfig {
        auth: GitAuth::Token(Secret::new(token)),
        timeout: Duration::from_secs(30),
        ..GitSourceConfig::new(url, branch("main"), cache)
    })
    .unwrap()
}

/// Every regular file and symlink under `dir`, relative path → content (or link target).
fn read_tree(dir: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let relative = path.strip_prefix(root).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                out.insert(relative, format!("-> {}", target.display()));
            } else if meta.is_dir() {
                walk(root, &path, out);
            } else {
                out.insert(relative, std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// The committed tree of `rev` in `repo`, as `git` itself reports it.
fn git_tree(repo: &Path, rev: &str) -> BTreeMap<String, String> {
    git(repo, &["ls-tree", "-r", rev])
        .lines()
        .map(|line| {
            let (meta, path) = line.split_once('\t').unwrap();
            let mut fields = meta.split_whitespace();
            let mode = fields.next().unwrap();
            let id = fields.nth(1).unwrap();
            let content = git(repo, &["cat-file", "blob", id]);
            let content = if mode == "120000" {
                format!("-> {content}")
            } else {
                format!("{content}\n")
            };
            (path.to_owned(), content)
        })
        .collect()
}

#[tokio::test]
async fn file_remote_fetch_matches_rev_parse_and_follows_pushes() {
    let fx = Fixture::new();
    let src = source(&fx.file_url(), branch("main"), &fx.cache("a"));

    let first = src.fetch().await.unwrap();
    assert_eq!(first.commit, fx.rev_parse("HEAD"));
    assert_eq!(first.summary, "first");
    assert!(
        src.repo_dir().join("objects").is_dir(),
        "a bare cache was created"
    );
    assert!(src.repo_dir().starts_with(fx.cache("a")));

    // Not pushed yet: the remote still has the first commit.
    fx.write("sites/a.yaml", "kind: Site\n");
    let second_id = fx.commit("second");
    assert_eq!(src.fetch().await.unwrap(), first);

    fx.push();
    let second = src.fetch().await.unwrap();
    assert_eq!(second.commit, second_id);
    assert_eq!(second.summary, "second");
    assert_ne!(second, first);
}

#[tokio::test]
async fn snapshot_is_exactly_the_committed_tree_never_the_worktree() {
    let fx = Fixture::new();
    fx.write("sites/a.yaml", "kind: Site\nname: a\n");
    fx.write("runners/cpu.yml", "kind: RunnerSet\n");
    fx.write("tools/check.sh", "#!/bin/sh\n");
    std::fs::set_permissions(
        fx.work.join("tools/check.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("sites/a.yaml", fx.work.join("alias.yaml")).unwrap();
    let committed = fx.commit("tree");
    // Uncommitted changes in the repository that is the remote: a modified tracked file,
    // a new file, and a staged-but-uncommitted file.
    fx.write("sites/a.yaml", "kind: Site\nname: DIRTY\n");
    fx.write("untracked.yaml", "dirty: true\n");
    fx.write("staged.yaml", "staged: true\n");
    git(&fx.work, &["add", "staged.yaml"]);

    let url = format!("file://{}", fx.work.display());
    let src = source(&url, branch("main"), &fx.cache("s"));
    let rev = src.fetch().await.unwrap();
    assert_eq!(rev.commit, committed);
    let snap = src.snapshot(&rev).await.unwrap();

    assert_eq!(snap.path(), src.snapshots_dir().join(&committed));
    assert_eq!(snap.revision(), &rev);
    let on_disk = read_tree(snap.path());
    assert_eq!(on_disk, git_tree(&fx.work, &committed));
    assert_eq!(on_disk["sites/a.yaml"], "kind: Site\nname: a\n");
    assert!(!on_disk.contains_key("untracked.yaml"));
    assert!(!on_disk.contains_key("staged.yaml"));
    assert_eq!(on_disk["alias.yaml"], "-> sites/a.yaml");

    // Read-only: no write bits anywhere; the executable bit is kept.
    let mode = |p: &str| {
        std::fs::metadata(snap.path().join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("sites/a.yaml"), 0o444);
    assert_eq!(mode("tools/check.sh"), 0o555);
    assert_eq!(mode("sites"), 0o555);
    assert_eq!(mode("."), 0o555);
}

#[tokio::test]
async fn the_example_fleet_validates_from_a_snapshot() {
    let fx = Fixture::new();
    std::fs::remove_file(fx.work.join("fleet.yaml")).unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("fleet");
    copy_dir(&example, &fx.work);
    fx.commit("example fleet");
    fx.push();

    let src = source(&fx.file_url(), branch("main"), &fx.cache("v"));
    let rev = src.fetch().await.unwrap();
    let snap = src.snapshot(&rev).await.unwrap();
    let validation = validate_dir(snap.path(), &LoadOptions::default()).unwrap();
    assert!(validation.is_valid(), "{:?}", validation.diagnostics);
    let direct = validate_dir(&example, &LoadOptions::default()).unwrap();
    assert_eq!(validation.files, direct.files);
    assert_eq!(validation.documents, direct.documents);
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[tokio::test]
async fn tags_and_fixed_commits_resolve_and_do_not_move() {
    let fx = Fixture::new();
    let first = fx.rev_parse("HEAD");
    git(&fx.work, &["tag", "-a", "v1", "-m", "release one"]);
    git(&fx.work, &["tag", "light"]);
    fx.write("b.yaml", "b: 1\n");
    let second = fx.commit("second");
    fx.push();

    let annotated = source(
        &fx.file_url(),
        GitReference::Tag("v1".into()),
        &fx.cache("t1"),
    );
    assert_eq!(annotated.fetch().await.unwrap().commit, first);
    let light = source(
        &fx.file_url(),
        GitReference::Tag("light".into()),
        &fx.cache("t2"),
    );
    assert_eq!(light.fetch().await.unwrap().commit, first);

    let full = source(
        &fx.file_url(),
        GitReference::Commit(first.clone()),
        &fx.cache("c1"),
    );
    let rev = full.fetch().await.unwrap();
    assert_eq!(rev.commit, first);
    assert_eq!(rev.summary, "first");
    let short = source(
        &fx.file_url(),
        GitReference::Commit(second[..10].to_owned()),
        &fx.cache("c2"),
    );
    assert_eq!(short.fetch().await.unwrap().commit, second);

    // The snapshot of the tag has the tag's tree, not the branch tip's.
    let snap = annotated
        .snapshot(&annotated.fetch().await.unwrap())
        .await
        .unwrap();
    assert!(!snap.path().join("b.yaml").exists());

    // New commits on main move neither the tag nor the fixed commit.
    fx.write("c.yaml", "c: 1\n");
    fx.commit("third");
    fx.push();
    assert_eq!(annotated.fetch().await.unwrap().commit, first);
    assert_eq!(full.fetch().await.unwrap().commit, first);

    // A fixed commit already in the cache resolves with the remote gone.
    std::fs::remove_dir_all(&fx.bare).unwrap();
    assert_eq!(full.fetch().await.unwrap().commit, first);
}

#[tokio::test]
async fn unknown_references_are_reference_not_found() {
    let fx = Fixture::new();
    for reference in [
        branch("nope"),
        GitReference::Tag("v9".into()),
        GitReference::Commit("0123456789abcdef0123456789abcdef01234567".into()),
    ] {
        let src = source(&fx.file_url(), reference.clone(), &fx.cache("n"));
        let err = src.fetch().await.unwrap_err();
        assert!(
            matches!(&err, SourceError::ReferenceNotFound { reference: r, .. } if *r == reference.to_string()),
            "{reference}: {err:?}"
        );
        assert_eq!(err.label(), "reference_not_found");
        assert!(err.to_string().contains(&fx.file_url()), "{err}");
    }

    // A branch deleted on the remote is not found any more, although the cache has it.
    git(&fx.work, &["branch", "feature"]);
    fx.push();
    let src = source(&fx.file_url(), branch("feature"), &fx.cache("f"));
    src.fetch().await.unwrap();
    git(&fx.work, &["push", "-q", "origin", "--delete", "feature"]);
    assert!(matches!(
        src.fetch().await.unwrap_err(),
        SourceError::ReferenceNotFound { .. }
    ));
}

#[tokio::test]
async fn invalid_configuration_is_refused_up_front() {
    let cache = tempfile::tempdir().unwrap();
    for reference in [
        branch("a..b"),
        branch("with space"),
        GitReference::Tag("x~1".into()),
        GitReference::Commit("xyz".into()),
        GitReference::Commit("abc".into()),
    ] {
        let err = GitSource::new(GitSourceConfig::new(
            "file:///x",
            reference.clone(),
            cache.path(),
        ))
        .unwrap_err();
        assert!(
            matches!(err, SourceError::InvalidConfig { .. }),
            "{reference}: {err}"
        );
    }
    let err = GitSource::new(GitSourceConfig::new("", branch("main"), cache.path())).unwrap_err();
    assert_eq!(err.label(), "invalid_config");
}

#[tokio::test]
async fn snapshots_are_reused_and_pruned_but_live_ones_are_kept() {
    let fx = Fixture::new();
    let src = GitSource::new(GitSourceConfig {
        keep_snapshots: 2,
        ..GitSourceConfig::new(fx.file_url(), branch("main"), fx.cache("p"))
    })
    .unwrap();

    let first_rev = src.fetch().await.unwrap();
    let held = src.snapshot(&first_rev).await.unwrap();
    let again = src.snapshot(&first_rev).await.unwrap();
    assert_eq!(held.path(), again.path());
    drop(again);

    let mut revisions = vec![first_rev.clone()];
    for i in 0..4 {
        fx.write(&format!("f{i}.yaml"), &format!("i: {i}\n"));
        fx.commit(&format!("commit {i}"));
        fx.push();
        let rev = src.fetch().await.unwrap();
        // Each snapshot is dropped right away, so only the count limit keeps it.
        src.snapshot(&rev).await.unwrap();
        revisions.push(rev);
    }
    let mut on_disk: Vec<String> = std::fs::read_dir(src.snapshots_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut expected = vec![
        first_rev.commit.clone(),
        revisions[3].commit.clone(),
        revisions[4].commit.clone(),
    ];
    expected.sort();
    assert_eq!(
        on_disk, expected,
        "the two newest plus the one still held; no temp dirs"
    );
    assert!(held.path().join("fleet.yaml").is_file());

    // A pruned snapshot is written again on demand, from the cache.
    let old = src.snapshot(&revisions[1]).await.unwrap();
    assert!(old.path().join("f0.yaml").is_file());
    assert!(!old.path().join("f1.yaml").exists());

    // A revision that was never fetched is not in the cache.
    let unknown = Revision {
        commit: "0".repeat(40),
        summary: String::new(),
    };
    assert!(matches!(
        src.snapshot(&unknown).await.unwrap_err(),
        SourceError::ReferenceNotFound { .. }
    ));
    // Nor can a crafted commit id reach outside the snapshot directory.
    let crafted = Revision {
        commit: "../../etc".into(),
        summary: String::new(),
    };
    assert!(matches!(
        src.snapshot(&crafted).await.unwrap_err(),
        SourceError::InvalidConfig { .. }
    ));
}

async fn refusal_of(fx: &Fixture, name: &str) -> (String, Refusal) {
    fx.push();
    let src = source(&fx.file_url(), branch("main"), &fx.cache(name));
    let rev = src.fetch().await.unwrap();
    let err = src.snapshot(&rev).await.unwrap_err();
    assert!(
        !src.snapshots_dir().join(&rev.commit).exists(),
        "nothing is left behind for a refused commit"
    );
    match err {
        SourceError::Refused { path, refusal, .. } => (path, refusal),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn symlinks_leaving_the_tree_are_refused() {
    let fx = Fixture::new();
    std::fs::create_dir_all(fx.work.join("sites")).unwrap();
    std::os::unix::fs::symlink("../../../etc/passwd", fx.work.join("sites/evil.yaml")).unwrap();
    fx.commit("escape");
    let (path, refusal) = refusal_of(&fx, "l1").await;
    assert_eq!(path, "sites/evil.yaml");
    assert_eq!(
        refusal,
        Refusal::SymlinkEscapes {
            target: "../../../etc/passwd".into()
        }
    );

    let fx = Fixture::new();
    std::os::unix::fs::symlink("/etc/passwd", fx.work.join("abs.yaml")).unwrap();
    fx.commit("absolute");
    let (path, refusal) = refusal_of(&fx, "l2").await;
    assert_eq!(path, "abs.yaml");
    assert!(matches!(refusal, Refusal::SymlinkEscapes { .. }));
    let message = refusal.to_string();
    assert!(
        message.contains("/etc/passwd") && message.contains("outside"),
        "{message}"
    );
}

#[tokio::test]
async fn submodules_are_refused() {
    let fx = Fixture::new();
    let head = fx.rev_parse("HEAD");
    git(
        &fx.work,
        &[
            "update-index",
            "--add",
            "--cacheinfo",
            &format!("160000,{head},vendor/lib"),
        ],
    );
    git(&fx.work, &["commit", "-q", "-m", "submodule"]);
    let (path, refusal) = refusal_of(&fx, "sm").await;
    assert_eq!(path, "vendor/lib");
    assert_eq!(refusal, Refusal::Submodule);
}

#[tokio::test]
async fn snapshot_size_and_entry_limits_are_enforced() {
    let fx = Fixture::new();
    fx.write("big.yaml", &"x".repeat(10_000));
    fx.commit("big");
    fx.push();
    let src = GitSource::new(GitSourceConfig {
        max_snapshot_bytes: 4096,
        ..GitSourceConfig::new(fx.file_url(), branch("main"), fx.cache("big"))
    })
    .unwrap();
    let rev = src.fetch().await.unwrap();
    let err = src.snapshot(&rev).await.unwrap_err();
    assert!(
        matches!(
            &err,
            SourceError::Refused {
                refusal: Refusal::TooLarge { limit: 4096 },
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("4096"), "{err}");

    let src = GitSource::new(GitSourceConfig {
        max_snapshot_entries: 1,
        ..GitSourceConfig::new(fx.file_url(), branch("main"), fx.cache("many"))
    })
    .unwrap();
    let rev = src.fetch().await.unwrap();
    assert!(matches!(
        src.snapshot(&rev).await.unwrap_err(),
        SourceError::Refused {
            refusal: Refusal::TooManyEntries { limit: 1 },
            ..
        }
    ));
}

/// A tracing subscriber for the current thread (and, through the source, its blocking
/// tasks) that records everything at TRACE level.
fn capture_logs() -> (Arc<Mutex<Vec<u8>>>, tracing::subscriber::DefaultGuard) {
    #[derive(Clone)]
    struct Writer(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Writer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Arc::new(Mutex::new(Vec::new()));
    let writer = Writer(buffer.clone());
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    (buffer, tracing::subscriber::set_default(subscriber))
}

#[tokio::test]
async fn http_token_auth_works_and_the_token_never_leaks() {
    let (logs, _guard) = capture_logs();
    let fx = Fixture::new();
    let server = HttpGitServer::start(&fx.root, Some(TOKEN)).await;
    let url = server.url("origin.git");

    let good = with_token(&url, &fx.cache("good"), TOKEN);
    let rev = good.fetch().await.unwrap();
    assert_eq!(rev.commit, fx.rev_parse("HEAD"));
    let snap = good.snapshot(&rev).await.unwrap();
    assert_eq!(read_tree(snap.path()), git_tree(&fx.work, "HEAD"));
    assert!(
        server
            .stats
            .served
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0
    );

    fx.write("new.yaml", "n: 1\n");
    let next = fx.commit("over http");
    fx.push();
    assert_eq!(good.fetch().await.unwrap().commit, next);

    let wrong_token = "ghs_WrongTokenAlsoSecret0987654321";
    let bad = with_token(&url, &fx.cache("bad"), wrong_token);
    let err = bad.fetch().await.unwrap_err();
    assert!(matches!(err, SourceError::AuthFailed { .. }), "{err:?}");
    for text in [err.to_string(), format!("{err:?}"), format!("{bad:?}")] {
        assert!(
            !text.contains(wrong_token) && !text.contains(TOKEN),
            "{text}"
        );
    }
    assert!(
        err.to_string().contains(&url),
        "the error names the remote: {err}"
    );

    let none = source(&url, branch("main"), &fx.cache("none"));
    let err = none.fetch().await.unwrap_err();
    assert!(matches!(err, SourceError::AuthFailed { .. }), "{err:?}");
    assert!(err.to_string().contains("none"), "{err}");

    let logs = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("git_fetch"),
        "the fetch span was logged: {logs}"
    );
    assert!(
        logs.contains("sending token"),
        "credential use was logged: {logs}"
    );
    assert!(
        !logs.contains(TOKEN) && !logs.contains(wrong_token),
        "{logs}"
    );
}

#[tokio::test]
async fn credentials_in_the_url_are_stripped_from_display_and_errors() {
    let fx = Fixture::new();
    let server = HttpGitServer::start(&fx.root, Some(TOKEN)).await;
    let with_userinfo = format!("http://x-access-token:{TOKEN}@{}/origin.git", server.addr);
    let src = source(&with_userinfo, branch("main"), &fx.cache("u"));
    assert_eq!(src.url_for_display(), server.url("origin.git"));
    assert!(!format!("{src:?}").contains(TOKEN));
    // libgit2 uses the URL's userinfo itself; the fetch works, and nothing shows it.
    let rev = src.fetch().await.unwrap();
    assert_eq!(rev.commit, fx.rev_parse("HEAD"));
    server.stop().await;
    let err = src.fetch().await.unwrap_err();
    assert!(matches!(err, SourceError::Unreachable { .. }), "{err:?}");
    assert!(!format!("{err} {err:?}").contains(TOKEN), "{err:?}");
}

#[tokio::test]
async fn git_daemon_remote_over_loopback() {
    let fx = Fixture::new();
    let daemon = GitDaemon::start(&fx.root);
    let src = source(&daemon.url("origin.git"), branch("main"), &fx.cache("d"));
    let rev = src.fetch().await.unwrap();
    assert_eq!(rev.commit, fx.rev_parse("HEAD"));
    fx.write("d.yaml", "d: 1\n");
    let next = fx.commit("daemon");
    fx.push();
    let rev = src.fetch().await.unwrap();
    assert_eq!(rev.commit, next);
    let snap = src.snapshot(&rev).await.unwrap();
    assert_eq!(read_tree(snap.path()), git_tree(&fx.work, &next));
}

#[tokio::test]
async fn an_unreachable_remote_fails_fast_and_the_last_snapshot_stays_usable() {
    let fx = Fixture::new();
    std::fs::remove_file(fx.work.join("fleet.yaml")).unwrap();
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("fleet"),
        &fx.work,
    );
    fx.commit("example fleet");
    fx.push();
    let server = HttpGitServer::start(&fx.root, Some(TOKEN)).await;
    let src = GitSource::new(GitSourceConfig {
        auth: GitAuth::Token(Secret::new(TOKEN)),
        timeout: Duration::from_secs(20),
        ..GitSourceConfig::new(server.url("origin.git"), branch("main"), fx.cache("x"))
    })
    .unwrap();
    let rev = src.fetch().await.unwrap();
    drop(src.snapshot(&rev).await.unwrap());

    server.stop().await;
    let started = Instant::now();
    let err = src.fetch().await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(matches!(err, SourceError::Unreachable { .. }), "{err:?}");
    assert!(err.is_transient());
    assert!(
        elapsed < Duration::from_secs(15),
        "a refused connection took {elapsed:?}"
    );
    assert!(!err.to_string().contains(TOKEN));

    // The last good revision can still be materialised and validated, offline.
    let snap = src.snapshot(&rev).await.unwrap();
    assert!(
        validate_dir(snap.path(), &LoadOptions::default())
            .unwrap()
            .is_valid()
    );

    // A port nobody listens on, from the start.
    let closed = format!("http://127.0.0.1:{}/origin.git", free_port());
    let err = source(&closed, branch("main"), &fx.cache("closed"))
        .fetch()
        .await
        .unwrap_err();
    assert!(matches!(err, SourceError::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().contains(&closed), "{err}");
}

#[tokio::test]
async fn a_silent_server_hits_the_timeout() {
    let fx = Fixture::new();
    // Accepts connections and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let _accepting = std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
        }
    });
    let src = GitSource::new(GitSourceConfig {
        timeout: Duration::from_secs(2),
        ..GitSourceConfig::new(
            format!("http://{addr}/origin.git"),
            branch("main"),
            fx.cache("t"),
        )
    })
    .unwrap();
    let started = Instant::now();
    let err = src.fetch().await.unwrap_err();
    assert!(
        matches!(&err, SourceError::Unreachable { reason, .. } if reason.contains("timed out")),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn ssh_key_material_never_appears_in_errors() {
    let fx = Fixture::new();
    let key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAASECRETKEYMATERIAL\n-----END OPENSSH PRIVATE KEY-----\n";
    let src = GitSource::new(GitSourceConfig {
        auth: GitAuth::SshKey {
            private_key: Secret::new(key),
            passphrase: Some(Secret::new("PassPhraseSecret")),
        },
        timeout: Duration::from_secs(10),
        ..GitSourceConfig::new(
            format!("ssh://git@127.0.0.1:{}/origin.git", free_port()),
            branch("main"),
            fx.cache("ssh"),
        )
    })
    .unwrap();
    let err = src.fetch().await.unwrap_err();
    assert!(matches!(err, SourceError::Unreachable { .. }), "{err:?}");
    let text = format!("{err} {err:?} {src:?}");
    for secret in ["SECRETKEYMATERIAL", "PassPhraseSecret"] {
        assert!(!text.contains(secret), "{text}");
    }
}

#[tokio::test]
async fn a_damaged_cache_is_rebuilt() {
    let fx = Fixture::new();
    let src = source(&fx.file_url(), branch("main"), &fx.cache("r"));
    let rev = src.fetch().await.unwrap();
    // Wreck the cache: no HEAD, no config.
    std::fs::remove_file(src.repo_dir().join("HEAD")).unwrap();
    std::fs::write(src.repo_dir().join("config"), "[[[ not a config").unwrap();
    assert_eq!(src.fetch().await.unwrap(), rev);
    assert!(
        src.snapshot(&rev)
            .await
            .unwrap()
            .path()
            .join("fleet.yaml")
            .is_file()
    );
}

#[tokio::test]
async fn stale_git_lock_files_from_a_crash_do_not_wedge_the_cache() {
    let fx = Fixture::new();
    let src = source(&fx.file_url(), branch("main"), &fx.cache("k"));
    src.fetch().await.unwrap();
    // What a git process killed in the middle of updating refs leaves behind.
    let stale = src.repo_dir().join("refs/remotes/origin/main.lock");
    std::fs::write(&stale, "").unwrap();
    fx.write("k.yaml", "k: 1\n");
    let next = fx.commit("after crash");
    fx.push();
    assert_eq!(src.fetch().await.unwrap().commit, next);
    assert!(!stale.exists());
}

#[tokio::test]
async fn sources_sharing_a_cache_serialise_their_work() {
    let fx = Fixture::new();
    fx.write("sites/a.yaml", "kind: Site\n");
    let head = fx.commit("shared");
    fx.push();
    // Two independent sources (as two processes would be) and a clone of one of them.
    let one = source(&fx.file_url(), branch("main"), &fx.cache("shared"));
    let two = source(&fx.file_url(), branch("main"), &fx.cache("shared"));
    let clone = one.clone();
    let (a, b, c) = tokio::join!(one.fetch(), two.fetch(), clone.fetch());
    let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
    assert!(a.commit == head && b == a && c == a);
    let (x, y) = tokio::join!(one.snapshot(&a), two.snapshot(&a));
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!(x.path(), y.path());
    assert_eq!(read_tree(x.path()), git_tree(&fx.work, &head));
    let names: Vec<_> = std::fs::read_dir(one.snapshots_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        vec![std::ffi::OsString::from(&head)],
        "no temp dirs left"
    );
}

#[test]
fn revisions_display_short_id_and_summary() {
    let rev = Revision {
        commit: "0123456789abcdef0123456789abcdef01234567".into(),
        summary: "add MI300 pool".into(),
    };
    assert_eq!(rev.to_string(), "0123456789ab (add MI300 pool)");
    assert_eq!(rev.short(), "0123456789ab");
}

// ---- local directory mode ----

async fn next_event(
    rx: &mut tokio::sync::mpsc::Receiver<drover::source::WatchEvent>,
) -> drover::source::WatchEvent {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("no watch event within 20 s")
        .expect("watch channel closed")
}

#[tokio::test]
async fn watching_reports_yaml_changes_and_ignores_hidden_and_other_files() {
    let dir = tempfile::tempdir().unwrap();
    let (watcher, mut rx) = watch(dir.path(), Duration::from_millis(200)).unwrap();
    assert_eq!(watcher.root(), dir.path().canonicalize().unwrap());

    // Irrelevant changes first, then one YAML file: the first event must hold only it.
    std::fs::write(dir.path().join(".hidden.yaml"), "a: 1\n").unwrap();
    std::fs::create_dir(dir.path().join(".git")).unwrap();
    std::fs::write(dir.path().join(".git/x.yaml"), "a: 1\n").unwrap();
    std::fs::write(dir.path().join("notes.txt"), "hello\n").unwrap();
    std::fs::write(dir.path().join("fleet.yaml"), "kind: Fleet\n").unwrap();
    let event = next_event(&mut rx).await;
    assert_eq!(event.paths, vec![PathBuf::from("fleet.yaml")]);
    assert!(!event.rescan);

    // An edit in a subdirectory created after the watch started.
    std::fs::create_dir(dir.path().join("sites")).unwrap();
    let event = next_event(&mut rx).await;
    assert_eq!(event.paths, vec![PathBuf::from("sites")]);
    std::fs::write(dir.path().join("sites/a.yml"), "kind: Site\n").unwrap();
    let event = next_event(&mut rx).await;
    assert_eq!(event.paths, vec![PathBuf::from("sites/a.yml")]);

    drop(watcher);
    let closed = tokio::time::timeout(Duration::from_secs(20), rx.recv()).await;
    assert!(
        matches!(closed, Ok(None)),
        "dropping the watcher closes the channel"
    );
}

#[tokio::test]
async fn a_burst_of_writes_is_one_event() {
    let dir = tempfile::tempdir().unwrap();
    let (_watcher, mut rx) = watch(dir.path(), Duration::from_millis(300)).unwrap();
    let names: Vec<String> = (0..8).map(|i| format!("r{i}.yaml")).collect();
    for name in &names {
        std::fs::write(dir.path().join(name), "kind: RunnerSet\n").unwrap();
    }
    let event = next_event(&mut rx).await;
    let expected: Vec<PathBuf> = names.iter().map(PathBuf::from).collect();
    assert_eq!(
        event.paths, expected,
        "all writes of the burst are in the first event"
    );
}
