//! Slurm site driver: submit, list and cancel runner jobs, observe partitions and nodes.
//!
//! Two drivers sit behind one [`SlurmDriver`] trait: [`rest::RestDriver`] talks to
//! slurmrestd (JWT auth; OpenAPI v0.0.38 and v0.0.40 to v0.0.45, the newest the server
//! offers) and [`cli::CliDriver`] runs `sbatch`/`squeue`/`scancel`/`scontrol`/`sinfo`
//! (munge auth).
//! Both return the plain data types of [`types`]. Developer notes: `docs/slurm.md`.
//!
//! On top of the drivers, a Slurm site is handled in the same four steps as every site:
//! [`render`] (fleet → runner job specs, pure), [`observe`] (jobs, partitions, nodes →
//! runners and findings), [`mod@plan`] (pure: desired counts + live runners → steps) and
//! [`mod@apply`]. [`identity`] owns the job name/comment format, [`connect`] builds a driver
//! from a Site, [`jit`] is the hand-off of GitHub JIT configs to starting jobs.

pub(crate) mod apply;
pub mod cli;
pub(crate) mod connect;
pub mod identity;
pub(crate) mod jit;
pub mod observe;
pub mod plan;
pub mod render;
pub mod rest;
pub(crate) mod site;
#[cfg(test)]
mod testdata;
pub(crate) mod types;
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
    /// The API the driver speaks, once known, for plans and status: `slurmrestd v0.0.42`
    /// once the REST driver has chosen its version. `None` when there is nothing to say.
    fn api(&self) -> Option<String> {
        None
    }
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
///
/// The REST driver reads Slurm's coded errors first: `error_number` 1007 is [`Error::Auth`],
/// 1800-1803 (slurmctld communication failures) are [`Error::ControllerUnreachable`],
/// non-specific codes are told apart by how long slurmrestd took, and any other coded error
/// is [`Error::Api`]; only an answer without codes is read by its HTTP status (511, 401 and
/// 403 are [`Error::Auth`]), else it is [`Error::Protocol`]. See [`rest::classify`] and
/// `docs/slurm.md`, "Errors and what they mean".
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// slurmrestd could not be reached: connection refused, DNS, or no answer in time.
    #[error("Slurm site {url} is unreachable: {reason}")]
    RestUnreachable {
        /// The URL that was tried.
        url: String,
        /// What went wrong, from the transport.
        reason: String,
    },
    /// slurmrestd answered, but it could not reach slurmctld (`error_number` 1800 with HTTP
    /// 502/500, or a non-specific error that took slurmrestd's retry time).
    #[error(
        "Slurm site {url} answered {endpoint}, but slurmctld is down or unreachable from slurmrestd: {detail}"
    )]
    ControllerUnreachable {
        /// Base URL of the site.
        url: String,
        /// Path of the request.
        endpoint: String,
        /// What slurmrestd said.
        detail: String,
        /// Slurm's error code, when the answer carried one.
        code: Option<i64>,
    },
    /// The site refused the credentials: the token is missing, wrong, expired or for
    /// another user (`error_number` 1007, 22.05's quick non-specific errors, or HTTP
    /// 511/401/403 without an error code).
    #[error(
        "Slurm site {url} refused the credentials on {endpoint}: the token is wrong or expired, or not for this user ({detail})"
    )]
    Auth {
        /// Base URL of the site.
        url: String,
        /// Path of the request that was refused.
        endpoint: String,
        /// What the server said (never the token).
        detail: String,
        /// Slurm's error code, when the answer carried one.
        code: Option<i64>,
    },
    /// slurmrestd serves none of the REST API versions drover speaks.
    #[error(
        "Slurm site {url} speaks none of the REST API versions drover speaks: it offers {}, drover speaks {}",
        list_or_none(offered),
        supported.join(", ")
    )]
    UnsupportedVersions {
        /// Base URL of the site.
        url: String,
        /// The versions its `/openapi/v3` lists (`v0.0.42`, ...), newest first.
        offered: Vec<String>,
        /// The versions drover speaks, newest first.
        supported: Vec<String>,
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
            Error::RestUnreachable { .. } => "rest_unreachable",
            Error::ControllerUnreachable { .. } => "controller_unreachable",
            Error::Auth { .. } => "auth",
            Error::UnsupportedVersions { .. } => "unsupported_versions",
            Error::Api { .. } => "api",
            Error::Protocol { .. } => "protocol",
            Error::Command { .. } => "command",
        }
    }

    /// The Slurm error code this error was read from, if any: of several failed answers
    /// to parallel reads, the one with a code says most about what happened.
    pub fn code(&self) -> Option<i64> {
        match self {
            Error::ControllerUnreachable { code, .. } | Error::Auth { code, .. } => *code,
            Error::Api { errors, .. } => errors.iter().find_map(|e| e.code),
            _ => None,
        }
    }
}

fn list_or_none(versions: &[String]) -> String {
    if versions.is_empty() {
        "no /slurm/ API version".to_owned()
    } else {
        versions.join(", ")
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
) -> std::result::Result<Vec<serde_json::Value>, render::RenderError> {
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
) -> std::result::Result<Option<observe::Runner>, RunnerJobError> {
    let conn = connect::connect(ctx)?;
    let site = || ctx.name().to_owned();
    let jobs = tokio::time::timeout(connect::timeout(ctx), conn.driver.jobs())
        .await
        .map_err(|_| RunnerJobError::Timeout(site()))?
        .map_err(|source| RunnerJobError::Slurm {
            site: site(),
            source,
        })?;
    Ok(
        observe::owned_runners(&jobs, ctx.fleet_name(), ctx.name(), conn.user.as_deref())
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
        assert_eq!(e.code(), Some(2000));
    }

    #[test]
    fn unsupported_versions_say_what_each_side_speaks() {
        let e = Error::UnsupportedVersions {
            url: "http://x".into(),
            offered: vec!["v0.0.47".into(), "v0.0.46".into()],
            supported: ApiVersion::PREFERENCE
                .iter()
                .map(|v| v.as_str().to_owned())
                .collect(),
        };
        let text = e.to_string();
        assert!(
            text.contains("it offers v0.0.47, v0.0.46, drover speaks v0.0.45, v0.0.44, v0.0.43, v0.0.42, v0.0.41, v0.0.40, v0.0.38"),
            "{text}"
        );
        assert_eq!(e.label(), "unsupported_versions");
        let none = Error::UnsupportedVersions {
            url: "http://x".into(),
            offered: vec![],
            supported: vec!["v0.0.45".into()],
        };
        assert!(
            none.to_string()
                .contains("it offers no /slurm/ API version"),
            "{none}"
        );
    }

    #[test]
    fn error_texts_keep_their_key_phrases() {
        let rest = Error::RestUnreachable {
            url: "http://x".into(),
            reason: "cannot connect to slurmrestd: Connection refused".into(),
        };
        assert!(
            rest.to_string().contains("http://x is unreachable"),
            "{rest}"
        );
        let ctld = Error::ControllerUnreachable {
            url: "http://x".into(),
            endpoint: "/slurm/v0.0.42/jobs/".into(),
            detail: "HTTP 502 Bad Gateway".into(),
            code: None,
        };
        assert!(
            ctld.to_string()
                .contains("slurmctld is down or unreachable"),
            "{ctld}"
        );
        let auth = Error::Auth {
            url: "http://x".into(),
            endpoint: "/slurm/v0.0.42/jobs/".into(),
            detail: "HTTP 511".into(),
            code: Some(1007),
        };
        assert!(
            auth.to_string().contains("the token is wrong or expired"),
            "{auth}"
        );
        assert_eq!(
            [rest.label(), ctld.label(), auth.label()],
            ["rest_unreachable", "controller_unreachable", "auth"]
        );
        assert_eq!(
            (rest.code(), ctld.code(), auth.code()),
            (None, None, Some(1007))
        );
    }
}

/// Why [`runner_job`] could not read the site's jobs.
#[derive(Debug, thiserror::Error)]
pub enum RunnerJobError {
    /// No driver for the site.
    #[error(transparent)]
    Connect(#[from] connect::ConnectError),
    /// The site did not answer within its timeout.
    #[error("Slurm site `{0}` did not answer in time")]
    Timeout(String),
    /// Reading the jobs failed.
    #[error("Slurm site `{site}`: {source}")]
    Slurm {
        /// The site.
        site: String,
        /// Slurm's error.
        source: Error,
    },
}
