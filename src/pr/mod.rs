//! Plans on fleet-repo pull requests (`drover plan --pr`): the pure parts.
//!
//! - [`PrContext`]: which pull request, from the GitHub Actions event payload or flags;
//! - [`trust`]: what of the PR is trusted (nothing it connects to: connection settings
//!   and SecretRef sources come from the base branch) and the offline plan;
//! - [`comment`]: the sticky comment (hidden [`comment::MARKER`]), the summary table, the
//!   diffs in `<details>`, and truncation to GitHub's 65,536-character limit;
//! - [`annotations`]: validation diagnostics as check-run annotations at `file:line`,
//!   with paths relative to the repository root;
//! - [`mask`]: scrubbing every published text of secrets.
//!
//! The GitHub calls live in [`crate::github::pulls`], the command in `drover plan --pr`.
//! Behaviour and trust model: `docs/pr-plans.md`.

pub mod comment;
pub mod trust;

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use crate::fleet::{Diagnostic, Severity};

/// Why the pull request could not be identified.
#[derive(Debug, thiserror::Error)]
pub enum PrError {
    /// The event payload is missing or not JSON.
    #[error("cannot read the event payload {path}: {message}")]
    Event {
        /// `$GITHUB_EVENT_PATH`.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The event is not about a pull request.
    #[error(
        "the event payload has no pull request (run on `pull_request` events, or pass --pr N --repo OWNER/NAME)"
    )]
    NotAPullRequest,
    /// No repository was named.
    #[error("no repository: pass --repo OWNER/NAME or set GITHUB_REPOSITORY")]
    NoRepo,
}

/// The pull request being planned.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PrContext {
    /// The base repository, `owner/name` (where the comment and check run go).
    pub repo: String,
    /// The pull request number.
    pub number: u64,
    /// The head commit (check runs and statuses attach to it), when known.
    pub head_sha: Option<String>,
    /// The base branch, when known.
    pub base_ref: Option<String>,
    /// Whether the head is in another repository (a fork).
    pub fork: bool,
}

impl PrContext {
    /// From a `pull_request` (or `pull_request_target`) event payload. `repo_env` is
    /// `$GITHUB_REPOSITORY`, used when the payload does not name the base repository.
    pub fn from_event(event: &Value, repo_env: Option<&str>) -> Result<Self, PrError> {
        let pr = event
            .get("pull_request")
            .filter(|p| p.is_object())
            .ok_or(PrError::NotAPullRequest)?;
        let number = pr["number"]
            .as_u64()
            .or_else(|| event["number"].as_u64())
            .ok_or(PrError::NotAPullRequest)?;
        let repo = pr["base"]["repo"]["full_name"]
            .as_str()
            .or_else(|| event["repository"]["full_name"].as_str())
            .or(repo_env)
            .ok_or(PrError::NoRepo)?
            .to_string();
        let head_repo = pr["head"]["repo"]["full_name"].as_str();
        Ok(Self {
            number,
            head_sha: pr["head"]["sha"].as_str().map(str::to_string),
            base_ref: pr["base"]["ref"].as_str().map(str::to_string),
            fork: head_repo.is_some_and(|h| h != repo) || pr["head"]["repo"].is_null(),
            repo,
        })
    }

    /// From the file at `$GITHUB_EVENT_PATH`.
    pub fn from_event_file(path: &Path, repo_env: Option<&str>) -> Result<Self, PrError> {
        let text = std::fs::read_to_string(path).map_err(|e| PrError::Event {
            path: path.into(),
            message: e.to_string(),
        })?;
        let event: Value = serde_json::from_str(&text).map_err(|e| PrError::Event {
            path: path.into(),
            message: e.to_string(),
        })?;
        Self::from_event(&event, repo_env)
    }

    /// The short head commit, for display.
    pub fn short_sha(&self) -> Option<&str> {
        self.head_sha.as_deref().map(|s| &s[..s.len().min(7)])
    }
}

/// A check-run annotation (GitHub's `annotations[]` item).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Annotation {
    /// Path relative to the repository root.
    pub path: String,
    /// First line (1-based).
    pub start_line: u32,
    /// Last line.
    pub end_line: u32,
    /// Column, when known (only sent for single-line annotations, as GitHub requires).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_column: Option<u32>,
    /// Same as `start_column`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_column: Option<u32>,
    /// `failure` or `warning`.
    pub annotation_level: &'static str,
    /// The diagnostic code, e.g. `E302`.
    pub title: String,
    /// Message and hint.
    pub message: String,
}

/// Annotations from validation diagnostics. `prefix` is the fleet directory relative to
/// the repository root (diagnostic files are relative to the fleet directory).
pub fn annotations(diagnostics: &[Diagnostic], prefix: &Path) -> Vec<Annotation> {
    diagnostics
        .iter()
        .map(|d| {
            let line = d.line.max(1);
            let column = (d.column > 0).then_some(d.column);
            let path = prefix.join(&d.file);
            let path = path.strip_prefix(".").unwrap_or(&path);
            let mut message = d.message.clone();
            if let Some(h) = &d.hint {
                message.push_str("\nhint: ");
                message.push_str(h);
            }
            Annotation {
                path: path.to_string_lossy().replace('\\', "/"),
                start_line: line,
                end_line: line,
                start_column: column,
                end_column: column,
                annotation_level: match d.severity {
                    Severity::Error => "failure",
                    Severity::Warning => "warning",
                },
                title: d.code.as_str().to_string(),
                message,
            }
        })
        .collect()
}

/// A GitHub Actions workflow command for an annotation (`::error file=…,line=…::msg`),
/// used when no check run can be created.
pub fn workflow_command(a: &Annotation) -> String {
    let level = if a.annotation_level == "failure" {
        "error"
    } else {
        "warning"
    };
    let escape_data = |s: &str| {
        s.replace('%', "%25")
            .replace('\r', "%0D")
            .replace('\n', "%0A")
    };
    let escape_prop = |s: &str| escape_data(s).replace(':', "%3A").replace(',', "%2C");
    let col = a
        .start_column
        .map(|c| format!(",col={c}"))
        .unwrap_or_default();
    format!(
        "::{level} file={},line={}{col},title={}::{}",
        escape_prop(&a.path),
        a.start_line,
        escape_prop(&a.title),
        escape_data(&a.message)
    )
}

/// The fleet directory relative to the repository root: the root is the nearest ancestor
/// with a `.git` (a checkout into a sub-path of the workspace is its own root), else
/// `$GITHUB_WORKSPACE` when the directory is inside it, else the current directory.
pub fn repo_relative(dir: &Path) -> PathBuf {
    let Ok(abs) = dir.canonicalize() else {
        return dir.to_path_buf();
    };
    let workspace = || {
        std::env::var_os("GITHUB_WORKSPACE")
            .and_then(|w| PathBuf::from(w).canonicalize().ok())
            .filter(|w| abs.starts_with(w))
    };
    let root = abs
        .ancestors()
        .find(|a| a.join(".git").exists())
        .map(Path::to_path_buf)
        .or_else(workspace)
        .or_else(|| std::env::current_dir().ok()?.canonicalize().ok())
        .filter(|r| abs.starts_with(r));
    match root {
        Some(r) => abs.strip_prefix(&r).map(Path::to_path_buf).unwrap_or(abs),
        None => dir.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::Code;
    use serde_json::json;

    #[test]
    fn context_from_a_pull_request_event() {
        let event = json!({"number": 7, "pull_request": {"number": 7,
            "head": {"sha": "abc123456789", "repo": {"full_name": "someone/fleet"}},
            "base": {"ref": "main", "repo": {"full_name": "acme/fleet"}}}});
        let ctx = PrContext::from_event(&event, None).unwrap();
        assert_eq!(ctx.repo, "acme/fleet");
        assert_eq!(ctx.number, 7);
        assert!(ctx.fork);
        assert_eq!(ctx.short_sha(), Some("abc1234"));
        assert!(matches!(
            PrContext::from_event(&json!({"ref": "x"}), Some("a/b")),
            Err(PrError::NotAPullRequest)
        ));
    }

    #[test]
    fn annotations_point_at_repo_relative_paths() {
        let d = Diagnostic::new(
            Code::DanglingReference,
            "runners/gpu.yaml",
            crate::fleet::yaml::Pos { line: 9, column: 3 },
            "NodePool `x` does not exist",
        )
        .with_hint("declare it");
        let a = &annotations(&[d], Path::new("fleet"))[0];
        assert_eq!(a.path, "fleet/runners/gpu.yaml");
        assert_eq!((a.start_line, a.end_line, a.start_column), (9, 9, Some(3)));
        assert_eq!(a.annotation_level, "failure");
        assert_eq!(
            workflow_command(a),
            "::error file=fleet/runners/gpu.yaml,line=9,col=3,title=E302::NodePool `x` does not exist%0Ahint: declare it"
        );
    }
}
