//! Repository issues: `GET/POST /repos/{o}/{r}/issues` (list with `state`, `labels`,
//! `sort`, `direction` and pagination; create) and `GET/PATCH /repos/{o}/{r}/issues/{n}`.
//! Any repository exists. Pull requests show in the list as on GitHub (with a
//! `pull_request` key) when a test adds one.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::State;
use super::objects;

/// An issue (or a pull request, which GitHub lists among issues).
#[derive(Debug, Clone)]
pub struct Issue {
    pub id: u64,
    pub number: u64,
    pub repo: String,
    pub title: String,
    pub body: Option<String>,
    pub labels: Vec<String>,
    /// `open` or `closed`.
    pub state: String,
    pub state_reason: Option<String>,
    pub pull_request: bool,
}

/// The issues of every repository.
#[derive(Debug, Default)]
pub struct Issues {
    /// By repository, in number order.
    pub repos: BTreeMap<String, Vec<Issue>>,
    /// Every create and edit: (method, repo, number).
    pub writes: Vec<(String, String, u64)>,
}

impl Issues {
    /// Adds an issue; returns its number.
    pub fn add(
        &mut self,
        id: u64,
        repo: &str,
        title: &str,
        body: Option<&str>,
        labels: &[String],
        pull_request: bool,
    ) -> u64 {
        let list = self.repos.entry(repo.to_string()).or_default();
        let number = list.len() as u64 + 1;
        list.push(Issue {
            id,
            number,
            repo: repo.to_string(),
            title: title.to_string(),
            body: body.map(str::to_string),
            labels: labels.to_vec(),
            state: "open".into(),
            state_reason: None,
            pull_request,
        });
        number
    }
}

/// The `issue` representation.
pub fn issue(base: &str, i: &Issue) -> Value {
    let repo_url = format!("{base}/repos/{}", i.repo);
    let url = format!("{repo_url}/issues/{}", i.number);
    let html = format!("https://github.example/{}/issues/{}", i.repo, i.number);
    let labels: Vec<Value> = i
        .labels
        .iter()
        .enumerate()
        .map(|(n, l)| {
            json!({"id": n as u64 + 1, "node_id": format!("LA_{n}"), "url": format!("{repo_url}/labels/{}", l.replace(' ', "%20")),
                   "name": l, "description": null, "color": "ededed", "default": false})
        })
        .collect();
    let mut v = json!({
        "id": i.id, "node_id": format!("I_{}", i.id), "url": url, "repository_url": repo_url,
        "labels_url": format!("{url}/labels{{/name}}"), "comments_url": format!("{url}/comments"),
        "events_url": format!("{url}/events"), "html_url": html, "number": i.number,
        "state": i.state, "state_reason": i.state_reason, "title": i.title, "body": i.body,
        "user": objects::sender(base), "labels": labels, "assignee": null, "assignees": [],
        "milestone": null, "locked": false, "active_lock_reason": null, "comments": 0,
        "closed_at": (i.state == "closed").then_some(objects::TIME),
        "created_at": objects::TIME, "updated_at": objects::TIME, "author_association": "OWNER",
    });
    if i.pull_request {
        let pr = format!("https://github.example/{}/pull/{}", i.repo, i.number);
        v["pull_request"] = json!({
            "url": format!("{repo_url}/pulls/{}", i.number), "html_url": pr,
            "diff_url": format!("{pr}.diff"), "patch_url": format!("{pr}.patch"), "merged_at": null,
        });
    }
    v
}

/// Decodes `%XX` escapes (and `+`) in a query value.
fn unescape(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&v[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 3;
                    continue;
                }
                Err(_) => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A reply: status, JSON body, extra headers.
pub(crate) type Reply = (u16, Value, Vec<(&'static str, String)>);

fn reply(status: u16, body: Value) -> Reply {
    (status, body, Vec::new())
}

fn not_found() -> Reply {
    reply(
        404,
        json!({"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}),
    )
}

/// Serves the issue endpoints; `None` for any other path.
pub(crate) fn route(
    s: &mut State,
    method: &str,
    segs: &[&str],
    query: &[(String, String)],
    body: Option<&Value>,
) -> Option<Reply> {
    let q = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| unescape(v));
    let r = match (method, segs) {
        ("GET", ["repos", o, r, "issues"]) => {
            let repo = format!("{o}/{r}");
            let state = q("state").unwrap_or_else(|| "open".into());
            let want: Vec<String> = q("labels")
                .map(|l| {
                    l.split(',')
                        .map(|x| x.trim().to_lowercase())
                        .filter(|x| !x.is_empty())
                        .collect()
                })
                .unwrap_or_default();
            let mut list: Vec<&Issue> = s
                .issues
                .repos
                .get(&repo)
                .map(|l| l.iter().collect())
                .unwrap_or_default();
            list.retain(|i| state == "all" || i.state == state);
            list.retain(|i| {
                want.iter()
                    .all(|w| i.labels.iter().any(|l| l.to_lowercase() == *w))
            });
            // GitHub's default: newest first.
            if q("direction").as_deref() != Some("asc") {
                list.reverse();
            }
            let per_page = q("per_page")
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(30)
                .clamp(1, 100);
            let page = q("page")
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(1)
                .max(1);
            let last = list.len().div_ceil(per_page).max(1);
            let items: Vec<Value> = list
                .iter()
                .skip((page - 1) * per_page)
                .take(per_page)
                .map(|i| issue(&s.base, i))
                .collect();
            let mut r = reply(200, Value::Array(items));
            if page < last {
                r.2.push((
                    "link",
                    format!(
                        "<{}/repos/{repo}/issues?per_page={per_page}&page={}>; rel=\"next\", <{}/repos/{repo}/issues?per_page={per_page}&page={last}>; rel=\"last\"",
                        s.base,
                        page + 1,
                        s.base
                    ),
                ));
            }
            r
        }
        ("POST", ["repos", o, r, "issues"]) => {
            let body = body.cloned().unwrap_or(Value::Null);
            let title = match &body["title"] {
                Value::String(t) => t.clone(),
                Value::Number(n) => n.to_string(),
                _ => return Some(reply(422, json!({"message": "Validation Failed"}))),
            };
            let labels: Vec<String> = body["labels"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|l| {
                            l.as_str()
                                .map(String::from)
                                .or_else(|| l["name"].as_str().map(String::from))
                        })
                        .collect()
                })
                .unwrap_or_default();
            let repo = format!("{o}/{r}");
            let id = s.id();
            let number = s
                .issues
                .add(id, &repo, &title, body["body"].as_str(), &labels, false);
            s.issues.writes.push(("POST".into(), repo.clone(), number));
            let i = &s.issues.repos[&repo][number as usize - 1];
            let mut r = reply(201, issue(&s.base, i));
            r.2.push((
                "location",
                format!("{}/repos/{repo}/issues/{number}", s.base),
            ));
            r
        }
        (m @ ("GET" | "PATCH"), ["repos", o, r, "issues", n]) => {
            let repo = format!("{o}/{r}");
            let Some(number) = n.parse::<u64>().ok() else {
                return Some(not_found());
            };
            let base = s.base.clone();
            let Some(i) = s
                .issues
                .repos
                .get_mut(&repo)
                .and_then(|l| l.iter_mut().find(|i| i.number == number))
            else {
                return Some(not_found());
            };
            if m == "PATCH" {
                let body = body.cloned().unwrap_or(Value::Null);
                if let Some(t) = body["title"].as_str() {
                    i.title = t.into();
                }
                if body.get("body").is_some() {
                    i.body = body["body"].as_str().map(String::from);
                }
                if let Some(labels) = body["labels"].as_array() {
                    i.labels = labels
                        .iter()
                        .filter_map(|l| l.as_str().map(String::from))
                        .collect();
                }
                if let Some(state) = body["state"].as_str() {
                    i.state = state.into();
                    i.state_reason = match body["state_reason"].as_str() {
                        Some(reason) => Some(reason.into()),
                        None if state == "closed" => Some("completed".into()),
                        None => Some("reopened".into()),
                    };
                }
                s.issues.writes.push(("PATCH".into(), repo.clone(), number));
            }
            let i = s.issues.repos[&repo]
                .iter()
                .find(|i| i.number == number)
                .unwrap();
            reply(200, issue(&base, i))
        }
        _ => return None,
    };
    Some(r)
}
