//! [`RunnerChange`]: what a change to a runner does, typed. Status, metrics, the autoscaler
//! and the scaling notes read it; nothing reads a change's reason text.

/// What a runner change does and the state the runner was observed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunnerChange {
    /// Why the runner is created, removed, released or kept.
    pub reason: RunnerReason,
    /// The runner's observed state; `None` for a runner not started yet or in another state.
    pub state: Option<LiveState>,
}

/// Why a runner is created, removed, released or kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunnerReason {
    /// A new runner: fewer live runners than desired.
    ScaleUp,
    /// Removed: more live runners than desired (a pending one, or an idle one).
    ScaleDown,
    /// Removed and replaced: it never came online within the start deadline.
    StartTimeout,
    /// Removed: past the start deadline, GitHub no longer knows its runner.
    NotRegistered,
    /// Removed: it finished (cleanup).
    Finished,
    /// Removed: another live runner holds its slot.
    Duplicate,
    /// Removed: its runner set is no longer declared on the site (prune).
    Undeclared,
    /// Released: a held job left by an interrupted apply.
    ReleaseHeld,
    /// Left as it is.
    Kept,
}

impl RunnerReason {
    /// Whether the autoscaler's scaling note belongs on the change (scale up or down).
    pub fn is_scaling(self) -> bool {
        matches!(self, Self::ScaleUp | Self::ScaleDown)
    }
}

/// The state of a live runner, as status pages count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveState {
    /// Submitted or scheduled, not running yet.
    Pending,
    /// Running (idle or busy).
    Running,
    /// Its job is ending.
    Completing,
}

impl LiveState {
    /// The lowercase name status pages and metrics use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Completing => "completing",
        }
    }
}
