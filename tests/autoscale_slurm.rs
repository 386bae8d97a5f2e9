//! Autoscaling on the real Slurm test bed: `drover serve` with autoscaling on, the GitHub
//! API emulator (every request and response checked against GitHub's OpenAPI
//! description), and the stand-in runner (`fake_runner`) started by real Slurm jobs that
//! fetch their JIT config from drover's `/jit` endpoint with their one-time credential.
//!
//! Needs `scripts/slurm-testbed.sh up` and its environment (`scripts/test.sh` does both);
//! missing variables fail the tests.

mod serve_support;
mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use drover::autoscale::Settings;
use drover::serve::LocalDir;
use drover::sites::RunOptions;
use drover::sites::slurm::rest::{RestConfig, RestDriver};
use drover::sites::slurm::{JobState, SlurmDriver};
use serve_support::{HOOK_SECRET, Running};
use support::github_emulator::objects::JobStatus;
use support::github_emulator::{Config, GithubEmulator};

const PAT: &str = "ghp_autoscale_test_token";
const LONG: Duration = Duration::from_secs(120);

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run `scripts/slurm-testbed.sh up` and eval its env (scripts/test.sh does)")
    })
}

fn fake_runner() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let bin = target.join("debug/examples/fake_runner");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --example fake_runner` (scripts/test.sh does)",
        bin.display()
    );
    bin
}

fn suffix() -> String {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        ^ (u64::from(std::process::id()) << 20);
    format!("{:x}", n % 0xff_ffff)
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A fleet with one Slurm site (the test bed, over REST) and one JIT runner set.
struct World {
    fleet: String,
    set: String,
    label: String,
    dir: tempfile::TempDir,
    _runner_dir: tempfile::TempDir,
    _scratch: tempfile::TempDir,
    emu: GithubEmulator,
    slurm: RestDriver,
}

impl World {
    async fn new(max: u32) -> Self {
        let emu = GithubEmulator::start(Config {
            pat: Some(PAT.into()),
            ..Config::default()
        })
        .await;
        emu.add_org("acme", &[]);
        let fleet = format!("as{}", suffix());
        let set = "slurmcpu".to_string();
        let label = format!("cpu-{fleet}");
        let dir = tempfile::tempdir().unwrap();
        // The runner directory the job script copies: run.sh starts the stand-in runner.
        let runner_dir = tempfile::tempdir().unwrap();
        set_mode(runner_dir.path(), 0o755);
        let run_sh = runner_dir.path().join("run.sh");
        std::fs::write(
            &run_sh,
            format!(
                "#!/bin/sh\nexec {} \"$@\" --work-ms 300 --wait-secs 60\n",
                fake_runner().display()
            ),
        )
        .unwrap();
        set_mode(&run_sh, 0o755);
        let scratch = tempfile::tempdir().unwrap();
        set_mode(scratch.path(), 0o1777);
        std::fs::write(dir.path().join("gh.token"), PAT).unwrap();
        std::fs::write(dir.path().join("slurm.jwt"), var("DROVER_SLURM_TOKEN")).unwrap();
        let yaml = format!(
            r#"apiVersion: drover.dev/v1alpha1
kind: Fleet
metadata: {{name: {fleet}}}
spec:
  github: {{url: "{gh}", tokenRef: gh}}
---
apiVersion: drover.dev/v1alpha1
kind: SecretRef
metadata: {{name: gh}}
spec: {{file: {{path: "{dir}/gh.token"}}}}
---
apiVersion: drover.dev/v1alpha1
kind: SecretRef
metadata: {{name: slurm-jwt}}
spec: {{file: {{path: "{dir}/slurm.jwt"}}}}
---
apiVersion: drover.dev/v1alpha1
kind: Site
metadata: {{name: bed}}
spec:
  slurm:
    rest: {{url: "{url}", user: {user}, tokenRef: slurm-jwt}}
    defaultPartition: cpu
    scratchDir: "{scratch}"
  timeoutSeconds: 20
---
apiVersion: drover.dev/v1alpha1
kind: NodePool
metadata: {{name: cpu}}
spec: {{site: bed, nodeCount: 1, slurm: {{partition: cpu}}}}
---
apiVersion: drover.dev/v1alpha1
kind: RunnerSet
metadata: {{name: {set}}}
spec:
  github: {{org: acme}}
  labels: [{label}]
  pool: cpu
  max: {max}
  resources: {{cpu: "1", memory: 64Mi}}
  env:
    - {{name: DROVER_RUNNER_DIR, value: "{runner}"}}
  timeLimitMinutes: 5
"#,
            gh = emu.url,
            dir = dir.path().display(),
            url = var("DROVER_SLURM_REST_URL"),
            user = var("DROVER_SLURM_USER"),
            scratch = scratch.path().display(),
            runner = runner_dir.path().display(),
        );
        std::fs::write(dir.path().join("fleet.yaml"), yaml).unwrap();
        let slurm = RestDriver::new(RestConfig::new(
            &var("DROVER_SLURM_REST_URL"),
            &var("DROVER_SLURM_USER"),
            drover::credentials::Secret::new(var("DROVER_SLURM_TOKEN")),
        ))
        .unwrap();
        Self {
            fleet,
            set,
            label,
            dir,
            _runner_dir: runner_dir,
            _scratch: scratch,
            emu,
            slurm,
        }
    }

    async fn serve(&self, poll: Duration, repositories: &[&str]) -> Running {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let mut config = serve_support::config(RunOptions::default());
        config.autoscale = Some(Settings {
            jit_url: Some(format!("{base}/jit")),
            repositories: repositories.iter().map(|r| r.to_string()).collect(),
            poll_interval: poll,
            refresh_interval: Duration::from_secs(1),
            ..Settings::default()
        });
        let svc = serve_support::start_on(
            listener,
            config,
            Box::new(LocalDir(self.dir.path().to_path_buf())),
        )
        .await;
        svc.wait_for("the first reconcile", LONG, |s| s["ready"] == true)
            .await;
        svc
    }

    /// drover's live runner jobs of this fleet (pending or running).
    async fn live_jobs(&self) -> Vec<u64> {
        let prefix = format!("drover-{}-", self.fleet);
        self.slurm
            .jobs()
            .await
            .unwrap()
            .into_iter()
            .filter(|j| j.name.starts_with(&prefix))
            .filter(|j| matches!(j.state, JobState::Pending | JobState::Running))
            .map(|j| j.id)
            .collect()
    }

    fn completed(&self, jobs: &[u64]) -> usize {
        jobs.iter()
            .filter(|id| self.emu.job(**id).status == JobStatus::Completed)
            .count()
    }

    /// Waits until every job completed, checking the live runner count never exceeds
    /// `max`; returns the highest count seen.
    async fn drain(&self, jobs: &[u64], max: usize) -> usize {
        let started = Instant::now();
        let mut peak = 0;
        while self.completed(jobs) < jobs.len() {
            let live = self.live_jobs().await.len();
            peak = peak.max(live);
            assert!(live <= max, "{live} live runner jobs, above max {max}");
            assert!(
                started.elapsed() < LONG,
                "only {} of {} jobs completed",
                self.completed(jobs),
                jobs.len()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        peak
    }

    async fn wait_idle(&self) {
        let started = Instant::now();
        loop {
            let live = self.live_jobs().await;
            let registered = self.emu.runners();
            if live.is_empty() && registered.is_empty() {
                return;
            }
            assert!(
                started.elapsed() < LONG,
                "runners left: jobs {live:?}, registered {:?}",
                registered.iter().map(|r| &r.name).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::process::Command::new("scancel")
            .args(["--name", &format!("drover-{}-{}", self.fleet, self.set)])
            .env("SLURM_CONF", var("DROVER_SLURM_CONF"))
            .status();
    }
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhook_demand_runs_every_job_on_slurm_within_max_and_cleans_up() {
    let world = World::new(3).await;
    let svc = world.serve(Duration::from_secs(3600), &[]).await;
    let hook = format!("{}/webhook", svc.base);
    world.emu.set_webhook(&hook, HOOK_SECRET);
    let labels = ["self-hosted", world.label.as_str()];
    let jobs: Vec<u64> = (0..6)
        .map(|_| world.emu.queue_job("acme/app", &labels))
        .collect();
    for job in &jobs {
        assert_eq!(
            world.emu.deliver(&hook, HOOK_SECRET, *job, "queued").await,
            202
        );
    }
    // A duplicate delivery changes nothing.
    assert_eq!(
        world
            .emu
            .deliver(&hook, HOOK_SECRET, jobs[0], "queued")
            .await,
        202
    );

    let peak = world.drain(&jobs, 3).await;
    assert!(peak >= 1, "runners were started");
    world.wait_idle().await;
    for job in &jobs {
        let j = world.emu.job(*job);
        let runner = j.runner.expect("a runner took it");
        assert!(
            runner
                .1
                .starts_with(&format!("drover-{}-{}-j", world.fleet, world.set)),
            "{runner:?}"
        );
    }
    let metrics = svc.metrics().await;
    assert!(
        metric(&metrics, "drover_autoscale_runners_created_total") >= 6.0,
        "{metrics}"
    );
    let status = svc.status().await;
    assert_eq!(
        status["autoscale"]["sets"][&world.set]["queued"], 0,
        "{status:#}"
    );
    world.emu.assert_conformant();
    svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn missed_webhooks_are_repaired_by_polling() {
    let world = World::new(2).await;
    let labels = ["self-hosted", world.label.as_str()];
    let jobs: Vec<u64> = (0..3)
        .map(|_| world.emu.queue_job("acme/polled", &labels))
        .collect();
    // No webhook at all: demand comes only from polling the configured repository.
    let svc = world.serve(Duration::from_secs(1), &["acme/polled"]).await;
    world.drain(&jobs, 2).await;
    world.wait_idle().await;
    let metrics = svc.metrics().await;
    assert!(
        metric(
            &metrics,
            "drover_autoscale_demand_updates_total{call=\"poll\""
        ) >= 3.0,
        "{metrics}"
    );
    world.emu.assert_conformant();
    svc.shutdown().await;
}
