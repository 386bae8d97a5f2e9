//! The emulator's state objects and their GitHub JSON representations (shaped as the
//! OpenAPI description requires; the schema checks prove it).

use serde_json::{Value, json};

/// Where a runner is registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunnerHome {
    /// An organization.
    Org(String),
    /// A repository, `owner/name`.
    Repo(String),
}

/// A self-hosted runner.
#[derive(Debug, Clone)]
pub struct Runner {
    pub id: u64,
    pub name: String,
    pub home: RunnerHome,
    pub group_id: u64,
    pub labels: Vec<String>,
    pub online: bool,
    pub busy: bool,
    pub ephemeral: bool,
    /// The credential in its JIT config; the stand-in runner presents it.
    pub secret: String,
    /// The job it is running.
    pub job: Option<u64>,
}

/// A runner group of an organization.
#[derive(Debug, Clone)]
pub struct Group {
    pub id: u64,
    pub name: String,
}

/// Job lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    Queued,
    InProgress,
    Completed,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::InProgress => "in_progress",
            JobStatus::Completed => "completed",
        }
    }
}

/// A workflow job.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: u64,
    pub run_id: u64,
    pub repo: String,
    pub name: String,
    pub labels: Vec<String>,
    pub status: JobStatus,
    pub runner: Option<(u64, String, u64, String)>,
}

/// A workflow run (one per queued job set).
#[derive(Debug, Clone)]
pub struct Run {
    pub id: u64,
    pub repo: String,
    pub repo_id: u64,
}

pub const TIME: &str = "2026-01-01T00:00:00Z";

fn user(base: &str, login: &str, id: u64) -> Value {
    let u = format!("{base}/users/{login}");
    json!({
        "login": login, "id": id, "node_id": format!("U_{id}"), "type": "Organization",
        "avatar_url": "https://avatars.example/u", "gravatar_id": "", "url": u,
        "html_url": format!("https://github.example/{login}"),
        "followers_url": format!("{u}/followers"), "following_url": format!("{u}/following{{/other_user}}"),
        "gists_url": format!("{u}/gists{{/gist_id}}"), "starred_url": format!("{u}/starred{{/owner}}{{/repo}}"),
        "subscriptions_url": format!("{u}/subscriptions"), "organizations_url": format!("{u}/orgs"),
        "repos_url": format!("{u}/repos"), "events_url": format!("{u}/events{{/privacy}}"),
        "received_events_url": format!("{u}/received_events"), "site_admin": false
    })
}

/// A `minimal-repository`.
pub fn repository(base: &str, full_name: &str, id: u64) -> Value {
    let (owner, name) = full_name.split_once('/').unwrap();
    let u = format!("{base}/repos/{full_name}");
    let mut repo = json!({
        "id": id, "node_id": format!("R_{id}"), "name": name, "full_name": full_name,
        "owner": user(base, owner, id + 1_000_000), "private": false,
        "html_url": format!("https://github.example/{full_name}"), "description": null,
        "fork": false, "url": u,
    });
    const URLS: [&str; 36] = [
        "archive",
        "assignees",
        "blobs",
        "branches",
        "collaborators",
        "comments",
        "commits",
        "compare",
        "contents",
        "contributors",
        "deployments",
        "downloads",
        "events",
        "forks",
        "git_commits",
        "git_refs",
        "git_tags",
        "hooks",
        "issue_comment",
        "issue_events",
        "issues",
        "keys",
        "labels",
        "languages",
        "merges",
        "milestones",
        "notifications",
        "pulls",
        "releases",
        "stargazers",
        "statuses",
        "subscribers",
        "subscription",
        "tags",
        "teams",
        "trees",
    ];
    for k in URLS {
        repo[format!("{k}_url")] = json!(format!("{u}/{k}"));
    }
    repo
}

/// A `workflow-run`; `status` is derived from its jobs.
pub fn run(base: &str, run: &Run, status: &str) -> Value {
    let u = format!("{base}/repos/{}/actions/runs/{}", run.repo, run.id);
    let repo = repository(base, &run.repo, run.repo_id);
    json!({
        "id": run.id, "node_id": format!("WFR_{}", run.id), "name": "CI",
        "head_branch": "main", "head_sha": "009b8a3a9ccbb128af87f9b1c0f4c62e8a304f6d",
        "path": ".github/workflows/ci.yml", "display_title": "CI", "run_number": run.id,
        "event": "push", "status": status,
        "conclusion": if status == "completed" { json!("success") } else { Value::Null },
        "workflow_id": 1, "url": u, "html_url": format!("https://github.example/{}/actions/runs/{}", run.repo, run.id),
        "pull_requests": [], "created_at": TIME, "updated_at": TIME,
        "jobs_url": format!("{u}/jobs"), "logs_url": format!("{u}/logs"),
        "check_suite_url": format!("{base}/repos/{}/check-suites/{}", run.repo, run.id),
        "artifacts_url": format!("{u}/artifacts"), "cancel_url": format!("{u}/cancel"),
        "rerun_url": format!("{u}/rerun"),
        "workflow_url": format!("{base}/repos/{}/actions/workflows/1", run.repo),
        "head_commit": null, "repository": repo.clone(), "head_repository": repo,
    })
}

/// A `job`.
pub fn job(base: &str, job: &Job) -> Value {
    let (runner_id, runner_name, group_id, group_name) = match &job.runner {
        Some((id, name, gid, gname)) => (json!(id), json!(name), json!(gid), json!(gname)),
        None => (Value::Null, Value::Null, Value::Null, Value::Null),
    };
    let done = job.status == JobStatus::Completed;
    json!({
        "id": job.id, "run_id": job.run_id,
        "run_url": format!("{base}/repos/{}/actions/runs/{}", job.repo, job.run_id),
        "node_id": format!("CR_{}", job.id), "head_sha": "009b8a3a9ccbb128af87f9b1c0f4c62e8a304f6d",
        "url": format!("{base}/repos/{}/actions/jobs/{}", job.repo, job.id),
        "html_url": format!("https://github.example/{}/runs/{}", job.repo, job.id),
        "status": job.status.as_str(),
        "conclusion": if done { json!("success") } else { Value::Null },
        "created_at": TIME, "started_at": TIME,
        "completed_at": if done { json!(TIME) } else { Value::Null },
        "name": job.name, "workflow_name": "CI", "head_branch": "main",
        "check_run_url": format!("{base}/repos/{}/check-runs/{}", job.repo, job.id),
        "labels": job.labels, "runner_id": runner_id, "runner_name": runner_name,
        "runner_group_id": group_id, "runner_group_name": group_name, "steps": [],
    })
}

/// A `runner`.
pub fn runner(r: &Runner) -> Value {
    json!({
        "id": r.id, "runner_group_id": r.group_id, "name": r.name, "os": "Linux",
        "status": if r.online { "online" } else { "offline" }, "busy": r.busy,
        "ephemeral": r.ephemeral,
        "labels": r.labels.iter().enumerate().map(|(i, l)| json!({
            "id": i + 1, "name": l,
            "type": if ["self-hosted", "linux", "x64"].contains(&l.as_str()) { "read-only" } else { "custom" }
        })).collect::<Vec<_>>(),
    })
}

/// A `runner-groups-org`.
pub fn group(base: &str, org: &str, g: &Group) -> Value {
    json!({
        "id": g.id, "name": g.name, "visibility": "all", "default": g.id == 1,
        "runners_url": format!("{base}/orgs/{org}/actions/runner-groups/{}/runners", g.id),
        "inherited": false, "allows_public_repositories": false,
    })
}

/// A `repository-webhooks` (what webhook payloads carry).
pub fn webhook_repository(base: &str, full_name: &str, id: u64) -> Value {
    let mut repo = repository(base, full_name, id);
    let extra = json!({
        "clone_url": format!("https://github.example/{full_name}.git"), "default_branch": "main",
        "forks": 0, "forks_count": 0, "git_url": format!("git://github.example/{full_name}.git"),
        "has_downloads": true, "has_issues": true, "has_projects": false, "has_wiki": false,
        "has_pages": false, "homepage": null, "language": null, "archived": false,
        "disabled": false, "mirror_url": null, "open_issues": 0, "open_issues_count": 0,
        "license": null, "pushed_at": TIME, "size": 0,
        "ssh_url": format!("git@github.example:{full_name}.git"), "stargazers_count": 0,
        "svn_url": format!("https://github.example/{full_name}"), "watchers": 0,
        "watchers_count": 0, "created_at": TIME, "updated_at": TIME,
    });
    for (k, v) in extra.as_object().unwrap() {
        repo[k] = v.clone();
    }
    repo
}

/// The `workflow_job` object of a webhook payload.
pub fn webhook_job(base: &str, j: &Job) -> Value {
    let mut v = job(base, j);
    v["run_attempt"] = json!(1);
    v
}

/// A simple-user for the webhook sender.
pub fn sender(base: &str) -> Value {
    user(base, "octocat", 1)
}
