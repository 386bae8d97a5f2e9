//! Resource verbs: routes `/api/v1/...` and `/apis/{group}/{version}/...` paths to get,
//! list, watch, create, replace, patch (apply / merge), delete, deletecollection and the
//! `status` subresource.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Response, StatusCode, header};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use super::http::{ApiRequest, Shared, body_requests_dry_run, error_response, json_response};
use super::resources::ResourceType;
use super::selectors::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::store::{Event, FieldValidation, WriteOptions, Written};

/// What a resource path addresses.
struct Target {
    rt: ResourceType,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

/// Entry point for resource paths.
pub async fn dispatch(
    shared: &Shared,
    group: &str,
    version: &str,
    rest: &[&str],
    req: ApiRequest,
) -> Response<Body> {
    let target = match resolve(shared, group, version, rest) {
        Ok(t) => t,
        Err(e) => return error_response(&e),
    };
    let result = match (&target.name, &target.subresource) {
        (None, _) => collection(shared, &target, &req).await,
        (Some(name), None) => item(shared, &target, name, &req),
        (Some(name), Some(_)) => status_subresource(shared, &target, name, &req),
    };
    result.unwrap_or_else(|e| error_response(&e))
}

fn resolve(shared: &Shared, group: &str, version: &str, rest: &[&str]) -> Result<Target, ApiError> {
    let (namespace, plural, name, subresource) = match rest {
        ["namespaces", ns, plural, tail @ ..] if !matches!(*plural, "status" | "finalize") => {
            match tail {
                [] => (Some(*ns), *plural, None, None),
                [name] => (Some(*ns), *plural, Some(*name), None),
                [name, sub] => (Some(*ns), *plural, Some(*name), Some(*sub)),
                _ => return Err(ApiError::no_such_resource()),
            }
        }
        [plural] => (None, *plural, None, None),
        [plural, name] => (None, *plural, Some(*name), None),
        [plural, name, sub] => (None, *plural, Some(*name), Some(*sub)),
        _ => return Err(ApiError::no_such_resource()),
    };
    let rt = shared
        .store
        .lock()
        .unwrap()
        .type_at(group, version, plural)
        .ok_or_else(ApiError::no_such_resource)?;
    let scope_ok = !matches!(
        (rt.namespaced, namespace, name),
        (false, Some(_), _) | (true, None, Some(_))
    );
    let sub_ok = subresource.is_none_or(|s| s == "status" && rt.has_status);
    if !scope_ok || !sub_ok {
        return Err(ApiError::no_such_resource());
    }
    Ok(Target {
        rt,
        namespace: namespace.map(str::to_string),
        name: name.map(str::to_string),
        subresource: subresource.map(str::to_string),
    })
}

async fn collection(
    shared: &Shared,
    target: &Target,
    req: &ApiRequest,
) -> Result<Response<Body>, ApiError> {
    let ns = target.namespace.as_deref();
    match req.method.as_str() {
        "GET"
            if req
                .query
                .get("watch")
                .is_some_and(|w| w == "true" || w == "1") =>
        {
            watch(shared, target, req)
        }
        "GET" => list(shared, target, req),
        "POST" if target.rt.namespaced && ns.is_none() => Err(ApiError::method_not_allowed("POST")),
        "POST" => {
            let opts = write_options(req, false)?;
            let body = parse_body(&req.body)?;
            let written = shared
                .store
                .lock()
                .unwrap()
                .create(&target.rt, ns, body, &opts)?;
            Ok(written_response(written))
        }
        "DELETE" => delete_collection(shared, target, req),
        other => Err(ApiError::method_not_allowed(other)),
    }
}

fn item(
    shared: &Shared,
    target: &Target,
    name: &str,
    req: &ApiRequest,
) -> Result<Response<Body>, ApiError> {
    let (rt, ns) = (&target.rt, target.namespace.as_deref());
    match req.method.as_str() {
        "GET" => Ok(json_response(
            StatusCode::OK,
            &shared.store.lock().unwrap().get(rt, ns, name)?,
            &[],
        )),
        "PUT" => {
            let opts = write_options(req, false)?;
            let body = parse_body(&req.body)?;
            Ok(written_response(
                shared
                    .store
                    .lock()
                    .unwrap()
                    .replace(rt, ns, name, body, &opts)?,
            ))
        }
        "PATCH" => {
            let media = media_type(&req.content_type);
            let opts = write_options(req, media == "application/apply-patch+yaml")?;
            let body = parse_body(&req.body)?;
            let mut store = shared.store.lock().unwrap();
            let written = match media.as_str() {
                "application/apply-patch+yaml" => store.apply(rt, ns, name, body, &opts)?,
                "application/merge-patch+json" => store.merge_patch(rt, ns, name, body, &opts)?,
                other => return Err(ApiError::unsupported_media_type(other)),
            };
            Ok(written_response(written))
        }
        "DELETE" => {
            let dry_run =
                write_options(req, false)?.dry_run || body_requests_dry_run("DELETE", &req.body);
            let options = if req.body.is_empty() {
                Value::Null
            } else {
                parse_body(&req.body)?
            };
            let deleted = shared
                .store
                .lock()
                .unwrap()
                .delete(rt, ns, name, &options, dry_run)?;
            Ok(json_response(StatusCode::OK, &deleted, &[]))
        }
        other => Err(ApiError::method_not_allowed(other)),
    }
}

/// `status`: GET; PUT replaces status; merge or apply PATCH merges into status (apply to
/// status does not track field ownership).
fn status_subresource(
    shared: &Shared,
    target: &Target,
    name: &str,
    req: &ApiRequest,
) -> Result<Response<Body>, ApiError> {
    let (rt, ns) = (&target.rt, target.namespace.as_deref());
    let mut store = shared.store.lock().unwrap();
    let object = match req.method.as_str() {
        "GET" => store.get(rt, ns, name)?,
        "PUT" | "PATCH" => {
            let merge = req.method == "PATCH";
            if merge
                && !matches!(
                    media_type(&req.content_type).as_str(),
                    "application/merge-patch+json" | "application/apply-patch+yaml"
                )
            {
                return Err(ApiError::unsupported_media_type(&req.content_type));
            }
            let opts = write_options(req, false)?;
            store.write_status(rt, ns, name, &parse_body(&req.body)?, merge, opts.dry_run)?
        }
        other => return Err(ApiError::method_not_allowed(other)),
    };
    Ok(json_response(StatusCode::OK, &object, &[]))
}

fn selectors(
    rt: &ResourceType,
    req: &ApiRequest,
) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let labels = LabelSelector::parse(
        req.query
            .get("labelSelector")
            .map(String::as_str)
            .unwrap_or_default(),
    )?;
    let fields = FieldSelector::parse(
        req.query
            .get("fieldSelector")
            .map(String::as_str)
            .unwrap_or_default(),
        &rt.kind,
    )?;
    Ok((labels, fields))
}

/// LIST, with `limit` / `continue` paging (the token is the last returned `namespace/name`).
fn list(shared: &Shared, target: &Target, req: &ApiRequest) -> Result<Response<Body>, ApiError> {
    let (labels, fields) = selectors(&target.rt, req)?;
    let store = shared.store.lock().unwrap();
    let mut items = store.list(&target.rt, target.namespace.as_deref(), &labels, &fields);
    let key = |o: &Value| {
        format!(
            "{}/{}",
            o["metadata"]["namespace"].as_str().unwrap_or_default(),
            o["metadata"]["name"].as_str().unwrap_or_default()
        )
    };
    if let Some(token) = req.query.get("continue").filter(|t| !t.is_empty()) {
        items.retain(|o| key(o).as_str() > token.as_str());
    }
    let mut metadata = json!({"resourceVersion": store.resource_version().to_string()});
    if let Some(limit) = req
        .query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0)
        && items.len() > limit
    {
        metadata["remainingItemCount"] = json!(items.len() - limit);
        items.truncate(limit);
        metadata["continue"] = json!(key(items.last().expect("limit > 0")));
    }
    let list = json!({
        "kind": format!("{}List", target.rt.kind),
        "apiVersion": target.rt.api_version(),
        "metadata": metadata,
        "items": items,
    });
    Ok(json_response(StatusCode::OK, &list, &[]))
}

fn delete_collection(
    shared: &Shared,
    target: &Target,
    req: &ApiRequest,
) -> Result<Response<Body>, ApiError> {
    let (labels, fields) = selectors(&target.rt, req)?;
    let dry_run = write_options(req, false)?.dry_run || body_requests_dry_run("DELETE", &req.body);
    let mut store = shared.store.lock().unwrap();
    let matching = store.list(&target.rt, target.namespace.as_deref(), &labels, &fields);
    let mut deleted = Vec::new();
    for obj in matching {
        let ns = obj["metadata"]["namespace"].as_str().map(str::to_string);
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        deleted.push(store.delete(&target.rt, ns.as_deref(), &name, &Value::Null, dry_run)?);
    }
    let list = json!({
        "kind": format!("{}List", target.rt.kind),
        "apiVersion": target.rt.api_version(),
        "metadata": {"resourceVersion": store.resource_version().to_string()},
        "items": deleted,
    });
    Ok(json_response(StatusCode::OK, &list, &[]))
}

/// WATCH: replays events after `resourceVersion` (or the current objects as ADDED when it
/// is absent or 0) and then streams new ones as JSON lines until `timeoutSeconds`. A
/// resourceVersion older than the kept history gets an `ERROR` event with a 410 Expired
/// Status, as a real server sends it.
fn watch(shared: &Shared, target: &Target, req: &ApiRequest) -> Result<Response<Body>, ApiError> {
    let (labels, fields) = selectors(&target.rt, req)?;
    let from = match req.query.get("resourceVersion").filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(
            s.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {s}")))?,
        ),
    };
    let timeout = req
        .query
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .unwrap_or(1800);
    let started =
        shared
            .store
            .lock()
            .unwrap()
            .watch_from(&target.rt, target.namespace.as_deref(), from);
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    match started {
        Ok((backlog, events)) => {
            let filter = WatchFilter {
                rt: target.rt.clone(),
                namespace: target.namespace.clone(),
                labels,
                fields,
            };
            tokio::spawn(pump(
                filter,
                backlog,
                events,
                tx,
                Duration::from_secs(timeout),
                shared.end_watches.subscribe(),
            ));
        }
        Err(e) if e.code == 410 => {
            let line = json!({"type": "ERROR", "object": e.to_status()});
            let _ = tx.try_send(Bytes::from(format!("{line}\n")));
        }
        Err(e) => return Err(e),
    }
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, Infallible>(chunk), rx))
    });
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

struct WatchFilter {
    rt: ResourceType,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl WatchFilter {
    fn line(&self, event: &Event) -> Option<Bytes> {
        let in_scope = event.group == self.rt.group
            && event.plural == self.rt.plural
            && self
                .namespace
                .as_deref()
                .is_none_or(|ns| ns == event.namespace);
        let object = &event.object;
        if !in_scope
            || !self.labels.matches(&object["metadata"]["labels"])
            || !self.fields.matches(object)
        {
            return None;
        }
        let mut object = object.clone();
        object["apiVersion"] = json!(self.rt.api_version());
        Some(Bytes::from(format!(
            "{}\n",
            json!({"type": event.kind, "object": object})
        )))
    }
}

async fn pump(
    filter: WatchFilter,
    backlog: Vec<Event>,
    mut events: broadcast::Receiver<Event>,
    tx: mpsc::Sender<Bytes>,
    timeout: Duration,
    mut end: tokio::sync::watch::Receiver<u64>,
) {
    let last_sent = backlog.iter().map(|e| e.rv).max().unwrap_or(0);
    for event in &backlog {
        if let Some(line) = filter.line(event)
            && tx.send(line).await.is_err()
        {
            return;
        }
    }
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => return,
            _ = end.changed() => return,
            _ = tx.closed() => return,
            received = events.recv() => match received {
                Ok(event) if event.rv <= last_sent => {}
                Ok(event) => {
                    if let Some(line) = filter.line(&event)
                        && tx.send(line).await.is_err()
                    {
                        return;
                    }
                }
                Err(_) => return,
            },
        }
    }
}

/// Parses a JSON (or YAML) request body.
fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    serde_json::from_slice(body).or_else(|json_err| {
        let text = std::str::from_utf8(body)
            .map_err(|_| ApiError::bad_request("the request body is not UTF-8"))?;
        serde_saphyr::from_str::<Value>(text)
            .map_err(|_| ApiError::bad_request(format!("error decoding request body: {json_err}")))
    })
}

fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// `dryRun`, `fieldValidation`, `force` and `fieldManager`, checked like the real server.
fn write_options(req: &ApiRequest, apply: bool) -> Result<WriteOptions, ApiError> {
    let q = &req.query;
    let dry_run = match q.get("dryRun").map(String::as_str) {
        None | Some("") => false,
        Some("All") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "Invalid value: \"{other}\": supported values: \"All\""
            )));
        }
    };
    let validation = match q.get("fieldValidation").map(String::as_str) {
        None | Some("") | Some("Warn") => FieldValidation::Warn,
        Some("Strict") => FieldValidation::Strict,
        Some("Ignore") => FieldValidation::Ignore,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "fieldValidation: Unsupported value: \"{other}\": supported values: \"Ignore\", \"Strict\", \"Warn\""
            )));
        }
    };
    let force = q.get("force").is_some_and(|f| f == "true");
    let options_invalid = |field: &str, message: &str| {
        ApiError::invalid(
            "meta.k8s.io",
            "PatchOptions",
            "",
            vec![(field.to_string(), message.to_string())],
        )
    };
    if force && !apply {
        return Err(options_invalid(
            "force",
            "Forbidden: may not be specified for non-apply patch",
        ));
    }
    let manager = match q.get("fieldManager").filter(|m| !m.is_empty()) {
        Some(m) if m.len() > 128 => {
            return Err(options_invalid(
                "fieldManager",
                "Too long: may not be more than 128 bytes",
            ));
        }
        Some(m) => m.clone(),
        None if apply => {
            return Err(options_invalid(
                "fieldManager",
                "Required value: is required for apply patch",
            ));
        }
        None => manager_from_user_agent(&req.user_agent),
    };
    Ok(WriteOptions {
        manager,
        dry_run,
        validation,
        force,
    })
}

/// The real server's default manager: the user agent up to its first `/`.
fn manager_from_user_agent(user_agent: &str) -> String {
    let prefix = user_agent.split('/').next().unwrap_or_default().trim();
    if prefix.is_empty() {
        "unknown".to_string()
    } else {
        prefix.to_string()
    }
}

fn written_response(written: Written) -> Response<Body> {
    let status = if written.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    json_response(status, &written.object, &written.warnings)
}
