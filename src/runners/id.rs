//! [`RunnerId`]: the one place a runner's plan target name is built and parsed.

use std::fmt;
use std::str::FromStr;

use crate::plan::Target;

/// Plan target kinds whose targets can name a runner: Slurm runner jobs and runner Pods.
const RUNNER_KINDS: [&str; 2] = ["SlurmJob", "Pod"];

/// A runner's place in its runner set, as a plan names it: `<set>#<slot>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunnerId {
    /// The runner set (a fleet name, so it never holds `#`).
    pub set: String,
    /// Which runner of the set.
    pub slot: Slot,
}

/// Which runner of a set: a numbered slot, or the n-th new runner of a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Slot {
    /// Slot `n` (a Slurm runner job's slot), written `n`.
    Number(u32),
    /// The n-th runner a plan creates (a Kubernetes runner Pod not yet named), written `new-n`.
    New(usize),
}

/// A name that is not `<set>#<slot>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a runner target name (`<set>#<slot>`): {0:?}")]
pub struct ParseRunnerIdError(String);

impl RunnerId {
    /// Slot `slot` of runner set `set`.
    pub fn new(set: impl Into<String>, slot: Slot) -> Self {
        Self {
            set: set.into(),
            slot,
        }
    }

    /// The runner a plan target names, when it is a Slurm job or Pod target named
    /// `<set>#<slot>`; `None` for every other target (a Pod named by its own name, say).
    pub fn of_target(target: &Target) -> Option<Self> {
        if !RUNNER_KINDS.contains(&target.kind.as_str()) {
            return None;
        }
        target.name.parse().ok()
    }

    /// The plan target of this runner, of `kind` in `namespace`.
    pub fn target(&self, kind: &str, namespace: Option<String>) -> Target {
        Target {
            kind: kind.to_owned(),
            namespace,
            name: self.to_string(),
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Number(n) => write!(f, "{n}"),
            Self::New(n) => write!(f, "new-{n}"),
        }
    }
}

impl fmt::Display for RunnerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.set, self.slot)
    }
}

impl FromStr for Slot {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s.strip_prefix("new-") {
            Some(n) => n.parse().map(Self::New).map_err(drop),
            None => s.parse().map(Self::Number).map_err(drop),
        }
    }
}

impl FromStr for RunnerId {
    type Err = ParseRunnerIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseRunnerIdError(s.to_owned());
        let (set, slot) = s.split_once('#').ok_or_else(err)?;
        if set.is_empty() {
            return Err(err());
        }
        Ok(Self::new(set, slot.parse().map_err(|()| err())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for (name, id) in [
            ("gpu#3", RunnerId::new("gpu", Slot::Number(3))),
            ("gpu-big#new-0", RunnerId::new("gpu-big", Slot::New(0))),
        ] {
            assert_eq!(name.parse::<RunnerId>().unwrap(), id);
            assert_eq!(id.to_string(), name);
        }
    }

    #[test]
    fn other_names_are_refused() {
        for name in [
            "gpu", "#3", "gpu#", "gpu#x", "gpu#new-", "gpu#3#4", "gpu#-1",
        ] {
            assert!(name.parse::<RunnerId>().is_err(), "{name}");
        }
    }

    #[test]
    fn only_job_and_pod_targets_name_runners() {
        let t = |kind: &str, name: &str| Target {
            kind: kind.into(),
            namespace: None,
            name: name.into(),
        };
        assert!(RunnerId::of_target(&t("SlurmJob", "cpu#1")).is_some());
        assert!(RunnerId::of_target(&t("Pod", "cpu#new-2")).is_some());
        assert!(RunnerId::of_target(&t("Pod", "drover-f-cpu-abc")).is_none());
        assert!(RunnerId::of_target(&t("Secret", "cpu#1")).is_none());
    }
}
