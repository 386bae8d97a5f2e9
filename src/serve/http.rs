//! The service's HTTP endpoints (axum): `/healthz`, `/readyz`, `/metrics`, `/status`,
//! the status page at `/`, `POST /webhook` (GitHub, HMAC-verified) and `POST /reconcile`
//! (bearer token).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};

use super::metrics::{WebhookLabels, webhook_event_label};
use super::{Service, Trigger, webhook};

/// The router of every endpoint.
pub(crate) fn router(service: Arc<Service>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/webhook", post(github_webhook))
        .route("/reconcile", post(manual_trigger))
        .route("/jit", post(super::autoscale::jit))
        .layer(DefaultBodyLimit::max(webhook::MAX_BODY_BYTES))
        .with_state(service)
}

/// Serves until `stop` turns true, then drains open connections, within the connection
/// limits and timeouts of [`super::listener`].
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    service: Arc<Service>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let limits = super::listener::Limits::for_this_process();
    tracing::info!(
        max_connections = limits.max_connections,
        "connection limits"
    );
    super::listener::serve(listener, router(service), limits, stop).await
}

async fn ready(State(service): State<Arc<Service>>) -> Response {
    if service.status().ready {
        (StatusCode::OK, "ready").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the first reconcile has not finished",
        )
            .into_response()
    }
}

async fn metrics(State(service): State<Arc<Service>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        service.metrics.encode(),
    )
        .into_response()
}

async fn status(State(service): State<Arc<Service>>) -> Response {
    axum::Json(service.status_json()).into_response()
}

async fn page(State(service): State<Arc<Service>>) -> Html<String> {
    Html(service.page())
}

/// Counts a delivery; `event` is the header as sent, mapped onto the fixed label set.
fn count_delivery(service: &Service, event: &str, outcome: &str) {
    service
        .metrics
        .webhook_deliveries
        .get_or_create(&WebhookLabels {
            event: webhook_event_label(event).into(),
            outcome: outcome.into(),
        })
        .inc();
}

/// The token of an `Authorization: Bearer …` header; the scheme is case-insensitive
/// (RFC 9110, section 11.1).
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

async fn github_webhook(
    State(service): State<Arc<Service>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let event = text("x-github-event").unwrap_or("unknown").to_string();
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                count_delivery(&service, &event, "too_large");
            }
            return rejection.into_response();
        }
    };
    let Some(secret) = &service.config().webhook_secret else {
        count_delivery(&service, &event, "bad_signature");
        return (
            StatusCode::UNAUTHORIZED,
            "webhooks are disabled: no webhook secret configured",
        )
            .into_response();
    };
    if let Err(err) = webhook::verify(
        secret.expose().as_bytes(),
        &body,
        text("x-hub-signature-256"),
    ) {
        count_delivery(&service, &event, "bad_signature");
        tracing::warn!(%event, error = %err, "refused webhook delivery");
        return (StatusCode::UNAUTHORIZED, err.to_string()).into_response();
    }
    if let Some(id) = text("x-github-delivery")
        && !service.first_delivery(id)
    {
        count_delivery(&service, &event, "duplicate");
        return (StatusCode::OK, "duplicate delivery").into_response();
    }
    match event.as_str() {
        "push" => {
            count_delivery(&service, &event, "accepted");
            service.trigger(Trigger::Full);
            (StatusCode::ACCEPTED, "reconcile queued").into_response()
        }
        "workflow_job" => {
            let Some(autoscaler) = &service.autoscaler else {
                count_delivery(&service, &event, "ignored");
                return (StatusCode::ACCEPTED, "autoscaling is off").into_response();
            };
            match serde_json::from_slice::<serde_json::Value>(&body) {
                Ok(payload) => {
                    count_delivery(&service, &event, "accepted");
                    autoscaler.observe_webhook(&payload);
                    (StatusCode::ACCEPTED, "demand updated").into_response()
                }
                Err(_) => {
                    count_delivery(&service, &event, "malformed");
                    (StatusCode::BAD_REQUEST, "payload is not JSON").into_response()
                }
            }
        }
        "ping" => {
            count_delivery(&service, &event, "accepted");
            (StatusCode::OK, "pong").into_response()
        }
        _ => {
            count_delivery(&service, &event, "ignored");
            (StatusCode::ACCEPTED, "event ignored").into_response()
        }
    }
}

async fn manual_trigger(State(service): State<Arc<Service>>, headers: HeaderMap) -> Response {
    let Some(token) = &service.config().trigger_token else {
        return (
            StatusCode::FORBIDDEN,
            "manual triggers are disabled: no trigger token configured",
        )
            .into_response();
    };
    let given = bearer_token(&headers);
    let matches = given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.expose().as_bytes()));
    if !matches {
        return (StatusCode::UNAUTHORIZED, "bad or missing bearer token").into_response();
    }
    service.trigger(Trigger::Full);
    (StatusCode::ACCEPTED, "reconcile queued").into_response()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
