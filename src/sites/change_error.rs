//! [`ChangeError`]: why one change to a site (an object, a runner Pod, a runner job) failed.
//! Both drivers report failed changes with it; the apply report keeps its text, which
//! never holds a credential.

use std::sync::Arc;

use super::kubernetes::client::Error as KubeError;
use super::slurm::Error as SlurmError;
use crate::credentials::CredentialError;
use crate::runners::RegistryError;

/// Why one change to a site failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ChangeError {
    /// A Kubernetes request failed.
    #[error(transparent)]
    Kubernetes(Arc<KubeError>),
    /// A check before apply blocked the change.
    #[error("not applied: {0}")]
    Blocked(String),
    /// A dry run cannot send objects into a namespace that does not exist yet.
    #[error("skipped in dry run: namespace {0} does not exist yet (it would be created first)")]
    NamespaceNotYetCreated(String),
    /// Server-side apply refused: another field manager owns the fields.
    #[error(
        "conflict, not overwritten: {0} (another field manager owns these fields; re-run with --force-conflicts to take them)"
    )]
    Conflict(String),
    /// The object changed between the check and the delete (a failed precondition).
    #[error(
        "not deleted: the {what} changed since it was {when} ({detail}); the next run re-evaluates it"
    )]
    ChangedSince {
        /// `object` or `Pod`.
        what: &'static str,
        /// `checked` or `planned`.
        when: &'static str,
        /// The server's message.
        detail: String,
    },
    /// The live object no longer carries drover's ownership labels.
    #[error(
        "refused to delete: the live object no longer carries drover's ownership labels for fleet {fleet} and site {site}"
    )]
    NotOwned {
        /// The fleet.
        fleet: String,
        /// The site.
        site: String,
    },
    /// The runner set has no rendered runner template on the site.
    #[error("runner set {0} has no PodTemplate on this site; not created")]
    NoPodTemplate(String),
    /// The rendered runner Pod is not a valid API object.
    #[error("building the Pod: {0}")]
    BuildPod(String),
    /// The runner's JIT Secret could not be built.
    #[error("building the Secret failed")]
    BuildSecret,
    /// Runner Pods need the service's runner registry.
    #[error(
        "no runner registry: a runner Pod needs a just-in-time config from GitHub, which only `drover serve` (with its GitHub connection) mints; not created"
    )]
    NoRegistry,
    /// GitHub gave no JIT config.
    #[error("minting a JIT config for runner {name}: {source}")]
    Mint {
        /// The runner.
        name: String,
        /// The registry's error.
        source: Arc<RegistryError>,
    },
    /// A busy runner is never removed.
    #[error(
        "kept: runner {0} took a job (GitHub refuses to remove a busy runner); it is never killed"
    )]
    Busy(String),
    /// Removing the runner's registration failed, so its Pod or job is kept.
    #[error("kept: removing runner {name} from GitHub failed: {source}")]
    Deregister {
        /// The runner.
        name: String,
        /// The registry's error.
        source: Arc<RegistryError>,
    },
    /// A create failed half-way; `undo` says what was taken back.
    #[error("{error}{undo}")]
    Undone {
        /// What failed (credentials masked).
        error: String,
        /// What was undone, and how.
        undo: String,
    },
    /// A Slurm call for a job failed.
    #[error("{what}: {source}")]
    Slurm {
        /// What was being done (`submit`, `job 12`).
        what: String,
        /// Slurm's error.
        source: Arc<SlurmError>,
    },
    /// A Slurm runner job could not be settled after its held submit.
    #[error("{0}")]
    Settle(Settle),
    /// A runner of an idle Slurm job could not be deregistered.
    #[error("runner {name} could not be deregistered: {source}")]
    NotDeregistered {
        /// The runner.
        name: String,
        /// The registry's error.
        source: Arc<RegistryError>,
    },
    /// The runner set has no rendered Slurm job template.
    #[error("runner set `{0}` was not rendered")]
    NotRendered(String),
    /// A SecretRef the job needs does not exist.
    #[error("SecretRef `{0}` does not exist")]
    NoSecretRef(String),
    /// A SecretRef's value could not be read.
    #[error(transparent)]
    Secret(Arc<CredentialError>),
    /// The default Slurm runner command needs the service's JIT endpoint.
    #[error(
        "no JIT endpoint: the default runner command needs drover's JIT service (`drover serve`)"
    )]
    NoJitEndpoint,
    /// The registry gave no JIT grant.
    #[error(transparent)]
    Grant(Arc<RegistryError>),
}

/// What went wrong after a Slurm runner job was submitted held.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Settle {
    /// The queue could not be re-read, so the job stays held.
    #[error(
        "job {job} was submitted held but the queue could not be re-read ({source}); the next apply releases it"
    )]
    QueueUnread {
        /// Our job.
        job: u64,
        /// Slurm's error.
        source: Arc<SlurmError>,
    },
    /// Releasing our job failed.
    #[error("job {job} was submitted held, release failed: {source}")]
    Release {
        /// Our job.
        job: u64,
        /// Slurm's error.
        source: Arc<SlurmError>,
    },
    /// Our job lost its slot to another, and cancelling it failed.
    #[error("job {job} duplicates job {winner} and stays held; cancel failed: {source}")]
    Duplicate {
        /// Our job.
        job: u64,
        /// The job that keeps the slot.
        winner: u64,
        /// Slurm's error.
        source: Arc<SlurmError>,
    },
    /// Releasing an adopted held job failed.
    #[error(
        "held job {job} (left by an interrupted apply) keeps the slot; release failed: {source}"
    )]
    Adopted {
        /// The adopted job.
        job: u64,
        /// Slurm's error.
        source: Arc<SlurmError>,
    },
}

impl From<KubeError> for ChangeError {
    fn from(e: KubeError) -> Self {
        Self::Kubernetes(Arc::new(e))
    }
}

impl ChangeError {
    /// A failed Slurm call while `what`.
    pub fn slurm(what: impl Into<String>, source: SlurmError) -> Self {
        Self::Slurm {
            what: what.into(),
            source: Arc::new(source),
        }
    }
}
