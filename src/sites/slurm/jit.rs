//! The just-in-time (JIT) hand-off between drover and a starting runner job.
//!
//! A runner job does not carry a GitHub runner config: it may pend for hours and a JIT
//! config expires. Instead drover passes, in the job's *environment* (never the script,
//! name or comment), `DROVER_JIT_URL` (drover's endpoint) and `DROVER_JIT_TOKEN` (a
//! one-time credential for this job). When the job starts, its script `POST`s to the URL
//! with the token as a bearer token and gets the JIT config back, then runs
//! `./run.sh --jitconfig "$cfg"`. The endpoint and the tokens belong to the autoscaler in
//! `drover serve`, which hands grants out through
//! [`crate::runners::RunnerRegistry::slurm_grant`]. Without it (plain `drover
//! apply`), runner sets that use the default command cannot be submitted (apply reports
//! them as failed, plan shows the `jit-endpoint-missing` finding); runner sets with their
//! own `command` do not need it.

/// Environment variable carrying drover's JIT endpoint into the job.
pub(crate) const URL_VAR: &str = "DROVER_JIT_URL";
/// Environment variable carrying the job's one-time credential.
pub(crate) const TOKEN_VAR: &str = "DROVER_JIT_TOKEN";
