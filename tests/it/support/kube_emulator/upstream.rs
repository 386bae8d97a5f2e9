//! Forwarding custom-resource API groups to a real API server.
//!
//! With [`Upstream`] set ([`super::EmulatorConfig::upstream`]), every request for an API
//! group the emulator does not serve as a built-in (`/apis/<group>/...`:
//! `apiextensions.k8s.io` and every CRD group, e.g. `actions.github.com`,
//! `external-secrets.io`) goes to that server, typically the real apiextensions-apiserver of
//! `scripts/kube-apiserver.sh`; built-in groups stay on the emulator. `/apis` (plain and
//! aggregated discovery) lists both. Clients still see one server (one kubeconfig URL);
//! faults, latency and the request log apply to forwarded requests too.

use std::collections::BTreeSet;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Response, StatusCode, header};
use serde_json::Value;

use super::resources;
use super::status::ApiError;

/// A real API server that serves the custom-resource groups.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Base URL, e.g. `https://127.0.0.1:6973` (its certificate is not verified).
    pub url: String,
    /// The bearer token sent to it.
    pub token: String,
}

/// Sends requests to an [`Upstream`].
pub struct Forwarder {
    upstream: Upstream,
    http: reqwest::Client,
    builtin_groups: BTreeSet<String>,
}

impl Forwarder {
    /// A forwarder to `upstream`.
    pub fn new(upstream: Upstream) -> Self {
        super::install_crypto_provider();
        let http = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .build()
            .expect("an HTTP client");
        let builtin_groups = resources::builtin_types()
            .into_iter()
            .map(|t| t.group)
            .filter(|g| g != "apiextensions.k8s.io")
            .collect();
        Self {
            upstream,
            http,
            builtin_groups,
        }
    }

    /// Whether a request path goes upstream: `/apis/<group>...` of a non-built-in group.
    pub fn forwards(&self, segments: &[&str]) -> bool {
        matches!(segments, ["apis", group, ..] if !self.builtin_groups.contains(*group))
    }

    /// Sends the request upstream and returns its answer (streamed, for watches).
    pub async fn forward(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &axum::http::HeaderMap,
        body: Bytes,
    ) -> Response<Body> {
        let url = format!("{}{path_and_query}", self.upstream.url);
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
        let mut request = self
            .http
            .request(method, url)
            .bearer_auth(&self.upstream.token);
        for name in [header::CONTENT_TYPE, header::ACCEPT, header::USER_AGENT] {
            if let Some(v) = headers.get(&name) {
                request = request.header(name.as_str(), v.as_bytes());
            }
        }
        if !body.is_empty() {
            request = request.body(body);
        }
        let answer = match request.send().await {
            Ok(a) => a,
            Err(e) => {
                return super::http::error_response(&ApiError::new(
                    502,
                    "BadGateway",
                    format!("the real API server did not answer: {e}"),
                ));
            }
        };
        let status =
            StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let mut kept = Vec::new();
        for name in [header::CONTENT_TYPE, header::WARNING, header::RETRY_AFTER] {
            for v in answer.headers().get_all(name.as_str()) {
                if let Ok(v) = HeaderValue::from_bytes(v.as_bytes()) {
                    kept.push((name.clone(), v));
                }
            }
        }
        let stream = futures::stream::unfold(Some(answer), |state| async move {
            let mut answer = state?;
            match answer.chunk().await {
                Ok(Some(chunk)) => Some((Ok::<_, std::io::Error>(chunk), Some(answer))),
                _ => None,
            }
        });
        let mut response = Response::new(Body::from_stream(stream));
        *response.status_mut() = status;
        for (name, value) in kept {
            response.headers_mut().append(name, value);
        }
        response
    }

    /// The upstream's discovery document at `path` (`/apis`), with the same `Accept`.
    pub async fn discovery(&self, path: &str, accept: &str) -> Option<Value> {
        let mut request = self
            .http
            .get(format!("{}{path}", self.upstream.url))
            .bearer_auth(&self.upstream.token);
        if !accept.is_empty() {
            request = request.header("accept", accept);
        }
        let answer = request.send().await.ok()?;
        if !answer.status().is_success() {
            return None;
        }
        answer.json().await.ok()
    }

    /// Merges the upstream's groups (those it serves and the emulator forwards) into the
    /// emulator's `/apis` document: `groups` (APIGroupList) or `items` (aggregated).
    pub fn merge_groups(&self, own: &mut Value, theirs: &Value) {
        for field in ["groups", "items"] {
            let name_of = |g: &Value| {
                g.get("name")
                    .or_else(|| g.get("metadata").and_then(|m| m.get("name")))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            };
            let Some(extra) = theirs.get(field).and_then(Value::as_array) else {
                continue;
            };
            let Some(list) = own.get_mut(field).and_then(Value::as_array_mut) else {
                continue;
            };
            list.retain(|g| name_of(g).is_some_and(|n| self.builtin_groups.contains(&n)));
            list.extend(
                extra
                    .iter()
                    .filter(|g| name_of(g).is_some_and(|n| !self.builtin_groups.contains(&n)))
                    .cloned(),
            );
        }
    }
}
