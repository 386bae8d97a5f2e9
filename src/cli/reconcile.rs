//! `drover reconcile --now`: ask a running `drover serve` to reconcile every site now.

use std::time::Duration;

use clap::Args;
use drover::serve::client::{TriggerError, request_reconcile};
use drover::serve::config::SecretFrom;

use super::Exit;

/// Arguments of `drover reconcile`.
///
/// Exit codes: 0 the reconcile was queued; 1 the service refused the token or answered
/// unexpectedly; 2 usage error (no `--now`, no token) or the service is unreachable.
#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// Trigger a reconcile of every site now (the only mode so far; required).
    #[arg(long)]
    pub now: bool,
    /// Base URL of the service.
    #[arg(long, env = "DROVER_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Environment variable holding the bearer token of `POST /reconcile`.
    #[arg(long, value_name = "VAR", default_value = "DROVER_TRIGGER_TOKEN")]
    pub token_env: String,
    /// Seconds to wait for the service's answer.
    #[arg(long, default_value_t = 10)]
    pub timeout: u64,
}

/// Runs `drover reconcile`.
pub fn run(args: &ReconcileArgs) -> anyhow::Result<Exit> {
    if !args.now {
        eprintln!("error: nothing to do: pass --now to trigger a reconcile");
        return Ok(Exit::Usage);
    }
    let token = match SecretFrom::env(&args.token_env).resolve("trigger token") {
        Ok(token) => token,
        Err(err) => {
            eprintln!(
                "error: {err} (set {} to the service's trigger token)",
                args.token_env
            );
            return Ok(Exit::Usage);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(request_reconcile(
        &args.url,
        &token,
        Duration::from_secs(args.timeout.max(1)),
    ));
    match result {
        Ok(answer) => {
            println!("{}: {}", args.url, answer.trim());
            Ok(Exit::Success)
        }
        Err(err @ TriggerError::Unreachable { .. }) => {
            eprintln!("error: {err}");
            Ok(Exit::Usage)
        }
        Err(err) => {
            eprintln!("error: {err}");
            Ok(Exit::Failure)
        }
    }
}
