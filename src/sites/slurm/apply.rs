//! Applying a Slurm site's plan: cancel, release, submit, with bounded concurrency.
//!
//! Submitting is two-phase so that concurrent or restarted drovers never leave duplicates:
//! 1. every new runner is submitted *held* into its slot;
//! 2. the queue is listed again; for each new job, if a live job with a lower id holds the
//!    same slot (another drover got there first), ours is cancelled, else it is released.
//!
//! Any drover that submits later sees our lower id and cancels its own; a held job left by
//! a crash between 1 and 2 is released (or cancelled as a duplicate) by the next plan.
//! Counts always come from the live queue, never from memory.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::stream::{self, StreamExt};

use super::SlurmDriver;
use super::jit;
use super::observe;
use super::plan::{CancelReason, Op, target};
use super::render::RunnerTemplate;
use super::site::{self, Prepared};
use super::types::JobSpec;
use crate::credentials::{self, Secret};
use crate::fleet::model::SitePolicy;
use crate::plan::{Action, ApplyReport, SitePlan, Target};
use crate::runners::JitRequest;
use crate::runners::Removal;
use crate::runners::RunnerId;
use crate::sites::{ChangeError, Settle, SiteContext};

/// Driver calls in flight at once during apply.
pub(crate) const CONCURRENCY: usize = 8;

/// Plans the site, then applies the plan.
pub(crate) async fn apply(ctx: &SiteContext<'_>) -> (SitePlan, ApplyReport) {
    let mut report = ApplyReport {
        site: ctx.name().into(),
        ..ApplyReport::default()
    };
    let prepared = match site::prepare(ctx).await {
        Ok(p) => p,
        Err(plan) => {
            report.refused = Some(
                plan.error
                    .clone()
                    .unwrap_or_else(|| "the site could not be planned".into()),
            );
            return (plan, report);
        }
    };
    if let Some(why) = refusal(ctx, &prepared) {
        report.refused = Some(why);
        return (prepared.plan, report);
    }
    if ctx.options.apply.dry_run {
        // Slurm has no server-side dry run: report what would be done, change nothing.
        report.applied = prepared
            .plan
            .changes
            .iter()
            .filter(|c| c.action != Action::Unchanged)
            .map(|c| (c.action, c.target.clone()))
            .collect();
        return (prepared.plan, report);
    }
    execute(ctx, &prepared, &mut report).await;
    (prepared.plan, report)
}

/// Why the whole site is refused: report-only policy, or a mass prune.
fn refusal(ctx: &SiteContext<'_>, p: &Prepared) -> Option<String> {
    let site = ctx.name();
    if ctx.site.value.spec.policy == SitePolicy::ReportOnly {
        return Some(format!(
            "site `{site}` has policy report-only; nothing was applied"
        ));
    }
    let pruned = p
        .ops
        .iter()
        .filter(|op| matches!(op, Op::Cancel(_, CancelReason::Undeclared)))
        .count();
    let owned = p.runners.iter().filter(|r| r.state.is_live()).count();
    let percent = usize::from(ctx.mass_prune_percent());
    if pruned > 0 && pruned * 100 > percent * owned && !ctx.options.apply.allow_mass_prune {
        return Some(format!(
            "site `{site}`: the prune would cancel {pruned} of {owned} runner jobs, more than {percent}%; \
             nothing was applied (pass --allow-mass-prune to go ahead)"
        ));
    }
    None
}

async fn execute(ctx: &SiteContext<'_>, p: &Prepared, report: &mut ApplyReport) {
    let driver = p.conn.driver.as_ref();
    // 1. Cancels and releases of existing jobs.
    let existing: Vec<(Action, Target, u64)> = p
        .ops
        .iter()
        .filter_map(|op| {
            let c = op.change();
            match op {
                Op::Cancel(r, _) | Op::Release(r) => Some((c.action, c.target, r.id)),
                _ => None,
            }
        })
        .collect();
    let results: Vec<_> = stream::iter(existing)
        .map(|(action, target, id)| async move {
            let result = if action == Action::Delete {
                driver.cancel(id).await
            } else {
                driver.release(id).await
            };
            let result = result.map_err(|e| ChangeError::slurm(format!("job {id}"), e));
            (action, target, result)
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    record(report, results);
    retire(ctx, p, driver, report).await;
    // 2. New runners, held.
    let submits: Vec<(&str, u32)> = p
        .ops
        .iter()
        .filter_map(|op| match op {
            Op::Submit { set, slot } => Some((set.as_str(), *slot)),
            _ => None,
        })
        .collect();
    if submits.is_empty() {
        return;
    }
    let mut secrets = SecretCache::default();
    let mut specs = Vec::new();
    for (set, slot) in submits {
        let target = target(set, slot);
        match job_spec(ctx, p.templates.get(set), set, slot, &mut secrets) {
            Ok(spec) => specs.push((target, slot, spec)),
            Err(e) => report.failed.push((Action::Create, target, e.to_string())),
        }
    }
    let submitted: Vec<(Target, u32, Result<u64, ChangeError>)> = stream::iter(specs)
        .map(|(target, slot, spec)| async move {
            let result = driver
                .submit_held(&spec)
                .await
                .map_err(|e| ChangeError::slurm("submit", e));
            (target, slot, result)
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut held = Vec::new();
    for (target, slot, result) in submitted {
        match result {
            Ok(id) => held.push((target, slot, id)),
            Err(e) => report.failed.push((Action::Create, target, e.to_string())),
        }
    }
    if !held.is_empty() {
        settle(ctx, p, driver, held, report).await;
    }
}

/// Scale-down of idle running runners: deregister each from GitHub first (GitHub refuses
/// while the runner is busy), and cancel its job only when the registration is gone.
async fn retire(
    ctx: &SiteContext<'_>,
    p: &Prepared,
    driver: &dyn SlurmDriver,
    report: &mut ApplyReport,
) {
    let retiring: Vec<&observe::Runner> = p
        .ops
        .iter()
        .filter_map(|op| match op {
            Op::Retire(r) => Some(r),
            _ => None,
        })
        .collect();
    if retiring.is_empty() {
        return;
    }
    let Some(registry) = ctx.options.registry.as_ref() else {
        return;
    };
    let mut calls = Vec::new();
    for r in retiring {
        calls.push(retire_one(registry, driver, r));
    }
    let results: Vec<_> = stream::iter(calls)
        .buffer_unordered(CONCURRENCY)
        .filter_map(|x| async move { x })
        .collect()
        .await;
    record(report, results);
}

async fn retire_one(
    registry: &crate::sites::Registry,
    driver: &dyn SlurmDriver,
    r: &observe::Runner,
) -> Option<(Action, Target, Result<(), ChangeError>)> {
    let target = target(&r.identity.set, r.identity.slot);
    let name = r.runner_name();
    match registry.0.deregister(&r.identity.set, &name).await {
        Ok(Removal::Busy) => {
            tracing::info!(job = r.id, runner = %name, "runner took a job; kept");
            None
        }
        Ok(Removal::Removed | Removal::NotRegistered) => {
            let result = driver
                .cancel(r.id)
                .await
                .map_err(|e| ChangeError::slurm(format!("job {}", r.id), e));
            Some((Action::Delete, target, result))
        }
        Err(e) => Some((
            Action::Delete,
            target,
            Err(ChangeError::NotDeregistered {
                name,
                source: Arc::new(e),
            }),
        )),
    }
}

/// Phase 2: release each new held job unless a live job with a lower id has its slot.
async fn settle(
    ctx: &SiteContext<'_>,
    p: &Prepared,
    driver: &dyn SlurmDriver,
    held: Vec<(Target, u32, u64)>,
    report: &mut ApplyReport,
) {
    let jobs = match driver.jobs().await {
        Ok(jobs) => jobs,
        Err(e) => {
            let source = Arc::new(e);
            for (target, _, job) in held {
                let error = Settle::QueueUnread {
                    job,
                    source: source.clone(),
                };
                report
                    .failed
                    .push((Action::Create, target, error.to_string()));
            }
            return;
        }
    };
    let runners =
        observe::owned_runners(&jobs, ctx.fleet_name(), ctx.name(), p.conn.user.as_deref());
    let winners = slot_winners(&runners);
    let ours: Vec<u64> = held.iter().map(|(_, _, id)| *id).collect();
    let steps: Vec<(Target, u64, Option<Winner>)> = held
        .into_iter()
        .map(|(target, slot, id)| {
            let set = RunnerId::of_target(&target)
                .map(|id| id.set)
                .unwrap_or_default();
            let winner = winners.get(&(set.as_str(), slot)).copied();
            let lost_to = winner.filter(|w| w.id < id).map(|w| Winner {
                // A held winner that is not ours was left by an apply that died between
                // submit and release, and landed after our plan read the queue: we
                // release it in our job's place (a live drover's second release is a
                // no-op).
                adopt: w.held && !ours.contains(&w.id),
                ..w
            });
            (target, id, lost_to)
        })
        .collect();
    let results: Vec<_> = stream::iter(steps)
        .map(|(target, id, lost_to)| settle_one(driver, target, id, lost_to))
        .buffer_unordered(CONCURRENCY)
        .filter_map(|x| async move { x })
        .collect()
        .await;
    record(report, results);
}

/// The live job that keeps a slot: the one with the lowest id.
#[derive(Debug, Clone, Copy)]
struct Winner {
    id: u64,
    held: bool,
    /// Release it in our job's place.
    adopt: bool,
}

fn slot_winners(runners: &[observe::Runner]) -> BTreeMap<(&str, u32), Winner> {
    let mut first: BTreeMap<(&str, u32), Winner> = BTreeMap::new();
    for r in runners.iter().filter(|r| r.state.is_live()) {
        let key = (r.identity.set.as_str(), r.identity.slot);
        let candidate = Winner {
            id: r.id,
            held: r.held,
            adopt: false,
        };
        first
            .entry(key)
            .and_modify(|w| {
                if r.id < w.id {
                    *w = candidate;
                }
            })
            .or_insert(candidate);
    }
    first
}

/// Releases our held job `id`, or cancels it when `lost_to` keeps its slot (releasing
/// that one if it is adopted). `None` when there is nothing to report.
async fn settle_one(
    driver: &dyn SlurmDriver,
    target: Target,
    id: u64,
    lost_to: Option<Winner>,
) -> Option<(Action, Target, Result<(), ChangeError>)> {
    let Some(winner) = lost_to else {
        let r = driver.release(id).await.map_err(|e| {
            ChangeError::Settle(Settle::Release {
                job: id,
                source: Arc::new(e),
            })
        });
        return Some((Action::Create, target, r));
    };
    tracing::info!(job = id, winner = winner.id, slot = %target.name, "slot taken by another submit; cancelling ours");
    if let Err(e) = driver.cancel(id).await {
        return Some((
            Action::Create,
            target,
            Err(ChangeError::Settle(Settle::Duplicate {
                job: id,
                winner: winner.id,
                source: Arc::new(e),
            })),
        ));
    }
    if !winner.adopt {
        return None;
    }
    let r = driver.release(winner.id).await.map_err(|e| {
        ChangeError::Settle(Settle::Adopted {
            job: winner.id,
            source: Arc::new(e),
        })
    });
    Some((Action::Create, target, r))
}

fn record(report: &mut ApplyReport, results: Vec<(Action, Target, Result<(), ChangeError>)>) {
    for (action, target, result) in results {
        match result {
            Ok(()) => report.applied.push((action, target)),
            Err(e) => report.failed.push((action, target, e.to_string())),
        }
    }
}

/// SecretRef values resolved once per apply.
#[derive(Default)]
struct SecretCache(BTreeMap<String, Result<Secret, ChangeError>>);

impl SecretCache {
    fn get(&mut self, ctx: &SiteContext<'_>, name: &str) -> Result<Secret, ChangeError> {
        self.0
            .entry(name.to_owned())
            .or_insert_with(|| match ctx.repo.secrets.get(name) {
                None => Err(ChangeError::NoSecretRef(name.to_owned())),
                Some(s) => credentials::resolve(name, &s.value.spec)
                    .map_err(|e| ChangeError::Secret(Arc::new(e))),
            })
            .clone()
    }
}

/// The full job spec of one new runner: template, secrets, JIT grant.
fn job_spec(
    ctx: &SiteContext<'_>,
    template: Option<&RunnerTemplate>,
    set: &str,
    slot: u32,
    secrets: &mut SecretCache,
) -> Result<JobSpec, ChangeError> {
    let t = template.ok_or_else(|| ChangeError::NotRendered(set.to_owned()))?;
    let mut spec = t.job(slot);
    for (var, secret) in &t.secret_env {
        let value = secrets.get(ctx, secret)?;
        spec.environment
            .insert(var.clone(), value.expose().to_owned());
    }
    if t.needs_jit {
        let registry = ctx
            .options
            .registry
            .as_ref()
            .ok_or(ChangeError::NoJitEndpoint)?;
        let grant = registry
            .0
            .slurm_grant(&JitRequest {
                site: ctx.name().to_owned(),
                fleet: ctx.fleet_name().to_owned(),
                runner_set: set.to_owned(),
                slot,
            })
            .map_err(|e| ChangeError::Grant(Arc::new(e)))?;
        spec.environment.insert(jit::URL_VAR.into(), grant.url);
        spec.environment
            .insert(jit::TOKEN_VAR.into(), grant.token.expose().to_owned());
    }
    Ok(spec)
}
