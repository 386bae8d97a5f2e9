//! Kubernetes site driver (being built: render, observe, plan, apply).

use super::SiteContext;
use crate::fleet::model::SitePolicy;
use crate::plan::{ApplyReport, SiteKind, SitePlan};

/// Renders the site's desired objects as JSON values.
pub fn render_values(_ctx: &SiteContext<'_>) -> Result<Vec<serde_json::Value>, String> {
    Err("the Kubernetes driver is not built yet".into())
}

/// Observes and plans the site.
pub async fn plan(ctx: &SiteContext<'_>) -> SitePlan {
    SitePlan::failed(
        ctx.name(),
        SiteKind::Kubernetes,
        SitePolicy::Apply,
        "the Kubernetes driver is not built yet",
    )
}

/// Plans and applies the site.
pub async fn apply(ctx: &SiteContext<'_>) -> (SitePlan, ApplyReport) {
    let plan = plan(ctx).await;
    let report = ApplyReport {
        site: ctx.name().into(),
        refused: plan.error.clone(),
        ..ApplyReport::default()
    };
    (plan, report)
}
