//! The GitHub endpoints of pull-request plans: the pull request, its issue comments
//! (every page), creating and editing a comment, check runs (annotations in batches of
//! 50, as GitHub allows per request) and the commit-status fallback.

use serde::Serialize;
use serde_json::{Value, json};

use super::client::GithubClient;
use super::error::GithubError;

/// GitHub's limit of annotations per check-run request.
pub const ANNOTATIONS_PER_REQUEST: usize = 50;

/// A pull request, as far as plans need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    /// Number.
    pub number: u64,
    /// Head commit.
    pub head_sha: String,
    /// Base branch.
    pub base_ref: String,
    /// Head repository `owner/name` (`None` when the fork was deleted).
    pub head_repo: Option<String>,
}

/// An issue (or pull request) comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueComment {
    /// Comment id.
    pub id: u64,
    /// Body (markdown).
    pub body: String,
}

/// A completed check run to create.
#[derive(Debug, Clone, Serialize)]
pub struct CheckRun<A: Serialize> {
    /// Name shown on the pull request.
    pub name: String,
    /// The commit.
    pub head_sha: String,
    /// `success`, `failure`, `neutral`, ...
    pub conclusion: String,
    /// Title line.
    pub title: String,
    /// Summary markdown (at most 65,535 characters).
    pub summary: String,
    /// All annotations; sent 50 per request.
    pub annotations: Vec<A>,
}

/// How a check was reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reported {
    /// As a check run with this id.
    CheckRun(u64),
    /// As a commit status (the token may not create check runs).
    Status,
}

fn decode_comment(path: &str, v: &Value) -> Result<IssueComment, GithubError> {
    Ok(IssueComment {
        id: v["id"].as_u64().ok_or_else(|| GithubError::Decode {
            path: path.into(),
            message: "comment without id".into(),
        })?,
        body: v["body"].as_str().unwrap_or_default().to_string(),
    })
}

impl GithubClient {
    /// One pull request.
    pub async fn pull_request(&self, repo: &str, number: u64) -> Result<PullRequest, GithubError> {
        let path = format!("/repos/{repo}/pulls/{number}");
        let (v, _) = self.get_cached(&path).await?;
        let missing = |what: &str| GithubError::Decode {
            path: path.clone(),
            message: format!("no {what}"),
        };
        Ok(PullRequest {
            number,
            head_sha: v["head"]["sha"]
                .as_str()
                .ok_or_else(|| missing("head.sha"))?
                .into(),
            base_ref: v["base"]["ref"]
                .as_str()
                .ok_or_else(|| missing("base.ref"))?
                .into(),
            head_repo: v["head"]["repo"]["full_name"].as_str().map(str::to_string),
        })
    }

    /// Every comment of an issue or pull request, oldest first (all pages).
    pub async fn issue_comments(
        &self,
        repo: &str,
        number: u64,
    ) -> Result<Vec<IssueComment>, GithubError> {
        let path = format!("/repos/{repo}/issues/{number}/comments");
        self.list_array(&path)
            .await?
            .iter()
            .map(|item| decode_comment(&path, item))
            .collect()
    }

    /// Creates a comment on an issue or pull request.
    pub async fn create_issue_comment(
        &self,
        repo: &str,
        number: u64,
        body: &str,
    ) -> Result<IssueComment, GithubError> {
        let path = format!("/repos/{repo}/issues/{number}/comments");
        let reply = self
            .send(
                http::Method::POST,
                &path,
                Some(&json!({"body": body})),
                None,
            )
            .await?;
        decode_comment(&path, &reply.body)
    }

    /// Replaces a comment's body.
    pub async fn update_issue_comment(
        &self,
        repo: &str,
        id: u64,
        body: &str,
    ) -> Result<IssueComment, GithubError> {
        let path = format!("/repos/{repo}/issues/comments/{id}");
        let reply = self
            .send(
                http::Method::PATCH,
                &path,
                Some(&json!({"body": body})),
                None,
            )
            .await?;
        decode_comment(&path, &reply.body)
    }

    /// The sticky comment: edits the first comment whose body starts with `marker`, or
    /// creates one. Returns the comment id and whether it was created.
    pub async fn upsert_marked_comment(
        &self,
        repo: &str,
        number: u64,
        marker: &str,
        body: &str,
    ) -> Result<(u64, bool), GithubError> {
        let existing = self
            .issue_comments(repo, number)
            .await?
            .into_iter()
            .find(|c| c.body.starts_with(marker));
        match existing {
            Some(c) if c.body == body => Ok((c.id, false)),
            Some(c) => Ok((self.update_issue_comment(repo, c.id, body).await?.id, false)),
            None => Ok((
                self.create_issue_comment(repo, number, body).await?.id,
                true,
            )),
        }
    }

    /// Creates a completed check run; annotations beyond the first 50 are added by
    /// updating it, 50 per request.
    pub async fn create_check_run<A: Serialize>(
        &self,
        repo: &str,
        run: &CheckRun<A>,
    ) -> Result<u64, GithubError> {
        let path = format!("/repos/{repo}/check-runs");
        let mut chunks = run.annotations.chunks(ANNOTATIONS_PER_REQUEST);
        let output = |chunk: Option<&[A]>| {
            let mut o = json!({"title": run.title, "summary": run.summary});
            if let Some(c) = chunk {
                o["annotations"] = serde_json::to_value(c).expect("annotations serialize");
            }
            o
        };
        let body = json!({
            "name": run.name,
            "head_sha": run.head_sha,
            "status": "completed",
            "conclusion": run.conclusion,
            "output": output(chunks.next()),
        });
        let reply = self
            .send(http::Method::POST, &path, Some(&body), None)
            .await?;
        let id = reply.body["id"]
            .as_u64()
            .ok_or_else(|| GithubError::Decode {
                path: path.clone(),
                message: "check run without id".into(),
            })?;
        let update = format!("/repos/{repo}/check-runs/{id}");
        for chunk in chunks {
            let body = json!({"output": output(Some(chunk))});
            self.send(http::Method::PATCH, &update, Some(&body), None)
                .await?;
        }
        Ok(id)
    }

    /// Sets a commit status (`state`: `success`, `failure`, `pending`, `error`).
    pub async fn create_status(
        &self,
        repo: &str,
        sha: &str,
        state: &str,
        context: &str,
        description: &str,
    ) -> Result<(), GithubError> {
        let path = format!("/repos/{repo}/statuses/{sha}");
        // GitHub limits descriptions to 140 characters.
        let description: String = description.chars().take(140).collect();
        let body = json!({"state": state, "context": context, "description": description});
        self.send(http::Method::POST, &path, Some(&body), None)
            .await?;
        Ok(())
    }

    /// Reports a check: a check run, or — when the token may not create check runs
    /// (403, e.g. a personal access token) — a commit status with the title.
    pub async fn report_check<A: Serialize>(
        &self,
        repo: &str,
        run: &CheckRun<A>,
    ) -> Result<Reported, GithubError> {
        match self.create_check_run(repo, run).await {
            Ok(id) => Ok(Reported::CheckRun(id)),
            Err(GithubError::Status { status: 403, .. }) => {
                let state = if run.conclusion == "failure" {
                    "failure"
                } else {
                    "success"
                };
                self.create_status(repo, &run.head_sha, state, &run.name, &run.title)
                    .await?;
                Ok(Reported::Status)
            }
            Err(e) => Err(e),
        }
    }
}
