//! Runner Pods on the site: listing drover's runner Pods, and applying the runner plan of
//! [`super::runners`]: JIT config → Pod → Secret owned by the Pod; deregister → delete.
//!
//! - A create mints the JIT config (`RunnerRegistry::jit_config`), creates the Pod (POST,
//!   exclusive: an existing name is an error, never overwritten), then the Secret with an
//!   `ownerReference` to the Pod's uid, so deleting the Pod garbage-collects the Secret. If
//!   the Pod cannot be created the registration is removed; if the Secret cannot be
//!   created the Pod is deleted and the registration removed.
//! - A delete of a Pod whose runner may be registered deregisters it first; GitHub refuses
//!   for a busy runner and the Pod is kept. The delete carries the observed uid and
//!   resourceVersion as preconditions: a Pod that changed since it was planned (e.g. went
//!   from Pending to Running) is not deleted.
//! - Dry run: Pods are created and deleted with `dryRun=All`; no JIT config is minted, no
//!   Secret is written and nothing is deregistered (those are real changes at GitHub).
//!
//! The JIT config is only ever in the Secret's body: never in a plan, a log line, an error
//! or a report (errors that could quote it are redacted).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams, Preconditions};
use serde_json::Value;

use super::apply::CONCURRENCY;
use super::client::{self, Error, RetryPolicy};
use super::kinds;
use super::render::Rendered;
use super::runners::{self, RunnerOp, RunnerPlan, RunnerPod};
use super::site_cache::SiteCache;
use crate::plan::{Action, ApplyReport, Target};
use crate::runners::Removal;
use crate::sites::{ChangeError, FIELD_MANAGER, Registry};

/// Lists the runner Pods drover created for `fleet`, in every namespace.
pub(crate) async fn observe(
    client: &kube::Client,
    fleet: &str,
    timeout: Duration,
    retry: RetryPolicy,
) -> Result<Vec<RunnerPod>, Error> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &kinds::POD.api_resource());
    let lp = ListParams::default().labels(&runners::runner_pod_selector(fleet));
    let list = client::call("listing runner pods", timeout, retry, || api.list(&lp)).await?;
    Ok(list
        .items
        .iter()
        .filter_map(|o| serde_json::to_value(o).ok())
        .filter_map(|v| RunnerPod::from_value(&v))
        .collect())
}

/// How to apply the runner plan.
pub(crate) struct RunnerApply<'a> {
    /// The site's rendered objects (the PodTemplates).
    pub rendered: &'a Rendered,
    /// GitHub's side, if this run has one.
    pub registry: Option<&'a Registry>,
    /// Server-side dry run.
    pub dry_run: bool,
    /// The runner namespace is created by this same run (a dry run cannot create Pods in
    /// it).
    pub new_namespace: bool,
    /// The owning fleet (runner names).
    pub fleet: &'a str,
    /// Names of the observed runner Pods: a new runner never reuses one.
    pub used_names: BTreeSet<String>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// The site cache to tell about drover's creates and deletes, with the site's name.
    pub cache: Option<(&'a SiteCache, &'a str)>,
}

type OpResult = (Action, Target, Result<(), ChangeError>);

/// Applies the runner plan's creates and deletes, adding the outcomes to `report`.
pub(crate) async fn apply(
    client: &kube::Client,
    plan: &RunnerPlan,
    s: &RunnerApply<'_>,
    report: &mut ApplyReport,
) {
    // New runners get their names here, avoiding every name seen on the site.
    let mut used = s.used_names.clone();
    let mut pending: Vec<BoxFuture<'_, OpResult>> = Vec::new();
    for op in &plan.ops {
        match op {
            RunnerOp::Keep(..) => {}
            RunnerOp::Create { set, namespace, .. } => {
                let name =
                    runners::fresh_name(s.fleet, set, &mut used, &mut runners::random_suffix);
                pending.push(create_op(client, set, name, namespace, s).boxed());
            }
            RunnerOp::Delete { .. } => pending.push(run_op(client, op, s).boxed()),
        }
    }
    let mut results: Vec<OpResult> = futures::stream::iter(pending)
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    results.sort_by(|a, b| a.1.cmp(&b.1));
    for (action, target, result) in results {
        match result {
            Ok(()) => report.applied.push((action, target)),
            Err(e) => {
                tracing::warn!(%target, error = %e, "runner pod change failed");
                report.failed.push((action, target, e.to_string()));
            }
        }
    }
}

async fn run_op(client: &kube::Client, op: &RunnerOp, s: &RunnerApply<'_>) -> OpResult {
    let change = op.change();
    let result = match op {
        RunnerOp::Delete {
            pod, deregister, ..
        } => {
            let result = delete(client, pod, *deregister, s).await;
            if let (Ok(()), Some((cache, site)), false) = (&result, s.cache, s.dry_run) {
                cache.deleted(site, &pod.namespace, &pod.name);
            }
            result
        }
        RunnerOp::Create { .. } | RunnerOp::Keep(..) => Ok(()),
    };
    (change.action, change.target, result)
}

/// A create, reported under the new Pod's real name.
async fn create_op(
    client: &kube::Client,
    set: &str,
    name: String,
    namespace: &str,
    s: &RunnerApply<'_>,
) -> OpResult {
    let result = create(client, set, &name, namespace, s).await;
    let target = Target {
        kind: runners::TARGET_KIND.into(),
        namespace: Some(namespace.to_string()),
        name,
    };
    (Action::Create, target, result)
}

fn pods(client: &kube::Client, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), namespace, &kinds::POD.api_resource())
}

async fn create(
    client: &kube::Client,
    set: &str,
    name: &str,
    namespace: &str,
    s: &RunnerApply<'_>,
) -> Result<(), ChangeError> {
    let Some(pod) = runners::pod_object(s.rendered, set, name) else {
        return Err(ChangeError::NoPodTemplate(set.to_owned()));
    };
    let pod: DynamicObject =
        serde_json::from_value(pod).map_err(|e| ChangeError::BuildPod(e.to_string()))?;
    let api = pods(client, namespace);
    let params = PostParams {
        dry_run: s.dry_run,
        field_manager: Some(FIELD_MANAGER.to_string()),
    };
    if s.dry_run && s.new_namespace {
        return Err(ChangeError::NamespaceNotYetCreated(namespace.to_owned()));
    }
    if s.dry_run {
        // No JIT config in a dry run: minting one registers a runner at GitHub.
        return client::call(format!("creating Pod {name}"), s.timeout, s.retry, || {
            api.create(&params, &pod)
        })
        .await
        .map(|_| ())
        .map_err(ChangeError::from);
    }
    let Some(registry) = s.registry else {
        return Err(ChangeError::NoRegistry);
    };
    let jit = registry
        .0
        .jit_config(set, name)
        .await
        .map_err(|e| ChangeError::Mint {
            name: name.to_owned(),
            source: Arc::new(e),
        })?;
    let created = match client::call(format!("creating Pod {name}"), s.timeout, s.retry, || {
        api.create(&params, &pod)
    })
    .await
    {
        Ok(created) => created,
        Err(e) => {
            let undo = undo_registration(registry, set, name).await;
            return Err(ChangeError::Undone {
                error: e.to_string(),
                undo,
            });
        }
    };
    let uid = created.metadata.uid.clone().unwrap_or_default();
    let pod_value = serde_json::to_value(&created).unwrap_or(Value::Null);
    if let (Some((cache, site)), Some(pod)) = (s.cache, RunnerPod::from_value(&pod_value)) {
        cache.created(site, pod);
    }
    let secret = runners::secret_object(&pod_value, &uid, jit.expose());
    let secret: DynamicObject =
        serde_json::from_value(secret).map_err(|_| ChangeError::BuildSecret)?;
    let secrets: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &kinds::SECRET.api_resource());
    let written = client::call(
        format!("creating Secret {namespace}/{name}"),
        s.timeout,
        s.retry,
        || secrets.create(&params, &secret),
    )
    .await;
    drop(secret);
    if let Err(e) = written {
        let message = e.to_string().replace(jit.expose(), "<redacted>");
        // The Pod cannot start without its config: take it and the registration back.
        let deleted = pods(client, namespace)
            .delete(
                name,
                &DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: Some(uid),
                        resource_version: None,
                    }),
                    ..DeleteParams::default()
                },
            )
            .await;
        let pod_note = match deleted {
            Ok(_) => {
                if let Some((cache, site)) = s.cache {
                    cache.deleted(site, namespace, name);
                }
                "; the Pod was deleted".to_string()
            }
            Err(e) => format!(
                "; deleting the Pod failed too ({}): it cannot start and is replaced after the start deadline",
                client::describe(&e)
            ),
        };
        let undo = undo_registration(registry, set, name).await;
        return Err(ChangeError::Undone {
            error: message,
            undo: format!("{pod_note}{undo}"),
        });
    }
    Ok(())
}

/// Removes a registration made for a runner that will not run; the note for the error.
async fn undo_registration(registry: &Registry, set: &str, name: &str) -> String {
    match registry.0.deregister(set, name).await {
        Ok(_) => "; its GitHub registration was removed".to_string(),
        Err(e) => format!("; removing its GitHub registration failed: {e}"),
    }
}

async fn delete(
    client: &kube::Client,
    pod: &RunnerPod,
    deregister: bool,
    s: &RunnerApply<'_>,
) -> Result<(), ChangeError> {
    let mut deregistered = false;
    if deregister
        && !s.dry_run
        && let Some(registry) = s.registry
    {
        match registry.0.deregister(&pod.set, &pod.name).await {
            Ok(Removal::Removed | Removal::NotRegistered) => deregistered = true,
            Ok(Removal::Busy) => {
                return Err(ChangeError::Busy(pod.name.clone()));
            }
            Err(e) => {
                return Err(ChangeError::Deregister {
                    name: pod.name.clone(),
                    source: Arc::new(e),
                });
            }
        }
    }
    // A deregistered runner can take no job whatever its Pod does now (its process exits
    // when it finds itself removed, which changes the Pod's status): only the uid must
    // match. Otherwise the Pod must be as observed, so that e.g. a Pending Pod that
    // started in the meantime is not deleted.
    let params = DeleteParams {
        dry_run: s.dry_run,
        preconditions: Some(Preconditions {
            uid: Some(pod.uid.clone()),
            resource_version: (!deregistered).then(|| pod.resource_version.clone()),
        }),
        ..DeleteParams::default()
    };
    let api = pods(client, &pod.namespace);
    let result = client::call(
        format!("deleting Pod {}/{}", pod.namespace, pod.name),
        s.timeout,
        s.retry,
        || api.delete(&pod.name, &params),
    )
    .await;
    super::apply::deleted(result.map(drop), "Pod", "planned")
}
