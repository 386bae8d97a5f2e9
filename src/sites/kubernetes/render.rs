//! Render (pure): the fleet → the Kubernetes objects drover owns on one site, plus what the
//! site must hold (CRDs, RuntimeClasses, device plugins, nodes) for the checks.
//!
//! Rendered per site: the runner Namespace, a ServiceAccount with a zero-permission
//! Role/RoleBinding, a NetworkPolicy (ingress denied, egress allowed), per runner set a
//! PriorityClass + ResourceQuota scoped to it, and either a PodTemplate (`engine: drover`)
//! or an AutoscalingRunnerSet (`engine: arc`), and an ExternalSecret per External-Secrets
//! SecretRef of the site. Runner Pods are not rendered: the runner plan creates them from the
//! PodTemplate (see [`super::runners`]).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use super::kinds::{self, ARC_CRD, EXTERNAL_SECRET_CRD};
use crate::fleet::model::{
    DockerMode, Engine, NodePool, RunnerSet, SecretRefSpec, Taint, Toleration, VersionRange,
};
use crate::fleet::quantity::Quantity;
use crate::plan::{Finding, FindingSeverity};
use crate::sites::{
    MANAGED_BY, MANAGED_BY_LABEL, OWNER_LABEL, RUNNER_SET_LABEL, SITE_LABEL, SiteContext,
};

/// Namespace used when neither the site nor the fleet defaults name one.
/// Name of the runners' ServiceAccount, Role and RoleBinding.
pub const RUNNER_ACCOUNT: &str = "drover-runner";
/// Name of the runners' NetworkPolicy.
pub const NETWORK_POLICY_NAME: &str = "drover-runners";
/// Label on runner pods naming their role.
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
/// The key of the Secret an ExternalSecret produces that holds the value.
pub const EXTERNAL_SECRET_KEY: &str = "value";
/// Docker-in-Docker sidecar image.
pub const DIND_IMAGE: &str = "docker:27.3-dind";
/// Rootless Docker-in-Docker sidecar image.
pub const DIND_ROOTLESS_IMAGE: &str = "docker:27.3-dind-rootless";
/// The Docker sidecar's cpu request, when the set declares cpu (its quota then tracks
/// `requests.cpu`, so every container must set it).
pub const DIND_CPU_REQUEST: &str = "500m";
/// The Docker sidecar's memory request and limit, when the set declares memory.
pub const DIND_MEMORY: &str = "1Gi";
/// How long the runner waits for dockerd's socket (`RUNNER_WAIT_FOR_DOCKER_IN_SECONDS`).
pub const DIND_WAIT_SECONDS: &str = "120";
/// The runner command when a set names none (both engines).
pub const RUNNER_COMMAND: &str = "/home/runner/run.sh";
/// Runner image used when neither the runner set nor the fleet defaults name one.
pub const DEFAULT_RUNNER_IMAGE: &str = "ghcr.io/actions/actions-runner:2.321.0";

/// The declared labels and taints of one pool, and what its nodes must offer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PoolRule {
    /// Pool name.
    pub pool: String,
    /// Selects the pool's nodes.
    pub node_selector: BTreeMap<String, String>,
    /// Labels drover keeps on the nodes.
    pub labels: BTreeMap<String, String>,
    /// Taints drover keeps on the nodes (as Kubernetes JSON).
    pub taints: Vec<Value>,
    /// Expected node count.
    pub node_count: Option<u32>,
    /// GPU extended resource and count per node.
    pub gpu: Option<(String, u32)>,
    /// Largest GPU request of one runner on this pool.
    pub max_gpu_request: u32,
}

/// What the site must hold, checked and reported, never installed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Requirements {
    /// CRD name → why it is needed.
    pub crds: BTreeMap<String, String>,
    /// RuntimeClass name → why it is needed.
    pub runtime_classes: BTreeMap<String, String>,
    /// ClusterRole name → why it is needed (the ARC manager ClusterRole, which drover binds).
    pub cluster_roles: BTreeMap<String, String>,
    /// Device-plugin DaemonSets as (namespace, name).
    pub device_plugins: Vec<(String, String)>,
    /// Supported server versions.
    pub version: Option<VersionRange>,
    /// Whether runner Pods use native sidecars (init containers with `restartPolicy:
    /// Always`; Kubernetes 1.29 and later).
    pub native_sidecars: bool,
}

/// Everything rendered for one site.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rendered {
    /// Namespace of the runners.
    pub namespace: String,
    /// The objects drover owns, in apply order.
    pub objects: Vec<Value>,
    /// Node label/taint rules per pool.
    pub pools: Vec<PoolRule>,
    /// Cluster prerequisites.
    pub requires: Requirements,
    /// Problems found while rendering (e.g. a secret the runners cannot reach).
    pub findings: Vec<Finding>,
}

/// Why a site cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// The site is not a Kubernetes site.
    #[error("site `{0}` is not a Kubernetes site")]
    NotKubernetes(String),
    /// A resource quantity does not parse.
    #[error("runner set `{set}`: {field} `{value}` is not a Kubernetes quantity")]
    Quantity {
        /// Runner set.
        set: String,
        /// Field.
        field: &'static str,
        /// The text.
        value: String,
    },
}

/// The owner labels every owned object carries (fleet and site), plus the runner set when
/// given.
pub fn owner_labels(fleet: &str, site: &str, runner_set: Option<&str>) -> Value {
    let mut labels = Map::new();
    labels.insert(MANAGED_BY_LABEL.into(), json!(MANAGED_BY));
    labels.insert(OWNER_LABEL.into(), json!(fleet));
    labels.insert(SITE_LABEL.into(), json!(site));
    if let Some(set) = runner_set {
        labels.insert(RUNNER_SET_LABEL.into(), json!(set));
    }
    Value::Object(labels)
}

fn meta(name: &str, namespace: Option<&str>, labels: Value) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), json!(name));
    if let Some(ns) = namespace {
        m.insert("namespace".into(), json!(ns));
    }
    m.insert("labels".into(), labels);
    Value::Object(m)
}

fn object(kind: &kinds::KindInfo, metadata: Value, body: Value) -> Value {
    let mut obj = Map::new();
    obj.insert("apiVersion".into(), json!(kind.api_version()));
    obj.insert("kind".into(), json!(kind.kind));
    obj.insert("metadata".into(), metadata);
    if let Value::Object(fields) = body {
        obj.extend(fields);
    }
    Value::Object(obj)
}

fn k8s_site<'a>(ctx: &'a SiteContext<'_>) -> Option<&'a crate::fleet::model::KubernetesSite> {
    ctx.site.value.spec.kubernetes.as_ref()
}

/// The runner namespace of the site ([`FleetRepo::runner_namespace`]).
pub fn namespace_of(ctx: &SiteContext<'_>) -> String {
    ctx.repo.runner_namespace(&ctx.site.value)
}

/// Renders everything drover wants on the site. Pure.
pub fn render(ctx: &SiteContext<'_>) -> Result<Rendered, RenderError> {
    let site = &ctx.site.value;
    let Some(k8s) = &site.spec.kubernetes else {
        return Err(RenderError::NotKubernetes(ctx.name().to_string()));
    };
    let fleet = ctx.fleet_name();
    let ns = namespace_of(ctx);
    let mut out = Rendered {
        namespace: ns.clone(),
        ..Rendered::default()
    };
    out.requires.version = k8s.version.clone();
    for crd in &k8s.requires.crds {
        out.requires
            .crds
            .insert(crd.clone(), "required by the site".into());
    }
    for rc in &k8s.requires.runtime_classes {
        out.requires
            .runtime_classes
            .insert(rc.clone(), "required by the site".into());
    }
    out.requires.device_plugins = k8s
        .requires
        .device_plugins
        .iter()
        .map(|d| (d.namespace.clone(), d.name.clone()))
        .collect();

    let labels = || owner_labels(fleet, ctx.name(), None);
    out.objects.push(object(
        &kinds::NAMESPACE,
        meta(&ns, None, labels()),
        json!({}),
    ));
    out.objects.push(object(
        &kinds::SERVICE_ACCOUNT,
        meta(RUNNER_ACCOUNT, Some(&ns), labels()),
        json!({"automountServiceAccountToken": false}),
    ));
    // Runners talk to GitHub, never to the Kubernetes API: the Role grants nothing. It is
    // rendered so that the grant is explicit and reviewable, not implied by defaults.
    out.objects.push(object(
        &kinds::ROLE,
        meta(RUNNER_ACCOUNT, Some(&ns), labels()),
        json!({"rules": []}),
    ));
    out.objects.push(object(
        &kinds::ROLE_BINDING,
        meta(RUNNER_ACCOUNT, Some(&ns), labels()),
        json!({
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": RUNNER_ACCOUNT},
            "subjects": [{"kind": "ServiceAccount", "name": RUNNER_ACCOUNT, "namespace": ns}],
        }),
    ));
    out.objects.push(object(
        &kinds::NETWORK_POLICY,
        meta(NETWORK_POLICY_NAME, Some(&ns), labels()),
        json!({"spec": {
            "podSelector": {"matchLabels": runner_pod_selector(fleet)},
            "policyTypes": ["Ingress", "Egress"],
            "egress": [{}],
        }}),
    ));

    // Pools of this site, in name order.
    let pools: Vec<&NodePool> = ctx
        .repo
        .pools
        .values()
        .map(|p| &p.value)
        .filter(|p| p.spec.site == ctx.name())
        .collect();
    let sets: Vec<&RunnerSet> = ctx
        .repo
        .runner_sets
        .values()
        .map(|r| &r.value)
        .filter(|r| pools.iter().any(|p| p.metadata.name == r.spec.pool))
        .collect();
    for pool in &pools {
        let kp = pool.spec.kubernetes.clone().unwrap_or_default();
        if let Some(rc) = &kp.runtime_class_name {
            out.requires
                .runtime_classes
                .entry(rc.clone())
                .or_insert_with(|| format!("runtimeClassName of pool {}", pool.metadata.name));
        }
        let max_gpu_request = sets
            .iter()
            .filter(|s| s.spec.pool == pool.metadata.name)
            .filter_map(|s| s.spec.resources.gpu.as_ref().map(|g| g.count))
            .max()
            .unwrap_or(0);
        out.pools.push(PoolRule {
            pool: pool.metadata.name.clone(),
            node_selector: kp.node_selector.clone(),
            labels: kp.labels.clone(),
            taints: kp.taints.iter().map(taint_json).collect(),
            node_count: pool.spec.node_count,
            gpu: pool
                .spec
                .gpu
                .as_ref()
                .map(|g| (g.vendor.resource_name().to_string(), g.per_node)),
            max_gpu_request,
        });
    }

    let mut external = Vec::new();
    for (name, secret) in &ctx.repo.secrets {
        if let Some(es) = &secret.value.spec.external_secret
            && es.site == ctx.name()
        {
            external.push(name.clone());
            let mut remote = Map::new();
            remote.insert("key".into(), json!(es.remote_key));
            if let Some(p) = &es.property {
                remote.insert("property".into(), json!(p));
            }
            out.objects.push(object(
                &kinds::EXTERNAL_SECRET,
                meta(name, Some(&ns), labels()),
                json!({"spec": {
                    "secretStoreRef": {"name": es.store, "kind": es.store_kind.as_str()},
                    "target": {"name": name, "creationPolicy": "Owner"},
                    "data": [{"secretKey": EXTERNAL_SECRET_KEY, "remoteRef": remote}],
                    "refreshInterval": "1h",
                }}),
            ));
        }
    }
    if !external.is_empty() {
        out.requires.crds.insert(
            EXTERNAL_SECRET_CRD.into(),
            format!("ExternalSecrets for {}", external.join(", ")),
        );
    }

    for set in sets {
        let pool = pools
            .iter()
            .find(|p| p.metadata.name == set.spec.pool)
            .expect("filtered by pool");
        render_runner_set(ctx, &ns, set, pool, &mut out)?;
    }
    Ok(out)
}

/// The labels every runner Pod carries besides its site and set (the NetworkPolicy selects
/// by them, so that it also covers Pods made before site labels).
pub fn runner_pod_selector(fleet: &str) -> Value {
    json!({MANAGED_BY_LABEL: MANAGED_BY, OWNER_LABEL: fleet, COMPONENT_LABEL: "runner"})
}

fn taint_json(t: &Taint) -> Value {
    let mut m = Map::new();
    m.insert("key".into(), json!(t.key));
    if let Some(v) = &t.value {
        m.insert("value".into(), json!(v));
    }
    m.insert("effect".into(), json!(t.effect));
    Value::Object(m)
}

fn toleration_json(t: &Toleration) -> Value {
    let mut m = Map::new();
    m.insert("key".into(), json!(t.key));
    m.insert("operator".into(), json!(t.operator));
    if let Some(v) = &t.value {
        m.insert("value".into(), json!(v));
    }
    if let Some(e) = &t.effect {
        m.insert("effect".into(), json!(e));
    }
    Value::Object(m)
}

fn quantity_of(set: &RunnerSet, field: &'static str, value: &str) -> Result<Quantity, RenderError> {
    Quantity::parse(value).ok_or_else(|| RenderError::Quantity {
        set: set.metadata.name.clone(),
        field,
        value: value.to_string(),
    })
}

/// The name of the PriorityClass that scopes a runner set's quota.
pub fn priority_class_name(fleet: &str, set: &str) -> String {
    format!("drover-{fleet}-{set}")
}

fn render_runner_set(
    ctx: &SiteContext<'_>,
    ns: &str,
    set: &RunnerSet,
    pool: &NodePool,
    out: &mut Rendered,
) -> Result<(), RenderError> {
    let fleet = ctx.fleet_name();
    let name = set.metadata.name.as_str();
    let spec = &set.spec;
    let labels = || owner_labels(fleet, ctx.name(), Some(name));

    // Resources of each container, and the quota: the sum over a runner Pod's containers
    // × max. A quota that tracks a resource makes Kubernetes refuse any Pod with a
    // container that does not set it, so every container drover renders sets exactly what
    // the quota tracks: the runner from the set, the Docker sidecar from its defaults.
    let mut requests = Map::new();
    let mut limits = Map::new();
    let mut sidecar_requests = Map::new();
    let mut sidecar_limits = Map::new();
    let has_sidecar = spec.docker != DockerMode::None;
    let mut hard = Map::new();
    let sum = |one: Quantity, sidecar: &str| -> Quantity {
        let per_pod = if has_sidecar {
            one.plus(Quantity::parse(sidecar).expect("a valid default"))
        } else {
            one
        };
        per_pod.times(spec.max)
    };
    if let Some(cpu) = &spec.resources.cpu {
        let q = quantity_of(set, "resources.cpu", cpu)?;
        requests.insert("cpu".into(), json!(q.canonical()));
        sidecar_requests.insert("cpu".into(), json!(DIND_CPU_REQUEST));
        hard.insert(
            "requests.cpu".into(),
            json!(sum(q, DIND_CPU_REQUEST).canonical()),
        );
    }
    if let Some(mem) = &spec.resources.memory {
        let q = quantity_of(set, "resources.memory", mem)?;
        requests.insert("memory".into(), json!(q.canonical()));
        limits.insert("memory".into(), json!(q.canonical()));
        sidecar_requests.insert("memory".into(), json!(DIND_MEMORY));
        sidecar_limits.insert("memory".into(), json!(DIND_MEMORY));
        let total = sum(q, DIND_MEMORY).canonical();
        hard.insert("requests.memory".into(), json!(total));
        hard.insert("limits.memory".into(), json!(total));
    }
    if let Some(gpu) = &spec.resources.gpu {
        // Only the runner gets GPUs; `requests.<gpu>` is the one GPU key a quota takes.
        let res = gpu.vendor.resource_name();
        requests.insert(res.into(), json!(gpu.count.to_string()));
        limits.insert(res.into(), json!(gpu.count.to_string()));
        hard.insert(
            format!("requests.{res}"),
            json!((u64::from(gpu.count) * u64::from(spec.max)).to_string()),
        );
    }
    hard.insert("pods".into(), json!(spec.max.to_string()));
    let sidecar_resources = {
        let mut r = Map::new();
        if !sidecar_requests.is_empty() {
            r.insert("requests".into(), Value::Object(sidecar_requests));
        }
        if !sidecar_limits.is_empty() {
            r.insert("limits".into(), Value::Object(sidecar_limits));
        }
        Value::Object(r)
    };

    let pc = priority_class_name(fleet, name);
    out.objects.push(object(
        &kinds::PRIORITY_CLASS,
        meta(&pc, None, labels()),
        json!({
            "value": 0,
            "globalDefault": false,
            "preemptionPolicy": "Never",
            "description": format!("Runner set {name} of fleet {fleet}; scopes its ResourceQuota."),
        }),
    ));
    out.objects.push(object(
        &kinds::RESOURCE_QUOTA,
        meta(name, Some(ns), labels()),
        json!({"spec": {
            "hard": hard,
            "scopeSelector": {"matchExpressions": [{"scopeName": "PriorityClass", "operator": "In", "values": [pc]}]},
        }}),
    ));

    let kp = pool.spec.kubernetes.clone().unwrap_or_default();
    let image = spec
        .image
        .clone()
        .or_else(|| {
            ctx.repo
                .fleet
                .as_ref()
                .and_then(|f| f.value.spec.defaults.runner_image.clone())
        })
        .unwrap_or_else(|| DEFAULT_RUNNER_IMAGE.to_string());

    let mut env: Vec<Value> = Vec::new();
    for var in &spec.env {
        if let Some(v) = &var.value {
            env.push(json!({"name": var.name, "value": v}));
        } else if let Some(sr) = &var.secret_ref {
            match secret_key_ref(ctx, ns, sr) {
                Ok(r) => env.push(json!({"name": var.name, "valueFrom": {"secretKeyRef": r}})),
                Err(why) => out.findings.push(Finding::new(
                    FindingSeverity::Error,
                    "env-secret-unavailable",
                    format!("RunnerSet {name}"),
                    format!("env {} (SecretRef {sr}) is not rendered: {why}", var.name),
                )),
            }
        }
    }

    let mut runner = Map::new();
    runner.insert("name".into(), json!("runner"));
    runner.insert("image".into(), json!(image));
    // Both engines start the runner with `run.sh`, which reads its JIT config from
    // `ACTIONS_RUNNER_INPUT_JITCONFIG` (set per Pod, from the runner's own Secret).
    let command = if spec.command.is_empty() {
        vec![RUNNER_COMMAND.to_string()]
    } else {
        spec.command.clone()
    };
    if !command.is_empty() {
        runner.insert("command".into(), json!(command));
    }
    let mut containers = Vec::new();
    let mut init_containers = Vec::new();
    let mut volumes = Vec::new();
    match spec.docker {
        DockerMode::None => {}
        DockerMode::Dind => {
            // As the gha-runner-scale-set chart's dind mode: an init container copies the
            // runner's externals into a volume dockerd mounts (actions run by Docker find
            // node there), dockerd is a native sidecar (an init container that keeps
            // running: started before the runner, stopped after it), and the runner waits
            // for its socket.
            env.push(json!({"name": "DOCKER_HOST", "value": "unix:///var/run/docker.sock"}));
            env.push(
                json!({"name": "RUNNER_WAIT_FOR_DOCKER_IN_SECONDS", "value": DIND_WAIT_SECONDS}),
            );
            runner.insert(
                "volumeMounts".into(),
                json!([{"name": "dind-sock", "mountPath": "/var/run"}, {"name": "work", "mountPath": "/home/runner/_work"}]),
            );
            init_containers.push(json!({
                "name": "init-dind-externals",
                "image": image,
                "command": ["cp"],
                "args": ["-r", "/home/runner/externals/.", "/home/runner/tmpDir/"],
                "volumeMounts": [{"name": "dind-externals", "mountPath": "/home/runner/tmpDir"}],
                "resources": sidecar_resources.clone(),
            }));
            init_containers.push(json!({
                "name": "dind",
                "image": DIND_IMAGE,
                "restartPolicy": "Always",
                "args": ["dockerd", "--host=unix:///var/run/docker.sock", "--group=$(DOCKER_GROUP_GID)"],
                "env": [{"name": "DOCKER_GROUP_GID", "value": "123"}],
                "securityContext": {"privileged": true},
                "startupProbe": {"exec": {"command": ["docker", "info"]}, "periodSeconds": 5, "failureThreshold": 24},
                "volumeMounts": [
                    {"name": "dind-sock", "mountPath": "/var/run"},
                    {"name": "work", "mountPath": "/home/runner/_work"},
                    {"name": "dind-externals", "mountPath": "/home/runner/externals"},
                ],
                "resources": sidecar_resources,
            }));
            volumes.push(json!({"name": "dind-sock", "emptyDir": {}}));
            volumes.push(json!({"name": "dind-externals", "emptyDir": {}}));
            volumes.push(json!({"name": "work", "emptyDir": {}}));
            out.requires.native_sidecars = true;
        }
        DockerMode::Rootless => {
            env.push(json!({"name": "DOCKER_HOST", "value": "unix:///run/user/1000/docker.sock"}));
            runner.insert(
                "volumeMounts".into(),
                json!([{"name": "dind-sock", "mountPath": "/run/user/1000"}, {"name": "work", "mountPath": "/home/runner/_work"}]),
            );
            containers.push(json!({
                "name": "dind",
                "image": DIND_ROOTLESS_IMAGE,
                // Rootless dockerd still needs privileged for its user namespace and mounts,
                // but runs as uid 1000: a container escape lands as an unprivileged user.
                "securityContext": {"privileged": true, "runAsUser": 1000, "runAsGroup": 1000},
                "volumeMounts": [{"name": "dind-sock", "mountPath": "/run/user/1000"}, {"name": "work", "mountPath": "/home/runner/_work"}],
                "resources": sidecar_resources,
            }));
            volumes.push(json!({"name": "dind-sock", "emptyDir": {}}));
            volumes.push(json!({"name": "work", "emptyDir": {}}));
        }
    }
    if !env.is_empty() {
        runner.insert("env".into(), json!(env));
    }
    let mut resources = Map::new();
    if !requests.is_empty() {
        resources.insert("requests".into(), Value::Object(requests));
    }
    if !limits.is_empty() {
        resources.insert("limits".into(), Value::Object(limits));
    }
    if !resources.is_empty() {
        runner.insert("resources".into(), Value::Object(resources));
    }
    containers.insert(0, Value::Object(runner));

    let mut pod = Map::new();
    pod.insert("serviceAccountName".into(), json!(RUNNER_ACCOUNT));
    pod.insert("automountServiceAccountToken".into(), json!(false));
    pod.insert("restartPolicy".into(), json!("Never"));
    pod.insert("priorityClassName".into(), json!(pc));
    if !kp.node_selector.is_empty() {
        pod.insert("nodeSelector".into(), json!(kp.node_selector));
    }
    if !kp.tolerations.is_empty() {
        pod.insert(
            "tolerations".into(),
            json!(
                kp.tolerations
                    .iter()
                    .map(toleration_json)
                    .collect::<Vec<_>>()
            ),
        );
    }
    if let Some(rc) = &kp.runtime_class_name {
        pod.insert("runtimeClassName".into(), json!(rc));
    }
    if !init_containers.is_empty() {
        pod.insert("initContainers".into(), json!(init_containers));
    }
    pod.insert("containers".into(), json!(containers));
    if !volumes.is_empty() {
        pod.insert("volumes".into(), json!(volumes));
    }
    let mut pod_labels = runner_pod_selector(fleet);
    pod_labels[SITE_LABEL] = json!(ctx.name());
    pod_labels[RUNNER_SET_LABEL] = json!(name);
    let template = json!({"metadata": {"labels": pod_labels}, "spec": pod});

    match spec.engine {
        Engine::Drover => out.objects.push(object(
            &kinds::POD_TEMPLATE,
            meta(name, Some(ns), labels()),
            json!({"template": template}),
        )),
        Engine::Arc => {
            out.requires.crds.insert(
                ARC_CRD.into(),
                format!("AutoscalingRunnerSet for runner set {name} (engine: arc)"),
            );
            let github_url = ctx
                .repo
                .fleet
                .as_ref()
                .map_or("https://github.com", |f| f.value.spec.github.url.as_str())
                .trim_end_matches('/')
                .to_string();
            let scope = &spec.github;
            let url = match (&scope.enterprise, &scope.org, &scope.repo) {
                (Some(e), _, _) => format!("{github_url}/enterprises/{e}"),
                (_, Some(o), _) => format!("{github_url}/{o}"),
                (_, _, Some(r)) => format!("{github_url}/{r}"),
                _ => github_url,
            };
            let group = scope.effective_runner_group(
                ctx.repo
                    .fleet
                    .as_ref()
                    .and_then(|f| f.value.spec.defaults.runner_group.as_deref()),
            );
            let config_secret = arc_config_secret(ctx, ns, out);
            let arc = k8s_site(ctx).and_then(|k| k.arc.as_ref());
            // The controller deletes a set without its version label (or of another
            // major.minor): the site's setting, else discovery fills it in at plan time.
            let mut ars_labels = labels();
            if let Some(v) = arc.and_then(|a| a.controller_version.as_ref()) {
                ars_labels[kinds::VERSION_LABEL] = json!(v);
            }
            let manager = arc_manager_binding(
                name,
                ns,
                arc.and_then(|a| a.controller_service_account.as_ref()),
                labels(),
                out,
            );
            let mut ars_meta = meta(name, Some(ns), ars_labels);
            ars_meta["annotations"] =
                json!({ kinds::ARC_CLEANUP_ROLE_BINDING_ANNOTATION: manager });
            // Jobs target the scale set by its name and by these labels.
            let scale_set_labels: Vec<&String> =
                spec.labels.iter().filter(|l| l.as_str() != name).collect();
            let mut ars_spec = json!({
                "githubConfigUrl": url,
                "githubConfigSecret": config_secret,
                "runnerGroup": group,
                "runnerScaleSetName": name,
                "minRunners": spec.min,
                "maxRunners": spec.max,
                "template": template,
            });
            if !scale_set_labels.is_empty() {
                ars_spec["runnerScaleSetLabels"] = json!(scale_set_labels);
            }
            out.objects.push(object(
                &kinds::AUTOSCALING_RUNNER_SET,
                ars_meta,
                json!({ "spec": ars_spec }),
            ));
        }
    }
    Ok(())
}

/// Renders a set's manager RoleBinding: what the gha-runner-scale-set chart's manager Role
/// grants (shipped as the ClusterRole [`kinds::ARC_MANAGER_CLUSTER_ROLE`]), granted to the
/// ARC controller's ServiceAccount in the runner namespace. With no `account` it has no
/// subject yet; the plan takes it from the controller Deployment. Returns its name.
fn arc_manager_binding(
    set: &str,
    ns: &str,
    account: Option<&crate::fleet::model::ArcServiceAccount>,
    labels: Value,
    out: &mut Rendered,
) -> String {
    let name = format!("{set}-gha-rs-manager");
    out.requires
        .cluster_roles
        .entry(kinds::ARC_MANAGER_CLUSTER_ROLE.to_string())
        .or_insert_with(|| {
            format!("bound to the ARC controller by RoleBinding {ns}/{name}; it ships in deploy/kubernetes/rbac.yaml")
        });
    let mut metadata = meta(&name, Some(ns), labels);
    metadata["finalizers"] = json!([kinds::ARC_CLEANUP_FINALIZER]);
    let subjects: Vec<Value> = account
        .map(|a| arc_manager_subject(&a.namespace, &a.name))
        .into_iter()
        .collect();
    out.objects.push(object(
        &kinds::ROLE_BINDING,
        metadata,
        json!({
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": kinds::ARC_MANAGER_CLUSTER_ROLE,
            },
            "subjects": subjects,
        }),
    ));
    name
}

/// The manager RoleBinding's subject: the ARC controller's ServiceAccount.
pub fn arc_manager_subject(namespace: &str, name: &str) -> Value {
    json!({"kind": "ServiceAccount", "name": name, "namespace": namespace})
}

/// Name of the Secret ARC reads GitHub App credentials from, rendered (once) as an
/// ExternalSecret when the App key lives in an External Secrets store of this site.
pub const ARC_CONFIG_SECRET: &str = "drover-arc-github";

fn arc_config_secret(ctx: &SiteContext<'_>, ns: &str, out: &mut Rendered) -> String {
    let fleet = ctx.fleet_name();
    let github = ctx.repo.fleet.as_ref().map(|f| &f.value.spec.github);
    let app = github.and_then(|g| g.app.as_ref());
    let key_ref = app
        .map(|a| a.private_key_ref.clone())
        .or_else(|| github.and_then(|g| g.token_ref.clone()));
    let spec: Option<&SecretRefSpec> = key_ref
        .as_deref()
        .and_then(|k| ctx.repo.secrets.get(k))
        .map(|s| &s.value.spec);
    if let (Some(es), Some(app)) = (spec.and_then(|s| s.external_secret.as_ref()), app)
        && es.site == ctx.name()
    {
        let already = out
            .objects
            .iter()
            .any(|o| o["kind"] == "ExternalSecret" && o["metadata"]["name"] == ARC_CONFIG_SECRET);
        if !already {
            let mut remote = Map::new();
            remote.insert("key".into(), json!(es.remote_key));
            if let Some(p) = &es.property {
                remote.insert("property".into(), json!(p));
            }
            let mut data = Map::new();
            data.insert("github_app_id".into(), json!(app.app_id.to_string()));
            if let Some(i) = app.installation_id {
                data.insert("github_app_installation_id".into(), json!(i.to_string()));
            }
            data.insert(
                "github_app_private_key".into(),
                json!("{{ .github_app_private_key }}"),
            );
            out.objects.push(object(
                &kinds::EXTERNAL_SECRET,
                meta(ARC_CONFIG_SECRET, Some(ns), owner_labels(fleet, ctx.name(), None)),
                json!({"spec": {
                    "secretStoreRef": {"name": es.store, "kind": es.store_kind.as_str()},
                    "target": {"name": ARC_CONFIG_SECRET, "creationPolicy": "Owner", "template": {"data": data}},
                    "data": [{"secretKey": "github_app_private_key", "remoteRef": remote}],
                    "refreshInterval": "1h",
                }}),
            ));
            out.requires
                .crds
                .entry(EXTERNAL_SECRET_CRD.into())
                .or_insert_with(|| {
                    "ExternalSecret with actions-runner-controller's GitHub App credentials".into()
                });
        }
        return ARC_CONFIG_SECRET.to_string();
    }
    if let Some(ks) = spec.and_then(|s| s.kubernetes_secret.as_ref())
        && ks.namespace == ns
    {
        if !out.findings.iter().any(|f| f.code == "arc-config-secret") {
            out.findings.push(Finding::new(
                FindingSeverity::Warning,
                "arc-config-secret",
                format!("Secret {ns}/{}", ks.name),
                "engine: arc reads GitHub credentials from this Secret; it must hold actions-runner-controller's keys (github_app_id, github_app_installation_id, github_app_private_key or github_token)",
            ));
        }
        return ks.name.clone();
    }
    if !out.findings.iter().any(|f| f.code == "arc-config-secret") {
        out.findings.push(Finding::new(
            FindingSeverity::Error,
            "arc-config-secret",
            format!("site {}", ctx.name()),
            format!("engine: arc needs the GitHub credentials in a Secret of namespace {ns}; the fleet's GitHub key is neither an ExternalSecret of this site nor a Kubernetes Secret in that namespace; expecting Secret {ARC_CONFIG_SECRET}"),
        ));
    }
    ARC_CONFIG_SECRET.to_string()
}

/// The `secretKeyRef` a runner pod uses for a SecretRef, or why it has none.
fn secret_key_ref(ctx: &SiteContext<'_>, ns: &str, name: &str) -> Result<Value, NoSecretKeyRef> {
    let Some(secret) = ctx.repo.secrets.get(name) else {
        return Err(NoSecretKeyRef::NoSuchSecretRef);
    };
    let spec = &secret.value.spec;
    if let Some(ks) = &spec.kubernetes_secret {
        if let Some(site) = ks.site.as_deref().filter(|s| *s != ctx.name()) {
            return Err(NoSecretKeyRef::OtherSite(site.to_owned()));
        }
        if ks.namespace != ns {
            return Err(NoSecretKeyRef::OtherNamespace {
                secret: format!("{}/{}", ks.namespace, ks.name),
                runners: ns.to_owned(),
            });
        }
        return Ok(json!({"name": ks.name, "key": ks.key}));
    }
    if let Some(es) = &spec.external_secret {
        if es.site != ctx.name() {
            return Err(NoSecretKeyRef::ExternalSecretElsewhere(es.site.clone()));
        }
        return Ok(json!({"name": name, "key": EXTERNAL_SECRET_KEY}));
    }
    Err(NoSecretKeyRef::NotForClusters)
}

/// Why a SecretRef cannot reach a runner Pod's environment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum NoSecretKeyRef {
    #[error("no such SecretRef")]
    NoSuchSecretRef,
    #[error("the Secret lives on site {0}, not this one")]
    OtherSite(String),
    #[error(
        "Secret {secret} is not in the runner namespace {runners}; pods can only read Secrets of their own namespace"
    )]
    OtherNamespace { secret: String, runners: String },
    #[error("its ExternalSecret is rendered on site {0}")]
    ExternalSecretElsewhere(String),
    #[error("env and file SecretRefs are for drover itself and are never copied into a cluster")]
    NotForClusters,
}

/// Names of every runner set rendered on the site.
pub fn runner_sets(rendered: &Rendered) -> BTreeSet<String> {
    rendered
        .objects
        .iter()
        .filter_map(|o| o["metadata"]["labels"][RUNNER_SET_LABEL].as_str())
        .map(str::to_string)
        .collect()
}
