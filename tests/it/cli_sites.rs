//! The `drover` binary end to end against the Kubernetes API emulator, reached through an
//! ordinary kubeconfig: render, plan (with terraform-style exit codes), apply, then an
//! empty plan; and apply refusing to run unattended without `--yes`.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::support::kube_emulator::KubeEmulator;

const FLEET: &str = "\
apiVersion: drover.dev/v1alpha1
kind: Fleet
metadata:
  name: cli-e2e
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
  env: {name: GITHUB_TOKEN}
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

async fn drover(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
            .args(&args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// A temp dir holding `fleet/fleet.yaml` with `yaml`; returns it (keep it alive), the
/// fleet directory, and where to write the kubeconfig.
fn fleet_dir(yaml: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fleet");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("fleet.yaml"), yaml).unwrap();
    let kubeconfig = tmp.path().join("kubeconfig");
    (tmp, dir, kubeconfig)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn args(command: &str, dir: &Path, kubeconfig: &Path, extra: &[&str]) -> Vec<String> {
    let mut v = vec![command.to_string(), dir.display().to_string()];
    v.extend(["--kubeconfig".to_string(), kubeconfig.display().to_string()]);
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn render_plan_apply_then_an_empty_plan() {
    let emu = KubeEmulator::start().await;
    let (_tmp, dir, kubeconfig) = fleet_dir(FLEET);
    emu.write_kubeconfig(&kubeconfig).unwrap();

    let rendered = drover(vec!["render".into(), dir.display().to_string()]).await;
    assert_eq!(rendered.status.code(), Some(0), "{}", text(&rendered));
    assert!(
        text(&rendered).contains("kind: Namespace"),
        "{}",
        text(&rendered)
    );
    assert_eq!(emu.write_count(), 0, "render contacts no site");

    let plan = drover(args("plan", &dir, &kubeconfig, &["--detailed-exitcode"])).await;
    assert_eq!(plan.status.code(), Some(2), "changes → 2: {}", text(&plan));
    assert!(
        text(&plan).contains("+ create Namespace ci-runners"),
        "{}",
        text(&plan)
    );
    assert_eq!(emu.write_count(), 0, "plan writes nothing");

    let unattended = drover(args("apply", &dir, &kubeconfig, &[])).await;
    assert_eq!(unattended.status.code(), Some(2), "{}", text(&unattended));
    assert!(
        text(&unattended).contains("pass --yes"),
        "{}",
        text(&unattended)
    );
    assert_eq!(emu.write_count(), 0, "an unconfirmed apply writes nothing");

    let apply = drover(args("apply", &dir, &kubeconfig, &["--yes"])).await;
    assert_eq!(apply.status.code(), Some(0), "{}", text(&apply));
    assert!(
        emu.get_object("v1", "Namespace", None, "ci-runners")
            .is_some()
    );
    let writes = emu.write_count();
    assert!(writes > 0);

    let again = drover(args(
        "plan",
        &dir,
        &kubeconfig,
        &["--detailed-exitcode", "--format", "json"],
    ))
    .await;
    assert_eq!(
        again.status.code(),
        Some(0),
        "no changes → 0: {}",
        text(&again)
    );
    let plan: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    let changes = plan["sites"][0]["changes"].as_array().unwrap();
    assert!(
        !changes.is_empty() && changes.iter().all(|c| c["action"] == "unchanged"),
        "{plan:#}"
    );

    let reapply = drover(args("apply", &dir, &kubeconfig, &["--yes"])).await;
    assert_eq!(reapply.status.code(), Some(0), "{}", text(&reapply));
    assert_eq!(
        emu.write_count(),
        writes,
        "an unchanged fleet causes no writes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_site_makes_plan_fail_with_exit_1() {
    let fleet = FLEET.replace(
        "namespace: ci-runners",
        "namespace: ci-runners\n  timeoutSeconds: 2",
    );
    let (_tmp, dir, kubeconfig) = fleet_dir(&fleet);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: \"http://{closed}\"}}\n\
             users:\n- name: u\n  user: {{token: t}}\ncontexts:\n- name: kube-emulator\n  context: {{cluster: c, user: u}}\n\
             current-context: kube-emulator\n"
        ),
    )
    .unwrap();
    let plan = drover(args("plan", &dir, &kubeconfig, &["--detailed-exitcode"])).await;
    assert_eq!(plan.status.code(), Some(1), "{}", text(&plan));
    assert!(text(&plan).contains("plan unknown"), "{}", text(&plan));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_reports_out_of_band_changes_and_changes_nothing() {
    let emu = KubeEmulator::start().await;
    let (_tmp, dir, kubeconfig) = fleet_dir(FLEET);
    emu.write_kubeconfig(&kubeconfig).unwrap();
    let apply = drover(args("apply", &dir, &kubeconfig, &["--yes"])).await;
    assert_eq!(apply.status.code(), Some(0), "{}", text(&apply));

    let clean = drover(args("drift", &dir, &kubeconfig, &["--exit-code"])).await;
    assert_eq!(clean.status.code(), Some(0), "{}", text(&clean));
    assert!(
        text(&clean).contains("site emu: no drift"),
        "{}",
        text(&clean)
    );

    let templates = emu.list_objects("v1", "PodTemplate", Some("ci-runners"));
    let mut edited = templates.first().expect("a rendered PodTemplate").clone();
    let name = edited["metadata"]["name"].as_str().unwrap().to_string();
    edited["template"]["spec"]["containers"][0]["image"] = serde_json::json!("evil/runner:latest");
    emu.put_object_as("kubectl-edit", edited).unwrap();
    let writes = emu.write_count();

    let drift = drover(args("drift", &dir, &kubeconfig, &["--exit-code"])).await;
    assert_eq!(drift.status.code(), Some(2), "{}", text(&drift));
    let out = text(&drift);
    assert!(
        out.contains(&format!(
            "changed out of band: PodTemplate ci-runners/{name}"
        )),
        "{out}"
    );
    assert!(
        out.contains("-") && out.contains("evil/runner:latest"),
        "{out}"
    );
    assert_eq!(emu.write_count(), writes, "drift changes nothing");

    let json = drover(args("drift", &dir, &kubeconfig, &["--format", "json"])).await;
    assert_eq!(
        json.status.code(),
        Some(0),
        "without --exit-code drift is not an error"
    );
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(
        report["sites"][0]["changed"].as_array().unwrap().len(),
        1,
        "{report:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_reports_jobs_no_runner_set_can_serve() {
    use crate::support::github_emulator::{Config, GithubEmulator};
    let github = GithubEmulator::start(Config {
        pat: Some("ghp_cli_drift".into()),
        ..Config::default()
    })
    .await;
    github.add_org("acme", &[]);
    let served = github.queue_job("acme/app", &["self-hosted", "small"]);
    let unserved = github.queue_job("acme/app", &["self-hosted", "small", "gpu"]);
    let kube = KubeEmulator::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let token = tmp.path().join("gh.token");
    std::fs::write(&token, "ghp_cli_drift").unwrap();
    let fleet = FLEET
        .replace(
            "  github:\n    tokenRef: gh\n",
            &format!("  github:\n    url: \"{}\"\n    tokenRef: gh\n", github.url),
        )
        .replace(
            "  env: {name: GITHUB_TOKEN}",
            &format!("  file: {{path: \"{}\"}}", token.display()),
        );
    let (_tmp, dir, kubeconfig) = fleet_dir(&fleet);
    kube.write_kubeconfig(&kubeconfig).unwrap();
    let apply = drover(args("apply", &dir, &kubeconfig, &["--yes"])).await;
    assert_eq!(apply.status.code(), Some(0), "{}", text(&apply));

    let extra = ["--github-repo", "acme/app", "--exit-code"];
    let drift = drover(args("drift", &dir, &kubeconfig, &extra)).await;
    let out = text(&drift);
    assert_eq!(
        drift.status.code(),
        Some(2),
        "an unservable job is drift: {out}"
    );
    assert!(
        out.contains(&format!(
            "job {unserved} in acme/app [self-hosted, small, gpu] cannot be served"
        )) && out.contains("missing gpu"),
        "{out}"
    );
    assert!(!out.contains(&format!("job {served} ")), "{out}");
    let json = drover(args(
        "drift",
        &dir,
        &kubeconfig,
        &["--github-repo", "acme/app", "--format", "json"],
    ))
    .await;
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["unserved"][0]["job_id"], unserved, "{report:#}");
    github.assert_conformant();

    // Without repositories, or without a reachable GitHub, the report says jobs were not
    // checked and still reports the sites.
    let none = drover(args("drift", &dir, &kubeconfig, &[])).await;
    assert_eq!(none.status.code(), Some(0), "{}", text(&none));
    assert!(
        text(&none).contains("queued jobs not checked: no repositories"),
        "{}",
        text(&none)
    );
    drop(github);
    let down = drover(args(
        "drift",
        &dir,
        &kubeconfig,
        &["--github-repo", "acme/app"],
    ))
    .await;
    assert_eq!(down.status.code(), Some(0), "{}", text(&down));
    let out = text(&down);
    assert!(
        out.contains("site emu: no drift") && out.contains("queued jobs not checked"),
        "{out}"
    );
}

/// Two sites whose contexts reach one cluster (the emulator): `a` in `ci-a`, `b` in `ci-b`;
/// `shared` lists the sites that set `sharedCluster: true`.
fn two_sites_on_one_cluster(shared: &[&str]) -> String {
    let site = |name: &str| {
        let flag = if shared.contains(&name) {
            "\n    sharedCluster: true"
        } else {
            ""
        };
        format!(
            "---\napiVersion: drover.dev/v1alpha1\nkind: Site\nmetadata:\n  name: {name}\nspec:\n  \
             kubernetes:\n    context: ctx-{name}\n    namespace: ci-{name}{flag}\n---\n\
             apiVersion: drover.dev/v1alpha1\nkind: NodePool\nmetadata:\n  name: cpu-{name}\n\
             spec:\n  site: {name}\n  kubernetes:\n    nodeSelector: {{pool: cpu}}\n"
        )
    };
    let header = FLEET
        .split("---\napiVersion: drover.dev/v1alpha1\nkind: Site")
        .next()
        .unwrap();
    format!("{header}{}{}", site("a"), site("b")).replace("---\n---\n", "---\n")
}

/// A kubeconfig with contexts `ctx-a` and `ctx-b`, both reaching `emu`.
fn two_contexts(emu: &KubeEmulator, path: &Path) {
    let yaml = emu.kubeconfig_yaml("ctx-a").replace(
        "contexts:\n",
        "contexts:\n- name: ctx-b\n  context:\n    cluster: kube-emulator\n    user: kube-emulator-user\n",
    );
    std::fs::write(path, yaml).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sites_that_reach_one_cluster_are_refused_unless_they_opt_in() {
    let emu = KubeEmulator::start().await;
    let (_tmp, dir, kubeconfig) = fleet_dir(&two_sites_on_one_cluster(&[]));
    two_contexts(&emu, &kubeconfig);
    let uid = emu
        .get_object("v1", "Namespace", None, "kube-system")
        .unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();

    // Neither opts in: both are refused, in plan and apply, and nothing is written.
    let plan = drover(args("plan", &dir, &kubeconfig, &["--format", "json"])).await;
    assert_eq!(plan.status.code(), Some(1), "{}", text(&plan));
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    for (site, other) in [("a", "b"), ("b", "a")] {
        let found = plan["sites"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["site"] == site)
            .unwrap();
        let error = found["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(&uid) && error.contains(&format!("site(s) {other};")),
            "{site}: {error}"
        );
    }
    // One site alone is refused too: the other site's cluster is read first.
    let only = drover(args("apply", &dir, &kubeconfig, &["--yes", "--site", "a"])).await;
    assert_ne!(only.status.code(), Some(0), "{}", text(&only));
    assert!(text(&only).contains("sharedCluster"), "{}", text(&only));
    assert_eq!(emu.write_count(), 0, "a refused site gets no write");

    // Only `a` opts in: `a` applies, `b` is still refused.
    std::fs::write(dir.join("fleet.yaml"), two_sites_on_one_cluster(&["a"])).unwrap();
    let apply = drover(args("apply", &dir, &kubeconfig, &["--yes"])).await;
    assert_ne!(apply.status.code(), Some(0), "{}", text(&apply));
    assert!(emu.get_object("v1", "Namespace", None, "ci-a").is_some());
    assert!(emu.get_object("v1", "Namespace", None, "ci-b").is_none());

    // Both opt in: both apply.
    std::fs::write(
        dir.join("fleet.yaml"),
        two_sites_on_one_cluster(&["a", "b"]),
    )
    .unwrap();
    let apply = drover(args("apply", &dir, &kubeconfig, &["--yes"])).await;
    assert_eq!(apply.status.code(), Some(0), "{}", text(&apply));
    assert!(emu.get_object("v1", "Namespace", None, "ci-b").is_some());
}
