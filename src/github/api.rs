//! The GitHub endpoints the autoscaler uses, as typed calls: runner groups, runners,
//! queued jobs (polling), JIT configs and runner deletion.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::client::GithubClient;
use super::error::GithubError;
use crate::credentials::Secret;
use crate::fleet::model::RunnerScope;

/// Where runners register: an enterprise, an organization or a repository.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Enterprise slug.
    Enterprise(String),
    /// Organization login.
    Org(String),
    /// Repository, `owner/name`.
    Repo(String),
}

impl Scope {
    /// The scope of a runner set; `None` unless exactly one target is named.
    pub fn of(scope: &RunnerScope) -> Option<Scope> {
        match (&scope.enterprise, &scope.org, &scope.repo) {
            (Some(e), None, None) => Some(Scope::Enterprise(e.clone())),
            (None, Some(o), None) => Some(Scope::Org(o.clone())),
            (None, None, Some(r)) => Some(Scope::Repo(r.clone())),
            _ => None,
        }
    }

    /// The API path prefix: `/enterprises/{e}`, `/orgs/{o}` or `/repos/{o}/{r}`.
    pub fn prefix(&self) -> String {
        match self {
            Scope::Enterprise(e) => format!("/enterprises/{e}"),
            Scope::Org(o) => format!("/orgs/{o}"),
            Scope::Repo(r) => format!("/repos/{r}"),
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Enterprise(e) => write!(f, "enterprise/{e}"),
            Scope::Org(o) => write!(f, "org/{o}"),
            Scope::Repo(r) => write!(f, "repo/{r}"),
        }
    }
}

/// A runner group.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RunnerGroup {
    /// Group id (GitHub documents it as a number).
    pub id: f64,
    /// Group name.
    pub name: String,
}

/// A runner label.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RunnerLabel {
    /// Label name.
    pub name: String,
}

/// A self-hosted runner as GitHub reports it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Runner {
    /// Runner id.
    pub id: u64,
    /// Runner name.
    pub name: String,
    /// `online` or `offline`.
    pub status: String,
    /// Running a job.
    pub busy: bool,
    /// Labels.
    pub labels: Vec<RunnerLabel>,
    /// Its runner group.
    #[serde(default)]
    pub runner_group_id: Option<u64>,
}

impl Runner {
    /// Whether GitHub sees the runner connected.
    pub fn online(&self) -> bool {
        self.status == "online"
    }
}

/// A queued workflow job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedJob {
    /// Job id.
    pub id: u64,
    /// Its workflow run.
    pub run_id: u64,
    /// Repository, `owner/name`.
    pub repo: String,
    /// `runs-on` labels.
    pub labels: Vec<String>,
}

/// What a JIT runner is generated with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JitRequest {
    /// Runner name, unique in the scope.
    pub name: String,
    /// Runner group id.
    pub runner_group_id: u64,
    /// Labels (1 to 100), all of them: JIT runners get no default labels.
    pub labels: Vec<String>,
    /// Work folder relative to the runner's directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub work_folder: Option<String>,
}

/// A generated JIT config: the registered runner and its config (a credential).
#[derive(Debug, Clone)]
pub struct JitConfig {
    /// The runner GitHub registered.
    pub runner: Runner,
    /// `encoded_jit_config`, for `run.sh --jitconfig`.
    pub encoded: Secret,
}

fn decode<T: serde::de::DeserializeOwned>(path: &str, v: Value) -> Result<T, GithubError> {
    serde_json::from_value(v).map_err(|e| GithubError::Decode {
        path: path.into(),
        message: e.to_string(),
    })
}

const PER_PAGE: usize = 100;

impl GithubClient {
    /// Every page of a list endpoint (`per_page=100`), conditionally requested.
    async fn list(&self, path: &str, key: &str) -> Result<(Vec<Value>, bool), GithubError> {
        let mut items = Vec::new();
        let mut all_cached = true;
        for page in 1.. {
            let sep = if path.contains('?') { '&' } else { '?' };
            let url = format!("{path}{sep}per_page={PER_PAGE}&page={page}");
            let (body, cached) = self.get_cached(&url).await?;
            all_cached &= cached;
            let batch = body[key].as_array().cloned().unwrap_or_default();
            let total = body["total_count"].as_u64().unwrap_or(0) as usize;
            let n = batch.len();
            items.extend(batch);
            if n < PER_PAGE || items.len() >= total {
                break;
            }
        }
        Ok((items, all_cached))
    }

    /// Every page of a list endpoint whose body is a JSON array (`per_page=100`),
    /// conditionally requested. A body that is not an array is a decode error.
    pub(super) async fn list_array(&self, path: &str) -> Result<Vec<Value>, GithubError> {
        let mut items = Vec::new();
        for page in 1.. {
            let sep = if path.contains('?') { '&' } else { '?' };
            let url = format!("{path}{sep}per_page={PER_PAGE}&page={page}");
            let (body, _) = self.get_cached(&url).await?;
            let Value::Array(batch) = body else {
                return Err(GithubError::Decode {
                    path: url,
                    message: "expected an array".into(),
                });
            };
            let n = batch.len();
            items.extend(batch);
            if n < PER_PAGE {
                break;
            }
        }
        Ok(items)
    }

    /// The runner groups of an enterprise or organization. A repository has only the
    /// `Default` group (id 1).
    pub async fn runner_groups(&self, scope: &Scope) -> Result<Vec<RunnerGroup>, GithubError> {
        if let Scope::Repo(_) = scope {
            return Ok(vec![RunnerGroup {
                id: 1.0,
                name: "Default".into(),
            }]);
        }
        let path = format!("{}/actions/runner-groups", scope.prefix());
        let (items, _) = self.list(&path, "runner_groups").await?;
        items.into_iter().map(|v| decode(&path, v)).collect()
    }

    /// A runner group's id by name (case-insensitive, as GitHub's UI treats names).
    pub async fn runner_group_id(&self, scope: &Scope, name: &str) -> Result<u64, GithubError> {
        self.runner_groups(scope)
            .await?
            .into_iter()
            .find(|g| g.name.eq_ignore_ascii_case(name))
            .map(|g| g.id as u64)
            .ok_or_else(|| GithubError::UnknownRunnerGroup {
                group: name.into(),
                scope: scope.to_string(),
            })
    }

    /// The runners registered in a scope, every page.
    pub async fn runners(&self, scope: &Scope) -> Result<Vec<Runner>, GithubError> {
        let path = format!("{}/actions/runners", scope.prefix());
        let (items, _) = self.list(&path, "runners").await?;
        items.into_iter().map(|v| decode(&path, v)).collect()
    }

    /// The jobs still queued in `repos` (`owner/name`): runs that are `queued` or
    /// `in_progress` (a run with one started job is in progress while others wait), then
    /// their jobs with status `queued`. Every call is conditional, so polling with no
    /// change costs no rate limit.
    pub async fn queued_jobs(&self, repos: &[String]) -> Result<Vec<QueuedJob>, GithubError> {
        let mut out = Vec::new();
        for repo in repos {
            for status in ["queued", "in_progress"] {
                let path = format!("/repos/{repo}/actions/runs?status={status}");
                let (runs, _) = self.list(&path, "workflow_runs").await?;
                for run in runs {
                    let Some(run_id) = run["id"].as_u64() else {
                        continue;
                    };
                    let jobs_path = format!("/repos/{repo}/actions/runs/{run_id}/jobs");
                    let (jobs, _) = self.list(&jobs_path, "jobs").await?;
                    out.extend(
                        jobs.iter()
                            .filter(|j| j["status"] == "queued")
                            .filter_map(|j| {
                                Some(QueuedJob {
                                    id: j["id"].as_u64()?,
                                    run_id,
                                    repo: repo.clone(),
                                    labels: j["labels"]
                                        .as_array()?
                                        .iter()
                                        .filter_map(|l| l.as_str().map(String::from))
                                        .collect(),
                                })
                            }),
                    );
                }
            }
        }
        out.sort_by_key(|j| j.id);
        out.dedup_by_key(|j| j.id);
        Ok(out)
    }

    /// Registers a JIT runner and returns its config.
    pub async fn generate_jitconfig(
        &self,
        scope: &Scope,
        request: &JitRequest,
    ) -> Result<JitConfig, GithubError> {
        let path = format!("{}/actions/runners/generate-jitconfig", scope.prefix());
        let body = serde_json::to_value(request).expect("JitRequest serializes");
        let reply = self
            .send(http::Method::POST, &path, Some(&body), None)
            .await?;
        let runner = decode(&path, reply.body["runner"].clone())?;
        let encoded = reply.body["encoded_jit_config"]
            .as_str()
            .map(Secret::new)
            .ok_or_else(|| GithubError::Decode {
                path: path.clone(),
                message: "no encoded_jit_config".into(),
            })?;
        Ok(JitConfig { runner, encoded })
    }

    /// Deletes a runner; `false` when it was already gone. GitHub refuses (422) to delete
    /// a runner that is running a job.
    pub async fn delete_runner(&self, scope: &Scope, runner_id: u64) -> Result<bool, GithubError> {
        let path = format!("{}/actions/runners/{runner_id}", scope.prefix());
        match self.send(http::Method::DELETE, &path, None, None).await {
            Ok(_) => Ok(true),
            Err(GithubError::Status { status: 404, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
