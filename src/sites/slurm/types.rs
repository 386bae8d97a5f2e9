//! Plain Slurm data types shared by both drivers; no I/O here.

use std::collections::BTreeMap;
use std::fmt;

/// What to submit: one batch job (a runner). Secrets belong in `environment` only.
#[derive(Clone, PartialEq, Eq)]
pub struct JobSpec {
    /// Job name (identifies the runner set; never a secret).
    pub name: String,
    /// Job comment (identifies the runner set; never a secret).
    pub comment: String,
    /// Partition to submit to.
    pub partition: String,
    /// Slurm account, if the site needs one.
    pub account: Option<String>,
    /// Quality of service, if any.
    pub qos: Option<String>,
    /// GRES per node in `--gres` syntax, e.g. `gpu:a100:1`.
    pub gres: Option<String>,
    /// CPUs per task.
    pub cpus_per_task: u32,
    /// Memory per node in MiB.
    pub memory_mb: Option<u64>,
    /// Wall-clock limit in minutes.
    pub time_limit_minutes: Option<u32>,
    /// Node feature constraint.
    pub constraint: Option<String>,
    /// Working directory of the job (must exist on the node, writable by the user).
    pub working_directory: String,
    /// The batch script, starting with `#!`.
    pub script: String,
    /// Environment of the job; may carry secrets, so values are never printed.
    pub environment: BTreeMap<String, String>,
}

impl fmt::Debug for JobSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let env_names: Vec<&String> = self.environment.keys().collect();
        f.debug_struct("JobSpec")
            .field("name", &self.name)
            .field("comment", &self.comment)
            .field("partition", &self.partition)
            .field("account", &self.account)
            .field("qos", &self.qos)
            .field("gres", &self.gres)
            .field("cpus_per_task", &self.cpus_per_task)
            .field("memory_mb", &self.memory_mb)
            .field("time_limit_minutes", &self.time_limit_minutes)
            .field("constraint", &self.constraint)
            .field("working_directory", &self.working_directory)
            .field("script", &self.script)
            .field("environment (names only)", &env_names)
            .finish()
    }
}

/// Base state of a job, as Slurm reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// Waiting for resources.
    Pending,
    /// Running.
    Running,
    /// Finishing; some processes may still be alive.
    Completing,
    /// Finished with exit code 0.
    Completed,
    /// Cancelled by a user or an administrator.
    Cancelled,
    /// Finished with a non-zero exit code.
    Failed,
    /// Any other state (TIMEOUT, NODE_FAIL, PREEMPTED, SUSPENDED, ...), as Slurm spells it.
    Other(String),
}

impl JobState {
    /// Maps a Slurm state name (any case) to a [`JobState`].
    pub fn from_slurm(name: &str) -> Self {
        match name.trim().to_ascii_uppercase().as_str() {
            "PENDING" => JobState::Pending,
            "RUNNING" => JobState::Running,
            "COMPLETING" => JobState::Completing,
            "COMPLETED" => JobState::Completed,
            "CANCELLED" => JobState::Cancelled,
            "FAILED" => JobState::Failed,
            other => JobState::Other(other.to_owned()),
        }
    }

    /// True while the job holds or waits for resources.
    pub fn is_active(&self) -> bool {
        matches!(
            self,
            JobState::Pending | JobState::Running | JobState::Completing
        )
    }
}

/// A job as observed on the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Job id.
    pub id: u64,
    /// Job name.
    pub name: String,
    /// Job comment.
    pub comment: String,
    /// Owner's user name.
    pub user: String,
    /// Partition.
    pub partition: String,
    /// Base state.
    pub state: JobState,
    /// Slurm's reason for the state (`None`, `Resources`, `PartitionDown`, ...).
    pub reason: String,
    /// Requested GRES per node without the `gres:`/`gres/` prefix, e.g. `gpu:a100:1`; empty if none.
    pub gres: String,
    /// Requested TRES, e.g. `cpu=1,mem=100M,node=1,billing=1`.
    pub tres: String,
    /// Submit time, seconds since the Unix epoch.
    pub submit_time: u64,
    /// Start time, seconds since the Unix epoch (0 or a forecast while pending).
    pub start_time: u64,
}

/// A partition as observed on the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// Partition name.
    pub name: String,
    /// State in upper case: `UP`, `DOWN`, `DRAIN` or `INACTIVE`.
    pub state: String,
    /// Node names (host lists expanded).
    pub nodes: Vec<String>,
    /// Number of nodes.
    pub total_nodes: u32,
    /// GRES of the partition's nodes, comma separated (e.g. `gpu:a100:4`); empty if none.
    pub gres: String,
}

/// A node as observed on the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Node name.
    pub name: String,
    /// State in upper case, flags joined with `+` (e.g. `IDLE`, `IDLE+DRAIN`).
    pub state: String,
    /// Reason set by an administrator (for DOWN/DRAIN), empty if none.
    pub reason: String,
    /// Configured GRES, e.g. `gpu:a100:4`.
    pub gres: String,
    /// Partitions the node belongs to.
    pub partitions: Vec<String>,
}

/// Fills each partition's `gres` from its nodes, when the API did not report it.
pub(crate) fn fill_partition_gres(partitions: &mut [Partition], nodes: &[Node]) {
    for part in partitions.iter_mut().filter(|p| p.gres.is_empty()) {
        let mut gres: Vec<&str> = nodes
            .iter()
            .filter(|n| part.nodes.contains(&n.name) && !n.gres.is_empty())
            .flat_map(|n| n.gres.split(','))
            .collect();
        gres.sort_unstable();
        gres.dedup();
        part.gres = gres.join(",");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_states_map_case_insensitively() {
        assert_eq!(JobState::from_slurm("running"), JobState::Running);
        assert_eq!(JobState::from_slurm("CANCELLED"), JobState::Cancelled);
        assert_eq!(
            JobState::from_slurm("TIMEOUT"),
            JobState::Other("TIMEOUT".into())
        );
        assert!(JobState::Pending.is_active());
        assert!(!JobState::Completed.is_active());
    }

    #[test]
    fn job_spec_debug_hides_environment_values() {
        let spec = JobSpec {
            name: "n".into(),
            comment: "c".into(),
            partition: "cpu".into(),
            account: None,
            qos: None,
            gres: None,
            cpus_per_task: 1,
            memory_mb: None,
            time_limit_minutes: None,
            constraint: None,
            working_directory: "/tmp".into(),
            script: "#!/bin/sh\n".into(),
            environment: BTreeMap::from([("RUNNER_TOKEN".into(), "s3cr3t".into())]),
        };
        let text = format!("{spec:?}");
        assert!(
            text.contains("RUNNER_TOKEN") && !text.contains("s3cr3t"),
            "{text}"
        );
    }

    #[test]
    fn partition_gres_comes_from_nodes() {
        let node = Node {
            name: "n1".into(),
            state: "IDLE".into(),
            reason: String::new(),
            gres: "gpu:a100:4".into(),
            partitions: vec!["gpu".into()],
        };
        let mut parts = vec![Partition {
            name: "gpu".into(),
            state: "UP".into(),
            nodes: vec!["n1".into()],
            total_nodes: 1,
            gres: String::new(),
        }];
        fill_partition_gres(&mut parts, &[node]);
        assert_eq!(parts[0].gres, "gpu:a100:4");
    }
}
