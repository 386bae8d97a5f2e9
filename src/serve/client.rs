//! Asking a running service for a reconcile (`drover reconcile --now`): `POST /reconcile`
//! with the bearer token, and what the answer means.

use std::time::Duration;

use crate::credentials::Secret;

/// Why a reconcile request did not get queued.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    /// The service could not be reached (refused, timed out, bad URL).
    #[error("cannot reach the service at {url}: {detail}")]
    Unreachable {
        /// The URL requested.
        url: String,
        /// What went wrong.
        detail: String,
    },
    /// The service refused the token (401) or has manual triggers disabled (403).
    #[error("the service refused the request ({code}): {body}")]
    Refused {
        /// HTTP status.
        code: u16,
        /// The service's explanation.
        body: String,
    },
    /// Any other answer.
    #[error("unexpected answer from the service ({code}): {body}")]
    Unexpected {
        /// HTTP status.
        code: u16,
        /// The body.
        body: String,
    },
}

impl TriggerError {
    /// A stable label (for logs and tests).
    pub fn label(&self) -> &'static str {
        match self {
            TriggerError::Unreachable { .. } => "unreachable",
            TriggerError::Refused { .. } => "refused",
            TriggerError::Unexpected { .. } => "unexpected",
        }
    }
}

/// Sends `POST {base}/reconcile` with `Authorization: Bearer <token>`; `Ok` carries the
/// service's answer when it queued a reconcile (202).
pub async fn request_reconcile(
    base: &str,
    token: &Secret,
    timeout: Duration,
) -> Result<String, TriggerError> {
    crate::tls::install_crypto_provider();
    let url = format!("{}/reconcile", base.trim_end_matches('/'));
    let unreachable = |e: reqwest::Error| TriggerError::Unreachable {
        url: url.clone(),
        detail: e.without_url().to_string(),
    };
    let http = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(unreachable)?;
    let response = http
        .post(&url)
        .bearer_auth(token.expose())
        .send()
        .await
        .map_err(unreachable)?;
    let code = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    match code {
        202 => Ok(body),
        401 | 403 => Err(TriggerError::Refused { code, body }),
        _ => Err(TriggerError::Unexpected { code, body }),
    }
}
