//! Drift in `drover serve`: a Kubernetes site on the API emulator, a Slurm site on the
//! real test bed (a runner set of min 1 running `sleep 600`, no JIT), and drift issues on
//! the GitHub emulator (every request and response checked against GitHub's OpenAPI
//! description). Drift checks run every second.
//!
//! - `report`: an owned object edited by another field manager and a cancelled runner job
//!   show in `/status`, `/metrics`, the page and one issue per site with the right diff;
//!   nothing is written to either site over several rounds; each issue is opened once and
//!   updated (once) when the drift changes; a stale issue of a clean site and a duplicate
//!   made by hand are closed; a pull request carrying the label is left alone; a new
//!   revision with `drift: heal` repairs both and the issues are closed.
//! - `heal`: the schedule repairs both drifts by itself and no issue is needed; a failing
//!   GitHub is shown and counted and never stops the drift checks.
//!
//! Needs the Slurm test bed (`scripts/slurm-testbed.sh up`, `eval "$(… env)"`).

use crate::support::testbed_var;
use std::path::PathBuf;
use std::time::Duration;

use crate::serve_support::{
    Running, config, eventually, kube_site, slurm_rest_site, start, unique,
};
use crate::support::github_emulator::{self, GithubEmulator};
use crate::support::kube_emulator::{KubeEmulator, NodeBuilder};
use drover::serve::LocalDir;
use drover::serve::drift::DriftIssues;
use drover::sites::RunOptions;
use serde_json::Value;

const CONTEXT: &str = "drift-ctx";
const NS: &str = "runners";
const ISSUES_REPO: &str = "acme/fleet-ops";
const PAT: &str = "drift-test-token";
const LONG: Duration = Duration::from_secs(60);

/// One test's world: fleet directory, Kubernetes and GitHub emulators, Slurm settings.
/// Cancels the fleet's Slurm jobs when dropped.
struct World {
    name: String,
    emu: KubeEmulator,
    github: GithubEmulator,
    tmp: tempfile::TempDir,
    dir: PathBuf,
    kubeconfig: PathBuf,
    slurm_conf: String,
}

impl World {
    async fn new(tag: &str, drift: &str) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let emu = KubeEmulator::start().await;
        emu.add_node(NodeBuilder::new("cpu-1").label("pool", "cpu"));
        let github = GithubEmulator::start(github_emulator::Config {
            pat: Some(PAT.into()),
            ..github_emulator::Config::default()
        })
        .await;
        let kubeconfig = tmp.path().join("kubeconfig");
        std::fs::write(&kubeconfig, emu.kubeconfig_yaml(CONTEXT)).unwrap();
        std::fs::write(
            tmp.path().join("slurm.jwt"),
            testbed_var("DROVER_SLURM_TOKEN"),
        )
        .unwrap();
        std::fs::write(tmp.path().join("gh-token"), PAT).unwrap();
        let scratch = tmp.path().join("scratch");
        std::fs::create_dir(&scratch).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&scratch, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let dir = tmp.path().join("fleet");
        std::fs::create_dir(&dir).unwrap();
        let world = Self {
            name: unique(tag),
            emu,
            github,
            dir,
            tmp,
            kubeconfig,
            slurm_conf: testbed_var("DROVER_SLURM_CONF"),
        };
        world.write_fleet(drift);
        world
    }

    /// The fleet: GitHub on the emulator, drift policy `drift`, the Kubernetes site `lab`
    /// (two runner sets) and the Slurm site `hpc` (one runner set, min 1, `sleep 600`).
    fn write_fleet(&self, drift: &str) {
        let path = |f: &str| self.tmp.path().join(f).display().to_string();
        let yaml = format!(
            r#"apiVersion: drover.dev/v1alpha1
kind: Fleet
metadata: {{name: {name}}}
spec:
  github: {{url: "{gh}", tokenRef: gh}}
  reconcile: {{drift: {drift}}}
---
apiVersion: drover.dev/v1alpha1
kind: SecretRef
metadata: {{name: gh}}
spec: {{file: {{path: "{gh_token}"}}}}
{slurm}---
apiVersion: drover.dev/v1alpha1
kind: RunnerSet
metadata: {{name: hpc-runner}}
spec:
  github: {{org: acme}}
  labels: [self-hosted, hpc-drift]
  pool: hpc-cpu
  min: 1
  max: 2
  resources: {{cpu: "1", memory: 64Mi}}
  command: [sleep, "600"]
  timeLimitMinutes: 15
"#,
            name = self.name,
            gh = self.github.url,
            gh_token = path("gh-token"),
            slurm = slurm_rest_site("hpc", "hpc-cpu", &path("slurm.jwt"), &path("scratch")),
        ) + &kube_site("lab", CONTEXT, NS, 2, "2.321.0");
        std::fs::write(self.dir.join("fleet.yaml"), yaml).unwrap();
    }

    /// Starts the service: drift checks every second, issues in [`ISSUES_REPO`].
    async fn serve(&self) -> Running {
        let mut cfg = config(RunOptions {
            kubeconfig: Some(self.kubeconfig.clone()),
            ..RunOptions::default()
        });
        cfg.reconcile_interval = Duration::from_secs(1);
        cfg.drift_issues = Some(DriftIssues {
            repo: ISSUES_REPO.into(),
            labels: vec!["drover-drift".into(), "infra".into()],
        });
        start(cfg, Box::new(LocalDir(self.dir.clone()))).await
    }

    fn templates(&self) -> Vec<Value> {
        let mut t = self.emu.list_objects("v1", "PodTemplate", Some(NS));
        t.sort_by_key(|t| {
            t["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        });
        t
    }

    fn images(&self) -> Vec<String> {
        self.templates()
            .iter()
            .map(|t| {
                t["template"]["spec"]["containers"][0]["image"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect()
    }

    fn images_are_fleets(&self) -> bool {
        let images = self.images();
        images.len() == 2
            && images
                .iter()
                .all(|i| i == "ghcr.io/actions/actions-runner:2.321.0")
    }

    /// Edits runner set `i`'s PodTemplate image as `kubectl` would.
    fn edit_image(&self, i: usize, image: &str) {
        let mut t = self.templates()[i].clone();
        t["template"]["spec"]["containers"][0]["image"] = image.into();
        self.emu.put_object_as("kubectl", t).unwrap();
    }

    fn slurm(&self, cmd: &str, args: &[&str]) -> String {
        let out = crate::support::slurm_bed::tool(cmd)
            .args(args)
            .env("SLURM_CONF", &self.slurm_conf)
            .output()
            .unwrap_or_else(|e| panic!("run {cmd}: {e}"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// This fleet's live (pending or running) runner jobs.
    fn jobs(&self) -> Vec<String> {
        let name = format!("drover-{}-hpc-runner", self.name);
        self.slurm("squeue", &["-h", "-o", "%i %j %T"])
            .lines()
            .filter_map(|l| {
                let mut parts = l.split_whitespace();
                Some((parts.next()?, parts.next()?, parts.next()?))
            })
            .filter(|(_, n, state)| *n == name && matches!(*state, "PENDING" | "RUNNING"))
            .map(|(id, ..)| id.to_string())
            .collect()
    }

    fn scancel_all(&self) {
        let ids = self.jobs();
        if !ids.is_empty() {
            let mut args: Vec<&str> = vec![];
            args.extend(ids.iter().map(String::as_str));
            self.slurm("scancel", &args);
        }
    }

    fn open_issues(&self) -> Vec<crate::support::github_emulator::issues::Issue> {
        self.github
            .issues(ISSUES_REPO)
            .into_iter()
            .filter(|i| i.state == "open" && !i.pull_request)
            .collect()
    }

    /// Whether issue `number` is open and its body contains `text`.
    fn open_issue_says(&self, number: u64, text: &str) -> bool {
        self.open_issues()
            .iter()
            .any(|i| i.number == number && i.body.as_deref().unwrap_or_default().contains(text))
    }

    fn posts(&self) -> usize {
        self.github
            .issue_writes()
            .iter()
            .filter(|(m, ..)| m == "POST")
            .count()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let prefix = format!("drover-{}-", self.name);
        let out = self.slurm("squeue", &["-h", "-o", "%i %j"]);
        let ids: Vec<&str> = out
            .lines()
            .filter_map(|l| l.split_once(' '))
            .filter(|(_, n)| n.starts_with(&prefix))
            .map(|(id, _)| id)
            .collect();
        if !ids.is_empty() {
            self.slurm("scancel", &ids);
        }
    }
}

fn metric(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn checks(status: &Value, site: &str) -> u64 {
    status["drift"][site]["checked_at"].as_u64().unwrap_or(0)
}

/// Waits until both sites had `n` more drift checks (counted in the metrics).
async fn rounds(svc: &Running, n: f64) {
    let count = |m: &str| {
        ["lab", "hpc"]
            .iter()
            .map(|s| {
                ["clean", "drifted", "healed", "failed"]
                    .iter()
                    .map(|o| {
                        metric(
                            m,
                            &format!("drover_drift_checks_total{{site=\"{s}\",outcome=\"{o}\"}}"),
                        )
                    })
                    .sum::<f64>()
            })
            .fold(f64::MAX, f64::min)
    };
    let start = count(&svc.metrics().await);
    let started = std::time::Instant::now();
    while count(&svc.metrics().await) < start + n {
        assert!(started.elapsed() < LONG, "drift checks stopped");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_policy_shows_drift_in_one_issue_per_site_and_writes_nothing() {
    let world = World::new("drift-report", "report").await;
    // An issue someone left open for hpc (found by its marker, reused, not duplicated)
    // and a pull request carrying the label (never touched).
    let old_hpc = world.github.add_issue(
        ISSUES_REPO,
        "old drift report",
        "<!-- drover:drift site=hpc -->\nan older report",
        &["drover-drift"],
        false,
    );
    let pr = world.github.add_issue(
        ISSUES_REPO,
        "a pull request",
        "<!-- drover:drift site=lab -->",
        &["drover-drift"],
        true,
    );
    let svc = world.serve().await;

    // The startup reconcile applies both sites; the drift checks then find them clean
    // and the stale hpc issue is closed.
    eventually("the Kubernetes objects", LONG, || world.images_are_fleets()).await;
    eventually("one Slurm runner", LONG, || world.jobs().len() == 1).await;
    let clean = svc
        .wait_for("clean drift checks", LONG, |s| {
            s["drift"]["lab"]["outcome"] == "clean" && s["drift"]["hpc"]["outcome"] == "clean"
        })
        .await;
    assert_eq!(clean["drift"]["lab"]["policy"], "report", "{clean:#}");
    eventually("the stale hpc issue closed", LONG, || {
        world.open_issues().is_empty()
    })
    .await;
    let closed = &world.github.issues(ISSUES_REPO)[old_hpc as usize - 1];
    assert_eq!(closed.state_reason.as_deref(), Some("completed"));

    // Drift on both sites: an image changed by another field manager, a runner cancelled.
    world.edit_image(0, "evil/image:latest");
    world.scancel_all();
    eventually("the runner cancelled", LONG, || world.jobs().is_empty()).await;
    let writes = world.emu.write_count();
    let status = svc
        .wait_for("both drifts reported", LONG, |s| {
            s["drift"]["lab"]["report"]["changed"]
                .as_array()
                .is_some_and(|c| c.len() == 1)
                && s["drift"]["hpc"]["report"]["below_min"]["hpc-runner"] == 1
        })
        .await;
    let lab = &status["drift"]["lab"];
    assert_eq!(lab["outcome"], "drifted");
    assert_eq!(lab["healed"], 0);
    let changed = &lab["report"]["changed"][0];
    assert_eq!(changed["target"]["kind"], "PodTemplate");
    assert_eq!(changed["target"]["name"], "lab-set-0");
    let diff = changed["diff"].as_str().unwrap();
    let line = |sign: char, text: &str| {
        diff.lines()
            .any(|l| l.starts_with(sign) && l.contains("image:") && l.contains(text))
    };
    assert!(
        line('-', "evil/image:latest") && line('+', "actions-runner:2.321.0"),
        "{diff}"
    );
    assert_eq!(status["drift"]["hpc"]["objects"], 1);

    // One issue per site: drover's for lab, the old one reused (and rewritten) for hpc.
    eventually("two drift issues", LONG, || {
        let open = world.open_issues();
        open.len() == 2
            && open
                .iter()
                .any(|i| i.body.as_deref().unwrap_or_default().contains("below min"))
    })
    .await;
    let open = world.open_issues();
    let lab_issue = open
        .iter()
        .find(|i| i.title == "drover: drift on site lab")
        .expect("the lab issue");
    let body = lab_issue.body.clone().unwrap();
    assert!(body.starts_with("<!-- drover:drift site=lab -->"), "{body}");
    assert!(
        body.lines()
            .any(|l| l.starts_with('+')
                && l.contains("image: ghcr.io/actions/actions-runner:2.321.0")),
        "{body}"
    );
    assert_eq!(lab_issue.labels, vec!["drover-drift", "infra"]);
    assert!(
        open.iter().all(|i| i.number != old_hpc),
        "a closed issue is not reopened"
    );
    let hpc_issue = open
        .iter()
        .find(|i| i.title == "drover: drift on site hpc")
        .expect("the hpc issue");
    assert!(
        hpc_issue
            .body
            .as_deref()
            .unwrap()
            .contains("runner set `hpc-runner` below min: 1 missing")
    );

    // Several rounds later: still exactly these two issues, no write to either site.
    rounds(&svc, 3.0).await;
    assert_eq!(world.posts(), 2, "each issue opened once");
    assert_eq!(world.open_issues().len(), 2);
    assert_eq!(world.emu.write_count(), writes, "report writes nothing");
    assert!(world.jobs().is_empty(), "report submits nothing");
    assert_eq!(world.images()[0], "evil/image:latest");

    let metrics = svc.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "drover_drift_objects{site=\"lab\",kind=\"changed\"}"
        ),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "drover_drift_objects{site=\"hpc\",kind=\"runners_below_min\"}"
        ),
        1.0
    );
    assert_eq!(metric(&metrics, "drover_site_drifted{site=\"lab\"}"), 1.0);
    assert_eq!(metric(&metrics, "drover_site_drifted{site=\"hpc\"}"), 1.0);
    assert_eq!(
        metric(
            &metrics,
            "drover_drift_issue_writes_total{action=\"created\"}"
        ),
        2.0
    );
    assert_eq!(metric(&metrics, "drover_drift_issue_errors_total"), 0.0);
    for family in [
        "# TYPE drover_drift_objects gauge",
        "# TYPE drover_site_drifted gauge",
        "# TYPE drover_drift_checks counter",
        "# TYPE drover_drift_issue_writes counter",
        "# TYPE drover_drift_issue_errors counter",
    ] {
        assert!(metrics.contains(family), "{family}: {metrics}");
    }
    assert!(metrics.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
    let status = svc.status().await;
    assert_eq!(
        status["drift"]["lab"]["issue"]["number"], lab_issue.number,
        "{status:#}"
    );
    let page = svc.get("/").await.1;
    assert!(page.contains("<h2>Drift</h2>"), "{page}");
    assert!(
        page.contains(&format!(">#{}</a>", lab_issue.number)),
        "{page}"
    );
    assert!(page.contains("lab-set-0"), "{page}");

    // The drift changes: the issue body is updated, not a new issue. A duplicate made by
    // hand is closed; drover's (the oldest) stays.
    let patches_before = world
        .github
        .issue_writes()
        .iter()
        .filter(|(m, _, n)| m == "PATCH" && *n == lab_issue.number)
        .count();
    let dup = world.github.add_issue(
        ISSUES_REPO,
        "drift on lab (by hand)",
        "<!-- drover:drift site=lab -->\nsame thing",
        &["drover-drift"],
        false,
    );
    world.edit_image(1, "evil/other:1");
    eventually("the lab issue updated", LONG, || {
        world.open_issue_says(lab_issue.number, "evil/other:1")
    })
    .await;
    eventually("the duplicate closed", LONG, || {
        world.github.issues(ISSUES_REPO)[dup as usize - 1].state == "closed"
    })
    .await;
    assert_eq!(
        world.github.issues(ISSUES_REPO)[dup as usize - 1]
            .state_reason
            .as_deref(),
        Some("duplicate")
    );
    rounds(&svc, 2.0).await;
    let patches = world
        .github
        .issue_writes()
        .iter()
        .filter(|(m, _, n)| m == "PATCH" && *n == lab_issue.number)
        .count();
    assert_eq!(
        patches,
        patches_before + 1,
        "the body is written once per change"
    );
    assert_eq!(world.posts(), 2);

    // Someone removes the label from drover's lab issue: drover still knows it (no second
    // issue) and still closes it below.
    world
        .github
        .set_issue_labels(ISSUES_REPO, lab_issue.number, &["infra"]);
    rounds(&svc, 2.0).await;
    assert_eq!(world.posts(), 2, "no second lab issue");

    // One issue that cannot be read fails its site alone: the hpc issue loses its label
    // too, and GitHub answers 502 for it. hpc is skipped (no second hpc issue, its link
    // kept) and the error says which; the lab issue is still updated.
    world
        .github
        .set_issue_labels(ISSUES_REPO, hpc_issue.number, &["infra"]);
    let hpc_path = format!("/repos/{ISSUES_REPO}/issues/{}", hpc_issue.number);
    world.github.fail_path("GET", &hpc_path, 502);
    world.edit_image(1, "evil/third:1");
    eventually(
        "the lab issue updated past a broken hpc issue",
        LONG,
        || world.open_issue_says(lab_issue.number, "evil/third:1"),
    )
    .await;
    let status = svc
        .wait_for("the hpc issue error", LONG, |s| {
            s["drift_issues"]["error"]
                .as_str()
                .is_some_and(|e| e.contains(&format!("site hpc: issue #{}", hpc_issue.number)))
        })
        .await;
    assert_eq!(
        status["drift"]["hpc"]["issue"]["number"], hpc_issue.number,
        "{status:#}"
    );
    assert_eq!(world.posts(), 2, "no second hpc issue");
    world.github.clear_path_faults();
    world
        .github
        .set_issue_labels(ISSUES_REPO, hpc_issue.number, &["drover-drift", "infra"]);

    // A new revision with `drift: heal` repairs both sites; the issues are closed.
    world.write_fleet("heal");
    eventually("the images repaired", LONG, || world.images_are_fleets()).await;
    eventually("the runner resubmitted", LONG, || world.jobs().len() == 1).await;
    eventually("the issues closed", LONG, || world.open_issues().is_empty()).await;
    let lab_closed = &world.github.issues(ISSUES_REPO)[lab_issue.number as usize - 1];
    assert_eq!(lab_closed.state_reason.as_deref(), Some("completed"));
    let status = svc
        .wait_for("clean drift checks", LONG, |s| {
            s["drift"]["lab"]["outcome"] == "clean"
                && s["drift"]["hpc"]["outcome"] == "clean"
                && s["drift"]["lab"]["policy"] == "heal"
        })
        .await;
    assert!(status["drift"]["lab"]["issue"].is_null(), "{status:#}");
    for i in world.github.issues(ISSUES_REPO) {
        if i.number == pr {
            assert_eq!(i.state, "open", "pull requests are not drift issues");
        } else {
            assert_eq!(i.state, "closed", "{i:?}");
        }
    }
    let metrics = svc.metrics().await;
    assert_eq!(metric(&metrics, "drover_site_drifted{site=\"lab\"}"), 0.0);
    assert_eq!(world.posts(), 2, "never more than one issue per site");
    svc.shutdown().await;
    world.github.assert_conformant();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heal_policy_repairs_drift_on_the_schedule() {
    let world = World::new("drift-heal", "heal").await;
    let svc = world.serve().await;
    eventually("the Kubernetes objects", LONG, || world.images_are_fleets()).await;
    eventually("one Slurm runner", LONG, || world.jobs().len() == 1).await;
    svc.wait_for("clean drift checks", LONG, |s| {
        s["drift"]["lab"]["outcome"] == "clean" && s["drift"]["hpc"]["outcome"] == "clean"
    })
    .await;
    let first = world.jobs();

    world.edit_image(0, "evil/image:latest");
    world.scancel_all();
    eventually("the image repaired", LONG, || world.images_are_fleets()).await;
    eventually("a new runner", LONG, || {
        let jobs = world.jobs();
        jobs.len() == 1 && jobs != first
    })
    .await;
    let status = svc
        .wait_for("both heals recorded", LONG, |s| {
            checks(s, "lab") > 0
                && s["drift"]["lab"]["outcome"] == "clean"
                && s["drift"]["hpc"]["outcome"] == "clean"
        })
        .await;
    assert_eq!(status["drift"]["lab"]["policy"], "heal");
    let metrics = svc.metrics().await;
    assert!(
        metric(
            &metrics,
            "drover_drift_checks_total{site=\"lab\",outcome=\"healed\"}"
        ) >= 1.0,
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            "drover_drift_checks_total{site=\"hpc\",outcome=\"healed\"}"
        ) >= 1.0,
        "{metrics}"
    );
    assert_eq!(metric(&metrics, "drover_site_drifted{site=\"lab\"}"), 0.0);
    // Healed within the check: the drift never outlived a round, so no issue was needed.
    assert_eq!(world.posts(), 0);
    assert!(world.open_issues().is_empty());

    // GitHub fails (every retry of three syncs' listings): the sync error is shown and
    // counted, and drift checks go on; the next sync clears it.
    world.github.inject(github_emulator::Fault::Server(502), 9);
    let failed = svc
        .wait_for("the sync error", LONG, |s| {
            s["drift_issues"]["error"].as_str().is_some()
        })
        .await;
    let error = failed["drift_issues"]["error"].as_str().unwrap();
    assert!(error.contains("502"), "{error}");
    assert!(!error.contains(PAT), "no token in errors");
    assert!(metric(&svc.metrics().await, "drover_drift_issue_errors_total") >= 1.0);
    assert!(svc.get("/").await.1.contains("sync failed"));
    rounds(&svc, 1.0).await;
    svc.wait_for("the sync recovered", LONG, |s| {
        s["drift_issues"]["error"].is_null()
    })
    .await;
    svc.shutdown().await;
    world.github.assert_conformant();
}
