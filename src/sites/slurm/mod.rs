//! Slurm site driver: submit, list and cancel runner jobs, observe partitions and nodes.
//!
//! Two drivers sit behind one [`SlurmDriver`] trait: [`rest::RestDriver`] talks to
//! slurmrestd (JWT auth, versioned OpenAPI paths, v0.0.38 and v0.0.40 shapes) and
//! [`cli::CliDriver`] runs `sbatch`/`squeue`/`scancel`/`scontrol`/`sinfo` (munge auth).
//! Both return the plain data types of [`types`]. Developer notes: `docs/slurm.md`.
//!
//! On top of the drivers, a Slurm site is handled in the same four steps as every site:
//! [`render`] (fleet → runner job specs, pure), [`observe`] (jobs, partitions, nodes →
//! runners and findings), [`mod@plan`] (pure: desired counts + live runners → steps) and
//! [`mod@apply`]. [`identity`] owns the job name/comment format, [`connect`] builds a driver
//! from a Site, [`jit`] is the hand-off of GitHub JIT configs to starting jobs.

pub mod apply;
pub mod cli;
pub mod connect;
pub mod identity;
pub mod jit;
pub mod observe;
pub mod plan;
pub mod render;
pub mod rest;
pub mod site;
pub mod types;
mod wire;

pub use wire::ApiVersion;

use std::fmt;
use std::future::Future;
use std::pin::Pin;

pub use types::{Job, JobSpec, JobState, Node, Partition};

/// A boxed future, so that [`SlurmDriver`] can be used as `dyn SlurmDriver`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Result of every Slurm driver call.
pub type Result<T> = std::result::Result<T, Error>;

/// What drover needs from a Slurm cluster, whatever the transport.
pub trait SlurmDriver: Send + Sync {
    /// Submits a batch job and returns its job id.
    fn submit<'a>(&'a self, spec: &'a JobSpec) -> BoxFuture<'a, Result<u64>>;
    /// Submits a batch job held (priority 0, reason `JobHeldUser`): it cannot start until
    /// [`SlurmDriver::release`]d. drover submits runners held, checks the queue for
    /// duplicates, then releases (see `docs/slurm.md`, "Submitting without duplicates").
    fn submit_held<'a>(&'a self, spec: &'a JobSpec) -> BoxFuture<'a, Result<u64>>;
    /// Releases a user hold.
    fn release(&self, id: u64) -> BoxFuture<'_, Result<()>>;
    /// Lists the jobs slurmctld currently knows (including recently finished ones).
    fn jobs(&self) -> BoxFuture<'_, Result<Vec<Job>>>;
    /// Cancels a job.
    fn cancel(&self, id: u64) -> BoxFuture<'_, Result<()>>;
    /// Lists partitions with their state, nodes and GRES.
    fn partitions(&self) -> BoxFuture<'_, Result<Vec<Partition>>>;
    /// Lists nodes with their state, reason, GRES and partitions.
    fn nodes(&self) -> BoxFuture<'_, Result<Vec<Node>>>;
}

pub use crate::credentials::Secret;

/// One entry of the error list Slurm returns in a response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// Slurm's numeric error code (`error_number`, `error_code` or `errno`), if any.
    pub code: Option<i64>,
    /// Short and long descriptions joined, e.g. "Invalid partition name specified".
    pub message: String,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.code {
            Some(code) => write!(f, "{} (error {code})", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Why a Slurm driver call failed. Messages never contain the token.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The site could not be reached (connection refused, DNS, timeout).
    #[error("Slurm site {url} is unreachable: {reason}")]
    Unreachable {
        /// The URL that was tried.
        url: String,
        /// What went wrong, from the transport.
        reason: String,
    },
    /// The site refused the credentials.
    #[error(
        "Slurm site {url} refused the credentials on {endpoint}: the token is wrong or expired ({detail})"
    )]
    Auth {
        /// Base URL of the site.
        url: String,
        /// Path of the request that was refused.
        endpoint: String,
        /// What the server said (never the token).
        detail: String,
    },
    /// Slurm answered with an error list.
    #[error("Slurm at {url} refused {endpoint}: {}", join(errors))]
    Api {
        /// Base URL of the site, or `cli` for the CLI driver.
        url: String,
        /// Path or command that failed.
        endpoint: String,
        /// The errors Slurm reported.
        errors: Vec<ApiError>,
    },
    /// The answer did not have the expected shape.
    #[error("unexpected answer from Slurm at {url} on {endpoint}: {detail}")]
    Protocol {
        /// Base URL of the site, or `cli` for the CLI driver.
        url: String,
        /// Path or command.
        endpoint: String,
        /// What was wrong with it.
        detail: String,
    },
    /// A Slurm command failed or could not be run.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line (program and arguments, never environment values).
        command: String,
        /// Exit status, or why it did not run (timeout, not found).
        status: String,
        /// Trimmed standard error.
        stderr: String,
    },
}

impl Error {
    /// A stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Unreachable { .. } => "unreachable",
            Error::Auth { .. } => "auth",
            Error::Api { .. } => "api",
            Error::Protocol { .. } => "protocol",
            Error::Command { .. } => "command",
        }
    }
}

fn join(errors: &[ApiError]) -> String {
    if errors.is_empty() {
        return "no error details".to_owned();
    }
    let parts: Vec<String> = errors.iter().map(ToString::to_string).collect();
    parts.join("; ")
}

/// Renders the site's runner job specs as JSON values, secrets masked (`drover render`).
pub fn render_values(
    ctx: &super::SiteContext<'_>,
) -> std::result::Result<Vec<serde_json::Value>, String> {
    Ok(render::render(ctx)?
        .iter()
        .map(|t| t.to_value(ctx.desired_runners(&t.set)))
        .collect())
}

/// Observes the site (within its timeout) and plans it; on failure the plan is unknown
/// ([`crate::plan::SitePlan::failed`]), never empty.
pub async fn plan(ctx: &super::SiteContext<'_>) -> crate::plan::SitePlan {
    match site::prepare(ctx).await {
        Ok(prepared) => prepared.plan,
        Err(failed) => failed,
    }
}

/// drover's *running* runner job `job_id` on the site, if it is one (for the JIT
/// endpoint, which hands a config only to the job a grant was issued for).
pub async fn runner_job(
    ctx: &super::SiteContext<'_>,
    job_id: u64,
) -> std::result::Result<Option<observe::Runner>, String> {
    let conn = connect::connect(ctx)?;
    let jobs = tokio::time::timeout(connect::timeout(ctx), conn.driver.jobs())
        .await
        .map_err(|_| format!("Slurm site `{}` did not answer in time", ctx.name()))?
        .map_err(|e| format!("Slurm site `{}`: {e}", ctx.name()))?;
    Ok(
        observe::owned_runners(&jobs, ctx.fleet_name(), conn.user.as_deref())
            .into_iter()
            .find(|r| r.id == job_id && r.state == observe::RunnerState::Running),
    )
}

/// Plans the site and applies the plan.
pub async fn apply(
    ctx: &super::SiteContext<'_>,
) -> (crate::plan::SitePlan, crate::plan::ApplyReport) {
    apply::apply(ctx).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_redacted() {
        let s = Secret::new("eyJhbGciOi.secret");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert_eq!(format!("{s}"), "<redacted>");
        assert_eq!(s.expose(), "eyJhbGciOi.secret");
    }

    #[test]
    fn api_error_lists_every_error() {
        let e = Error::Api {
            url: "http://x".into(),
            endpoint: "/slurm/v0.0.38/job/submit".into(),
            errors: vec![
                ApiError {
                    code: Some(2000),
                    message: "Invalid partition name specified".into(),
                },
                ApiError {
                    code: None,
                    message: "other".into(),
                },
            ],
        };
        let text = e.to_string();
        assert!(
            text.contains("Invalid partition name specified (error 2000); other"),
            "{text}"
        );
        assert_eq!(e.label(), "api");
    }
}
