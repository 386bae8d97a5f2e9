//! Observing a Slurm site: drover's runner jobs, partitions and nodes, and the site checks
//! that turn them into [`Finding`]s. The I/O is [`observe`] (bounded by the site timeout);
//! everything else is pure.

use std::collections::BTreeSet;
use std::time::Duration;

use super::identity::JobIdentity;
use super::types::{Job, JobState, Node, Partition};
use super::{Error, SlurmDriver};
use crate::plan::{Finding, FindingSeverity};

/// Slurm's reason for a job held by its user (`sbatch --hold`, REST `hold: true`).
pub const HELD_REASON: &str = "JobHeldUser";

/// What one look at the site saw.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Every job slurmctld lists.
    pub jobs: Vec<Job>,
    /// Every partition.
    pub partitions: Vec<Partition>,
    /// Every node.
    pub nodes: Vec<Node>,
}

/// Why observing failed.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    /// A driver call failed.
    #[error(transparent)]
    Slurm(#[from] Error),
    /// The site did not answer within its timeout.
    #[error("no answer within the site timeout ({0} s)")]
    Timeout(u64),
}

/// Lists jobs, partitions and nodes concurrently, within `timeout`. When reads fail, the
/// error is the most telling of them ([`more_telling`]): every read is awaited, since the
/// first to fail is not always the one that says what happened.
pub async fn observe(
    driver: &dyn SlurmDriver,
    timeout: Duration,
) -> Result<Observed, ObserveError> {
    let all = async {
        let (jobs, partitions, nodes) =
            tokio::join!(driver.jobs(), driver.partitions(), driver.nodes());
        let ((jobs, partitions), nodes) = both(both(jobs, partitions), nodes)?;
        Ok::<_, Error>(Observed {
            jobs,
            partitions,
            nodes,
        })
    };
    match tokio::time::timeout(timeout, all).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(ObserveError::Timeout(timeout.as_secs())),
    }
}

/// Both values, or the more telling error.
fn both<A, B>(a: Result<A, Error>, b: Result<B, Error>) -> Result<(A, B), Error> {
    match (a, b) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        (Err(e), Ok(_)) | (Ok(_), Err(e)) => Err(e),
        (Err(a), Err(b)) => Err(more_telling(a, b)),
    }
}

/// Of two errors of parallel reads, `first` unless only `second` carries a Slurm error
/// code. slurmrestd answers a bad token or a stopped slurmctld on its partitions endpoint
/// with an empty error list (HTTP 511 or 502 alone), while jobs and nodes carry the code
/// (1007, 1800) that says exactly what happened.
pub fn more_telling(first: Error, second: Error) -> Error {
    if first.code().is_none() && second.code().is_some() {
        second
    } else {
        first
    }
}

/// A runner's state, from its job's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RunnerState {
    /// Waiting to start (including held).
    Pending,
    /// Running (or configuring, suspended): the runner may be busy.
    Running,
    /// The job is ending; the runner is gone.
    Completing,
    /// The job ended badly (failed, timeout, node failure, out of memory, ...).
    Failed,
    /// The job ended (completed, cancelled).
    Finished,
}

impl RunnerState {
    /// Maps a Slurm job state.
    pub fn of(state: &JobState) -> Self {
        match state {
            JobState::Pending => RunnerState::Pending,
            JobState::Running => RunnerState::Running,
            JobState::Completing => RunnerState::Completing,
            JobState::Failed => RunnerState::Failed,
            JobState::Completed | JobState::Cancelled => RunnerState::Finished,
            JobState::Other(s) => match s.as_str() {
                "CONFIGURING" | "SUSPENDED" | "STOPPED" | "RESIZING" | "SIGNALING"
                | "STAGE_OUT" => RunnerState::Running,
                "REQUEUED" | "REQUEUE_HOLD" | "REQUEUE_FED" | "RESV_DEL_HOLD" => {
                    RunnerState::Pending
                }
                "TIMEOUT" | "NODE_FAIL" | "OUT_OF_MEMORY" | "BOOT_FAIL" | "DEADLINE"
                | "PREEMPTED" => RunnerState::Failed,
                _ => RunnerState::Finished,
            },
        }
    }

    /// Pending or running: counts towards the desired number of runners.
    pub fn is_live(self) -> bool {
        matches!(self, RunnerState::Pending | RunnerState::Running)
    }

    /// Lower-case name, for plans.
    pub fn as_str(self) -> &'static str {
        match self {
            RunnerState::Pending => "pending",
            RunnerState::Running => "running",
            RunnerState::Completing => "completing",
            RunnerState::Failed => "failed",
            RunnerState::Finished => "finished",
        }
    }
}

/// One of drover's runner jobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runner {
    /// Slurm job id.
    pub id: u64,
    /// Fleet, set and slot.
    pub identity: JobIdentity,
    /// State.
    pub state: RunnerState,
    /// Held by its user (a submit that was not released yet).
    pub held: bool,
    /// Submit time, seconds since the epoch.
    pub submit_time: u64,
    /// Start time, seconds since the epoch (meaningful once running).
    pub start_time: u64,
}

impl Runner {
    /// The GitHub runner name of this job's runner: `drover-<fleet>-<set>-j<job id>`.
    pub fn runner_name(&self) -> String {
        crate::runners::runner_name(
            &self.identity.fleet,
            &self.identity.set,
            &format!("j{}", self.id),
        )
    }
}

/// drover's runner jobs among `jobs`: name and comment in drover's format
/// ([`JobIdentity::parse`]), of `fleet`, and submitted by `user` when it is known.
pub fn owned_runners(jobs: &[Job], fleet: &str, site: &str, user: Option<&str>) -> Vec<Runner> {
    jobs.iter()
        .filter(|j| user.is_none_or(|u| j.user == u))
        .filter_map(|j| {
            let identity = JobIdentity::parse(&j.name, &j.comment)?;
            (identity.fleet == fleet && identity.is_of_site(site)).then(|| {
                let state = RunnerState::of(&j.state);
                Runner {
                    id: j.id,
                    identity,
                    state,
                    held: state == RunnerState::Pending && j.reason == HELD_REASON,
                    submit_time: j.submit_time,
                    start_time: j.start_time,
                }
            })
        })
        .collect()
}

/// What the fleet expects of one pool's partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolExpectation {
    /// NodePool name.
    pub pool: String,
    /// Partition its runners go to.
    pub partition: String,
    /// GRES each node must offer, e.g. `gpu:a100:4`.
    pub gres: Option<String>,
    /// Nodes the pool should have.
    pub node_count: Option<u32>,
}

/// Site checks: partitions exist and are UP, have enough nodes and the GRES; nodes of the
/// pools' partitions that are drained or down. Codes are documented in `docs/slurm.md`.
pub fn site_findings(
    pools: &[PoolExpectation],
    partitions: &[Partition],
    nodes: &[Node],
) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut checked_nodes = BTreeSet::new();
    for pool in pools {
        let subject = format!("NodePool {} (partition {})", pool.pool, pool.partition);
        let Some(part) = partitions.iter().find(|p| p.name == pool.partition) else {
            out.push(Finding::new(
                FindingSeverity::Error,
                "partition-missing",
                subject,
                format!("partition `{}` does not exist on the site", pool.partition),
            ));
            continue;
        };
        if part.state != "UP" {
            out.push(Finding::new(
                FindingSeverity::Error,
                "partition-not-up",
                subject.clone(),
                format!(
                    "partition `{}` is {}; runner jobs will pend",
                    part.name, part.state
                ),
            ));
        }
        if let Some(want) = pool.node_count
            && part.total_nodes < want
        {
            out.push(Finding::new(
                FindingSeverity::Warning,
                "pool-short-of-nodes",
                subject.clone(),
                format!(
                    "partition `{}` has {} node(s), the pool expects {want}",
                    part.name, part.total_nodes
                ),
            ));
        }
        if let Some(gres) = &pool.gres
            && !gres_offered(gres, &part.gres)
        {
            let have = if part.gres.is_empty() {
                "none".to_owned()
            } else {
                part.gres.clone()
            };
            out.push(Finding::new(
                FindingSeverity::Error,
                "gres-missing",
                subject.clone(),
                format!(
                    "partition `{}` offers no GRES `{gres}` (it has {have})",
                    part.name
                ),
            ));
        }
        for name in &part.nodes {
            if !checked_nodes.insert(name.clone()) {
                continue;
            }
            let Some(node) = nodes.iter().find(|n| &n.name == name) else {
                continue;
            };
            if let Some(code) = node_problem(&node.state) {
                let reason = if node.reason.is_empty() {
                    String::new()
                } else {
                    format!(": {}", node.reason)
                };
                out.push(Finding::new(
                    FindingSeverity::Warning,
                    code,
                    format!("node {name} (partition {})", part.name),
                    format!("node is {}{reason}", node.state),
                ));
            }
        }
    }
    out
}

/// `node-down` or `node-drained` for a node state such as `IDLE+DRAIN` or `down*`.
fn node_problem(state: &str) -> Option<&'static str> {
    let flags: Vec<String> = state
        .split('+')
        .map(|f| {
            f.trim_end_matches(['*', '~', '#', '$', '@', '^', '-', '!', '%'])
                .to_ascii_uppercase()
        })
        .collect();
    let any = |names: &[&str]| flags.iter().any(|f| names.contains(&f.as_str()));
    if any(&["DOWN", "FAIL", "FAILING", "NOT_RESPONDING"]) {
        Some("node-down")
    } else if any(&["DRAIN", "DRAINED", "DRAINING"]) {
        Some("node-drained")
    } else {
        None
    }
}

/// Whether `offered` (comma-separated, e.g. `gpu:a100:4(S:0),mps:100`) covers `want`
/// (`name[:type][:count]`).
pub fn gres_offered(want: &str, offered: &str) -> bool {
    let (name, kind, count) = split_gres(want);
    offered.split(',').any(|item| {
        let item = item.split('(').next().unwrap_or("").trim();
        let (n, k, c) = split_gres(item);
        n == name && (kind.is_none() || k == kind) && c >= count
    })
}

/// `gpu:a100:4` → (`gpu`, Some(`a100`), 4); the count defaults to 1.
fn split_gres(g: &str) -> (&str, Option<&str>, u64) {
    let mut parts = g.split(':');
    let name = parts.next().unwrap_or("");
    let (mut kind, mut count) = (None, 1);
    for p in parts {
        match p.parse::<u64>() {
            Ok(n) => count = n,
            Err(_) => kind = Some(p),
        }
    }
    (name, kind, count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: u64, name: &str, comment: &str, user: &str, state: JobState) -> Job {
        Job {
            id,
            name: name.into(),
            comment: comment.into(),
            user: user.into(),
            partition: "cpu".into(),
            state,
            reason: "None".into(),
            gres: String::new(),
            tres: String::new(),
            submit_time: id,
            start_time: id,
        }
    }

    #[test]
    fn ownership_needs_name_comment_fleet_site_and_user() {
        let c = "drover:fleet=f,set=s,slot=1";
        let jobs = vec![
            job(1, "drover-f-s", c, "ci", JobState::Running),
            job(2, "drover-f-s", "", "ci", JobState::Pending),
            job(
                3,
                "drover-f-s",
                "drover:fleet=f,set=s",
                "ci",
                JobState::Pending,
            ),
            job(4, "drover-f-s", c, "root", JobState::Pending),
            job(
                5,
                "drover-g-s",
                "drover:fleet=g,set=s,slot=1",
                "ci",
                JobState::Pending,
            ),
            job(6, "other", c, "ci", JobState::Pending),
            job(
                7,
                "drover-f-s",
                &format!("{c},site=hpc"),
                "ci",
                JobState::Pending,
            ),
            job(
                8,
                "drover-f-s",
                &format!("{c},site=lab"),
                "ci",
                JobState::Pending,
            ),
        ];
        let ids = |r: Vec<Runner>| r.iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(
            ids(owned_runners(&jobs, "f", "hpc", Some("ci"))),
            vec![1, 7]
        );
        assert_eq!(ids(owned_runners(&jobs, "f", "hpc", None)), vec![1, 4, 7]);
        assert_eq!(ids(owned_runners(&jobs, "f", "lab", None)), vec![1, 4, 8]);
    }

    #[test]
    fn held_jobs_are_recognised() {
        let mut j = job(
            1,
            "drover-f-s",
            "drover:fleet=f,set=s,slot=2",
            "ci",
            JobState::Pending,
        );
        j.reason = HELD_REASON.into();
        let r = &owned_runners(&[j], "f", "hpc", None)[0];
        assert!(r.held && r.state == RunnerState::Pending && r.identity.slot == 2);
    }

    #[test]
    fn gres_matching() {
        assert!(gres_offered("gpu:a100:4", "gpu:a100:4"));
        assert!(gres_offered("gpu:a100:2", "mps:100,gpu:a100:4(S:0-1)"));
        assert!(gres_offered("gpu:4", "gpu:a100:4"));
        assert!(!gres_offered("gpu:h100:1", "gpu:a100:4"));
        assert!(!gres_offered("gpu:a100:8", "gpu:a100:4"));
        assert!(!gres_offered("gpu", ""));
    }

    fn part(name: &str, state: &str, gres: &str) -> Partition {
        Partition {
            name: name.into(),
            state: state.into(),
            nodes: vec!["n1".into(), "n2".into()],
            total_nodes: 2,
            gres: gres.into(),
        }
    }

    fn node(name: &str, state: &str, reason: &str) -> Node {
        Node {
            name: name.into(),
            state: state.into(),
            reason: reason.into(),
            gres: String::new(),
            partitions: vec![],
        }
    }

    #[test]
    fn findings_cover_every_check() {
        let pools = vec![
            PoolExpectation {
                pool: "a".into(),
                partition: "gpu".into(),
                gres: Some("gpu:a100:4".into()),
                node_count: Some(8),
            },
            PoolExpectation {
                pool: "b".into(),
                partition: "gone".into(),
                gres: None,
                node_count: None,
            },
            PoolExpectation {
                pool: "c".into(),
                partition: "maint".into(),
                gres: Some("gpu:h100:1".into()),
                node_count: Some(2),
            },
        ];
        let parts = vec![part("gpu", "UP", "gpu:a100:4"), part("maint", "DOWN", "")];
        let nodes = vec![node("n1", "IDLE+DRAIN", "disk"), node("n2", "down*", "")];
        let codes: Vec<(String, String)> = site_findings(&pools, &parts, &nodes)
            .into_iter()
            .map(|f| (f.code, f.subject))
            .collect();
        assert_eq!(
            codes,
            vec![
                (
                    "pool-short-of-nodes".into(),
                    "NodePool a (partition gpu)".into()
                ),
                ("node-drained".into(), "node n1 (partition gpu)".into()),
                ("node-down".into(), "node n2 (partition gpu)".into()),
                (
                    "partition-missing".into(),
                    "NodePool b (partition gone)".into()
                ),
                (
                    "partition-not-up".into(),
                    "NodePool c (partition maint)".into()
                ),
                ("gres-missing".into(), "NodePool c (partition maint)".into()),
            ]
        );
    }
}
