//! Observe: what drover owns on a site (listed by its ownership labels, per kind) and the
//! facts the site checks need (nodes, device-plugin DaemonSets, RuntimeClasses, CRDs and
//! the server version). Requests run concurrently, each retried and bounded by the site
//! timeout.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::future::{try_join_all, try_join5};
use kube::api::{Api, DynamicObject, ListParams};
use serde_json::Value;

use super::client::{self, Error, RetryPolicy};
use super::kinds::{self, KindInfo};
use super::render::Rendered;
use crate::sites::{MANAGED_BY, MANAGED_BY_LABEL, OWNER_LABEL};

/// An actions-runner-controller Deployment, as its chart labels it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArcController {
    /// `namespace/name` of the Deployment.
    pub deployment: String,
    /// Its `app.kubernetes.io/version` label.
    pub version: Option<String>,
    /// Its ServiceAccount (namespace, name), from the
    /// `actions.github.com/controller-service-account-{namespace,name}` labels.
    pub service_account: Option<(String, String)>,
}

impl ArcController {
    /// Reads a Deployment's labels.
    fn from_labels(deployment: String, labels: &BTreeMap<String, String>) -> Self {
        let label = |k: &str| labels.get(k).cloned();
        let service_account = label(kinds::ARC_CONTROLLER_SA_NAMESPACE_LABEL)
            .zip(label(kinds::ARC_CONTROLLER_SA_NAME_LABEL));
        Self {
            deployment,
            version: label(kinds::VERSION_LABEL),
            service_account,
        }
    }
}

/// What was found on a site.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// `gitVersion` of the API server, e.g. `v1.31.2`.
    pub server_version: Option<String>,
    /// Every object carrying drover's ownership labels for this fleet, of every owned kind.
    pub owned: Vec<Value>,
    /// Every Node of the cluster (only listed when the site has pools).
    pub nodes: Vec<Value>,
    /// Required device-plugin DaemonSets: (namespace, name, object if found).
    pub daemon_sets: Vec<(String, String, Option<Value>)>,
    /// Required RuntimeClasses that exist.
    pub runtime_classes: BTreeSet<String>,
    /// Required ClusterRoles that exist.
    pub cluster_roles: BTreeSet<String>,
    /// CRDs (among those drover needs or may own objects of) that exist.
    pub crds: BTreeSet<String>,
    /// actions-runner-controller Deployments; listed only when the site has `engine: arc`
    /// runner sets.
    pub arc_controllers: Vec<ArcController>,
    /// Per custom kind drover may own (by kind name): what discovery found. A kind absent
    /// here (e.g. in a hand-built `Observed`) is used at its rendered version.
    pub custom: BTreeMap<String, CustomKind>,
}

/// What discovery (`/apis/<group>`) says about a custom kind drover renders.
#[derive(Debug, Clone, PartialEq)]
pub enum CustomKind {
    /// The group is not served at all (its CRD is not installed): no object can exist.
    NotServed,
    /// Served; drover uses this version ([`kinds::choose_version`]).
    Served(KindInfo),
    /// Served, but at no version drover supports: why.
    Unsupported(String),
}

/// Reads an object by name: `None` only when the server says that object does not exist
/// (a 404 naming it). A 404 that names no object means the server does not serve the
/// resource at all: that is an error, never "absent".
pub async fn get_named(
    api: &Api<DynamicObject>,
    name: &str,
) -> Result<Option<DynamicObject>, kube::Error> {
    match api.get(name).await {
        Ok(obj) => Ok(Some(obj)),
        Err(kube::Error::Api(status))
            if status.code == 404 && status.details.as_ref().is_some_and(|d| d.name == name) =>
        {
            Ok(None)
        }
        Err(err) => Err(err),
    }
}

/// Which of the named cluster-scoped objects of `kind` exist (read one by one; a 404 for
/// that name means absent, any other error is an error).
async fn existing<'a>(
    client: &kube::Client,
    kind: &KindInfo,
    names: impl IntoIterator<Item = &'a String>,
    timeout: Duration,
    retry: RetryPolicy,
) -> Result<Vec<String>, Error> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &kind.api_resource());
    let found = try_join_all(names.into_iter().map(|name| {
        let api = &api;
        async move {
            let what = format!("reading {} {name}", kind.kind);
            let found = client::call(what, timeout, retry, || get_named(api, name)).await?;
            Ok::<_, Error>(found.map(|_| name.clone()))
        }
    }))
    .await?;
    Ok(found.into_iter().flatten().collect())
}

/// The versions an API group serves (`/apis/<group>`); `None` when the group is not served.
async fn served_versions(
    client: &kube::Client,
    group: &str,
    timeout: Duration,
    retry: RetryPolicy,
) -> Result<Option<Vec<String>>, Error> {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::APIGroup;
    let path = format!("/apis/{group}");
    let what = format!("discovering the versions of API group {group} (GET {path})");
    let result = client::call(&what, timeout, retry, || {
        let request = http::Request::get(path.as_str())
            .body(Vec::new())
            .expect("a valid request");
        client.request::<APIGroup>(request)
    })
    .await;
    match result {
        Ok(doc) => Ok(Some(doc.versions.into_iter().map(|v| v.version).collect())),
        // Discovery is the one place where 404 means "absent": the group is not served.
        Err(Error::Request {
            code: Some(404), ..
        }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Discovery for every custom kind drover may own.
async fn discover_custom(
    client: &kube::Client,
    timeout: Duration,
    retry: RetryPolicy,
) -> Result<BTreeMap<String, CustomKind>, Error> {
    let groups: BTreeSet<&str> = kinds::OWNED
        .iter()
        .filter(|k| k.crd.is_some())
        .map(|k| k.group)
        .collect();
    let served = try_join_all(groups.into_iter().map(|group| async move {
        Ok::<_, Error>((group, served_versions(client, group, timeout, retry).await?))
    }))
    .await?;
    let served: BTreeMap<&str, Option<Vec<String>>> = served.into_iter().collect();
    Ok(kinds::OWNED
        .iter()
        .filter(|k| k.crd.is_some())
        .map(|k| {
            let found = match served.get(k.group).cloned().flatten() {
                None => CustomKind::NotServed,
                Some(versions) => match kinds::choose_version(k, &versions) {
                    Ok(chosen) => CustomKind::Served(chosen),
                    Err(why) => CustomKind::Unsupported(why.to_string()),
                },
            };
            (k.kind.to_string(), found)
        })
        .collect())
}

/// The label selector of the objects `fleet` owns.
pub fn owner_selector(fleet: &str) -> String {
    format!("{MANAGED_BY_LABEL}={MANAGED_BY},{OWNER_LABEL}={fleet}")
}

fn to_value(kind: &KindInfo, obj: &DynamicObject) -> Value {
    let mut v = serde_json::to_value(obj).unwrap_or(Value::Null);
    if let Some(m) = v.as_object_mut() {
        m.insert("apiVersion".into(), Value::String(kind.api_version()));
        m.insert("kind".into(), Value::String(kind.kind.into()));
    }
    v
}

/// Observes the site.
pub async fn observe(
    client: &kube::Client,
    rendered: &Rendered,
    fleet: &str,
    timeout: Duration,
    retry: RetryPolicy,
) -> Result<Observed, Error> {
    let selector = owner_selector(fleet);

    let version = client::call(
        "reading the server version (/version)",
        timeout,
        retry,
        || client.apiserver_version(),
    );

    // Custom kinds are listed at the version discovery chose. A group that is not served
    // (its CRD is not installed) holds nothing; a kind served at no version drover supports
    // is not listed (a finding says so, and nothing of it is created or pruned). Any list
    // that fails, 404 included, fails the observation: a 404 never reads as "nothing".
    let custom = discover_custom(client, timeout, retry).await?;
    let custom_ref = &custom;
    let owned = try_join_all(kinds::OWNED.iter().map(|kind| {
        let selector = selector.clone();
        async move {
            let kind = match custom_ref.get(kind.kind) {
                None => *kind,
                Some(CustomKind::Served(chosen)) => *chosen,
                Some(CustomKind::NotServed | CustomKind::Unsupported(_)) => {
                    return Ok(Vec::new());
                }
            };
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &kind.api_resource());
            let lp = ListParams::default().labels(&selector);
            let what = format!(
                "listing {}.{} owned by drover",
                kind.plural,
                kind.api_version()
            );
            let list = client::call(what, timeout, retry, || api.list(&lp)).await?;
            Ok::<_, Error>(
                list.items
                    .iter()
                    .map(|o| to_value(&kind, o))
                    .collect::<Vec<_>>(),
            )
        }
    }));

    let arc_controllers = async {
        let has_arc = rendered
            .objects
            .iter()
            .any(|o| o["kind"] == kinds::AUTOSCALING_RUNNER_SET.kind);
        if !has_arc {
            return Ok(Vec::new());
        }
        let api: Api<DynamicObject> =
            Api::all_with(client.clone(), &kinds::DEPLOYMENT.api_resource());
        let lp = ListParams::default().labels(kinds::ARC_CONTROLLER_SELECTOR);
        let what = format!(
            "listing actions-runner-controller Deployments ({})",
            kinds::ARC_CONTROLLER_SELECTOR
        );
        let list = client::call(what, timeout, retry, || api.list(&lp)).await?;
        Ok::<_, Error>(
            list.items
                .iter()
                .map(|d| {
                    let name = format!(
                        "{}/{}",
                        d.metadata.namespace.as_deref().unwrap_or_default(),
                        d.metadata.name.as_deref().unwrap_or_default()
                    );
                    let labels = d.metadata.labels.clone().unwrap_or_default();
                    ArcController::from_labels(name, &labels)
                })
                .collect::<Vec<_>>(),
        )
    };

    let nodes = async {
        if rendered.pools.is_empty() {
            return Ok(Vec::new());
        }
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &kinds::NODE.api_resource());
        let lp = ListParams::default();
        let list = client::call("listing nodes", timeout, retry, || api.list(&lp)).await?;
        Ok::<_, Error>(
            list.items
                .iter()
                .map(|o| to_value(&kinds::NODE, o))
                .collect::<Vec<_>>(),
        )
    };

    let daemon_sets = try_join_all(rendered.requires.device_plugins.iter().map(|(ns, name)| {
        let ar = kinds::DAEMON_SET.api_resource();
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
        async move {
            let what = format!("reading DaemonSet {ns}/{name}");
            let found = client::call(what, timeout, retry, || get_named(&api, name)).await?;
            Ok::<_, Error>((
                ns.clone(),
                name.clone(),
                found.and_then(|o| serde_json::to_value(o).ok()),
            ))
        }
    }));

    let runtime_classes = existing(
        client,
        &kinds::RUNTIME_CLASS,
        rendered.requires.runtime_classes.keys(),
        timeout,
        retry,
    );
    let cluster_roles = existing(
        client,
        &kinds::CLUSTER_ROLE,
        rendered.requires.cluster_roles.keys(),
        timeout,
        retry,
    );

    let mut crd_names: BTreeSet<String> = rendered.requires.crds.keys().cloned().collect();
    crd_names.extend(
        kinds::OWNED
            .iter()
            .filter_map(|k| k.crd.map(str::to_string)),
    );
    let crds = existing(client, &kinds::CRD, &crd_names, timeout, retry);

    let (
        version,
        (owned, nodes, arc_controllers),
        daemon_sets,
        (runtime_classes, cluster_roles),
        crds,
    ) = try_join5(
        version,
        futures::future::try_join3(owned, nodes, arc_controllers),
        daemon_sets,
        futures::future::try_join(runtime_classes, cluster_roles),
        crds,
    )
    .await?;
    Ok(Observed {
        server_version: Some(version.git_version),
        owned: owned.into_iter().flatten().collect(),
        nodes,
        daemon_sets,
        runtime_classes: runtime_classes.into_iter().collect(),
        cluster_roles: cluster_roles.into_iter().collect(),
        crds: crds.into_iter().collect(),
        arc_controllers,
        custom,
    })
}
