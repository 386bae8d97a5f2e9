//! Runner Pods on Kubernetes sites, end to end: the Kubernetes API emulator, the GitHub
//! API emulator reached through drover's real `GithubClient` (a test `RunnerRegistry`), a
//! test kubelet that runs the stand-in runner with the JIT config from each Pod's Secret.

use crate::support::fake_runner;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::support::github_emulator::{AppKeys, Config, GithubEmulator};
use crate::support::kube_emulator::{KubeEmulator, NodeBuilder};
use crate::support::kubelet::Kubelet;
use crate::support::registry::GithubRegistry;
use drover::credentials::Secret;
use drover::fleet::{FleetRepo, LoadOptions};
use drover::github::{Auth, GithubClient, RetryPolicy, Scope};
use drover::plan::{Action, ApplyReport, Plan, SitePlan};
use drover::runners::RunnerRegistry;
use drover::sites::{ApplyOptions, Registry, RunOptions, SiteContext, kubernetes};
use serde_json::{Value, json};

const SITE: &str = "lab";
const NS: &str = "runners";
const LABELS: &[&str] = &["self-hosted", "linux", "x64", "small"];

fn fleet_yaml(max: u32, start_timeout: u64) -> String {
    format!(
        r#"apiVersion: drover.dev/v1alpha1
kind: Fleet
metadata: {{name: ci}}
spec:
  github: {{url: "https://github.com", tokenRef: gh-token}}
  reconcile: {{prune: true, runnerStartTimeoutSeconds: {start_timeout}}}
---
apiVersion: drover.dev/v1alpha1
kind: SecretRef
metadata: {{name: gh-token}}
spec:
  env: {{name: GH_TOKEN}}
---
apiVersion: drover.dev/v1alpha1
kind: Site
metadata: {{name: lab}}
spec:
  kubernetes: {{context: lab-ctx, namespace: runners}}
  timeoutSeconds: 5
---
apiVersion: drover.dev/v1alpha1
kind: NodePool
metadata: {{name: cpu}}
spec:
  site: lab
  kubernetes: {{nodeSelector: {{pool: cpu}}}}
---
apiVersion: drover.dev/v1alpha1
kind: RunnerSet
metadata: {{name: small}}
spec:
  github: {{org: acme}}
  labels: [small]
  pool: cpu
  max: {max}
  resources: {{cpu: "1", memory: 1Gi}}
  image: ghcr.io/actions/actions-runner:2.321.0
"#
    )
}

struct Env {
    _dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    repo: FleetRepo,
    kube: KubeEmulator,
    github: GithubEmulator,
    registry: Arc<GithubRegistry>,
}

fn github_client(emu: &GithubEmulator) -> GithubClient {
    let cfg = Config::default();
    let auth = Auth::App {
        app_id: cfg.app_id,
        installation_id: cfg.installation_id,
        private_key: Secret::new(AppKeys::get().private_pem.clone()),
    };
    let retry = RetryPolicy {
        min_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        reserve: 0,
        ..RetryPolicy::default()
    };
    GithubClient::new(&emu.url, &auth, retry).unwrap()
}

impl Env {
    async fn new(max: u32, start_timeout: u64) -> Env {
        let kube = KubeEmulator::start().await;
        kube.add_node(NodeBuilder::new("cpu-1").label("pool", "cpu"));
        let github = GithubEmulator::start(Config::default()).await;
        github.add_org("acme", &[]);
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, kube.kubeconfig_yaml("lab-ctx")).unwrap();
        std::fs::write(
            dir.path().join("fleet.yaml"),
            fleet_yaml(max, start_timeout),
        )
        .unwrap();
        let v = drover::fleet::validate_dir(dir.path(), &LoadOptions::default()).unwrap();
        assert!(v.is_valid(), "{:#?}", v.diagnostics);
        let registry = Arc::new(Env::registry_for(&github));
        Env {
            _dir: dir,
            kubeconfig,
            repo: v.repo,
            kube,
            github,
            registry,
        }
    }

    fn registry_for(github: &GithubEmulator) -> GithubRegistry {
        GithubRegistry::new(
            github_client(github),
            Scope::Org("acme".into()),
            &[("small", LABELS)],
        )
    }

    fn options(&self, desired: u32, registry: bool, apply: ApplyOptions) -> RunOptions {
        RunOptions {
            kubeconfig: Some(self.kubeconfig.clone()),
            desired_runners: [("small".to_string(), desired)].into(),
            apply,
            registry: registry.then(|| Registry(self.registry.clone())),
            ..RunOptions::default()
        }
    }

    async fn plan_with(&self, options: RunOptions) -> SitePlan {
        let ctx = SiteContext {
            repo: &self.repo,
            site: &self.repo.sites[SITE],
            options: &options,
        };
        kubernetes::plan(&ctx).await
    }

    async fn apply_with(&self, options: RunOptions) -> (SitePlan, ApplyReport) {
        let ctx = SiteContext {
            repo: &self.repo,
            site: &self.repo.sites[SITE],
            options: &options,
        };
        kubernetes::apply(&ctx).await
    }

    async fn plan(&self, desired: u32) -> SitePlan {
        self.plan_with(self.options(desired, true, ApplyOptions::default()))
            .await
    }

    async fn apply(&self, desired: u32) -> (SitePlan, ApplyReport) {
        self.apply_with(self.options(desired, true, ApplyOptions::default()))
            .await
    }

    fn pods(&self) -> Vec<Value> {
        self.kube.list_objects("v1", "Pod", Some(NS))
    }

    fn pod_names(&self) -> Vec<String> {
        names(&self.pods())
    }

    fn secrets(&self) -> Vec<Value> {
        self.kube.list_objects("v1", "Secret", Some(NS))
    }

    fn phase(&self, name: &str) -> Option<String> {
        self.kube
            .get_object("v1", "Pod", Some(NS), name)
            .and_then(|p| p["status"]["phase"].as_str().map(str::to_string))
    }
}

fn names(objects: &[Value]) -> Vec<String> {
    objects
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

fn pod_changes(plan: &SitePlan) -> Vec<(Action, String, String)> {
    plan.changes
        .iter()
        .filter(|c| c.target.kind == "Pod")
        .map(|c| {
            (
                c.action,
                c.target.name.clone(),
                c.reason.clone().unwrap_or_default(),
            )
        })
        .collect()
}

fn count(plan: &SitePlan, action: Action) -> usize {
    pod_changes(plan)
        .iter()
        .filter(|(a, _, _)| *a == action)
        .count()
}

fn text(plan: &SitePlan) -> String {
    drover::plan::render::text(
        &Plan {
            revision: None,
            sites: vec![plan.clone()],
        },
        false,
    )
}

fn json_text(plan: &SitePlan) -> String {
    drover::plan::render::json(&Plan {
        revision: None,
        sites: vec![plan.clone()],
    })
}

fn codes(plan: &SitePlan) -> Vec<&str> {
    plan.findings.iter().map(|f| f.code.as_str()).collect()
}

async fn wait_for(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The JIT config a Secret carries (the emulator stores base64 `data`).
fn jit_of(secret: &Value) -> String {
    use base64::Engine;
    let data = secret["data"]["jitconfig"].as_str().unwrap();
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn scale_up_creates_pods_each_with_its_own_secret_and_converges() {
    let env = Env::new(3, 600).await;
    let (plan, report) = env.apply(2).await;
    assert!(plan.error.is_none(), "{:?}", plan.error);
    assert!(report.is_success(), "{report:#?}");
    assert_eq!(count(&plan, Action::Create), 2, "{}", text(&plan));
    // The plan shows stable targets; the report names the Pods created.
    let planned: Vec<String> = pod_changes(&plan).into_iter().map(|c| c.1).collect();
    assert_eq!(planned, ["small#new-1", "small#new-2"]);
    let mut created: Vec<String> = report
        .applied
        .iter()
        .filter(|(_, t)| t.kind == "Pod")
        .map(|(_, t)| t.name.clone())
        .collect();
    assert!(
        created
            .iter()
            .all(|name| name.starts_with("drover-ci-small-") && name.len() == 21),
        "{created:?}"
    );

    let pods = env.pods();
    created.sort();
    assert_eq!(names(&pods), created);
    let secrets = env.secrets();
    assert_eq!(
        names(&secrets),
        names(&pods),
        "one Secret per Pod, same name"
    );
    let mut jits = Vec::new();
    for (pod, secret) in pods.iter().zip(&secrets) {
        let name = pod["metadata"]["name"].as_str().unwrap();
        let labels = &pod["metadata"]["labels"];
        assert_eq!(labels["drover.dev/runner-set"], "small");
        assert_eq!(labels["drover.dev/engine"], "drover");
        assert_eq!(labels["app.kubernetes.io/component"], "runner");
        let runner = &pod["spec"]["containers"][0];
        assert_eq!(runner["command"], json!(["/home/runner/run.sh"]));
        assert_eq!(pod["spec"]["priorityClassName"], "drover-ci-small");
        let env_var = runner["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "ACTIONS_RUNNER_INPUT_JITCONFIG")
            .unwrap();
        assert_eq!(
            env_var["valueFrom"]["secretKeyRef"],
            json!({"name": name, "key": "jitconfig"})
        );
        let owner = &secret["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "Pod");
        assert_eq!(owner["name"], name);
        assert_eq!(owner["uid"], pod["metadata"]["uid"]);
        assert_eq!(secret["type"], "Opaque");
        jits.push(jit_of(secret));
    }
    // GitHub knows both runners, by the Pods' names.
    let mut registered: Vec<String> = env.github.runners().into_iter().map(|r| r.name).collect();
    registered.sort();
    assert_eq!(registered, names(&pods));

    // Converged: no changes, and an apply writes nothing.
    env.registry.refresh().await;
    let again = env.plan(2).await;
    assert!(!again.has_changes(), "{}", text(&again));
    env.kube.clear_request_log();
    let (_, report) = env.apply(2).await;
    assert!(
        report.is_success() && report.applied.is_empty(),
        "{report:#?}"
    );
    assert_eq!(env.kube.write_count(), 0, "{:#?}", env.kube.request_log());

    // A restart: a new registry, the same live state: nothing is created twice.
    let restarted = Arc::new(Env::registry_for(&env.github));
    restarted.refresh().await;
    let mut options = env.options(2, true, ApplyOptions::default());
    options.registry = Some(Registry(restarted.clone()));
    let (plan, report) = env.apply_with(options).await;
    assert_eq!(count(&plan, Action::Create), 0, "{}", text(&plan));
    assert!(report.applied.is_empty(), "{report:#?}");
    assert_eq!(restarted.minted.load(Ordering::SeqCst), 0);
    assert_eq!(env.pods().len(), 2);

    // Never above max: asking for 10 of a max-3 set creates one more.
    let (plan, report) = env.apply(10).await;
    assert_eq!(count(&plan, Action::Create), 1, "{}", text(&plan));
    assert!(report.is_success(), "{report:#?}");
    assert_eq!(env.pods().len(), 3);
    let (plan, _) = env.apply(10).await;
    assert_eq!(count(&plan, Action::Create), 0);

    // The JIT configs appear in no plan, text or JSON, and in no report.
    jits.extend(env.secrets().iter().map(jit_of));
    let shown = format!("{}{}{report:?}{plan:?}", text(&plan), json_text(&plan));
    for jit in &jits {
        assert!(!shown.contains(jit.as_str()));
    }

    // Deleting a Pod garbage-collects its Secret.
    let first = env.pod_names()[0].clone();
    env.kube
        .delete_object("v1", "Pod", Some(NS), &first)
        .unwrap();
    assert!(
        env.kube
            .get_object("v1", "Secret", Some(NS), &first)
            .is_none()
    );
    assert_eq!(env.secrets().len(), 2);
    env.github.assert_conformant();
}

#[tokio::test]
async fn scale_down_removes_pending_first_then_idle_and_never_a_busy_runner() {
    let env = Env::new(4, 600).await;
    let kubelet = Kubelet::start(
        env.kube.client().await,
        fake_runner(),
        ["--work-ms", "6000", "--wait-secs", "120"]
            .map(String::from)
            .to_vec(),
    );
    let (_, report) = env.apply(3).await;
    assert!(report.is_success(), "{report:#?}");
    let three = env.pod_names();
    // The kubelet starts them; the runners connect to GitHub.
    wait_for("three runners online", 30, || {
        env.github.runners().iter().filter(|r| r.online).count() == 3
    })
    .await;
    // One job: one runner takes it and works on it for a while.
    let job = env
        .github
        .queue_job("acme/widgets", &["self-hosted", "small"]);
    wait_for("a busy runner", 30, || {
        env.github.runners().iter().any(|r| r.busy)
    })
    .await;
    let busy = env
        .github
        .runners()
        .into_iter()
        .find(|r| r.busy)
        .unwrap()
        .name;
    // A fourth Pod that the node cannot start: Pending.
    kubelet.hold(true);
    env.registry.refresh().await;
    let (_, report) = env.apply(4).await;
    assert!(report.is_success(), "{report:#?}");
    let pending: Vec<String> = env
        .pod_names()
        .into_iter()
        .filter(|n| !three.contains(n))
        .collect();
    assert_eq!(pending.len(), 1);
    assert_eq!(env.phase(&pending[0]).as_deref(), Some("Pending"));

    // Down to 2: the pending Pod goes first, then the newest idle runner.
    env.registry.refresh().await;
    let plan = env.plan(2).await;
    let deletes: Vec<(String, String)> = pod_changes(&plan)
        .into_iter()
        .filter(|(a, _, _)| *a == Action::Delete)
        .map(|(_, n, r)| (n, r))
        .collect();
    assert_eq!(deletes.len(), 2, "{}", text(&plan));
    assert_eq!(deletes[0].0, pending[0]);
    assert!(deletes[0].1.contains("Pending"), "{}", deletes[0].1);
    assert!(deletes[1].1.contains("online and idle"), "{}", deletes[1].1);
    assert_ne!(deletes[1].0, busy);

    // Down to 0: every idle runner is deregistered then deleted; the busy one stays.
    let (plan, report) = env.apply(0).await;
    assert!(report.is_success(), "{report:#?}\n{}", text(&plan));
    assert_eq!(env.pod_names(), vec![busy.clone()]);
    let registered: Vec<String> = env.github.runners().into_iter().map(|r| r.name).collect();
    assert_eq!(
        registered,
        vec![busy.clone()],
        "idle runners were deregistered"
    );
    assert_eq!(env.secrets().len(), 1, "their Secrets were collected");
    let kept = pod_changes(&plan)
        .into_iter()
        .find(|(_, n, _)| *n == busy)
        .unwrap();
    assert_eq!(kept.0, Action::Unchanged);
    assert!(kept.2.contains("running a job"), "{}", kept.2);

    // The busy runner completes its job and exits: the Pod succeeds, the next apply
    // cleans it up, and its Secret goes with it.
    wait_for("the job to complete", 30, || {
        env.github.job(job).status.as_str() == "completed"
    })
    .await;
    wait_for("the pod to succeed", 30, || {
        env.phase(&busy).as_deref() == Some("Succeeded")
    })
    .await;
    env.registry.refresh().await;
    let (plan, report) = env.apply(0).await;
    assert!(report.is_success(), "{report:#?}");
    assert_eq!(
        pod_changes(&plan),
        vec![(
            Action::Delete,
            busy.clone(),
            "runner finished: Succeeded".into()
        )]
    );
    assert!(env.pods().is_empty());
    assert!(env.secrets().is_empty());
    env.registry.refresh().await;
    assert!(!env.plan(0).await.has_changes());
    env.github.assert_conformant();
}

#[tokio::test]
async fn a_runner_that_takes_a_job_after_observation_is_kept() {
    let env = Env::new(2, 600).await;
    let _kubelet = Kubelet::start(
        env.kube.client().await,
        fake_runner(),
        ["--work-ms", "4000", "--wait-secs", "120"]
            .map(String::from)
            .to_vec(),
    );
    env.apply(1).await;
    wait_for("the runner online", 30, || {
        env.github.runners().iter().any(|r| r.online)
    })
    .await;
    // Observed idle...
    env.registry.refresh().await;
    let name = env.pod_names()[0].clone();
    assert!(!env.registry.registered(&name).unwrap().busy);
    // ...then it takes a job before the scale-down reaches GitHub.
    let job = env.github.queue_job("acme/widgets", &["small"]);
    wait_for("the runner busy", 30, || {
        env.github.runners().iter().any(|r| r.busy)
    })
    .await;
    let (plan, report) = env.apply(0).await;
    assert_eq!(count(&plan, Action::Delete), 1, "{}", text(&plan));
    let [(action, target, error)] = report.failed.as_slice() else {
        panic!("{report:#?}");
    };
    assert_eq!(
        (*action, target.name.as_str()),
        (Action::Delete, name.as_str())
    );
    assert!(error.contains("took a job"), "{error}");
    assert_eq!(env.pod_names(), vec![name.clone()], "never killed");
    wait_for("the job to complete", 30, || {
        env.github.job(job).status.as_str() == "completed"
    })
    .await;
    env.github.assert_conformant();
}

#[tokio::test]
async fn runners_that_never_come_online_are_replaced_and_reported() {
    let env = Env::new(3, 60).await;
    let (_, report) = env.apply(1).await;
    assert!(report.is_success(), "{report:#?}");
    let old = env.pod_names()[0].clone();
    // No node runs it: it is still Pending two minutes later.
    env.kube
        .edit_object("v1", "Pod", Some(NS), &old, |p| {
            p["metadata"]["creationTimestamp"] = json!("2020-01-01T00:00:00Z");
            true
        })
        .unwrap();
    env.registry.refresh().await;
    let plan = env.plan(1).await;
    let changes = pod_changes(&plan);
    assert_eq!(changes.len(), 2, "{}", text(&plan));
    assert_eq!(changes[0].0, Action::Delete);
    assert_eq!(changes[0].1, old);
    assert!(
        changes[0].2.contains("start deadline (60s)"),
        "{}",
        changes[0].2
    );
    assert_eq!(changes[1].0, Action::Create);
    assert_eq!(codes(&plan), vec!["runner-start-timeout"]);
    assert!(plan.findings[0].message.contains(&old));

    let (_, report) = env.apply(1).await;
    assert!(report.is_success(), "{report:#?}");
    let now = env.pod_names();
    assert_eq!(now.len(), 1);
    assert_ne!(now[0], old);
    let registered: Vec<String> = env.github.runners().into_iter().map(|r| r.name).collect();
    assert_eq!(
        registered, now,
        "the stuck runner's registration is removed"
    );
    assert_eq!(env.secrets().len(), 1);
    env.github.assert_conformant();
}

#[tokio::test]
async fn without_a_registry_creates_fail_clearly_and_nothing_else_breaks() {
    let env = Env::new(3, 600).await;
    let plan = env
        .plan_with(env.options(1, false, ApplyOptions::default()))
        .await;
    assert_eq!(count(&plan, Action::Create), 1);
    assert!(codes(&plan).contains(&"runner-registry-missing"));

    // Dry run: the Pod is sent with dryRun, nothing is stored, nothing minted.
    let dry = ApplyOptions {
        dry_run: true,
        ..ApplyOptions::default()
    };
    let (_, report) = env.apply_with(env.options(1, true, dry)).await;
    assert!(
        report
            .failed
            .iter()
            .all(|(_, _, e)| e.contains("skipped in dry run")),
        "{report:#?}"
    );
    assert!(report.failed.iter().any(|(_, t, _)| t.kind == "Pod"));
    assert!(env.pods().is_empty());

    let (_, report) = env
        .apply_with(env.options(1, false, ApplyOptions::default()))
        .await;
    let [(action, target, error)] = report.failed.as_slice() else {
        panic!("{report:#?}");
    };
    assert_eq!((*action, target.kind.as_str()), (Action::Create, "Pod"));
    assert!(error.contains("no runner registry"), "{error}");
    assert!(env.pods().is_empty());
    assert!(
        env.kube
            .get_object("v1", "PodTemplate", Some(NS), "small")
            .is_some(),
        "the site's objects are applied"
    );
    // With the namespace in place, a dry run sends the Pod with dryRun and stores nothing.
    let dry = ApplyOptions {
        dry_run: true,
        ..ApplyOptions::default()
    };
    let (_, report) = env.apply_with(env.options(1, true, dry)).await;
    assert!(report.is_success(), "{report:#?}");
    assert!(env.pods().is_empty());
    assert_eq!(env.registry.minted.load(Ordering::SeqCst), 0);
    assert!(env.github.runners().is_empty());
}

#[tokio::test]
async fn runners_only_observes_and_writes_only_runner_pods() {
    let env = Env::new(3, 600).await;
    env.apply(0).await;
    // Drift on another object, and a Pod with runner labels that drover did not create
    // (as actions-runner-controller's would be).
    env.kube
        .edit_object("v1", "PodTemplate", Some(NS), "small", |o| {
            o["template"]["spec"]["containers"][0]["image"] = json!("evil:1");
            true
        })
        .unwrap();
    env.kube
        .put_object_as(
            "arc",
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "arc-runner", "namespace": NS,
                "labels": {"app.kubernetes.io/managed-by": "drover", "drover.dev/owner": "ci",
                    "app.kubernetes.io/component": "runner", "drover.dev/runner-set": "small"}},
                "spec": {"containers": [{"name": "runner", "image": "arc:1"}]}}),
        )
        .unwrap();
    env.kube.clear_request_log();
    let mut options = env.options(1, true, ApplyOptions::default());
    options.runners_only = true;
    let (plan, report) = env.apply_with(options).await;
    assert!(report.is_success(), "{report:#?}");
    assert!(
        plan.changes.iter().all(|c| c.target.kind == "Pod"),
        "{}",
        text(&plan)
    );
    assert_eq!(count(&plan, Action::Create), 1);
    let paths: Vec<String> = env
        .kube
        .request_log()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(
        paths
            .iter()
            .all(|p| p.ends_with("/pods") || p.ends_with("/secrets")),
        "{paths:#?}"
    );
    assert!(env.pod_names().contains(&"arc-runner".to_string()));
    // The full run still sees the drift; it never touches the foreign Pod.
    let plan = env.plan(1).await;
    assert!(
        plan.changes
            .iter()
            .any(|c| c.action == Action::Update && c.target.kind == "PodTemplate")
    );
    assert!(!plan.changes.iter().any(|c| c.target.name == "arc-runner"));
}
