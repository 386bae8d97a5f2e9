//! Connecting to a site (kubeconfig context, a kubeconfig SecretRef, or in-cluster), the
//! error type of the driver, and retries of transient failures.
//!
//! kube's own retry layer is turned off (it retries up to 15 times with delays up to
//! 1000 s, which would hold a site's plan far beyond its timeout); instead every request
//! goes through [`with_retry`]: jittered exponential backoff, bounded attempts, honouring
//! `Retry-After` (capped), on 429/500/502/503/504 and transport errors. Every write drover
//! makes is a server-side apply or a precondition-guarded delete, so retries are safe.

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::sites::SiteContext;

/// Why talking to a site failed. Messages never contain credentials or secret values.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No usable client configuration (kubeconfig missing, context unknown, ...).
    #[error("cannot configure a client for the site: {0}")]
    Config(String),
    /// A request failed (after retries).
    #[error("{what}: {detail}")]
    Request {
        /// What was being done.
        what: String,
        /// The error, formatted without secrets.
        detail: String,
        /// The HTTP status code, for API errors.
        code: Option<u16>,
    },
    /// The site did not answer within its timeout.
    #[error("{what}: no answer within {secs}s (site timeoutSeconds)")]
    Timeout {
        /// What was being done.
        what: String,
        /// The timeout.
        secs: u64,
    },
}

impl Error {
    /// A stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Config(_) => "config",
            Error::Request {
                code: Some(409), ..
            } => "conflict",
            Error::Request { code: Some(_), .. } => "api",
            Error::Request { code: None, .. } => "transport",
            Error::Timeout { .. } => "timeout",
        }
    }

    /// Wraps a kube error.
    pub fn request(what: impl Into<String>, err: &kube::Error) -> Self {
        Error::Request {
            what: what.into(),
            detail: describe(err),
            code: status_code(err),
        }
    }
}

/// A short description of a kube error (API status or transport), without secrets.
pub fn describe(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(s) => format!("{} {}: {}", s.code, s.reason, s.message),
        kube::Error::HyperError(e) => format!("connection failed: {e}"),
        kube::Error::Service(e) => {
            // Walk to the innermost cause: "client error (Connect)" says little on its own.
            let mut msg = e.to_string();
            let mut source = std::error::Error::source(e.as_ref());
            while let Some(s) = source {
                msg = format!("{msg}: {s}");
                source = s.source();
            }
            format!("connection failed: {msg}")
        }
        kube::Error::Auth(_) => "authentication failed (check the kubeconfig user)".to_string(),
        other => other.to_string(),
    }
}

/// The HTTP status of an API error.
pub fn status_code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// Whether an error is worth retrying: throttling, server errors, dropped connections.
pub fn is_transient(err: &kube::Error) -> bool {
    match err {
        kube::Error::Api(s) => matches!(s.code, 429 | 500 | 502 | 503 | 504),
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

fn retry_after(err: &kube::Error) -> Option<Duration> {
    match err {
        kube::Error::Api(s) if s.code == 429 => s
            .details
            .as_ref()
            .map(|d| Duration::from_secs(u64::from(d.retry_after_seconds))),
        _ => None,
    }
}

/// How requests are retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// First delay.
    pub min_delay: Duration,
    /// Largest delay (also caps `Retry-After`).
    pub max_delay: Duration,
    /// Retries after the first attempt.
    pub max_retries: usize,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            min_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(5),
            max_retries: 4,
        }
    }
}

/// Runs `op`, retrying transient failures with jittered exponential backoff.
pub async fn with_retry<T, F, Fut>(policy: RetryPolicy, op: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let backoff = ExponentialBuilder::default()
        .with_min_delay(policy.min_delay)
        .with_max_delay(policy.max_delay)
        .with_max_times(policy.max_retries)
        .with_jitter();
    op.retry(backoff)
        .when(is_transient)
        .adjust(move |err, next| {
            next.map(|d| retry_after(err).map_or(d, |ra| ra.min(policy.max_delay)))
        })
        .notify(|err, delay| {
            tracing::debug!(error = %describe(err), ?delay, "retrying Kubernetes request");
        })
        .await
}

/// The site's per-request timeout.
pub fn site_timeout(ctx: &SiteContext<'_>) -> Duration {
    Duration::from_secs(ctx.site.value.spec.timeout_seconds.max(1))
}

/// Builds a client for the site: in-cluster, a kubeconfig from a SecretRef, or the
/// kubeconfig (`ctx.options.kubeconfig`, else `$KUBECONFIG` / `~/.kube/config`) with the
/// site's context.
pub async fn connect(ctx: &SiteContext<'_>) -> Result<kube::Client, Error> {
    client_from(config(ctx).await?)
}

/// A client from a resolved configuration (see [`config`]).
pub fn client_from(config: kube::Config) -> Result<kube::Client, Error> {
    kube::Client::try_from(config).map_err(|e| Error::Config(describe(&e)))
}

/// Resolves the site's client configuration (see [`connect`]), with the site's timeouts
/// and kube's own retries off.
pub async fn config(ctx: &SiteContext<'_>) -> Result<kube::Config, Error> {
    crate::tls::install_crypto_provider();
    let k8s = ctx
        .site
        .value
        .spec
        .kubernetes
        .as_ref()
        .ok_or_else(|| Error::Config("not a Kubernetes site".into()))?;
    let mut config = if k8s.in_cluster {
        kube::Config::incluster().map_err(|e| Error::Config(format!("in-cluster config: {e}")))?
    } else {
        let kubeconfig = if let Some(name) = &k8s.kubeconfig_ref {
            let secret = ctx
                .repo
                .secrets
                .get(name)
                .ok_or_else(|| Error::Config(format!("SecretRef `{name}` does not exist")))?;
            let value = crate::credentials::resolve(name, &secret.value.spec)
                .map_err(|e| Error::Config(e.to_string()))?;
            // The parse error could quote the kubeconfig (tokens): never show it.
            Kubeconfig::from_yaml(value.expose()).map_err(|_| {
                Error::Config(format!(
                    "SecretRef `{name}` does not hold a valid kubeconfig"
                ))
            })?
        } else if let Some(path) = &ctx.options.kubeconfig {
            Kubeconfig::read_from(path)
                .map_err(|e| Error::Config(format!("kubeconfig {}: {e}", path.display())))?
        } else {
            Kubeconfig::read().map_err(|e| Error::Config(format!("kubeconfig: {e}")))?
        };
        let options = KubeConfigOptions {
            context: k8s.context.clone(),
            ..KubeConfigOptions::default()
        };
        kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|e| Error::Config(e.to_string()))?
    };
    let timeout = site_timeout(ctx);
    config.connect_timeout = Some(timeout);
    config.read_timeout = Some(timeout);
    config.write_timeout = Some(timeout);
    config.reset_reader_on_write = true;
    config.default_retry = false;
    Ok(config)
}

/// Runs a request with retries, bounded by `timeout` overall.
pub async fn call<T, F, Fut>(
    what: impl Into<String>,
    timeout: Duration,
    policy: RetryPolicy,
    op: F,
) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    match tokio::time::timeout(timeout, with_retry(policy, op)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Error::request(what, &e)),
        Err(_) => Err(Error::Timeout {
            what: what.into(),
            secs: timeout.as_secs(),
        }),
    }
}
