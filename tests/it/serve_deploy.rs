//! deploy/: every Kubernetes manifest parses strictly into its k8s-openapi type (a field
//! the type does not know is an error), the Deployment keeps its promises, the ConfigMap's
//! config parses with the service's own parser, and the RBAC grants exactly what the code
//! uses (derived from the kind tables), no more and no less.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use drover::fleet::{LoadOptions, validate_dir};
use drover::serve::config::ConfigFile;
use drover::serve::lease::LEASE_VERBS;
use drover::sites::kubernetes::kinds;
use drover::sites::{RunOptions, SiteContext, kind_of};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes")
}

/// Every document of every file under deploy/kubernetes/, with its file name.
fn documents() -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let values: Vec<Value> =
            serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{name}: not YAML: {e}"));
        for v in values.into_iter().filter(|v| !v.is_null()) {
            docs.push((name.clone(), v));
        }
    }
    assert!(!docs.is_empty());
    docs
}

/// Deserializes `doc` as `T` and serializes it back: any field the type does not know is
/// dropped on the way, so a difference means an unknown (misspelt, misplaced) field.
fn strict<T: DeserializeOwned + Serialize>(file: &str, doc: &Value) -> T {
    let typed: T = serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("{file}: {} does not parse: {e}", doc["kind"]));
    let back = serde_json::to_value(&typed).unwrap();
    if let Some(path) = first_difference(doc, &back, String::new()) {
        panic!(
            "{file}: {} has a field its type does not know, or a value that changes: {path}",
            doc["kind"]
        );
    }
    typed
}

fn first_difference(a: &Value, b: &Value, path: String) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, v) in x {
                let p = format!("{path}.{k}");
                match y.get(k) {
                    Some(w) => {
                        if let Some(d) = first_difference(v, w, p) {
                            return Some(d);
                        }
                    }
                    None => return Some(p),
                }
            }
            y.keys()
                .find(|k| !x.contains_key(*k))
                .map(|k| format!("{path}.{k} (added)"))
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (v, w))| first_difference(v, w, format!("{path}[{i}]"))),
        _ if a == b => None,
        _ => Some(format!("{path} ({a} became {b})")),
    }
}

/// Every manifest, parsed strictly by kind; unknown kinds fail.
#[derive(Default)]
struct Manifests {
    deployments: Vec<Deployment>,
    config_maps: Vec<ConfigMap>,
    service_accounts: Vec<ServiceAccount>,
    cluster_roles: Vec<ClusterRole>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
    roles: Vec<Role>,
    role_bindings: Vec<RoleBinding>,
    services: Vec<Service>,
    kinds: BTreeSet<String>,
}

fn manifests() -> Manifests {
    let mut m = Manifests::default();
    for (file, doc) in documents() {
        let kind = doc["kind"].as_str().unwrap_or_default().to_string();
        let api = doc["apiVersion"].as_str().unwrap_or_default().to_string();
        match (api.as_str(), kind.as_str()) {
            ("apps/v1", "Deployment") => m.deployments.push(strict(&file, &doc)),
            ("v1", "Service") => m.services.push(strict(&file, &doc)),
            ("v1", "ConfigMap") => m.config_maps.push(strict(&file, &doc)),
            ("v1", "ServiceAccount") => m.service_accounts.push(strict(&file, &doc)),
            ("v1", "Namespace") => drop(strict::<Namespace>(&file, &doc)),
            ("networking.k8s.io/v1", "NetworkPolicy") => drop(strict::<NetworkPolicy>(&file, &doc)),
            ("policy/v1", "PodDisruptionBudget") => {
                drop(strict::<PodDisruptionBudget>(&file, &doc))
            }
            ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
                m.cluster_roles.push(strict(&file, &doc))
            }
            ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                m.cluster_role_bindings.push(strict(&file, &doc))
            }
            ("rbac.authorization.k8s.io/v1", "Role") => m.roles.push(strict(&file, &doc)),
            ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
                m.role_bindings.push(strict(&file, &doc))
            }
            other => panic!("{file}: no strict check for {other:?}; add its k8s-openapi type"),
        }
        m.kinds.insert(kind);
    }
    m
}

#[test]
fn every_manifest_parses_strictly_and_every_kind_is_there() {
    let m = manifests();
    let expected = [
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "Deployment",
        "Namespace",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ];
    assert_eq!(m.kinds, expected.iter().map(|s| s.to_string()).collect());
}

#[test]
fn the_strict_check_catches_an_unknown_field() {
    let doc = serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "x"}, "automountServiceAcountToken": true});
    let caught = std::panic::catch_unwind(|| strict::<ServiceAccount>("t.yaml", &doc));
    assert!(caught.is_err());
}

#[test]
fn the_deployment_keeps_its_promises() {
    let m = manifests();
    let [deployment] = m.deployments.as_slice() else {
        panic!("one Deployment expected");
    };
    let spec = &deployment.spec;
    assert_eq!(spec.replicas, Some(2), "two replicas, one leader");
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("drover"));
    let pod_security = pod.security_context.as_ref().unwrap();
    assert_eq!(pod_security.run_as_non_root, Some(true));
    let [container] = pod.containers.as_slice() else {
        panic!("one container expected");
    };
    let probe_path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        p.as_ref()
            .and_then(|p| p.http_get.as_ref())
            .and_then(|g| g.path.clone())
    };
    assert_eq!(
        probe_path(&container.liveness_probe).as_deref(),
        Some("/healthz")
    );
    assert_eq!(
        probe_path(&container.readiness_probe).as_deref(),
        Some("/readyz")
    );
    let resources = container.resources.as_ref().unwrap();
    for (what, set) in [
        ("requests", &resources.requests),
        ("limits", &resources.limits),
    ] {
        let set = set
            .as_ref()
            .unwrap_or_else(|| panic!("resources.{what} missing"));
        assert!(
            set.contains_key("cpu") && set.contains_key("memory"),
            "{what}"
        );
    }
    let security = container.security_context.as_ref().unwrap();
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(
        security.capabilities.as_ref().unwrap().drop.as_deref(),
        Some(&["ALL".to_string()][..])
    );
    assert_eq!(
        container.args.as_deref().unwrap_or_default(),
        ["serve", "--config", "/etc/drover/config.yaml"]
    );
    let mounts = container.volume_mounts.as_ref().unwrap();
    assert!(
        mounts
            .iter()
            .any(|v| v.mount_path == "/etc/drover/config.yaml"),
        "the config file is mounted where --config points"
    );
    let ports = container.ports.as_ref().unwrap();
    assert_eq!(ports[0].container_port, 8080);
}

#[test]
fn the_configmap_config_parses_with_the_service_parser_and_matches_the_manifests() {
    let m = manifests();
    let [config_map] = m.config_maps.as_slice() else {
        panic!("one ConfigMap expected");
    };
    let text = &config_map.data.as_ref().unwrap()["config.yaml"];
    let config = ConfigFile::parse(text).unwrap();
    assert_eq!(config.listen.unwrap().port(), 8080, "the container port");
    let git = config.source.as_ref().unwrap().git.as_ref().unwrap();
    assert_eq!(
        git.cache_dir.as_deref(),
        Some(Path::new("/var/cache/drover"))
    );
    let lease = config.lease.as_ref().unwrap();
    let lease_role = m
        .roles
        .iter()
        .find(|r| r.metadata.namespace.as_deref() == Some(&lease.namespace))
        .expect("a Role for the Lease in the lease namespace");
    assert!(lease_role.rules.is_some());
}

/// `(group, resource, verb)` for every grant of some rules.
/// (group, resource, verb) per grant; a grant limited to named objects shows as
/// `resource:name`.
fn grants(rules: &[PolicyRule]) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for rule in rules {
        assert!(
            rule.non_resource_urls.is_none(),
            "drover's rules name no URLs: {rule:?}"
        );
        let names = rule.resource_names.clone().unwrap_or_default();
        for group in rule.api_groups.as_deref().unwrap_or_default() {
            for resource in rule.resources.as_deref().unwrap_or_default() {
                let targets: Vec<String> = if names.is_empty() {
                    vec![resource.clone()]
                } else {
                    names.iter().map(|n| format!("{resource}:{n}")).collect()
                };
                for target in targets {
                    for verb in &rule.verbs {
                        out.insert((group.clone(), target.clone(), verb.clone()));
                    }
                }
            }
        }
    }
    out
}

fn required_grants() -> BTreeSet<(String, String, String)> {
    let rules: Vec<PolicyRule> = kinds::required_rules()
        .into_iter()
        .map(|r| PolicyRule {
            api_groups: Some(vec![r.api_group]),
            resources: Some(r.resources),
            verbs: r.verbs,
            resource_names: (!r.resource_names.is_empty()).then_some(r.resource_names),
            ..PolicyRule::default()
        })
        .collect();
    grants(&rules)
}

fn cluster_roles_named<'a>(m: &'a Manifests, name: &str) -> Vec<&'a ClusterRole> {
    m.cluster_roles
        .iter()
        .filter(|r| r.metadata.name.as_deref() == Some(name))
        .collect()
}

#[test]
fn the_arc_manager_cluster_role_grants_what_the_chart_manager_role_does() {
    let m = manifests();
    assert_eq!(m.cluster_roles.len(), 2, "drover and drover-arc-manager");
    let [role] = &cluster_roles_named(&m, kinds::ARC_MANAGER_CLUSTER_ROLE)[..] else {
        panic!(
            "one ClusterRole {} expected",
            kinds::ARC_MANAGER_CLUSTER_ROLE
        );
    };
    let granted = grants(role.rules.as_deref().unwrap_or_default());
    let wanted: Vec<PolicyRule> = kinds::ARC_MANAGER_RULES
        .iter()
        .map(|(group, resources, verbs)| PolicyRule {
            api_groups: Some(vec![group.to_string()]),
            resources: Some(resources.iter().map(|r| r.to_string()).collect()),
            verbs: verbs.iter().map(|v| v.to_string()).collect(),
            ..PolicyRule::default()
        })
        .collect();
    assert_eq!(granted, grants(&wanted));
    // What the chart's manager Role grants that a runner pod cannot do without.
    for (resource, verb) in [
        ("pods", "create"),
        ("secrets", "get"),
        ("pods/status", "get"),
    ] {
        assert!(granted.contains(&(String::new(), resource.into(), verb.into())));
    }
}

#[test]
fn the_cluster_role_grants_exactly_what_the_driver_uses() {
    let m = manifests();
    let [role] = &cluster_roles_named(&m, "drover")[..] else {
        panic!("one ClusterRole drover expected");
    };
    let granted = grants(role.rules.as_deref().unwrap_or_default());
    let required = required_grants();
    let missing: Vec<_> = required.difference(&granted).collect();
    let extra: Vec<_> = granted.difference(&required).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "rbac.yaml differs from kinds::required_rules(): missing {missing:?}, extra {extra:?}"
    );
    for kind in kinds::OWNED {
        assert!(
            granted.contains(&(kind.group.into(), kind.plural.into(), "patch".into())),
            "{}",
            kind.kind
        );
    }
    let [binding] = m.cluster_role_bindings.as_slice() else {
        panic!("one ClusterRoleBinding expected");
    };
    assert_eq!(binding.role_ref.kind, "ClusterRole");
    assert_eq!(binding.role_ref.name, role.metadata.name.clone().unwrap());
    let subjects = binding.subjects.as_deref().unwrap();
    assert_eq!(subjects.len(), 1);
    assert_eq!(subjects[0].kind, "ServiceAccount");
    assert_eq!(subjects[0].name, "drover");
    assert_eq!(subjects[0].namespace.as_deref(), Some("drover-system"));
    let sa = &m.service_accounts[0].metadata;
    assert_eq!(
        (sa.name.as_deref(), sa.namespace.as_deref()),
        (Some("drover"), Some("drover-system"))
    );
}

#[test]
fn the_lease_role_grants_exactly_what_the_elector_uses() {
    let m = manifests();
    let [role] = m.roles.as_slice() else {
        panic!("one Role expected");
    };
    assert_eq!(role.metadata.namespace.as_deref(), Some("drover-system"));
    let granted = grants(role.rules.as_deref().unwrap_or_default());
    let required: BTreeSet<_> = LEASE_VERBS
        .iter()
        .map(|v| ("coordination.k8s.io".into(), "leases".into(), v.to_string()))
        .collect();
    assert_eq!(granted, required);
    let [binding] = m.role_bindings.as_slice() else {
        panic!("one RoleBinding expected");
    };
    assert_eq!(binding.metadata.namespace, role.metadata.namespace);
    assert_eq!(
        (
            binding.role_ref.kind.as_str(),
            binding.role_ref.name.as_str()
        ),
        ("Role", role.metadata.name.as_deref().unwrap())
    );
    let subject = &binding.subjects.as_deref().unwrap()[0];
    assert_eq!(
        (subject.name.as_str(), subject.namespace.as_deref()),
        ("drover", Some("drover-system"))
    );
}

/// RBAC refuses to let drover create a Role granting more than drover holds (unless it has
/// `escalate`), or bind a role granting more (unless `bind` on that role). Every Role drover
/// renders for the example fleet must therefore grant a subset of the ClusterRole, and every
/// RoleBinding bind either such a Role or the one ClusterRole drover may bind.
#[test]
fn rendered_runner_roles_need_no_escalate_or_bind() {
    let repo = validate_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("fleet"),
        &LoadOptions::default(),
    )
    .unwrap()
    .repo;
    let held = required_grants();
    let options = RunOptions::default();
    let mut roles = 0;
    let mut arc_bindings = 0;
    for site in repo.sites.values() {
        if kind_of(&site.value) != drover::plan::SiteKind::Kubernetes {
            continue;
        }
        let ctx = SiteContext {
            repo: &repo,
            site,
            options: &options,
        };
        for object in drover::sites::kubernetes::render_values(&ctx).unwrap() {
            if object["kind"] == "RoleBinding" && object["roleRef"]["kind"] == "ClusterRole" {
                let name = object["roleRef"]["name"].as_str().unwrap();
                let bind = (
                    "rbac.authorization.k8s.io".into(),
                    format!("clusterroles:{name}"),
                    "bind".into(),
                );
                assert!(
                    held.contains(&bind),
                    "drover may not bind ClusterRole {name}"
                );
                arc_bindings += 1;
            }
            if object["kind"] != "Role" {
                continue;
            }
            roles += 1;
            let role: Role = serde_json::from_value(object).unwrap();
            let wanted = grants(role.rules.as_deref().unwrap_or_default());
            let beyond: Vec<_> = wanted.difference(&held).collect();
            assert!(beyond.is_empty(), "a runner Role grants {beyond:?}");
        }
    }
    assert!(roles > 0, "the example fleet renders runner Roles");
    assert!(
        arc_bindings > 0,
        "the example fleet renders ARC manager RoleBindings"
    );
}
