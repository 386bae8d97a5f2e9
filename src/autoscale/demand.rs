//! Demand: which GitHub Actions jobs are waiting for a runner, rebuilt from `workflow_job`
//! webhooks and repaired by polling. Pure: events and poll results go in, the queued jobs
//! come out.
//!
//! Webhooks arrive late, twice, out of order or never. The rules that make that harmless:
//! - a job's phase only moves forward (`waiting` → `queued` → `in_progress` →
//!   `completed`): a late `queued` after `in_progress` changes nothing, and a `completed`
//!   without anything before it is kept as a tombstone so a later `queued` is ignored;
//! - a duplicate delivery is the same phase again: a no-op;
//! - a poll is the truth about what is queued *in the repositories it covered*: jobs it
//!   lists are queued (a missed `queued` webhook is repaired), and jobs recorded as queued
//!   in those repositories that it does not list have moved on (a missed `in_progress` or
//!   `completed` is repaired) — unless an event about them arrived after the poll
//!   started, which the poll could not have seen.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::matching::JobRequest;

/// Where a job is in its life, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// Waiting for an environment's protection rules; not yet assignable to a runner.
    Waiting,
    /// Queued: waiting for a runner. This is demand.
    Queued,
    /// A runner took it.
    InProgress,
    /// Done (any conclusion), or left the queue without a runner (seen by polling).
    Completed,
}

impl Phase {
    /// The phase of a `workflow_job` action or job status (`queued`, `in_progress`, …).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "waiting" | "pending" | "requested" => Some(Self::Waiting),
            "queued" => Some(Self::Queued),
            "in_progress" => Some(Self::InProgress),
            "completed" => Some(Self::Completed),
            _ => None,
        }
    }
}

/// One job as drover knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    /// The job, as matching needs it.
    pub request: JobRequest,
    /// Its phase.
    pub phase: Phase,
    /// When drover first saw it queued (Unix ms), for the queue-wait metric.
    pub queued_at: Option<u64>,
    /// When drover last changed this record (Unix ms).
    pub updated_at: u64,
    /// The runner that took it, once known.
    pub runner: Option<String>,
}

/// A `workflow_job` webhook delivery, reduced to what demand needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobEvent {
    /// The job.
    pub request: JobRequest,
    /// The phase the delivery reports.
    pub phase: Phase,
    /// The runner named in the delivery (`in_progress`, `completed`).
    pub runner: Option<String>,
}

impl JobEvent {
    /// Reads a `workflow_job` webhook payload; `None` when it lacks what is needed.
    pub fn from_payload(payload: &Value) -> Option<Self> {
        let job = &payload["workflow_job"];
        let phase = Phase::parse(payload["action"].as_str()?)?;
        let labels = job["labels"]
            .as_array()?
            .iter()
            .filter_map(|l| l.as_str().map(String::from))
            .collect();
        Some(Self {
            request: JobRequest {
                id: job["id"].as_u64()?,
                repo: payload["repository"]["full_name"].as_str()?.to_string(),
                enterprise: payload["enterprise"]["slug"].as_str().map(String::from),
                labels,
            },
            phase,
            runner: job["runner_name"]
                .as_str()
                .filter(|n| !n.is_empty())
                .map(String::from),
        })
    }
}

/// What an event did, for metrics and for waking the autoscaler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Nothing changed (duplicate, late or out-of-order delivery).
    None,
    /// The job entered the queue: demand went up.
    Queued,
    /// The job left the queue (or moved on): `waited_ms` is the time since drover first
    /// saw it queued, when it did; `runner` took it.
    Left {
        /// Milliseconds the job was queued, as far as drover saw.
        waited_ms: Option<u64>,
        /// The runner that took it.
        runner: Option<String>,
    },
}

/// All jobs drover knows about.
#[derive(Debug, Clone, Default)]
pub struct Demand {
    jobs: BTreeMap<u64, JobRecord>,
}

impl Demand {
    /// Applies a webhook event received at `now` (Unix ms).
    pub fn observe(&mut self, event: JobEvent, now: u64) -> Effect {
        let id = event.request.id;
        let Some(record) = self.jobs.get_mut(&id) else {
            let queued = event.phase == Phase::Queued;
            self.jobs.insert(
                id,
                JobRecord {
                    request: event.request,
                    phase: event.phase,
                    queued_at: queued.then_some(now),
                    updated_at: now,
                    runner: event.runner,
                },
            );
            return if queued { Effect::Queued } else { Effect::None };
        };
        if event.phase <= record.phase {
            return Effect::None;
        }
        let was_queued = record.phase == Phase::Queued;
        record.phase = event.phase;
        record.updated_at = now;
        if event.runner.is_some() {
            record.runner = event.runner;
        }
        if event.phase == Phase::Queued {
            record.queued_at = Some(now);
            Effect::Queued
        } else if was_queued {
            Effect::Left {
                waited_ms: record.queued_at.map(|t| now.saturating_sub(t)),
                runner: record.runner.clone(),
            }
        } else {
            Effect::None
        }
    }

    /// Applies a poll of `repos` that started at `started` (Unix ms) and found `queued`
    /// queued jobs; returns how many jobs it repaired (added or moved on).
    pub fn reconcile_poll(
        &mut self,
        repos: &[String],
        queued: &[JobRequest],
        started: u64,
        now: u64,
    ) -> usize {
        let mut repaired = 0;
        let listed: BTreeSet<u64> = queued.iter().map(|j| j.id).collect();
        for job in queued {
            let known = self.jobs.get(&job.id).map(|r| r.phase);
            match known {
                None | Some(Phase::Waiting) => {
                    let event = JobEvent {
                        request: job.clone(),
                        phase: Phase::Queued,
                        runner: None,
                    };
                    self.observe(event, now);
                    repaired += 1;
                }
                Some(_) => {}
            }
        }
        let covered: BTreeSet<String> = repos.iter().map(|r| r.to_ascii_lowercase()).collect();
        for record in self.jobs.values_mut() {
            let stale = record.phase == Phase::Queued
                && record.updated_at < started
                && !listed.contains(&record.request.id)
                && covered.contains(&record.request.repo.to_ascii_lowercase());
            if stale {
                record.phase = Phase::Completed;
                record.updated_at = now;
                repaired += 1;
            }
        }
        repaired
    }

    /// The jobs waiting for a runner, oldest id first.
    pub fn queued(&self) -> Vec<JobRequest> {
        self.jobs
            .values()
            .filter(|r| r.phase == Phase::Queued)
            .map(|r| r.request.clone())
            .collect()
    }

    /// One job's record.
    pub fn get(&self, id: u64) -> Option<&JobRecord> {
        self.jobs.get(&id)
    }

    /// Forgets jobs that finished before `cutoff` (Unix ms); queued ones are kept.
    pub fn forget_before(&mut self, cutoff: u64) {
        self.jobs
            .retain(|_, r| r.phase == Phase::Queued || r.updated_at >= cutoff);
    }

    /// How many jobs are recorded.
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    /// Whether no job is recorded.
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(id: u64, repo: &str) -> JobRequest {
        JobRequest {
            id,
            repo: repo.into(),
            enterprise: None,
            labels: vec!["gpu".into()],
        }
    }

    fn event(id: u64, phase: Phase) -> JobEvent {
        JobEvent {
            request: job(id, "acme/app"),
            phase,
            runner: (phase >= Phase::InProgress).then(|| "r1".to_string()),
        }
    }

    fn ids(d: &Demand) -> Vec<u64> {
        d.queued().iter().map(|j| j.id).collect()
    }

    #[test]
    fn phases_only_move_forward() {
        let mut d = Demand::default();
        assert_eq!(d.observe(event(1, Phase::Queued), 10), Effect::Queued);
        assert_eq!(
            d.observe(event(1, Phase::Queued), 11),
            Effect::None,
            "duplicate"
        );
        assert_eq!(
            d.observe(event(1, Phase::InProgress), 40),
            Effect::Left {
                waited_ms: Some(30),
                runner: Some("r1".into())
            }
        );
        assert_eq!(d.observe(event(1, Phase::Queued), 50), Effect::None, "late");
        assert!(ids(&d).is_empty());
    }

    #[test]
    fn completed_before_anything_is_a_tombstone() {
        let mut d = Demand::default();
        assert_eq!(d.observe(event(2, Phase::Completed), 10), Effect::None);
        assert_eq!(d.observe(event(2, Phase::Queued), 11), Effect::None);
        assert_eq!(d.observe(event(2, Phase::InProgress), 12), Effect::None);
        assert!(ids(&d).is_empty());
    }

    #[test]
    fn waiting_jobs_are_not_demand_until_queued() {
        let mut d = Demand::default();
        d.observe(event(3, Phase::Waiting), 10);
        assert!(ids(&d).is_empty());
        assert_eq!(d.observe(event(3, Phase::Queued), 20), Effect::Queued);
        assert_eq!(ids(&d), vec![3]);
    }

    #[test]
    fn polls_add_missed_jobs_and_drop_jobs_that_moved_on() {
        let mut d = Demand::default();
        d.observe(event(1, Phase::Queued), 10);
        d.observe(event(2, Phase::Queued), 10);
        // Job 2's in_progress webhook was lost; job 3's queued webhook was lost.
        let repos = vec!["acme/app".to_string()];
        let repaired = d.reconcile_poll(&repos, &[job(1, "acme/app"), job(3, "acme/app")], 20, 30);
        assert_eq!(repaired, 2);
        assert_eq!(ids(&d), vec![1, 3]);
    }

    #[test]
    fn a_poll_never_drops_what_it_could_not_see() {
        let mut d = Demand::default();
        // Queued after the poll started: the poll's empty answer says nothing about it.
        d.observe(event(1, Phase::Queued), 25);
        // Another repository's job: not covered by this poll.
        d.observe(
            JobEvent {
                request: job(2, "acme/other"),
                phase: Phase::Queued,
                runner: None,
            },
            5,
        );
        d.reconcile_poll(&["acme/app".to_string()], &[], 20, 30);
        assert_eq!(ids(&d), vec![1, 2]);
    }

    #[test]
    fn webhook_payloads_are_read() {
        let payload = json!({
            "action": "in_progress",
            "workflow_job": {"id": 7, "run_id": 1, "labels": ["self-hosted", "gpu"], "runner_name": "drover-f-gpu-abcde"},
            "repository": {"full_name": "acme/app"},
            "enterprise": {"slug": "big"},
        });
        let ev = JobEvent::from_payload(&payload).unwrap();
        assert_eq!(ev.phase, Phase::InProgress);
        assert_eq!(ev.request.labels, vec!["self-hosted", "gpu"]);
        assert_eq!(ev.request.enterprise.as_deref(), Some("big"));
        assert_eq!(ev.runner.as_deref(), Some("drover-f-gpu-abcde"));
        assert!(JobEvent::from_payload(&json!({"action": "queued"})).is_none());
    }

    #[test]
    fn finished_jobs_are_forgotten_queued_ones_kept() {
        let mut d = Demand::default();
        d.observe(event(1, Phase::Queued), 10);
        d.observe(event(2, Phase::Completed), 10);
        d.forget_before(100);
        assert_eq!(d.len(), 1);
        assert_eq!(ids(&d), vec![1]);
    }
}
