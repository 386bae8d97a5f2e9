//! slurmrestd driver: JWT auth headers, OpenAPI version negotiation, per-request timeouts.

use std::error::Error as _;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::sync::OnceCell;

use super::types::fill_partition_gres;
use super::wire::{self, ApiVersion};
use super::{
    ApiError, BoxFuture, Error, Job, JobSpec, Node, Partition, Result, Secret, SlurmDriver,
};

/// Slurm's generic `SLURM_ERROR`; 22.05 reports a rejected JWT only as this.
const SLURM_ERROR: i64 = -1;
/// `SLURM_PROTOCOL_AUTHENTICATION_ERROR`.
const PROTOCOL_AUTH_ERROR: i64 = 1007;
/// An "Unspecified error" that took at least this long is slurmctld not answering
/// slurmrestd, not a rejected token (which is answered at once); see `docs/slurm.md`.
const SLOW_UNSPECIFIED: Duration = Duration::from_secs(3);
/// `ESLURM_JOB_HELD`: "Job is in held state, pending scheduler release". slurmrestd lists
/// it as an error next to the job id of a job submitted with `hold`; it is not a failure.
const JOB_HELD: i64 = 2042;

/// How to reach one slurmrestd.
#[derive(Debug, Clone)]
pub struct RestConfig {
    /// Base URL, e.g. `http://127.0.0.1:6820`.
    pub url: String,
    /// User name sent as `X-SLURM-USER-NAME` (must match the token's user).
    pub user: String,
    /// JWT sent as `X-SLURM-USER-TOKEN`.
    pub token: Secret,
    /// Timeout of each HTTP request.
    pub timeout: Duration,
    /// Force an API version instead of negotiating it.
    pub version: Option<ApiVersion>,
}

impl RestConfig {
    /// A configuration with a 10 s timeout and version negotiation.
    pub fn new(url: impl Into<String>, user: impl Into<String>, token: Secret) -> Self {
        let url = url.into().trim_end_matches('/').to_owned();
        Self {
            url,
            user: user.into(),
            token,
            timeout: Duration::from_secs(10),
            version: None,
        }
    }
}

/// A [`SlurmDriver`] speaking slurmrestd's REST API.
#[derive(Debug)]
pub struct RestDriver {
    cfg: RestConfig,
    http: reqwest::Client,
    version: OnceCell<ApiVersion>,
}

impl RestDriver {
    /// Builds a driver; no request is made until the first call.
    pub fn new(cfg: RestConfig) -> Result<Self> {
        crate::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .build()
            .map_err(|e| Error::Protocol {
                url: cfg.url.clone(),
                endpoint: String::new(),
                detail: format!("cannot build HTTP client: {e}"),
            })?;
        let version = cfg
            .version
            .map_or_else(OnceCell::new, |v| OnceCell::new_with(Some(v)));
        Ok(Self { cfg, http, version })
    }

    /// The API version in use, negotiated with the server on first use.
    pub async fn version(&self) -> Result<ApiVersion> {
        self.version
            .get_or_try_init(|| self.negotiate())
            .await
            .copied()
    }

    /// Reads the paths the server offers from `/openapi/v3` and picks the newest we speak.
    async fn negotiate(&self) -> Result<ApiVersion> {
        let endpoint = "/openapi/v3";
        let body = self.request(Method::GET, endpoint, None).await?;
        let doc: Value = serde_json::from_slice(&body).map_err(|e| self.protocol(endpoint, e))?;
        let paths: Vec<&String> = doc
            .get("paths")
            .and_then(Value::as_object)
            .map(|m| m.keys().collect())
            .unwrap_or_default();
        ApiVersion::PREFERENCE
            .into_iter()
            .find(|v| paths.iter().any(|p| p.starts_with(&format!("/slurm/{}/", v.as_str()))))
            .ok_or_else(|| Error::Protocol {
                url: self.cfg.url.clone(),
                endpoint: endpoint.to_owned(),
                detail: format!("the server offers none of the API versions drover speaks (v0.0.40, v0.0.38); it lists {} paths", paths.len()),
            })
    }

    async fn path(&self, rest: &str) -> Result<String> {
        Ok(format!("/slurm/{}/{rest}", self.version().await?.as_str()))
    }

    /// Sends one request and returns the body of a successful answer.
    async fn request(
        &self,
        method: Method,
        endpoint: &str,
        body: Option<Value>,
    ) -> Result<Vec<u8>> {
        self.request_allowing(method, endpoint, body, &[]).await
    }

    /// [`Self::request`], ignoring Slurm errors whose code is in `allowed`.
    async fn request_allowing(
        &self,
        method: Method,
        endpoint: &str,
        body: Option<Value>,
        allowed: &[i64],
    ) -> Result<Vec<u8>> {
        let mut req = self
            .http
            .request(method, format!("{}{endpoint}", self.cfg.url))
            .timeout(self.cfg.timeout)
            .header("X-SLURM-USER-NAME", &self.cfg.user)
            .header("X-SLURM-USER-TOKEN", self.cfg.token.expose());
        if let Some(b) = body {
            req = req.json(&b);
        }
        let started = std::time::Instant::now();
        let resp = req.send().await.map_err(|e| self.unreachable(&e))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| self.unreachable(&e))?
            .to_vec();
        let result = self.check(endpoint, status, bytes, allowed);
        match result {
            Err(Error::Auth { detail, .. })
                if detail.contains("(error -1)") && started.elapsed() >= SLOW_UNSPECIFIED =>
            {
                Err(self.controller_unreachable(endpoint, started.elapsed(), &detail))
            }
            other => other,
        }
    }

    /// Slurm 22.05 answers "Unspecified error" (-1) both for a rejected token (at once) and
    /// when slurmrestd cannot reach slurmctld (after its connection retries, ~9 s here).
    fn controller_unreachable(&self, endpoint: &str, took: Duration, detail: &str) -> Error {
        Error::Unreachable {
            url: self.cfg.url.clone(),
            reason: format!(
                "slurmrestd answered {endpoint} only after {:.0} s with Slurm's unspecified error ({detail}): \
                 slurmctld is down or unreachable from slurmrestd",
                took.as_secs_f64()
            ),
        }
    }

    fn check(
        &self,
        endpoint: &str,
        status: StatusCode,
        body: Vec<u8>,
        allowed: &[i64],
    ) -> Result<Vec<u8>> {
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(self.auth(endpoint, format!("HTTP {status}")));
        }
        let mut errors = wire::errors_of(&body);
        errors.retain(|e| !e.code.is_some_and(|c| allowed.contains(&c)));
        if status.is_success() && errors.is_empty() {
            return Ok(body);
        }
        if looks_like_auth(&errors) {
            return Err(self.auth(endpoint, format!("HTTP {status}: {}", errors[0])));
        }
        if errors.is_empty() {
            let snippet: String = String::from_utf8_lossy(&body).chars().take(200).collect();
            return Err(self.protocol(
                endpoint,
                format!("HTTP {status} without an error list: {snippet}"),
            ));
        }
        Err(Error::Api {
            url: self.cfg.url.clone(),
            endpoint: endpoint.to_owned(),
            errors,
        })
    }

    fn unreachable(&self, e: &reqwest::Error) -> Error {
        let mut reason = if e.is_timeout() {
            "timed out".to_owned()
        } else {
            e.to_string()
        };
        let mut source = e.source();
        while let Some(s) = source {
            reason.push_str(&format!(": {s}"));
            source = s.source();
        }
        Error::Unreachable {
            url: self.cfg.url.clone(),
            reason,
        }
    }

    fn auth(&self, endpoint: &str, detail: String) -> Error {
        Error::Auth {
            url: self.cfg.url.clone(),
            endpoint: endpoint.to_owned(),
            detail,
        }
    }

    fn protocol(&self, endpoint: &str, detail: impl ToString) -> Error {
        Error::Protocol {
            url: self.cfg.url.clone(),
            endpoint: endpoint.to_owned(),
            detail: detail.to_string(),
        }
    }

    async fn get_parsed<T>(
        &self,
        rest: &str,
        parse: fn(&[u8]) -> serde_json::Result<T>,
    ) -> Result<T> {
        let endpoint = self.path(rest).await?;
        let body = self.request(Method::GET, &endpoint, None).await?;
        parse(&body).map_err(|e| self.protocol(&endpoint, e))
    }

    async fn submit_job(&self, spec: &JobSpec, hold: bool) -> Result<u64> {
        let endpoint = self.path("job/submit").await?;
        let body = wire::submit_body(spec, self.version().await?, hold);
        let allowed: &[i64] = if hold { &[JOB_HELD] } else { &[] };
        let answer = self
            .request_allowing(Method::POST, &endpoint, Some(body), allowed)
            .await?;
        match wire::parse_submit(&answer) {
            Ok(Some(id)) => Ok(id),
            Ok(None) => Err(self.protocol(&endpoint, "the answer has no job_id")),
            Err(e) => Err(self.protocol(&endpoint, e)),
        }
    }

    async fn cancel_job(&self, id: u64) -> Result<()> {
        let endpoint = self.path(&format!("job/{id}")).await?;
        self.request(Method::DELETE, &endpoint, None)
            .await
            .map(drop)
    }

    async fn release_job(&self, id: u64) -> Result<()> {
        let endpoint = self.path(&format!("job/{id}")).await?;
        self.request(Method::POST, &endpoint, Some(wire::release_body()))
            .await
            .map(drop)
    }

    async fn list_partitions(&self) -> Result<Vec<Partition>> {
        let mut parts = self
            .get_parsed("partitions", wire::parse_partitions)
            .await?;
        let nodes = self.get_parsed("nodes", wire::parse_nodes).await?;
        fill_partition_gres(&mut parts, &nodes);
        Ok(parts)
    }
}

/// Errors that mean "slurmctld did not accept the token": 22.05 says only `Unspecified error`
/// (-1) when the JWT is wrong, expired or for another user; later versions say 1007.
fn looks_like_auth(errors: &[ApiError]) -> bool {
    !errors.is_empty()
        && errors
            .iter()
            .all(|e| matches!(e.code, Some(SLURM_ERROR | PROTOCOL_AUTH_ERROR)))
}

impl SlurmDriver for RestDriver {
    fn submit<'a>(&'a self, spec: &'a JobSpec) -> BoxFuture<'a, Result<u64>> {
        Box::pin(self.submit_job(spec, false))
    }

    fn submit_held<'a>(&'a self, spec: &'a JobSpec) -> BoxFuture<'a, Result<u64>> {
        Box::pin(self.submit_job(spec, true))
    }

    fn release(&self, id: u64) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.release_job(id))
    }

    fn jobs(&self) -> BoxFuture<'_, Result<Vec<Job>>> {
        Box::pin(self.get_parsed("jobs", wire::parse_jobs))
    }

    fn cancel(&self, id: u64) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.cancel_job(id))
    }

    fn partitions(&self) -> BoxFuture<'_, Result<Vec<Partition>>> {
        Box::pin(self.list_partitions())
    }

    fn nodes(&self) -> BoxFuture<'_, Result<Vec<Node>>> {
        Box::pin(self.get_parsed("nodes", wire::parse_nodes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_errors_count_as_auth() {
        let unspecified = ApiError {
            code: Some(-1),
            message: "Unspecified error".into(),
        };
        let partition = ApiError {
            code: Some(2000),
            message: "Invalid partition name specified".into(),
        };
        assert!(looks_like_auth(std::slice::from_ref(&unspecified)));
        assert!(!looks_like_auth(&[unspecified, partition]));
        assert!(!looks_like_auth(&[]));
    }

    #[test]
    fn config_debug_hides_token() {
        let cfg = RestConfig::new(
            "http://127.0.0.1:6820/",
            "ci",
            Secret::new("eyJ.secret.jwt"),
        );
        assert_eq!(cfg.url, "http://127.0.0.1:6820");
        assert!(!format!("{cfg:?}").contains("eyJ.secret.jwt"));
    }
}
