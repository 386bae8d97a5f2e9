//! Pull requests, issue comments, check runs and commit statuses: the endpoints of
//! `drover plan --pr`. State lives in [`PullState`]; [`route`] is called by the server's
//! router for paths it does not serve itself, after authentication and the OpenAPI request
//! check, and its responses are checked against the description like every other.
//!
//! Behaviour kept from GitHub: comment bodies over 65,536 characters are refused (422);
//! check runs take at most 50 annotations per request (the description's `maxItems`) and
//! an update appends annotations; listing comments is paginated (`per_page`, `page`).
//! Tests can make the token unable to write comments or check runs (403), as a fork
//! pull request's token or a personal access token is.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::State;
use super::objects::{self, TIME};

/// A pull request.
#[derive(Debug, Clone)]
pub struct Pull {
    pub repo: String,
    pub number: u64,
    pub head_sha: String,
    pub head_repo: String,
    pub base_ref: String,
}

/// An issue comment.
#[derive(Debug, Clone)]
pub struct Comment {
    pub id: u64,
    pub repo: String,
    pub issue: u64,
    pub body: String,
    /// How many times it was edited.
    pub edits: u32,
}

/// A check run with every annotation it received.
#[derive(Debug, Clone)]
pub struct CheckRun {
    pub id: u64,
    pub repo: String,
    pub name: String,
    pub head_sha: String,
    pub conclusion: Option<String>,
    pub title: Option<String>,
    pub summary: Option<String>,
    pub annotations: Vec<Value>,
    /// Annotation counts per request (create, then each update).
    pub batches: Vec<usize>,
}

/// A commit status.
#[derive(Debug, Clone)]
pub struct Status {
    pub repo: String,
    pub sha: String,
    pub state: String,
    pub context: String,
    pub description: String,
}

/// The state of these endpoints.
#[derive(Debug, Default)]
pub struct PullState {
    pub pulls: Vec<Pull>,
    pub comments: BTreeMap<u64, Comment>,
    pub check_runs: BTreeMap<u64, CheckRun>,
    pub statuses: Vec<Status>,
    /// Refuse comment writes with 403 (a read-only token).
    pub deny_comments: bool,
    /// Refuse check-run writes with 403 (a token that is not a GitHub App's).
    pub deny_check_runs: bool,
}

/// GitHub's limit on a comment body, in characters.
pub const BODY_LIMIT: usize = 65_536;

fn forbidden(message: &str) -> (u16, Option<Value>) {
    (
        403,
        Some(json!({"message": message, "documentation_url": "https://docs.github.com/rest"})),
    )
}

fn not_found() -> (u16, Option<Value>) {
    (
        404,
        Some(json!({"message": "Not Found", "documentation_url": "https://docs.github.com/rest"})),
    )
}

fn comment_json(base: &str, c: &Comment) -> Value {
    json!({
        "id": c.id, "node_id": format!("IC_{}", c.id),
        "url": format!("{base}/repos/{}/issues/comments/{}", c.repo, c.id),
        "html_url": format!("https://github.example/{}/pull/{}#issuecomment-{}", c.repo, c.issue, c.id),
        "issue_url": format!("{base}/repos/{}/issues/{}", c.repo, c.issue),
        "body": c.body, "user": objects::sender(base), "created_at": TIME, "updated_at": TIME,
        "author_association": "NONE",
    })
}

fn pull_json(s: &State, p: &Pull) -> Value {
    let base = &s.base;
    let u = format!("{base}/repos/{}/pulls/{}", p.repo, p.number);
    let issue = format!("{base}/repos/{}/issues/{}", p.repo, p.number);
    let link = |href: String| json!({"href": href});
    let side = |repo: &str, r: &str, sha: &str| {
        json!({
            "label": format!("{}:{r}", repo.split('/').next().unwrap_or_default()),
            "ref": r, "sha": sha, "user": objects::sender(base),
            "repo": objects::webhook_repository(base, repo, 1),
        })
    };
    let v = json!({
        "url": u, "id": p.number + 100_000, "node_id": format!("PR_{}", p.number),
        "html_url": format!("https://github.example/{}/pull/{}", p.repo, p.number),
        "diff_url": format!("https://github.example/{}/pull/{}.diff", p.repo, p.number),
        "patch_url": format!("https://github.example/{}/pull/{}.patch", p.repo, p.number),
        "issue_url": issue, "commits_url": format!("{u}/commits"),
        "review_comments_url": format!("{u}/comments"),
        "review_comment_url": format!("{base}/repos/{}/pulls/comments{{/number}}", p.repo),
        "comments_url": format!("{issue}/comments"),
        "statuses_url": format!("{base}/repos/{}/statuses/{}", p.repo, p.head_sha),
        "number": p.number, "state": "open", "locked": false, "title": "Change the fleet",
        "user": objects::sender(base), "body": null, "labels": [], "milestone": null,
        "created_at": TIME, "updated_at": TIME, "closed_at": null, "merged_at": null,
        "merge_commit_sha": null, "assignee": null,
    });
    let rest = json!({
        "head": side(&p.head_repo, "change", &p.head_sha),
        "base": side(&p.repo, &p.base_ref, "1111111111111111111111111111111111111111"),
        "_links": {
            "comments": link(format!("{issue}/comments")), "commits": link(format!("{u}/commits")),
            "statuses": link(format!("{base}/repos/{}/statuses/{}", p.repo, p.head_sha)),
            "html": link(format!("https://github.example/{}/pull/{}", p.repo, p.number)),
            "issue": link(issue.clone()), "review_comments": link(format!("{u}/comments")),
            "review_comment": link(format!("{base}/repos/{}/pulls/comments{{/number}}", p.repo)),
            "self": link(u.clone()),
        },
        "author_association": "CONTRIBUTOR", "auto_merge": null, "merged": false,
        "mergeable": true, "mergeable_state": "clean", "merged_by": null, "comments": 0,
        "review_comments": 0, "maintainer_can_modify": false, "commits": 1, "additions": 1,
        "deletions": 1, "changed_files": 1,
    });
    // Built in two parts: one `json!` this large exceeds the macro recursion limit.
    let mut v = v;
    for (k, val) in rest.as_object().expect("object") {
        v[k] = val.clone();
    }
    v
}

fn check_run_json(base: &str, c: &CheckRun) -> Value {
    let u = format!("{base}/repos/{}/check-runs/{}", c.repo, c.id);
    json!({
        "id": c.id, "node_id": format!("CR_{}", c.id), "head_sha": c.head_sha, "name": c.name,
        "url": u, "html_url": format!("https://github.example/{}/runs/{}", c.repo, c.id),
        "details_url": null, "external_id": null,
        "status": if c.conclusion.is_some() { "completed" } else { "queued" },
        "conclusion": c.conclusion, "started_at": TIME,
        "completed_at": if c.conclusion.is_some() { json!(TIME) } else { Value::Null },
        "check_suite": {"id": 1},
        "output": {
            "title": c.title, "summary": c.summary, "text": null,
            "annotations_count": c.annotations.len(), "annotations_url": format!("{u}/annotations"),
        },
        "app": null, "pull_requests": [],
    })
}

/// Serves these endpoints; `None` for paths that are not theirs.
pub(crate) fn route(
    s: &mut State,
    method: &str,
    segs: &[&str],
    query: &[(String, String)],
    body: Option<&Value>,
) -> Option<(u16, Option<Value>)> {
    let body = body.cloned().unwrap_or(Value::Null);
    Some(match (method, segs) {
        ("GET", ["repos", o, r, "pulls", n]) => {
            let repo = format!("{o}/{r}");
            let n: u64 = n.parse().ok()?;
            match s
                .pulls
                .pulls
                .iter()
                .find(|p| p.repo == repo && p.number == n)
            {
                Some(p) => (200, Some(pull_json(s, p))),
                None => not_found(),
            }
        }
        ("GET", ["repos", o, r, "issues", n, "comments"]) => {
            let repo = format!("{o}/{r}");
            let n: u64 = n.parse().ok()?;
            let get = |k: &str| {
                query
                    .iter()
                    .find(|(q, _)| q == k)
                    .and_then(|(_, v)| v.parse::<usize>().ok())
            };
            let per_page = get("per_page").unwrap_or(30).clamp(1, 100);
            let page = get("page").unwrap_or(1).max(1);
            let items: Vec<Value> = s
                .pulls
                .comments
                .values()
                .filter(|c| c.repo == repo && c.issue == n)
                .skip((page - 1) * per_page)
                .take(per_page)
                .map(|c| comment_json(&s.base, c))
                .collect();
            (200, Some(Value::Array(items)))
        }
        ("POST", ["repos", o, r, "issues", n, "comments"]) => {
            if s.pulls.deny_comments {
                return Some(forbidden("Resource not accessible by integration"));
            }
            let text = body["body"].as_str().unwrap_or_default().to_string();
            if text.chars().count() > BODY_LIMIT {
                return Some(too_long());
            }
            let id = s.id();
            let c = Comment {
                id,
                repo: format!("{o}/{r}"),
                issue: n.parse().ok()?,
                body: text,
                edits: 0,
            };
            let v = comment_json(&s.base, &c);
            s.pulls.comments.insert(id, c);
            (201, Some(v))
        }
        ("PATCH", ["repos", o, r, "issues", "comments", id]) => {
            if s.pulls.deny_comments {
                return Some(forbidden("Resource not accessible by integration"));
            }
            let text = body["body"].as_str().unwrap_or_default().to_string();
            if text.chars().count() > BODY_LIMIT {
                return Some(too_long());
            }
            let repo = format!("{o}/{r}");
            let id: u64 = id.parse().ok()?;
            let base = s.base.clone();
            match s.pulls.comments.get_mut(&id).filter(|c| c.repo == repo) {
                Some(c) => {
                    c.body = text;
                    c.edits += 1;
                    (200, Some(comment_json(&base, c)))
                }
                None => not_found(),
            }
        }
        ("POST", ["repos", o, r, "check-runs"]) => {
            if s.pulls.deny_check_runs {
                return Some(forbidden("You must authenticate via a GitHub App."));
            }
            let id = s.id();
            let annotations = body["output"]["annotations"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let c = CheckRun {
                id,
                repo: format!("{o}/{r}"),
                name: body["name"].as_str().unwrap_or_default().into(),
                head_sha: body["head_sha"].as_str().unwrap_or_default().into(),
                conclusion: body["conclusion"].as_str().map(str::to_string),
                title: body["output"]["title"].as_str().map(str::to_string),
                summary: body["output"]["summary"].as_str().map(str::to_string),
                batches: vec![annotations.len()],
                annotations,
            };
            let v = check_run_json(&s.base, &c);
            s.pulls.check_runs.insert(id, c);
            (201, Some(v))
        }
        ("PATCH", ["repos", o, r, "check-runs", id]) => {
            let repo = format!("{o}/{r}");
            let id: u64 = id.parse().ok()?;
            let base = s.base.clone();
            match s.pulls.check_runs.get_mut(&id).filter(|c| c.repo == repo) {
                Some(c) => {
                    let more = body["output"]["annotations"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default();
                    c.batches.push(more.len());
                    c.annotations.extend(more);
                    if let Some(t) = body["output"]["title"].as_str() {
                        c.title = Some(t.into());
                    }
                    if let Some(t) = body["output"]["summary"].as_str() {
                        c.summary = Some(t.into());
                    }
                    (200, Some(check_run_json(&base, c)))
                }
                None => not_found(),
            }
        }
        ("POST", ["repos", o, r, "statuses", sha]) => {
            let st = Status {
                repo: format!("{o}/{r}"),
                sha: sha.to_string(),
                state: body["state"].as_str().unwrap_or_default().into(),
                context: body["context"].as_str().unwrap_or("default").into(),
                description: body["description"].as_str().unwrap_or_default().into(),
            };
            let id = s.id();
            let v = json!({
                "url": format!("{}/repos/{}/statuses/{sha}", s.base, st.repo),
                "avatar_url": null, "id": id, "node_id": format!("SC_{id}"), "state": st.state,
                "description": st.description, "target_url": null, "context": st.context,
                "created_at": TIME, "updated_at": TIME, "creator": objects::sender(&s.base),
            });
            s.pulls.statuses.push(st);
            (201, Some(v))
        }
        _ => return None,
    })
}

fn too_long() -> (u16, Option<Value>) {
    (
        422,
        Some(json!({
            "message": "Validation Failed",
            "errors": [{"resource": "IssueComment", "code": "custom", "field": "body",
                "message": "body is too long (maximum is 65536 characters)"}],
            "documentation_url": "https://docs.github.com/rest",
        })),
    )
}
