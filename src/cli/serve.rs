//! `drover serve`: configuration (file, flags, environment), signals, and startup.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use drover::credentials::Secret;
use drover::serve::config::{ConfigFile, SecretFrom};
use drover::serve::lease::LeaseConfig;
use drover::serve::{self, FleetSource, GitFleet, LocalDir, ServeConfig};
use drover::sites::RunOptions;

use super::Exit;

/// Arguments of `drover serve`. Flags override the config file; environment variables
/// (shown in brackets) fill in flags.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Config file (YAML): source, listen, intervals, secrets. See docs/serve.md.
    #[arg(long, env = "DROVER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Serve a local fleet directory instead of a git source (for fleet authors).
    #[arg(long, env = "DROVER_FLEET_DIR", value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Listen address for health, metrics, status and webhooks [default: 0.0.0.0:8080].
    #[arg(long, env = "DROVER_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Seconds between polls of the source for new revisions [default: 60].
    #[arg(long, env = "DROVER_POLL_INTERVAL")]
    pub poll_interval: Option<u64>,
    /// Seconds between drift checks of every site (a new revision is applied instead)
    /// [default: 300].
    #[arg(long, env = "DROVER_RECONCILE_INTERVAL")]
    pub reconcile_interval: Option<u64>,
    /// Environment variable holding the GitHub webhook secret.
    #[arg(long, env = "DROVER_WEBHOOK_SECRET_ENV", value_name = "VAR")]
    pub webhook_secret_env: Option<String>,
    /// Environment variable holding the bearer token for `POST /reconcile`.
    #[arg(long, env = "DROVER_TRIGGER_TOKEN_ENV", value_name = "VAR")]
    pub trigger_token_env: Option<String>,
    /// Kubeconfig for Kubernetes sites (in-cluster sites need none).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map_or_else(|_| "drover".into(), |h| h.trim().to_string())
}

fn env_secret(var: &str, what: &str) -> anyhow::Result<Secret> {
    Ok(SecretFrom::env(var).resolve(what)?)
}

/// Builds the service settings and source from the file and flags.
fn configure(args: &ServeArgs) -> anyhow::Result<(ServeConfig, Box<dyn FleetSource>)> {
    let file: ConfigFile = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            ConfigFile::parse(&text).with_context(|| format!("parsing {}", path.display()))?
        }
        None => ConfigFile::default(),
    };
    let dir = args
        .dir
        .clone()
        .or_else(|| file.source.as_ref().and_then(|s| s.dir.clone()));
    let git = file.source.as_ref().and_then(|s| s.git.as_ref());
    let source: Box<dyn FleetSource> = match (dir, git) {
        (Some(dir), _) => Box::new(LocalDir(dir)),
        (None, Some(git)) => Box::new(GitFleet(git.source()?)),
        (None, None) => {
            anyhow::bail!("no fleet source: pass --dir or set `source` in the config file")
        }
    };
    let webhook_secret = match (&args.webhook_secret_env, &file.webhook_secret_from) {
        (Some(var), _) => Some(env_secret(var, "webhook secret")?),
        (None, Some(from)) => Some(from.resolve("webhook secret")?),
        (None, None) => None,
    };
    let trigger_token = match (&args.trigger_token_env, &file.trigger_token_from) {
        (Some(var), _) => Some(env_secret(var, "trigger token")?),
        (None, Some(from)) => Some(from.resolve("trigger token")?),
        (None, None) => None,
    };
    let kubeconfig = args.kubeconfig.clone().or(file.kubeconfig);
    if let Some(issues) = &file.drift_issues {
        issues.check()?;
    }
    let drift_issues = file.drift_issues.clone();
    let config = ServeConfig {
        listen: args
            .listen
            .or(file.listen)
            .unwrap_or_else(|| ([0, 0, 0, 0], 8080).into()),
        poll_interval: Duration::from_secs(
            args.poll_interval
                .or(file.poll_interval_seconds)
                .unwrap_or(60)
                .max(1),
        ),
        reconcile_interval: Duration::from_secs(
            args.reconcile_interval
                .or(file.reconcile_interval_seconds)
                .unwrap_or(300)
                .max(1),
        ),
        webhook_secret,
        trigger_token,
        run_options: RunOptions {
            kubeconfig: kubeconfig.clone(),
            ..RunOptions::default()
        },
        autoscale: file.autoscale.as_ref().map(|a| a.settings()),
        lease: file.lease.map(|l| LeaseConfig {
            namespace: l.namespace,
            name: l.name,
            identity: std::env::var("POD_NAME").unwrap_or_else(|_| hostname()),
            duration: Duration::from_secs(l.duration_seconds.max(3)),
            kubeconfig: kubeconfig.clone(),
            context: l.context,
        }),
        drift_issues,
    };
    Ok((config, source))
}

/// Runs `drover serve` until SIGTERM/SIGINT; a second signal exits at once.
pub fn run(args: &ServeArgs) -> anyhow::Result<Exit> {
    let (config, source) = configure(args)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let (service, triggers) = serve::Service::new(config, source);
        serve::run(service, triggers, shutdown_signal()).await
    })?;
    Ok(Exit::Success)
}

/// Resolves on the first SIGTERM or SIGINT; a second one exits the process immediately.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        eprintln!("second signal: exiting without waiting");
        std::process::exit(130);
    });
}
