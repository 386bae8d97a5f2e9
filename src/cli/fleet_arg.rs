//! Loading the fleet for commands that act on sites: validate first, refuse an invalid fleet.

use std::path::{Path, PathBuf};

use clap::Args;
use drover::fleet::{self, FleetRepo, LoadOptions};
use drover::sites::RunOptions;

/// Where the fleet is and how to reach the sites.
#[derive(Debug, Args)]
pub struct FleetArgs {
    /// Fleet repo directory.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Only this site.
    #[arg(long, value_name = "SITE")]
    pub site: Option<String>,
    /// Kubeconfig file (default: $KUBECONFIG, then ~/.kube/config; in-cluster sites need none).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
}

impl FleetArgs {
    /// Run options for the site drivers.
    pub fn run_options(&self) -> RunOptions {
        RunOptions {
            kubeconfig: self.kubeconfig.clone(),
            ..RunOptions::default()
        }
    }
}

/// Validates the fleet; on errors prints them to stderr and returns `None`.
pub fn load_valid(dir: &Path) -> anyhow::Result<Option<FleetRepo>> {
    let validation = fleet::validate_dir(dir, &LoadOptions::default())?;
    for d in &validation.diagnostics {
        let mut shown = d.clone();
        shown.file = dir.join(&d.file);
        if d.is_error() {
            eprintln!("{shown}");
        } else {
            tracing::warn!("{shown}");
        }
    }
    if !validation.is_valid() {
        eprintln!(
            "error: {} is invalid ({} error(s)); nothing was planned or applied",
            dir.display(),
            validation.error_count()
        );
        return Ok(None);
    }
    Ok(Some(validation.repo))
}

/// A multi-threaded runtime for commands that talk to sites.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
