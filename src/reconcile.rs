//! Reconciling a fleet across its sites: every selected site is planned (or applied)
//! concurrently, each inside its own tracing span and its own deadline, so one slow or
//! unreachable site never blocks the others. Drivers do the per-site work
//! ([`crate::sites`]); this module only fans out and collects.

use std::time::Duration;

use futures::future::join_all;
use tracing::Instrument;

use crate::fleet::FleetRepo;
use crate::fleet::model::Site;
use crate::fleet::repo::Located;
use crate::plan::{ApplyReport, Plan, SitePlan};
use crate::redact::Redactor;
use crate::sites::{self, RunOptions, SiteContext};

/// Errors that stop a run before any site is contacted.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// `--site` named a site the fleet does not declare.
    #[error("site `{0}` is not declared in the fleet")]
    UnknownSite(String),
}

/// How long one site may take in total: plans make a handful of calls, applies many.
fn deadline(site: &Site, apply: bool) -> Duration {
    let per_call = site.spec.timeout_seconds;
    Duration::from_secs(if apply {
        per_call * 10 + 10
    } else {
        per_call * 3 + 5
    })
}

/// The sites selected by `only` (all when `None`), in name order.
pub fn select<'a>(
    repo: &'a FleetRepo,
    only: Option<&str>,
) -> Result<Vec<&'a Located<Site>>, ReconcileError> {
    match only {
        None => Ok(repo.sites.values().collect()),
        Some(name) => repo
            .sites
            .get(name)
            .map(|s| vec![s])
            .ok_or_else(|| ReconcileError::UnknownSite(name.to_string())),
    }
}

/// Plans every selected site concurrently.
pub async fn plan(
    repo: &FleetRepo,
    options: &RunOptions,
    only: Option<&str>,
) -> Result<Plan, ReconcileError> {
    let sites = select(repo, only)?;
    crate::sites::kubernetes::identity::learn(repo, options).await;
    let mut runs = Vec::new();
    for site in sites {
        runs.push(plan_one(repo, site, options));
    }
    let plans = join_all(runs).await;
    Ok(Plan {
        revision: None,
        sites: plans,
    })
}

async fn plan_one(repo: &FleetRepo, site: &Located<Site>, options: &RunOptions) -> SitePlan {
    let ctx = SiteContext {
        repo,
        site,
        options,
    };
    let name = ctx.name().to_string();
    let span = tracing::info_span!("site", site = %name, op = "plan");
    let limit = deadline(&site.value, false);
    let mut plan = match tokio::time::timeout(limit, sites::plan(&ctx))
        .instrument(span)
        .await
    {
        Ok(plan) => plan,
        Err(_) => timed_out(&ctx, limit),
    };
    Redactor::new().site_plan(&mut plan);
    plan
}

/// Applies every selected site concurrently; returns the plans and the apply reports.
pub async fn apply(
    repo: &FleetRepo,
    options: &RunOptions,
    only: Option<&str>,
) -> Result<(Plan, Vec<ApplyReport>), ReconcileError> {
    let sites = select(repo, only)?;
    crate::sites::kubernetes::identity::learn(repo, options).await;
    let mut runs = Vec::new();
    for site in sites {
        runs.push(apply_one(repo, site, options));
    }
    let results = join_all(runs).await;
    let (plans, reports) = results.into_iter().unzip();
    Ok((
        Plan {
            revision: None,
            sites: plans,
        },
        reports,
    ))
}

async fn apply_one(
    repo: &FleetRepo,
    site: &Located<Site>,
    options: &RunOptions,
) -> (SitePlan, ApplyReport) {
    let ctx = SiteContext {
        repo,
        site,
        options,
    };
    let name = ctx.name().to_string();
    let span = tracing::info_span!("site", site = %name, op = "apply");
    let limit = deadline(&site.value, true);
    let (mut plan, mut report) = match tokio::time::timeout(limit, sites::apply(&ctx))
        .instrument(span)
        .await
    {
        Ok(result) => result,
        Err(_) => {
            let plan = timed_out(&ctx, limit);
            let report = ApplyReport {
                site: name,
                refused: plan.error.clone(),
                ..ApplyReport::default()
            };
            (plan, report)
        }
    };
    let redactor = Redactor::new();
    redactor.site_plan(&mut plan);
    redactor.report(&mut report);
    (plan, report)
}

fn timed_out(ctx: &SiteContext<'_>, limit: Duration) -> SitePlan {
    tracing::warn!(site = ctx.name(), ?limit, "site timed out");
    SitePlan::failed(
        ctx.name(),
        sites::kind_of(&ctx.site.value),
        ctx.site.value.spec.policy,
        format!(
            "site did not answer within {}s (timeoutSeconds × calls)",
            limit.as_secs()
        ),
    )
}
