//! The resource types the emulator serves: a fixed table of built-in kinds plus the kinds
//! that installed CustomResourceDefinitions declare.

use serde_json::Value;

/// One servable resource type (one group/version/plural).
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceType {
    /// API group; empty for the core group.
    pub group: String,
    /// API version within the group, e.g. `v1`.
    pub version: String,
    /// Kind, e.g. `Deployment`.
    pub kind: String,
    /// Plural resource name used in URLs, e.g. `deployments`.
    pub plural: String,
    /// Singular resource name.
    pub singular: String,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Short names advertised in discovery.
    pub short_names: Vec<String>,
    /// Whether `status` is a subresource (and so not writable through the main resource).
    pub has_status: bool,
    /// For custom resources: the version's `openAPIV3Schema`, if any.
    pub schema: Option<Value>,
}

/// Verbs advertised for every resource type.
pub const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

impl ResourceType {
    /// `group/version`, or just `version` for the core group.
    pub fn api_version(&self) -> String {
        api_version(&self.group, &self.version)
    }

    /// Whether this type comes from a CustomResourceDefinition.
    pub fn is_custom(&self) -> bool {
        builtin_types()
            .iter()
            .all(|b| b.group != self.group || b.kind != self.kind)
    }

    /// The type whose objects are CustomResourceDefinitions.
    pub fn is_crd(&self) -> bool {
        self.group == "apiextensions.k8s.io" && self.kind == "CustomResourceDefinition"
    }

    /// The type whose objects are Namespaces.
    pub fn is_namespace(&self) -> bool {
        self.group.is_empty() && self.kind == "Namespace"
    }
}

/// `group/version`, or `version` for the core group.
pub fn api_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

/// Splits an apiVersion into (group, version).
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

fn builtin(
    group: &str,
    kind: &str,
    plural: &str,
    namespaced: bool,
    short: &[&str],
    has_status: bool,
) -> ResourceType {
    ResourceType {
        group: group.to_string(),
        version: "v1".to_string(),
        kind: kind.to_string(),
        plural: plural.to_string(),
        singular: kind.to_lowercase(),
        namespaced,
        short_names: short.iter().map(|s| s.to_string()).collect(),
        has_status,
        schema: None,
    }
}

/// The built-in kinds drover uses (all at version v1).
pub fn builtin_types() -> Vec<ResourceType> {
    vec![
        builtin("", "Namespace", "namespaces", false, &["ns"], true),
        builtin(
            "",
            "ServiceAccount",
            "serviceaccounts",
            true,
            &["sa"],
            false,
        ),
        builtin("", "Secret", "secrets", true, &[], false),
        builtin("", "ConfigMap", "configmaps", true, &["cm"], false),
        builtin("", "Pod", "pods", true, &["po"], true),
        builtin("", "PodTemplate", "podtemplates", true, &[], false),
        builtin("", "Node", "nodes", false, &["no"], true),
        builtin(
            "",
            "ResourceQuota",
            "resourcequotas",
            true,
            &["quota"],
            true,
        ),
        builtin("", "Service", "services", true, &["svc"], true),
        builtin("apps", "DaemonSet", "daemonsets", true, &["ds"], true),
        builtin("apps", "Deployment", "deployments", true, &["deploy"], true),
        builtin(
            "rbac.authorization.k8s.io",
            "Role",
            "roles",
            true,
            &[],
            false,
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "RoleBinding",
            "rolebindings",
            true,
            &[],
            false,
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "ClusterRole",
            "clusterroles",
            false,
            &[],
            false,
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "ClusterRoleBinding",
            "clusterrolebindings",
            false,
            &[],
            false,
        ),
        builtin(
            "networking.k8s.io",
            "NetworkPolicy",
            "networkpolicies",
            true,
            &["netpol"],
            false,
        ),
        builtin(
            "node.k8s.io",
            "RuntimeClass",
            "runtimeclasses",
            false,
            &[],
            false,
        ),
        builtin(
            "apiextensions.k8s.io",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            false,
            &["crd", "crds"],
            true,
        ),
        builtin("coordination.k8s.io", "Lease", "leases", true, &[], false),
        builtin(
            "scheduling.k8s.io",
            "PriorityClass",
            "priorityclasses",
            false,
            &["pc"],
            false,
        ),
        builtin(
            "policy",
            "PodDisruptionBudget",
            "poddisruptionbudgets",
            true,
            &["pdb"],
            true,
        ),
    ]
}

/// The resource types a stored CustomResourceDefinition serves (one per served version).
pub fn crd_types(crd: &Value) -> Vec<ResourceType> {
    let spec = &crd["spec"];
    let names = &spec["names"];
    let (Some(group), Some(kind), Some(plural)) = (
        spec["group"].as_str(),
        names["kind"].as_str(),
        names["plural"].as_str(),
    ) else {
        return Vec::new();
    };
    let singular = names["singular"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| kind.to_lowercase());
    let short_names: Vec<String> = names["shortNames"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    versions
        .iter()
        .filter(|v| v["served"].as_bool().unwrap_or(false))
        .filter_map(|v| {
            Some(ResourceType {
                group: group.to_string(),
                version: v["name"].as_str()?.to_string(),
                kind: kind.to_string(),
                plural: plural.to_string(),
                singular: singular.clone(),
                namespaced: spec["scope"].as_str() != Some("Cluster"),
                short_names: short_names.clone(),
                has_status: v["subresources"].get("status").is_some(),
                schema: v["schema"].get("openAPIV3Schema").cloned(),
            })
        })
        .collect()
}
