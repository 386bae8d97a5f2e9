//! Runner autoscaling, the pure core: which runner set serves which queued job
//! ([`matching`]), the label set drover's JIT runners register with ([`labels`]), and how
//! many runners each set should have ([`decide`]).
//!
//! Nothing here does I/O. Demand comes in as plain values (queued jobs, busy runners);
//! the decision comes out as desired counts per runner set, which feed
//! [`crate::sites::RunOptions::desired_runners`] and so the same plan/apply path as every
//! other change. Because the decision is recomputed from what is *still queued* on every
//! round, a runner that GitHub hands to a different job than the one it was started for
//! (a "stolen" runner) never leaves a job waiting: the job it was meant for is still
//! queued and is counted again.

pub mod config;
pub mod controller;
pub(crate) mod decide;
pub mod demand;
pub(crate) mod error;
pub(crate) mod labels;
pub mod matching;
pub mod metrics;

pub use config::{ScaleConfig, Scaling, SetScaling};
pub use controller::{Autoscaler, Settings};
pub use decide::{Bound, Decision, ScaleInput, decide, pool_capacity};
pub use error::Error;
pub use labels::runner_labels;
pub use matching::{
    JobRequest, MatchOutcome, SetCandidate, Unmatched, UnmatchedReason, match_jobs,
};
