//! Matching queued jobs to runner sets, by GitHub's rule: a runner can take a job when
//! the runner's labels include *all* of the job's `runs-on` labels, compared
//! case-insensitively, and the runner is registered where the job's repository can use
//! it (the repository itself, its organization, or its enterprise).
//!
//! When several sets could serve a job, drover picks the most specific one: the set with
//! the fewest labels the job did not ask for, then the smallest name (deterministic).
//! Runner group visibility (a group restricted to some repositories) is not modelled:
//! drover assumes a set's runner group is visible to every repository in its scope.

use std::collections::{BTreeMap, BTreeSet};

use super::labels::{normalize, runner_labels};
use crate::fleet::model::{RunnerScope, RunnerSetSpec};

/// A queued job, as far as matching cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRequest {
    /// The job's id.
    pub id: u64,
    /// The job's repository, `owner/name`.
    pub repo: String,
    /// The enterprise slug the repository's organization belongs to, when known.
    pub enterprise: Option<String>,
    /// The job's `runs-on` labels.
    pub labels: Vec<String>,
}

impl JobRequest {
    /// The repository owner (the organization).
    pub fn org(&self) -> &str {
        self.repo.split('/').next().unwrap_or_default()
    }
}

/// A runner set as a matching candidate: its name, scope and runner labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetCandidate {
    /// Runner set name.
    pub name: String,
    /// Where its runners register.
    pub scope: RunnerScope,
    /// Its runners' labels ([`runner_labels`]), normalized.
    pub labels: BTreeSet<String>,
}

impl SetCandidate {
    /// The candidate for a runner set document.
    pub fn from_spec(name: &str, spec: &RunnerSetSpec) -> Self {
        Self {
            name: name.to_string(),
            scope: spec.github.clone(),
            labels: runner_labels(spec),
        }
    }

    /// Whether a job's repository can use runners registered in this set's scope.
    pub fn in_scope(&self, job: &JobRequest) -> bool {
        let eq = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
        match (&self.scope.enterprise, &self.scope.org, &self.scope.repo) {
            (_, _, Some(repo)) => eq(repo, &job.repo),
            (_, Some(org), None) => eq(org, job.org()),
            (Some(ent), None, None) => job.enterprise.as_deref().is_some_and(|e| eq(ent, e)),
            (None, None, None) => false,
        }
    }
}

/// Why no set can serve a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnmatchedReason {
    /// The job has no `runs-on` labels.
    NoLabels,
    /// No runner set is registered where the job's repository can use it.
    NoSetInScope,
    /// Sets are in scope, but none has all the labels. `closest` is the in-scope set
    /// missing the fewest labels (ties by name); `missing` are the labels it lacks.
    MissingLabels {
        /// The closest set.
        closest: String,
        /// The job's labels that set lacks, normalized and sorted.
        missing: Vec<String>,
    },
}

/// A one-line description of why no set can serve a job.
pub fn describe(reason: &UnmatchedReason) -> String {
    match reason {
        UnmatchedReason::NoLabels => "the job has no runs-on labels".into(),
        UnmatchedReason::NoSetInScope => {
            "no runner set is registered where its repository can use it".into()
        }
        UnmatchedReason::MissingLabels { closest, missing } => format!(
            "no runner set has all its labels; closest is {closest}, missing {}",
            missing.join(", ")
        ),
    }
}

/// A job no runner set can serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmatched {
    /// The job's id.
    pub job_id: u64,
    /// Why.
    pub reason: UnmatchedReason,
}

/// Jobs assigned to runner sets, and jobs nobody can serve.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MatchOutcome {
    /// Job ids per runner set name, in input order.
    pub assigned: BTreeMap<String, Vec<u64>>,
    /// Jobs no set can serve, in input order.
    pub unmatched: Vec<Unmatched>,
}

impl MatchOutcome {
    /// Queued jobs assigned to a set.
    pub fn queued(&self, set: &str) -> u32 {
        self.assigned
            .get(set)
            .map_or(0, |jobs| u32::try_from(jobs.len()).unwrap_or(u32::MAX))
    }
}

/// Matches every job to its most specific set, or reports why none fits.
pub fn match_jobs(jobs: &[JobRequest], sets: &[SetCandidate]) -> MatchOutcome {
    let mut out = MatchOutcome::default();
    for job in jobs {
        match match_job(job, sets) {
            Ok(set) => out
                .assigned
                .entry(set.to_string())
                .or_default()
                .push(job.id),
            Err(reason) => out.unmatched.push(Unmatched {
                job_id: job.id,
                reason,
            }),
        }
    }
    out
}

/// The most specific set for one job.
pub fn match_job<'a>(
    job: &JobRequest,
    sets: &'a [SetCandidate],
) -> Result<&'a str, UnmatchedReason> {
    let wanted: BTreeSet<String> = job
        .labels
        .iter()
        .map(|l| normalize(l))
        .filter(|l| !l.is_empty())
        .collect();
    if wanted.is_empty() {
        return Err(UnmatchedReason::NoLabels);
    }
    let in_scope = sets.iter().filter(|s| s.in_scope(job));
    // (missing labels, extra labels, name): the smallest tuple wins.
    let best = in_scope
        .map(|s| {
            let missing: Vec<String> = wanted.difference(&s.labels).cloned().collect();
            let extra = s.labels.difference(&wanted).count();
            (missing, extra, s.name.as_str())
        })
        .min_by(|a, b| (a.0.len(), a.1, a.2).cmp(&(b.0.len(), b.1, b.2)));
    match best {
        None => Err(UnmatchedReason::NoSetInScope),
        Some((missing, _, name)) if missing.is_empty() => Ok(name),
        Some((missing, _, name)) => Err(UnmatchedReason::MissingLabels {
            closest: name.to_string(),
            missing,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(name: &str, scope: RunnerScope, labels: &[&str]) -> SetCandidate {
        let mut l: BTreeSet<String> = labels.iter().map(|s| s.to_string()).collect();
        l.extend(["self-hosted", "linux", "x64"].map(String::from));
        SetCandidate {
            name: name.into(),
            scope,
            labels: l,
        }
    }

    fn org(o: &str) -> RunnerScope {
        RunnerScope {
            org: Some(o.into()),
            ..RunnerScope::default()
        }
    }

    fn job(id: u64, repo: &str, labels: &[&str]) -> JobRequest {
        JobRequest {
            id,
            repo: repo.into(),
            enterprise: Some("ent".into()),
            labels: labels.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn prefers_the_most_specific_set_case_insensitively() {
        let sets = [
            set("gpu-x8", org("acme"), &["gpu", "mi300x", "multi-gpu"]),
            set("gpu", org("acme"), &["gpu", "mi300x"]),
        ];
        let out = match_jobs(
            &[job(1, "Acme/w", &["Self-Hosted", "GPU", "mi300x"])],
            &sets,
        );
        assert_eq!(out.assigned["gpu"], [1]);
        let out = match_jobs(&[job(2, "acme/w", &["multi-gpu"])], &sets);
        assert_eq!(out.assigned["gpu-x8"], [2]);
    }

    #[test]
    fn ties_break_by_name() {
        let sets = [
            set("b", org("acme"), &["cpu"]),
            set("a", org("acme"), &["cpu"]),
        ];
        assert_eq!(match_job(&job(1, "acme/w", &["cpu"]), &sets), Ok("a"));
    }

    #[test]
    fn scope_repo_org_enterprise() {
        let repo = RunnerScope {
            repo: Some("acme/big".into()),
            ..RunnerScope::default()
        };
        let ent = RunnerScope {
            enterprise: Some("ent".into()),
            ..RunnerScope::default()
        };
        let sets = [set("r", repo, &["a100"]), set("e", ent, &["cpu"])];
        assert_eq!(match_job(&job(1, "acme/big", &["a100"]), &sets), Ok("r"));
        assert_eq!(match_job(&job(1, "other/x", &["cpu"]), &sets), Ok("e"));
        assert_eq!(
            match_job(&job(1, "acme/small", &["a100"]), &sets),
            Err(UnmatchedReason::MissingLabels {
                closest: "e".into(),
                missing: vec!["a100".into()]
            })
        );
        let mut no_ent = job(1, "acme/small", &["cpu"]);
        no_ent.enterprise = None;
        assert_eq!(
            match_job(&no_ent, &sets),
            Err(UnmatchedReason::NoSetInScope)
        );
        assert_eq!(
            match_job(&job(1, "acme/big", &[]), &sets),
            Err(UnmatchedReason::NoLabels)
        );
    }
}
