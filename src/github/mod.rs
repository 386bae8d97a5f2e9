//! The GitHub client drover's autoscaler uses: App (JWT → installation token, refreshed
//! before expiry) or token auth, github.com and GHES, enterprise/org/repo scopes; runner
//! groups, runners, queued jobs, JIT configs.
//!
//! Built on octocrab's raw HTTP layer (its auth and token refresh, not its retries):
//! drover reads the rate-limit headers of every response, answers `304 Not Modified`
//! from its ETag cache (conditional requests cost no rate limit, so idle polling is
//! free), backs off with jitter on 5xx, 429 and secondary rate limits (honouring
//! `Retry-After`), and stops before the request budget runs out. Errors never contain
//! tokens or keys.

pub(crate) mod api;
pub mod client;
pub(crate) mod connect;
pub(crate) mod error;
pub(crate) mod issues;
pub mod pulls;

pub use api::{JitConfig, JitRequest, QueuedJob, Runner, RunnerGroup, Scope};
pub use client::{Auth, GithubClient, RateLimit, RetryPolicy, api_root};
pub use connect::ConnectError;
pub use error::GithubError;
pub use issues::{CloseReason, Issue};
