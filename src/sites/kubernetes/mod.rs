//! Kubernetes site driver: render the objects drover owns on a cluster, observe what is
//! there, plan the difference (pure), and apply it with server-side apply.
//!
//! Module map: [`render`] (fleet → objects, pure), [`kinds`] (the kinds drover writes),
//! [`client`] (connection, errors, retries),
//! [`observe`] (listing owned objects and site facts), [`normalize`] (projection onto the
//! desired field set, secret masking, YAML), [`plan`] (the pure diff), [`checks`] (site
//! findings) and [`apply`] (ordered, bounded, guarded writes). Behaviour for operators is
//! documented in `docs/kubernetes.md`.

pub mod apply;
pub mod checks;
pub mod client;
pub mod kinds;
pub mod normalize;
pub mod observe;
pub mod plan;
pub mod render;

use super::SiteContext;
use crate::fleet::model::SitePolicy;
use crate::plan::{ApplyReport, SiteKind, SitePlan};

/// Renders the site's desired objects as JSON values (for `drover render`). Pure.
///
/// Node labels and taints are not included: which Nodes they go to depends on the live
/// cluster; they appear in plans as `Node` changes.
pub fn render_values(ctx: &SiteContext<'_>) -> Result<Vec<serde_json::Value>, String> {
    render::render(ctx)
        .map(|r| r.objects)
        .map_err(|e| e.to_string())
}

fn policy(ctx: &SiteContext<'_>) -> SitePolicy {
    ctx.site.value.spec.policy
}

fn failed(ctx: &SiteContext<'_>, error: impl Into<String>) -> SitePlan {
    SitePlan::failed(ctx.name(), SiteKind::Kubernetes, policy(ctx), error)
}

/// Renders, connects, observes and plans; the client is returned for apply.
async fn plan_with_client(
    ctx: &SiteContext<'_>,
) -> Result<(plan::Planned, kube::Client), SitePlan> {
    let rendered = render::render(ctx)
        .map_err(|e| failed(ctx, format!("desired state cannot be rendered: {e}")))?;
    let client = client::connect(ctx)
        .await
        .map_err(|e| failed(ctx, e.to_string()))?;
    let timeout = client::site_timeout(ctx);
    let fleet = ctx.fleet_name().to_string();
    // The whole observation is bounded too: retries inside it must not outlive the site.
    let observed = tokio::time::timeout(
        timeout,
        observe::observe(
            &client,
            &rendered,
            &fleet,
            timeout,
            client::RetryPolicy::default(),
        ),
    )
    .await
    .map_err(|_| {
        failed(
            ctx,
            format!(
                "observing the site took longer than its timeout ({}s)",
                timeout.as_secs()
            ),
        )
    })?
    .map_err(|e| failed(ctx, format!("cannot observe the site: {e}")))?;
    let settings = plan::PlanSettings {
        site: ctx.name().to_string(),
        policy: policy(ctx),
        fleet,
        prune: ctx.prune(),
        desired_complete: !ctx.repo.incomplete,
    };
    Ok((plan::compute(&rendered, &observed, &settings), client))
}

/// Observes and plans the site. Never panics; a site that cannot be observed gets a
/// [`SitePlan::failed`] (plan unknown, never empty).
pub async fn plan(ctx: &SiteContext<'_>) -> SitePlan {
    match plan_with_client(ctx).await {
        Ok((planned, _)) => planned.plan,
        Err(failed) => failed,
    }
}

/// Plans and applies the site per `ctx.options.apply`; returns the plan and what happened.
pub async fn apply(ctx: &SiteContext<'_>) -> (SitePlan, ApplyReport) {
    let mut report = ApplyReport {
        site: ctx.name().into(),
        ..ApplyReport::default()
    };
    let (planned, client) = match plan_with_client(ctx).await {
        Ok(x) => x,
        Err(plan) => {
            report.refused = plan.error.clone();
            return (plan, report);
        }
    };
    if policy(ctx) == SitePolicy::ReportOnly {
        report.refused = Some("site policy is report-only".into());
        return (planned.plan, report);
    }
    let settings = apply::ApplySettings {
        site: ctx.name().to_string(),
        fleet: ctx.fleet_name().to_string(),
        options: ctx.options.apply.clone(),
        mass_prune_percent: ctx.mass_prune_percent(),
        timeout: client::site_timeout(ctx),
        retry: client::RetryPolicy::default(),
    };
    let report = apply::apply(&client, &planned, &settings).await;
    (planned.plan, report)
}
