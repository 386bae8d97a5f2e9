//! The Kubernetes site driver against the API emulator, reached through an ordinary
//! kubeconfig written to a temp file. Each test starts its own emulator.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::support::kube_emulator::{FaultKind, KubeEmulator, NodeBuilder, RequestFilter};
use drover::fleet::{FleetRepo, LoadOptions};
use drover::plan::{Action, ApplyReport, Plan, SitePlan};
use drover::sites::{ApplyOptions, RunOptions, SiteContext, kubernetes};
use serde_json::{Value, json};

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
    let spec = &tpl["template"]["spec"];
    // The chart's dind: externals copied by an init container, dockerd a native sidecar.
    assert_eq!(spec["initContainers"][0]["name"], "init-dind-externals");
    assert_eq!(spec["initContainers"][1]["name"], "dind");
    assert_eq!(spec["initContainers"][1]["restartPolicy"], "Always");
    assert_eq!(
        spec["initContainers"][1]["securityContext"]["privileged"],
        true
    );
    let env = spec["containers"][0]["env"].to_string();
    assert!(
        env.contains("DOCKER_HOST") && env.contains("RUNNER_WAIT_FOR_DOCKER_IN_SECONDS"),
        "{env}"
    );
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
    // No CRD, no controller (so neither its version nor its ServiceAccount is known) and
    // no manager ClusterRole yet.
    for code in [
        "crd-missing",
        "arc-version-unknown",
        "arc-controller-unknown",
        "cluster-role-missing",
    ] {
        assert!(codes(&plan).contains(&code), "{code}: {}", text(&plan));
    }
    let (_, report) = env.apply().await;
    // The set (no CRD) and its manager RoleBinding (no subject) are not applied.
    let failed: Vec<&str> = report.failed.iter().map(|f| f.1.kind.as_str()).collect();
    assert_eq!(
        failed,
        ["RoleBinding", "AutoscalingRunnerSet"],
        "{report:#?}"
    );
    assert!(
        report.failed[0].2.contains("arc.controllerServiceAccount"),
        "{report:#?}"
    );
    assert!(
        report.failed[1]
            .2
            .contains("autoscalingrunnersets.actions.github.com")
    );

    env.emu.put_object_as("helm", arc_crd()).unwrap();
    crate::support::arc::install(&env.emu, "0.14.2");
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
    assert_eq!(
        ars["metadata"]["annotations"]["actions.github.com/cleanup-manager-role-binding"],
        "big-gha-rs-manager"
    );
    // The controller may manage the set's runners in its namespace: its ServiceAccount,
    // read from the Deployment's labels, is bound to the manager ClusterRole there.
    let binding = manager_binding(&env);
    assert_eq!(
        binding["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "drover-arc-manager"})
    );
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": crate::support::arc::CONTROLLER_ACCOUNT, "namespace": crate::support::arc::CONTROLLER_NAMESPACE}])
    );
    assert_eq!(
        binding["metadata"]["finalizers"],
        json!(["actions.github.com/cleanup-protection"])
    );
    let plan = env.plan().await;
    assert!(!plan.has_changes(), "{}", text(&plan));
    for code in [
        "arc-version-unknown",
        "arc-controller-unknown",
        "cluster-role-missing",
    ] {
        assert!(!codes(&plan).contains(&code), "{code}: {}", text(&plan));
    }
}

/// A site that names the controller's ServiceAccount needs no labelled Deployment for it;
/// two controllers with different accounts and no setting is a finding, not a guess.
#[tokio::test]
async fn the_arc_manager_binding_takes_the_sites_account_or_refuses_to_guess() {
    let arc = BIG.replace("docker: dind", "engine: arc");
    let env = Env::new(&fleet_yaml(&arc, "")).await;
    env.emu.put_object_as("helm", arc_crd()).unwrap();
    crate::support::arc::install(&env.emu, "0.14.2");
    let mut other = env
        .emu
        .get_object(
            "apps/v1",
            "Deployment",
            Some("arc-systems"),
            "arc-gha-rs-controller",
        )
        .unwrap();
    other["metadata"]["name"] = json!("second-controller");
    other["metadata"]["labels"]["actions.github.com/controller-service-account-name"] =
        json!("second");
    for field in [
        "resourceVersion",
        "uid",
        "creationTimestamp",
        "managedFields",
    ] {
        other["metadata"].as_object_mut().unwrap().remove(field);
    }
    env.emu.put_object_as("helm", other).unwrap();
    let plan = env.plan().await;
    let finding = plan
        .findings
        .iter()
        .find(|f| f.code == "arc-controller-unknown")
        .unwrap_or_else(|| panic!("{}", text(&plan)));
    assert!(
        finding
            .message
            .contains("arc-systems/arc-gha-rs-controller, arc-systems/second"),
        "{}",
        finding.message
    );

    let mut env = env;
    env.reload(&fleet_yaml(
        &arc,
        "    arc: {controllerServiceAccount: {name: second, namespace: arc-systems}}\n",
    ));
    let (plan, report) = env.apply().await;
    assert!(report.is_success(), "{report:#?} {}", text(&plan));
    assert!(
        !codes(&plan).contains(&"arc-controller-unknown"),
        "{}",
        text(&plan)
    );
    let binding = manager_binding(&env);
    assert_eq!(binding["subjects"][0]["name"], "second");
}

/// The manager RoleBinding of the runner set `big`.
fn manager_binding(env: &Env) -> Value {
    env.emu
        .get_object(
            "rbac.authorization.k8s.io/v1",
            "RoleBinding",
            Some(NS),
            "big-gha-rs-manager",
        )
        .unwrap()
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

/// A secret of the runners that External Secrets fetches, for the ESO tests.
const ESO_SECRET: &str = r#"---
apiVersion: drover.dev/v1alpha1
kind: SecretRef
metadata: {name: hf-eso}
spec:
  externalSecret: {site: lab, store: vault, storeKind: ClusterSecretStore, remoteKey: ci/hf, property: token}
"#;

/// The fleet of a test against the real server: its own fleet name and namespace (the
/// server is shared by every test), with an ExternalSecret.
fn real_fleet(tag: &str) -> String {
    format!("{}{ESO_SECRET}", fleet_yaml("", ""))
        .replace("name: ci}", &format!("name: ci-{tag}}}"))
        .replace("namespace: runners", &format!("namespace: {tag}"))
        .replace(
            "{namespace: runners, name: hf",
            &format!("{{namespace: {tag}, name: hf"),
        )
}

#[tokio::test]
async fn external_secrets_are_v1_on_the_real_server_and_reapply_writes_nothing() {
    let (emu, real) = crate::support::real_apiserver::combined().await;
    let tag = "eso-real";
    real.delete_all("external-secrets.io", "v1", "externalsecrets", tag)
        .await;
    emu.add_node(NodeBuilder::new("cpu-1").label("pool", "cpu"));
    let env = Env::with(emu, &real_fleet(tag));
    let (plan, report) = env.apply().await;
    assert!(plan.error.is_none(), "{:?}", plan.error);
    assert!(report.is_success(), "{report:#?}\n{}", text(&plan));
    // The real server: v1 holds it, v1beta1 is not served (list included).
    let (code, es) = real
        .get(&format!(
            "/apis/external-secrets.io/v1/namespaces/{tag}/externalsecrets/hf-eso"
        ))
        .await;
    assert_eq!(code, 200, "{es}");
    assert_eq!(es["spec"]["secretStoreRef"]["kind"], "ClusterSecretStore");
    // Defaults the server filled in (not rendered by drover) are not drift.
    assert_eq!(es["spec"]["target"]["deletionPolicy"], "Retain", "{es}");
    let (code, _) = real
        .get(&format!(
            "/apis/external-secrets.io/v1beta1/namespaces/{tag}/externalsecrets"
        ))
        .await;
    assert_eq!(code, 404);

    let again = env.plan().await;
    assert!(!again.has_changes(), "{}", text(&again));
    env.emu.clear_request_log();
    let (_, report) = env.apply().await;
    assert!(
        report.is_success() && report.applied.is_empty(),
        "{report:#?}"
    );
    assert_eq!(env.emu.write_count(), 0, "{:#?}", env.emu.request_log());
}

/// The upstream ExternalSecret CRD with other served versions (the emulator's own CRD
/// handling, for clusters the shared real server cannot be).
fn eso_crd_serving(versions: &[&str]) -> Value {
    let mut crd =
        crate::support::real_apiserver::upstream_crd("externalsecrets.external-secrets.io");
    let v1 = crd["spec"]["versions"][0].clone();
    crd["spec"]["versions"] = json!(
        versions
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let mut v = v1.clone();
                v["name"] = json!(name);
                v["storage"] = json!(i == 0);
                v
            })
            .collect::<Vec<_>>()
    );
    crd
}

#[tokio::test]
async fn the_external_secret_version_comes_from_discovery() {
    // v1beta1 alone (ESO before v0.16): rendered at v1beta1, applied, then no changes.
    let emu = KubeEmulator::start().await;
    emu.add_node(NodeBuilder::new("cpu-1").label("pool", "cpu"));
    emu.put_object_as("helm", eso_crd_serving(&["v1beta1"]))
        .unwrap();
    let env = Env::with(emu, &format!("{}{ESO_SECRET}", fleet_yaml("", "")));
    let (plan, report) = env.apply().await;
    assert!(report.is_success(), "{report:#?}\n{}", text(&plan));
    assert!(
        env.emu
            .get_object(
                "external-secrets.io/v1beta1",
                "ExternalSecret",
                Some(NS),
                "hf-eso"
            )
            .is_some()
    );
    assert!(!env.plan().await.has_changes());

    // Only a version drover does not render: an error finding naming the ESO releases,
    // and the ExternalSecret is not applied.
    let emu = KubeEmulator::start().await;
    emu.add_node(NodeBuilder::new("cpu-1").label("pool", "cpu"));
    emu.put_object_as("helm", eso_crd_serving(&["v1alpha1"]))
        .unwrap();
    let env = Env::with(emu, &format!("{}{ESO_SECRET}", fleet_yaml("", "")));
    let (plan, report) = env.apply().await;
    let finding = plan
        .findings
        .iter()
        .find(|f| f.code == "crd-version-unsupported")
        .unwrap_or_else(|| panic!("{}", text(&plan)));
    assert!(
        finding.message.contains("serves v1alpha1")
            && finding
                .message
                .contains("External Secrets Operator v0.16 and later"),
        "{}",
        finding.message
    );
    assert_eq!(report.failed.len(), 1, "{report:#?}");
    assert_eq!(report.failed[0].1.name, "hf-eso");
}

#[tokio::test]
async fn a_list_that_answers_404_fails_the_plan_instead_of_reading_as_empty() {
    let emu = KubeEmulator::start().await;
    emu.add_node(NodeBuilder::new("cpu-1").label("pool", "cpu"));
    emu.put_object_as(
        "helm",
        crate::support::real_apiserver::upstream_crd("externalsecrets.external-secrets.io"),
    )
    .unwrap();
    let env = Env::with(emu, &format!("{}{ESO_SECRET}", fleet_yaml("", "")));
    env.apply().await;
    assert!(!env.plan().await.has_changes());
    for path in [
        "/apis/external-secrets.io/v1/externalsecrets",
        "/api/v1/resourcequotas",
    ] {
        env.emu.faults().clear();
        env.emu
            .faults()
            .only(RequestFilter::any().method("GET").path_prefix(path))
            .fail_next(100, FaultKind::Status404);
        let plan = env.plan().await;
        let err = plan
            .error
            .clone()
            .unwrap_or_else(|| panic!("{}", text(&plan)));
        assert!(
            err.contains("owned by drover") && err.contains("404"),
            "{err}"
        );
        assert!(
            plan.changes.is_empty(),
            "a 404 must not read as nothing owned"
        );
    }
}

#[tokio::test]
async fn a_server_that_does_not_serve_the_built_in_kinds_is_named_not_0_colon() {
    // drover pointed straight at the real apiextensions-apiserver: Namespaces,
    // ServiceAccounts, ... are 404 there.
    let real = crate::support::real_apiserver::RealApiServer::from_env();
    let env = Env::new(&fleet_yaml("", "")).await;
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: real\n  cluster:\n    server: {}\n    insecure-skip-tls-verify: true\n\
         contexts:\n- name: lab-ctx\n  context: {{cluster: real, user: u}}\ncurrent-context: lab-ctx\nusers:\n- name: u\n  user: {{token: {}}}\n",
        real.url, real.token
    );
    std::fs::write(&env.kubeconfig, kubeconfig).unwrap();
    let plan = env.plan().await;
    let err = plan.error.clone().unwrap();
    assert!(!err.contains("0 : "), "{err}");
    assert!(
        err.contains(": 404 NotFound: the server does not serve ") && err.contains("(core v1)"),
        "{err}"
    );
}

#[tokio::test]
async fn arc_sets_carry_the_controller_version_and_their_labels_on_the_real_server() {
    let (emu, real) = crate::support::real_apiserver::combined().await;
    let tag = "arc-real";
    real.delete_all(
        "actions.github.com",
        "v1alpha1",
        "autoscalingrunnersets",
        tag,
    )
    .await;
    emu.add_node(NodeBuilder::new("cpu-1").label("pool", "cpu"));
    let arc = BIG.replace("docker: dind", "engine: arc");
    let yaml = format!("{}{arc}", real_fleet(tag));
    let env = Env::with(emu, &yaml);

    // No controller found and no site setting: the set is not applied (ARC would delete it).
    let (plan, report) = env.apply().await;
    assert!(
        codes(&plan).contains(&"arc-version-unknown"),
        "{}",
        text(&plan)
    );
    // The set and its manager RoleBinding (no controller ServiceAccount known either).
    assert_eq!(report.failed.len(), 2, "{report:#?}");
    assert_eq!(report.failed[1].1.kind, "AutoscalingRunnerSet");

    crate::support::arc::install(&env.emu, "0.14.2");
    let (plan, report) = env.apply().await;
    assert!(report.is_success(), "{report:#?}\n{}", text(&plan));
    let (code, ars) = real
        .get(&format!(
            "/apis/actions.github.com/v1alpha1/namespaces/{tag}/autoscalingrunnersets/big"
        ))
        .await;
    assert_eq!(code, 200, "{ars}");
    assert_eq!(
        ars["metadata"]["labels"]["app.kubernetes.io/version"],
        "0.14.2"
    );
    assert_eq!(ars["spec"]["runnerScaleSetLabels"], json!(["self-hosted"]));
    let again = env.plan().await;
    assert!(!again.has_changes(), "{}", text(&again));
    env.emu.clear_request_log();
    let (_, report) = env.apply().await;
    assert!(
        report.is_success() && report.applied.is_empty(),
        "{report:#?}"
    );
    assert_eq!(env.emu.write_count(), 0);

    // A site setting of another major.minor than the controller: an error finding.
    let mut env = env;
    env.reload(&yaml.replace(
        "    namespace: arc-real\n",
        "    namespace: arc-real\n    arc: {controllerVersion: 0.13.0}\n",
    ));
    let plan = env.plan().await;
    let f = plan
        .findings
        .iter()
        .find(|f| f.code == "arc-version-mismatch")
        .unwrap_or_else(|| panic!("{}", text(&plan)));
    assert!(
        f.message.contains("0.13.0") && f.message.contains("0.14.2"),
        "{}",
        f.message
    );
}

/// A Pod from a rendered PodTemplate, as drover's runner plan creates them.
fn pod_from_template(tpl: &Value, name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": tpl["template"]["metadata"]["labels"]},
        "spec": tpl["template"]["spec"]})
}

#[tokio::test]
async fn a_set_at_max_is_admitted_under_its_quota_and_one_more_pod_is_not() {
    let env = Env::new(&fleet_yaml(BIG, "")).await;
    let (_, report) = env.apply().await;
    assert!(report.is_success(), "{report:#?}");
    // big: runner 8 cpu/16Gi + dind 500m/1Gi, max 2: the quota is the sum × max.
    let quota = env
        .emu
        .get_object("v1", "ResourceQuota", Some(NS), "big")
        .unwrap();
    assert_eq!(quota["spec"]["hard"]["requests.cpu"], "17");
    assert_eq!(quota["spec"]["hard"]["limits.memory"], "34Gi");
    for (set, max) in [("small", 4), ("big", 2)] {
        let tpl = env
            .emu
            .get_object("v1", "PodTemplate", Some(NS), set)
            .unwrap();
        for i in 0..max {
            env.emu
                .put_object_as("drover", pod_from_template(&tpl, &format!("{set}-{i}")))
                .unwrap_or_else(|e| panic!("{set}-{i} refused: {e:?}"));
        }
        let err = env
            .emu
            .put_object_as("drover", pod_from_template(&tpl, &format!("{set}-{max}")))
            .unwrap_err();
        assert!(err.message.contains("exceeded quota"), "{err:?}");
    }
    // What drover rendered before every container set what the quota tracks: the Docker
    // sidecar without resources is refused.
    env.emu
        .delete_object("v1", "Pod", Some(NS), "big-0")
        .unwrap();
    let tpl = env
        .emu
        .get_object("v1", "PodTemplate", Some(NS), "big")
        .unwrap();
    let mut old = pod_from_template(&tpl, "big-old");
    old["spec"]["initContainers"][1]
        .as_object_mut()
        .unwrap()
        .remove("resources");
    let err = env.emu.put_object_as("drover", old).unwrap_err();
    assert!(
        err.message.contains(
            "failed quota: big: must specify limits.memory for: dind; requests.cpu for: dind"
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn dind_on_a_cluster_without_native_sidecars_is_an_error_finding() {
    let emu = KubeEmulator::start_with(crate::support::kube_emulator::EmulatorConfig {
        git_version: "v1.28.9".to_string(),
        ..Default::default()
    })
    .await;
    emu.add_node(NodeBuilder::new("cpu-1").label("pool", "cpu"));
    let env = Env::with(emu, &fleet_yaml(BIG, ""));
    let plan = env.plan().await;
    assert!(
        codes(&plan).contains(&"native-sidecar-unsupported"),
        "{}",
        text(&plan)
    );
    let env = Env::new(&fleet_yaml(BIG, "")).await;
    assert!(!codes(&env.plan().await).contains(&"native-sidecar-unsupported"));
}

/// Ownership is per site: an object labelled for another site of the fleet is neither
/// planned nor pruned; one from before site labels is adopted when declared and never
/// pruned when not.
#[tokio::test]
async fn objects_of_another_site_are_left_and_unlabelled_ones_adopted_never_pruned() {
    let env = Env::new(&fleet_yaml("", "")).await;
    env.apply().await;
    let labels = |site: Option<&str>| {
        let mut l = json!({"app.kubernetes.io/managed-by": "drover", "drover.dev/owner": "ci"});
        if let Some(site) = site {
            l["drover.dev/site"] = json!(site);
        }
        l
    };
    let quota = |name: &str, site: Option<&str>| {
        json!({"apiVersion": "v1", "kind": "ResourceQuota",
        "metadata": {"name": name, "namespace": NS, "labels": labels(site)},
        "spec": {"hard": {"pods": "1"}}})
    };
    env.emu
        .put_object_as("drover", quota("twin", Some("other-site")))
        .unwrap();
    env.emu
        .put_object_as("drover", quota("legacy", None))
        .unwrap();
    // A declared object as an older drover left it: no site label.
    let mut small = env
        .emu
        .get_object("v1", "PodTemplate", Some(NS), "small")
        .unwrap();
    small["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .remove("drover.dev/site");
    env.emu.put_object_as("drover", small).unwrap();

    let plan = env.plan().await;
    assert_eq!(changed(&plan), vec!["update PodTemplate runners/small"]);
    let finding = plan
        .findings
        .iter()
        .find(|f| f.code == "legacy-objects-not-pruned")
        .expect("legacy finding");
    assert!(
        finding.message.contains("ResourceQuota runners/legacy"),
        "{}",
        finding.message
    );
    assert!(!finding.message.contains("twin"), "{}", finding.message);

    let (_, report) = env.apply().await;
    assert!(report.is_success(), "{report:#?}");
    let adopted = env
        .emu
        .get_object("v1", "PodTemplate", Some(NS), "small")
        .unwrap();
    assert_eq!(adopted["metadata"]["labels"]["drover.dev/site"], SITE);
    for name in ["twin", "legacy"] {
        assert!(
            env.emu
                .get_object("v1", "ResourceQuota", Some(NS), name)
                .is_some(),
            "{name} was deleted"
        );
    }
    assert!(!env.plan().await.has_changes());
}
