//! The pure runner plan: desired runner counts + drover's live runner jobs → what to
//! submit, release, cancel and keep. No I/O; see `docs/slurm.md` ("Scale-down policy").
//!
//! Rules, per declared runner set:
//! 1. Only pending and running jobs count ("live"); completing, failed and finished do not.
//! 2. Two live jobs in one slot are duplicates: the lowest job id wins; a pending loser is
//!    cancelled, a running loser is kept (and counted).
//! 3. Too few: submit into the lowest free slots.
//! 4. Too many: cancel pending jobs, newest first. Running jobs are never cancelled by
//!    scale-down (a running runner may be busy; only the autoscaler, which knows GitHub's
//!    busy state, will remove running runners).
//! 5. Surviving held jobs (left by an interrupted apply) are released.
//!
//! Runner sets no longer declared on the site: pending jobs are cancelled only with prune,
//! running ones are kept and reported (`runner-set-undeclared`).

use std::collections::{BTreeMap, BTreeSet};

use super::observe::{Runner, RunnerState};
use crate::plan::{Action, Change, Finding, FindingSeverity, Target};

/// Target kind of runner jobs in plans.
pub const TARGET_KIND: &str = "SlurmJob";

/// A declared runner set and how many runners it should have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredSet {
    /// Runner set name.
    pub set: String,
    /// Desired number of live runners.
    pub count: u32,
}

/// Why a job is cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// More live runners than desired.
    ScaleDown,
    /// Another live job (the one given) has the same slot and a lower id.
    Duplicate(u64),
    /// The runner set is no longer declared on the site (prune).
    Undeclared,
}

/// One step of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Submit a runner into a slot.
    Submit {
        /// Runner set.
        set: String,
        /// Slot.
        slot: u32,
    },
    /// Release a held job that survives.
    Release(Runner),
    /// Cancel a pending job.
    Cancel(Runner, CancelReason),
    /// Leave a job as it is.
    Keep(Runner, String),
}

impl Op {
    /// The plan change this step shows as.
    pub fn change(&self) -> Change {
        let (action, target, reason) = match self {
            Op::Submit { set, slot } => (Action::Create, target(set, *slot), "scale up".into()),
            Op::Release(r) => (
                Action::Update,
                target_of(r),
                format!("release held job {} (left by an interrupted apply)", r.id),
            ),
            Op::Cancel(r, why) => {
                let why = match why {
                    CancelReason::ScaleDown => "scale down".to_owned(),
                    CancelReason::Duplicate(of) => format!("duplicate of job {of}"),
                    CancelReason::Undeclared => "runner set no longer declared".to_owned(),
                };
                (
                    Action::Delete,
                    target_of(r),
                    format!("{why}: pending job {}", r.id),
                )
            }
            Op::Keep(r, note) => (Action::Unchanged, target_of(r), note.clone()),
        };
        Change {
            action,
            target,
            diff: None,
            reason: Some(reason),
        }
    }
}

/// The plan target of a runner: `<set>#<slot>`.
pub fn target(set: &str, slot: u32) -> Target {
    Target {
        kind: TARGET_KIND.into(),
        namespace: None,
        name: format!("{set}#{slot}"),
    }
}

fn target_of(r: &Runner) -> Target {
    target(&r.identity.set, r.identity.slot)
}

/// The steps and the findings about runners.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunnerPlan {
    /// Steps, grouped by runner set in name order.
    pub ops: Vec<Op>,
    /// Findings about runner jobs (failed jobs, undeclared running runners).
    pub findings: Vec<Finding>,
}

/// Plans every runner set of the site. `runners` are the site's jobs owned by the fleet
/// ([`super::observe::owned_runners`]).
pub fn plan_runners(desired: &[DesiredSet], runners: &[Runner], prune: bool) -> RunnerPlan {
    let mut by_set: BTreeMap<&str, Vec<&Runner>> = BTreeMap::new();
    for r in runners {
        by_set.entry(r.identity.set.as_str()).or_default().push(r);
    }
    let mut plan = RunnerPlan::default();
    let mut desired: Vec<&DesiredSet> = desired.iter().collect();
    desired.sort_by(|a, b| a.set.cmp(&b.set));
    for d in &desired {
        let jobs = by_set.remove(d.set.as_str()).unwrap_or_default();
        plan_set(d, &jobs, &mut plan);
    }
    for (set, jobs) in by_set {
        plan_undeclared(set, &jobs, prune, &mut plan);
    }
    plan
}

fn plan_set(d: &DesiredSet, jobs: &[&Runner], plan: &mut RunnerPlan) {
    let mut jobs: Vec<&Runner> = jobs.to_vec();
    jobs.sort_by_key(|r| (r.identity.slot, r.id));
    failed_finding(&d.set, &jobs, plan);
    let mut live: Vec<&Runner> = Vec::new();
    let mut winners: BTreeMap<u32, u64> = BTreeMap::new();
    let mut dup_cancels = Vec::new();
    for r in jobs.iter().copied() {
        match r.state {
            RunnerState::Completing => plan
                .ops
                .push(Op::Keep(r.clone(), format!("completing job {}", r.id))),
            s if s.is_live() => match winners.get(&r.identity.slot) {
                None => {
                    winners.insert(r.identity.slot, r.id);
                    live.push(r);
                }
                Some(&winner) if r.state == RunnerState::Pending => {
                    dup_cancels.push(Op::Cancel(r.clone(), CancelReason::Duplicate(winner)));
                }
                Some(_) => live.push(r),
            },
            _ => {}
        }
    }
    plan.ops.extend(dup_cancels);
    let want = d.count as usize;
    let mut cancel: BTreeSet<u64> = BTreeSet::new();
    if live.len() > want {
        let mut pending: Vec<&&Runner> = live
            .iter()
            .filter(|r| r.state == RunnerState::Pending)
            .collect();
        pending.sort_by_key(|r| std::cmp::Reverse((r.submit_time, r.id)));
        cancel.extend(pending.iter().take(live.len() - want).map(|r| r.id));
    }
    let surviving = live.len() - cancel.len();
    for r in &live {
        let op = if cancel.contains(&r.id) {
            Op::Cancel((*r).clone(), CancelReason::ScaleDown)
        } else if r.held {
            Op::Release((*r).clone())
        } else if r.state == RunnerState::Running && surviving > want {
            Op::Keep(
                (*r).clone(),
                format!(
                    "running job {}; above the desired {want}, but running runners are never cancelled by scale-down",
                    r.id
                ),
            )
        } else {
            Op::Keep((*r).clone(), format!("{} job {}", r.state.as_str(), r.id))
        };
        plan.ops.push(op);
    }
    if surviving < want {
        let used: BTreeSet<u32> = live.iter().map(|r| r.identity.slot).collect();
        let free = (1u32..).filter(|s| !used.contains(s));
        for slot in free.take(want - surviving) {
            plan.ops.push(Op::Submit {
                set: d.set.clone(),
                slot,
            });
        }
    }
}

fn plan_undeclared(set: &str, jobs: &[&Runner], prune: bool, plan: &mut RunnerPlan) {
    failed_finding(set, jobs, plan);
    let mut running = Vec::new();
    for r in jobs {
        match r.state {
            RunnerState::Pending if prune => {
                plan.ops
                    .push(Op::Cancel((*r).clone(), CancelReason::Undeclared));
            }
            RunnerState::Pending => plan.ops.push(Op::Keep(
                (*r).clone(),
                format!(
                    "pending job {}; runner set no longer declared, prune is off",
                    r.id
                ),
            )),
            RunnerState::Running | RunnerState::Completing => {
                running.push(r.id);
                plan.ops.push(Op::Keep(
                    (*r).clone(),
                    format!(
                        "{} job {}; runner set no longer declared, left to finish",
                        r.state.as_str(),
                        r.id
                    ),
                ));
            }
            _ => {}
        }
    }
    if !running.is_empty() {
        plan.findings.push(Finding::new(
            FindingSeverity::Warning,
            "runner-set-undeclared",
            format!("RunnerSet {set}"),
            format!(
                "{} runner job(s) of a runner set the fleet no longer declares are still running ({}); drover leaves running runners to finish",
                running.len(),
                ids(&running)
            ),
        ));
    }
}

fn failed_finding(set: &str, jobs: &[&Runner], plan: &mut RunnerPlan) {
    let failed: Vec<u64> = jobs
        .iter()
        .filter(|r| r.state == RunnerState::Failed)
        .map(|r| r.id)
        .collect();
    if !failed.is_empty() {
        plan.findings.push(Finding::new(
            FindingSeverity::Warning,
            "runner-jobs-failed",
            format!("RunnerSet {set}"),
            format!(
                "{} runner job(s) ended badly recently ({}); see their output under the site's scratchDir",
                failed.len(),
                ids(&failed)
            ),
        ));
    }
}

fn ids(ids: &[u64]) -> String {
    let shown: Vec<String> = ids.iter().take(10).map(u64::to_string).collect();
    let more = ids.len().saturating_sub(10);
    if more > 0 {
        format!("jobs {} and {more} more", shown.join(", "))
    } else {
        format!("jobs {}", shown.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sites::slurm::identity::JobIdentity;
    use RunnerState::{Completing, Failed, Pending, Running};

    fn runner(id: u64, set: &str, slot: u32, state: RunnerState) -> Runner {
        Runner {
            id,
            identity: JobIdentity::new("f", set, slot),
            state,
            held: false,
            submit_time: id,
        }
    }

    fn desired(set: &str, count: u32) -> DesiredSet {
        DesiredSet {
            set: set.into(),
            count,
        }
    }

    fn summary(plan: &RunnerPlan) -> Vec<String> {
        plan.ops
            .iter()
            .map(|op| {
                let c = op.change();
                format!("{} {}", c.action.as_str(), c.reason.unwrap_or_default()).replace("  ", " ")
                    + &format!(" [{}]", c.target.name)
            })
            .collect()
    }

    #[test]
    fn scale_up_fills_the_lowest_free_slots() {
        let jobs = [runner(10, "s", 2, Running)];
        let plan = plan_runners(&[desired("s", 3)], &jobs, false);
        assert_eq!(
            summary(&plan),
            vec![
                "unchanged running job 10 [s#2]",
                "create scale up [s#1]",
                "create scale up [s#3]",
            ]
        );
    }

    #[test]
    fn scale_down_cancels_pending_newest_first_and_never_running() {
        let jobs = [
            runner(1, "s", 1, Running),
            runner(2, "s", 2, Pending),
            runner(3, "s", 3, Running),
            runner(4, "s", 4, Pending),
            runner(5, "s", 5, Pending),
        ];
        let plan = plan_runners(&[desired("s", 3)], &jobs, false);
        let cancelled: Vec<u64> = plan
            .ops
            .iter()
            .filter_map(|op| match op {
                Op::Cancel(r, CancelReason::ScaleDown) => Some(r.id),
                _ => None,
            })
            .collect();
        assert_eq!(cancelled, vec![4, 5]);
        // To zero: every pending job goes, running ones stay.
        let plan = plan_runners(&[desired("s", 0)], &jobs, true);
        let kept: Vec<u64> = plan
            .ops
            .iter()
            .filter_map(|op| match op {
                Op::Keep(r, note) => {
                    assert!(note.contains("never cancelled"), "{note}");
                    Some(r.id)
                }
                _ => None,
            })
            .collect();
        assert_eq!(kept, vec![1, 3]);
        assert!(!plan.ops.iter().any(|op| matches!(op, Op::Submit { .. })));
    }

    #[test]
    fn newest_is_by_submit_time_then_id() {
        let mut old = runner(9, "s", 1, Pending);
        old.submit_time = 1;
        let new = runner(2, "s", 2, Pending);
        let plan = plan_runners(&[desired("s", 1)], &[old, new], false);
        assert!(plan.ops.contains(&Op::Cancel(
            runner(2, "s", 2, Pending),
            CancelReason::ScaleDown
        )));
    }

    #[test]
    fn duplicates_lose_to_the_lowest_id_and_held_survivors_are_released() {
        let mut held = runner(7, "s", 1, Pending);
        held.held = true;
        let mut dup = runner(8, "s", 1, Pending);
        dup.held = true;
        let plan = plan_runners(&[desired("s", 1)], &[dup.clone(), held.clone()], false);
        assert_eq!(
            plan.ops,
            vec![
                Op::Cancel(dup, CancelReason::Duplicate(7)),
                Op::Release(held)
            ]
        );
    }

    #[test]
    fn running_duplicates_are_kept_and_counted() {
        let jobs = [runner(1, "s", 1, Running), runner(2, "s", 1, Running)];
        let plan = plan_runners(&[desired("s", 2)], &jobs, false);
        assert!(plan.ops.iter().all(|op| matches!(op, Op::Keep(..))));
    }

    #[test]
    fn finished_jobs_do_not_count_and_failed_ones_are_reported() {
        let jobs = [
            runner(1, "s", 1, Failed),
            runner(2, "s", 2, Completing),
            runner(3, "s", 3, RunnerState::Finished),
        ];
        let plan = plan_runners(&[desired("s", 1)], &jobs, false);
        assert_eq!(
            summary(&plan),
            vec!["unchanged completing job 2 [s#2]", "create scale up [s#1]"]
        );
        assert_eq!(plan.findings[0].code, "runner-jobs-failed");
    }

    #[test]
    fn undeclared_sets_are_pruned_only_with_prune_and_running_ones_reported() {
        let jobs = [runner(1, "gone", 1, Running), runner(2, "gone", 2, Pending)];
        let keep = plan_runners(&[], &jobs, false);
        assert!(keep.ops.iter().all(|op| matches!(op, Op::Keep(..))));
        let prune = plan_runners(&[], &jobs, true);
        assert!(prune.ops.contains(&Op::Cancel(
            runner(2, "gone", 2, Pending),
            CancelReason::Undeclared
        )));
        assert!(
            prune
                .ops
                .iter()
                .any(|op| matches!(op, Op::Keep(r, _) if r.id == 1))
        );
        assert_eq!(prune.findings[0].code, "runner-set-undeclared");
    }

    #[test]
    fn plans_are_stable_when_nothing_changes() {
        let jobs = [runner(1, "a", 1, Running), runner(2, "b", 1, Pending)];
        let plan = plan_runners(&[desired("b", 1), desired("a", 1)], &jobs, false);
        assert_eq!(
            summary(&plan),
            vec![
                "unchanged running job 1 [a#1]",
                "unchanged pending job 2 [b#1]"
            ]
        );
    }
}
