//! The one place `drover serve` reconciles a site. Every path that plans, applies or checks
//! a site (a new revision, the autoscaler's runner rounds, the drift schedule) calls
//! [`Service::reconcile_site`] with a [`SiteTrigger`] that says what to do. It holds the site's
//! lock for the whole step, so two steps on one site never interleave, builds the site's run
//! options (with the autoscaler's decisions), plans and applies, and tells the autoscaler
//! which runners it saw. Recording status and metrics is the caller's.
//!
//! The drift rules live here too: a drift check plans with pruning to see everything that
//! differs, and heals (applies) only what an apply can repair and the site's policy allows.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::Service;
use crate::drift::SiteDrift;
use crate::fleet::FleetRepo;
use crate::fleet::model::{DriftPolicy, SitePolicy};
use crate::plan::{ApplyReport, SitePlan};
use crate::reconcile;
use crate::runners::RunnerId;
use crate::sites::RunOptions;

/// What a site step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SiteTrigger {
    /// Plan the whole site, and apply the plan when this replica leads.
    Full {
        /// This replica holds the lease.
        leader: bool,
    },
    /// Apply runner changes only: the autoscaler's fast path (it runs on the leader only).
    RunnersOnly,
    /// Plan with pruning to find drift, and heal it when this replica leads and the site's
    /// drift policy is `heal`.
    DriftCheck {
        /// This replica holds the lease.
        leader: bool,
    },
}

/// What a site step did.
pub(super) struct Reconciled {
    /// The last plan of the step (the heal's, when a drift check healed).
    pub plan: SitePlan,
    /// The apply's report, when the step applied.
    pub report: Option<ApplyReport>,
    /// For [`SiteTrigger::DriftCheck`]: the drift found and what a heal left.
    pub drift: Option<DriftFound>,
    /// How long the step took, lock wait excluded.
    pub took: Duration,
}

/// The drift a check found.
pub(super) struct DriftFound {
    /// The site's drift policy.
    pub policy: DriftPolicy,
    /// Drift before any heal.
    pub found: SiteDrift,
    /// Drift left after the heal (the same as `found` without one).
    pub left: SiteDrift,
    /// A heal was applied.
    pub healed: bool,
}

impl Service {
    /// Reconciles site `name` of `repo` as `trigger` says, under the site's lock.
    pub(super) async fn reconcile_site(
        &self,
        repo: &FleetRepo,
        name: &str,
        trigger: SiteTrigger,
    ) -> Reconciled {
        let lock = self.site_lock(name);
        let _held = lock.lock().await;
        let started = Instant::now();
        let mut options = self.config.run_options.clone();
        match trigger {
            SiteTrigger::RunnersOnly => options.runners_only = true,
            _ => options.apply.force_conflicts |= policy_of(repo, name) == DriftPolicy::Heal,
        }
        super::autoscale::with_autoscaler(&mut options, self.autoscaler.as_ref());
        let (plan, report, drift) = match trigger {
            SiteTrigger::Full { leader: true } | SiteTrigger::RunnersOnly => {
                let (plan, report) = apply(repo, &options, name).await;
                (plan, report, None)
            }
            SiteTrigger::Full { leader: false } => (plan(repo, &options, name).await, None, None),
            SiteTrigger::DriftCheck { leader } => {
                let (plan, report, drift) = check(repo, &options, name, leader).await;
                (plan, report, Some(drift))
            }
        };
        if !matches!(trigger, SiteTrigger::DriftCheck { .. }) {
            self.note_runners(name, &plan);
        }
        Reconciled {
            plan,
            report,
            drift,
            took: started.elapsed(),
        }
    }

    /// Tells the autoscaler the site's live runners and the runners that never started.
    fn note_runners(&self, name: &str, plan: &SitePlan) {
        if let Some(a) = &self.autoscaler
            && plan.error.is_none()
        {
            a.record_live(name, plan.live_runners.clone());
            super::autoscale::count_failed_starts(a, plan);
        }
    }
}

/// Plans site `name`; a site that cannot be planned gets a failed plan.
async fn plan(repo: &FleetRepo, options: &RunOptions, name: &str) -> SitePlan {
    match reconcile::plan(repo, options, Some(name)).await {
        Ok(mut plan) => plan.sites.remove(0),
        Err(err) => failed_plan(repo, name, &err.to_string()),
    }
}

/// Plans and applies site `name`.
async fn apply(
    repo: &FleetRepo,
    options: &RunOptions,
    name: &str,
) -> (SitePlan, Option<ApplyReport>) {
    match reconcile::apply(repo, options, Some(name)).await {
        Ok((mut plan, mut reports)) => (plan.sites.remove(0), reports.pop()),
        Err(err) => (failed_plan(repo, name, &err.to_string()), None),
    }
}

/// Finds the site's drift (a plan with pruning on) and heals it where allowed.
async fn check(
    repo: &FleetRepo,
    options: &RunOptions,
    name: &str,
    leader: bool,
) -> (SitePlan, Option<ApplyReport>, DriftFound) {
    let policy = policy_of(repo, name);
    let mut detect = options.clone();
    detect.apply.prune = Some(true);
    let detected = plan(repo, &detect, name).await;
    let found = SiteDrift::from_plan(&detected);
    let prune = options.apply.prune.unwrap_or_else(|| {
        repo.fleet
            .as_ref()
            .is_some_and(|f| f.value.spec.reconcile.prune)
    });
    let heal = leader
        && policy == DriftPolicy::Heal
        && detected.policy == SitePolicy::Apply
        && healable(&found, prune);
    if !heal {
        let left = found.clone();
        let drift = DriftFound {
            policy,
            found,
            left,
            healed: false,
        };
        return (detected, None, drift);
    }
    tracing::info!(site = %name, objects = found.objects(), "healing drift");
    let mut options = options.clone();
    options.desired_runners = heal_runner_counts(&detected, repo, &options);
    let (plan, report) = apply(repo, &options, name).await;
    let left = report
        .as_ref()
        .map_or_else(|| found.clone(), |r| found.remaining_after(r));
    let drift = DriftFound {
        policy,
        found,
        left,
        healed: true,
    };
    (plan, report, drift)
}

/// The plan of a site that could not be planned: its error, no changes.
pub(super) fn failed_plan(repo: &FleetRepo, name: &str, error: &str) -> SitePlan {
    let (kind, policy) = repo
        .sites
        .get(name)
        .map(|s| (crate::sites::kind_of(&s.value), s.value.spec.policy))
        .unwrap_or((crate::plan::SiteKind::Kubernetes, SitePolicy::Apply));
    SitePlan::failed(name, kind, policy, error)
}

/// The drift policy of a site: its own `drift`, else the Fleet's `reconcile.drift`.
pub(super) fn policy_of(repo: &FleetRepo, site: &str) -> DriftPolicy {
    let fleet = repo
        .fleet
        .as_ref()
        .map(|f| f.value.spec.reconcile.drift)
        .unwrap_or_default();
    repo.sites
        .get(site)
        .and_then(|s| s.value.spec.drift)
        .unwrap_or(fleet)
}

/// Whether an apply can repair some of `drift`: objects changed, missing or (when the
/// fleet prunes) undeclared, or runners below min. Findings alone are not healed.
fn healable(drift: &SiteDrift, prune: bool) -> bool {
    drift.error.is_none()
        && (!drift.changed.is_empty()
            || !drift.missing.is_empty()
            || !drift.below_min.is_empty()
            || (prune && !drift.undeclared.is_empty()))
}

/// Runner counts for a heal: each runner set's desired count (the autoscaler's, else
/// `min`), raised to the runners it has now. A heal fills runners that are missing and
/// never scales a set down: runner counts above the desired one are the autoscaler's
/// business, not drift.
fn heal_runner_counts(
    plan: &crate::plan::SitePlan,
    repo: &FleetRepo,
    options: &crate::sites::RunOptions,
) -> BTreeMap<String, u32> {
    let mut counts = options.desired_runners.clone();
    let mut live: BTreeMap<String, u32> = BTreeMap::new();
    for change in &plan.changes {
        if change.action == crate::plan::Action::Create {
            continue;
        }
        if let Some(id) = RunnerId::of_target(&change.target) {
            *live.entry(id.set).or_default() += 1;
        }
    }
    for (set, n) in live {
        let set = set.as_str();
        let Some(spec) = repo.runner_sets.get(set) else {
            continue;
        };
        let desired = options
            .desired_runners
            .get(set)
            .copied()
            .unwrap_or(spec.value.spec.min);
        counts.insert(set.to_string(), desired.max(n));
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Target;

    #[test]
    fn heal_needs_something_an_apply_can_repair() {
        let mut d = SiteDrift {
            site: "s".into(),
            undeclared: vec![Target {
                kind: "ConfigMap".into(),
                namespace: None,
                name: "x".into(),
            }],
            ..SiteDrift::default()
        };
        assert!(!healable(&d, false), "undeclared without prune stays");
        assert!(healable(&d, true));
        d.undeclared.clear();
        d.below_min.insert("gpu".into(), 1);
        assert!(healable(&d, false));
        d.error = Some("down".into());
        assert!(!healable(&d, false));
    }

    #[test]
    fn a_heal_fills_missing_runners_and_never_scales_down() {
        use crate::plan::{Action, Change, SiteKind, SitePlan};
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fleet");
        let v = crate::fleet::validate_dir(&root, &crate::fleet::LoadOptions::default()).unwrap();
        let runner = |action: Action, name: &str| Change {
            action,
            target: Target {
                kind: "SlurmJob".into(),
                namespace: None,
                name: name.into(),
            },
            diff: None,
            reason: None,
            runner: None,
        };
        let mut plan = SitePlan::new("hpc", SiteKind::Slurm, SitePolicy::Apply);
        plan.changes = vec![
            // cpu-small (min 2): one live, one missing.
            runner(Action::Unchanged, "cpu-small#0"),
            runner(Action::Create, "cpu-small#1"),
            // cpu-medium (min 1): scaled to 3 by the autoscaler, the plan at min cancels two.
            runner(Action::Unchanged, "cpu-medium#0"),
            runner(Action::Delete, "cpu-medium#1"),
            runner(Action::Delete, "cpu-medium#2"),
        ];
        let options = crate::sites::RunOptions {
            desired_runners: [("gpu-a100-slurm".to_string(), 2)].into(),
            ..crate::sites::RunOptions::default()
        };
        let counts = heal_runner_counts(&plan, &v.repo, &options);
        assert_eq!(counts["cpu-small"], 2, "min, to fill the missing one");
        assert_eq!(counts["cpu-medium"], 3, "what it has: no scale-down");
        assert_eq!(
            counts["gpu-a100-slurm"], 2,
            "the autoscaler's count is kept"
        );
    }
}
