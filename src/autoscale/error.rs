//! [`Error`]: what can go wrong when the autoscaler talks to GitHub.

use crate::github::GithubError;
use crate::github::connect::ConnectError;

/// An autoscaler failure. Its text never holds a credential: GitHub errors are already
/// redacted by the client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The fleet has no Fleet document, so no GitHub connection.
    #[error("the fleet has no Fleet document with a `github` connection")]
    NoFleet,
    /// The fleet's GitHub connection cannot be used (a missing secret, a bad key).
    #[error("GitHub connection: {0}")]
    Connect(#[from] ConnectError),
    /// No fleet revision with a GitHub connection was adopted yet.
    #[error("no GitHub connection yet")]
    NotConnected,
    /// A GitHub call failed.
    #[error(transparent)]
    Github(#[from] GithubError),
    /// The runner set is not one drover scales.
    #[error("runner set `{0}` is not scaled by drover")]
    NotScaled(String),
    /// `drover drift` found no repository to read queued jobs from.
    #[error("no repositories to check (no repository-scoped runner set; pass --github-repo)")]
    NoRepositories,
}

impl From<Error> for crate::runners::RegistryError {
    fn from(e: Error) -> Self {
        Self::new(e)
    }
}
