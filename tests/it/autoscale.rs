//! Autoscaling end to end: `drover serve` with autoscaling on, the GitHub API emulator
//! (every request and response checked against GitHub's OpenAPI description), the real
//! Slurm test bed and the Kubernetes API emulator. The stand-in runner (`fake_runner`) is
//! started by real Slurm jobs that fetch their JIT config from drover's `/jit` endpoint
//! with their one-time credential, and by a test kubelet for runner Pods (with the JIT
//! config from the Pod's own Secret).
//!
//! Needs `scripts/slurm-testbed.sh up` and its environment (`scripts/test.sh` does both);
//! missing variables fail the tests.

use crate::support::testbed_var;
use crate::support::{fake_runner, fake_runner_in};

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::serve_support::{HOOK_SECRET, Running, slurm_rest_site};
use crate::support::github_emulator::objects::JobStatus;
use crate::support::github_emulator::{Config, GithubEmulator};
use crate::support::kube_emulator::{KubeEmulator, NodeBuilder};
use crate::support::kubelet::Kubelet;
use drover::autoscale::Settings;
use drover::serve::LocalDir;
use drover::sites::RunOptions;
use drover::sites::slurm::rest::{RestConfig, RestDriver};
use drover::sites::slurm::{JobState, SlurmDriver};
use serde_json::json;

pub(crate) const PAT: &str = "ghp_autoscale_test_token";
pub(crate) const LONG: Duration = Duration::from_secs(120);

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

/// A JIT runner set of the test fleet.
#[derive(Clone)]
pub(crate) struct SetDef {
    pub(crate) name: &'static str,
    /// `bed` (the real Slurm) or `lab` (the Kubernetes emulator).
    pub(crate) site: &'static str,
    /// Labels besides `self-hosted`; `{fleet}` is replaced by the fleet name.
    pub(crate) labels: &'static [&'static str],
    pub(crate) pool: &'static str,
    pub(crate) min: u32,
    pub(crate) max: u32,
    pub(crate) gpus: u32,
    /// How long the stand-in runner works on a job (on the Kubernetes site: the longest of
    /// its sets', for every runner Pod).
    pub(crate) work_ms: u64,
}

pub(crate) const fn cpu_set(max: u32) -> SetDef {
    SetDef {
        name: "slurmcpu",
        site: "bed",
        labels: &["cpu-{fleet}"],
        pool: "cpu",
        min: 0,
        max,
        gpus: 0,
        work_ms: 300,
    }
}

/// A fleet with one Slurm site (the test bed, over REST) and JIT runner sets.
pub(crate) struct World {
    pub(crate) fleet: String,
    pub(crate) set: String,
    pub(crate) label: String,
    pub(crate) sets: Vec<SetDef>,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) _runner_dir: tempfile::TempDir,
    pub(crate) _scratch: tempfile::TempDir,
    pub(crate) emu: GithubEmulator,
    pub(crate) slurm: RestDriver,
    pub(crate) kube: Option<Kube>,
}

/// The Kubernetes site: the API emulator, its kubeconfig and a kubelet running runners.
pub(crate) struct Kube {
    pub(crate) emu: KubeEmulator,
    pub(crate) kubeconfig: PathBuf,
    pub(crate) kubelet: Kubelet,
}

const KUBE_SITE: &str = r#"---
apiVersion: drover.dev/v1alpha1
kind: Site
metadata: {name: lab}
spec:
  kubernetes: {context: lab-ctx, namespace: runners}
  timeoutSeconds: 10
---
apiVersion: drover.dev/v1alpha1
kind: NodePool
metadata: {name: k8s}
spec:
  site: lab
  kubernetes: {nodeSelector: {pool: cpu}}
"#;

impl Kube {
    /// Starts the emulator and a kubelet whose runners work `work_ms` on a job.
    async fn start(dir: &Path, work_ms: u64) -> Kube {
        let emu = KubeEmulator::start().await;
        emu.add_node(NodeBuilder::new("cpu-1").label("pool", "cpu"));
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(&kubeconfig, emu.kubeconfig_yaml("lab-ctx")).unwrap();
        let kubelet = Kubelet::start(
            emu.client().await,
            fake_runner(),
            vec![
                "--work-ms".into(),
                work_ms.to_string(),
                "--wait-secs".into(),
                "60".into(),
            ],
        );
        Kube {
            emu,
            kubeconfig,
            kubelet,
        }
    }

    /// Runner Pods of a set that are not finished.
    pub(crate) fn live_pods(&self, set: &str) -> usize {
        self.emu
            .list_objects("v1", "Pod", Some("runners"))
            .iter()
            .filter(|p| p["metadata"]["labels"]["drover.dev/runner-set"] == set)
            .filter(|p| !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")))
            .count()
    }
}

fn set_yaml(def: &SetDef, fleet: &str, runner_dir: &Path) -> String {
    if def.site == "lab" {
        let labels: Vec<String> = def
            .labels
            .iter()
            .map(|l| l.replace("{fleet}", fleet))
            .collect();
        return format!(
            "---\napiVersion: drover.dev/v1alpha1\nkind: RunnerSet\nmetadata: {{name: {}}}\nspec:\n  github: {{org: acme}}\n  labels: [{}]\n  pool: k8s\n  min: {}\n  max: {}\n  resources: {{cpu: \"1\", memory: 1Gi}}\n  image: ghcr.io/actions/actions-runner:2.321.0\n",
            def.name,
            labels.join(", "),
            def.min,
            def.max
        );
    }
    let labels: Vec<String> = def
        .labels
        .iter()
        .map(|l| l.replace("{fleet}", fleet))
        .collect();
    let gpu = if def.gpus > 0 {
        format!(", gpu: {{vendor: nvidia, count: {}}}", def.gpus)
    } else {
        String::new()
    };
    format!(
        r#"---
apiVersion: drover.dev/v1alpha1
kind: RunnerSet
metadata: {{name: {name}}}
spec:
  github: {{org: acme}}
  labels: [{labels}]
  pool: {pool}
  min: {min}
  max: {max}
  resources: {{cpu: "1", memory: 64Mi{gpu}}}
  env:
    - {{name: DROVER_RUNNER_DIR, value: "{runner}"}}
    - {{name: FAKE_WORK_MS, value: "{work}"}}
  timeLimitMinutes: 5
"#,
        name = def.name,
        labels = labels.join(", "),
        pool = def.pool,
        min = def.min,
        max = def.max,
        work = def.work_ms,
        runner = runner_dir.display(),
    )
}

impl World {
    async fn new(max: u32) -> Self {
        Self::with(&[cpu_set(max)]).await
    }

    pub(crate) async fn with(sets: &[SetDef]) -> Self {
        let emu = GithubEmulator::start(Config {
            pat: Some(PAT.into()),
            ..Config::default()
        })
        .await;
        emu.add_org("acme", &[]);
        let fleet = format!("as{}", suffix());
        let set = sets[0].name.to_string();
        let label = sets[0].labels[0].replace("{fleet}", &fleet);
        let dir = tempfile::tempdir().unwrap();
        // The runner directory the job script copies: run.sh starts the stand-in runner.
        let runner_dir = tempfile::tempdir().unwrap();
        set_mode(runner_dir.path(), 0o755);
        let run_sh = runner_dir.path().join("run.sh");
        let runner = fake_runner_in(runner_dir.path());
        std::fs::write(
            &run_sh,
            format!(
                "#!/bin/sh\nexec {} \"$@\" --work-ms \"${{FAKE_WORK_MS:-300}}\" --wait-secs 60\n",
                runner.display()
            ),
        )
        .unwrap();
        set_mode(&run_sh, 0o755);
        let scratch = tempfile::tempdir().unwrap();
        set_mode(scratch.path(), 0o1777);
        std::fs::write(dir.path().join("gh.token"), PAT).unwrap();
        std::fs::write(
            dir.path().join("slurm.jwt"),
            testbed_var("DROVER_SLURM_TOKEN"),
        )
        .unwrap();
        let mut yaml = format!(
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
{slurm}---
apiVersion: drover.dev/v1alpha1
kind: NodePool
metadata: {{name: gpu}}
spec:
  site: bed
  nodeCount: 1
  gpu: {{vendor: nvidia, model: a100, perNode: 4}}
  slurm: {{partition: gpu, gres: "gpu:a100:4"}}
"#,
            gh = emu.url,
            dir = dir.path().display(),
            slurm = slurm_rest_site(
                "bed",
                "cpu",
                &format!("{}/slurm.jwt", dir.path().display()),
                &scratch.path().display().to_string()
            ),
        );
        let kube = if sets.iter().any(|d| d.site == "lab") {
            yaml.push_str(KUBE_SITE);
            let work_ms = sets
                .iter()
                .filter(|d| d.site == "lab")
                .map(|d| d.work_ms)
                .max()
                .unwrap_or(300);
            Some(Kube::start(dir.path(), work_ms).await)
        } else {
            None
        };
        for def in sets {
            yaml.push_str(&set_yaml(def, &fleet, runner_dir.path()));
        }
        std::fs::write(dir.path().join("fleet.yaml"), yaml).unwrap();
        let slurm = RestDriver::new(RestConfig::new(
            testbed_var("DROVER_SLURM_REST_URL"),
            testbed_var("DROVER_SLURM_USER"),
            drover::credentials::Secret::new(testbed_var("DROVER_SLURM_TOKEN")),
        ))
        .unwrap();
        Self {
            fleet,
            set,
            label,
            sets: sets.to_vec(),
            dir,
            _runner_dir: runner_dir,
            _scratch: scratch,
            emu,
            slurm,
            kube,
        }
    }

    /// Rewrites the fleet's runner sets (the service's directory watcher picks it up).
    fn rewrite(&self, sets: &[SetDef]) {
        let path = self.dir.path().join("fleet.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        let head = text
            .split("---\napiVersion: drover.dev/v1alpha1\nkind: RunnerSet")
            .next()
            .unwrap()
            .to_string();
        let mut yaml = head;
        for def in sets {
            yaml.push_str(&set_yaml(def, &self.fleet, self._runner_dir.path()));
        }
        std::fs::write(&path, yaml).unwrap();
    }

    fn labels(&self, labels: &[&str]) -> Vec<String> {
        std::iter::once("self-hosted".to_string())
            .chain(labels.iter().map(|l| l.replace("{fleet}", &self.fleet)))
            .collect()
    }

    /// Queues a job with these labels (`{fleet}` replaced) and delivers `queued` to `hook`.
    pub(crate) async fn queue(&self, hook: Option<&str>, repo: &str, labels: &[&str]) -> u64 {
        let labels = self.labels(labels);
        let refs: Vec<&str> = labels.iter().map(String::as_str).collect();
        let job = self.emu.queue_job(repo, &refs);
        if let Some(hook) = hook {
            assert_eq!(
                self.emu.deliver(hook, HOOK_SECRET, job, "queued").await,
                202
            );
        }
        job
    }

    pub(crate) async fn serve(&self, poll: Duration, repositories: &[&str]) -> Running {
        let source = Box::new(LocalDir(self.dir.path().to_path_buf()));
        self.serve_from(source, poll, repositories, Duration::from_secs(3600))
            .await
    }

    /// Starts `drover serve` on the fleet read from `source` (the world's fleet directory,
    /// or a git remote that holds the same fleet).
    pub(crate) async fn serve_from(
        &self,
        source: Box<dyn drover::serve::FleetSource>,
        poll: Duration,
        repositories: &[&str],
        source_poll: Duration,
    ) -> Running {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let mut config = crate::serve_support::config(RunOptions {
            kubeconfig: self.kube.as_ref().map(|k| k.kubeconfig.clone()),
            ..RunOptions::default()
        });
        config.poll_interval = source_poll;
        config.autoscale = Some(Settings {
            jit_url: Some(format!("{base}/jit")),
            repositories: repositories.iter().map(|r| r.to_string()).collect(),
            poll_interval: poll,
            refresh_interval: Duration::from_secs(1),
            ..Settings::default()
        });
        let svc = crate::serve_support::start_on(listener, config, source).await;
        svc.wait_for("the first reconcile", LONG, |s| s["ready"] == true)
            .await;
        svc
    }

    /// drover's live runner jobs of this fleet (pending or running).
    pub(crate) async fn live_jobs(&self) -> Vec<u64> {
        self.live_jobs_of("").await
    }

    /// Live runner jobs of runner sets whose name starts with `set`.
    pub(crate) async fn live_jobs_of(&self, set: &str) -> Vec<u64> {
        let prefix = format!("drover-{}-{set}", self.fleet);
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

    pub(crate) fn completed(&self, jobs: &[u64]) -> usize {
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
        for def in &self.sets {
            let _ = crate::support::slurm_bed::tool("scancel")
                .args(["--name", &format!("drover-{}-{}", self.fleet, def.name)])
                .env("SLURM_CONF", testbed_var("DROVER_SLURM_CONF"))
                .status();
        }
    }
}

pub(crate) fn metric(text: &str, name: &str) -> f64 {
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

/// The runner that ran a job, by name.
pub(crate) fn runner_of(world: &World, job: u64) -> String {
    world.emu.job(job).runner.expect("a runner took the job").1
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < LONG, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_two_label_job_lands_on_the_set_that_has_both() {
    let plain = SetDef {
        name: "plain",
        labels: &["x-{fleet}"],
        ..cpu_set(2)
    };
    let both = SetDef {
        name: "both",
        labels: &["x-{fleet}", "y-{fleet}"],
        ..cpu_set(2)
    };
    let world = World::with(&[plain, both]).await;
    let svc = world.serve(Duration::from_secs(3600), &[]).await;
    let hook = format!("{}/webhook", svc.base);
    world.emu.set_webhook(&hook, HOOK_SECRET);
    let two = world
        .queue(Some(&hook), "acme/app", &["x-{fleet}", "y-{fleet}"])
        .await;
    let one = world.queue(Some(&hook), "acme/app", &["x-{fleet}"]).await;
    let none = world
        .queue(Some(&hook), "acme/app", &["x-{fleet}", "z-{fleet}"])
        .await;
    let status = svc
        .wait_for("the unservable job reported", LONG, |s| {
            s["autoscale"]["unserved"]
                .as_array()
                .is_some_and(|u| !u.is_empty())
        })
        .await;
    let unserved = &status["autoscale"]["unserved"][0];
    assert_eq!(unserved["job_id"], none);
    let reason = unserved["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("missing z-{}", world.fleet)),
        "{reason}"
    );
    assert!(svc.get("/").await.1.contains("no runner set can serve"));
    assert!(
        svc.metrics()
            .await
            .contains("drover_autoscale_unmatched_jobs 1")
    );
    world.drain(&[two, one], 4).await;
    let both_prefix = format!("drover-{}-both-j", world.fleet);
    assert!(
        runner_of(&world, two).starts_with(&both_prefix),
        "{}",
        runner_of(&world, two)
    );
    // The one-label job may be taken by either set's runner (GitHub gives a job to any
    // runner whose labels are a superset); it ran, and nothing was left waiting.
    assert!(runner_of(&world, one).starts_with(&format!("drover-{}-", world.fleet)));
    world.wait_idle().await;
    world.emu.assert_conformant();
    svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scale_down_retires_idle_runners_and_never_a_busy_one() {
    let warm = SetDef {
        min: 2,
        max: 3,
        work_ms: 6000,
        ..cpu_set(3)
    };
    let world = World::with(std::slice::from_ref(&warm)).await;
    let svc = world.serve(Duration::from_secs(3600), &[]).await;
    let hook = format!("{}/webhook", svc.base);
    world.emu.set_webhook(&hook, HOOK_SECRET);
    eventually("two idle runners online", async || {
        world
            .emu
            .runners()
            .iter()
            .filter(|r| r.online && !r.busy)
            .count()
            == 2
    })
    .await;
    let job = world.queue(Some(&hook), "acme/app", &["cpu-{fleet}"]).await;
    eventually("a runner busy with the job", async || {
        world.emu.job(job).status == JobStatus::InProgress
    })
    .await;
    let busy = runner_of(&world, job);
    // min goes to 0: desired = busy runners (1); the idle runner is retired.
    world.rewrite(&[SetDef { min: 0, ..warm }]);
    eventually("the idle runner retired", async || {
        let names: Vec<String> = world.emu.runners().into_iter().map(|r| r.name).collect();
        names == vec![busy.clone()] && world.live_jobs().await.len() == 1
    })
    .await;
    assert_eq!(
        world.emu.job(job).status,
        JobStatus::InProgress,
        "the busy runner keeps working"
    );
    eventually("the busy runner finished its job", async || {
        world.emu.job(job).status == JobStatus::Completed
    })
    .await;
    assert_eq!(
        runner_of(&world, job),
        busy,
        "the job ran to the end on its runner"
    );
    world.wait_idle().await;
    world.emu.assert_conformant();
    svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pool_at_capacity_is_reported_and_not_oversubscribed() {
    // Two GPUs per runner on one node with four: the pool holds two runners.
    let gpu = SetDef {
        name: "gpu",
        labels: &["gpu-{fleet}"],
        pool: "gpu",
        gpus: 2,
        work_ms: 1500,
        ..cpu_set(5)
    };
    let world = World::with(&[gpu]).await;
    let svc = world.serve(Duration::from_secs(3600), &[]).await;
    let hook = format!("{}/webhook", svc.base);
    world.emu.set_webhook(&hook, HOOK_SECRET);
    let mut jobs = Vec::new();
    for _ in 0..4 {
        jobs.push(world.queue(Some(&hook), "acme/app", &["gpu-{fleet}"]).await);
    }
    let status = svc
        .wait_for("pool at capacity", LONG, |s| {
            s["autoscale"]["sets"]["gpu"]["pool_at_capacity"] == true
        })
        .await;
    assert_eq!(
        status["autoscale"]["sets"]["gpu"]["desired"], 2,
        "{status:#}"
    );
    assert!(
        svc.metrics()
            .await
            .contains("drover_autoscale_pool_at_capacity{runner_set=\"gpu\"} 1")
    );
    world.drain(&jobs, 2).await;
    world.wait_idle().await;
    world.emu.assert_conformant();
    svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn github_errors_back_off_without_runaway_creation() {
    let world = World::new(3).await;
    let svc = world.serve(Duration::from_secs(3600), &[]).await;
    let hook = format!("{}/webhook", svc.base);
    world.emu.set_webhook(&hook, HOOK_SECRET);
    use crate::support::github_emulator::Fault;
    world.emu.inject(Fault::Server(502), 6);
    world
        .emu
        .inject(Fault::SecondaryRateLimit { retry_after: 1 }, 2);
    let mut jobs = Vec::new();
    for _ in 0..3 {
        jobs.push(world.queue(Some(&hook), "acme/app", &["cpu-{fleet}"]).await);
    }
    world.drain(&jobs, 3).await;
    world.wait_idle().await;
    let generated = world
        .emu
        .count("/orgs/acme/actions/runners/generate-jitconfig");
    assert!(
        (3..=6).contains(&generated),
        "{generated} JIT configs requested for 3 jobs"
    );
    let metrics = svc.metrics().await;
    assert!(
        metric(&metrics, "drover_autoscale_runners_created_total") <= 6.0,
        "{metrics}"
    );
    world.emu.assert_conformant();
    svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restart_during_a_burst_creates_no_duplicates() {
    let set = SetDef {
        work_ms: 1500,
        ..cpu_set(3)
    };
    let world = World::with(&[set]).await;
    let svc = world.serve(Duration::from_secs(3600), &[]).await;
    let hook = format!("{}/webhook", svc.base);
    world.emu.set_webhook(&hook, HOOK_SECRET);
    let mut jobs = Vec::new();
    for _ in 0..6 {
        jobs.push(world.queue(Some(&hook), "acme/app", &["cpu-{fleet}"]).await);
    }
    eventually("runners started", async || {
        !world.live_jobs().await.is_empty()
    })
    .await;
    svc.shutdown().await;
    // The new process knows nothing: it rebuilds demand by polling and counts runners
    // from the live queue and GitHub's runner list.
    let svc = world.serve(Duration::from_secs(1), &["acme/app"]).await;
    let hook = format!("{}/webhook", svc.base);
    world.emu.set_webhook(&hook, HOOK_SECRET);
    world.drain(&jobs, 3).await;
    world.wait_idle().await;
    let mut runners: Vec<String> = jobs.iter().map(|j| runner_of(&world, *j)).collect();
    runners.sort();
    runners.dedup();
    assert_eq!(runners.len(), jobs.len(), "one runner per job: {runners:?}");
    world.emu.assert_conformant();
    svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_jobs_across_three_label_sets_on_kubernetes_and_slurm() {
    let small = SetDef {
        name: "small",
        site: "lab",
        labels: &["small-{fleet}"],
        ..cpu_set(6)
    };
    let big = SetDef {
        name: "big",
        site: "lab",
        labels: &["small-{fleet}", "big-{fleet}"],
        ..cpu_set(3)
    };
    let hpc = SetDef {
        name: "hpc",
        labels: &["hpc-{fleet}"],
        ..cpu_set(4)
    };
    let world = World::with(&[small, big, hpc]).await;
    let svc = world.serve(Duration::from_secs(3600), &[]).await;
    let hook = format!("{}/webhook", svc.base);
    world.emu.set_webhook(&hook, HOOK_SECRET);
    let mut jobs: Vec<(u64, &str)> = Vec::new();
    for i in 0..50 {
        let (labels, kind): (&[&str], &str) = match i % 10 {
            0..=3 => (&["small-{fleet}"], "small"),
            4..=6 => (&["small-{fleet}", "big-{fleet}"], "big"),
            _ => (&["hpc-{fleet}"], "hpc"),
        };
        jobs.push((world.queue(Some(&hook), "acme/app", labels).await, kind));
    }
    let kube = world.kube.as_ref().unwrap();
    let ids: Vec<u64> = jobs.iter().map(|(id, _)| *id).collect();
    let started = Instant::now();
    let mut peaks = [0usize; 3];
    while world.completed(&ids) < ids.len() {
        let live = [
            kube.live_pods("small"),
            kube.live_pods("big"),
            world.live_jobs_of("hpc").await.len(),
        ];
        for (i, (n, max)) in live.iter().zip([6, 3, 4]).enumerate() {
            assert!(*n <= max, "set {i}: {n} live runners, above max {max}");
            peaks[i] = peaks[i].max(*n);
        }
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "only {} of 50 jobs completed",
            world.completed(&ids)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        peaks.iter().all(|p| *p > 0),
        "every set ran runners: {peaks:?}"
    );
    for (id, kind) in &jobs {
        let runner = runner_of(&world, *id);
        let ok = match *kind {
            // A one-label job may be taken by either Kubernetes set (both have the label).
            "small" => {
                runner.starts_with(&format!("drover-{}-small-", world.fleet))
                    || runner.starts_with(&format!("drover-{}-big-", world.fleet))
            }
            "big" => runner.starts_with(&format!("drover-{}-big-", world.fleet)),
            _ => runner.starts_with(&format!("drover-{}-hpc-j", world.fleet)),
        };
        assert!(ok, "job {id} ({kind}) ran on {runner}");
    }
    // Completed jobs: runners gone, Pods and jobs cleaned up.
    let started = Instant::now();
    while kube.live_pods("small") + kube.live_pods("big") > 0
        || !world.live_jobs().await.is_empty()
        || !world.emu.runners().is_empty()
        || !kube
            .emu
            .list_objects("v1", "Pod", Some("runners"))
            .is_empty()
    {
        assert!(
            started.elapsed() < LONG,
            "runners, Pods or jobs left behind"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        kube.emu
            .list_objects("v1", "Secret", Some("runners"))
            .is_empty(),
        "every JIT Secret went with its Pod"
    );
    world.emu.assert_conformant();
    svc.shutdown().await;
}

/// drover's own lists of runner Pods (the kubelet's lists carry no label selector; watch
/// requests are not lists).
fn runner_pod_lists(kube: &Kube) -> usize {
    kube.emu
        .request_log()
        .iter()
        .filter(|r| r.method == "GET" && r.path == "/api/v1/pods")
        .filter(|r| r.query.contains("labelSelector") && !r.query.contains("watch=true"))
        .count()
}

fn pod_names(kube: &Kube) -> BTreeSet<String> {
    kube.emu
        .list_objects("v1", "Pod", Some("runners"))
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
        .collect()
}

/// drover's watch requests for runner Pods.
fn runner_pod_watches(kube: &Kube) -> usize {
    kube.emu
        .request_log()
        .iter()
        .filter(|r| r.path == "/api/v1/pods" && r.query.contains("watch=true") && r.status == 200)
        .count()
}

/// One Kubernetes runner set (`small`, max 4) on a node without room (the Pods stay
/// Pending and the jobs queued), served; the webhook URL.
async fn held_kubernetes_world() -> (World, Running, String) {
    let small = SetDef {
        name: "small",
        site: "lab",
        labels: &["small-{fleet}"],
        ..cpu_set(4)
    };
    let world = World::with(&[small]).await;
    world.kube.as_ref().unwrap().kubelet.hold(true);
    let svc = world.serve(Duration::from_secs(3600), &[]).await;
    let hook = format!("{}/webhook", svc.base);
    (world, svc, hook)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubernetes_rounds_follow_runner_pods_by_a_watch_not_by_lists() {
    let (world, svc, hook) = held_kubernetes_world().await;
    let kube = world.kube.as_ref().unwrap();
    for _ in 0..2 {
        world
            .queue(Some(&hook), "acme/app", &["small-{fleet}"])
            .await;
    }
    eventually("a Pod per queued job", async || {
        kube.live_pods("small") == 2
    })
    .await;
    eventually("the runner Pod watch is running", async || {
        runner_pod_watches(kube) > 0
    })
    .await;
    let lists = runner_pod_lists(kube);
    let before = pod_names(kube);

    // Someone else deletes one runner Pod; another one fails.
    let mut names = before.iter();
    let (gone, failed) = (names.next().unwrap(), names.next().unwrap());
    kube.emu
        .delete_object("v1", "Pod", Some("runners"), gone)
        .unwrap();
    kube.emu
        .set_status(
            "v1",
            "Pod",
            Some("runners"),
            failed,
            json!({"phase": "Failed"}),
        )
        .unwrap();
    eventually("both replaced", async || {
        let now = pod_names(kube);
        kube.live_pods("small") == 2 && now.is_disjoint(&before)
    })
    .await;
    // Several periodic rounds (every second here) later: still no list.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(kube.live_pods("small"), 2, "no extra runner Pods");
    assert_eq!(
        runner_pod_lists(kube),
        lists,
        "runner rounds read the watch; they do not list Pods"
    );
    svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broken_runner_pod_watch_falls_back_to_lists_and_recovers() {
    let (world, svc, hook) = held_kubernetes_world().await;
    let kube = world.kube.as_ref().unwrap();
    world
        .queue(Some(&hook), "acme/app", &["small-{fleet}"])
        .await;
    eventually("a Pod for the job", async || kube.live_pods("small") == 1).await;
    eventually("the runner Pod watch is running", async || {
        runner_pod_watches(kube) > 0
    })
    .await;
    let lists = runner_pod_lists(kube);

    // The API server's history is compacted and its watches end: drover's watch resumes
    // from a resourceVersion that is gone (410 Expired), so it fails and starts over.
    kube.emu.compact_history();
    kube.emu.end_watches();
    world
        .queue(Some(&hook), "acme/app", &["small-{fleet}"])
        .await;
    eventually("a Pod for the second job", async || {
        kube.live_pods("small") == 2
    })
    .await;
    eventually("the Pods listed again and a new watch", async || {
        runner_pod_lists(kube) > lists && runner_pod_watches(kube) >= 3
    })
    .await;
    let gone = pod_names(kube).into_iter().next().unwrap();
    kube.emu
        .delete_object("v1", "Pod", Some("runners"), &gone)
        .unwrap();
    eventually("the deleted Pod replaced", async || {
        kube.live_pods("small") == 2 && !pod_names(kube).contains(&gone)
    })
    .await;
    // Once the new watch has listed, rounds read it again.
    let lists = runner_pod_lists(kube);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(runner_pod_lists(kube), lists, "rounds read the new watch");
    assert_eq!(kube.live_pods("small"), 2, "no extra runner Pods");
    svc.shutdown().await;
}
