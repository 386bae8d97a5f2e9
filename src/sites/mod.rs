//! Site drivers: everything that talks to a Kubernetes cluster or a Slurm cluster.
//!
//! Each driver module exposes the same three entry points, dispatched here by site kind:
//! `render` (pure: fleet → the site's desired objects), `plan` (observe the site, diff,
//! check) and `apply` (plan, then change the site). The orchestration across sites —
//! concurrency, timeouts, filtering — lives in [`crate::reconcile`].

mod change_error;
pub mod kubernetes;
pub mod slurm;

pub use change_error::{ChangeError, Settle};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::fleet::model::{Fleet, Site};
use crate::fleet::{FleetRepo, Located};
use crate::plan::{ApplyReport, SiteKind, SitePlan};
use crate::runners::RunnerId;

/// Label every Kubernetes object drover owns carries (`app.kubernetes.io/managed-by`).
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "drover";
/// Label naming the fleet (the `Fleet` document's name) that owns an object.
pub const OWNER_LABEL: &str = "drover.dev/owner";
/// Label naming the site (the `Site` document's name) an object was applied for. Objects
/// without it were labelled by a drover before site labels: adopted when declared, never
/// pruned (see `docs/kubernetes.md`, "Ownership").
pub const SITE_LABEL: &str = "drover.dev/site";
/// Label naming the runner set an object belongs to, when it belongs to one.
pub const RUNNER_SET_LABEL: &str = "drover.dev/runner-set";
/// Field manager used for every server-side apply.
pub const FIELD_MANAGER: &str = "drover";

/// Everything a driver needs to plan or apply one site.
#[derive(Debug, Clone, Copy)]
pub struct SiteContext<'a> {
    /// The whole validated fleet.
    pub repo: &'a FleetRepo,
    /// The site being handled.
    pub site: &'a Located<Site>,
    /// Options shared by every site of this run.
    pub options: &'a RunOptions,
}

impl SiteContext<'_> {
    /// The site's name.
    pub fn name(&self) -> &str {
        &self.site.value.metadata.name
    }

    /// The owning fleet's name (the value of [`OWNER_LABEL`]).
    pub fn fleet_name(&self) -> &str {
        self.repo
            .fleet
            .as_ref()
            .map(|f: &Located<Fleet>| f.value.metadata.name.as_str())
            .unwrap_or("default")
    }

    /// Desired runner count of a runner set: the autoscaler's decision when there is one,
    /// else the set's `min`.
    pub fn desired_runners(&self, runner_set: &str) -> u32 {
        let min = self
            .repo
            .runner_sets
            .get(runner_set)
            .map_or(0, |r| r.value.spec.min);
        self.options
            .desired_runners
            .get(runner_set)
            .copied()
            .unwrap_or(min)
    }

    /// Whether owned objects the fleet no longer declares may be deleted in this run.
    pub fn prune(&self) -> bool {
        self.options.apply.prune.unwrap_or_else(|| {
            self.repo
                .fleet
                .as_ref()
                .is_some_and(|f| f.value.spec.reconcile.prune)
        })
    }

    /// How long a new runner may take to come online before it is replaced: the run's
    /// override, else the Fleet's `reconcile.runnerStartTimeoutSeconds` (600 s default).
    pub fn runner_start_deadline(&self) -> std::time::Duration {
        self.options.runner_start_deadline.unwrap_or_else(|| {
            self.repo
                .fleet
                .as_ref()
                .map_or(DEFAULT_RUNNER_START_DEADLINE, |f| {
                    std::time::Duration::from_secs(
                        f.value.spec.reconcile.runner_start_timeout_seconds,
                    )
                })
        })
    }

    /// The mass-prune threshold in percent.
    pub fn mass_prune_percent(&self) -> u8 {
        self.repo
            .fleet
            .as_ref()
            .map_or(50, |f| f.value.spec.reconcile.mass_prune_percent)
    }
}

/// Options shared by every site of one run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Kubeconfig to use instead of `$KUBECONFIG` / `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// Desired runner counts per runner set, from the autoscaler; `min` when absent.
    pub desired_runners: BTreeMap<String, u32>,
    /// How to apply.
    pub apply: ApplyOptions,
    /// GitHub's side of runners (JIT configs, registrations); `None` outside the
    /// autoscaler, where drivers cannot start runners that need a JIT config.
    pub registry: Option<Registry>,
    /// Plan and apply runners only (runner Pods, Slurm runner jobs), not the site's other
    /// objects: the autoscaler's fast path between full reconciles.
    pub runners_only: bool,
    /// Overrides the Fleet's `reconcile.runnerStartTimeoutSeconds` (tests, benchmarks).
    pub runner_start_deadline: Option<std::time::Duration>,
    /// Why each runner set has its desired count (the autoscaler's explanation), added to
    /// the reasons of scale-up and scale-down changes in plans.
    pub scale_notes: BTreeMap<String, String>,
    /// `drover serve`'s per-site Kubernetes clients and runner Pod watches (see
    /// [`kubernetes::site_cache`]); `None` in one-shot commands, which connect and list.
    pub site_cache: Option<Arc<kubernetes::site_cache::SiteCache>>,
    /// The cluster identities the Kubernetes sites reached (one book per CLI run, one per
    /// process in `drover serve`): a site whose cluster another site of the fleet also
    /// reaches is refused (see [`kubernetes::identity`]).
    pub cluster_claims: Arc<kubernetes::identity::Claims>,
}

/// Default of [`RunOptions::runner_start_deadline`]: ten minutes.
pub const DEFAULT_RUNNER_START_DEADLINE: std::time::Duration = std::time::Duration::from_secs(600);

/// A shared [`runners::RunnerRegistry`] (a newtype so that [`RunOptions`] stays `Debug`).
#[derive(Clone)]
pub struct Registry(pub Arc<dyn crate::runners::RunnerRegistry>);

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Registry(..)")
    }
}

/// How to apply a plan.
#[derive(Debug, Clone, Default)]
pub struct ApplyOptions {
    /// Server-side dry run: send every write with `dryRun=All`, change nothing.
    pub dry_run: bool,
    /// Prune owned objects no longer declared; `None` uses the Fleet's `reconcile.prune`.
    pub prune: Option<bool>,
    /// Take ownership of fields another field manager owns (`force=true`).
    pub force_conflicts: bool,
    /// Allow a prune that deletes more than the mass-prune threshold.
    pub allow_mass_prune: bool,
}

/// The kind of a site.
pub fn kind_of(site: &Site) -> SiteKind {
    if site.spec.slurm.is_some() {
        SiteKind::Slurm
    } else {
        SiteKind::Kubernetes
    }
}

/// Renders the site's desired objects (Kubernetes manifests or Slurm job specs) as JSON
/// values, for `drover render`. Pure.
pub fn render(ctx: &SiteContext<'_>) -> Result<Vec<serde_json::Value>, RenderError> {
    Ok(match kind_of(&ctx.site.value) {
        SiteKind::Kubernetes => kubernetes::render_values(ctx)?,
        SiteKind::Slurm => slurm::render_values(ctx)?,
    })
}

/// Why a site cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// A Kubernetes site.
    #[error(transparent)]
    Kubernetes(#[from] kubernetes::render::RenderError),
    /// A Slurm site.
    #[error(transparent)]
    Slurm(#[from] slurm::render::RenderError),
}

/// Observes the site and plans it.
pub async fn plan(ctx: &SiteContext<'_>) -> SitePlan {
    let mut plan = match kind_of(&ctx.site.value) {
        SiteKind::Kubernetes => kubernetes::plan(ctx).await,
        SiteKind::Slurm => slurm::plan(ctx).await,
    };
    explain_scaling(ctx, &mut plan);
    plan
}

/// Plans the site and applies the plan; returns both.
pub async fn apply(ctx: &SiteContext<'_>) -> (SitePlan, ApplyReport) {
    let (mut plan, report) = match kind_of(&ctx.site.value) {
        SiteKind::Kubernetes => kubernetes::apply(ctx).await,
        SiteKind::Slurm => slurm::apply(ctx).await,
    };
    explain_scaling(ctx, &mut plan);
    (plan, report)
}

/// Adds the autoscaler's explanation to the reason of every scale-up and scale-down
/// change: "scale up; autoscaler: desired 8 (demand 9, bounded by max)".
fn explain_scaling(ctx: &SiteContext<'_>, plan: &mut SitePlan) {
    if ctx.options.scale_notes.is_empty() {
        return;
    }
    let fleet = ctx.fleet_name();
    let sets = ctx.options.scale_notes.keys().map(String::as_str);
    let sets: Vec<&str> = sets.collect();
    for change in &mut plan.changes {
        if !change.runner.is_some_and(|r| r.reason.is_scaling()) {
            continue;
        }
        let Some(reason) = change.reason.as_mut() else {
            continue;
        };
        let name = &change.target.name;
        let id = RunnerId::of_target(&change.target);
        let set = id
            .as_ref()
            .map(|id| id.set.as_str())
            .filter(|set| sets.contains(set))
            .or_else(|| crate::runners::set_of_runner(name, fleet, sets.iter().copied()));
        if let Some(note) = set.and_then(|s| ctx.options.scale_notes.get(s)) {
            reason.push_str("; autoscaler: ");
            reason.push_str(note);
        }
    }
}
