//! What the service knows and shows: per-site outcome of the last reconcile, the revision
//! applied, findings, and the state of the fleet source. Served as `/status` (JSON) and
//! rendered as the status page.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::plan::{Counts, Finding, SiteKind, SitePlan};

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

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
    /// `ok`, `changed`, `failed`, `refused` or `report_only`.
    pub outcome: String,
    /// The error, when the site could not be reconciled.
    pub error: Option<String>,
    /// Changes in the last plan (drift, before apply).
    pub changes: Counts,
    /// Findings of the last plan.
    pub findings: Vec<Finding>,
    /// Runner jobs/pods per runner set seen in the last plan.
    pub runners: BTreeMap<String, usize>,
}

impl SiteStatus {
    /// Status from a site's plan and outcome.
    pub fn from_plan(
        plan: &SitePlan,
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
            last_reconcile: now(),
            duration_ms,
            outcome: outcome.to_string(),
            error: plan.error.clone(),
            changes: plan.counts(),
            findings: plan.findings.clone(),
            runners: runner_counts(plan),
        }
    }
}

/// Runner jobs (Slurm) and pods (Kubernetes) per runner set, from `<set>#<n>` targets.
fn runner_counts(plan: &SitePlan) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for change in &plan.changes {
        let is_runner = change.target.kind == "SlurmJob" || change.target.kind == "Pod";
        if is_runner && change.action != crate::plan::Action::Create {
            let set = change.target.name.split('#').next().unwrap_or_default();
            *counts.entry(set.to_string()).or_default() += 1;
        }
    }
    counts
}
