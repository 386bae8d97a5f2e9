//! Building a [`SlurmDriver`] from a Site: slurmrestd with a JWT from a SecretRef, or the
//! CLI tools as a configured user. Errors name the site and never contain the token.

use std::time::Duration;

use super::SlurmDriver;
use super::cli::{CliConfig, CliDriver};
use super::rest::{RestConfig, RestDriver};
use crate::credentials;
use crate::sites::SiteContext;

/// A driver and the Slurm user whose jobs it sees as its own (when known).
pub(crate) struct Connection {
    /// The driver.
    pub driver: Box<dyn SlurmDriver>,
    /// The user jobs are submitted as: the REST user, or the CLI `user`.
    pub user: Option<String>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// The site's timeout for one observe or apply call.
pub(crate) fn timeout(ctx: &SiteContext<'_>) -> Duration {
    Duration::from_secs(ctx.site.value.spec.timeout_seconds.max(1))
}

/// Connects to the site (no request is made yet).
pub(crate) fn connect(ctx: &SiteContext<'_>) -> Result<Connection, ConnectError> {
    let site = ctx.name();
    let slurm = ctx
        .site
        .value
        .spec
        .slurm
        .as_ref()
        .ok_or_else(|| ConnectError::NoSettings(site.to_owned()))?;
    if let Some(rest) = &slurm.rest {
        let secret =
            ctx.repo
                .secrets
                .get(&rest.token_ref)
                .ok_or_else(|| ConnectError::NoSecretRef {
                    site: site.to_owned(),
                    secret: rest.token_ref.clone(),
                })?;
        let token =
            credentials::resolve(&rest.token_ref, &secret.value.spec).map_err(|source| {
                ConnectError::Token {
                    site: site.to_owned(),
                    source,
                }
            })?;
        let mut cfg = RestConfig::new(&rest.url, &rest.user, token);
        cfg.timeout = timeout(ctx);
        let driver = RestDriver::new(cfg).map_err(|source| ConnectError::Driver {
            site: site.to_owned(),
            source,
        })?;
        return Ok(Connection {
            driver: Box::new(driver),
            user: Some(rest.user.clone()),
        });
    }
    if let Some(cli) = &slurm.cli {
        let driver = CliDriver::new(CliConfig {
            run_as: cli.user.clone(),
            slurm_conf: cli.slurm_conf.as_ref().map(Into::into),
            bin_dir: cli.bin_dir.as_ref().map(Into::into),
            timeout: timeout(ctx),
        });
        return Ok(Connection {
            driver: Box::new(driver),
            user: cli.user.clone(),
        });
    }
    Err(ConnectError::NoDriver(site.to_owned()))
}

/// Why no driver could be built for a Slurm site. Never holds the token.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The site has no `slurm` block.
    #[error("Slurm site `{0}`: the site has no `slurm` settings")]
    NoSettings(String),
    /// `tokenRef` names a SecretRef that is not declared.
    #[error("Slurm site `{site}`: tokenRef names SecretRef `{secret}`, which does not exist")]
    NoSecretRef {
        /// The site.
        site: String,
        /// The SecretRef named.
        secret: String,
    },
    /// The token cannot be read.
    #[error("Slurm site `{site}`: cannot read its token: {source}")]
    Token {
        /// The site.
        site: String,
        /// Why.
        source: credentials::CredentialError,
    },
    /// The REST client could not be built.
    #[error("Slurm site `{site}`: {source}")]
    Driver {
        /// The site.
        site: String,
        /// Why.
        source: super::Error,
    },
    /// Neither `rest` nor `cli` is set.
    #[error("Slurm site `{0}`: neither `rest` nor `cli` is set")]
    NoDriver(String),
}
