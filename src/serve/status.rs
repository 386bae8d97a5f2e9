//! What the service knows and shows: per-site outcome of the last reconcile, the revision
//! applied, findings, and the state of the fleet source. Served as `/status` (JSON) and
//! rendered as the status page.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::plan::{
    Action, ApplyReport, Counts, Finding, LiveState, RunnerReason, SiteKind, SitePlan,
};
use crate::runners::RunnerId;

/// The whole service status.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    /// Whether the first full reconcile has completed.
    pub ready: bool,
    /// Whether this replica holds the lease and applies (a follower only plans).
    pub leader: bool,
    /// The fleet source.
    pub source: SourceStatus,
    /// Per-site state, by name.
    pub sites: BTreeMap<String, SiteStatus>,
    /// Per-site result of the last drift check, by name.
    pub drift: BTreeMap<String, super::drift::DriftStatus>,
    /// The drift issues' repository and last sync, when drift issues are configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift_issues: Option<super::drift::IssuesStatus>,
    /// Runner autoscaling, when it is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<AutoscaleStatus>,
}

/// Runner autoscaling: per-set state and the jobs nobody can serve.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AutoscaleStatus {
    /// Why autoscaling cannot work (e.g. GitHub credentials missing), if so.
    pub error: Option<String>,
    /// Per scaled runner set.
    pub sets: BTreeMap<String, crate::autoscale::controller::SetRow>,
    /// Queued jobs no runner set can serve.
    pub unserved: Vec<crate::autoscale::controller::UnservedJob>,
}

/// The fleet source and the revisions it produced.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SourceStatus {
    /// Where the fleet comes from (URL without credentials, or a directory).
    pub location: String,
    /// The last revision fetched.
    pub fetched_revision: Option<String>,
    /// The last revision that passed validation: what is being applied.
    pub good_revision: Option<String>,
    /// When the source was last fetched successfully.
    pub last_fetch: Option<u64>,
    /// The last fetch error, until a fetch succeeds.
    pub fetch_error: Option<String>,
    /// Validation errors of the fetched revision, when it was refused.
    pub validation_errors: Vec<String>,
}

/// One site's state.
#[derive(Debug, Clone, Serialize)]
pub struct SiteStatus {
    /// Kubernetes or Slurm.
    pub kind: SiteKind,
    /// `apply` or `report-only`.
    pub policy: String,
    /// Revision last applied (or planned, for report-only sites).
    pub revision: Option<String>,
    /// When the last reconcile finished.
    pub last_reconcile: u64,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
    /// `ok`, `changed`, `failed`, `refused`, `report_only`, or `drifted` (a drift check
    /// found objects to repair and, with policy `report`, left them).
    pub outcome: String,
    /// The error, when the site could not be reconciled.
    pub error: Option<String>,
    /// The API drover spoke to the site (`slurmrestd v0.0.42`), when it chose one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api: Option<String>,
    /// Changes in the last plan (drift, before apply); `None` (`null`) when the site could
    /// not be observed: unknown, never 0.
    pub changes: Option<Counts>,
    /// Findings of the last plan.
    pub findings: Vec<Finding>,
    /// Runner jobs/pods per runner set seen in the last plan.
    pub runners: BTreeMap<String, usize>,
    /// Runners per runner set and state (`pending`, `running`, ...; see
    /// [`runner_states`]), after the last apply.
    pub runner_states: BTreeMap<String, BTreeMap<String, usize>>,
}

impl SiteStatus {
    /// Status from a site's plan and outcome.
    pub fn from_plan(
        plan: &SitePlan,
        report: Option<&ApplyReport>,
        revision: Option<String>,
        outcome: &str,
        duration_ms: u64,
    ) -> Self {
        Self {
            kind: plan.kind,
            policy: serde_json::to_value(plan.policy)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            revision,
            last_reconcile: super::clock::now(),
            duration_ms,
            outcome: outcome.to_string(),
            error: plan.error.clone(),
            api: plan.api.clone(),
            changes: plan.error.is_none().then(|| plan.counts()),
            findings: plan.findings.clone(),
            runners: runner_counts(plan),
            runner_states: runner_states(plan, report),
        }
    }
}

/// Runner jobs (Slurm) and pods (Kubernetes) per runner set, from `<set>#<n>` targets.
fn runner_counts(plan: &SitePlan) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for change in &plan.changes {
        if change.action == crate::plan::Action::Create {
            continue;
        }
        if let Some(id) = RunnerId::of_target(&change.target) {
            *counts.entry(id.set).or_default() += 1;
        }
    }
    counts
}

/// Runners per runner set and state, from a site's plan (runner targets are
/// `<set>#<slot>` of kind `SlurmJob` or `Pod`) and, when it was applied, the report:
///
/// - a kept, released or cancelled job has the state its plan line names (`pending`,
///   `running`, `completing`; a released job is `held`); a cancelled job is not counted
///   once the cancel was applied;
/// - a runner to create is `missing`, or `pending` once its submission was applied.
pub(crate) fn runner_states(
    plan: &SitePlan,
    report: Option<&ApplyReport>,
) -> BTreeMap<String, BTreeMap<String, usize>> {
    let applied = |action: Action, target: &crate::plan::Target| {
        report.is_some_and(|r| r.applied.iter().any(|(a, t)| *a == action && t == target))
    };
    let mut out: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for change in &plan.changes {
        let Some(RunnerId { set, .. }) = RunnerId::of_target(&change.target) else {
            continue;
        };
        let runner = change.runner;
        let state = match change.action {
            Action::Create if applied(Action::Create, &change.target) => "pending",
            Action::Create => "missing",
            Action::Delete if applied(Action::Delete, &change.target) => continue,
            _ if runner.is_some_and(|r| r.reason == RunnerReason::ReleaseHeld) => "held",
            _ => runner
                .and_then(|r| r.state)
                .map_or("unknown", LiveState::as_str),
        };
        *out.entry(set.to_string())
            .or_default()
            .entry(state.to_string())
            .or_default() += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::model::SitePolicy;
    use crate::plan::{Change, RunnerChange, Target};
    use LiveState::{Pending, Running};
    use RunnerReason::{Kept, ReleaseHeld, ScaleDown, ScaleUp};

    fn change(
        action: Action,
        name: &str,
        reason: RunnerReason,
        state: Option<LiveState>,
    ) -> Change {
        Change {
            action,
            target: Target {
                kind: "SlurmJob".into(),
                namespace: None,
                name: name.into(),
            },
            diff: None,
            reason: None,
            runner: Some(RunnerChange { reason, state }),
        }
    }

    #[test]
    fn runner_states_follow_plan_lines_and_the_apply_report() {
        let mut plan = SitePlan::new("hpc", SiteKind::Slurm, SitePolicy::Apply);
        plan.changes = vec![
            change(Action::Unchanged, "a#1", Kept, Some(Running)),
            change(Action::Unchanged, "a#2", Kept, Some(Pending)),
            change(Action::Update, "a#3", ReleaseHeld, Some(Pending)),
            change(Action::Delete, "a#4", ScaleDown, Some(Pending)),
            change(Action::Create, "b#1", ScaleUp, None),
            change(Action::Create, "b#2", ScaleUp, None),
        ];
        let planned = runner_states(&plan, None);
        assert_eq!(planned["a"]["running"], 1);
        assert_eq!(planned["a"]["pending"], 2);
        assert_eq!(planned["a"]["held"], 1);
        assert_eq!(planned["b"]["missing"], 2);
        let report = ApplyReport {
            applied: vec![
                (Action::Create, plan.changes[4].target.clone()),
                (Action::Delete, plan.changes[3].target.clone()),
            ],
            ..ApplyReport::default()
        };
        let applied = runner_states(&plan, Some(&report));
        assert_eq!(applied["a"]["pending"], 1);
        assert_eq!(applied["b"]["pending"], 1);
        assert_eq!(applied["b"]["missing"], 1);
    }
}
