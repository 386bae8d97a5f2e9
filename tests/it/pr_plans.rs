//! `drover plan --pr` end to end: the real binary against the GitHub emulator (every
//! request and response checked against GitHub's OpenAPI description), with the event
//! payload, repository and token in the environment as GitHub Actions sets them.
//! Offline plans use copies of the example `fleet/`; the live plan runs against the
//! Kubernetes emulator. Snapshot tests pin the markdown people read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::support::github_emulator::{Config, GithubEmulator};
use crate::support::kube_emulator::KubeEmulator;
use drover::fleet::model::SitePolicy;
use drover::plan::{Action, Change, Finding, FindingSeverity, Plan, SiteKind, SitePlan, Target};
use drover::pr::comment::{self, MARKER, Report};
use drover::pr::trust::SiteMode;
use drover::pr::{Annotation, PrContext};
use serde_json::{Value, json};

const REPO: &str = "acme/fleet";
const PAT: &str = "test-pat-4f9c2d7e1a";
const SHA1: &str = "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d";
const SHA2: &str = "9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c";

/// A checkout: `<tmp>/base/fleet` (the base branch) and `<tmp>/pr/fleet` (the pull
/// request), each a copy of the example fleet, with a `.git` marking the repo root.
struct Checkout {
    tmp: tempfile::TempDir,
}

impl Checkout {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("fleet");
        for side in ["base", "pr"] {
            std::fs::create_dir_all(tmp.path().join(side).join(".git")).unwrap();
            copy_dir(&example, &tmp.path().join(side).join("fleet"));
        }
        std::fs::create_dir_all(tmp.path().join("home")).unwrap();
        Checkout { tmp }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// Edits a file of the pull request's fleet.
    fn edit_pr(&self, file: &str, edit: impl Fn(&str) -> String) {
        let path = self.path("pr/fleet").join(file);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        std::fs::write(&path, edit(&text)).unwrap();
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_default()
    }

    /// The `pull_request` event payload for head `sha` from `head_repo`.
    fn event(&self, number: u64, sha: &str, head_repo: &str) -> PathBuf {
        let path = self.path(&format!("event-{number}-{sha}.json"));
        let event = json!({
            "action": "synchronize", "number": number,
            "pull_request": {"number": number,
                "head": {"sha": sha, "ref": "change", "repo": {"full_name": head_repo}},
                "base": {"ref": "main", "repo": {"full_name": REPO}}},
            "repository": {"full_name": REPO},
        });
        std::fs::write(&path, event.to_string()).unwrap();
        path
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// What one run of the binary produced.
struct Run {
    out: Output,
    summary: String,
}

impl Run {
    fn code(&self) -> Option<i32> {
        self.out.status.code()
    }
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }
}

/// Runs `drover plan <pr/fleet> --base-dir <base/fleet> --pr extra…` as a GitHub Actions
/// step would, in a clean environment (`--pr` is left out when `extra` has it; an empty
/// value in `env` unsets a variable).
async fn plan_pr(
    co: &Checkout,
    emu: &GithubEmulator,
    event: &Path,
    extra: &[&str],
    env: &[(&str, String)],
) -> Run {
    let summary = co.path(&format!("step-summary-{}", rand_suffix()));
    let mut args = vec![
        "plan".to_string(),
        co.path("pr/fleet").display().to_string(),
        "--base-dir".into(),
        co.path("base/fleet").display().to_string(),
    ];
    if !extra.contains(&"--pr") {
        args.push("--pr".into());
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut vars: Vec<(String, String)> = vec![
        ("PATH".into(), std::env::var("PATH").unwrap_or_default()),
        ("HOME".into(), co.path("home").display().to_string()),
        ("GITHUB_ACTIONS".into(), "true".into()),
        ("GITHUB_EVENT_PATH".into(), event.display().to_string()),
        ("GITHUB_REPOSITORY".into(), REPO.into()),
        (
            "GITHUB_SHA".into(),
            "ffffffffffffffffffffffffffffffffffffffff".into(),
        ),
        (
            "GITHUB_WORKSPACE".into(),
            co.path("pr").display().to_string(),
        ),
        ("GITHUB_API_URL".into(), emu.url.clone()),
        ("GITHUB_SERVER_URL".into(), "https://github.example".into()),
        ("GITHUB_RUN_ID".into(), "4242".into()),
        ("GITHUB_TOKEN".into(), PAT.into()),
        ("GITHUB_STEP_SUMMARY".into(), summary.display().to_string()),
    ];
    for (k, v) in env {
        vars.retain(|(name, _)| name != k);
        if !v.is_empty() {
            vars.push((k.to_string(), v.clone()));
        }
    }
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
            .args(&args)
            .env_clear()
            .envs(vars)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let summary = std::fs::read_to_string(&summary).unwrap_or_default();
    Run { out, summary }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

async fn emulator() -> GithubEmulator {
    GithubEmulator::start(Config {
        pat: Some(PAT.into()),
        app_public_pem: None,
        ..Config::default()
    })
    .await
}

fn line_of(text: &str, needle: &str) -> u32 {
    text.lines().position(|l| l.contains(needle)).unwrap() as u32 + 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_push_creates_the_comment_and_the_second_edits_it() {
    let emu = emulator().await;
    emu.add_pull(REPO, 12, SHA1, REPO);
    let other = emu.add_comment(REPO, 12, "LGTM, but see <!-- drover:plan --> later");
    // Enough discussion that drover's comment is on the second page of 100.
    for i in 0..120 {
        emu.add_comment(REPO, 12, &format!("comment {i}"));
    }
    let co = Checkout::new();
    co.edit_pr("runners/cpu.yaml", |t| t.replace("max: 20", "max: 21"));

    let first = plan_pr(&co, &emu, &co.event(12, SHA1, REPO), &[], &[]).await;
    assert_eq!(first.code(), Some(0), "{}", first.stderr());
    let comments = emu.comments(REPO, 12);
    assert_eq!(comments.len(), 122);
    let ours = comments.last().unwrap();
    assert!(ours.body.starts_with(MARKER), "{}", ours.body);
    assert!(ours.body.contains("at `1a2b3c4`"), "{}", ours.body);
    assert!(
        ours.body
            .contains("| eks-prod | Kubernetes | apply | base branch (offline) | 0 | 1 | 0 |"),
        "{}",
        ours.body
    );
    assert!(
        ours.body.contains(
            "<details><summary><code>~ ResourceQuota gha-runners/cpu-medium</code> update</summary>"
        ),
        "{}",
        ours.body
    );
    assert!(ours.body.contains("+    pods: \"21\""), "{}", ours.body);
    assert!(
        first.summary.contains("## drover plan:"),
        "{}",
        first.summary
    );
    insta::assert_snapshot!("pr_comment_offline_first_push", ours.body);
    let runs = emu.check_runs();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].head_sha, SHA1);
    assert_eq!(runs[0].conclusion.as_deref(), Some("success"));
    assert_eq!(
        runs[0].title.as_deref(),
        Some("0 to create, 1 to update, 0 to delete")
    );

    // The second push: a new head, a different change; the same comment is edited.
    co.edit_pr("runners/cpu.yaml", |t| t.replace("max: 21", "max: 22"));
    let second = plan_pr(&co, &emu, &co.event(12, SHA2, REPO), &[], &[]).await;
    assert_eq!(second.code(), Some(0), "{}", second.stderr());
    let comments = emu.comments(REPO, 12);
    assert_eq!(comments.len(), 122, "still one plan comment");
    let edited = comments.iter().find(|c| c.id == ours.id).unwrap();
    assert_eq!(edited.edits, 1);
    assert!(
        edited.body.contains("at `9f8e7d6`") && edited.body.contains("+    pods: \"22\""),
        "{}",
        edited.body
    );
    assert!(
        comments
            .iter()
            .filter(|c| c.id != ours.id)
            .all(|c| c.edits == 0)
    );
    assert_eq!(comments.iter().find(|c| c.id == other).unwrap().edits, 0);
    let pages = emu
        .seen()
        .iter()
        .filter(|r| r.method == "GET" && r.path == "/repos/acme/fleet/issues/12/comments")
        .count();
    assert_eq!(pages, 4, "two pages per run");
    assert_eq!(emu.check_runs().len(), 2);
    emu.assert_conformant();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_plan_is_truncated_with_a_note() {
    let emu = emulator().await;
    emu.add_pull(REPO, 3, SHA1, REPO);
    let co = Checkout::new();
    // 120 new runner sets: far more diff than one comment holds.
    co.edit_pr("runners/bulk.yaml", |_| {
        (0..120)
            .map(|i| format!(
                "apiVersion: drover.dev/v1alpha1\nkind: RunnerSet\nmetadata:\n  name: bulk-{i}\nspec:\n  github: {{org: acme-ml}}\n  labels: [self-hosted, linux, bulk-{i}]\n  pool: eks-cpu\n  max: 2\n  resources: {{cpu: \"1\", memory: 2Gi}}\n"
            ))
            .collect::<Vec<_>>()
            .join("---\n")
    });
    let artifact = co.path("plan.md");
    let run = plan_pr(
        &co,
        &emu,
        &co.event(3, SHA1, REPO),
        &["--summary-out", artifact.to_str().unwrap()],
        &[],
    )
    .await;
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    let body = &emu.comments(REPO, 3)[0].body;
    assert!(body.chars().count() <= 65_536, "{}", body.chars().count());
    assert!(body.starts_with(MARKER));
    assert!(
        body.contains("This plan is too long for a comment and was truncated. The full plan is in the job summary of [this workflow run](https://github.example/acme/fleet/actions/runs/4242) and `plan.md`"),
        "{}",
        &body[body.len() - 600..]
    );
    // Blocks are closed before the note.
    assert_eq!(
        body.matches("<details>").count(),
        body.matches("</details>").count()
    );
    let full = co.read("plan.md");
    assert!(full.chars().count() > 65_536, "{}", full.chars().count());
    assert!(
        full.contains("bulk-119"),
        "the artifact holds the whole plan"
    );
    assert!(
        run.summary.contains("bulk-119"),
        "the job summary holds the whole plan"
    );
    let check = &emu.check_runs()[0];
    assert!(check.summary.as_ref().unwrap().chars().count() <= 65_535);
    emu.assert_conformant();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_errors_become_annotations_with_path_and_line() {
    let emu = emulator().await;
    emu.add_pull(REPO, 5, SHA1, REPO);
    let co = Checkout::new();
    co.edit_pr("runners/cpu.yaml", |t| {
        t.replace("  pool: eks-cpu\n  min: 1", "  pool: eks-cpux\n  min: 1")
            .replace("  idleBuffer: 2", "  idleBufer: 2")
    });
    // 55 more dangling references: annotations go 50 per request, then an update.
    co.edit_pr("runners/broken.yaml", |_| {
        (0..55)
            .map(|i| format!(
                "apiVersion: drover.dev/v1alpha1\nkind: RunnerSet\nmetadata:\n  name: broken-{i}\nspec:\n  github: {{org: acme-ml}}\n  labels: [self-hosted, broken-{i}]\n  pool: nowhere\n  max: 1\n"
            ))
            .collect::<Vec<_>>()
            .join("---\n")
    });
    let run = plan_pr(&co, &emu, &co.event(5, SHA1, REPO), &[], &[]).await;
    assert_eq!(run.code(), Some(1), "{}", run.stderr());
    let cpu = co.read("pr/fleet/runners/cpu.yaml");
    let check = &emu.check_runs()[0];
    assert_eq!(check.conclusion.as_deref(), Some("failure"));
    assert_eq!(check.batches, vec![50, 7]);
    let find = |code: &str| -> &Value {
        check
            .annotations
            .iter()
            .find(|a| a["title"] == code && a["path"] == "fleet/runners/cpu.yaml")
            .unwrap_or_else(|| panic!("no {code}: {:?}", check.annotations))
    };
    let dangling = find("E302");
    assert_eq!(dangling["start_line"], line_of(&cpu, "pool: eks-cpux"));
    assert_eq!(dangling["end_line"], dangling["start_line"]);
    assert_eq!(dangling["annotation_level"], "failure");
    assert!(
        dangling["message"].as_str().unwrap().contains("eks-cpux"),
        "{dangling}"
    );
    assert_eq!(find("E204")["start_line"], line_of(&cpu, "idleBufer: 2"));
    let body = &emu.comments(REPO, 5)[0].body;
    assert!(body.contains("The fleet is invalid: 57 error(s)"), "{body}");
    assert!(
        body.contains(&format!(
            "- `fleet/runners/cpu.yaml:{}` **error[E302]**",
            line_of(&cpu, "pool: eks-cpux")
        )),
        "{body}"
    );
    emu.assert_conformant();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_pr_without_credentials_gets_a_plan_against_the_base_branch() {
    let emu = emulator().await;
    emu.add_pull(REPO, 9, SHA1, "someone/fleet");
    let co = Checkout::new();
    // The fork points the Slurm token at a file it knows exists, and the cluster context
    // elsewhere: drover must read neither.
    let planted = co.path("planted-token");
    std::fs::write(&planted, "PLANTED-credential-value\n").unwrap();
    co.edit_pr("secrets/github.yaml", |t| {
        t.replace(
            "/var/run/secrets/drover/hpc-slurm.jwt",
            planted.to_str().unwrap(),
        )
    });
    co.edit_pr("sites/eks-prod.yaml", |t| {
        t.replace("context: eks-prod", "context: attacker")
    });
    co.edit_pr("runners/cpu.yaml", |t| t.replace("max: 40", "max: 44"));
    let run = plan_pr(&co, &emu, &co.event(9, SHA1, "someone/fleet"), &[], &[]).await;
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    let body = &emu.comments(REPO, 9)[0].body;
    assert!(body.contains("**Offline plan**"), "{body}");
    assert!(
        body.contains("Pull request #9 at `1a2b3c4` (from a fork)"),
        "{body}"
    );
    assert!(
        body.contains("| hpc | Slurm | apply | base branch (offline) |"),
        "{body}"
    );
    assert!(
        body.contains("/var/run/secrets/drover/hpc-slurm.jwt"),
        "the Slurm token is looked up where the base branch says: {body}"
    );
    assert!(
        body.contains("ResourceQuota gha-runners/cpu-small"),
        "{body}"
    );
    for text in [body.as_str(), &run.summary, &run.stdout(), &run.stderr()] {
        assert!(!text.contains("PLANTED"), "{text}");
    }
    assert_eq!(emu.check_runs()[0].conclusion.as_deref(), Some("success"));

    // With the read-only token a fork gets under `pull_request`, nothing can be posted:
    // the plan still lands in the job summary, and the annotations as workflow commands.
    emu.deny_pull_writes(true, true);
    co.edit_pr("runners/cpu.yaml", |t| {
        t.replace("  pool: eks-cpu\n  min: 2", "  pool: gone\n  min: 2")
    });
    let run = plan_pr(&co, &emu, &co.event(9, SHA2, "someone/fleet"), &[], &[]).await;
    assert_eq!(run.code(), Some(1), "{}", run.stderr());
    assert!(run.stderr().contains("read-only token"), "{}", run.stderr());
    assert!(
        run.summary.contains("The fleet is invalid"),
        "{}",
        run.summary
    );
    assert!(
        run.stdout()
            .contains("::error file=fleet/runners/cpu.yaml,line="),
        "{}",
        run.stdout()
    );
    assert_eq!(emu.comments(REPO, 9)[0].edits, 0);
    emu.assert_conformant();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_in_a_changed_object_are_masked_in_every_output() {
    let emu = emulator().await;
    emu.add_pull(REPO, 21, SHA1, REPO);
    let co = Checkout::new();
    // A credential-named env value (low entropy, so validation lets it through) on a
    // Kubernetes runner set and a Slurm one.
    co.edit_pr("runners/cpu.yaml", |t| {
        t.replacen(
            "  resources: {cpu: \"2\", memory: 4Gi}",
            "  resources: {cpu: \"2\", memory: 4Gi}\n  env:\n    - {name: DB_PASSWORD, value: hunter2-pw}\n    - {name: LOG_LEVEL, value: debug}",
            1,
        )
    });
    co.edit_pr("runners/gpu.yaml", |t| {
        t.replace(
            "  timeLimitMinutes:",
            "  env:\n    - {name: HF_API_TOKEN, value: hunter2-pw}\n  timeLimitMinutes:",
        )
    });
    assert!(
        co.read("pr/fleet/runners/gpu.yaml")
            .contains("HF_API_TOKEN")
    );
    let artifact = co.path("plan.md");
    let run = plan_pr(
        &co,
        &emu,
        &co.event(21, SHA1, REPO),
        &["--summary-out", artifact.to_str().unwrap()],
        &[],
    )
    .await;
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    let body = emu.comments(REPO, 21)[0].body.clone();
    assert!(
        body.contains("DB_PASSWORD") && body.contains("value: \"<redacted>\""),
        "{body}"
    );
    assert!(body.contains("HF_API_TOKEN: \"<redacted>\""), "{body}");
    assert!(
        body.contains("value: debug"),
        "only credentials are masked: {body}"
    );
    let check = emu.check_runs()[0].clone();
    let json_run = plan_pr(
        &co,
        &emu,
        &co.event(21, SHA1, REPO),
        &["--format", "json"],
        &[],
    )
    .await;
    let outputs = [
        ("comment", body),
        (
            "check run",
            format!("{:?} {:?}", check.title, check.summary),
        ),
        ("job summary", run.summary.clone()),
        ("artifact", co.read("plan.md")),
        ("stdout", run.stdout()),
        ("stderr", run.stderr()),
        ("json stdout", json_run.stdout()),
    ];
    for (what, text) in &outputs {
        assert!(!text.is_empty() || *what == "stderr", "{what} is empty");
        assert!(
            !text.contains("hunter2"),
            "{what} shows the secret:\n{text}"
        );
        assert!(!text.contains(PAT), "{what} shows the token");
    }

    // An inline token is a validation error whose message never repeats it.
    let token = format!("ghp_{}", "Zq8sK2mX".repeat(5));
    co.edit_pr("runners/cpu.yaml", |t| t.replace("hunter2-pw", &token));
    let run = plan_pr(&co, &emu, &co.event(21, SHA2, REPO), &[], &[]).await;
    assert_eq!(run.code(), Some(1), "{}", run.stderr());
    let body = emu.comments(REPO, 21)[0].body.clone();
    assert!(body.contains("E401"), "{body}");
    let check = emu.check_runs().last().unwrap().clone();
    for text in [
        body,
        format!("{:?}", check.annotations),
        run.summary.clone(),
        run.stdout(),
        run.stderr(),
    ] {
        assert!(
            !text.contains(&token) && !text.contains("Zq8sK2mX"),
            "{text}"
        );
    }
    emu.assert_conformant();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_actions_the_pr_is_read_from_github_and_a_status_replaces_a_refused_check_run() {
    let emu = emulator().await;
    emu.add_pull(REPO, 40, SHA2, REPO);
    // A personal access token may not create check runs (GitHub answers 403).
    emu.deny_pull_writes(false, true);
    let co = Checkout::new();
    co.edit_pr("runners/cpu.yaml", |t| t.replace("max: 20", "max: 21"));
    let unset = [
        ("GITHUB_EVENT_PATH", String::new()),
        ("GITHUB_ACTIONS", String::new()),
        ("GITHUB_SHA", String::new()),
        ("GITHUB_REPOSITORY", String::new()),
    ];
    let event = co.path("unused");
    let run = plan_pr(&co, &emu, &event, &["--pr", "40", "--repo", REPO], &unset).await;
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    let body = &emu.comments(REPO, 40)[0].body;
    assert!(body.contains("Pull request #40 at `9f8e7d6`"), "{body}");
    assert!(emu.check_runs().is_empty());
    let statuses = emu.statuses();
    assert_eq!(statuses.len(), 1, "{statuses:?}");
    assert_eq!(statuses[0].sha, SHA2, "the head commit, from GET /pulls/40");
    assert_eq!(statuses[0].state, "success");
    assert_eq!(statuses[0].context, "drover plan");
    assert_eq!(
        statuses[0].description,
        "0 to create, 1 to update, 0 to delete"
    );
    assert!(emu.count("/repos/acme/fleet/pulls/40") >= 1);

    // `--pr` without a number needs the event payload.
    let run = plan_pr(&co, &emu, &event, &["--pr"], &unset).await;
    assert_eq!(run.code(), Some(2), "{}", run.stderr());
    assert!(
        run.stderr().contains("GITHUB_EVENT_PATH"),
        "{}",
        run.stderr()
    );
    emu.assert_conformant();
}

const LIVE_FLEET: &str = "\
apiVersion: drover.dev/v1alpha1
kind: Fleet
metadata:
  name: pr-live
spec:
  github:
    tokenRef: gh
  defaults:
    runnerImage: ghcr.io/actions/actions-runner:2.321.0
---
apiVersion: drover.dev/v1alpha1
kind: SecretRef
metadata:
  name: gh
spec:
  env: {name: DROVER_GITHUB_TOKEN}
---
apiVersion: drover.dev/v1alpha1
kind: Site
metadata:
  name: emu
spec:
  kubernetes:
    context: kube-emulator
    namespace: ci-runners
---
apiVersion: drover.dev/v1alpha1
kind: NodePool
metadata:
  name: cpu
spec:
  site: emu
  kubernetes:
    nodeSelector: {pool: cpu}
---
apiVersion: drover.dev/v1alpha1
kind: RunnerSet
metadata:
  name: small
spec:
  github: {org: acme}
  labels: [self-hosted, linux, small]
  pool: cpu
  max: 4
  resources: {cpu: \"2\", memory: 4Gi}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_credentials_a_pr_is_planned_against_live_state() {
    let kube = KubeEmulator::start().await;
    let emu = emulator().await;
    emu.add_pull(REPO, 30, SHA1, REPO);
    let co = Checkout::new();
    for side in ["base", "pr"] {
        let dir = co.path(&format!("{side}/fleet"));
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("fleet.yaml"), LIVE_FLEET).unwrap();
    }
    let kubeconfig = co.path("kubeconfig");
    kube.write_kubeconfig(&kubeconfig).unwrap();
    // The base branch is applied; the live cluster then drifts out of band.
    let applied = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .args([
            "apply",
            co.path("base/fleet").to_str().unwrap(),
            "--yes",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    // The PR raises max and tries to point the site at another context: the base's is used.
    co.edit_pr("fleet.yaml", |t| {
        t.replace("max: 4", "max: 6")
            .replace("context: kube-emulator", "context: elsewhere")
    });
    let env = [("KUBECONFIG", kubeconfig.display().to_string())];
    let writes_before = kube.write_count();
    let run = plan_pr(&co, &emu, &co.event(30, SHA1, REPO), &[], &env).await;
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    assert_eq!(kube.write_count(), writes_before, "a PR plan never writes");
    let body = &emu.comments(REPO, 30)[0].body;
    assert!(
        body.contains("| emu | Kubernetes | apply | live state | 0 | 1 | 0 |"),
        "{body}"
    );
    assert!(!body.contains("Offline plan"), "{body}");
    assert!(body.contains("--- live\n+++ desired"), "{body}");
    assert!(body.contains("+    pods: \"6\""), "{body}");
    emu.assert_conformant();
}

fn sample_report_parts() -> (PrContext, Plan, BTreeMap<String, SiteMode>) {
    let ctx = PrContext {
        repo: REPO.into(),
        number: 12,
        head_sha: Some(SHA1.into()),
        base_ref: Some("main".into()),
        fork: false,
    };
    let mut eks = SitePlan::new("eks-prod", SiteKind::Kubernetes, SitePolicy::Apply);
    let target = |kind: &str, ns: Option<&str>, name: &str| Target {
        kind: kind.into(),
        namespace: ns.map(str::to_string),
        name: name.into(),
    };
    eks.changes.push(Change {
        action: Action::Update,
        target: target("ResourceQuota", Some("gha-runners"), "cpu-medium"),
        diff: Some(
            "--- live\n+++ desired\n@@ -1,2 +1,2 @@\n spec:\n-  pods: \"20\"\n+  pods: \"21\"\n"
                .into(),
        ),
        reason: None,
        runner: None,
    });
    eks.changes.push(Change {
        action: Action::Create,
        target: target("PodTemplate", Some("gha-runners"), "cpu-huge"),
        diff: Some("--- live\n+++ desired\n@@ -0,0 +1,2 @@\n+kind: PodTemplate\n+metadata: {name: cpu-huge}\n".into()),
        reason: None,
        runner: None,
    });
    eks.changes.push(Change {
        action: Action::Unchanged,
        target: target("Namespace", None, "gha-runners"),
        diff: None,
        reason: None,
        runner: None,
    });
    eks.findings.push(Finding::new(
        FindingSeverity::Warning,
        "pool-short-of-nodes",
        "NodePool eks-cpu",
        "6 nodes expected, 5 <ready>",
    ));
    let mut hpc = SitePlan::new("hpc", SiteKind::Slurm, SitePolicy::Apply);
    hpc.changes.push(Change {
        action: Action::Unchanged,
        target: target("SlurmJob", None, "gpu-a100#*"),
        diff: None,
        reason: None,
        runner: None,
    });
    let down = SitePlan::failed(
        "mi300",
        SiteKind::Kubernetes,
        SitePolicy::Apply,
        "connection refused",
    );
    let plan = Plan {
        revision: None,
        sites: vec![eks, hpc, down],
    };
    let modes = BTreeMap::from([
        ("eks-prod".to_string(), SiteMode::Live),
        (
            "hpc".to_string(),
            SiteMode::Offline(
                "no credentials: SecretRef `hpc-slurm-jwt`: environment variable X is not set"
                    .into(),
            ),
        ),
        ("mi300".to_string(), SiteMode::Live),
    ]);
    (ctx, plan, modes)
}

#[test]
fn snapshot_of_a_plan_comment() {
    let (ctx, plan, modes) = sample_report_parts();
    let report = Report {
        context: &ctx,
        fleet_path: "fleet",
        plan: Some(&plan),
        modes: &modes,
        annotations: &[],
        note: None,
    };
    let md = comment::markdown(&report);
    insta::assert_snapshot!(
        "pr_comment_plan",
        comment::comment_body(&md, "the job summary")
    );
}

#[test]
fn snapshot_of_an_invalid_fleet_comment() {
    let (ctx, _, modes) = sample_report_parts();
    let annotations = vec![
        Annotation {
            path: "fleet/runners/cpu.yaml".into(),
            start_line: 9,
            end_line: 9,
            start_column: Some(3),
            end_column: Some(3),
            annotation_level: "failure",
            title: "E302".into(),
            message: "NodePool `eks-cpux` does not exist\nhint: declare a `kind: NodePool` named `eks-cpux`, or fix the name".into(),
        },
        Annotation {
            path: "fleet/runners/gpu.yaml".into(),
            start_line: 1,
            end_line: 1,
            start_column: None,
            end_column: None,
            annotation_level: "warning",
            title: "W502".into(),
            message: "NodePool `spare` has no runner sets".into(),
        },
    ];
    let report = Report {
        context: &ctx,
        fleet_path: "fleet",
        plan: None,
        modes: &modes,
        annotations: &annotations,
        note: None,
    };
    insta::assert_snapshot!("pr_comment_invalid", comment::markdown(&report));
}

/// The emulator holds drover to GitHub's limits: a check-run request with more than 50
/// annotations breaks the description, and a comment body over 65,536 characters is
/// refused as GitHub refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emulator_enforces_githubs_limits() {
    drover::tls::install_crypto_provider();
    let emu = emulator().await;
    emu.add_pull(REPO, 1, SHA1, REPO);
    let http = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        http.post(format!("{}{path}", emu.url))
            .bearer_auth(PAT)
            .json(&body)
            .send()
    };
    let annotation = json!({"path": "a.yaml", "start_line": 1, "end_line": 1,
        "annotation_level": "failure", "message": "m"});
    let too_many = json!({"name": "x", "head_sha": SHA1, "status": "completed",
        "conclusion": "failure",
        "output": {"title": "t", "summary": "s", "annotations": vec![annotation; 51]}});
    let r = post("/repos/acme/fleet/check-runs", too_many)
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 422);
    assert!(
        emu.violations().iter().any(|v| v.contains("annotations")),
        "{:?}",
        emu.violations()
    );
    let long = json!({"body": "x".repeat(65_537)});
    let r = post("/repos/acme/fleet/issues/1/comments", long)
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 422);
    let ok = json!({"body": "é".repeat(65_536)});
    let r = post("/repos/acme/fleet/issues/1/comments", ok)
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
}
