//! Apply: server-side apply of the planned creates and updates with field manager
//! `drover`, in dependency order with bounded concurrency, then guarded prunes.
//!
//! - Order: Namespace; ServiceAccount, Role, RoleBinding, PriorityClass; the rest (CRD-backed
//!   kinds last). CRDs are checked, never installed: an object whose CRD is missing fails
//!   without a request.
//! - Conflicts (409) are reported per object with the other manager and the fields; nothing
//!   is overwritten unless `force_conflicts`.
//! - `dry_run` sends every write with `dryRun=All`.
//! - A delete re-reads the live object first and deletes only if it still carries drover's
//!   ownership labels for this fleet, with uid + resourceVersion preconditions.

use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions};
use serde_json::Value;

use super::client::{self, Error, RetryPolicy};
use super::plan::{Op, Planned, is_owned};
use crate::plan::{Action, ApplyReport, Target};
use crate::sites::{ApplyOptions, ChangeError, FIELD_MANAGER};

/// The outcome of one op.
type OpResult = (Action, Target, Result<(), ChangeError>);

/// Writes in flight per site.
pub(crate) const CONCURRENCY: usize = 8;

/// How to apply one site's plan.
#[derive(Debug, Clone)]
pub(crate) struct ApplySettings {
    /// Site name.
    pub site: String,
    /// Owning fleet.
    pub fleet: String,
    /// CLI apply options.
    pub options: ApplyOptions,
    /// Mass-prune threshold in percent.
    pub mass_prune_percent: u8,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Retry policy.
    pub retry: RetryPolicy,
}

/// Why a prune is refused by the mass-prune guard, if it is.
pub(crate) fn mass_prune_refusal(planned: &Planned, percent: u8, allow: bool) -> Option<String> {
    let deletes = planned
        .ops
        .iter()
        .filter(|o| o.action == Action::Delete)
        .count();
    if allow || deletes == 0 {
        return None;
    }
    let owned = planned.owned_count.max(1);
    if deletes * 100 > usize::from(percent) * owned {
        return Some(format!(
            "prune would delete {deletes} of {owned} owned objects ({}%), above the mass-prune threshold of {percent}%; nothing was applied; re-run with --allow-mass-prune if this is intended",
            deletes * 100 / owned
        ));
    }
    None
}

/// Applies the plan's ops. Never panics; every failure is collected per object.
pub(crate) async fn apply(
    client: &kube::Client,
    planned: &Planned,
    s: &ApplySettings,
) -> ApplyReport {
    let mut report = ApplyReport {
        site: s.site.clone(),
        ..ApplyReport::default()
    };
    if let Some(why) = mass_prune_refusal(planned, s.mass_prune_percent, s.options.allow_mass_prune)
    {
        report.refused = Some(why);
        return report;
    }
    // Namespaces this run creates: in a dry run they do not exist afterwards, so the
    // server would refuse every object inside them.
    let new_namespaces: Vec<&str> = planned
        .ops
        .iter()
        .filter(|o| o.action == Action::Create && o.kind.kind == "Namespace")
        .map(|o| o.target.name.as_str())
        .collect();

    let mut batches: Vec<Vec<&Op>> = Vec::new();
    let mut last: Option<(bool, u8)> = None;
    for op in &planned.ops {
        let group = (op.action == Action::Delete, op.kind.tier);
        if last != Some(group) {
            batches.push(Vec::new());
            last = Some(group);
        }
        batches.last_mut().expect("pushed").push(op);
    }
    for batch in batches {
        let new_namespaces = &new_namespaces;
        // Futures are built into a Vec first (not by a closure inside the stream) so that
        // the whole apply future stays `Send` for callers that spawn it (a closure over
        // `&Op` would need a higher-ranked bound rustc cannot prove).
        let mut pending: Vec<BoxFuture<'_, OpResult>> = Vec::new();
        for op in batch {
            pending.push(run_op(client, op, s, new_namespaces).boxed());
        }
        let results: Vec<OpResult> = futures::stream::iter(pending)
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut results = results;
        results.sort_by(|a, b| a.1.cmp(&b.1));
        for (action, target, result) in results {
            match result {
                Ok(()) => report.applied.push((action, target)),
                Err(e) => {
                    tracing::warn!(site = %s.site, %target, error = %e, "apply failed");
                    report.failed.push((action, target, e.to_string()));
                }
            }
        }
    }
    report
}

async fn run_op(
    client: &kube::Client,
    op: &Op,
    s: &ApplySettings,
    new_namespaces: &[&str],
) -> OpResult {
    let result = if let Some(why) = &op.blocked {
        Err(ChangeError::Blocked(why.clone()))
    } else if s.options.dry_run
        && op
            .target
            .namespace
            .as_deref()
            .is_some_and(|ns| new_namespaces.contains(&ns))
    {
        Err(ChangeError::NamespaceNotYetCreated(
            op.target.namespace.clone().unwrap_or_default(),
        ))
    } else if op.action == Action::Delete {
        delete_one(client, op, s).await
    } else {
        apply_one(client, op, s).await
    };
    (op.action, op.target.clone(), result)
}

fn api_for(client: &kube::Client, op: &Op) -> Api<DynamicObject> {
    let ar = op.kind.api_resource();
    match (&op.target.namespace, op.kind.namespaced) {
        (Some(ns), true) => Api::namespaced_with(client.clone(), ns, &ar),
        _ => Api::all_with(client.clone(), &ar),
    }
}

async fn apply_one(client: &kube::Client, op: &Op, s: &ApplySettings) -> Result<(), ChangeError> {
    let api = api_for(client, op);
    // Strict: a field the server does not know is an error at apply, never silently
    // dropped (which would read as drift on every later plan).
    let mut params =
        PatchParams::apply(FIELD_MANAGER).validation(kube::api::ValidationDirective::Strict);
    if s.options.force_conflicts {
        params = params.force();
    }
    params.dry_run = s.options.dry_run;
    let patch = Patch::Apply(&op.object);
    let what = format!("applying {}", op.target);
    let result = client::call(&what, s.timeout, s.retry, || {
        api.patch(&op.target.name, &params, &patch)
    })
    .await;
    match result {
        Ok(_) => Ok(()),
        Err(Error::Request {
            code: Some(409),
            detail,
            ..
        }) => Err(ChangeError::Conflict(detail)),
        Err(e) => Err(e.into()),
    }
}

async fn delete_one(client: &kube::Client, op: &Op, s: &ApplySettings) -> Result<(), ChangeError> {
    let api = api_for(client, op);
    let name = &op.target.name;
    let live = client::call(format!("reading {}", op.target), s.timeout, s.retry, || {
        super::observe::get_named(&api, name)
    })
    .await?;
    let Some(live) = live else {
        return Ok(()); // already gone
    };
    let live_value = serde_json::to_value(&live).unwrap_or(Value::Null);
    if !is_owned(&live_value, &s.fleet, &s.site) {
        return Err(ChangeError::NotOwned {
            fleet: s.fleet.clone(),
            site: s.site.clone(),
        });
    }
    let params = DeleteParams {
        dry_run: s.options.dry_run,
        preconditions: Some(Preconditions {
            uid: live.metadata.uid.clone(),
            resource_version: live.metadata.resource_version.clone(),
        }),
        ..DeleteParams::default()
    };
    let result = client::call(
        format!("deleting {}", op.target),
        s.timeout,
        s.retry,
        || api.delete(name, &params),
    )
    .await;
    deleted(result.map(drop), "object", "checked")
}

/// The outcome of a delete with preconditions: gone already is done, and a failed
/// precondition says the `what` changed since it was `when` (checked, planned).
pub(crate) fn deleted(
    result: Result<(), Error>,
    what: &'static str,
    when: &'static str,
) -> Result<(), ChangeError> {
    match result {
        Ok(()) => Ok(()),
        Err(Error::Request {
            code: Some(404), ..
        }) => Ok(()),
        Err(Error::Request {
            code: Some(409),
            detail,
            ..
        }) => Err(ChangeError::ChangedSince { what, when, detail }),
        Err(e) => Err(e.into()),
    }
}
