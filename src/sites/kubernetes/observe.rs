//! Observe: what drover owns on a site (listed by its ownership labels, per kind) and the
//! facts the site checks need (nodes, device-plugin DaemonSets, RuntimeClasses, CRDs and
//! the server version). Requests run concurrently, each retried and bounded by the site
//! timeout.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::future::{try_join_all, try_join5};
use kube::api::{Api, DynamicObject, ListParams};
use serde_json::Value;

use super::client::{self, Error, RetryPolicy};
use super::kinds::{self, KindInfo};
use super::render::Rendered;
use crate::sites::{MANAGED_BY, MANAGED_BY_LABEL, OWNER_LABEL};

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
    /// CRDs (among those drover needs or may own objects of) that exist.
    pub crds: BTreeSet<String>,
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

fn not_found(err: &kube::Error) -> bool {
    client::status_code(err) == Some(404)
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

    // Owned objects of every kind drover may have written; a custom kind whose CRD is not
    // installed lists as 404, i.e. nothing owned.
    let owned = try_join_all(kinds::OWNED.iter().map(|kind| {
        let selector = selector.clone();
        async move {
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &kind.api_resource());
            let lp = ListParams::default().labels(&selector);
            let what = format!("listing {} owned by drover", kind.plural);
            let result = client::with_retry(retry, || api.list(&lp));
            match tokio::time::timeout(timeout, result).await {
                Ok(Ok(list)) => Ok(list.items.iter().map(|o| to_value(kind, o)).collect()),
                Ok(Err(e)) if kind.crd.is_some() && not_found(&e) => Ok(Vec::new()),
                Ok(Err(e)) => Err(Error::request(what, &e)),
                Err(_) => Err(Error::Timeout {
                    what,
                    secs: timeout.as_secs(),
                }),
            }
        }
    }));

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
            let found = client::call(what, timeout, retry, || api.get_opt(name)).await?;
            Ok::<_, Error>((
                ns.clone(),
                name.clone(),
                found.and_then(|o| serde_json::to_value(o).ok()),
            ))
        }
    }));

    let runtime_classes = try_join_all(rendered.requires.runtime_classes.keys().map(|name| {
        let ar = kinds::RUNTIME_CLASS.api_resource();
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        async move {
            let what = format!("reading RuntimeClass {name}");
            let found = client::call(what, timeout, retry, || api.get_opt(name)).await?;
            Ok::<_, Error>(found.map(|_| name.clone()))
        }
    }));

    let mut crd_names: BTreeSet<String> = rendered.requires.crds.keys().cloned().collect();
    crd_names.extend(
        kinds::OWNED
            .iter()
            .filter_map(|k| k.crd.map(str::to_string)),
    );
    let crds = try_join_all(crd_names.into_iter().map(|name| {
        let ar = kinds::CRD.api_resource();
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        async move {
            let what = format!("reading CustomResourceDefinition {name}");
            let found = client::call(what, timeout, retry, || api.get_opt(&name)).await?;
            Ok::<_, Error>(found.map(|_| name))
        }
    }));

    let (version, (owned, nodes), daemon_sets, runtime_classes, crds) = try_join5(
        version,
        futures::future::try_join(owned, nodes),
        daemon_sets,
        runtime_classes,
        crds,
    )
    .await?;
    Ok(Observed {
        server_version: Some(version.git_version),
        owned: owned.into_iter().flatten().collect(),
        nodes,
        daemon_sets,
        runtime_classes: runtime_classes.into_iter().flatten().collect(),
        crds: crds.into_iter().flatten().collect(),
    })
}
