//! The Kubernetes kinds drover writes: where they are served, whether they are namespaced,
//! which CRD serves them, and in which order they are applied.

use kube::core::{ApiResource, GroupVersionKind};

/// One kind drover renders (and so lists, diffs, applies and prunes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindInfo {
    /// API group (empty for core).
    pub group: &'static str,
    /// API version within the group.
    pub version: &'static str,
    /// Kind.
    pub kind: &'static str,
    /// Plural resource name.
    pub plural: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// The CRD that serves this kind, for custom resources (checked, never installed).
    pub crd: Option<&'static str>,
    /// Apply tier: lower tiers are applied first and deleted last.
    pub tier: u8,
}

impl KindInfo {
    /// `group/version` or `version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The kube `ApiResource` for dynamic requests.
    pub fn api_resource(&self) -> ApiResource {
        let gvk = GroupVersionKind::gvk(self.group, self.version, self.kind);
        ApiResource::from_gvk_with_plural(&gvk, self.plural)
    }
}

const fn kind(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    crd: Option<&'static str>,
    tier: u8,
) -> KindInfo {
    KindInfo {
        group,
        version,
        kind,
        plural,
        namespaced,
        crd,
        tier,
    }
}

/// CRD serving `ExternalSecret`.
pub const EXTERNAL_SECRET_CRD: &str = "externalsecrets.external-secrets.io";
/// CRD serving `AutoscalingRunnerSet`.
pub const ARC_CRD: &str = "autoscalingrunnersets.actions.github.com";

/// Namespace.
pub const NAMESPACE: KindInfo = kind("", "v1", "Namespace", "namespaces", false, None, 0);
/// ServiceAccount.
pub const SERVICE_ACCOUNT: KindInfo =
    kind("", "v1", "ServiceAccount", "serviceaccounts", true, None, 1);
/// Role.
pub const ROLE: KindInfo = kind(
    "rbac.authorization.k8s.io",
    "v1",
    "Role",
    "roles",
    true,
    None,
    1,
);
/// RoleBinding.
pub const ROLE_BINDING: KindInfo = kind(
    "rbac.authorization.k8s.io",
    "v1",
    "RoleBinding",
    "rolebindings",
    true,
    None,
    1,
);
/// PriorityClass (scopes each runner set's ResourceQuota).
pub const PRIORITY_CLASS: KindInfo = kind(
    "scheduling.k8s.io",
    "v1",
    "PriorityClass",
    "priorityclasses",
    false,
    None,
    1,
);
/// NetworkPolicy.
pub const NETWORK_POLICY: KindInfo = kind(
    "networking.k8s.io",
    "v1",
    "NetworkPolicy",
    "networkpolicies",
    true,
    None,
    2,
);
/// ResourceQuota.
pub const RESOURCE_QUOTA: KindInfo =
    kind("", "v1", "ResourceQuota", "resourcequotas", true, None, 2);
/// PodTemplate (drover's runner pod template per runner set).
pub const POD_TEMPLATE: KindInfo = kind("", "v1", "PodTemplate", "podtemplates", true, None, 2);
/// ExternalSecret (External Secrets Operator).
pub const EXTERNAL_SECRET: KindInfo = kind(
    "external-secrets.io",
    "v1beta1",
    "ExternalSecret",
    "externalsecrets",
    true,
    Some(EXTERNAL_SECRET_CRD),
    2,
);
/// AutoscalingRunnerSet (actions-runner-controller).
pub const AUTOSCALING_RUNNER_SET: KindInfo = kind(
    "actions.github.com",
    "v1alpha1",
    "AutoscalingRunnerSet",
    "autoscalingrunnersets",
    true,
    Some(ARC_CRD),
    3,
);
/// Node (never owned: only declared labels and taints are applied).
pub const NODE: KindInfo = kind("", "v1", "Node", "nodes", false, None, 2);

/// Pod (runner Pods drover creates from a set's PodTemplate; not in [`OWNED`]: they are
/// planned by the runner plan, never by the object diff).
pub const POD: KindInfo = kind("", "v1", "Pod", "pods", true, None, 4);
/// Secret (the per-runner JIT config Secret, owned by its Pod and garbage-collected with
/// it; drover never reads Secrets).
pub const SECRET: KindInfo = kind("", "v1", "Secret", "secrets", true, None, 4);

/// DaemonSet (read: device plugins a site requires).
pub const DAEMON_SET: KindInfo = kind("apps", "v1", "DaemonSet", "daemonsets", true, None, 2);
/// RuntimeClass (read: runtime classes a site requires).
pub const RUNTIME_CLASS: KindInfo = kind(
    "node.k8s.io",
    "v1",
    "RuntimeClass",
    "runtimeclasses",
    false,
    None,
    2,
);
/// CustomResourceDefinition (read: CRDs a site requires or that serve owned kinds).
pub const CRD: KindInfo = kind(
    "apiextensions.k8s.io",
    "v1",
    "CustomResourceDefinition",
    "customresourcedefinitions",
    false,
    None,
    0,
);

/// Verbs drover uses on every owned kind: `list` (observe lists owned objects by label in
/// all namespaces), `patch` (server-side apply), `create` (an apply that creates an object
/// is authorized as `create`), `get` (a prune re-reads the live object) and `delete`
/// (prune).
pub const OWNED_VERBS: &[&str] = &["create", "delete", "get", "list", "patch"];
/// Verbs on Nodes: `list` (observe, when the site has pools) and `patch` (server-side
/// apply of declared labels and taints to existing nodes; never create or delete).
pub const NODE_VERBS: &[&str] = &["list", "patch"];
/// Verbs on runner Pods: `list` (observe drover's runner Pods by label), `watch` (`drover
/// serve` follows them between lists), `create` (scale up), `delete` (scale down,
/// cleanup). Pods are never read one by one nor patched.
pub const POD_VERBS: &[&str] = &["create", "delete", "list", "watch"];
/// Verbs on Secrets: `create` (the per-runner JIT config Secret) and `delete` (taking a
/// Secret back; also what the OwnerReferencesPermissionEnforcement admission plugin asks
/// of a client that sets `ownerReferences`). Never `get` or `list`: drover reads no Secret.
pub const SECRET_VERBS: &[&str] = &["create", "delete"];
/// Kinds only read by name for site checks (`get`).
pub const CHECKED: [KindInfo; 3] = [DAEMON_SET, RUNTIME_CLASS, CRD];
/// Verbs on [`CHECKED`] kinds.
pub const CHECKED_VERBS: &[&str] = &["get"];

/// One RBAC rule drover needs on a site (cluster-wide: owned objects live in every
/// namespace the fleet declares). The shape of a `rbac.authorization.k8s.io/v1`
/// `PolicyRule` without resource names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RequiredRule {
    /// API group (`""` for core).
    pub api_group: String,
    /// Plural resource names, sorted.
    pub resources: Vec<String>,
    /// Verbs, sorted.
    pub verbs: Vec<String>,
}

/// Every permission the Kubernetes driver uses, derived from the kind tables and the
/// verbs above: one rule per API group and verb set, sorted. `deploy/kubernetes/rbac.yaml`
/// must grant exactly these (a test checks it). The runner Role drover renders grants
/// nothing, so creating it and binding it needs no `escalate` or `bind`.
pub fn required_rules() -> Vec<RequiredRule> {
    use std::collections::BTreeMap;
    let mut rules: BTreeMap<(&str, &[&str]), Vec<String>> = BTreeMap::new();
    let uses = OWNED
        .iter()
        .map(|k| (k, OWNED_VERBS))
        .chain(std::iter::once((&NODE, NODE_VERBS)))
        .chain(std::iter::once((&POD, POD_VERBS)))
        .chain(std::iter::once((&SECRET, SECRET_VERBS)))
        .chain(CHECKED.iter().map(|k| (k, CHECKED_VERBS)));
    for (kind, verbs) in uses {
        rules
            .entry((kind.group, verbs))
            .or_default()
            .push(kind.plural.to_string());
    }
    rules
        .into_iter()
        .map(|((group, verbs), mut resources)| {
            resources.sort();
            resources.dedup();
            RequiredRule {
                api_group: group.to_string(),
                resources,
                verbs: verbs.iter().map(|v| v.to_string()).collect(),
            }
        })
        .collect()
}

/// Every kind drover owns objects of, in apply order.
pub const OWNED: [KindInfo; 10] = [
    NAMESPACE,
    SERVICE_ACCOUNT,
    ROLE,
    ROLE_BINDING,
    PRIORITY_CLASS,
    NETWORK_POLICY,
    RESOURCE_QUOTA,
    POD_TEMPLATE,
    EXTERNAL_SECRET,
    AUTOSCALING_RUNNER_SET,
];

/// The kind info of an object's `apiVersion` + `kind`, among owned kinds and Node.
pub fn lookup(api_version: &str, kind: &str) -> Option<KindInfo> {
    OWNED
        .iter()
        .chain(std::iter::once(&NODE))
        .find(|k| {
            k.kind == kind
                && match api_version.split_once('/') {
                    Some((g, v)) => k.group == g && k.version == v,
                    None => k.group.is_empty() && k.version == api_version,
                }
        })
        .copied()
}
