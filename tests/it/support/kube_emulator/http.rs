//! The HTTP front end: a hyper HTTP/1 server on loopback that applies injected faults,
//! checks the bearer token, logs every request and routes it to discovery or to the
//! resource verbs in [`super::verbs`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::discovery;
use super::faults::{FaultAction, Faults, RequestLog, RequestRecord};
use super::status::ApiError;
use super::store::Store;
use super::verbs;

/// Everything the request handlers share.
pub struct Shared {
    pub store: Mutex<Store>,
    pub faults: Faults,
    pub log: RequestLog,
    pub git_version: String,
    pub token: String,
    pub address: String,
    /// Bumped to end every open watch (as an API server restart does).
    pub end_watches: watch::Sender<u64>,
    /// Where custom-resource groups go, when a real server serves them.
    pub upstream: Option<super::upstream::Forwarder>,
}

/// Returned by the service to make hyper close the connection without a response.
#[derive(Debug)]
struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}

impl std::error::Error for DropConnection {}

/// Accepts connections until `shutdown` flips to true.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                tokio::spawn(serve_connection(stream, shared.clone(), shutdown.clone()));
            }
            _ = shutdown.changed() => break,
        }
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let service = hyper::service::service_fn(move |req| handle(shared.clone(), req));
    let connection =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = connection => {}
        _ = shutdown.changed() => {}
    }
}

/// Faults, latency, authentication and logging around [`route`].
async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, DropConnection> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let params = parse_query(&query);
    let mut record = RequestRecord {
        method: method.clone(),
        path: path.clone(),
        query: query.clone(),
        field_manager: params.get("fieldManager").cloned(),
        dry_run: params.get("dryRun").is_some_and(|v| v == "All"),
        status: 0,
        at: std::time::Instant::now(),
    };
    let delay = shared.faults.delay_for(&method, &path);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let response = match shared.faults.take(&method, &path) {
        Some(FaultAction::Drop) => {
            shared.log.push(record);
            return Err(DropConnection);
        }
        Some(FaultAction::Fail(code)) => error_response(&ApiError::injected(code)),
        Some(FaultAction::RateLimit(secs)) => error_response(&ApiError::too_many_requests(secs)),
        None if !authorized(&shared, &req) => error_response(&ApiError::unauthorized()),
        None => {
            let (parts, body) = req.into_parts();
            match axum::body::to_bytes(Body::new(body), 64 * 1024 * 1024).await {
                Ok(body) => {
                    record.dry_run |= body_requests_dry_run(&method, &body);
                    // Logged before it is served, so a write is in the log no later than
                    // its effect is visible in the store.
                    let index = shared.log.push(record);
                    let response = route(&shared, parts, body, &params).await;
                    shared.log.set_status(index, response.status().as_u16());
                    return Ok(response);
                }
                Err(_) => error_response(&ApiError::bad_request("could not read the request body")),
            }
        }
    };
    record.status = response.status().as_u16();
    shared.log.push(record);
    Ok(response)
}

fn authorized(shared: &Shared, req: &Request<Incoming>) -> bool {
    let expected = format!("Bearer {}", shared.token);
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some(expected.as_str())
}

fn parse_query(query: &str) -> HashMap<String, String> {
    let uri: axum::http::Uri = format!("/?{query}").parse().unwrap_or_default();
    axum::extract::Query::<HashMap<String, String>>::try_from_uri(&uri)
        .map(|q| q.0)
        .unwrap_or_default()
}

/// A parsed request for the verb handlers.
pub struct ApiRequest {
    pub method: String,
    pub query: HashMap<String, String>,
    pub content_type: String,
    pub user_agent: String,
    pub body: Bytes,
}

/// DELETE carries `dryRun` in its `DeleteOptions` body (kube sends it there).
pub fn body_requests_dry_run(method: &str, body: &[u8]) -> bool {
    method == "DELETE"
        && serde_json::from_slice::<Value>(body).is_ok_and(|v| {
            v["dryRun"]
                .as_array()
                .is_some_and(|a| a.iter().any(|d| d == "All"))
        })
}

async fn route(
    shared: &Shared,
    parts: axum::http::request::Parts,
    body: Bytes,
    params: &HashMap<String, String>,
) -> Response<Body> {
    let header_str = |name: header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let request = ApiRequest {
        method: parts.method.to_string(),
        query: params.clone(),
        content_type: header_str(header::CONTENT_TYPE),
        user_agent: header_str(header::USER_AGENT),
        body,
    };
    let path = parts.uri.path().to_string();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let accept = header_str(header::ACCEPT);
    if let Some(upstream) = &shared.upstream
        && upstream.forwards(&segments)
    {
        let path_and_query = parts
            .uri
            .path_and_query()
            .map_or(path.as_str(), |p| p.as_str());
        return upstream
            .forward(
                parts.method.as_str(),
                path_and_query,
                &parts.headers,
                request.body,
            )
            .await;
    }
    if accept.contains(discovery::AGGREGATED_ACCEPT)
        && matches!(segments.as_slice(), ["api"] | ["apis"])
    {
        let types = shared.store.lock().unwrap().all_types();
        let mut doc = discovery::aggregated(&types, segments == ["api"]);
        if let Some(upstream) = &shared.upstream
            && segments == ["apis"]
            && let Some(theirs) = upstream.discovery("/apis", &accept).await
        {
            upstream.merge_groups(&mut doc, &theirs);
        }
        let mut response = json_response(StatusCode::OK, &doc, &[]);
        let content_type = HeaderValue::from_static(discovery::AGGREGATED_CONTENT_TYPE);
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type);
        return response;
    }
    if let Some(mut doc) = discovery_doc(shared, &segments) {
        if let (Some(upstream), ["apis"], Some(own)) =
            (&shared.upstream, segments.as_slice(), doc.as_mut())
            && let Some(theirs) = upstream.discovery("/apis", "application/json").await
        {
            upstream.merge_groups(own, &theirs);
        }
        return match (request.method.as_str(), doc) {
            ("GET", Some(doc)) => json_response(StatusCode::OK, &doc, &[]),
            ("GET", None) => error_response(&ApiError::no_such_resource()),
            (method, _) => error_response(&ApiError::method_not_allowed(method)),
        };
    }
    match segments.as_slice() {
        ["healthz" | "livez" | "readyz"] => Response::new(Body::from("ok")),
        ["api", "v1", rest @ ..] => verbs::dispatch(shared, "", "v1", rest, request).await,
        ["apis", group, version, rest @ ..] => {
            verbs::dispatch(shared, group, version, rest, request).await
        }
        _ => error_response(&ApiError::no_such_resource()),
    }
}

/// `Some(Some(doc))` for a served discovery path, `Some(None)` for an unserved one,
/// `None` if the path is not a discovery path.
fn discovery_doc(shared: &Shared, segments: &[&str]) -> Option<Option<Value>> {
    let types = || shared.store.lock().unwrap().all_types();
    Some(match segments {
        ["version"] => Some(discovery::version(&shared.git_version)),
        ["api"] => Some(discovery::core_versions(&shared.address)),
        ["api", "v1"] => discovery::resource_list(&types(), "", "v1"),
        ["apis"] => Some(discovery::group_list(&types())),
        ["apis", group] => discovery::group(&types(), group),
        ["apis", group, version] => discovery::resource_list(&types(), group, version),
        _ => return None,
    })
}

/// A JSON response with optional `Warning` headers.
pub fn json_response(status: StatusCode, value: &Value, warnings: &[String]) -> Response<Body> {
    let mut response = Response::new(Body::from(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    for warning in warnings {
        let text = format!("299 - \"{}\"", warning.replace('"', "'"));
        if let Ok(value) = HeaderValue::from_str(&text) {
            response.headers_mut().append(header::WARNING, value);
        }
    }
    response
}

/// A `metav1.Status` error response (with `Retry-After` for 429).
pub fn error_response(error: &ApiError) -> Response<Body> {
    let status = StatusCode::from_u16(error.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = json_response(status, &error.to_status(), &[]);
    if let Some(secs) = error
        .details
        .as_ref()
        .and_then(|d| d["retryAfterSeconds"].as_u64())
    {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}
