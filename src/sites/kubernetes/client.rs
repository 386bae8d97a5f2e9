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
        kube::Error::Api(s) if s.code == 0 => format!(
            "the server answered with an error that is not a Kubernetes Status ({})",
            if s.message.is_empty() {
                "no message"
            } else {
                s.message.as_str()
            }
        ),
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

/// A client from a resolved configuration (see [`config`]), whose error responses always
/// carry a `metav1.Status` that says what happened (see [`error_status`]).
pub fn client_from(config: kube::Config) -> Result<kube::Client, Error> {
    let builder =
        kube::client::ClientBuilder::try_from(config).map_err(|e| Error::Config(describe(&e)))?;
    Ok(builder.with_layer(&StatusBodies).build())
}

/// The kubeconfig's credentials are secrets like a SecretRef's: the redaction layer
/// masks them wherever they would show (a server may echo a bearer token in an error).
fn remember_credentials(config: &kube::Config) {
    use secrecy::ExposeSecret;
    let auth = &config.auth_info;
    for secret in [&auth.token, &auth.password, &auth.client_key_data]
        .into_iter()
        .flatten()
    {
        crate::redact::remember(secret.expose_secret());
    }
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
            Kubeconfig::read_from(path).map_err(kubeconfig_error)?
        } else {
            Kubeconfig::read().map_err(kubeconfig_error)?
        };
        let options = KubeConfigOptions {
            context: k8s.context.clone(),
            ..KubeConfigOptions::default()
        };
        kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|e| Error::Config(e.to_string()))?
    };
    remember_credentials(&config);
    let timeout = site_timeout(ctx);
    config.connect_timeout = Some(timeout);
    config.read_timeout = Some(timeout);
    config.write_timeout = Some(timeout);
    config.reset_reader_on_write = true;
    config.default_retry = false;
    Ok(config)
}

/// A kubeconfig that cannot be read, in plain words (kube's own text quotes the path
/// twice: `'"/root/.kube/config"'`).
fn kubeconfig_error(e: kube::config::KubeconfigError) -> Error {
    use kube::config::KubeconfigError as K;
    Error::Config(match e {
        K::ReadConfig(io, path) => format!("cannot read kubeconfig {}: {io}", path.display()),
        K::FindPath => "no kubeconfig: $KUBECONFIG is unset and there is no home directory".into(),
        other => format!("kubeconfig: {other}"),
    })
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

/// The resource a request path addresses, for messages: `externalsecrets.external-secrets.io/v1`
/// for `/apis/external-secrets.io/v1/namespaces/x/externalsecrets`, `serviceaccounts (core
/// v1)` for `/api/v1/serviceaccounts`, the path itself otherwise.
pub fn resource_of_path(path: &str) -> String {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        ["apis", group] => return format!("API group {group}"),
        _ => return path.to_string(),
    };
    let plural = match rest {
        ["namespaces", _, plural, ..] => Some(*plural),
        [plural, ..] => Some(*plural),
        [] => None,
    };
    match (plural, group) {
        (None, "") => format!("API version {version}"),
        (None, g) => format!("API version {g}/{version}"),
        (Some(p), "") => format!("{p} (core {version})"),
        (Some(p), g) => format!("{p}.{g}/{version}"),
    }
}

/// The longest part of an error body that is quoted in a message.
const MAX_QUOTED_BODY: usize = 300;

/// The `metav1.Status` body an error response is given, or `None` when its own body is a
/// Status that already says what happened.
///
/// kube decodes any JSON object as a Status, so a body that is JSON but not a Status (or a
/// plain-text or HTML body) reads as `0 : ` with every field empty, and a plain-text body
/// is otherwise dropped. Here such a body becomes a Status with the HTTP code, the reason
/// of that code and the body's text; a 404 that names no object (the server does not serve
/// the resource at all, rather than "this object does not exist") says which resource is
/// not served.
pub fn error_status(code: u16, path: &str, body: &[u8]) -> Option<Vec<u8>> {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let is_status = parsed
        .as_ref()
        .is_some_and(|v| v["kind"] == "Status" && v["code"].as_u64().is_some_and(|c| c != 0));
    let names_object = parsed
        .as_ref()
        .is_some_and(|v| v["details"]["name"].as_str().is_some_and(|n| !n.is_empty()));
    if is_status && (code != 404 || names_object) {
        return None;
    }
    let reason = http::StatusCode::from_u16(code)
        .ok()
        .and_then(|c| c.canonical_reason())
        .unwrap_or("Error")
        .replace(' ', "");
    let text = match &parsed {
        Some(v) if is_status => v["message"].as_str().unwrap_or_default().to_string(),
        // A discovery document or the like where a list was expected: nothing to quote.
        Some(_) if code == 404 => String::new(),
        _ => String::from_utf8_lossy(body)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
    };
    let quoted: String = text.chars().take(MAX_QUOTED_BODY).collect();
    let quoted = if quoted.len() < text.len() {
        format!("{quoted}…")
    } else {
        quoted
    };
    let message = if code == 404 {
        let said = if quoted.is_empty() {
            String::new()
        } else {
            format!("; it said: {quoted}")
        };
        format!(
            "the server does not serve {} (GET {path} is 404){said}",
            resource_of_path(path)
        )
    } else if quoted.is_empty() {
        "(the error response had an empty body)".to_string()
    } else {
        quoted
    };
    let status = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "reason": if code == 404 { "NotFound".to_string() } else { reason },
        "message": message,
        "code": code,
    });
    Some(status.to_string().into_bytes())
}

/// A tower layer that gives every error response a Status body ([`error_status`]).
#[derive(Debug, Clone, Copy)]
pub struct StatusBodies;

impl<S> tower::Layer<S> for StatusBodies {
    type Service = StatusBodiesService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        StatusBodiesService { inner }
    }
}

/// The service of [`StatusBodies`].
#[derive(Debug, Clone)]
pub struct StatusBodiesService<S> {
    inner: S,
}

/// The response body type after [`StatusBodies`].
pub type BoxedBody = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, tower::BoxError>;

impl<S, B> tower::Service<http::Request<kube::client::Body>> for StatusBodiesService<S>
where
    S: tower::Service<http::Request<kube::client::Body>, Response = http::Response<B>>,
    S::Future: Send + 'static,
    S::Error: Into<tower::BoxError>,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<tower::BoxError>,
{
    type Response = http::Response<BoxedBody>;
    type Error = tower::BoxError;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: http::Request<kube::client::Body>) -> Self::Future {
        use http_body_util::BodyExt;
        let path = req.uri().path().to_string();
        let response = self.inner.call(req);
        Box::pin(async move {
            let response = response.await.map_err(Into::into)?;
            let code = response.status().as_u16();
            if code < 400 {
                return Ok(response.map(|b| b.map_err(Into::into).boxed_unsync()));
            }
            let (parts, body) = response.into_parts();
            let bytes = body.collect().await.map_err(Into::into)?.to_bytes();
            let bytes = match error_status(code, &path, &bytes) {
                Some(fixed) => bytes::Bytes::from(fixed),
                None => bytes,
            };
            let body = http_body_util::Full::new(bytes)
                .map_err(|never| match never {})
                .boxed_unsync();
            Ok(http::Response::from_parts(parts, body))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(code: u16, path: &str, body: &str) -> Option<serde_json::Value> {
        error_status(code, path, body.as_bytes()).map(|b| serde_json::from_slice(&b).unwrap())
    }

    #[test]
    fn a_404_that_names_no_object_says_the_resource_is_not_served() {
        let s = message(
            404,
            "/apis/external-secrets.io/v1beta1/externalsecrets",
            "404 page not found",
        )
        .unwrap();
        assert_eq!(s["code"], 404);
        assert_eq!(
            s["message"],
            "the server does not serve externalsecrets.external-secrets.io/v1beta1 (GET /apis/external-secrets.io/v1beta1/externalsecrets is 404); it said: 404 page not found"
        );
        let s = message(
            404,
            "/api/v1/serviceaccounts",
            r#"{"kind":"Status","code":404,"reason":"NotFound","message":"the server could not find the requested resource","details":{}}"#,
        )
        .unwrap();
        assert!(
            s["message"]
                .as_str()
                .unwrap()
                .starts_with("the server does not serve serviceaccounts (core v1)"),
            "{s}"
        );
    }

    #[test]
    fn statuses_that_say_what_happened_are_kept_and_others_are_made_readable() {
        let named = r#"{"kind":"Status","code":404,"reason":"NotFound","message":"x \"a\" not found","details":{"name":"a"}}"#;
        assert!(message(404, "/api/v1/namespaces/n/pods/a", named).is_none());
        let conflict = r#"{"kind":"Status","code":409,"reason":"Conflict","message":"m"}"#;
        assert!(message(409, "/api/v1/pods", conflict).is_none());
        // JSON that is not a Status (kube would read it as `0 : `), and plain text.
        let s = message(500, "/api/v1/pods", r#"{"paths":["/apis"]}"#).unwrap();
        assert_eq!(
            (s["code"].as_u64(), s["reason"].as_str()),
            (Some(500), Some("InternalServerError"))
        );
        assert_eq!(s["message"], r#"{"paths":["/apis"]}"#);
        let s = message(503, "/api/v1/pods", "upstream connect error\n").unwrap();
        assert_eq!(s["message"], "upstream connect error");
        let s = message(502, "/api/v1/pods", "").unwrap();
        assert_eq!(s["message"], "(the error response had an empty body)");
    }
}
