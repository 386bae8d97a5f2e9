//! The GitHub connection of a fleet (`Fleet.spec.github`) turned into a client: the
//! server URL becomes the API root, the App key or token is read from its SecretRef.

use super::client::{Auth, GithubClient, RetryPolicy, api_root};
use super::error::GithubError;
use crate::credentials;
use crate::fleet::FleetRepo;
use crate::fleet::model::GithubConnection;

/// Why a fleet's GitHub connection cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The fleet has no `Fleet` document, so no GitHub connection.
    #[error("the fleet has no Fleet document with a `github` connection")]
    NoConnection,
    /// The App has no installation id.
    #[error("github.app.installationId is required (drover does not look installations up)")]
    NoInstallation,
    /// Neither an App nor a token is configured.
    #[error("github needs `app` or `tokenRef`")]
    NoCredentials,
    /// A SecretRef cannot be read.
    #[error(transparent)]
    Secret(#[from] credentials::CredentialError),
    /// The client cannot be built.
    #[error(transparent)]
    Client(#[from] GithubError),
}

/// The authentication a connection describes, with its secret read.
pub(crate) fn auth(repo: &FleetRepo, github: &GithubConnection) -> Result<Auth, ConnectError> {
    let secret = |name: &str| {
        let spec = repo
            .secrets
            .get(name)
            .ok_or_else(|| credentials::CredentialError::Unknown(name.into()))?;
        credentials::resolve(name, &spec.value.spec)
    };
    match (&github.app, &github.token_ref) {
        (Some(app), _) => Ok(Auth::App {
            app_id: app.app_id,
            installation_id: app.installation_id.ok_or(ConnectError::NoInstallation)?,
            private_key: secret(&app.private_key_ref)?,
        }),
        (None, Some(token)) => Ok(Auth::Token(secret(token)?)),
        (None, None) => Err(ConnectError::NoCredentials),
    }
}

/// A client for the fleet's GitHub connection.
pub(crate) fn client(repo: &FleetRepo, policy: RetryPolicy) -> Result<GithubClient, ConnectError> {
    let github = &repo
        .fleet
        .as_ref()
        .ok_or(ConnectError::NoConnection)?
        .value
        .spec
        .github;
    let auth = auth(repo, github)?;
    Ok(GithubClient::new(&api_root(&github.url), &auth, policy)?)
}
