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
