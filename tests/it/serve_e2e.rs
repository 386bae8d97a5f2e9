//! `drover serve` end to end: a real git remote (bare repository behind `git http-backend`
//! with a token, or `file://`), a Kubernetes site on the API emulator (kubeconfig in a temp
//! file) and a Slurm site on the real test bed (slurmrestd, token from a file), with a
//! runner set of min 1 running `sleep 300`.
//!
//! In-process: push → applied on both sites; invalid push → refused, last good kept,
//! error in /status and /metrics; forged webhook → 401 and no fetch; the scheduled drift
//! check (`drift: heal`) repairs an out-of-band edit; git remote down → last good revision kept, error shown.
//! As a child process (`drover serve --config`): SIGKILL mid-apply then restart converges
//! without duplicate runners; SIGTERM finishes the in-flight reconcile and exits 0.
//!
//! Needs the Slurm test bed (`scripts/slurm-testbed.sh up`, `eval "$(… env)"`); every
//! fleet has a unique name and its jobs are cancelled when the test ends.

use crate::support::testbed_var;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::serve_support::{
    HOOK_SECRET, config, eventually, fleet_header, kube_site, slurm_rest_site, start, unique,
};
use crate::support::git_server::{Fixture, HttpGitServer, free_port};
use crate::support::kube_emulator::{KubeEmulator, RequestFilter};
use drover::credentials::Secret;
use drover::serve::{GitFleet, webhook};
use drover::sites::RunOptions;
use drover::source::{GitAuth, GitReference, GitSource, GitSourceConfig};
use serde_json::Value;

const CONTEXT: &str = "e2e-ctx";
const NS: &str = "runners";
const GIT_TOKEN: &str = "git-token-e2e";
const LONG: Duration = Duration::from_secs(60);

/// One test's world: git fixture, emulator, Slurm settings, temp files. Cancels the
/// fleet's Slurm jobs when dropped.
struct World {
    name: String,
    git: Fixture,
    emu: KubeEmulator,
    tmp: tempfile::TempDir,
    kubeconfig: PathBuf,
    slurm_conf: String,
}

impl World {
    async fn new(tag: &str) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let emu = KubeEmulator::start().await;
        let kubeconfig = tmp.path().join("kubeconfig");
        std::fs::write(&kubeconfig, emu.kubeconfig_yaml(CONTEXT)).unwrap();
        let token = tmp.path().join("slurm.jwt");
        std::fs::write(&token, testbed_var("DROVER_SLURM_TOKEN")).unwrap();
        let scratch = tmp.path().join("scratch");
        std::fs::create_dir(&scratch).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&scratch, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let world = Self {
            name: unique(tag),
            git: Fixture::new(),
            emu,
            tmp,
            kubeconfig,
            slurm_conf: testbed_var("DROVER_SLURM_CONF"),
        };
        world.push(&world.fleet("2.321.0"), "first fleet");
        world
    }

    /// The fleet: the Kubernetes site `lab` (two runner sets, image tag `tag`) and the
    /// Slurm site `hpc` (one runner set, min 1, `sleep 300`).
    fn fleet(&self, tag: &str) -> String {
        let token = self.tmp.path().join("slurm.jwt");
        let scratch = self.tmp.path().join("scratch");
        fleet_header(&self.name)
            + &kube_site("lab", CONTEXT, NS, 2, tag)
            + &format!(
                r#"{slurm}---
apiVersion: drover.dev/v1alpha1
kind: RunnerSet
metadata: {{name: hpc-runner}}
spec:
  github: {{org: acme}}
  labels: [self-hosted, hpc-e2e]
  pool: hpc-cpu
  min: 1
  max: 2
  resources: {{cpu: "1", memory: 64Mi}}
  command: [sleep, "300"]
  timeLimitMinutes: 10
"#,
                slurm = slurm_rest_site(
                    "hpc",
                    "hpc-cpu",
                    &token.display().to_string(),
                    &scratch.display().to_string()
                ),
            )
    }

    fn push(&self, yaml: &str, message: &str) -> String {
        self.git.write("fleet.yaml", yaml);
        let commit = self.git.commit(message);
        self.git.push();
        commit
    }

    fn git_source(&self, url: &str, token: Option<&str>) -> GitFleet {
        let auth = token.map_or(GitAuth::None, |t| GitAuth::Token(Secret::new(t)));
        let source = GitSource::new(GitSourceConfig {
            auth,
            timeout: Duration::from_secs(10),
            ..GitSourceConfig::new(
                url,
                GitReference::Branch("main".into()),
                self.tmp.path().join("cache"),
            )
        })
        .unwrap();
        GitFleet(source)
    }

    fn run_options(&self) -> RunOptions {
        RunOptions {
            kubeconfig: Some(self.kubeconfig.clone()),
            ..RunOptions::default()
        }
    }

    /// Images of the PodTemplates drover applied, sorted.
    fn images(&self) -> Vec<String> {
        let mut images: Vec<String> = self
            .emu
            .list_objects("v1", "PodTemplate", Some(NS))
            .iter()
            .map(|t| {
                t["template"]["spec"]["containers"][0]["image"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        images.sort();
        images
    }

    fn images_are(&self, tag: &str) -> bool {
        let images = self.images();
        images.len() == 2
            && images
                .iter()
                .all(|i| i == &format!("ghcr.io/actions/actions-runner:{tag}"))
    }

    /// This fleet's live (pending or running) Slurm jobs: (id, state).
    fn jobs(&self) -> Vec<(String, String)> {
        let out = crate::support::slurm_bed::tool("squeue")
            .args(["-h", "-o", "%i %j %T"])
            .env("SLURM_CONF", &self.slurm_conf)
            .output()
            .expect("run squeue");
        let name = format!("drover-{}-hpc-runner", self.name);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let mut parts = l.split_whitespace();
                Some((parts.next()?, parts.next()?, parts.next()?))
            })
            .filter(|(_, n, state)| *n == name && matches!(*state, "PENDING" | "RUNNING"))
            .map(|(id, _, state)| (id.to_string(), state.to_string()))
            .collect()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let out = crate::support::slurm_bed::tool("squeue")
            .args(["-h", "-o", "%i %j"])
            .env("SLURM_CONF", &self.slurm_conf)
            .output();
        let Ok(out) = out else { return };
        let prefix = format!("drover-{}-", self.name);
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once(' '))
            .filter(|(_, n)| n.starts_with(&prefix))
            .map(|(id, _)| id.to_string())
            .collect();
        if !ids.is_empty() {
            let _ = crate::support::slurm_bed::tool("scancel")
                .args(&ids)
                .env("SLURM_CONF", &self.slurm_conf)
                .status();
        }
    }
}

fn metric(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_invalid_revisions_drift_and_an_unreachable_remote() {
    let world = World::new("e2e").await;
    let server = HttpGitServer::start(&world.git.root, Some(GIT_TOKEN)).await;
    let mut cfg = config(world.run_options());
    cfg.poll_interval = Duration::from_secs(1);
    cfg.reconcile_interval = Duration::from_secs(2);
    let source = world.git_source(&server.url("origin.git"), Some(GIT_TOKEN));
    let svc = start(cfg, Box::new(source)).await;

    // The first revision lands on both sites.
    let first = world.git.rev_parse("HEAD");
    svc.wait_for("the first revision", LONG, |s| {
        s["source"]["good_revision"] == first.as_str()
    })
    .await;
    eventually("the Kubernetes objects", LONG, || {
        world.images_are("2.321.0")
    })
    .await;
    eventually("one Slurm runner", LONG, || world.jobs().len() == 1).await;
    let status = svc
        .wait_for("both sites applied", LONG, |s| {
            s["sites"]["lab"]["revision"] == first.as_str()
                && s["sites"]["hpc"]["revision"] == first.as_str()
        })
        .await;
    assert!(
        status["source"]["location"]
            .as_str()
            .unwrap()
            .contains("origin.git")
    );
    let metrics = svc.metrics().await;
    assert!(
        metrics.contains(&format!(
            "drover_applied_revision{{site=\"lab\",revision=\"{first}\"}} 1"
        )),
        "{metrics}"
    );

    // A push is applied within a poll cycle.
    let second = world.push(&world.fleet("2.322.0"), "new runner image");
    eventually("the new image", LONG, || world.images_are("2.322.0")).await;
    svc.wait_for("the second revision", LONG, |s| {
        s["source"]["good_revision"] == second.as_str()
            && s["sites"]["lab"]["revision"] == second.as_str()
    })
    .await;
    svc.wait_for("the Slurm runner counted", LONG, |s| {
        s["sites"]["hpc"]["runner_states"]["hpc-runner"]
            .as_object()
            .is_some_and(|m| m.values().map(|v| v.as_u64().unwrap_or(0)).sum::<u64>() == 1)
    })
    .await;
    let metrics = svc.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "drover_runners{site=\"hpc\",runner_set=\"hpc-runner\""
        ),
        1.0,
        "{metrics}"
    );
    assert_eq!(world.jobs().len(), 1, "still exactly min runners");

    // An invalid push: refused, nothing applied, the last good revision stays.
    let writes = world.emu.write_count();
    let bad = world.push(
        &world.fleet("9.9.9").replace("min: 1", "min: 5"),
        "min above max",
    );
    let refused = svc
        .wait_for("the refusal", LONG, |s| {
            s["source"]["fetched_revision"] == bad.as_str()
                && s["source"]["validation_errors"]
                    .as_array()
                    .is_some_and(|e| !e.is_empty())
        })
        .await;
    assert_eq!(refused["source"]["good_revision"], second.as_str());
    assert!(
        refused["source"]["validation_errors"]
            .to_string()
            .contains("fleet.yaml:"),
        "{refused:#}"
    );
    assert!(metric(&svc.metrics().await, "drover_validation_failures_total") >= 1.0);
    assert!(
        world.images_are("2.322.0"),
        "nothing of the bad revision applied"
    );
    assert!(svc.get("/").await.1.contains("failed validation"));

    // Drift: an out-of-band edit is repaired by the scheduled drift check (the fleet sets
    // `drift: heal`; `report` is tested in serve_drift.rs) with the last good revision;
    // the bad one stays refused.
    let template = world.emu.list_objects("v1", "PodTemplate", Some(NS))[0].clone();
    let mut edited = template.clone();
    edited["template"]["spec"]["containers"][0]["image"] = "evil/image:latest".into();
    world.emu.put_object_as("kubectl", edited).unwrap();
    assert!(!world.images_are("2.322.0"));
    eventually("the drift repaired", LONG, || world.images_are("2.322.0")).await;
    assert!(world.emu.write_count() > writes, "the repair is a write");

    // The remote goes away: the last good revision keeps being served and the fetch
    // error is shown.
    server.stop().await;
    let down = svc
        .wait_for("the fetch error", LONG, |s| {
            s["source"]["fetch_error"].is_string()
        })
        .await;
    assert_eq!(down["source"]["good_revision"], second.as_str());
    assert!(
        !down["source"]["fetch_error"]
            .as_str()
            .unwrap()
            .contains(GIT_TOKEN),
        "no credentials in errors"
    );
    assert!(metric(&svc.metrics().await, "drover_source_errors_total") >= 1.0);
    let mut edited = world.emu.list_objects("v1", "PodTemplate", Some(NS))[0].clone();
    edited["template"]["spec"]["containers"][0]["image"] = "evil/image:latest".into();
    world.emu.put_object_as("kubectl", edited).unwrap();
    eventually("drift repaired while the remote is down", LONG, || {
        world.images_are("2.322.0")
    })
    .await;
    assert_eq!(svc.get("/healthz").await.0, 200);
    assert_eq!(world.jobs().len(), 1);
    svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_webhook_fetches_nothing_and_a_signed_push_applies() {
    let world = World::new("hook").await;
    let server = HttpGitServer::start(&world.git.root, Some(GIT_TOKEN)).await;
    // No polling: only webhooks (and the startup reconcile) fetch.
    let cfg = config(world.run_options());
    let source = world.git_source(&server.url("origin.git"), Some(GIT_TOKEN));
    let svc = start(cfg, Box::new(source)).await;
    svc.wait_for("the first reconcile", LONG, |s| s["ready"] == true)
        .await;
    eventually("the Kubernetes objects", LONG, || {
        world.images_are("2.321.0")
    })
    .await;

    let second = world.push(&world.fleet("2.322.0"), "new image");
    let requests = server
        .stats
        .requests
        .load(std::sync::atomic::Ordering::SeqCst);
    let body = format!(r#"{{"ref":"refs/heads/main","after":"{second}"}}"#);
    let forged = webhook::sign(b"not-the-secret", body.as_bytes());
    assert_eq!(svc.webhook("push", "f-1", &body, &forged).await, 401);
    assert_eq!(svc.webhook("push", "f-2", &body, "sha256=").await, 401);
    // A negative check needs a grace period: nothing may reach the git server in it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        server
            .stats
            .requests
            .load(std::sync::atomic::Ordering::SeqCst),
        requests,
        "a forged webhook must not cause a fetch"
    );
    assert!(world.images_are("2.321.0"));

    let signed = webhook::sign(HOOK_SECRET.as_bytes(), body.as_bytes());
    assert_eq!(svc.webhook("push", "s-1", &body, &signed).await, 202);
    eventually("the pushed image", LONG, || world.images_are("2.322.0")).await;
    assert!(
        server
            .stats
            .requests
            .load(std::sync::atomic::Ordering::SeqCst)
            > requests
    );
    let metrics = svc.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "drover_webhook_deliveries_total{event=\"push\",outcome=\"bad_signature\"}"
        ),
        2.0,
        "{metrics}"
    );
    svc.shutdown().await;
    server.stop().await;
}

/// `drover serve` as a child process with a config file.
struct Child_ {
    child: Child,
    base: String,
    log: PathBuf,
}

fn spawn_serve(world: &World, port: u16, run: usize) -> Child_ {
    let config = world.tmp.path().join("serve.yaml");
    std::fs::write(
        &config,
        format!(
            "source:\n  git:\n    url: {url}\n    branch: main\n    cacheDir: {cache}\n\
             listen: 127.0.0.1:{port}\npollIntervalSeconds: 1\nreconcileIntervalSeconds: 2\n\
             kubeconfig: {kubeconfig}\ntriggerTokenFrom: {{env: E2E_TRIGGER}}\n",
            url = world.git.file_url(),
            cache = world.tmp.path().join("child-cache").display(),
            kubeconfig = world.kubeconfig.display(),
        ),
    )
    .unwrap();
    let log = world.tmp.path().join(format!("serve-{run}.log"));
    let child = Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["-v", "serve", "--config"])
        .arg(&config)
        .env("E2E_TRIGGER", "child-token")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    Child_ {
        child,
        base: format!("http://127.0.0.1:{port}"),
        log,
    }
}

impl Child_ {
    async fn status(&self) -> Option<Value> {
        let r = reqwest::get(format!("{}/status", self.base)).await.ok()?;
        r.json().await.ok()
    }

    async fn wait_for(&self, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let started = std::time::Instant::now();
        loop {
            if let Some(s) = self.status().await
                && check(&s)
            {
                return s;
            }
            assert!(
                started.elapsed() < LONG,
                "timed out waiting for {what}; log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let started = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(started.elapsed() < LONG, "the service did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Child_ {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_apply_then_restart_converges_and_sigterm_drains() {
    let world = World::new("kill").await;
    drover::tls::install_crypto_provider();
    // Every write is slow: the apply is still under way when the process is killed.
    world
        .emu
        .faults()
        .only(RequestFilter::any().method("PATCH"))
        .latency(Duration::from_millis(400));
    let port = free_port();
    let mut first = spawn_serve(&world, port, 1);
    eventually("the first writes", LONG, || {
        world.emu.request_log().iter().any(|r| r.method == "PATCH")
    })
    .await;
    first.signal("-KILL");
    let killed = first.wait_exit();
    assert!(!killed.success());

    world.emu.faults().clear();
    let mut second = spawn_serve(&world, port, 2);
    let head = world.git.rev_parse("HEAD");
    second
        .wait_for("convergence after the restart", |s| {
            s["ready"] == true
                && s["sites"]["lab"]["revision"] == head.as_str()
                && s["sites"]["hpc"]["revision"] == head.as_str()
        })
        .await;
    eventually("the Kubernetes objects", LONG, || {
        world.images_are("2.321.0")
    })
    .await;
    eventually("one Slurm runner", LONG, || world.jobs().len() == 1).await;
    // Converged: the next scheduled reconciles find nothing to change.
    second
        .wait_for("a clean plan", |s| {
            s["sites"]["lab"]["outcome"] == "ok" && s["sites"]["hpc"]["outcome"] == "ok"
        })
        .await;
    assert_eq!(
        world.jobs().len(),
        1,
        "no duplicate runner after the restart"
    );
    let namespaces = world.emu.list_objects("v1", "Namespace", None);
    assert_eq!(
        namespaces
            .iter()
            .filter(|n| n["metadata"]["name"] == NS)
            .count(),
        1
    );

    // SIGTERM during a reconcile: it finishes (the drift is repaired), then exit 0.
    let mut edited = world.emu.list_objects("v1", "PodTemplate", Some(NS))[0].clone();
    edited["template"]["spec"]["containers"][0]["image"] = "evil/image:latest".into();
    world.emu.put_object_as("kubectl", edited).unwrap();
    world
        .emu
        .faults()
        .only(RequestFilter::any().method("PATCH"))
        .latency(Duration::from_millis(1500));
    let seen = world.emu.request_log().len();
    eventually("the repair under way", LONG, || {
        world
            .emu
            .request_log()
            .iter()
            .skip(seen)
            .any(|r| r.method == "GET" && r.path.contains("podtemplates"))
    })
    .await;
    second.signal("-TERM");
    let status = second.wait_exit();
    assert!(
        status.success(),
        "exit {status:?}; log:\n{}",
        std::fs::read_to_string(&second.log).unwrap_or_default()
    );
    world.emu.faults().clear();
    assert!(
        world.images_are("2.321.0"),
        "the in-flight reconcile finished its apply before exiting"
    );
    assert_eq!(world.jobs().len(), 1);
}
