//! Repository issues, for the service's drift issues: list the open issues carrying a
//! label (every page, pull requests skipped), create one, replace its body, close it.

use serde::Deserialize;
use serde_json::{Value, json};

use super::client::GithubClient;
use super::error::GithubError;

/// An issue, as much of it as drover reads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Issue {
    /// The issue number in its repository.
    pub number: u64,
    /// Title.
    pub title: String,
    /// Body (markdown); GitHub sends `null` for an empty one.
    #[serde(default)]
    pub body: Option<String>,
    /// `open` or `closed`.
    pub state: String,
    /// The web page of the issue.
    pub html_url: String,
}

/// Why an issue is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// What it reported is resolved.
    Completed,
    /// Another open issue reports the same thing.
    Duplicate,
}

impl CloseReason {
    fn as_str(self) -> &'static str {
        match self {
            CloseReason::Completed => "completed",
            CloseReason::Duplicate => "duplicate",
        }
    }
}

/// Percent-encodes a query value (labels may hold spaces, commas are separators).
fn encode_query(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn decode_issue(path: &str, v: Value) -> Result<Issue, GithubError> {
    serde_json::from_value(v).map_err(|e| GithubError::Decode {
        path: path.into(),
        message: e.to_string(),
    })
}

impl GithubClient {
    /// The open issues of `repo` (`owner/name`) that carry `label`, oldest first, every
    /// page (pull requests, which the endpoint also lists, are skipped). Conditional
    /// requests: polling an unchanged list costs no rate limit.
    pub async fn open_issues(&self, repo: &str, label: &str) -> Result<Vec<Issue>, GithubError> {
        let path = format!(
            "/repos/{repo}/issues?state=open&labels={}&sort=created&direction=asc",
            encode_query(label)
        );
        let mut issues = Vec::new();
        for item in self.list_array(&path).await? {
            // The endpoint lists pull requests too.
            if item.get("pull_request").is_some_and(|p| !p.is_null()) {
                continue;
            }
            issues.push(decode_issue(&path, item)?);
        }
        issues.sort_by_key(|i| i.number);
        Ok(issues)
    }

    /// One issue by number.
    pub async fn issue(&self, repo: &str, number: u64) -> Result<Issue, GithubError> {
        let path = format!("/repos/{repo}/issues/{number}");
        let (body, _) = self.get_cached(&path).await?;
        decode_issue(&path, body)
    }

    /// Opens an issue with these labels.
    pub async fn create_issue(
        &self,
        repo: &str,
        title: &str,
        body: &str,
        labels: &[String],
    ) -> Result<Issue, GithubError> {
        let path = format!("/repos/{repo}/issues");
        let request = json!({"title": title, "body": body, "labels": labels});
        let reply = self
            .send(http::Method::POST, &path, Some(&request), None)
            .await?;
        decode_issue(&path, reply.body)
    }

    /// Replaces an issue's body.
    pub async fn update_issue_body(
        &self,
        repo: &str,
        number: u64,
        body: &str,
    ) -> Result<Issue, GithubError> {
        let path = format!("/repos/{repo}/issues/{number}");
        let reply = self
            .send(
                http::Method::PATCH,
                &path,
                Some(&json!({"body": body})),
                None,
            )
            .await?;
        decode_issue(&path, reply.body)
    }

    /// Closes an issue with a reason.
    pub async fn close_issue(
        &self,
        repo: &str,
        number: u64,
        reason: CloseReason,
    ) -> Result<Issue, GithubError> {
        let path = format!("/repos/{repo}/issues/{number}");
        let request = json!({"state": "closed", "state_reason": reason.as_str()});
        let reply = self
            .send(http::Method::PATCH, &path, Some(&request), None)
            .await?;
        decode_issue(&path, reply.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode_query("drover-drift"), "drover-drift");
        assert_eq!(encode_query("drift: gpu,x"), "drift%3A%20gpu%2Cx");
    }
}
