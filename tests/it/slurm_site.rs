//! The Slurm site driver end to end (render → observe → plan → apply) on the real Slurm
//! test beds, with one behaviour suite run through both drivers on every Slurm generation
//! (`slurm_22_05::…`, `slurm_24_11::…`, `slurm_26_05::…`).
//!
//! Needs `scripts/slurm-testbed.sh up` and `eval "$(scripts/slurm-testbed.sh env)"`; a
//! missing test bed fails the tests (never skipped). Every test builds its own fleet in a
//! tempdir with a random fleet name, so its jobs (`drover-<fleet>-<set>`) never collide
//! with other tests running in parallel, and cancels everything it submitted on exit.
//!
//! Shared state is avoided on purpose: "partition down" uses a partition the test creates
//! (not `maint`, which `slurm_drivers` toggles), and "slurmctld down" uses the test bed's
//! fault slurmrestd, whose slurmctld is not running, so the real slurmctld keeps serving
//! the other tests.

use crate::per_generation;
use std::path::{Path, PathBuf};

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use drover::credentials::Secret;
use drover::fleet::{LoadOptions, Validation, validate_dir};
use drover::plan::{Action, ApplyReport, SitePlan};
use drover::sites::slurm::cli::{CliConfig, CliDriver};
use drover::sites::slurm::identity::JobIdentity;
use drover::sites::slurm::rest::{RestConfig, RestDriver};
use drover::sites::slurm::{Job, JobSpec, JobState, SlurmDriver};
use drover::sites::{ApplyOptions, RunOptions, SiteContext};

use crate::support::slurm_bed::Bed;

// ---------------------------------------------------------------------------------------
// Test bed and fleet fixtures
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Rest,
    Cli,
}

/// A runner set of the test fleet.
struct Set {
    name: &'static str,
    pool: &'static str,
    gpus: u32,
}

const fn cpu(name: &'static str) -> Set {
    Set {
        name,
        pool: "cpu",
        gpus: 0,
    }
}

const fn gpu(name: &'static str, gpus: u32) -> Set {
    Set {
        name,
        pool: "gpu",
        gpus,
    }
}

/// Knobs for unusual fleets.
#[derive(Default)]
struct Extra {
    /// Use this REST URL instead of the test bed's.
    url: Option<String>,
    /// Put this in the token file instead of the test bed's token.
    token: Option<String>,
    /// More YAML documents (pools).
    docs: String,
    /// Site timeout.
    timeout: Option<u64>,
    /// The CLI driver's tools from this directory instead of the test bed's.
    bin: Option<PathBuf>,
}

/// A fleet in a tempdir, validated; cancels every job of the fleet when dropped.
struct TestFleet {
    name: String,
    via: Via,
    bed: Bed,
    validation: Validation,
    _dir: tempfile::TempDir,
    _scratch: tempfile::TempDir,
}

fn random_suffix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let mut x = (nanos as u64) ^ (u64::from(std::process::id()) << 32);
    let mut s = String::new();
    for _ in 0..8 {
        s.push(char::from(
            b"abcdefghijklmnopqrstuvwxyz0123456789"[(x % 36) as usize],
        ));
        x /= 36;
    }
    s
}

fn fleet(bed: &Bed, via: Via, tag: &str, sets: &[Set]) -> TestFleet {
    fleet_with(bed, via, tag, sets, Extra::default(), None)
}

/// Builds a fleet; `name` reuses a fleet name (to look at the same jobs another way).
fn fleet_with(
    bed: &Bed,
    via: Via,
    tag: &str,
    sets: &[Set],
    extra: Extra,
    name: Option<&str>,
) -> TestFleet {
    let bed = bed.clone();
    let name = name.map_or_else(|| format!("t{tag}-{}", random_suffix()), str::to_owned);
    let dir = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    set_mode(scratch.path(), 0o1777);
    let token_path = dir.path().join("slurm.jwt");
    std::fs::write(&token_path, extra.token.as_deref().unwrap_or(&bed.token)).unwrap();
    let driver = match via {
        Via::Rest => format!(
            "rest: {{url: \"{}\", user: {}, tokenRef: slurm-jwt}}",
            extra.url.as_deref().unwrap_or(&bed.url),
            bed.user
        ),
        Via::Cli => format!(
            "cli: {{user: {}, binDir: \"{}\", slurmConf: \"{}\"}}",
            bed.user,
            extra.bin.as_ref().unwrap_or(&bed.bin).display(),
            bed.conf
        ),
    };
    let mut yaml = format!(
        r#"apiVersion: drover.dev/v1alpha1
kind: Fleet
metadata: {{name: {name}}}
spec:
  github: {{tokenRef: gh}}
  reconcile: {{prune: true}}
---
apiVersion: drover.dev/v1alpha1
kind: SecretRef
metadata: {{name: gh}}
spec: {{env: {{name: DROVER_TEST_UNUSED_GITHUB_TOKEN}}}}
---
apiVersion: drover.dev/v1alpha1
kind: SecretRef
metadata: {{name: slurm-jwt}}
spec: {{file: {{path: "{token}"}}}}
---
apiVersion: drover.dev/v1alpha1
kind: Site
metadata: {{name: bed}}
spec:
  slurm:
    {driver}
    defaultPartition: cpu
    scratchDir: "{scratch}"
  timeoutSeconds: {timeout}
---
apiVersion: drover.dev/v1alpha1
kind: NodePool
metadata: {{name: cpu}}
spec: {{site: bed, nodeCount: 1, slurm: {{partition: cpu}}}}
---
apiVersion: drover.dev/v1alpha1
kind: NodePool
metadata: {{name: gpu}}
spec:
  site: bed
  nodeCount: 1
  gpu: {{vendor: nvidia, model: a100, perNode: 4}}
  slurm: {{partition: gpu, gres: "gpu:a100:4"}}
"#,
        token = token_path.display(),
        scratch = scratch.path().display(),
        timeout = extra.timeout.unwrap_or(20),
    );
    for set in sets {
        let gpu = if set.gpus > 0 {
            format!(", gpu: {{vendor: nvidia, count: {}}}", set.gpus)
        } else {
            String::new()
        };
        yaml.push_str(&format!(
            r#"---
apiVersion: drover.dev/v1alpha1
kind: RunnerSet
metadata: {{name: {set}}}
spec:
  github: {{org: acme}}
  labels: [self-hosted, {set}-{name}]
  pool: {pool}
  max: 20
  resources: {{cpu: "1", memory: 64Mi{gpu}}}
  command: [sleep, "300"]
  timeLimitMinutes: 10
"#,
            set = set.name,
            pool = set.pool,
        ));
    }
    yaml.push_str(&extra.docs);
    std::fs::write(dir.path().join("fleet.yaml"), yaml).unwrap();
    let validation = validate_dir(dir.path(), &LoadOptions::default()).unwrap();
    assert!(validation.is_valid(), "{:#?}", validation.diagnostics);
    TestFleet {
        name,
        via,
        bed,
        validation,
        _dir: dir,
        _scratch: scratch,
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn options(desired: &[(&str, u32)]) -> RunOptions {
    RunOptions {
        desired_runners: desired.iter().map(|(s, n)| ((*s).to_owned(), *n)).collect(),
        ..RunOptions::default()
    }
}

impl TestFleet {
    fn ctx<'a>(&'a self, options: &'a RunOptions) -> SiteContext<'a> {
        SiteContext {
            repo: &self.validation.repo,
            site: &self.validation.repo.sites["bed"],
            options,
        }
    }

    async fn plan(&self, desired: &[(&str, u32)]) -> SitePlan {
        let options = options(desired);
        drover::sites::slurm::plan(&self.ctx(&options)).await
    }

    async fn apply(&self, desired: &[(&str, u32)]) -> (SitePlan, ApplyReport) {
        let options = options(desired);
        drover::sites::slurm::apply(&self.ctx(&options)).await
    }

    async fn apply_with(
        &self,
        desired: &[(&str, u32)],
        apply: ApplyOptions,
    ) -> (SitePlan, ApplyReport) {
        let options = RunOptions {
            apply,
            ..options(desired)
        };
        drover::sites::slurm::apply(&self.ctx(&options)).await
    }

    /// A driver of the same kind as the site's, for looking at the queue.
    fn driver(&self) -> Box<dyn SlurmDriver> {
        match self.via {
            Via::Rest => Box::new(rest(&self.bed)),
            Via::Cli => Box::new(cli(&self.bed, Some(&self.bed.user))),
        }
    }

    /// This fleet's live jobs (pending or running), whoever submitted them, by id.
    async fn live(&self) -> Vec<Job> {
        let prefix = format!("drover-{}-", self.name);
        let mut jobs: Vec<Job> = self
            .driver()
            .jobs()
            .await
            .unwrap()
            .into_iter()
            .filter(|j| j.name.starts_with(&prefix))
            .filter(|j| matches!(j.state, JobState::Pending | JobState::Running))
            .collect();
        jobs.sort_by_key(|j| j.id);
        jobs
    }

    async fn live_of(&self, set: &str) -> Vec<Job> {
        let name = format!("drover-{}-{set}", self.name);
        self.live()
            .await
            .into_iter()
            .filter(|j| j.name == name)
            .collect()
    }

    /// The spec drover would submit for `set`'s slot (for jobs submitted "by hand").
    fn spec(&self, set: &str, slot: u32) -> JobSpec {
        let options = RunOptions::default();
        let values = drover::sites::slurm::render::render(&self.ctx(&options)).unwrap();
        values.into_iter().find(|t| t.set == set).unwrap().job(slot)
    }
}

impl Drop for TestFleet {
    fn drop(&mut self) {
        self.bed.cancel_named(&format!("drover-{}-", self.name));
    }
}

fn rest(bed: &Bed) -> RestDriver {
    RestDriver::new(RestConfig::new(
        &bed.url,
        &bed.user,
        Secret::new(&bed.token),
    ))
    .unwrap()
}

fn cli(bed: &Bed, run_as: Option<&str>) -> CliDriver {
    CliDriver::new(CliConfig {
        run_as: run_as.map(str::to_owned),
        slurm_conf: Some(PathBuf::from(&bed.conf)),
        bin_dir: Some(bed.bin.clone()),
        timeout: Duration::from_secs(30),
    })
}

fn slots(jobs: &[Job]) -> Vec<u32> {
    let mut s: Vec<u32> = jobs
        .iter()
        .map(|j| JobIdentity::parse(&j.name, &j.comment).unwrap().slot)
        .collect();
    s.sort_unstable();
    s
}

fn creates(plan: &SitePlan) -> usize {
    plan.counts().create
}

fn assert_clean(report: &ApplyReport) {
    assert!(report.is_success(), "{report:#?}");
}

/// Polls until `check` holds for this fleet's live jobs, or panics after `secs`.
async fn wait_until(fleet: &TestFleet, secs: u64, what: &str, check: impl Fn(&[Job]) -> bool) {
    let start = Instant::now();
    loop {
        let jobs = fleet.live().await;
        if check(&jobs) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}: {jobs:#?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

// ---------------------------------------------------------------------------------------
// The behaviour suite, run through both drivers
// ---------------------------------------------------------------------------------------

/// Runners for two runner sets land in the queue with the right partition, GRES, name,
/// comment and user; a second plan is empty.
async fn submits_runners_for_two_sets(bed: &Bed, via: Via) {
    let f = fleet(bed, via, "two", &[cpu("builds"), gpu("cuda", 1)]);
    let desired = [("builds", 2), ("cuda", 1)];
    let plan = f.plan(&desired).await;
    assert!(plan.error.is_none(), "{plan:#?}");
    assert_eq!(creates(&plan), 3, "{plan:#?}");
    let text = drover::plan::render::text(
        &drover::plan::Plan {
            revision: None,
            sites: vec![plan.clone()],
        },
        false,
    );
    assert!(
        text.contains("+ create SlurmJob builds#1 (scale up)"),
        "{text}"
    );
    assert!(
        text.contains("+ create SlurmJob cuda#1 (scale up)"),
        "{text}"
    );
    let (_, report) = f.apply(&desired).await;
    assert_clean(&report);
    assert_eq!(report.applied.len(), 3, "{report:#?}");
    let builds = f.live_of("builds").await;
    let cuda = f.live_of("cuda").await;
    assert_eq!(slots(&builds), vec![1, 2], "{builds:#?}");
    assert_eq!(slots(&cuda), vec![1], "{cuda:#?}");
    for j in &builds {
        assert_eq!(
            (j.partition.as_str(), j.gres.as_str()),
            ("cpu", ""),
            "{j:?}"
        );
        assert_eq!(j.user, f.bed.user);
        assert!(
            j.comment
                .starts_with(&format!("drover:fleet={},set=builds,slot=", f.name))
        );
        assert_ne!(j.reason, "JobHeldUser", "released after submit: {j:?}");
    }
    let c = &cuda[0];
    assert_eq!(
        (c.partition.as_str(), c.gres.as_str()),
        ("gpu", "gpu:a100:1"),
        "{c:?}"
    );
    assert_eq!(c.name, format!("drover-{}-cuda", f.name));
    // Nothing more to do.
    let again = f.plan(&desired).await;
    assert_eq!(creates(&again) + again.counts().delete, 0, "{again:#?}");
    assert_eq!(again.counts().unchanged, 3, "{again:#?}");
}

async fn rest_submits_runners_for_two_sets(bed: Bed) {
    submits_runners_for_two_sets(&bed, Via::Rest).await;
}

async fn cli_submits_runners_for_two_sets(bed: Bed) {
    submits_runners_for_two_sets(&bed, Via::Cli).await;
}

/// With the node's 4 GPUs held by the first runner, later runners pend; scale-down
/// cancels pending ones newest first and never a running one.
async fn scale_down_cancels_pending_first_never_running(bed: &Bed, via: Via) {
    let f = fleet(bed, via, "down", &[gpu("big", 4)]);
    let (_, report) = f.apply(&[("big", 1)]).await;
    assert_clean(&report);
    // Other tests may hold GPUs for a while; wait for ours to start.
    wait_until(&f, 180, "the first runner to run", |jobs| {
        jobs.iter().any(|j| j.state == JobState::Running)
    })
    .await;
    let running = f.live().await[0].id;
    let (_, report) = f.apply(&[("big", 3)]).await;
    assert_clean(&report);
    let live = f.live().await;
    assert_eq!(slots(&live), vec![1, 2, 3], "{live:#?}");
    let pending: Vec<u64> = live
        .iter()
        .filter(|j| j.state == JobState::Pending)
        .map(|j| j.id)
        .collect();
    assert_eq!(pending.len(), 2, "the node's GPUs are all taken: {live:#?}");
    // 3 → 2: the newest pending job goes.
    let plan = f.plan(&[("big", 2)]).await;
    let deletes: Vec<&str> = plan
        .changes
        .iter()
        .filter(|c| c.action == Action::Delete)
        .map(|c| c.reason.as_deref().unwrap())
        .collect();
    assert_eq!(
        deletes,
        vec![format!("scale down: pending job {}", pending[1])],
        "{plan:#?}"
    );
    let (_, report) = f.apply(&[("big", 2)]).await;
    assert_clean(&report);
    let ids: Vec<u64> = f.live().await.iter().map(|j| j.id).collect();
    assert_eq!(ids, vec![running, pending[0]]);
    // → 0: the pending job goes, the running one stays.
    let (plan, report) = f.apply(&[("big", 0)]).await;
    assert_clean(&report);
    assert_eq!(plan.counts().delete, 1, "{plan:#?}");
    let kept = plan
        .changes
        .iter()
        .find(|c| c.action == Action::Unchanged)
        .unwrap();
    assert!(
        kept.reason.as_deref().unwrap().contains("never cancelled"),
        "{kept:?}"
    );
    let live = f.live().await;
    assert_eq!(live.len(), 1, "{live:#?}");
    assert_eq!((live[0].id, &live[0].state), (running, &JobState::Running));
}

async fn rest_scale_down_cancels_pending_first_never_running(bed: Bed) {
    scale_down_cancels_pending_first_never_running(&bed, Via::Rest).await;
}

async fn cli_scale_down_cancels_pending_first_never_running(bed: Bed) {
    scale_down_cancels_pending_first_never_running(&bed, Via::Cli).await;
}

/// Jobs with drover's name but not drover's comment, or not drover's user, are not drover's.
async fn foreign_jobs_are_never_touched(bed: &Bed, via: Via) {
    let f = fleet(bed, via, "foreign", &[cpu("web")]);
    let mut no_comment = f.spec("web", 1);
    no_comment.comment = String::new();
    let mut other_comment = f.spec("web", 1);
    other_comment.comment = format!("{},extra=1", other_comment.comment);
    let as_ci = f.driver();
    let mut foreign = vec![
        as_ci.submit(&no_comment).await.unwrap(),
        as_ci.submit(&other_comment).await.unwrap(),
    ];
    // Exactly drover's name and comment, but submitted by another user (root).
    let as_root = cli(&f.bed, None);
    foreign.push(as_root.submit(&f.spec("web", 1)).await.unwrap());
    let plan = f.plan(&[("web", 1)]).await;
    assert_eq!(creates(&plan), 1, "foreign jobs do not count: {plan:#?}");
    assert_eq!(
        plan.changes.len(),
        1,
        "foreign jobs are not shown: {plan:#?}"
    );
    let (_, report) = f.apply(&[("web", 1)]).await;
    assert_clean(&report);
    // Scale to zero with prune: drover's runner is running (kept), foreign ones untouched.
    let (plan, report) = f.apply(&[("web", 0)]).await;
    assert_clean(&report);
    for c in &plan.changes {
        for id in &foreign {
            assert!(
                !c.reason.as_deref().unwrap_or("").contains(&id.to_string()),
                "{c:?}"
            );
        }
    }
    let live: Vec<u64> = f.live().await.iter().map(|j| j.id).collect();
    for id in &foreign {
        assert!(live.contains(id), "foreign job {id} was touched: {live:?}");
    }
}

async fn rest_foreign_jobs_are_never_touched(bed: Bed) {
    foreign_jobs_are_never_touched(&bed, Via::Rest).await;
}

async fn cli_foreign_jobs_are_never_touched(bed: Bed) {
    foreign_jobs_are_never_touched(&bed, Via::Cli).await;
}

/// Two applies at once, an apply aborted mid-way, and held jobs left by a "crashed" drover
/// all end with exactly the desired number of runners, one per slot.
async fn no_duplicates_across_concurrent_and_interrupted_applies(bed: &Bed, via: Via) {
    let f = fleet(bed, via, "dup", &[cpu("jobs")]);
    let (a, b) = tokio::join!(f.apply(&[("jobs", 3)]), f.apply(&[("jobs", 3)]));
    assert_clean(&a.1);
    assert_clean(&b.1);
    let live = f.live().await;
    assert_eq!(slots(&live), vec![1, 2, 3], "{live:#?}");
    // Again, sequentially: nothing to do.
    let (plan, report) = f.apply(&[("jobs", 3)]).await;
    assert_clean(&report);
    assert_eq!(creates(&plan), 0, "{plan:#?}");
    assert_eq!(f.live().await.len(), 3);
    // An apply aborted mid-way (about when it starts submitting), then a fresh one (a
    // restarted drover).
    let started = Instant::now();
    let _ = f.plan(&[("jobs", 6)]).await;
    let abort_after = started.elapsed() + Duration::from_millis(10);
    let _ = tokio::time::timeout(abort_after, f.apply(&[("jobs", 6)])).await;
    let (_, report) = f.apply(&[("jobs", 6)]).await;
    assert_clean(&report);
    let live = f.live().await;
    assert_eq!(slots(&live), vec![1, 2, 3, 4, 5, 6], "{live:#?}");
    assert!(live.iter().all(|j| j.reason != "JobHeldUser"), "{live:#?}");
    // A drover that died between submit and release left a held job in slot 7, and a
    // held duplicate of slot 1: the next apply releases the first and cancels the second.
    let driver = f.driver();
    let left7 = driver.submit_held(&f.spec("jobs", 7)).await.unwrap();
    let dup1 = driver.submit_held(&f.spec("jobs", 1)).await.unwrap();
    let plan = f.plan(&[("jobs", 7)]).await;
    let c = plan.counts();
    assert_eq!((c.create, c.update, c.delete), (0, 1, 1), "{plan:#?}");
    let (_, report) = f.apply(&[("jobs", 7)]).await;
    assert_clean(&report);
    let live = f.live().await;
    assert_eq!(slots(&live), vec![1, 2, 3, 4, 5, 6, 7], "{live:#?}");
    let ids: Vec<u64> = live.iter().map(|j| j.id).collect();
    assert!(ids.contains(&left7) && !ids.contains(&dup1), "{live:#?}");
    wait_until(&f, 30, "the released job to leave its hold", |jobs| {
        jobs.iter().all(|j| j.reason != "JobHeldUser")
    })
    .await;
}

/// A submit of an apply that died lands held, in our slot, after our plan read the queue
/// (as a killed drover's last `sbatch` can): its lower id keeps the slot, so ours is
/// cancelled and that one released in its place; nothing is left held.
async fn cli_a_dead_applys_late_submit_keeps_the_slot_and_is_released(bed: Bed) {
    let tools = tempfile::tempdir().unwrap();
    set_mode(tools.path(), 0o1777);
    for tool in ["squeue", "scancel", "scontrol", "sinfo"] {
        std::os::unix::fs::symlink(bed.bin.join(tool), tools.path().join(tool)).unwrap();
    }
    // The first sbatch also submits the same job once more, first: the "dead apply's".
    let sbatch = tools.path().join("sbatch");
    std::fs::write(
        &sbatch,
        format!(
            "#!/bin/sh\nscript=$(mktemp)\ncat > \"$script\"\n\
             if mkdir {dir}/first 2>/dev/null; then {real} \"$@\" < \"$script\" > {dir}/late; fi\n\
             {real} \"$@\" < \"$script\"; rc=$?\nrm -f \"$script\"\nexit $rc\n",
            dir = tools.path().display(),
            real = bed.bin.join("sbatch").display(),
        ),
    )
    .unwrap();
    set_mode(&sbatch, 0o755);
    let extra = Extra {
        bin: Some(tools.path().to_owned()),
        ..Extra::default()
    };
    let f = fleet_with(&bed, Via::Cli, "late", &[cpu("jobs")], extra, None);
    let (plan, report) = f.apply(&[("jobs", 1)]).await;
    assert_eq!(creates(&plan), 1, "{plan:#?}");
    assert_clean(&report);
    assert_eq!(report.applied.len(), 1, "{report:#?}");
    let late: u64 = std::fs::read_to_string(tools.path().join("late"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let live = f.live().await;
    assert_eq!(slots(&live), vec![1], "{live:#?}");
    assert_eq!(live[0].id, late, "the lower id keeps the slot: {live:#?}");
    assert_ne!(live[0].reason, "JobHeldUser", "{live:#?}");
    let again = f.plan(&[("jobs", 1)]).await;
    assert_eq!(again.counts().unchanged, 1, "{again:#?}");
}

async fn rest_no_duplicates_across_concurrent_and_interrupted_applies(bed: Bed) {
    no_duplicates_across_concurrent_and_interrupted_applies(&bed, Via::Rest).await;
}

async fn cli_no_duplicates_across_concurrent_and_interrupted_applies(bed: Bed) {
    no_duplicates_across_concurrent_and_interrupted_applies(&bed, Via::Cli).await;
}

/// Checks become findings: a partition set DOWN, a missing partition, too few nodes,
/// missing GRES.
async fn site_checks_become_findings(bed: &Bed, via: Via) {
    let part = format!("dt{}", random_suffix());
    bed.scontrol(&[
        "create",
        &format!("PartitionName={part}"),
        "Nodes=localhost",
        "State=UP",
    ]);
    let _cleanup = DeletePartition(bed.clone(), part.clone());
    let docs = format!(
        r#"---
apiVersion: drover.dev/v1alpha1
kind: NodePool
metadata: {{name: own}}
spec: {{site: bed, nodeCount: 1, slurm: {{partition: {part}}}}}
---
apiVersion: drover.dev/v1alpha1
kind: NodePool
metadata: {{name: gone}}
spec: {{site: bed, slurm: {{partition: no-such-{part}}}}}
---
apiVersion: drover.dev/v1alpha1
kind: NodePool
metadata: {{name: big}}
spec: {{site: bed, nodeCount: 3, slurm: {{partition: cpu, gres: "gpu:h100:1"}}}}
"#
    );
    let extra = Extra {
        docs,
        ..Extra::default()
    };
    let f = fleet_with(bed, via, "checks", &[cpu("ok")], extra, None);
    let codes = |plan: &SitePlan, subject: &str| -> Vec<String> {
        plan.findings
            .iter()
            .filter(|x| x.subject.contains(subject))
            .map(|x| x.code.clone())
            .collect()
    };
    let plan = f.plan(&[]).await;
    assert!(plan.error.is_none(), "{plan:#?}");
    assert!(
        codes(&plan, &format!("NodePool own (partition {part})")).is_empty(),
        "{plan:#?}"
    );
    assert_eq!(codes(&plan, "NodePool gone"), vec!["partition-missing"]);
    assert_eq!(
        codes(&plan, "NodePool big"),
        vec!["pool-short-of-nodes", "gres-missing"]
    );
    assert!(codes(&plan, "NodePool gpu").is_empty(), "{plan:#?}");
    bed.scontrol(&["update", &format!("partitionname={part}"), "state=down"]);
    let plan = f.plan(&[]).await;
    assert_eq!(
        codes(&plan, "NodePool own"),
        vec!["partition-not-up"],
        "{plan:#?}"
    );
    let md = drover::plan::render::markdown(&drover::plan::Plan {
        revision: None,
        sites: vec![plan],
    });
    assert!(md.contains("`partition-not-up`"), "{md}");
}

async fn rest_site_checks_become_findings(bed: Bed) {
    site_checks_become_findings(&bed, Via::Rest).await;
}

async fn cli_site_checks_become_findings(bed: Bed) {
    site_checks_become_findings(&bed, Via::Cli).await;
}

struct DeletePartition(Bed, String);

impl Drop for DeletePartition {
    fn drop(&mut self) {
        let _ = self
            .0
            .tool("scontrol")
            .args(["delete", &format!("PartitionName={}", self.1)])
            .status();
    }
}

// ---------------------------------------------------------------------------------------
// Failures: unreachable site, bad tokens, slurmctld down
// ---------------------------------------------------------------------------------------

fn assert_unknown(plan: &SitePlan, must_contain: &[&str], token: &str) {
    let err = plan
        .error
        .as_deref()
        .unwrap_or_else(|| panic!("no error: {plan:#?}"));
    eprintln!("plan error: {err}");
    assert!(
        plan.changes.is_empty() && plan.findings.is_empty(),
        "{plan:#?}"
    );
    assert!(err.contains("Slurm site `bed`"), "{err}");
    for s in must_contain {
        assert!(err.contains(s), "{err} should contain {s}");
    }
    assert!(!err.contains(token), "the token leaked: {err}");
    let text = drover::plan::render::text(
        &drover::plan::Plan {
            revision: None,
            sites: vec![plan.clone()],
        },
        false,
    );
    assert!(text.contains("plan unknown"), "{text}");
}

async fn rest_unreachable_site_is_an_error_naming_the_site(bed: Bed) {
    let bed = &bed;
    let url = bed.rest_down_url.clone();
    let extra = Extra {
        url: Some(url.clone()),
        ..Extra::default()
    };
    let f = fleet_with(bed, Via::Rest, "unreach", &[cpu("x")], extra, None);
    let token = f.bed.token.clone();
    let plan = f.plan(&[("x", 1)]).await;
    assert_unknown(&plan, &["unreachable", &url], &token);
    let (plan, report) = f.apply(&[("x", 1)]).await;
    assert!(plan.error.is_some() && report.applied.is_empty());
    assert!(
        report.refused.as_deref().unwrap().contains("bed"),
        "{report:?}"
    );
}

async fn rest_wrong_or_expired_token_is_an_error_naming_the_site(bed: Bed) {
    let bed = &bed;
    for token in ["not-a-token".to_owned(), bed.expired_token.clone()] {
        let extra = Extra {
            token: Some(token.clone()),
            ..Extra::default()
        };
        let f = fleet_with(bed, Via::Rest, "token", &[cpu("x")], extra, None);
        let plan = f.plan(&[("x", 1)]).await;
        assert_unknown(&plan, &["wrong or expired"], &token);
        let (_, report) = f.apply(&[("x", 1)]).await;
        assert!(
            report.refused.is_some() && report.applied.is_empty(),
            "{report:?}"
        );
        assert!(f.live().await.is_empty());
    }
}

async fn missing_token_file_is_an_error_naming_the_site_and_secret(bed: Bed) {
    let bed = &bed;
    let f = fleet(bed, Via::Rest, "nofile", &[cpu("x")]);
    std::fs::remove_file(f._dir.path().join("slurm.jwt")).unwrap();
    let plan = f.plan(&[("x", 1)]).await;
    assert_unknown(&plan, &["slurm-jwt", "cannot read"], &f.bed.token);
}

/// Slurm 24.11's slurmrestd without v0.0.40 (`-d data_parser/v0.0.41,data_parser/v0.0.42`,
/// what 25.05 and later serve): drover plans and applies in v0.0.42, and re-plans with no
/// changes. (Before v0.0.41+ support this was "the server offers none of the API versions
/// drover speaks".)
#[tokio::test]
async fn rest_plan_and_apply_against_a_slurmrestd_without_v0040() {
    let bed = Bed::load("24.11");
    let url = bed
        .extra
        .get("REST_URL_NO_V0040")
        .expect("the 24.11 test bed has no REST_URL_NO_V0040")
        .clone();
    let extra = Extra {
        url: Some(url),
        ..Extra::default()
    };
    let f = fleet_with(&bed, Via::Rest, "nov40", &[cpu("svc")], extra, None);
    let plan = f.plan(&[("svc", 2)]).await;
    assert!(plan.error.is_none(), "{plan:#?}");
    assert_eq!(plan.api.as_deref(), Some("slurmrestd v0.0.42"), "{plan:#?}");
    assert_eq!(creates(&plan), 2, "{plan:#?}");
    let (_, report) = f.apply(&[("svc", 2)]).await;
    assert_clean(&report);
    assert_eq!(report.applied.len(), 2, "{report:#?}");
    let again = f.plan(&[("svc", 2)]).await;
    assert_eq!(
        (
            creates(&again),
            again.counts().delete,
            again.counts().unchanged
        ),
        (0, 0, 2),
        "{again:#?}"
    );
}

/// slurmctld down: the plan is unknown with an error naming the site, apply refuses and
/// changes nothing, and once slurmctld answers again the same runners are found.
async fn rest_slurmctld_down_means_plan_unknown_and_nothing_lost(bed: Bed) {
    let bed = &bed;
    let f = fleet(bed, Via::Rest, "ctld", &[cpu("svc")]);
    let (_, report) = f.apply(&[("svc", 2)]).await;
    assert_clean(&report);
    let before: Vec<u64> = f.live().await.iter().map(|j| j.id).collect();
    assert_eq!(before.len(), 2);
    let extra = Extra {
        url: Some(bed.ctld_down_url.clone()),
        timeout: Some(15),
        ..Extra::default()
    };
    let down = fleet_with(bed, Via::Rest, "ctld", &[cpu("svc")], extra, Some(&f.name));
    let started = Instant::now();
    let plan = down.plan(&[("svc", 2)]).await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "plan must not hang"
    );
    // slurmrestd answers after its connection retries (~9 s here); with a site timeout
    // shorter than that the error is "no answer within the site timeout", just as unknown.
    assert_unknown(&plan, &["slurmctld is down or unreachable"], &f.bed.token);
    let (_, report) = down.apply(&[("svc", 3)]).await;
    assert!(
        report.refused.is_some() && report.applied.is_empty(),
        "{report:?}"
    );
    // The controller "comes back": the same two runners, nothing to create.
    let after: Vec<u64> = f.live().await.iter().map(|j| j.id).collect();
    assert_eq!(after, before);
    let plan = f.plan(&[("svc", 2)]).await;
    assert_eq!(
        (plan.counts().create, plan.counts().unchanged),
        (0, 2),
        "{plan:#?}"
    );
    std::mem::forget(down); // same fleet name: `f` cancels the jobs
}

// ---------------------------------------------------------------------------------------
// Policies: dry run, report-only, prune
// ---------------------------------------------------------------------------------------

async fn dry_run_submits_nothing_and_reports_what_it_would_do(bed: Bed) {
    let bed = &bed;
    let f = fleet(bed, Via::Rest, "dry", &[cpu("d")]);
    let (plan, report) = f
        .apply_with(
            &[("d", 2)],
            ApplyOptions {
                dry_run: true,
                ..ApplyOptions::default()
            },
        )
        .await;
    assert_eq!(creates(&plan), 2);
    assert_eq!(report.applied.len(), 2, "{report:#?}");
    assert!(f.live().await.is_empty());
}

async fn report_only_site_refuses_to_apply(bed: Bed) {
    let bed = &bed;
    let f = fleet(bed, Via::Cli, "ro", &[cpu("r")]);
    let mut validation = validate_dir(f._dir.path(), &LoadOptions::default()).unwrap();
    validation
        .repo
        .sites
        .get_mut("bed")
        .unwrap()
        .value
        .spec
        .policy = drover::fleet::model::SitePolicy::ReportOnly;
    let options = options(&[("r", 1)]);
    let ctx = SiteContext {
        repo: &validation.repo,
        site: &validation.repo.sites["bed"],
        options: &options,
    };
    let (plan, report) = drover::sites::slurm::apply(&ctx).await;
    assert_eq!(creates(&plan), 1);
    assert!(
        report.refused.as_deref().unwrap().contains("report-only"),
        "{report:?}"
    );
    assert!(f.live().await.is_empty());
}

/// Pending jobs of a runner set that is no longer declared are cancelled only with prune;
/// running ones are reported.
async fn undeclared_sets_are_pruned_only_with_prune(bed: Bed) {
    let bed = &bed;
    let f = fleet(bed, Via::Rest, "prune", &[cpu("keep")]);
    // A pending job of a set the fleet no longer declares: a partition that is DOWN keeps it
    // pending.
    let part = format!("dp{}", random_suffix());
    bed.scontrol(&[
        "create",
        &format!("PartitionName={part}"),
        "Nodes=localhost",
        "State=DOWN",
    ]);
    let _cleanup = DeletePartition(bed.clone(), part.clone());
    let mut old = f.spec("keep", 1);
    let identity = JobIdentity::new(f.name.clone(), "bed", "old", 1);
    old.name = identity.job_name();
    old.comment = identity.comment();
    old.partition = part;
    let id = f.driver().submit(&old).await.unwrap();
    let no_prune = ApplyOptions {
        prune: Some(false),
        ..ApplyOptions::default()
    };
    let (plan, report) = f.apply_with(&[("keep", 0)], no_prune).await;
    assert_clean(&report);
    assert_eq!(plan.counts().delete, 0, "{plan:#?}");
    assert!(f.live().await.iter().any(|j| j.id == id));
    let prune = ApplyOptions {
        prune: Some(true),
        allow_mass_prune: false,
        ..ApplyOptions::default()
    };
    // The only owned job is the pruned one: 100% > 50%, so the mass-prune guard refuses.
    let (_, report) = f.apply_with(&[("keep", 0)], prune.clone()).await;
    assert!(
        report
            .refused
            .as_deref()
            .unwrap()
            .contains("--allow-mass-prune"),
        "{report:?}"
    );
    let (plan, report) = f
        .apply_with(
            &[("keep", 0)],
            ApplyOptions {
                allow_mass_prune: true,
                ..prune
            },
        )
        .await;
    assert_clean(&report);
    let delete = plan
        .changes
        .iter()
        .find(|c| c.action == Action::Delete)
        .unwrap();
    assert_eq!(delete.target.name, "old#1");
    assert!(!f.live().await.iter().any(|j| j.id == id));
}

/// Secrets from SecretRefs reach the job's environment, never the plan or render output.
async fn secret_env_reaches_the_job_but_not_the_plan(bed: Bed) {
    let bed = &bed;
    let secret_file = tempfile::NamedTempFile::new().unwrap();
    let secret = format!("s3cr3t-{}", random_suffix());
    std::fs::write(secret_file.path(), &secret).unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    set_mode(out_dir.path(), 0o1777);
    let out = out_dir.path().join("seen");
    let docs = format!(
        r#"---
apiVersion: drover.dev/v1alpha1
kind: SecretRef
metadata: {{name: hf}}
spec: {{file: {{path: "{}"}}}}
---
apiVersion: drover.dev/v1alpha1
kind: RunnerSet
metadata: {{name: env}}
spec:
  github: {{org: acme}}
  labels: [self-hosted, env-secret]
  pool: cpu
  max: 2
  command: [sh, -c, 'printf %s "$HF_TOKEN" > {}; sleep 300']
  env:
    - {{name: HF_TOKEN, secretRef: hf}}
    - {{name: MODE, value: test}}
"#,
        secret_file.path().display(),
        out.display()
    );
    let extra = Extra {
        docs,
        ..Extra::default()
    };
    let f = fleet_with(bed, Via::Rest, "secret", &[], extra, None);
    let options = options(&[("env", 1)]);
    let values = drover::sites::slurm::render_values(&f.ctx(&options)).unwrap();
    let rendered = serde_json::to_string(&values).unwrap();
    assert!(!rendered.contains(&secret), "{rendered}");
    assert!(
        rendered.contains("<secret from SecretRef hf>"),
        "{rendered}"
    );
    let (plan, report) = f.apply(&[("env", 1)]).await;
    assert_clean(&report);
    assert!(!format!("{plan:?}{report:?}").contains(&secret));
    let start = Instant::now();
    while std::fs::read_to_string(&out).map_or(true, |t| t.is_empty()) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "job did not write {out:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(std::fs::read_to_string(&out).unwrap(), secret);
    let jobs = format!("{:?}", f.driver().jobs().await.unwrap());
    assert!(!jobs.contains(&secret), "the secret shows in the queue");
}

per_generation!(
    rest_submits_runners_for_two_sets,
    cli_submits_runners_for_two_sets,
    rest_scale_down_cancels_pending_first_never_running,
    cli_scale_down_cancels_pending_first_never_running,
    rest_foreign_jobs_are_never_touched,
    cli_foreign_jobs_are_never_touched,
    rest_no_duplicates_across_concurrent_and_interrupted_applies,
    cli_no_duplicates_across_concurrent_and_interrupted_applies,
    cli_a_dead_applys_late_submit_keeps_the_slot_and_is_released,
    rest_site_checks_become_findings,
    cli_site_checks_become_findings,
    rest_unreachable_site_is_an_error_naming_the_site,
    rest_wrong_or_expired_token_is_an_error_naming_the_site,
    missing_token_file_is_an_error_naming_the_site_and_secret,
    rest_slurmctld_down_means_plan_unknown_and_nothing_lost,
    dry_run_submits_nothing_and_reports_what_it_would_do,
    report_only_site_refuses_to_apply,
    undeclared_sets_are_pruned_only_with_prune,
    secret_env_reaches_the_job_but_not_the_plan,
);
