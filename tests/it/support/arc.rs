//! actions-runner-controller as its charts install it, for the Kubernetes tests: the
//! controller Deployment labelled as gha-runner-scale-set-controller 0.14.2 labels it, and
//! the manager ClusterRole drover ships in `deploy/kubernetes/rbac.yaml`.

use serde_json::{Value, json};

use super::kube_emulator::KubeEmulator;

/// The controller's namespace and ServiceAccount in these fixtures.
pub const CONTROLLER_NAMESPACE: &str = "arc-systems";
/// See [`CONTROLLER_NAMESPACE`].
pub const CONTROLLER_ACCOUNT: &str = "arc-gha-rs-controller";

/// Installs the controller Deployment of `version` (its namespace too) and the manager
/// ClusterRole.
pub fn install(emu: &KubeEmulator, version: &str) {
    emu.put_object_as(
        "kubectl",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": CONTROLLER_NAMESPACE}}),
    )
    .unwrap();
    // The controller chart's labels, with the ServiceAccount labels the scale-set chart
    // reads to bind its manager Role.
    let labels = json!({
        "app.kubernetes.io/name": "gha-rs-controller",
        "app.kubernetes.io/part-of": "gha-rs-controller",
        "app.kubernetes.io/version": version,
        "app.kubernetes.io/managed-by": "Helm",
        "actions.github.com/controller-service-account-namespace": CONTROLLER_NAMESPACE,
        "actions.github.com/controller-service-account-name": CONTROLLER_ACCOUNT,
    });
    emu.put_object_as("helm", json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "arc-gha-rs-controller", "namespace": CONTROLLER_NAMESPACE, "labels": labels},
        "spec": {"selector": {"matchLabels": {"app.kubernetes.io/name": "gha-rs-controller"}},
            "template": {"metadata": {"labels": {"app.kubernetes.io/name": "gha-rs-controller"}},
                "spec": {"serviceAccountName": CONTROLLER_ACCOUNT,
                    "containers": [{"name": "manager", "image": format!("ghcr.io/actions/gha-runner-scale-set-controller:{version}")}]}}}}))
        .unwrap();
    emu.put_object_as("kubectl", manager_cluster_role())
        .unwrap();
}

/// The `drover-arc-manager` ClusterRole, read from `deploy/kubernetes/rbac.yaml`.
pub fn manager_cluster_role() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/kubernetes/rbac.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    docs.into_iter()
        .find(|d| d["kind"] == "ClusterRole" && d["metadata"]["name"] == "drover-arc-manager")
        .expect("deploy/kubernetes/rbac.yaml has the drover-arc-manager ClusterRole")
}
