//! The emulator's HTTP side: one handler that authenticates, applies faults and the rate
//! budget, routes, answers conditional requests, and checks everything against the
//! OpenAPI description.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::objects::{self, JobStatus, Runner, RunnerHome};
use super::openapi::OpenApi;
use super::{Fault, Seen, State, delivery, encode_jit, now, send};

type Shared = Arc<Mutex<State>>;

pub fn router(state: Shared) -> Router {
    Router::new().fallback(handle).with_state(state)
}

/// A reply before headers: status, JSON body, extra headers.
struct Reply {
    status: u16,
    body: Option<Value>,
    headers: Vec<(&'static str, String)>,
}

fn reply(status: u16, body: Value) -> Reply {
    Reply {
        status,
        body: Some(body),
        headers: Vec::new(),
    }
}

fn error(status: u16, message: &str) -> Reply {
    reply(
        status,
        json!({"message": message, "documentation_url": "https://docs.github.com/rest"}),
    )
}

async fn handle(
    AxState(state): AxState<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let at = std::time::Instant::now();
    // GitHub Enterprise Server serves the REST API under `/api/v3`; accept both forms.
    let path = uri
        .path()
        .strip_prefix("/api/v3")
        .filter(|p| p.starts_with('/'))
        .unwrap_or(uri.path())
        .to_string();
    let query: Vec<(String, String)> = uri
        .query()
        .map(|q| {
            q.split('&')
                .filter(|kv| !kv.is_empty())
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (k.to_string(), v.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    let json_body: Option<Value> = if body.is_empty() {
        None
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => Some(v),
            Err(_) => return (StatusCode::BAD_REQUEST, "body is not JSON").into_response(),
        }
    };
    if let Some(rest) = path.strip_prefix("/_runner/") {
        let (r, hook) = {
            let mut s = state.lock().unwrap();
            runner_protocol(&mut s, rest, json_body.unwrap_or(Value::Null))
        };
        if let Some((url, headers, body)) = hook {
            send(&url, headers, body).await;
        }
        return finish(r, Vec::new());
    }
    let mut s = state.lock().unwrap();
    let (reply, rate_headers) = rest(&mut s, &method, &path, &query, &headers, json_body.as_ref());
    s.seen.push(Seen {
        method: method.to_string(),
        path: path.clone(),
        status: reply.status,
        at,
    });
    finish(reply, rate_headers)
}

fn finish(r: Reply, rate: Vec<(&'static str, String)>) -> Response {
    let mut resp = match r.body {
        Some(b) => (StatusCode::from_u16(r.status).unwrap(), axum::Json(b)).into_response(),
        None => StatusCode::from_u16(r.status).unwrap().into_response(),
    };
    for (k, v) in rate.into_iter().chain(r.headers) {
        resp.headers_mut()
            .insert(k, HeaderValue::from_str(&v).unwrap());
    }
    resp
}

fn rate_headers(s: &State) -> Vec<(&'static str, String)> {
    let limit = s.config.rate_limit;
    vec![
        ("x-ratelimit-limit", limit.to_string()),
        ("x-ratelimit-remaining", s.remaining.to_string()),
        ("x-ratelimit-reset", s.reset.to_string()),
        (
            "x-ratelimit-used",
            (limit - s.remaining.min(limit)).to_string(),
        ),
        ("x-ratelimit-resource", "core".into()),
    ]
}

/// The REST API: validation, auth, faults, budget, routing, ETags.
fn rest(
    s: &mut State,
    method: &Method,
    path: &str,
    query: &[(String, String)],
    headers: &HeaderMap,
    body: Option<&Value>,
) -> (Reply, Vec<(&'static str, String)>) {
    let spec = OpenApi::get();
    let Some(op) = spec.operation(method.as_str(), path) else {
        s.violations.push(format!(
            "{method} {path}: no such operation in GitHub's API"
        ));
        return (error(404, "Not Found"), rate_headers(s));
    };
    let problems = spec.check_request(&op, query, body);
    if !problems.is_empty() {
        s.violations.extend(problems.iter().cloned());
        return (error(422, &problems.join("; ")), rate_headers(s));
    }
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("token "))
        })
        .unwrap_or_default()
        .to_string();
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();

    if let ["app", "installations", id, "access_tokens"] = segs.as_slice() {
        let r = match check_jwt(s, &bearer) {
            Err(msg) => error(401, &msg),
            Ok(()) if id.parse() != Ok(s.config.installation_id) => error(404, "Not Found"),
            Ok(()) => {
                let token = format!("ghs_emulated{}", s.id());
                let expires = now() + s.config.token_ttl_secs;
                s.tokens.push((token.clone(), expires));
                s.tokens_issued += 1;
                let at = time_rfc3339(expires);
                reply(
                    201,
                    json!({"token": token, "expires_at": at, "permissions": {}}),
                )
            }
        };
        check_response(s, &op, &r);
        return (r, rate_headers(s));
    }

    let authed = s.config.pat.as_deref() == Some(bearer.as_str())
        || s.tokens.iter().any(|(t, exp)| *t == bearer && *exp > now());
    if !authed {
        return (error(401, "Bad credentials"), rate_headers(s));
    }
    if let Some((_, _, code)) = s
        .path_faults
        .iter()
        .find(|(m, p, _)| m == method.as_str() && p == path)
    {
        let code = *code;
        s.remaining = s.remaining.saturating_sub(1);
        return (error(code, "Server Error"), rate_headers(s));
    }
    if let Some(fault) = s.faults.pop_front() {
        s.remaining = s.remaining.saturating_sub(1);
        let r = match fault {
            Fault::Server(code) => error(code, "Server Error"),
            Fault::SecondaryRateLimit { retry_after } => {
                let mut r = error(
                    403,
                    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
                );
                r.headers.push(("retry-after", retry_after.to_string()));
                r
            }
            Fault::TooManyRequests { retry_after } => {
                let mut r = error(429, "Too Many Requests");
                r.headers.push(("retry-after", retry_after.to_string()));
                r
            }
        };
        return (r, rate_headers(s));
    }
    if s.remaining == 0 {
        let msg = format!(
            "API rate limit exceeded for installation ID {}.",
            s.config.installation_id
        );
        return (error(403, &msg), rate_headers(s));
    }

    let r = route(s, method, &segs, query, body);
    check_response(s, &op, &r);

    if method == Method::GET && r.status == 200 {
        let text = serde_json::to_string(r.body.as_ref().unwrap()).unwrap();
        let etag = format!(
            "W/\"{}\"",
            &hex::encode(Sha256::digest(text.as_bytes()))[..32]
        );
        let inm = headers.get("if-none-match").and_then(|v| v.to_str().ok());
        if inm == Some(etag.as_str()) {
            // Conditional hit: no body, no cost.
            let r = Reply {
                status: 304,
                body: None,
                headers: vec![("etag", etag)],
            };
            return (r, rate_headers(s));
        }
        s.remaining = s.remaining.saturating_sub(1);
        let mut r = r;
        r.headers.push(("etag", etag));
        return (r, rate_headers(s));
    }
    s.remaining = s.remaining.saturating_sub(1);
    (r, rate_headers(s))
}

fn check_response(s: &mut State, op: &super::openapi::Operation, r: &Reply) {
    // Errors GitHub sends without declaring them per operation (401, 404) are not checked.
    if r.status >= 400 && !OpenApi::get().declares(op, r.status) {
        return;
    }
    let problems = OpenApi::get().check_response(op, r.status, r.body.as_ref());
    s.violations.extend(problems);
}

fn time_rfc3339(secs: i64) -> String {
    // Civil-from-days (Howard Hinnant), UTC.
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn check_jwt(s: &State, token: &str) -> Result<(), String> {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
    let pem = s
        .config
        .app_public_pem
        .as_deref()
        .ok_or("App auth is not set up")?;
    let key = DecodingKey::from_rsa_pem(pem.as_bytes()).map_err(|e| e.to_string())?;
    let mut v = Validation::new(Algorithm::RS256);
    v.set_required_spec_claims(&["exp", "iat"]);
    v.leeway = 0;
    v.validate_aud = false;
    let data = decode::<Value>(token, &key, &v)
        .map_err(|e| format!("A JSON web token could not be decoded: {e}"))?;
    let c = data.claims;
    let iat = c["iat"].as_i64().ok_or("iat")?;
    let exp = c["exp"].as_i64().ok_or("exp")?;
    let iss = c["iss"]
        .as_u64()
        .or_else(|| c["iss"].as_str().and_then(|s| s.parse().ok()));
    if iss != Some(s.config.app_id) {
        return Err("'Issuer' claim ('iss') must be the App's id".into());
    }
    if iat > now() + 60 {
        return Err(
            "'Issued at' claim ('iat') must be an Integer representing a time in the past".into(),
        );
    }
    if exp - iat > 600 {
        return Err("'Expiration time' claim ('exp') is too far in the future".into());
    }
    Ok(())
}

fn page(query: &[(String, String)]) -> (usize, usize) {
    let get = |k: &str| {
        query
            .iter()
            .find(|(n, _)| n == k)
            .and_then(|(_, v)| v.parse::<usize>().ok())
    };
    (
        get("per_page").unwrap_or(30).clamp(1, 100),
        get("page").unwrap_or(1).max(1),
    )
}

fn paginate(
    s: &State,
    path: &str,
    query: &[(String, String)],
    items: Vec<Value>,
    key: &str,
) -> Reply {
    let (per_page, page) = page(query);
    let total = items.len();
    let last = total.div_ceil(per_page).max(1);
    let slice: Vec<Value> = items
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    let mut r = reply(200, json!({"total_count": total, key: slice}));
    let link = |p: usize, rel: &str| {
        format!(
            "<{}/{path}?per_page={per_page}&page={p}>; rel=\"{rel}\"",
            s.base
        )
    };
    let mut links = Vec::new();
    if page < last {
        links.push(link(page + 1, "next"));
        links.push(link(last, "last"));
    }
    if page > 1 {
        links.push(link(1, "first"));
        links.push(link(page - 1, "prev"));
    }
    if !links.is_empty() {
        r.headers.push(("link", links.join(", ")));
    }
    r
}

fn run_status(s: &State, run_id: u64) -> &'static str {
    let jobs: Vec<_> = s.jobs.values().filter(|j| j.run_id == run_id).collect();
    if jobs.iter().all(|j| j.status == JobStatus::Completed) {
        "completed"
    } else if jobs.iter().all(|j| j.status == JobStatus::Queued) {
        "queued"
    } else {
        "in_progress"
    }
}

fn runner_home_matches(r: &Runner, home: &RunnerHome) -> bool {
    &r.home == home
}

fn route(
    s: &mut State,
    method: &Method,
    segs: &[&str],
    query: &[(String, String)],
    body: Option<&Value>,
) -> Reply {
    let joined = segs.join("/");
    match (method.as_str(), segs) {
        ("GET", ["repos", o, r, "actions", "runs"]) => {
            let repo = format!("{o}/{r}");
            let status = query
                .iter()
                .find(|(k, _)| k == "status")
                .map(|(_, v)| v.clone());
            let runs: Vec<Value> = s
                .runs
                .values()
                .filter(|run| run.repo == repo)
                .filter(|run| {
                    status
                        .as_deref()
                        .is_none_or(|st| run_status(s, run.id) == st)
                })
                .map(|run| objects::run(&s.base, run, run_status(s, run.id)))
                .collect();
            paginate(s, &joined, query, runs, "workflow_runs")
        }
        ("GET", ["repos", o, r, "actions", "runs", id, "jobs"]) => {
            let repo = format!("{o}/{r}");
            let Ok(id) = id.parse::<u64>() else {
                return error(404, "Not Found");
            };
            if s.runs.get(&id).is_none_or(|run| run.repo != repo) {
                return error(404, "Not Found");
            }
            let jobs: Vec<Value> = s
                .jobs
                .values()
                .filter(|j| j.run_id == id)
                .map(|j| objects::job(&s.base, j))
                .collect();
            paginate(s, &joined, query, jobs, "jobs")
        }
        ("GET", ["repos", o, r, "actions", "jobs", id]) => {
            let repo = format!("{o}/{r}");
            match id
                .parse::<u64>()
                .ok()
                .and_then(|id| s.jobs.get(&id))
                .filter(|j| j.repo == repo)
            {
                Some(j) => reply(200, objects::job(&s.base, j)),
                None => error(404, "Not Found"),
            }
        }
        ("GET", ["orgs", o, "actions", "runner-groups"]) => match s.orgs.get(*o) {
            Some(groups) => {
                let list: Vec<Value> = groups
                    .iter()
                    .map(|g| objects::group(&s.base, o, g))
                    .collect();
                reply(
                    200,
                    json!({"total_count": list.len(), "runner_groups": list}),
                )
            }
            None => error(404, "Not Found"),
        },
        (m, ["orgs", o, "actions", "runners", rest @ ..]) => {
            if !s.orgs.contains_key(*o) {
                return error(404, "Not Found");
            }
            runners(
                s,
                m,
                RunnerHome::Org(o.to_string()),
                rest,
                &joined,
                query,
                body,
            )
        }
        (m, ["repos", o, r, "actions", "runners", rest @ ..]) => runners(
            s,
            m,
            RunnerHome::Repo(format!("{o}/{r}")),
            rest,
            &joined,
            query,
            body,
        ),
        (m, segs) => {
            if let Some((status, body)) = super::pulls::route(s, m, segs, query, body) {
                return Reply {
                    status,
                    body,
                    headers: Vec::new(),
                };
            }
            match super::issues::route(s, m, segs, query, body) {
                Some((status, body, headers)) => Reply {
                    status,
                    body: Some(body),
                    headers,
                },
                None => error(404, "Not Found"),
            }
        }
    }
}

fn runners(
    s: &mut State,
    method: &str,
    home: RunnerHome,
    rest: &[&str],
    path: &str,
    query: &[(String, String)],
    body: Option<&Value>,
) -> Reply {
    match (method, rest) {
        ("GET", []) => {
            let list: Vec<Value> = s
                .runners
                .values()
                .filter(|r| runner_home_matches(r, &home))
                .map(objects::runner)
                .collect();
            let mut r = paginate(s, path, query, list, "runners");
            // GitHub names the list "runners" and counts every runner.
            r.body.as_mut().unwrap()["total_count"] = json!(
                s.runners
                    .values()
                    .filter(|r| runner_home_matches(r, &home))
                    .count()
            );
            r
        }
        ("POST", ["generate-jitconfig"]) => generate_jit(s, home, body.unwrap_or(&Value::Null)),
        (m, [id]) => {
            let Some(runner) = id
                .parse::<u64>()
                .ok()
                .and_then(|id| s.runners.get(&id))
                .filter(|r| runner_home_matches(r, &home))
            else {
                return error(404, "Not Found");
            };
            match m {
                "GET" => reply(200, objects::runner(runner)),
                "DELETE" if runner.busy => {
                    error(422, "Bad request - Runner is currently running a job")
                }
                "DELETE" => {
                    let id = runner.id;
                    s.runners.remove(&id);
                    Reply {
                        status: 204,
                        body: None,
                        headers: Vec::new(),
                    }
                }
                _ => error(404, "Not Found"),
            }
        }
        _ => error(404, "Not Found"),
    }
}

fn generate_jit(s: &mut State, home: RunnerHome, body: &Value) -> Reply {
    let name = body["name"].as_str().unwrap_or_default().to_string();
    let group_id = body["runner_group_id"].as_u64().unwrap_or(0);
    let labels: Vec<String> = body["labels"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|l| l.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    if name.trim().is_empty() {
        return error(422, "Invalid request: name must not be empty");
    }
    if labels.is_empty() || labels.len() > 100 || labels.iter().any(|l| l.trim().is_empty()) {
        return error(
            422,
            "Invalid request: labels must be 1 to 100 non-empty names",
        );
    }
    if let Some(w) = body.get("work_folder")
        && w.as_str()
            .is_none_or(|w| w.is_empty() || w.starts_with('/') || w.contains(".."))
    {
        return error(422, "Invalid request: work_folder must be a relative path");
    }
    let group_ok = match &home {
        RunnerHome::Org(o) => s
            .orgs
            .get(o)
            .is_some_and(|gs| gs.iter().any(|g| g.id == group_id)),
        RunnerHome::Repo(_) => group_id == 1,
    };
    if !group_ok {
        return error(404, "Not Found");
    }
    if s.runners.values().any(|r| r.home == home && r.name == name) {
        return error(
            409,
            "Already exists - A runner with the name already exists.",
        );
    }
    let id = s.id();
    let secret = format!(
        "jit-{id}-{}",
        hex::encode(Sha256::digest(format!("{id}{name}")))
    );
    let runner = Runner {
        id,
        name,
        home,
        group_id,
        labels,
        online: false,
        busy: false,
        ephemeral: true,
        secret: secret.clone(),
        job: None,
    };
    let v = objects::runner(&runner);
    s.runners.insert(id, runner);
    reply(
        201,
        json!({"runner": v, "encoded_jit_config": encode_jit(&s.base, id, &secret)}),
    )
}

type Hook = Option<(String, Vec<(String, String)>, Vec<u8>)>;

/// The stand-in runner's protocol (the Actions service side, not the REST API).
fn runner_protocol(s: &mut State, op: &str, body: Value) -> (Reply, Hook) {
    let id = body["runner_id"].as_u64().unwrap_or(0);
    let secret = body["secret"].as_str().unwrap_or_default();
    let Some(runner) = s.runners.get(&id).filter(|r| r.secret == secret).cloned() else {
        return (error(401, "unknown runner or bad credential"), None);
    };
    let hook = |s: &mut State, job: u64, action: &str| -> Hook {
        let (url, secret) = s.webhook.clone()?;
        let (h, b) = delivery(s, job, action, &secret);
        Some((url, h, b))
    };
    match op {
        "connect" => {
            s.runners.get_mut(&id).unwrap().online = true;
            (
                reply(200, json!({"name": runner.name, "labels": runner.labels})),
                None,
            )
        }
        "acquire" => {
            let lower: Vec<String> = runner.labels.iter().map(|l| l.to_lowercase()).collect();
            let found = s.jobs.values().find(|j| {
                j.status == JobStatus::Queued
                    && match &runner.home {
                        RunnerHome::Org(o) => j.repo.split('/').next() == Some(o.as_str()),
                        RunnerHome::Repo(r) => &j.repo == r,
                    }
                    && j.labels.iter().all(|l| lower.contains(&l.to_lowercase()))
            });
            let Some(job_id) = found.map(|j| j.id) else {
                return (reply(200, json!({"job_id": null})), None);
            };
            let group = match &runner.home {
                RunnerHome::Org(o) => s.orgs[o]
                    .iter()
                    .find(|g| g.id == runner.group_id)
                    .map(|g| g.name.clone()),
                RunnerHome::Repo(_) => None,
            }
            .unwrap_or_else(|| "Default".into());
            let j = s.jobs.get_mut(&job_id).unwrap();
            j.status = JobStatus::InProgress;
            j.runner = Some((id, runner.name.clone(), runner.group_id, group));
            let r = s.runners.get_mut(&id).unwrap();
            r.busy = true;
            r.job = Some(job_id);
            (
                reply(200, json!({"job_id": job_id})),
                hook(s, job_id, "in_progress"),
            )
        }
        "complete" => {
            let Some(job_id) = runner.job else {
                return (error(409, "runner has no job"), None);
            };
            s.jobs.get_mut(&job_id).unwrap().status = JobStatus::Completed;
            // Ephemeral: the runner is removed after its one job.
            s.runners.remove(&id);
            (
                reply(200, json!({"job_id": job_id})),
                hook(s, job_id, "completed"),
            )
        }
        _ => (error(404, "Not Found"), None),
    }
}
