//! Kubernetes site driver: render the objects drover owns on a cluster, observe what is
//! there, plan the difference (pure), and apply it with server-side apply.
//!
//! Module map: [`render`] (fleet → objects, pure), [`kinds`] (the kinds drover writes),
//! [`client`] (connection, errors, retries),
//! [`observe`] (listing owned objects and site facts), [`normalize`] (projection onto the
//! desired field set, secret masking, YAML), [`plan`] (the pure diff), [`checks`] (site
//! findings) and [`apply`] (ordered, bounded, guarded writes); runner Pods: [`runners`]
//! (the pure runner-pod plan), [`runner_pods`] (listing them, JIT configs, creates and
//! deletes) and [`site_cache`] (`drover serve`'s per-site client and runner Pod watch).
//! Behaviour for operators is
//! documented in `docs/kubernetes.md`.

pub(crate) mod apply;
pub(crate) mod checks;
pub mod client;
pub mod identity;
pub mod kinds;
pub(crate) mod normalize;
pub mod observe;
pub mod plan;
pub mod render;
pub(crate) mod runner_pods;
pub(crate) mod runners;
pub(crate) mod site_cache;

use super::SiteContext;
use crate::fleet::model::{Engine, SitePolicy};
use crate::plan::{ApplyReport, SiteKind, SitePlan};

/// Renders the site's desired objects as JSON values (for `drover render`). Pure.
///
/// Node labels and taints are not included: which Nodes they go to depends on the live
/// cluster; they appear in plans as `Node` changes.
pub fn render_values(ctx: &SiteContext<'_>) -> Result<Vec<serde_json::Value>, render::RenderError> {
    render::render(ctx).map(|r| r.objects)
}

fn policy(ctx: &SiteContext<'_>) -> SitePolicy {
    ctx.site.value.spec.policy
}

fn failed(ctx: &SiteContext<'_>, error: impl Into<String>) -> SitePlan {
    SitePlan::failed(ctx.name(), SiteKind::Kubernetes, policy(ctx), error)
}

/// What planning a site produced: the object plan (absent in a runners-only run), the
/// runner-pod plan, and what apply needs.
struct Prepared {
    /// The shown plan: object changes, runner Pod changes, findings.
    plan: SitePlan,
    /// The object writes (none in a runners-only run).
    planned: Option<plan::Planned>,
    /// The runner Pod steps.
    runners: runners::RunnerPlan,
    /// Names of the runner Pods observed (new names avoid them).
    pod_names: std::collections::BTreeSet<String>,
    rendered: render::Rendered,
    client: kube::Client,
}

/// The runner start deadline in seconds (the Fleet's, unless the run overrides it).
fn start_timeout_secs(ctx: &SiteContext<'_>) -> u64 {
    ctx.runner_start_deadline().as_secs()
}

/// The declared `engine: drover` runner sets of the site, with their desired counts.
fn desired_sets(ctx: &SiteContext<'_>, rendered: &render::Rendered) -> Vec<runners::DesiredSet> {
    render::runner_sets(rendered)
        .into_iter()
        .filter_map(|name| {
            let set = &ctx.repo.runner_sets.get(&name)?.value;
            (set.spec.engine == Engine::Drover).then(|| runners::DesiredSet {
                count: ctx.desired_runners(&name),
                max: set.spec.max,
                set: name,
            })
        })
        .collect()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Renders, connects, observes and plans; the client is returned for apply.
async fn prepare(ctx: &SiteContext<'_>) -> Result<Prepared, SitePlan> {
    let rendered = render::render(ctx)
        .map_err(|e| failed(ctx, format!("desired state cannot be rendered: {e}")))?;
    let cache = ctx.options.site_cache.as_deref();
    let client = match cache {
        Some(cache) => cache.client(ctx).await,
        None => client::connect(ctx).await,
    }
    .map_err(|e| failed(ctx, e.to_string()))?;
    let timeout = client::site_timeout(ctx);
    let retry = client::RetryPolicy::default();
    let identity = claim_cluster(ctx, &client, timeout, retry).await?;
    let fleet = ctx.fleet_name().to_string();
    let runners_only = ctx.options.runners_only;
    // The whole observation is bounded too: retries inside it must not outlive the site.
    let observation = async {
        let objects = async {
            if runners_only {
                Ok(None)
            } else {
                observe::observe(&client, &rendered, &fleet, timeout, retry)
                    .await
                    .map(Some)
            }
        };
        let pods = async {
            // Runners-only rounds read the site's watch once it has listed the Pods.
            if let Some(pods) = cache
                .filter(|_| runners_only)
                .and_then(|c| c.pods(ctx.name()))
            {
                return Ok(pods);
            }
            runner_pods::observe(&client, &fleet, timeout, retry).await
        };
        futures::future::try_join(objects, pods).await
    };
    let (observed, pods) = tokio::time::timeout(timeout, observation)
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
        fleet: fleet.clone(),
        prune: ctx.prune(),
        desired_complete: !ctx.repo.incomplete,
    };
    let planned = observed.map(|o| plan::compute(&rendered, &o, &settings));

    let desired = desired_sets(ctx, &rendered);
    let registry = ctx.options.registry.clone();
    let lookup = registry
        .as_ref()
        .map(|r| move |name: &str| r.0.registered(name));
    let registered: runners::Registrations<'_> = lookup
        .as_ref()
        .map(|f| f as &dyn Fn(&str) -> Option<crate::runners::RegisteredRunner>);
    let inputs = runners::RunnerInputs {
        site: ctx.name(),
        namespace: &rendered.namespace,
        desired: &desired,
        prune: settings.prune && settings.desired_complete,
        start_timeout_secs: start_timeout_secs(ctx),
        now: now(),
        registered,
    };
    let runner_plan = runners::plan_runners(&inputs, &pods);

    let mut plan = match &planned {
        Some(p) => p.plan.clone(),
        None => SitePlan::new(ctx.name(), SiteKind::Kubernetes, policy(ctx)),
    };
    plan.findings.extend(identity);
    plan.changes.extend(runner_plan.changes());
    plan.findings.extend(runner_plan.findings.iter().cloned());
    plan.live_runners = pods
        .iter()
        .filter(|p| matches!(p.phase, runners::Phase::Pending | runners::Phase::Running))
        .map(|p| p.name.clone())
        .collect();
    Ok(Prepared {
        plan,
        planned,
        runners: runner_plan,
        pod_names: pods.into_iter().map(|p| p.name).collect(),
        rendered,
        client,
    })
}

/// Reads (or, in a runners-only round, recalls) the identity of the cluster the site
/// reaches, records it, and refuses the site when another site of the fleet reaches the
/// same cluster and this one does not opt in (`sharedCluster`). An identity that cannot be
/// read is a warning finding: the check could not run, and nothing is refused for it.
async fn claim_cluster(
    ctx: &SiteContext<'_>,
    client: &kube::Client,
    timeout: std::time::Duration,
    retry: client::RetryPolicy,
) -> Result<Option<crate::plan::Finding>, SitePlan> {
    let claims = &ctx.options.cluster_claims;
    if ctx.options.runners_only {
        // The autoscaler's fast path makes no extra request: it checks what the site's
        // last full round recorded, if anything.
        if let Some(id) = claims.known(ctx.name()) {
            claims
                .check(ctx.repo, ctx.name(), &id)
                .map_err(|refused| failed(ctx, refused.to_string()))?;
        }
        return Ok(None);
    }
    let (id, finding) = match claims.fresh(ctx.name()) {
        Some(id) => (Some(id), None),
        None => {
            let read = identity::read(client, timeout, retry).await;
            let (id, finding) = match read {
                Ok(Some(id)) => (Some(id), None),
                Ok(None) => (
                    None,
                    Some(unknown_identity(
                        "the cluster has no kube-system Namespace UID",
                    )),
                ),
                Err(e) => (None, Some(unknown_identity(&e.to_string()))),
            };
            claims.record(ctx.name(), id.clone());
            (id, finding)
        }
    };
    if let Some(id) = &id {
        claims
            .check(ctx.repo, ctx.name(), id)
            .map_err(|refused| failed(ctx, refused.to_string()))?;
    }
    Ok(finding)
}

fn unknown_identity(why: &str) -> crate::plan::Finding {
    crate::plan::Finding::new(
        crate::plan::FindingSeverity::Warning,
        "cluster-identity-unknown",
        identity::IDENTITY_NAMESPACE,
        format!(
            "the cluster's identity could not be read, so drover cannot tell whether another \
             site of the fleet reaches the same cluster: {why}"
        ),
    )
}

/// Observes and plans the site. Never panics; a site that cannot be observed gets a
/// [`SitePlan::failed`] (plan unknown, never empty). With `runners_only`, only runner Pods
/// are observed and planned.
pub async fn plan(ctx: &SiteContext<'_>) -> SitePlan {
    match prepare(ctx).await {
        Ok(prepared) => prepared.plan,
        Err(failed) => failed,
    }
}

/// Plans and applies the site per `ctx.options.apply`; returns the plan and what happened.
/// Objects are applied first, then runner Pods (which need the namespace, ServiceAccount
/// and PriorityClass). With `runners_only`, only runner Pods.
pub async fn apply(ctx: &SiteContext<'_>) -> (SitePlan, ApplyReport) {
    let mut report = ApplyReport {
        site: ctx.name().into(),
        ..ApplyReport::default()
    };
    let prepared = match prepare(ctx).await {
        Ok(x) => x,
        Err(plan) => {
            report.refused = plan.error.clone();
            return (plan, report);
        }
    };
    if policy(ctx) == SitePolicy::ReportOnly {
        report.refused = Some("site policy is report-only".into());
        return (prepared.plan, report);
    }
    let timeout = client::site_timeout(ctx);
    let retry = client::RetryPolicy::default();
    if let Some(planned) = &prepared.planned {
        let settings = apply::ApplySettings {
            site: ctx.name().to_string(),
            fleet: ctx.fleet_name().to_string(),
            options: ctx.options.apply.clone(),
            mass_prune_percent: ctx.mass_prune_percent(),
            timeout,
            retry,
        };
        report = apply::apply(&prepared.client, planned, &settings).await;
        if report.refused.is_some() {
            return (prepared.plan, report);
        }
    }
    let new_namespace = prepared.planned.as_ref().is_some_and(|p| {
        p.ops.iter().any(|o| {
            o.action == crate::plan::Action::Create
                && o.kind.kind == "Namespace"
                && o.target.name == prepared.rendered.namespace
        })
    });
    let settings = runner_pods::RunnerApply {
        rendered: &prepared.rendered,
        registry: ctx.options.registry.as_ref(),
        dry_run: ctx.options.apply.dry_run,
        new_namespace,
        fleet: ctx.fleet_name(),
        used_names: prepared.pod_names.clone(),
        timeout,
        retry,
        cache: ctx.options.site_cache.as_deref().map(|c| (c, ctx.name())),
    };
    runner_pods::apply(&prepared.client, &prepared.runners, &settings, &mut report).await;
    (prepared.plan, report)
}
