//! Building a [`SlurmDriver`] from a Site: slurmrestd with a JWT from a SecretRef, or the
//! CLI tools as a configured user. Errors name the site and never contain the token.

use std::time::Duration;

use super::SlurmDriver;
use super::cli::{CliConfig, CliDriver};
use super::rest::{RestConfig, RestDriver};
use crate::credentials;
use crate::sites::SiteContext;

/// A driver and the Slurm user whose jobs it sees as its own (when known).
pub struct Connection {
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
pub fn timeout(ctx: &SiteContext<'_>) -> Duration {
    Duration::from_secs(ctx.site.value.spec.timeout_seconds.max(1))
}

/// Connects to the site (no request is made yet).
pub fn connect(ctx: &SiteContext<'_>) -> Result<Connection, String> {
    let site = ctx.name();
    let slurm = ctx
        .site
        .value
        .spec
        .slurm
        .as_ref()
        .ok_or_else(|| format!("Slurm site `{site}`: the site has no `slurm` settings"))?;
    if let Some(rest) = &slurm.rest {
        let secret = ctx.repo.secrets.get(&rest.token_ref).ok_or_else(|| {
            format!(
                "Slurm site `{site}`: tokenRef names SecretRef `{}`, which does not exist",
                rest.token_ref
            )
        })?;
        let token = credentials::resolve(&rest.token_ref, &secret.value.spec)
            .map_err(|e| format!("Slurm site `{site}`: cannot read its token: {e}"))?;
        let mut cfg = RestConfig::new(&rest.url, &rest.user, token);
        cfg.timeout = timeout(ctx);
        let driver = RestDriver::new(cfg).map_err(|e| format!("Slurm site `{site}`: {e}"))?;
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
    Err(format!(
        "Slurm site `{site}`: neither `rest` nor `cli` is set"
    ))
}
