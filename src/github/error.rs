//! Errors of the GitHub client. None of them carries a token, a JWT or a key: messages
//! come from GitHub's response bodies and drover's own text.

/// Why a GitHub call failed.
#[derive(Debug, thiserror::Error)]
pub enum GithubError {
    /// The client could not be built (bad URL, unreadable App key).
    #[error("GitHub client setup: {0}")]
    Setup(String),
    /// The request did not reach GitHub or no response came back.
    #[error("GitHub {method} {path}: {message}")]
    Transport {
        /// HTTP method.
        method: String,
        /// Path and query.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// GitHub answered with an error status that is not worth retrying.
    #[error("GitHub {method} {path}: HTTP {status}: {message}")]
    Status {
        /// HTTP method.
        method: String,
        /// Path and query.
        path: String,
        /// HTTP status.
        status: u16,
        /// GitHub's `message`.
        message: String,
    },
    /// Retries of a transient failure (5xx, 429, secondary rate limit) ran out.
    #[error("GitHub {method} {path}: still failing after {attempts} attempts (last HTTP {status})")]
    RetriesExhausted {
        /// HTTP method.
        method: String,
        /// Path and query.
        path: String,
        /// Attempts made.
        attempts: u32,
        /// Last status (0 for a transport error).
        status: u16,
    },
    /// The primary rate limit is exhausted, or drover stopped short of it to keep a
    /// reserve; calls resume after `reset` (Unix seconds).
    #[error("GitHub rate limit: {remaining} requests left (reserve {reserve}), resets at {reset}")]
    RateLimited {
        /// Requests left.
        remaining: u32,
        /// The reserve drover keeps.
        reserve: u32,
        /// When the budget resets, Unix seconds.
        reset: u64,
    },
    /// A response body was not what GitHub documents.
    #[error("GitHub {path}: unexpected response: {message}")]
    Decode {
        /// Path and query.
        path: String,
        /// What did not parse.
        message: String,
    },
    /// A runner group name does not exist in the scope.
    #[error("runner group `{group}` not found in {scope}")]
    UnknownRunnerGroup {
        /// The group name.
        group: String,
        /// The scope, e.g. `org/acme`.
        scope: String,
    },
}

impl GithubError {
    /// A stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            GithubError::Setup(_) => "setup",
            GithubError::Transport { .. } => "transport",
            GithubError::Status { .. } => "status",
            GithubError::RetriesExhausted { .. } => "retries_exhausted",
            GithubError::RateLimited { .. } => "rate_limited",
            GithubError::Decode { .. } => "decode",
            GithubError::UnknownRunnerGroup { .. } => "unknown_runner_group",
        }
    }
}
