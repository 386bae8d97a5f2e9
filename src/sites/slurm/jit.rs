//! The just-in-time (JIT) hand-off between drover and a starting runner job.
//!
//! A runner job does not carry a GitHub runner config: it may pend for hours and a JIT
//! config expires. Instead drover passes, in the job's *environment* (never the script,
//! name or comment), `DROVER_JIT_URL` (drover's endpoint) and `DROVER_JIT_TOKEN` (a
//! one-time credential for this job). When the job starts, its script `POST`s to the URL
//! with the token as a bearer token and gets the JIT config back, then runs
//! `./run.sh --jitconfig "$cfg"`. The endpoint and the tokens belong to the autoscaler in
//! `drover serve`, which hands grants out through
//! [`crate::sites::runners::RunnerRegistry::slurm_grant`]. Without it (plain `drover
//! apply`), runner sets that use the default command cannot be submitted (apply reports
//! them as failed, plan shows the `jit-endpoint-missing` finding); runner sets with their
//! own `command` do not need it.

use crate::credentials::Secret;

/// Environment variable carrying drover's JIT endpoint into the job.
pub const URL_VAR: &str = "DROVER_JIT_URL";
/// Environment variable carrying the job's one-time credential.
pub const TOKEN_VAR: &str = "DROVER_JIT_TOKEN";

/// What a job will ask its JIT config for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JitRequest {
    /// Site name.
    pub site: String,
    /// Fleet name.
    pub fleet: String,
    /// Runner set name.
    pub runner_set: String,
    /// The runner's slot in its set.
    pub slot: u32,
}

/// A grant for one job: where to fetch its config and with which one-time credential.
#[derive(Debug, Clone)]
pub struct JitGrant {
    /// The endpoint (`DROVER_JIT_URL`).
    pub url: String,
    /// The one-time credential (`DROVER_JIT_TOKEN`).
    pub token: Secret,
}
