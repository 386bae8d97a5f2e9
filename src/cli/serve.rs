//! `drover serve`: configuration (file, flags, environment), signals, and startup.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use drover::credentials::{self, Secret};
use drover::fleet::model::{EnvSource, FileSource, SecretRefSpec};
use drover::serve::lease::LeaseConfig;
use drover::serve::{self, FleetSource, GitFleet, LocalDir, ServeConfig};
use drover::sites::RunOptions;
use drover::source::{GitAuth, GitReference, GitSource, GitSourceConfig};
use serde::Deserialize;

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
    /// Seconds between full reconciles of every site, even without commits [default: 300].
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

/// The config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConfigFile {
    /// Where the fleet comes from.
    #[serde(default)]
    pub source: Option<SourceConfig>,
    /// Listen address.
    pub listen: Option<SocketAddr>,
    /// Poll interval in seconds.
    pub poll_interval_seconds: Option<u64>,
    /// Full reconcile interval in seconds.
    pub reconcile_interval_seconds: Option<u64>,
    /// Webhook HMAC secret, from an env var or a file.
    pub webhook_secret_from: Option<SecretFrom>,
    /// Manual trigger token, from an env var or a file.
    pub trigger_token_from: Option<SecretFrom>,
    /// Kubeconfig path.
    pub kubeconfig: Option<PathBuf>,
    /// Leader election, for more than one replica.
    pub lease: Option<LeaseFile>,
}

/// The Lease used for leader election.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LeaseFile {
    /// Namespace of the Lease (drover's own namespace).
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// Seconds a leader keeps the lease without renewing [default: 15].
    #[serde(default = "default_lease_seconds")]
    pub duration_seconds: u64,
}

fn default_lease_seconds() -> u64 {
    15
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map_or_else(|_| "drover".into(), |h| h.trim().to_string())
}

/// The fleet source in the config file: a git remote or a local directory.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SourceConfig {
    /// A local directory.
    pub dir: Option<PathBuf>,
    /// A git remote.
    pub git: Option<GitConfig>,
}

/// A git remote: URL, one reference, credentials by env var or file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GitConfig {
    /// `https://…`, `ssh://…`, `git://…` or `file://…`.
    pub url: String,
    /// Branch to follow [default: main].
    pub branch: Option<String>,
    /// Tag to follow instead.
    pub tag: Option<String>,
    /// A fixed commit instead.
    pub commit: Option<String>,
    /// HTTPS token (sent as `x-access-token`).
    pub token_from: Option<SecretFrom>,
    /// SSH deploy key (PEM/OpenSSH).
    pub ssh_key_from: Option<SecretFrom>,
    /// Where clones and snapshots are kept [default: /var/cache/drover].
    pub cache_dir: Option<PathBuf>,
}

impl GitConfig {
    fn source(&self) -> anyhow::Result<GitSource> {
        let reference = match (&self.tag, &self.commit) {
            (Some(tag), _) => GitReference::Tag(tag.clone()),
            (None, Some(commit)) => GitReference::Commit(commit.clone()),
            (None, None) => {
                GitReference::Branch(self.branch.clone().unwrap_or_else(|| "main".into()))
            }
        };
        let auth = match (&self.token_from, &self.ssh_key_from) {
            (Some(token), _) => GitAuth::Token(token.resolve("git token")?),
            (None, Some(key)) => GitAuth::SshKey {
                private_key: key.resolve("git deploy key")?,
                passphrase: None,
            },
            (None, None) => GitAuth::None,
        };
        let cache = self
            .cache_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/var/cache/drover"));
        Ok(GitSource::new(GitSourceConfig {
            auth,
            ..GitSourceConfig::new(&self.url, reference, cache)
        })?)
    }
}

/// A secret of drover's own: an environment variable or a file, never a value.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecretFrom {
    /// Environment variable name.
    pub env: Option<String>,
    /// File path.
    pub file: Option<String>,
}

impl SecretFrom {
    fn resolve(&self, what: &str) -> anyhow::Result<Secret> {
        let spec = SecretRefSpec {
            env: self.env.clone().map(|name| EnvSource { name }),
            file: self.file.clone().map(|path| FileSource { path }),
            ..SecretRefSpec::default()
        };
        Ok(credentials::resolve(what, &spec)?)
    }
}

fn env_secret(var: &str, what: &str) -> anyhow::Result<Secret> {
    SecretFrom {
        env: Some(var.into()),
        file: None,
    }
    .resolve(what)
}

/// Builds the service settings and source from the file and flags.
fn configure(args: &ServeArgs) -> anyhow::Result<(ServeConfig, Box<dyn FleetSource>)> {
    let file: ConfigFile = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            serde_saphyr::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
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
            kubeconfig: args.kubeconfig.clone().or(file.kubeconfig),
            ..RunOptions::default()
        },
        lease: file.lease.map(|l| LeaseConfig {
            namespace: l.namespace,
            name: l.name,
            identity: std::env::var("POD_NAME").unwrap_or_else(|_| hostname()),
            duration: Duration::from_secs(l.duration_seconds.max(3)),
        }),
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
