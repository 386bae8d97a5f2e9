//! The example fleet (`fleet/`) against clusters that hold what it expects: each site its
//! own emulator (nodes, device plugins, RuntimeClasses, actions-runner-controller's
//! Deployment), with quota admission in force; eks-prod's custom resources (External
//! Secrets, ARC) on the real apiextensions-apiserver with the upstream CRDs.

use std::collections::BTreeMap;
use std::path::Path;

use crate::support::kube_emulator::{KubeEmulator, NodeBuilder};
use drover::fleet::{FleetRepo, LoadOptions};
use drover::plan::{ApplyReport, FindingSeverity, Plan, SitePlan};
use drover::sites::{RunOptions, SiteContext, kubernetes};
use serde_json::{Value, json};

const NS: &str = "gha-runners";

fn repo() -> FleetRepo {
    let v = drover::fleet::validate_dir(Path::new("fleet"), &LoadOptions::default()).unwrap();
    assert!(v.is_valid(), "{:#?}", v.diagnostics);
    v.repo
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

struct Site {
    name: &'static str,
    emu: KubeEmulator,
    _dir: tempfile::TempDir,
    options: RunOptions,
}

impl Site {
    fn new(name: &'static str, context: &str, emu: KubeEmulator, repo: &FleetRepo) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, emu.kubeconfig_yaml(context)).unwrap();
        // Objects only: runner Pods need `drover serve`'s registry (tests/it/kubernetes_runners.rs).
        let desired_runners: BTreeMap<String, u32> =
            repo.runner_sets.keys().map(|k| (k.clone(), 0)).collect();
        Site {
            name,
            emu,
            _dir: dir,
            options: RunOptions {
                kubeconfig: Some(kubeconfig),
                desired_runners,
                ..RunOptions::default()
            },
        }
    }

    async fn plan(&self, repo: &FleetRepo) -> SitePlan {
        let ctx = SiteContext {
            repo,
            site: &repo.sites[self.name],
            options: &self.options,
        };
        kubernetes::plan(&ctx).await
    }

    async fn apply(&self, repo: &FleetRepo) -> (SitePlan, ApplyReport) {
        let ctx = SiteContext {
            repo,
            site: &repo.sites[self.name],
            options: &self.options,
        };
        kubernetes::apply(&ctx).await
    }
}

fn namespace(emu: &KubeEmulator, name: &str) {
    emu.put_object_as(
        "kubectl",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
    )
    .unwrap();
}

fn ready_daemon_set(emu: &KubeEmulator, ns: &str, name: &str, nodes: u64) {
    namespace(emu, ns);
    emu.put_object_as("helm", json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"selector": {"matchLabels": {"app": name}}, "template": {"metadata": {"labels": {"app": name}},
            "spec": {"containers": [{"name": "plugin", "image": "registry.example/device-plugin:1"}]}}}}))
        .unwrap();
    emu.set_status(
        "apps/v1",
        "DaemonSet",
        Some(ns),
        name,
        json!({"numberReady": nodes, "desiredNumberScheduled": nodes}),
    )
    .unwrap();
}

fn errors(plan: &SitePlan) -> Vec<String> {
    plan.findings
        .iter()
        .filter(|f| f.severity == FindingSeverity::Error)
        .map(|f| format!("{} {}: {}", f.code, f.subject, f.message))
        .collect()
}

/// Every runner set of the site at max: each Pod from its PodTemplate is admitted under
/// the set's quota.
fn fill_to_max(site: &Site, repo: &FleetRepo) {
    for tpl in site.emu.list_objects("v1", "PodTemplate", Some(NS)) {
        let set = tpl["metadata"]["name"].as_str().unwrap().to_string();
        let max = repo.runner_sets[&set].value.spec.max;
        for i in 0..max {
            let pod = json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("{set}-{i}"), "namespace": NS, "labels": tpl["template"]["metadata"]["labels"]},
                "spec": tpl["template"]["spec"]});
            site.emu
                .put_object_as("drover", pod)
                .unwrap_or_else(|e| panic!("{}: Pod {set}-{i} refused: {e:?}", site.name));
        }
    }
}

#[tokio::test]
async fn the_example_fleet_applies_cleanly_and_reapplies_with_zero_writes() {
    let repo = repo();

    // eks-prod: 6 CPU nodes, ARC 0.14.2; its custom resources on the real server.
    let (emu, real) = crate::support::real_apiserver::combined().await;
    for (group, version, plural) in [
        ("external-secrets.io", "v1", "externalsecrets"),
        ("actions.github.com", "v1alpha1", "autoscalingrunnersets"),
    ] {
        real.delete_all(group, version, plural, NS).await;
    }
    for i in 0..6 {
        emu.add_node(
            NodeBuilder::new(&format!("eks-cpu-{i}"))
                .label("eks.amazonaws.com/nodegroup", "ci-cpu"),
        );
    }
    crate::support::arc::install(&emu, "0.14.2");
    let eks = Site::new("eks-prod", "eks-prod", emu, &repo);

    // onprem-mi300: 4 MI300X nodes, the ROCm device plugin ready.
    let emu = KubeEmulator::start().await;
    for i in 0..4 {
        emu.add_node(
            NodeBuilder::new(&format!("mi300-{i}"))
                .label("amd.com/gpu.product-name", "AMD_Instinct_MI300X_OAM")
                .allocatable("amd.com/gpu", "8"),
        );
    }
    ready_daemon_set(&emu, "kube-system", "amdgpu-device-plugin-daemonset", 4);
    let mi300 = Site::new("onprem-mi300", "mi300-admin", emu, &repo);

    // dgx-h100 (report-only): 2 H100 nodes, RuntimeClass nvidia, the NVIDIA device plugin.
    let emu = KubeEmulator::start().await;
    for i in 0..2 {
        emu.add_node(
            NodeBuilder::new(&format!("h100-{i}"))
                .label("nvidia.com/gpu.product", "NVIDIA-H100-80GB-HBM3")
                .allocatable("nvidia.com/gpu", "8"),
        );
    }
    ready_daemon_set(&emu, "gpu-operator", "nvidia-device-plugin-daemonset", 2);
    emu.put_object_as(
        "kubectl",
        json!({"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": "nvidia"}, "handler": "nvidia"}),
    )
    .unwrap();
    let h100 = Site::new("dgx-h100", "dgx-h100", emu, &repo);

    for site in [&eks, &mi300] {
        let (plan, report) = site.apply(&repo).await;
        assert!(plan.error.is_none(), "{}: {:?}", site.name, plan.error);
        assert!(
            errors(&plan).is_empty(),
            "{}: {:#?}",
            site.name,
            errors(&plan)
        );
        assert!(
            report.is_success(),
            "{}: {report:#?}\n{}",
            site.name,
            text(&plan)
        );
        let again = site.plan(&repo).await;
        assert!(!again.has_changes(), "{}: {}", site.name, text(&again));
        site.emu.clear_request_log();
        let (_, report) = site.apply(&repo).await;
        assert!(
            report.is_success() && report.applied.is_empty(),
            "{report:#?}"
        );
        assert_eq!(
            site.emu.write_count(),
            0,
            "{}: {:#?}",
            site.name,
            site.emu.request_log()
        );
        fill_to_max(site, &repo);
    }
    // What landed on the real server for eks-prod.
    let (code, ars) = real
        .get(&format!(
            "/apis/actions.github.com/v1alpha1/namespaces/{NS}/autoscalingrunnersets/cpu-large"
        ))
        .await;
    assert_eq!(code, 200, "{ars}");
    assert_eq!(
        ars["metadata"]["labels"]["app.kubernetes.io/version"],
        "0.14.2"
    );
    let (code, es): (u16, Value) = real
        .get(&format!(
            "/apis/external-secrets.io/v1/namespaces/{NS}/externalsecrets/drover-arc-github"
        ))
        .await;
    assert_eq!(code, 200, "{es}");
    assert_eq!(es["spec"]["secretStoreRef"]["kind"], "ClusterSecretStore");

    let plan = h100.plan(&repo).await;
    assert!(plan.error.is_none(), "{:?}", plan.error);
    assert!(errors(&plan).is_empty(), "{:#?}", errors(&plan));
    let (_, report) = h100.apply(&repo).await;
    assert_eq!(
        report.refused.as_deref(),
        Some("site policy is report-only")
    );
    assert_eq!(h100.emu.write_count(), 0);
}
