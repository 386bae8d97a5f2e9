//! The HTTP core: authentication through octocrab, rate-limit bookkeeping, conditional
//! requests and jittered exponential backoff.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use octocrab::Octocrab;
use octocrab::service::middleware::retry::RetryConfig;
use serde_json::Value;

use super::error::GithubError;
use crate::credentials::Secret;

/// How drover authenticates to GitHub.
#[derive(Debug, Clone)]
pub enum Auth {
    /// A GitHub App installation: JWTs signed with the App key are exchanged for
    /// installation tokens, refreshed 30 s before they expire.
    App {
        /// The App id.
        app_id: u64,
        /// The installation id.
        installation_id: u64,
        /// The App's PEM private key.
        private_key: Secret,
    },
    /// A personal access token (or any bearer token).
    Token(Secret),
}

/// How transient failures are retried and how much of the budget is kept in reserve.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// First backoff delay (jittered, doubling).
    pub min_delay: Duration,
    /// Largest backoff delay.
    pub max_delay: Duration,
    /// A `Retry-After` longer than this fails the call instead of waiting.
    pub max_retry_after: Duration,
    /// Requests left at which drover stops calling until the reset.
    pub reserve: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 4,
            min_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(120),
            reserve: 100,
        }
    }
}

/// The rate-limit state from the last response's `x-ratelimit-*` headers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimit {
    /// Budget per window.
    pub limit: u32,
    /// Requests left.
    pub remaining: u32,
    /// Requests used.
    pub used: u32,
    /// When the window resets, Unix seconds.
    pub reset: u64,
}

impl RateLimit {
    fn from_headers(h: &http::HeaderMap) -> Option<Self> {
        let num = |k: &str| h.get(k)?.to_str().ok()?.parse::<u64>().ok();
        Some(Self {
            limit: u32::try_from(num("x-ratelimit-limit")?).unwrap_or(u32::MAX),
            remaining: u32::try_from(num("x-ratelimit-remaining")?).unwrap_or(u32::MAX),
            used: num("x-ratelimit-used").map_or(0, |v| u32::try_from(v).unwrap_or(u32::MAX)),
            reset: num("x-ratelimit-reset").unwrap_or(0),
        })
    }
}

/// A response: status, headers, JSON body (`Null` when empty).
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Value,
}

/// The API root for a GitHub server URL: `https://api.github.com` for github.com,
/// `<url>/api/v3` for GitHub Enterprise Server.
pub fn api_root(server_url: &str) -> String {
    let url = server_url.trim_end_matches('/');
    match url {
        "https://github.com" | "https://www.github.com" | "https://api.github.com" => {
            "https://api.github.com".into()
        }
        u if u.ends_with("/api/v3") => u.into(),
        u => format!("{u}/api/v3"),
    }
}

/// A GitHub client. Cheap to share behind an `Arc`; all methods take `&self`.
pub struct GithubClient {
    crab: Octocrab,
    policy: RetryPolicy,
    rate: Mutex<Option<RateLimit>>,
    etags: Mutex<HashMap<String, (String, Value)>>,
}

impl std::fmt::Debug for GithubClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubClient")
            .field("rate", &self.rate_limit())
            .finish_non_exhaustive()
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl GithubClient {
    /// A client for the API at `api_root` (see [`api_root`]).
    pub fn new(api_root: &str, auth: &Auth, policy: RetryPolicy) -> Result<Self, GithubError> {
        crate::tls::install_crypto_provider();
        let setup = |e: &dyn std::fmt::Display| GithubError::Setup(e.to_string());
        let builder = Octocrab::builder()
            .base_uri(api_root)
            .map_err(|e| setup(&e))?
            .add_retry_config(RetryConfig::None)
            .set_connect_timeout(Some(Duration::from_secs(10)))
            .set_read_timeout(Some(Duration::from_secs(30)));
        let crab = match auth {
            Auth::App {
                app_id,
                installation_id,
                private_key,
            } => {
                let key = jsonwebtoken::EncodingKey::from_rsa_pem(private_key.expose().as_bytes())
                    .map_err(|_| {
                        GithubError::Setup("the App private key is not an RSA PEM key".into())
                    })?;
                builder
                    .app((*app_id).into(), key)
                    .build()
                    .map_err(|e| setup(&e))?
                    .installation((*installation_id).into())
                    .map_err(|e| setup(&e))?
            }
            Auth::Token(token) => builder
                .personal_token(token.expose().to_string())
                .build()
                .map_err(|e| setup(&e))?,
        };
        Ok(Self {
            crab,
            policy,
            rate: Mutex::new(None),
            etags: Mutex::new(HashMap::new()),
        })
    }

    /// The rate-limit state from the last response, if any came.
    pub fn rate_limit(&self) -> Option<RateLimit> {
        *self.rate.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check_budget(&self) -> Result<(), GithubError> {
        if let Some(rate) = self.rate_limit()
            && rate.remaining <= self.policy.reserve
            && rate.reset > unix_now()
        {
            return Err(GithubError::RateLimited {
                remaining: rate.remaining,
                reserve: self.policy.reserve,
                reset: rate.reset,
            });
        }
        Ok(())
    }

    async fn once(
        &self,
        method: &http::Method,
        path: &str,
        body: Option<&Value>,
        etag: Option<&str>,
    ) -> Result<Reply, Unsent> {
        let mut builder = http::Request::builder().method(method.clone()).uri(path);
        if let Some(etag) = etag {
            builder = builder.header(http::header::IF_NONE_MATCH, etag);
        }
        let request = self.crab.build_request(builder, body).map_err(Unsent)?;
        let response = match self.crab.execute(request).await {
            Ok(r) => r,
            // octocrab's own calls (minting an installation token) fail with GitHub's
            // answer; treat it as that answer.
            Err(octocrab::Error::GitHub { source, .. }) => {
                return Ok(Reply {
                    status: source.status_code.as_u16(),
                    headers: source.headers.clone().unwrap_or_default(),
                    body: serde_json::json!({ "message": source.message }),
                });
            }
            Err(e) => return Err(Unsent(e)),
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = self.crab.body_to_string(response).await.map_err(Unsent)?;
        let body = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    /// Sends a request, retrying transient failures with jittered exponential backoff
    /// (or GitHub's `Retry-After`), and records the rate-limit headers.
    pub(crate) async fn send(
        &self,
        method: http::Method,
        path: &str,
        body: Option<&Value>,
        etag: Option<&str>,
    ) -> Result<Reply, GithubError> {
        let mut backoff = ExponentialBuilder::default()
            .with_min_delay(self.policy.min_delay)
            .with_max_delay(self.policy.max_delay)
            .with_jitter()
            .without_max_times()
            .build();
        let mut attempts = 0;
        loop {
            self.check_budget()?;
            attempts += 1;
            let result = self.once(&method, path, body, etag).await;
            let (status, retry_after) = match &result {
                Ok(reply) => {
                    if let Some(rate) = RateLimit::from_headers(&reply.headers) {
                        *self.rate.lock().unwrap_or_else(|e| e.into_inner()) = Some(rate);
                    }
                    let retry_after = reply
                        .headers
                        .get(http::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                        .map(Duration::from_secs);
                    (reply.status, retry_after)
                }
                Err(_) => (0, None),
            };
            let transient = match &result {
                Err(_) => true,
                Ok(reply) => match reply.status {
                    429 => true,
                    403 => is_secondary_limit(reply),
                    s => s >= 500,
                },
            };
            if !transient {
                let reply = result.expect("non-transient results are responses");
                return self.classify(&method, path, reply);
            }
            if attempts > self.policy.max_retries {
                return Err(match result {
                    Err(unsent) if attempts == 1 => GithubError::Transport {
                        method: method.to_string(),
                        path: path.into(),
                        message: unsent.to_string(),
                    },
                    _ => GithubError::RetriesExhausted {
                        method: method.to_string(),
                        path: path.into(),
                        attempts,
                        status,
                    },
                });
            }
            let delay = match retry_after {
                Some(d) if d > self.policy.max_retry_after => {
                    return Err(GithubError::RetriesExhausted {
                        method: method.to_string(),
                        path: path.into(),
                        attempts,
                        status,
                    });
                }
                Some(d) => d,
                None => backoff.next().unwrap_or(self.policy.max_delay),
            };
            tracing::debug!(%method, path, status, ?delay, attempts, "GitHub call failed; retrying");
            tokio::time::sleep(delay).await;
        }
    }

    fn classify(
        &self,
        method: &http::Method,
        path: &str,
        reply: Reply,
    ) -> Result<Reply, GithubError> {
        if (200..300).contains(&reply.status) || reply.status == 304 {
            return Ok(reply);
        }
        if reply.status == 403
            && let Some(rate) = RateLimit::from_headers(&reply.headers)
            && rate.remaining == 0
        {
            return Err(GithubError::RateLimited {
                remaining: 0,
                reserve: self.policy.reserve,
                reset: rate.reset,
            });
        }
        Err(GithubError::Status {
            method: method.to_string(),
            path: path.into(),
            status: reply.status,
            message: reply.body["message"]
                .as_str()
                .unwrap_or("no message")
                .chars()
                .take(300)
                .collect(),
        })
    }

    /// GETs `path` conditionally: with the ETag of the last answer, a `304 Not Modified`
    /// (free of rate limit) returns the cached body. The flag says it came from cache.
    pub(crate) async fn get_cached(&self, path: &str) -> Result<(Value, bool), GithubError> {
        let cached = self
            .etags
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
            .cloned();
        let reply = self
            .send(
                http::Method::GET,
                path,
                None,
                cached.as_ref().map(|c| c.0.as_str()),
            )
            .await?;
        if reply.status == 304
            && let Some((_, body)) = cached
        {
            return Ok((body, true));
        }
        if let Some(etag) = reply
            .headers
            .get(http::header::ETAG)
            .and_then(|v| v.to_str().ok())
        {
            self.etags
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(path.to_string(), (etag.to_string(), reply.body.clone()));
        }
        Ok((reply.body, false))
    }
}

/// A 403 that is a secondary rate limit (GitHub sends `Retry-After` or says so), not a
/// permission problem or the primary limit.
fn is_secondary_limit(reply: &Reply) -> bool {
    reply.headers.contains_key(http::header::RETRY_AFTER)
        || reply.body["message"]
            .as_str()
            .is_some_and(|m| m.to_ascii_lowercase().contains("secondary rate limit"))
}

/// A request that got no HTTP answer (octocrab's transport or body error).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub(crate) struct Unsent(octocrab::Error);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_roots() {
        assert_eq!(api_root("https://github.com/"), "https://api.github.com");
        assert_eq!(
            api_root("https://ghe.example.org"),
            "https://ghe.example.org/api/v3"
        );
        assert_eq!(
            api_root("https://ghe.example.org/api/v3"),
            "https://ghe.example.org/api/v3"
        );
    }

    #[test]
    fn token_errors_never_show_the_key() {
        let auth = Auth::App {
            app_id: 1,
            installation_id: 2,
            private_key: Secret::new("-----BEGIN RSA PRIVATE KEY-----\nnot-a-key\n"),
        };
        let err = GithubClient::new("https://api.github.com", &auth, RetryPolicy::default())
            .unwrap_err()
            .to_string();
        assert!(!err.contains("not-a-key"), "{err}");
        assert!(!format!("{auth:?}").contains("not-a-key"));
    }
}
