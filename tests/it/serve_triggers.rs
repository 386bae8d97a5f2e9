//! Triggers of `drover serve` beyond polling: the directory watcher of `--dir` mode, and
//! `drover reconcile --now` (the CLI binary) against a service running in this process.

use std::path::Path;
use std::time::Duration;

use crate::serve_support::{TRIGGER_TOKEN, config, fleet_header, start, unique};
use drover::serve::LocalDir;
use drover::sites::RunOptions;

/// A fleet with one Slurm site nobody listens for: each reconcile fails fast, which is all
/// these tests need (they count reconciles and revisions).
fn fleet(name: &str, timeout: u32) -> String {
    fleet_header(name)
        + &format!(
            r#"---
apiVersion: drover.dev/v1alpha1
kind: SecretRef
metadata: {{name: jwt}}
spec: {{file: {{path: /nonexistent/jwt}}}}
---
apiVersion: drover.dev/v1alpha1
kind: Site
metadata: {{name: hpc}}
spec:
  slurm:
    rest: {{url: "http://127.0.0.1:9", user: ci, tokenRef: jwt}}
    defaultPartition: cpu
  timeoutSeconds: {timeout}
"#
        )
}

fn write(dir: &Path, text: &str) {
    std::fs::write(dir.join("fleet.yaml"), text).unwrap();
}

fn reconciles(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("drover_reconciles_total{site=\"hpc\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn dir_mode_reconciles_when_a_file_changes_without_waiting_for_a_poll() {
    let dir = tempfile::tempdir().unwrap();
    let name = unique("watch");
    write(dir.path(), &fleet(&name, 2));
    // Polls are an hour apart: only the watcher can notice the edit in time.
    let svc = start(
        config(RunOptions::default()),
        Box::new(LocalDir(dir.path().to_path_buf())),
    )
    .await;
    let first = svc
        .wait_for("the first reconcile", Duration::from_secs(30), |s| {
            s["ready"] == true
        })
        .await;
    let good = first["source"]["good_revision"].clone();

    write(dir.path(), &fleet(&name, 3));
    let changed = svc
        .wait_for("the watcher's reconcile", Duration::from_secs(30), |s| {
            s["source"]["good_revision"] != good
        })
        .await;
    assert!(changed["source"]["good_revision"].is_string());
    let metrics = svc.metrics().await;
    assert!(metrics.contains("drover_watch_events_total "), "{metrics}");
    assert!(
        !metrics.contains("drover_watch_events_total 0"),
        "{metrics}"
    );
    crate::serve_support::eventually("the second site reconcile", Duration::from_secs(30), || {
        // Read the counter synchronously through the service's registry.
        reconciles(&svc.service.metrics.encode()) >= 2
    })
    .await;

    // An invalid edit is seen too, and refused.
    write(
        dir.path(),
        &fleet(&name, 3).replace("kind: Site", "kind: Sight"),
    );
    svc.wait_for("the refusal", Duration::from_secs(30), |s| {
        s["source"]["validation_errors"]
            .as_array()
            .is_some_and(|e| !e.is_empty())
    })
    .await;
    svc.shutdown().await;
}

async fn cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_drover"));
    cmd.args(args)
        .env_remove("DROVER_TRIGGER_TOKEN")
        .env_remove("DROVER_URL");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().await.unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn reconcile_now_triggers_a_running_service_with_documented_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &fleet(&unique("cli"), 2));
    let svc = start(
        config(RunOptions::default()),
        Box::new(LocalDir(dir.path().to_path_buf())),
    )
    .await;
    svc.wait_for("the first reconcile", Duration::from_secs(30), |s| {
        s["ready"] == true
    })
    .await;
    crate::serve_support::eventually("one reconcile counted", Duration::from_secs(30), || {
        reconciles(&svc.service.metrics.encode()) == 1
    })
    .await;
    let url = svc.base.clone();

    let (code, out, err) = cli(
        &["reconcile", "--now", "--url", &url],
        &[("DROVER_TRIGGER_TOKEN", TRIGGER_TOKEN)],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("reconcile queued"), "{out}");
    crate::serve_support::eventually("the triggered reconcile", Duration::from_secs(30), || {
        reconciles(&svc.service.metrics.encode()) == 2
    })
    .await;

    // --token-env names another variable.
    let (code, _, err) = cli(
        &[
            "reconcile",
            "--now",
            "--url",
            &url,
            "--token-env",
            "MY_TOKEN",
        ],
        &[("MY_TOKEN", TRIGGER_TOKEN)],
    )
    .await;
    assert_eq!(code, 0, "{err}");

    // A wrong token: refused, exit 1, and nothing is triggered.
    let (code, _, err) = cli(
        &["reconcile", "--now", "--url", &url],
        &[("DROVER_TRIGGER_TOKEN", "wrong")],
    )
    .await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("401"), "{err}");
    assert!(!err.contains("wrong"), "the token is never printed: {err}");

    // No token: usage error, exit 2.
    let (code, _, err) = cli(&["reconcile", "--now", "--url", &url], &[]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("DROVER_TRIGGER_TOKEN"), "{err}");

    // Without --now there is nothing to do.
    let (code, _, _) = cli(
        &["reconcile", "--url", &url],
        &[("DROVER_TRIGGER_TOKEN", TRIGGER_TOKEN)],
    )
    .await;
    assert_eq!(code, 2);

    svc.shutdown().await;

    // The service is gone: unreachable, exit 2.
    let (code, _, err) = cli(
        &["reconcile", "--now", "--url", &url, "--timeout", "2"],
        &[("DROVER_TRIGGER_TOKEN", TRIGGER_TOKEN)],
    )
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot reach"), "{err}");
}

/// A FIFO named like a fleet file (`x.yaml`) neither hangs the fetch nor the shutdown: the
/// revision that holds it is refused (E109), and fetching goes on, so removing it is seen.
#[tokio::test]
async fn dir_mode_refuses_a_fifo_and_keeps_fetching() {
    let dir = tempfile::tempdir().unwrap();
    let name = unique("fifo");
    write(dir.path(), &fleet(&name, 2));
    let fifo = dir.path().join("x.yaml");
    let path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: `path` is a valid NUL-terminated path for the duration of the call.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o644) }, 0);
    let svc = start(
        config(RunOptions::default()),
        Box::new(LocalDir(dir.path().to_path_buf())),
    )
    .await;
    let refused = svc
        .wait_for("the refusal", Duration::from_secs(30), |s| {
            s["source"]["validation_errors"]
                .as_array()
                .is_some_and(|e| !e.is_empty())
        })
        .await;
    let errors = refused["source"]["validation_errors"].to_string();
    assert!(
        errors.contains("E109") && errors.contains("x.yaml"),
        "{errors}"
    );
    std::fs::remove_file(&fifo).unwrap();
    svc.wait_for("a good revision", Duration::from_secs(30), |s| {
        s["source"]["good_revision"].is_string()
    })
    .await;
    tokio::time::timeout(Duration::from_secs(30), svc.shutdown())
        .await
        .expect("shutdown within 30 s");
}
