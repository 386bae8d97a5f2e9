//! A fault suite for the remotes `drover serve` depends on: GitHub (5xx, 403 secondary
//! rate limits and 429) and the git remote of the fleet (down). slurmrestd down and the
//! API server failing are not in this suite yet (docs/reliability.md, Open).
//!
//! Every test runs the same day: `drover serve` with autoscaling scales two runner sets
//! from job demand, one on the Kubernetes API emulator (runner Pods played by the test
//! kubelet) and one on the real Slurm test bed (over REST); jobs run for a few seconds, so
//! runners are busy when the remote fails. Jobs keep arriving during the fault. After it,
//! every test asserts the same things:
//!
//! - **nothing lost**: every job ran to completion on the one runner that took it (no busy
//!   runner was killed), and drover's Kubernetes objects are the same objects (same uid)
//!   as before the fault: nothing was deleted and created again;
//! - **no duplicate runner**: one distinct runner per job, never more live runners than a
//!   set's `max`, no more runners created than jobs, and nothing left behind (no runner
//!   registered at GitHub, no runner Pod, no runner job).
//!
//! Needs the Slurm test bed (`scripts/slurm-testbed.sh up` and its environment).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::autoscale::{LONG, SetDef, World, cpu_set, metric, runner_of};
use crate::serve_support::{HOOK_SECRET, Running};
use crate::support::git_server::{Fixture, HttpGitServer};
use crate::support::github_emulator::Fault;
use crate::support::outage::Outage;

/// How long each fault lasts.
const FAULT: Duration = Duration::from_secs(6);
/// Jobs per set before the fault, and again during it.
const JOBS: usize = 2;

/// The two runner sets: `kube` on the Kubernetes site, `hpc` on the Slurm site.
fn sets() -> [SetDef; 2] {
    [
        SetDef {
            name: "kube",
            site: "lab",
            labels: &["kube-{fleet}"],
            work_ms: 4000,
            ..cpu_set(3)
        },
        SetDef {
            name: "hpc",
            labels: &["hpc-{fleet}"],
            work_ms: 4000,
            ..cpu_set(3)
        },
    ]
}

/// drover's Kubernetes objects (not runner Pods or their Secrets), `kind/name` → uid.
fn owned_objects(world: &World) -> BTreeMap<String, String> {
    let emu = &world.kube.as_ref().expect("a Kubernetes site").emu;
    let mut objects = BTreeMap::new();
    for (api, kind, ns) in [
        ("v1", "Namespace", None),
        ("v1", "ServiceAccount", Some("runners")),
        ("v1", "ResourceQuota", Some("runners")),
        ("v1", "PodTemplate", Some("runners")),
    ] {
        for o in emu.list_objects(api, kind, ns) {
            if o["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "drover" {
                objects.insert(
                    format!("{kind}/{}", o["metadata"]["name"].as_str().unwrap()),
                    o["metadata"]["uid"].as_str().unwrap().to_string(),
                );
            }
        }
    }
    objects
}

/// The state before a fault.
struct Before {
    objects: BTreeMap<String, String>,
    jobs: Vec<u64>,
    hook: String,
}

/// Waits for the first reconcile's objects, queues `JOBS` per set and waits until runners
/// of both sets are busy.
async fn before_fault(world: &World, svc: &Running) -> Before {
    let hook = format!("{}/webhook", svc.base);
    world.emu.set_webhook(&hook, HOOK_SECRET);
    let mut jobs = Vec::new();
    for _ in 0..JOBS {
        jobs.push(
            world
                .queue(Some(&hook), "acme/app", &["kube-{fleet}"])
                .await,
        );
        jobs.push(world.queue(Some(&hook), "acme/app", &["hpc-{fleet}"]).await);
    }
    let started = Instant::now();
    loop {
        let busy: BTreeSet<String> = world
            .emu
            .runners()
            .into_iter()
            .filter(|r| r.busy)
            .map(|r| r.name)
            .collect();
        let kube = busy.iter().any(|n| n.contains("-kube-"));
        let hpc = busy.iter().any(|n| n.contains("-hpc-"));
        if kube && hpc {
            break;
        }
        assert!(
            started.elapsed() < LONG,
            "runners of both sets busy: {busy:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let objects = owned_objects(world);
    assert!(
        objects.keys().any(|k| k.starts_with("Namespace/")) && objects.len() >= 3,
        "the site's objects: {objects:?}"
    );
    Before {
        objects,
        jobs,
        hook,
    }
}

/// Queues `JOBS` more per set while the remote is failing, and keeps the fault on for
/// [`FAULT`], checking that no set goes above its `max`.
async fn during_fault(world: &World, before: &mut Before) {
    for _ in 0..JOBS {
        let hook = Some(before.hook.as_str());
        before
            .jobs
            .push(world.queue(hook, "acme/app", &["kube-{fleet}"]).await);
        before
            .jobs
            .push(world.queue(hook, "acme/app", &["hpc-{fleet}"]).await);
    }
    let started = Instant::now();
    while started.elapsed() < FAULT {
        check_max(world).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// No set has more live runners than its `max` (3).
async fn check_max(world: &World) {
    let kube = world.kube.as_ref().unwrap().live_pods("kube");
    let hpc = world.live_jobs_of("hpc").await.len();
    assert!(
        kube <= 3 && hpc <= 3,
        "live runners above max: kube {kube}, hpc {hpc}"
    );
}

/// After the fault: every job completes, then the assertions of the module doc.
async fn after_fault(world: &World, svc: &Running, before: &Before) {
    let jobs = &before.jobs;
    let started = Instant::now();
    while world.completed(jobs) < jobs.len() {
        check_max(world).await;
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "only {} of {} jobs completed after the fault",
            world.completed(jobs),
            jobs.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Nothing lost: each job completed on the runner that took it (the emulator records
    // one runner per job, and a job whose runner was killed never completes).
    let runners: Vec<String> = jobs.iter().map(|j| runner_of(world, *j)).collect();
    let distinct: BTreeSet<&String> = runners.iter().collect();
    assert_eq!(
        distinct.len(),
        jobs.len(),
        "one runner per job: {runners:?}"
    );
    for (job, runner) in jobs.iter().zip(&runners) {
        let set = if runner.contains("-kube-") {
            "kube"
        } else {
            "hpc"
        };
        assert!(
            runner.starts_with(&format!("drover-{}-{set}-", world.fleet)),
            "job {job} ran on {runner}"
        );
    }
    assert_eq!(
        owned_objects(world),
        before.objects,
        "drover's objects are the same objects as before the fault"
    );
    // No duplicate runner, and nothing left behind.
    let kube = world.kube.as_ref().unwrap();
    let started = Instant::now();
    while !world.emu.runners().is_empty()
        || kube.live_pods("kube") > 0
        || !world.live_jobs().await.is_empty()
    {
        assert!(
            started.elapsed() < LONG,
            "left behind: registered {:?}, Pods {}, jobs {:?}",
            world
                .emu
                .runners()
                .iter()
                .map(|r| &r.name)
                .collect::<Vec<_>>(),
            kube.live_pods("kube"),
            world.live_jobs().await
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let created = metric(
        &svc.metrics().await,
        "drover_autoscale_runners_created_total",
    );
    assert!(
        created <= jobs.len() as f64,
        "{created} runners created for {} jobs",
        jobs.len()
    );
    world.emu.assert_conformant();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn github_5xx_and_rate_limits_lose_nothing_and_duplicate_no_runner() {
    let world = World::with(&sets()).await;
    let svc = world.serve(Duration::from_secs(1), &["acme/app"]).await;
    let mut before = before_fault(&world, &svc).await;
    world.emu.inject(Fault::Server(502), 10);
    world.emu.inject(Fault::Server(503), 5);
    world
        .emu
        .inject(Fault::SecondaryRateLimit { retry_after: 1 }, 3);
    world
        .emu
        .inject(Fault::TooManyRequests { retry_after: 1 }, 3);
    during_fault(&world, &mut before).await;
    let started = Instant::now();
    while world.emu.pending_faults() > 0 {
        check_max(&world).await;
        assert!(started.elapsed() < LONG, "drover met every injected fault");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    after_fault(&world, &svc, &before).await;
    svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn git_remote_down_loses_nothing_and_duplicates_no_runner() {
    let world = World::with(&sets()).await;
    let git = Fixture::new();
    let yaml = std::fs::read_to_string(world.dir.path().join("fleet.yaml")).unwrap();
    git.write("fleet.yaml", &yaml);
    let first = git.commit("fleet");
    git.push();
    let server = HttpGitServer::start(&git.root, None).await;
    let (outage, through) = Outage::in_front_of(&server.url("origin.git")).await;
    let source = drover::source::GitSource::new(drover::source::GitSourceConfig {
        timeout: Duration::from_secs(5),
        ..drover::source::GitSourceConfig::new(
            &through,
            drover::source::GitReference::Branch("main".into()),
            world.dir.path().join("git-cache"),
        )
    })
    .unwrap();
    let svc = world
        .serve_from(
            Box::new(drover::serve::GitFleet(source)),
            Duration::from_secs(1),
            &["acme/app"],
            Duration::from_secs(1),
        )
        .await;
    let mut before = before_fault(&world, &svc).await;
    outage.down();
    // A revision pushed while the remote is down cannot be fetched: the last good one is
    // kept, the error is shown, and scaling goes on with it.
    git.write("fleet.yaml", &yaml.replace("max: 3", "max: 4"));
    let second = git.commit("raise max");
    git.push();
    let down = svc
        .wait_for("the fetch error", LONG, |s| {
            s["source"]["fetch_error"].is_string()
        })
        .await;
    assert_eq!(down["source"]["good_revision"], first.as_str());
    during_fault(&world, &mut before).await;
    outage.up().await;
    svc.wait_for("the new revision", LONG, |s| {
        s["source"]["good_revision"] == second.as_str()
    })
    .await;
    after_fault(&world, &svc, &before).await;
    svc.shutdown().await;
}
