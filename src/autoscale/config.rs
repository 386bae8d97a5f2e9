//! The autoscaler's view of a fleet revision: the runner sets drover scales (engine
//! `drover`), each with its GitHub scope, runner group, labels and pool capacity, and the
//! pure step that turns demand into decisions ([`ScaleConfig::decide`]).

use std::collections::BTreeMap;

use super::decide::{Decision, ScaleInput, decide, pool_capacity};
use super::labels::runner_labels;
use super::matching::{JobRequest, SetCandidate, Unmatched, match_jobs};
use crate::fleet::FleetRepo;
use crate::fleet::model::{Engine, RunnerSetSpec};
use crate::github::Scope;

/// One runner set the autoscaler scales.
#[derive(Debug, Clone, PartialEq)]
pub struct SetConfig {
    /// The set's spec.
    pub spec: RunnerSetSpec,
    /// The site its pool is on.
    pub site: String,
    /// Where its runners register.
    pub scope: Scope,
    /// Its runner group name.
    pub group: String,
    /// The labels its runners register with (drover adds `self-hosted`, OS, arch).
    pub labels: Vec<String>,
    /// Most runners its pool can hold, when known.
    pub capacity: Option<u32>,
}

/// The scaled runner sets of one fleet revision.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScaleConfig {
    /// The fleet's name (runner names carry it).
    pub fleet: String,
    /// Scaled sets by name.
    pub sets: BTreeMap<String, SetConfig>,
    candidates: Vec<SetCandidate>,
}

/// Per-set counts a decision is made from, and the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetScaling {
    /// Queued jobs matched to the set.
    pub queued: u32,
    /// The set's runners running a job.
    pub busy: u32,
    /// The decision.
    pub decision: Decision,
}

/// One round's outcome: decisions per set, and the jobs no set can serve.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scaling {
    /// Per scaled set.
    pub sets: BTreeMap<String, SetScaling>,
    /// Queued jobs nobody can serve, with the job.
    pub unmatched: Vec<(JobRequest, Unmatched)>,
}

impl Scaling {
    /// The desired runner count per set.
    pub fn desired(&self) -> BTreeMap<String, u32> {
        self.sets
            .iter()
            .map(|(name, s)| (name.clone(), s.decision.desired))
            .collect()
    }
}

impl ScaleConfig {
    /// The scaled sets of a validated fleet. Sets with `engine: arc` (ARC scales them) or
    /// an unusable scope are left out.
    pub fn from_repo(repo: &FleetRepo) -> Self {
        let fleet = repo
            .fleet
            .as_ref()
            .map_or("default", |f| f.value.metadata.name.as_str())
            .to_string();
        let default_group = repo
            .fleet
            .as_ref()
            .and_then(|f| f.value.spec.defaults.runner_group.as_deref());
        let mut sets = BTreeMap::new();
        for (name, set) in &repo.runner_sets {
            let spec = &set.value.spec;
            let (Engine::Drover, Some(scope), Some(pool)) = (
                spec.engine,
                Scope::of(&spec.github),
                repo.pools.get(&spec.pool),
            ) else {
                continue;
            };
            sets.insert(
                name.clone(),
                SetConfig {
                    spec: spec.clone(),
                    site: pool.value.spec.site.clone(),
                    scope,
                    group: spec.github.effective_runner_group(default_group),
                    labels: runner_labels(spec).into_iter().collect(),
                    capacity: pool_capacity(&pool.value.spec, spec),
                },
            );
        }
        let candidates = sets
            .iter()
            .map(|(name, s)| SetCandidate::from_spec(name, &s.spec))
            .collect();
        Self {
            fleet,
            sets,
            candidates,
        }
    }

    /// Repositories polled for queued jobs: those of repository-scoped sets plus `extra`
    /// (configured, or seen in webhooks), lower-cased and de-duplicated.
    pub fn poll_repos<'a>(&self, extra: impl IntoIterator<Item = &'a String>) -> Vec<String> {
        let mut repos: Vec<String> = self
            .sets
            .values()
            .filter_map(|s| match &s.scope {
                Scope::Repo(r) => Some(r.to_ascii_lowercase()),
                _ => None,
            })
            .chain(extra.into_iter().map(|r| r.to_ascii_lowercase()))
            .collect();
        repos.sort();
        repos.dedup();
        repos
    }

    /// Decides every set from the queued jobs and each set's busy runner count. Pure.
    pub fn decide(&self, queued: &[JobRequest], busy: &BTreeMap<String, u32>) -> Scaling {
        let outcome = match_jobs(queued, &self.candidates);
        let mut sets = BTreeMap::new();
        for (name, set) in &self.sets {
            let q = outcome.queued(name);
            let b = busy.get(name).copied().unwrap_or(0);
            let decision = decide(ScaleInput::for_set(&set.spec, q, b, set.capacity));
            sets.insert(
                name.clone(),
                SetScaling {
                    queued: q,
                    busy: b,
                    decision,
                },
            );
        }
        let by_id: BTreeMap<u64, &JobRequest> = queued.iter().map(|j| (j.id, j)).collect();
        let unmatched = outcome
            .unmatched
            .into_iter()
            .filter_map(|u| Some(((*by_id.get(&u.job_id)?).clone(), u)))
            .collect();
        Scaling { sets, unmatched }
    }
}
