//! One Slurm site end to end: connect, render, observe, plan ([`prepare`]); the entry
//! points in the module root call this and [`super::apply`].

use std::collections::BTreeMap;

use super::connect::{self, Connection};
use super::observe::{self, PoolExpectation, Runner};
use super::plan::{DesiredSet, GithubView, Op, plan_runners};
use super::render::{self, RunnerTemplate};
use crate::plan::{Action, Finding, FindingSeverity, SiteKind, SitePlan};
use crate::sites::SiteContext;

/// Everything apply needs after planning.
pub(crate) struct Prepared {
    /// The driver.
    pub conn: Connection,
    /// Rendered runner sets by name.
    pub templates: BTreeMap<String, RunnerTemplate>,
    /// drover's runner jobs on the site (this fleet's) as observed.
    pub runners: Vec<Runner>,
    /// The steps.
    pub ops: Vec<Op>,
    /// The plan as shown.
    pub plan: SitePlan,
}

/// A failed plan for the site.
pub(crate) fn failed(ctx: &SiteContext<'_>, error: impl Into<String>) -> SitePlan {
    SitePlan::failed(
        ctx.name(),
        SiteKind::Slurm,
        ctx.site.value.spec.policy,
        error,
    )
}

/// Connects, renders, observes (within the site timeout) and plans.
pub(crate) async fn prepare(ctx: &SiteContext<'_>) -> Result<Prepared, SitePlan> {
    let site = ctx.name();
    let templates = render::render(ctx).map_err(|e| failed(ctx, e.to_string()))?;
    let conn = connect::connect(ctx).map_err(|e| failed(ctx, e.to_string()))?;
    let timeout = connect::timeout(ctx);
    let observed = observe::observe(conn.driver.as_ref(), timeout)
        .await
        .map_err(|e| {
            let mut plan = failed(
                ctx,
                format!("Slurm site `{site}` could not be observed: {e}"),
            );
            plan.api = conn.driver.api();
            plan
        })?;
    let runners = observe::owned_runners(
        &observed.jobs,
        ctx.fleet_name(),
        ctx.name(),
        conn.user.as_deref(),
    );
    let desired: Vec<DesiredSet> = templates
        .iter()
        .map(|t| DesiredSet {
            set: t.set.clone(),
            count: ctx.desired_runners(&t.set),
            jit: t.needs_jit,
        })
        .collect();
    let runner_plan = plan_runners(&desired, &runners, ctx.prune(), &github_view(ctx, &runners));
    let mut plan = SitePlan::new(site, SiteKind::Slurm, ctx.site.value.spec.policy);
    plan.api = conn.driver.api();
    plan.live_runners = runners
        .iter()
        .filter(|r| r.state.is_live())
        .map(Runner::runner_name)
        .collect();
    let templates: BTreeMap<String, RunnerTemplate> =
        templates.into_iter().map(|t| (t.set.clone(), t)).collect();
    let mut shown_spec = std::collections::BTreeSet::new();
    for op in &runner_plan.ops {
        let mut change = op.change();
        if let Op::Submit { set, .. } = op
            && shown_spec.insert(set.clone())
            && let Some(t) = templates.get(set)
        {
            change.diff = Some(crate::plan::diff::unified(
                "",
                &yaml(&t.to_value(ctx.desired_runners(set))),
            ));
        }
        plan.changes.push(change);
    }
    plan.findings = observe::site_findings(
        &pool_expectations(ctx),
        &observed.partitions,
        &observed.nodes,
    );
    plan.findings.extend(runner_plan.findings);
    if ctx.options.registry.is_none() {
        plan.findings.extend(jit_findings(&templates, &plan));
    }
    Ok(Prepared {
        conn,
        templates,
        runners,
        ops: runner_plan.ops,
        plan,
    })
}

fn yaml(v: &serde_json::Value) -> String {
    serde_saphyr::to_string(v).unwrap_or_else(|e| format!("# not representable as YAML: {e}\n"))
}

/// GitHub's view of the runner jobs, from the autoscaler's registry (unknown without).
fn github_view(ctx: &SiteContext<'_>, runners: &[Runner]) -> GithubView {
    let Some(registry) = &ctx.options.registry else {
        return GithubView::default();
    };
    GithubView {
        known: true,
        registered: runners
            .iter()
            .filter_map(|r| Some((r.id, registry.0.registered(&r.runner_name())?)))
            .collect(),
        now: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        start_deadline: ctx.runner_start_deadline().as_secs(),
    }
}

/// Runner sets that would be submitted but need a JIT endpoint nobody provides.
fn jit_findings(templates: &BTreeMap<String, RunnerTemplate>, plan: &SitePlan) -> Vec<Finding> {
    templates
        .values()
        .filter(|t| t.needs_jit)
        .filter(|t| {
            let prefix = format!("{}#", t.set);
            plan.changes
                .iter()
                .any(|c| c.action == Action::Create && c.target.name.starts_with(&prefix))
        })
        .map(|t| {
            Finding::new(
                FindingSeverity::Error,
                "jit-endpoint-missing",
                format!("RunnerSet {}", t.set),
                "the default runner command fetches a JIT config from drover's endpoint, \
                 but this drover has none (`drover serve` provides it); its runners are not submitted",
            )
        })
        .collect()
}

/// What each NodePool of the site expects of its partition.
pub(crate) fn pool_expectations(ctx: &SiteContext<'_>) -> Vec<PoolExpectation> {
    let default = ctx
        .site
        .value
        .spec
        .slurm
        .as_ref()
        .and_then(|s| s.default_partition.clone());
    ctx.repo
        .pools
        .values()
        .filter(|p| p.value.spec.site == ctx.name())
        .filter_map(|p| {
            let spec = &p.value.spec;
            let slurm = spec.slurm.clone().unwrap_or_default();
            let partition = slurm.partition.or_else(|| default.clone())?;
            let gres = slurm.gres.or_else(|| {
                spec.gpu.as_ref().map(|g| match &g.model {
                    Some(m) => format!("gpu:{m}:{}", g.per_node),
                    None => format!("gpu:{}", g.per_node),
                })
            });
            Some(PoolExpectation {
                pool: p.value.metadata.name.clone(),
                partition,
                gres,
                node_count: spec.node_count,
            })
        })
        .collect()
}
