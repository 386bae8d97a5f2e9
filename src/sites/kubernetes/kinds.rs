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
/// ExternalSecret (External Secrets Operator), `external-secrets.io/v1`: the storage
/// version since ESO v0.16 and the only one served since v0.17.
pub const EXTERNAL_SECRET: KindInfo = kind(
    "external-secrets.io",
    "v1",
    "ExternalSecret",
    "externalsecrets",
    true,
    Some(EXTERNAL_SECRET_CRD),
    2,
);
/// ExternalSecret at `external-secrets.io/v1beta1`: used only when a cluster serves
/// v1beta1 and nothing else (ESO before v0.16); see [`choose_version`].
pub const EXTERNAL_SECRET_V1BETA1: KindInfo = kind(
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

/// Deployment (listed: the actions-runner-controller Deployment, for its version).
pub const DEPLOYMENT: KindInfo = kind("apps", "v1", "Deployment", "deployments", true, None, 2);
/// Verbs on Deployments: `list` (the ARC controller, by its labels, cluster-wide).
pub const DEPLOYMENT_VERBS: &[&str] = &["list"];
/// The label selector of actions-runner-controller's controller Deployment (chart
/// gha-runner-scale-set-controller).
pub const ARC_CONTROLLER_SELECTOR: &str = "app.kubernetes.io/part-of=gha-rs-controller";
/// The label ARC reads an AutoscalingRunnerSet's version from (and the chart sets on the
/// controller's Deployment).
pub const VERSION_LABEL: &str = "app.kubernetes.io/version";

/// The controller Deployment's labels naming its ServiceAccount (set by the controller
/// chart; the gha-runner-scale-set chart reads them the same way).
pub const ARC_CONTROLLER_SA_NAME_LABEL: &str = "actions.github.com/controller-service-account-name";
/// See [`ARC_CONTROLLER_SA_NAME_LABEL`].
pub const ARC_CONTROLLER_SA_NAMESPACE_LABEL: &str =
    "actions.github.com/controller-service-account-namespace";
/// The finalizer ARC removes from the manager Role and RoleBinding when it has cleaned up
/// after a deleted AutoscalingRunnerSet (so they outlive the runners they serve).
pub const ARC_CLEANUP_FINALIZER: &str = "actions.github.com/cleanup-protection";
/// The AutoscalingRunnerSet annotation that names the manager RoleBinding for that
/// cleanup.
pub const ARC_CLEANUP_ROLE_BINDING_ANNOTATION: &str =
    "actions.github.com/cleanup-manager-role-binding";

/// The ClusterRole (shipped in `deploy/kubernetes/rbac.yaml`) that each ARC set's manager
/// RoleBinding grants the controller in the runner namespace. drover may `bind` this one
/// ClusterRole and holds none of its permissions itself.
pub const ARC_MANAGER_CLUSTER_ROLE: &str = "drover-arc-manager";

/// What the ARC controller needs in a runner namespace (the gha-runner-scale-set chart's
/// manager Role, 0.14.2): (API group, resources, verbs). `deploy/kubernetes/rbac.yaml`
/// ships them as [`ARC_MANAGER_CLUSTER_ROLE`] (a test checks it).
pub const ARC_MANAGER_RULES: &[(&str, &[&str], &[&str])] = &[
    ("", &["pods"], &["create", "delete", "get"]),
    ("", &["pods/status"], &["get"]),
    (
        "",
        &["secrets", "serviceaccounts"],
        &["create", "delete", "get", "list", "patch", "update"],
    ),
    (
        "rbac.authorization.k8s.io",
        &["rolebindings", "roles"],
        &["create", "delete", "get", "patch", "update"],
    ),
];

/// ClusterRole (only [`ARC_MANAGER_CLUSTER_ROLE`]: checked to exist, and bound).
pub const CLUSTER_ROLE: KindInfo = kind(
    "rbac.authorization.k8s.io",
    "v1",
    "ClusterRole",
    "clusterroles",
    false,
    None,
    0,
);
/// Verbs on [`ARC_MANAGER_CLUSTER_ROLE`] (and no other ClusterRole).
pub const CLUSTER_ROLE_VERBS: &[&str] = &["bind", "get"];

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
/// `PolicyRule`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RequiredRule {
    /// API group (`""` for core).
    pub api_group: String,
    /// Plural resource names, sorted.
    pub resources: Vec<String>,
    /// Verbs, sorted.
    pub verbs: Vec<String>,
    /// The only objects it applies to (`resourceNames`); empty for all.
    pub resource_names: Vec<String>,
}

/// Every permission the Kubernetes driver uses, derived from the kind tables and the
/// verbs above: one rule per API group and verb set, sorted. `deploy/kubernetes/rbac.yaml`
/// must grant exactly these (a test checks it). The runner Role drover renders grants
/// nothing, so creating and binding it needs no `escalate`; the ARC manager RoleBindings
/// bind [`ARC_MANAGER_CLUSTER_ROLE`], the one ClusterRole drover may `bind`.
pub fn required_rules() -> Vec<RequiredRule> {
    use std::collections::BTreeMap;
    let mut rules: BTreeMap<(&str, &[&str]), Vec<String>> = BTreeMap::new();
    let uses = OWNED
        .iter()
        .map(|k| (k, OWNED_VERBS))
        .chain(std::iter::once((&NODE, NODE_VERBS)))
        .chain(std::iter::once((&POD, POD_VERBS)))
        .chain(std::iter::once((&SECRET, SECRET_VERBS)))
        .chain(std::iter::once((&DEPLOYMENT, DEPLOYMENT_VERBS)))
        .chain(CHECKED.iter().map(|k| (k, CHECKED_VERBS)));
    for (kind, verbs) in uses {
        rules
            .entry((kind.group, verbs))
            .or_default()
            .push(kind.plural.to_string());
    }
    let mut out: Vec<RequiredRule> = rules
        .into_iter()
        .map(|((group, verbs), mut resources)| {
            resources.sort();
            resources.dedup();
            RequiredRule {
                api_group: group.to_string(),
                resources,
                verbs: verbs.iter().map(|v| v.to_string()).collect(),
                resource_names: Vec::new(),
            }
        })
        .collect();
    out.push(RequiredRule {
        api_group: CLUSTER_ROLE.group.to_string(),
        resources: vec![CLUSTER_ROLE.plural.to_string()],
        verbs: CLUSTER_ROLE_VERBS.iter().map(|v| v.to_string()).collect(),
        resource_names: vec![ARC_MANAGER_CLUSTER_ROLE.to_string()],
    });
    out.sort();
    out
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

/// The version of a custom kind drover uses, given the versions its API group serves
/// (from discovery, `/apis/<group>`), or why none fits.
///
/// ExternalSecret: `v1` when served; `v1beta1` only when it is the only version served;
/// anything else is refused with the supported External Secrets Operator releases.
/// Other kinds: their one version, when served.
pub fn choose_version(kind: &KindInfo, served: &[String]) -> Result<KindInfo, Unsupported> {
    let serves = |v: &str| served.iter().any(|s| s == v);
    let listed = if served.is_empty() {
        "no version".to_string()
    } else {
        served.join(", ")
    };
    if kind.group == EXTERNAL_SECRET.group && kind.kind == EXTERNAL_SECRET.kind {
        if serves(EXTERNAL_SECRET.version) {
            return Ok(EXTERNAL_SECRET);
        }
        if served.len() == 1 && serves(EXTERNAL_SECRET_V1BETA1.version) {
            return Ok(EXTERNAL_SECRET_V1BETA1);
        }
        return Err(Unsupported {
            group: EXTERNAL_SECRET.group,
            served: listed,
            kind: EXTERNAL_SECRET.kind,
            wanted: "v1 (External Secrets Operator v0.16 and later) or, when it is the only version served, v1beta1 (v0.10 to v0.15)".into(),
        });
    }
    if serves(kind.version) {
        return Ok(*kind);
    }
    let needs = if kind.group == AUTOSCALING_RUNNER_SET.group {
        " (actions-runner-controller gha-runner-scale-set-controller 0.9 and later)"
    } else {
        ""
    };
    Err(Unsupported {
        group: kind.group,
        served: listed,
        kind: kind.kind,
        wanted: format!("{}{needs}", kind.api_version()),
    })
}

/// An API group serves no version of a kind that drover can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{group} serves {served}; drover renders {kind} at {wanted}")]
pub struct Unsupported {
    /// The API group.
    pub group: &'static str,
    /// The versions it serves, listed (or "no version").
    pub served: String,
    /// The kind.
    pub kind: &'static str,
    /// The version(s) drover renders, with the releases that serve them.
    pub wanted: String,
}

/// The kind info of an object's `apiVersion` + `kind`, among owned kinds (and the
/// versions [`choose_version`] may pick) and Node.
pub fn lookup(api_version: &str, kind: &str) -> Option<KindInfo> {
    OWNED
        .iter()
        .chain(std::iter::once(&EXTERNAL_SECRET_V1BETA1))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn served(versions: &[&str]) -> Vec<String> {
        versions.iter().map(|v| v.to_string()).collect()
    }

    #[test]
    fn external_secrets_use_v1_and_v1beta1_only_when_it_is_all_there_is() {
        let pick = |v: &[&str]| choose_version(&EXTERNAL_SECRET, &served(v));
        assert_eq!(pick(&["v1", "v1beta1"]), Ok(EXTERNAL_SECRET));
        assert_eq!(pick(&["v1"]), Ok(EXTERNAL_SECRET));
        assert_eq!(pick(&["v1beta1"]), Ok(EXTERNAL_SECRET_V1BETA1));
        for versions in [&["v1beta1", "v1alpha1"][..], &["v1alpha1"], &[]] {
            let err = pick(versions).unwrap_err().to_string();
            assert!(
                err.contains("External Secrets Operator v0.16 and later"),
                "{err}"
            );
        }
        let err = choose_version(&AUTOSCALING_RUNNER_SET, &served(&["v1beta1"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("actions.github.com/v1alpha1"), "{err}");
        assert_eq!(
            lookup("external-secrets.io/v1beta1", "ExternalSecret"),
            Some(EXTERNAL_SECRET_V1BETA1)
        );
    }
}
