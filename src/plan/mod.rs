//! Plans: what would change on each site, and what is wrong there.
//!
//! A plan is computed by each site driver as a pure function of the desired objects
//! (rendered from the fleet) and the observed ones; this module owns the shared types,
//! the unified diff, and the renderers (text, markdown, JSON). Kubernetes objects and
//! Slurm runner jobs both become [`Change`]s, site checks become [`Finding`]s.

pub(crate) mod diff;
pub mod render;
mod runner;

pub use runner::{LiveState, RunnerChange, RunnerReason};

use serde::Serialize;

use crate::fleet::model::SitePolicy;

/// A plan for every site considered.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Plan {
    /// The fleet revision planned (a commit id, or `None` for a working directory).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// One entry per site, in name order.
    pub sites: Vec<SitePlan>,
}

impl Plan {
    /// Whether any site has a create, update or delete.
    pub fn has_changes(&self) -> bool {
        self.sites.iter().any(SitePlan::has_changes)
    }

    /// Whether any site could not be planned.
    pub fn has_errors(&self) -> bool {
        self.sites.iter().any(|s| s.error.is_some())
    }
}

/// The kind of site a plan is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SiteKind {
    /// A Kubernetes cluster.
    Kubernetes,
    /// A Slurm cluster.
    Slurm,
}

/// The plan for one site.
#[derive(Debug, Clone, Serialize)]
pub struct SitePlan {
    /// Site name.
    pub site: String,
    /// Kubernetes or Slurm.
    pub kind: SiteKind,
    /// `apply` or `report-only`.
    pub policy: SitePolicy,
    /// Every object considered, changed or not.
    pub changes: Vec<Change>,
    /// Site checks that failed.
    pub findings: Vec<Finding>,
    /// Set when the site could not be observed: its plan is unknown (never "empty").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The API drover spoke to the site, when it chose one: `slurmrestd v0.0.42` for a
    /// Slurm REST site (the newest OpenAPI version both sides speak).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api: Option<String>,
    /// GitHub runner names of the site's live runners (Pods, Slurm jobs), for the
    /// autoscaler: a registered runner of the fleet with none of these is a leftover.
    #[serde(skip)]
    pub live_runners: Vec<String>,
}

impl SitePlan {
    /// An empty plan for a site.
    pub fn new(site: impl Into<String>, kind: SiteKind, policy: SitePolicy) -> Self {
        Self {
            site: site.into(),
            kind,
            policy,
            changes: Vec::new(),
            findings: Vec::new(),
            error: None,
            api: None,
            live_runners: Vec::new(),
        }
    }

    /// A plan for a site that could not be observed.
    pub fn failed(
        site: impl Into<String>,
        kind: SiteKind,
        policy: SitePolicy,
        error: impl Into<String>,
    ) -> Self {
        Self {
            error: Some(error.into()),
            ..Self::new(site, kind, policy)
        }
    }

    /// Whether anything would be created, updated or deleted.
    pub fn has_changes(&self) -> bool {
        self.changes.iter().any(|c| c.action != Action::Unchanged)
    }

    /// How many changes of each action.
    pub fn counts(&self) -> Counts {
        let mut counts = Counts::default();
        for change in &self.changes {
            match change.action {
                Action::Create => counts.create += 1,
                Action::Update => counts.update += 1,
                Action::Delete => counts.delete += 1,
                Action::Unchanged => counts.unchanged += 1,
            }
        }
        counts
    }
}

/// Number of changes of each action.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Objects to create.
    pub create: usize,
    /// Objects to update.
    pub update: usize,
    /// Objects to delete.
    pub delete: usize,
    /// Objects already as desired.
    pub unchanged: usize,
}

/// What a change does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Create an object (or submit a runner job).
    Create,
    /// Update an object in place.
    Update,
    /// Delete an owned object (prune, or cancel a runner job).
    Delete,
    /// Nothing to do.
    Unchanged,
}

impl Action {
    /// The sign shown before a change: `+`, `~`, `-`, or a space.
    pub fn sign(self) -> char {
        match self {
            Action::Create => '+',
            Action::Update => '~',
            Action::Delete => '-',
            Action::Unchanged => ' ',
        }
    }

    /// `create`, `update`, `delete`, `unchanged`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Unchanged => "unchanged",
        }
    }
}

/// What a change is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Target {
    /// Kubernetes kind (`Namespace`, `Pod`, ...) or `SlurmJob`.
    pub kind: String,
    /// Namespace, for namespaced objects.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Object name, or a job's name/id.
    pub name: String,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// One object's change.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// Create, update, delete or unchanged.
    pub action: Action,
    /// The object.
    pub target: Target,
    /// Unified diff of the normalised object (secret values masked); `None` when unchanged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// Why, in a few words (e.g. "no longer declared", "scale down: pending job").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For a runner, what the change does, typed (never shown; `reason` is its text).
    #[serde(skip)]
    pub runner: Option<RunnerChange>,
}

impl Change {
    /// A change to a runner: no diff, its reason as text and typed.
    pub fn of_runner(action: Action, target: Target, reason: String, runner: RunnerChange) -> Self {
        Self {
            action,
            target,
            diff: None,
            reason: Some(reason),
            runner: Some(runner),
        }
    }
}

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FindingSeverity {
    /// Runners still work, but something is off (e.g. a drained node).
    Warning,
    /// Runners cannot work as declared (e.g. partition down, device plugin missing).
    Error,
}

/// A site check that failed: the site does not hold what the fleet expects of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Warning or error.
    pub severity: FindingSeverity,
    /// Stable code, e.g. `partition-down`, `pool-short-of-nodes`.
    pub code: String,
    /// What it is about (a pool, a partition, a node).
    pub subject: String,
    /// What is wrong.
    pub message: String,
}

impl Finding {
    /// A finding.
    pub fn new(
        severity: FindingSeverity,
        code: &str,
        subject: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            severity,
            code: code.into(),
            subject: subject.into(),
            message: message.into(),
        }
    }
}

/// The outcome of applying one site's plan.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ApplyReport {
    /// Site name.
    pub site: String,
    /// Changes that were made (or, with dry run, accepted by the server).
    pub applied: Vec<(Action, Target)>,
    /// Changes that failed, with the error (never containing secret values).
    pub failed: Vec<(Action, Target, String)>,
    /// Why nothing was applied, when the whole site was refused (report-only policy, mass
    /// prune guard, site unreachable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

impl ApplyReport {
    /// Whether everything that was attempted succeeded.
    pub fn is_success(&self) -> bool {
        self.failed.is_empty() && self.refused.is_none()
    }
}
