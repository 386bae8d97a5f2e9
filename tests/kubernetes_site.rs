//! The Kubernetes site driver against the API emulator, reached through an ordinary
//! kubeconfig written to a temp file. Each test starts its own emulator.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use drover::fleet::{FleetRepo, LoadOptions};
use drover::plan::{Action, ApplyReport, Plan, SitePlan};
use drover::sites::{ApplyOptions, RunOptions, SiteContext, kubernetes};
use serde_json::{Value, json};
use support::kube_emulator::{FaultKind, KubeEmulator, NodeBuilder, RequestFilter};

const SITE: &str = "lab";
const NS: &str = "runners";

/// A small fleet: one site, one pool, two runner sets (one with dind and a secret env).
fn fleet_yaml(extra_sets: &str, site_extra: &str) -> String {
    format!(
        r#"apiVersion: drover.dev/v1alpha1
kind: Fleet
metadata: {{name: ci}}
spec:
  github: {{url: "https://github.com", tokenRef: gh-token}}
  reconcile: {{prune: true, massPrunePercent: 50}}
---
apiVersion: drover.dev/v1alpha1
kind: SecretRef
metadata: {{name: gh-token}}
spec:
  env: {{name: GH_TOKEN}}
---
apiVersion: drover.dev/v1alpha1
kind: SecretRef
metadata: {{name: hf}}
spec:
  kubernetesSecret: {{namespace: runners, name: hf, key: token}}
---
apiVersion: drover.dev/v1alpha1
kind: Site
metadata: {{name: lab}}
spec:
  kubernetes:
    context: lab-ctx
    namespace: runners
{site_extra}
  timeoutSeconds: 5
---
apiVersion: drover.dev/v1alpha1
kind: NodePool
metadata: {{name: cpu}}
spec:
  site: lab
  nodeCount: 1
  kubernetes:
    nodeSelector: {{pool: cpu}}
    labels: {{drover.dev/pool: cpu}}
    taints:
      - {{key: ci, value: "true", effect: NoSchedule}}
    tolerations:
      - {{key: ci, operator: Exists, effect: NoSchedule}}
---
apiVersion: drover.dev/v1alpha1
kind: RunnerSet
metadata: {{name: small}}
spec:
  github: {{org: acme}}
  labels: [self-hosted, small]
  pool: cpu
  max: 4
  resources: {{cpu: "2", memory: 4Gi}}
  image: ghcr.io/actions/actions-runner:2.321.0
  env:
    - {{name: MODE, value: ci}}
    - {{name: HF_TOKEN, secretRef: hf}}
{extra_sets}"#
    )
}

const BIG: &str = r#"---
apiVersion: drover.dev/v1alpha1
kind: RunnerSet
metadata: {name: big}
spec:
  github: {org: acme}
  labels: [self-hosted, big]
  pool: cpu
  max: 2
  resources: {cpu: "8", memory: 16Gi}
  image: ghcr.io/actions/actions-runner:2.321.0
  docker: dind
"#;

struct Env {
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    repo: FleetRepo,
    emu: KubeEmulator,
}

fn load(dir: &std::path::Path, yaml: &str) -> FleetRepo {
    std::fs::write(dir.join("fleet.yaml"), yaml).unwrap();
    let v = drover::fleet::validate_dir(dir, &LoadOptions::default()).unwrap();
    assert!(v.is_valid(), "{:#?}", v.diagnostics);
    v.repo
}

impl Env {
    async fn new(yaml: &str) -> Env {
        let emu = KubeEmulator::start().await;
        emu.add_node(NodeBuilder::new("cpu-1").label("pool", "cpu"));
        Self::with(emu, yaml)
    }

    fn with(emu: KubeEmulator, yaml: &str) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, emu.kubeconfig_yaml("lab-ctx")).unwrap();
        let fleet_dir = dir.path().join("fleet");
        std::fs::create_dir(&fleet_dir).unwrap();
        let repo = load(&fleet_dir, yaml);
        Env {
            dir,
            kubeconfig,
            repo,
            emu,
        }
    }

    fn reload(&mut self, yaml: &str) {
        self.repo = load(&self.dir.path().join("fleet"), yaml);
    }

    fn options(&self, apply: ApplyOptions) -> RunOptions {
        RunOptions {
            kubeconfig: Some(self.kubeconfig.clone()),
            apply,
            ..RunOptions::default()
        }
    }

    async fn plan(&self) -> SitePlan {
        let options = self.options(ApplyOptions::default());
        let ctx = SiteContext {
            repo: &self.repo,
            site: &self.repo.sites[SITE],
            options: &options,
        };
        kubernetes::plan(&ctx).await
    }

    async fn apply_with(&self, apply: ApplyOptions) -> (SitePlan, ApplyReport) {
        let options = self.options(apply);
        let ctx = SiteContext {
            repo: &self.repo,
            site: &self.repo.sites[SITE],
            options: &options,
        };
        kubernetes::apply(&ctx).await
    }

    async fn apply(&self) -> (SitePlan, ApplyReport) {
        self.apply_with(ApplyOptions::default()).await
    }
}

fn changed(plan: &SitePlan) -> Vec<String> {
    plan.changes
        .iter()
        .filter(|c| c.action != Action::Unchanged)
        .map(|c| format!("{} {}", c.action.as_str(), c.target))
        .collect()
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

fn codes(plan: &SitePlan) -> Vec<&str> {
    plan.findings.iter().map(|f| f.code.as_str()).collect()
}

#[tokio::test]
async fn apply_then_plan_is_empty_and_a_second_apply_writes_nothing() {
    let env = Env::new(&fleet_yaml(BIG, "")).await;
    let (plan, report) = env.apply().await;
    assert!(plan.error.is_none(), "{:?}", plan.error);
    assert!(report.is_success(), "{report:#?}");
    let counts = plan.counts();
    assert_eq!(
        (counts.create, counts.update, counts.delete),
        (11, 1, 0),
        "{}",
        text(&plan)
    );
    assert_eq!(report.applied.len(), 12);

    let again = env.plan().await;
    assert!(!again.has_changes(), "{}", text(&again));
    assert_eq!(again.counts().unchanged, 12);

    env.emu.clear_request_log();
    let (_, report) = env.apply().await;
    assert!(
        report.is_success() && report.applied.is_empty(),
        "{report:#?}"
    );
    assert_eq!(env.emu.write_count(), 0, "{:#?}", env.emu.request_log());

    // What landed: owner labels everywhere, node label + taint, quota sized max × one runner.
    let quota = env
        .emu
        .get_object("v1", "ResourceQuota", Some(NS), "small")
        .unwrap();
    assert_eq!(quota["spec"]["hard"]["requests.cpu"], "8");
    assert_eq!(quota["spec"]["hard"]["requests.memory"], "16Gi");
    assert_eq!(
        quota["metadata"]["labels"]["drover.dev/runner-set"],
        "small"
    );
    let node = env.emu.get_object("v1", "Node", None, "cpu-1").unwrap();
    assert_eq!(node["metadata"]["labels"]["drover.dev/pool"], "cpu");
    assert_eq!(node["metadata"]["labels"]["pool"], "cpu");
    assert_eq!(node["spec"]["taints"][0]["key"], "ci");
    let tpl = env
        .emu
        .get_object("v1", "PodTemplate", Some(NS), "big")
        .unwrap();
    let containers = &tpl["template"]["spec"]["containers"];
    assert_eq!(containers[1]["securityContext"]["privileged"], true);
    assert!(containers[0]["env"].to_string().contains("DOCKER_HOST"));
}

#[tokio::test]
async fn one_changed_field_is_exactly_one_update_with_its_diff() {
    let mut env = Env::new(&fleet_yaml(BIG, "")).await;
    env.apply().await;
    env.reload(&fleet_yaml(BIG, "").replace("max: 4", "max: 6"));
    let plan = env.plan().await;
    // max drives the quota only (the pod template does not depend on it).
    assert_eq!(changed(&plan), vec!["update ResourceQuota runners/small"]);
    insta::assert_snapshot!("one_update_text_plan", text(&plan));
    let (_, report) = env.apply().await;
    assert_eq!(report.applied.len(), 1, "{report:#?}");
    assert!(!env.plan().await.has_changes());
}

#[tokio::test]
async fn out_of_band_drift_is_an_update_and_defaults_are_not() {
    let env = Env::new(&fleet_yaml("", "")).await;
    env.apply().await;
    env.emu
        .edit_object("v1", "PodTemplate", Some(NS), "small", |o| {
            o["template"]["spec"]["containers"][0]["image"] = json!("evil:1");
            true
        })
        .unwrap();
    let plan = env.plan().await;
    assert_eq!(changed(&plan), vec!["update PodTemplate runners/small"]);
    let diff = plan.changes.iter().find_map(|c| c.diff.clone()).unwrap();
    assert!(
        diff.contains("-      image: evil:1\n+      image: ghcr.io/actions/actions-runner:2.321.0"),
        "{diff}"
    );
    assert!(!diff.contains("imagePullPolicy"), "{diff}");
}

#[tokio::test]
async fn removing_a_runner_set_prunes_only_its_owned_objects() {
    let mut env = Env::new(&fleet_yaml(BIG, "")).await;
    env.apply().await;
    // A same-named object in another namespace without drover's labels.
    env.emu
        .put_object_as(
            "kubectl",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}}),
        )
        .unwrap();
    env.emu
        .put_object_as(
            "kubectl",
            json!({"apiVersion": "v1", "kind": "ResourceQuota",
            "metadata": {"name": "big", "namespace": "other"}, "spec": {"hard": {"pods": "1"}}}),
        )
        .unwrap();
    env.reload(&fleet_yaml("", ""));
    let plan = env.plan().await;
    let mut deletes = changed(&plan);
    deletes.sort();
    assert_eq!(
        deletes,
        vec![
            "delete PodTemplate runners/big",
            "delete PriorityClass drover-ci-big",
            "delete ResourceQuota runners/big",
        ]
    );
    let (_, report) = env.apply().await;
    assert!(report.is_success(), "{report:#?}");
    assert!(
        env.emu
            .get_object("v1", "PodTemplate", Some(NS), "big")
            .is_none()
    );
    assert!(
        env.emu
            .get_object("v1", "ResourceQuota", Some("other"), "big")
            .is_some()
    );
    assert!(
        env.emu
            .get_object("v1", "PodTemplate", Some(NS), "small")
            .is_some()
    );
    assert!(!env.plan().await.has_changes());
}

#[tokio::test]
async fn without_prune_orphans_are_a_finding_not_a_delete() {
    let mut env = Env::new(&fleet_yaml(BIG, "")).await;
    env.apply().await;
    env.reload(&fleet_yaml("", "").replace("prune: true", "prune: false"));
    let plan = env.plan().await;
    assert!(!plan.has_changes(), "{}", text(&plan));
    let f = plan
        .findings
        .iter()
        .find(|f| f.code == "prune-pending")
        .unwrap();
    assert!(
        f.message
            .starts_with("3 owned objects no longer declared; run with --prune"),
        "{}",
        f.message
    );
}

#[tokio::test]
async fn a_field_owned_by_another_manager_conflicts_until_forced() {
    let mut env = Env::new(&fleet_yaml("", "")).await;
    env.apply().await;
    env.emu
        .apply_object_as(
            "platform-team",
            json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "small", "namespace": NS},
                "spec": {"hard": {"pods": "9"}}}),
            true,
        )
        .unwrap();
    env.reload(&fleet_yaml("", "").replace("max: 4", "max: 5"));
    let (_, report) = env.apply().await;
    assert_eq!(report.failed.len(), 1, "{report:#?}");
    let (action, target, err) = &report.failed[0];
    assert_eq!(
        (*action, target.to_string().as_str()),
        (Action::Update, "ResourceQuota runners/small")
    );
    assert!(
        err.contains("platform-team") && err.contains(".spec.hard.pods"),
        "{err}"
    );
    assert!(err.contains("--force-conflicts"), "{err}");
    let quota = env
        .emu
        .get_object("v1", "ResourceQuota", Some(NS), "small")
        .unwrap();
    assert_eq!(quota["spec"]["hard"]["pods"], "9", "not overwritten");

    let (_, report) = env
        .apply_with(ApplyOptions {
            force_conflicts: true,
            ..ApplyOptions::default()
        })
        .await;
    assert!(report.is_success(), "{report:#?}");
    let quota = env
        .emu
        .get_object("v1", "ResourceQuota", Some(NS), "small")
        .unwrap();
    assert_eq!(quota["spec"]["hard"]["pods"], "5");
}

#[tokio::test]
async fn transient_errors_are_retried_and_the_next_run_converges() {
    let env = Env::new(&fleet_yaml(BIG, "")).await;
    // The first PATCHes hit two 500s, then a 429 (Retry-After 0): retried, all succeed.
    env.emu
        .faults()
        .only(RequestFilter::any().method("PATCH"))
        .fail_next(2, FaultKind::Status500);
    env.emu
        .faults()
        .only(RequestFilter::any().method("PATCH"))
        .rate_limit_next(1, 0);
    env.emu
        .faults()
        .only(RequestFilter::any().method("PATCH"))
        .drop_next_connections(1);
    env.emu
        .faults()
        .only(RequestFilter::any().method("GET"))
        .fail_next(1, FaultKind::Status503);
    let (_, report) = env.apply().await;
    assert!(report.is_success(), "{report:#?}");
    let statuses: Vec<u16> = env.emu.request_log().iter().map(|r| r.status).collect();
    assert!(statuses.contains(&500) && statuses.contains(&429) && statuses.contains(&503));

    // A persistent failure on one kind: reported per object, the rest applied.
    env.emu.clear_request_log();
    let mut env = env;
    env.reload(
        &fleet_yaml(BIG, "")
            .replace("max: 4", "max: 7")
            .replace("max: 2", "max: 3"),
    );
    env.emu
        .faults()
        .only(
            RequestFilter::any()
                .method("PATCH")
                .path_prefix("/api/v1/namespaces/runners/resourcequotas/big"),
        )
        .fail_next(100, FaultKind::Status500);
    let (_, report) = env.apply().await;
    assert_eq!(report.failed.len(), 1, "{report:#?}");
    assert_eq!(report.failed[0].1.name, "big");
    assert!(report.failed[0].2.contains("500"), "{}", report.failed[0].2);
    assert_eq!(report.applied.len(), 1);
    env.emu.faults().clear();
    let (_, report) = env.apply().await;
    assert_eq!(report.applied.len(), 1, "{report:#?}");
    assert!(!env.plan().await.has_changes());
}

#[tokio::test]
async fn dry_run_writes_nothing() {
    let mut env = Env::new(&fleet_yaml(BIG, "")).await;
    env.apply().await;
    env.reload(&fleet_yaml("", "").replace("max: 4", "max: 5"));
    let before = env.emu.resource_version();
    env.emu.clear_request_log();
    let (plan, report) = env
        .apply_with(ApplyOptions {
            dry_run: true,
            ..ApplyOptions::default()
        })
        .await;
    assert_eq!(plan.counts().delete, 3);
    assert!(report.is_success(), "{report:#?}");
    assert_eq!(report.applied.len(), 4);
    let writes: Vec<_> = env
        .emu
        .request_log()
        .into_iter()
        .filter(|r| r.is_write())
        .collect();
    assert_eq!(writes.len(), 4);
    assert!(writes.iter().all(|w| w.dry_run), "{writes:#?}");
    assert_eq!(env.emu.resource_version(), before);
    assert_eq!(env.plan().await.counts().delete, 3);
}

#[tokio::test]
async fn mass_prune_is_refused_unless_allowed() {
    let mut env = Env::new(&fleet_yaml(BIG, "")).await;
    env.apply().await;
    // Lower the threshold: 3 of 11 owned objects (25%) is above 20%.
    env.reload(&fleet_yaml("", "").replace("massPrunePercent: 50", "massPrunePercent: 20"));
    env.emu.clear_request_log();
    let (_, report) = env.apply().await;
    let refused = report.refused.clone().unwrap();
    assert!(
        refused.contains("3 of 11 owned objects") && refused.contains("--allow-mass-prune"),
        "{refused}"
    );
    assert_eq!(env.emu.write_count(), 0);
    let (_, report) = env
        .apply_with(ApplyOptions {
            allow_mass_prune: true,
            ..ApplyOptions::default()
        })
        .await;
    assert!(report.is_success(), "{report:#?}");
    assert_eq!(report.applied.len(), 3);
}

#[tokio::test]
async fn site_checks_become_findings() {
    let site_extra = r#"    version: {min: "1.32", max: "1.33"}
    requires:
      runtimeClasses: [nvidia]
      devicePlugins:
        - {namespace: kube-system, name: amdgpu-device-plugin}"#;
    let gpu_pool = r#"---
apiVersion: drover.dev/v1alpha1
kind: NodePool
metadata: {name: mi300}
spec:
  site: lab
  nodeCount: 2
  gpu: {vendor: amd, perNode: 8}
  kubernetes:
    nodeSelector: {gpu: mi300}
---
apiVersion: drover.dev/v1alpha1
kind: RunnerSet
metadata: {name: gpu}
spec:
  github: {org: acme}
  labels: [self-hosted, gpu]
  pool: mi300
  max: 2
  resources: {cpu: "4", memory: 8Gi, gpu: {vendor: amd, count: 8}}
  image: ghcr.io/acme/rocm-runner:6.2
"#;
    let emu = KubeEmulator::start().await;
    emu.add_node(NodeBuilder::new("cpu-1").label("pool", "cpu"));
    emu.add_node(
        NodeBuilder::new("gpu-1")
            .label("gpu", "mi300")
            .allocatable("amd.com/gpu", "4"),
    );
    emu.put_object_as(
        "kubectl",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system"}}),
    )
    .unwrap();
    emu.put_object_as("helm", json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "amdgpu-device-plugin", "namespace": "kube-system"},
        "spec": {"selector": {"matchLabels": {"app": "p"}}, "template": {"metadata": {"labels": {"app": "p"}},
            "spec": {"containers": [{"name": "p", "image": "rocm/k8s-device-plugin:1.31"}]}}}})).unwrap();
    emu.set_status(
        "apps/v1",
        "DaemonSet",
        Some("kube-system"),
        "amdgpu-device-plugin",
        json!({"numberReady": 1, "desiredNumberScheduled": 2}),
    )
    .unwrap();
    let env = Env::with(emu, &format!("{}{gpu_pool}", fleet_yaml("", site_extra)));
    let plan = env.plan().await;
    let mut found = codes(&plan);
    found.sort();
    assert_eq!(
        found,
        vec![
            "device-plugin-not-ready",
            "pool-short-of-gpus",
            "pool-short-of-nodes",
            "runtime-class-missing",
            "version-out-of-range",
        ],
        "{}",
        text(&plan)
    );
    let gpus = plan
        .findings
        .iter()
        .find(|f| f.code == "pool-short-of-gpus")
        .unwrap();
    assert_eq!(
        gpus.severity,
        drover::plan::FindingSeverity::Error,
        "no node fits an 8-GPU runner"
    );
    insta::assert_snapshot!(
        "site_check_findings",
        text(&plan)
            .lines()
            .filter(|l| l.contains(" ! "))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[tokio::test]
async fn an_unreachable_site_fails_quickly_with_an_unknown_plan() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let env = Env::new(&fleet_yaml("", "")).await;
    let yaml = env
        .emu
        .kubeconfig_yaml("lab-ctx")
        .replace(&env.emu.url(), &format!("http://127.0.0.1:{port}"));
    std::fs::write(&env.kubeconfig, yaml).unwrap();
    let started = Instant::now();
    let plan = env.plan().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let err = plan.error.clone().unwrap();
    assert!(err.contains("cannot observe the site"), "{err}");
    assert!(plan.changes.is_empty());
    let (_, report) = env.apply().await;
    assert!(report.refused.is_some());
}

#[tokio::test]
async fn a_slow_site_times_out_instead_of_hanging() {
    let env = Env::new(&fleet_yaml("", "").replace("timeoutSeconds: 5", "timeoutSeconds: 1")).await;
    env.emu.faults().latency(Duration::from_secs(10));
    let started = Instant::now();
    let plan = env.plan().await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert!(plan.error.is_some());
}

#[tokio::test]
async fn report_only_sites_are_never_written() {
    let env = Env::new(&fleet_yaml("", "").replace(
        "  timeoutSeconds: 5",
        "  policy: report-only\n  timeoutSeconds: 5",
    ))
    .await;
    let (plan, report) = env.apply().await;
    assert!(plan.has_changes());
    assert_eq!(
        report.refused.as_deref(),
        Some("site policy is report-only")
    );
    assert_eq!(env.emu.write_count(), 0);
}

#[tokio::test]
async fn secret_values_never_appear_in_plans() {
    let env = Env::new(&fleet_yaml("", "")).await;
    // The Secret the runners read exists, with a value, and one drover owns by mistake.
    env.emu
        .put_object_as(
            "kubectl",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}),
        )
        .unwrap();
    env.emu
        .put_object_as("kubectl", json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "hf", "namespace": NS}, "stringData": {"token": "hf_SUPERSECRETVALUE"}}))
        .unwrap();
    let (plan, _) = env.apply().await;
    let all = drover::plan::Plan {
        revision: None,
        sites: vec![plan.clone(), env.plan().await],
    };
    for out in [
        drover::plan::render::text(&all, false),
        drover::plan::render::markdown(&all),
        drover::plan::render::json(&all),
    ] {
        assert!(
            !out.contains("hf_SUPERSECRETVALUE") && !out.contains("aGZfU1VQRVJTRUNSRVRWQUxVRQ"),
            "{out}"
        );
        assert!(
            out.contains("secretKeyRef"),
            "the reference is shown: {out}"
        );
    }
}

#[tokio::test]
async fn arc_runner_sets_need_their_crd_and_render_an_autoscaling_runner_set() {
    let arc = BIG.replace("docker: dind", "engine: arc");
    let env = Env::new(&fleet_yaml(&arc, "")).await;
    let plan = env.plan().await;
    assert!(codes(&plan).contains(&"crd-missing"), "{}", text(&plan));
    let (_, report) = env.apply().await;
    assert_eq!(report.failed.len(), 1, "{report:#?}");
    assert!(
        report.failed[0]
            .2
            .contains("autoscalingrunnersets.actions.github.com")
    );

    env.emu.put_object_as("helm", arc_crd()).unwrap();
    let (_, report) = env.apply().await;
    assert!(report.is_success(), "{report:#?}");
    let ars = env
        .emu
        .get_object(
            "actions.github.com/v1alpha1",
            "AutoscalingRunnerSet",
            Some(NS),
            "big",
        )
        .unwrap();
    assert_eq!(ars["spec"]["githubConfigUrl"], "https://github.com/acme");
    assert_eq!(ars["spec"]["maxRunners"], 2);
    assert!(!env.plan().await.has_changes());
}

fn arc_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "autoscalingrunnersets.actions.github.com"},
        "spec": {
            "group": "actions.github.com",
            "scope": "Namespaced",
            "names": {"kind": "AutoscalingRunnerSet", "plural": "autoscalingrunnersets"},
            "versions": [{"name": "v1alpha1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}],
        },
    })
}
