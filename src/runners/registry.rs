//! What the site drivers need from GitHub to create and remove runners: the
//! [`RunnerRegistry`], and the JIT grants it hands to Slurm runner jobs. The autoscaler in `drover serve` implements it over the GitHub
//! client; drivers only see this trait, so their plans stay pure and their tests can use
//! any implementation.
//!
//! Runner names carry drover's ownership: `drover-<fleet>-<set>-<suffix>` (see
//! [`crate::runners::runner_name`]).

use futures::future::BoxFuture;

use crate::credentials::Secret;

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

/// GitHub's view of one registered runner, from the autoscaler's last observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegisteredRunner {
    /// GitHub's runner id.
    pub id: u64,
    /// The runner is connected to GitHub.
    pub online: bool,
    /// The runner is running a job.
    pub busy: bool,
}

/// The outcome of [`RunnerRegistry::deregister`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// The registration was deleted: the runner can take no job any more.
    Removed,
    /// GitHub refused because the runner is running a job: leave it alone.
    Busy,
    /// GitHub has no runner of that name (never registered, or already gone).
    NotRegistered,
}

/// A [`RunnerRegistry`] call that failed. Its text says what happened and never holds a
/// credential; the registry keeps the typed cause as its source.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct RegistryError(Box<dyn std::error::Error + Send + Sync>);

impl RegistryError {
    /// Wraps any error (or message) of a registry implementation.
    pub fn new(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self(error.into())
    }
}

/// Mints runner credentials and removes registrations; implemented by the autoscaler.
pub trait RunnerRegistry: Send + Sync {
    /// GitHub's view of the runner named `name`, if it is registered.
    fn registered(&self, name: &str) -> Option<RegisteredRunner>;

    /// A just-in-time runner config for a new runner `name` of runner set `set`, with the
    /// set's labels and runner group. The config is a secret.
    fn jit_config<'a>(
        &'a self,
        set: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Secret, RegistryError>>;

    /// Deletes the registration of runner `name` of `set`, so it can take no job; GitHub
    /// refuses while the runner is busy ([`Removal::Busy`]).
    fn deregister<'a>(
        &'a self,
        set: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Removal, RegistryError>>;

    /// A one-time JIT grant for a Slurm runner job about to be submitted: the job fetches
    /// its config from drover's service when it starts. `Err` when this registry has no
    /// JIT endpoint (outside `drover serve`).
    fn slurm_grant(&self, request: &JitRequest) -> Result<JitGrant, RegistryError>;
}
