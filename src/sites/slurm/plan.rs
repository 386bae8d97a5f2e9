//! The pure runner plan: desired runner counts + drover's live runner jobs → what to
//! submit, release, cancel and keep. No I/O; see `docs/slurm.md` ("Scale-down policy").
//!
//! Rules, per declared runner set:
//! 1. Only pending and running jobs count ("live"); completing, failed and finished do not.
//! 2. Two live jobs in one slot are duplicates: the lowest job id wins; a pending loser is
//!    cancelled, a running loser is kept (and counted).
//! 3. Too few: submit into the lowest free slots.
//! 4. Too many: cancel pending jobs, newest first; then *retire* running jobs whose GitHub
//!    runner is registered, online and idle (apply deregisters the runner first and
//!    cancels the job only if GitHub agrees it is not busy). A running job whose runner is
//!    busy, or unknown to GitHub, is never cancelled by scale-down.
//! 5. Surviving held jobs (left by an interrupted apply) are released.
//! 6. A running job of a JIT runner set whose runner has not registered within the start
//!    deadline is cancelled and replaced, and reported (`runner-start-timeout`).
//!
//! Runner sets no longer declared on the site: pending jobs are cancelled only with prune,
//! running ones are kept and reported (`runner-set-undeclared`).

use std::collections::{BTreeMap, BTreeSet};

use super::observe::{Runner, RunnerState};
use crate::plan::{
    Action, Change, Finding, FindingSeverity, LiveState, RunnerChange, RunnerReason, Target,
};
use crate::runners::RegisteredRunner;
use crate::runners::scale_down::{self, Live, Standing};
use crate::runners::{RunnerId, Slot};

/// Target kind of runner jobs in plans.
pub const TARGET_KIND: &str = "SlurmJob";

/// A declared runner set and how many runners it should have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredSet {
    /// Runner set name.
    pub set: String,
    /// Desired number of live runners.
    pub count: u32,
    /// Its runners register with GitHub through drover's JIT endpoint (the default
    /// command), so the start deadline applies.
    pub jit: bool,
}

/// GitHub's view of the site's runner jobs, from the autoscaler.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GithubView {
    /// `false` outside the autoscaler: nothing is known, nothing is retired or replaced.
    pub known: bool,
    /// The registered runner of each job, by job id.
    pub registered: BTreeMap<u64, RegisteredRunner>,
    /// Now, seconds since the epoch.
    pub now: u64,
    /// Seconds a running JIT runner job may take to register its runner.
    pub start_deadline: u64,
}

impl GithubView {
    fn idle(&self, job: u64) -> bool {
        self.registered
            .get(&job)
            .is_some_and(|r| r.online && !r.busy)
    }

    fn start_timed_out(&self, r: &Runner) -> bool {
        self.known
            && r.state == RunnerState::Running
            && r.start_time > 0
            && !self.registered.contains_key(&r.id)
            && self.now.saturating_sub(r.start_time) > self.start_deadline
    }
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
    /// The job started but its runner never registered within the deadline.
    StartTimeout,
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
    /// Cancel a job (pending, or a running one whose runner never registered).
    Cancel(Runner, CancelReason),
    /// Deregister an idle runner, then cancel its running job (scale-down).
    Retire(Runner),
    /// Leave a job as it is.
    Keep(Runner, String),
}

impl Op {
    /// The plan change this step shows as.
    pub fn change(&self) -> Change {
        let (action, target, reason, runner) = match self {
            Op::Submit { set, slot } => (
                Action::Create,
                target(set, *slot),
                "scale up".into(),
                RunnerChange {
                    reason: RunnerReason::ScaleUp,
                    state: None,
                },
            ),
            Op::Release(r) => (
                Action::Update,
                target_of(r),
                format!("release held job {} (left by an interrupted apply)", r.id),
                typed(r, RunnerReason::ReleaseHeld),
            ),
            Op::Cancel(r, why) => {
                let text = match why {
                    CancelReason::ScaleDown => "scale down".to_owned(),
                    CancelReason::Duplicate(of) => format!("duplicate of job {of}"),
                    CancelReason::Undeclared => "runner set no longer declared".to_owned(),
                    CancelReason::StartTimeout => {
                        "runner never came online within the start deadline".to_owned()
                    }
                };
                (
                    Action::Delete,
                    target_of(r),
                    format!("{text}: {} job {}", r.state.as_str(), r.id),
                    typed(r, why.typed()),
                )
            }
            Op::Retire(r) => (
                Action::Delete,
                target_of(r),
                format!("scale down: idle runner, running job {}", r.id),
                typed(r, RunnerReason::ScaleDown),
            ),
            Op::Keep(r, note) => (
                Action::Unchanged,
                target_of(r),
                note.clone(),
                typed(r, RunnerReason::Kept),
            ),
        };
        Change::of_runner(action, target, reason, runner)
    }
}

impl CancelReason {
    fn typed(self) -> RunnerReason {
        match self {
            CancelReason::ScaleDown => RunnerReason::ScaleDown,
            CancelReason::Duplicate(_) => RunnerReason::Duplicate,
            CancelReason::Undeclared => RunnerReason::Undeclared,
            CancelReason::StartTimeout => RunnerReason::StartTimeout,
        }
    }
}

/// The typed change of job `r`, with its observed state.
fn typed(r: &Runner, reason: RunnerReason) -> RunnerChange {
    let state = match r.state {
        RunnerState::Pending => Some(LiveState::Pending),
        RunnerState::Running => Some(LiveState::Running),
        RunnerState::Completing => Some(LiveState::Completing),
        RunnerState::Failed | RunnerState::Finished => None,
    };
    RunnerChange { reason, state }
}

/// The plan target of a runner: `<set>#<slot>`.
pub fn target(set: &str, slot: u32) -> Target {
    RunnerId::new(set, Slot::Number(slot)).target(TARGET_KIND, None)
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
pub fn plan_runners(
    desired: &[DesiredSet],
    runners: &[Runner],
    prune: bool,
    github: &GithubView,
) -> RunnerPlan {
    let mut by_set: BTreeMap<&str, Vec<&Runner>> = BTreeMap::new();
    for r in runners {
        by_set.entry(r.identity.set.as_str()).or_default().push(r);
    }
    let mut plan = RunnerPlan::default();
    let mut desired: Vec<&DesiredSet> = desired.iter().collect();
    desired.sort_by(|a, b| a.set.cmp(&b.set));
    for d in &desired {
        let jobs = by_set.remove(d.set.as_str()).unwrap_or_default();
        plan_set(d, &jobs, github, &mut plan);
    }
    for (set, jobs) in by_set {
        plan_undeclared(set, &jobs, prune, &mut plan);
    }
    plan
}

fn plan_set(d: &DesiredSet, jobs: &[&Runner], github: &GithubView, plan: &mut RunnerPlan) {
    let mut jobs: Vec<&Runner> = jobs.to_vec();
    jobs.sort_by_key(|r| (r.identity.slot, r.id));
    failed_finding(&d.set, &jobs, plan);
    let mut live: Vec<&Runner> = Vec::new();
    let mut winners: BTreeMap<u32, u64> = BTreeMap::new();
    let mut dup_cancels = Vec::new();
    let mut timed_out = Vec::new();
    for r in jobs.iter().copied() {
        match r.state {
            RunnerState::Completing => plan
                .ops
                .push(Op::Keep(r.clone(), format!("completing job {}", r.id))),
            _ if d.jit && github.start_timed_out(r) => {
                timed_out.push((r.id, r.identity.slot));
                plan.ops
                    .push(Op::Cancel(r.clone(), CancelReason::StartTimeout));
            }
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
    if !timed_out.is_empty() {
        let jobs: Vec<u64> = timed_out.iter().map(|&(id, _)| id).collect();
        plan.findings.push(Finding::new(
            FindingSeverity::Warning,
            "runner-start-timeout",
            format!("RunnerSet {}", d.set),
            format!(
                "{} runner job(s) started but their runner never came online within {} s ({}); cancelled and replaced",
                timed_out.len(),
                github.start_deadline,
                ids(&jobs)
            ),
        ));
    }
    let want = d.count as usize;
    let standing: Vec<Live<u64>> = live.iter().map(|r| scale_down_view(r, github)).collect();
    let (cancel, retire): (BTreeSet<u64>, BTreeSet<u64>) = scale_down::victims(&standing, want)
        .into_iter()
        .partition(|id| {
            live.iter()
                .any(|r| r.id == *id && r.state == RunnerState::Pending)
        });
    let surviving = live.len() - cancel.len() - retire.len();
    for r in &live {
        let op = if cancel.contains(&r.id) {
            Op::Cancel((*r).clone(), CancelReason::ScaleDown)
        } else if retire.contains(&r.id) {
            Op::Retire((*r).clone())
        } else if r.held {
            Op::Release((*r).clone())
        } else if r.state == RunnerState::Running && surviving > want {
            Op::Keep(
                (*r).clone(),
                format!(
                    "running job {}; above the desired {want}, but a busy or unregistered runner is never cancelled by scale-down",
                    r.id
                ),
            )
        } else {
            Op::Keep((*r).clone(), format!("{} job {}", r.state.as_str(), r.id))
        };
        plan.ops.push(op);
    }
    if surviving < want {
        // Slots of timed-out jobs stay unused until their cancel has gone through.
        let used: BTreeSet<u32> = live
            .iter()
            .map(|r| r.identity.slot)
            .chain(timed_out.iter().map(|&(_, slot)| slot))
            .collect();
        let free = (1u32..).filter(|s| !used.contains(s));
        for slot in free.take(want - surviving) {
            plan.ops.push(Op::Submit {
                set: d.set.clone(),
                slot,
            });
        }
    }
}

/// How scale-down may treat live job `r`: pending jobs by submit time, running jobs whose
/// runner is idle by start time; any other running job is protected.
fn scale_down_view(r: &Runner, github: &GithubView) -> Live<u64> {
    let (standing, since) = match r.state {
        RunnerState::Pending => (Standing::Pending, r.submit_time),
        RunnerState::Running if github.idle(r.id) => (Standing::Idle, r.start_time),
        _ => (Standing::Protected, r.start_time),
    };
    Live {
        key: r.id,
        standing,
        since: i64::try_from(since).unwrap_or(i64::MAX),
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
            identity: JobIdentity::new("f", "hpc", set, slot),
            state,
            held: false,
            submit_time: id,
            start_time: id,
        }
    }

    fn desired(set: &str, count: u32) -> DesiredSet {
        DesiredSet {
            set: set.into(),
            count,
            jit: true,
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
        let plan = plan_runners(&[desired("s", 3)], &jobs, false, &GithubView::default());
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
        let plan = plan_runners(&[desired("s", 3)], &jobs, false, &GithubView::default());
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
        let plan = plan_runners(&[desired("s", 0)], &jobs, true, &GithubView::default());
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
        let plan = plan_runners(
            &[desired("s", 1)],
            &[old, new],
            false,
            &GithubView::default(),
        );
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
        let plan = plan_runners(
            &[desired("s", 1)],
            &[dup.clone(), held.clone()],
            false,
            &GithubView::default(),
        );
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
        let plan = plan_runners(&[desired("s", 2)], &jobs, false, &GithubView::default());
        assert!(plan.ops.iter().all(|op| matches!(op, Op::Keep(..))));
    }

    #[test]
    fn finished_jobs_do_not_count_and_failed_ones_are_reported() {
        let jobs = [
            runner(1, "s", 1, Failed),
            runner(2, "s", 2, Completing),
            runner(3, "s", 3, RunnerState::Finished),
        ];
        let plan = plan_runners(&[desired("s", 1)], &jobs, false, &GithubView::default());
        assert_eq!(
            summary(&plan),
            vec!["unchanged completing job 2 [s#2]", "create scale up [s#1]"]
        );
        assert_eq!(plan.findings[0].code, "runner-jobs-failed");
    }

    #[test]
    fn undeclared_sets_are_pruned_only_with_prune_and_running_ones_reported() {
        let jobs = [runner(1, "gone", 1, Running), runner(2, "gone", 2, Pending)];
        let keep = plan_runners(&[], &jobs, false, &GithubView::default());
        assert!(keep.ops.iter().all(|op| matches!(op, Op::Keep(..))));
        let prune = plan_runners(&[], &jobs, true, &GithubView::default());
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
        let plan = plan_runners(
            &[desired("b", 1), desired("a", 1)],
            &jobs,
            false,
            &GithubView::default(),
        );
        assert_eq!(
            summary(&plan),
            vec![
                "unchanged running job 1 [a#1]",
                "unchanged pending job 2 [b#1]"
            ]
        );
    }

    fn github(registered: &[(u64, bool, bool)], now: u64) -> GithubView {
        GithubView {
            known: true,
            registered: registered
                .iter()
                .map(|&(job, online, busy)| {
                    let r = RegisteredRunner {
                        id: job + 1000,
                        online,
                        busy,
                    };
                    (job, r)
                })
                .collect(),
            now,
            start_deadline: 600,
        }
    }

    #[test]
    fn scale_down_retires_idle_runners_never_busy_or_unknown_ones() {
        let jobs = [
            runner(1, "s", 1, Running),
            runner(2, "s", 2, Running),
            runner(3, "s", 3, Running),
            runner(4, "s", 4, Running),
        ];
        // 1 busy, 2 and 3 idle, 4 not registered yet; want 1.
        let view = github(&[(1, true, true), (2, true, false), (3, true, false)], 100);
        let plan = plan_runners(&[desired("s", 1)], &jobs, false, &view);
        let retired: Vec<u64> = plan
            .ops
            .iter()
            .filter_map(|op| match op {
                Op::Retire(r) => Some(r.id),
                _ => None,
            })
            .collect();
        assert_eq!(retired, vec![2, 3]);
        assert!(
            plan.ops
                .iter()
                .all(|op| !matches!(op, Op::Cancel(r, _) if r.state == Running)),
            "{:?}",
            plan.ops
        );
    }

    #[test]
    fn idle_runners_are_retired_only_after_pending_jobs() {
        let jobs = [runner(1, "s", 1, Running), runner(2, "s", 2, Pending)];
        let view = github(&[(1, true, false)], 100);
        let plan = plan_runners(&[desired("s", 1)], &jobs, false, &view);
        assert_eq!(
            summary(&plan),
            vec![
                "unchanged running job 1 [s#1]",
                "delete scale down: pending job 2 [s#2]"
            ]
        );
    }

    #[test]
    fn a_runner_that_never_registers_is_replaced_and_reported() {
        let mut late = runner(1, "s", 1, Running);
        late.start_time = 100;
        let view = github(&[], 100 + 601);
        let plan = plan_runners(&[desired("s", 1)], &[late.clone()], false, &view);
        assert_eq!(
            summary(&plan),
            vec![
                "delete runner never came online within the start deadline: running job 1 [s#1]",
                "create scale up [s#2]",
            ]
        );
        assert_eq!(plan.findings[0].code, "runner-start-timeout");
        // Within the deadline, or for a set with its own command, nothing happens.
        let early = github(&[], 100 + 599);
        assert!(
            plan_runners(&[desired("s", 1)], &[late.clone()], false, &early)
                .findings
                .is_empty()
        );
        let own_command = DesiredSet {
            jit: false,
            ..desired("s", 1)
        };
        assert!(
            plan_runners(&[own_command], &[late], false, &view)
                .findings
                .is_empty()
        );
    }
}
