//! A strict, stateful emulator of the GitHub REST endpoints drover uses, on loopback.
//!
//! - App auth: `POST /app/installations/{id}/access_tokens` needs an RS256 JWT signed
//!   with the App's key (checked against the public key, `iss`, `iat`, `exp`); every other
//!   call needs an unexpired installation token (or the configured PAT).
//! - Workflow runs and jobs, org/repo runners (paginated), org runner groups, JIT configs.
//! - Repository issues ([`issues`]): list by state and label (paginated), create, edit.
//! - A request budget with `x-ratelimit-*` headers on every response; ETag +
//!   `If-None-Match` gives `304 Not Modified`, which costs no budget (as on GitHub).
//! - Injected faults: 5xx, 403 secondary rate limits and 429, with `Retry-After`.
//! - Every request and response is checked against GitHub's OpenAPI description
//!   ([`openapi`]); problems are collected and [`GithubEmulator::assert_conformant`]
//!   fails the test on any.
//! - Signed `workflow_job` webhook deliveries ([`GithubEmulator::deliver`]), also checked.
//! - A private runner protocol under `/_runner/` used by the stand-in runner
//!   (`examples/fake_runner.rs`): it stands for the Actions service, not the REST API.

pub mod issues;
pub mod objects;
pub mod openapi;
pub mod pulls;
mod server;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use objects::{Group, Job, JobStatus, Run, Runner, RunnerHome};

/// An App key pair (PEM), generated once per test process (RSA generation is slow).
#[derive(Clone)]
pub struct AppKeys {
    /// PKCS#1 private key, for drover.
    pub private_pem: String,
    /// SPKI public key, for the emulator.
    pub public_pem: String,
}

impl AppKeys {
    /// The process-wide test key pair.
    pub fn get() -> &'static AppKeys {
        static KEYS: OnceLock<AppKeys> = OnceLock::new();
        KEYS.get_or_init(|| {
            use rsa::pkcs1::EncodeRsaPrivateKey;
            use rsa::pkcs8::{EncodePublicKey, LineEnding};
            let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
            AppKeys {
                private_pem: key.to_pkcs1_pem(LineEnding::LF).unwrap().to_string(),
                public_pem: key
                    .to_public_key()
                    .to_public_key_pem(LineEnding::LF)
                    .unwrap(),
            }
        })
    }
}

/// A fault the emulator answers with instead of serving a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// A server error with this status (500, 502, 503).
    Server(u16),
    /// 403 "secondary rate limit" with `Retry-After` seconds.
    SecondaryRateLimit { retry_after: u64 },
    /// 429 with `Retry-After` seconds.
    TooManyRequests { retry_after: u64 },
}

/// How the emulator is set up.
#[derive(Debug, Clone)]
pub struct Config {
    /// The App id (`iss` of the JWT).
    pub app_id: u64,
    /// The installation tokens are minted for.
    pub installation_id: u64,
    /// The App's public key (PEM); App auth is refused without it.
    pub app_public_pem: Option<String>,
    /// A personal access token accepted as-is.
    pub pat: Option<String>,
    /// Lifetime of installation tokens, in seconds (GitHub: 3600).
    pub token_ttl_secs: i64,
    /// The request budget per hour (GitHub: 5000 for an installation).
    pub rate_limit: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            app_id: 4242,
            installation_id: 77,
            app_public_pem: Some(AppKeys::get().public_pem.clone()),
            pat: None,
            token_ttl_secs: 3600,
            rate_limit: 5000,
        }
    }
}

/// One request the emulator saw.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Method.
    pub method: String,
    /// Path without query.
    pub path: String,
    /// The response status.
    pub status: u16,
    /// When the request arrived (before it was handled).
    pub at: std::time::Instant,
}

/// The emulator's whole state.
pub(crate) struct State {
    pub base: String,
    pub config: Config,
    pub orgs: BTreeMap<String, Vec<Group>>,
    pub repos: BTreeMap<String, u64>,
    pub runs: BTreeMap<u64, Run>,
    pub jobs: BTreeMap<u64, Job>,
    pub runners: BTreeMap<u64, Runner>,
    pub tokens: Vec<(String, i64)>,
    pub tokens_issued: u32,
    pub remaining: u32,
    pub reset: i64,
    pub faults: VecDeque<Fault>,
    /// Requests answered with a server error until cleared: (method, path, status).
    pub path_faults: Vec<(String, String, u16)>,
    pub seen: Vec<Seen>,
    pub violations: Vec<String>,
    pub webhook: Option<(String, String)>,
    pub next_id: u64,
    pub issues: issues::Issues,
    pub pulls: pulls::PullState,
}

impl State {
    pub fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

/// A running emulator. Dropping it stops the server.
pub struct GithubEmulator {
    /// Base URL, e.g. `http://127.0.0.1:4321` (the API root).
    pub url: String,
    pub(crate) state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GithubEmulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

impl GithubEmulator {
    /// Starts an emulator on a free loopback port.
    pub async fn start(config: Config) -> GithubEmulator {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State {
            base: url.clone(),
            remaining: config.rate_limit,
            reset: now() + 3600,
            config,
            orgs: BTreeMap::new(),
            repos: BTreeMap::new(),
            runs: BTreeMap::new(),
            jobs: BTreeMap::new(),
            runners: BTreeMap::new(),
            tokens: Vec::new(),
            tokens_issued: 0,
            faults: VecDeque::new(),
            path_faults: Vec::new(),
            seen: Vec::new(),
            violations: Vec::new(),
            webhook: None,
            next_id: 1000,
            issues: issues::Issues::default(),
            pulls: pulls::PullState::default(),
        }));
        let app = server::router(state.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        GithubEmulator { url, state, task }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    /// Adds an organization with runner groups (`Default` with id 1 always exists).
    pub fn add_org(&self, org: &str, groups: &[&str]) {
        self.with(|s| {
            let mut list = vec![Group {
                id: 1,
                name: "Default".into(),
            }];
            for name in groups {
                let id = s.id();
                list.push(Group {
                    id,
                    name: name.to_string(),
                });
            }
            s.orgs.insert(org.to_string(), list);
        });
    }

    /// The id of an org's runner group by name.
    pub fn group_id(&self, org: &str, name: &str) -> Option<u64> {
        self.with(|s| {
            s.orgs
                .get(org)?
                .iter()
                .find(|g| g.name == name)
                .map(|g| g.id)
        })
    }

    /// Queues a workflow run with one job with these `runs-on` labels; returns the job id.
    pub fn queue_job(&self, repo: &str, labels: &[&str]) -> u64 {
        self.with(|s| {
            let repo_id = match s.repos.get(repo) {
                Some(id) => *id,
                None => {
                    let id = s.id();
                    s.repos.insert(repo.to_string(), id);
                    id
                }
            };
            let run_id = s.id();
            let job_id = s.id();
            s.runs.insert(
                run_id,
                Run {
                    id: run_id,
                    repo: repo.to_string(),
                    repo_id,
                },
            );
            s.jobs.insert(
                job_id,
                Job {
                    id: job_id,
                    run_id,
                    repo: repo.to_string(),
                    name: format!("job-{job_id}"),
                    labels: labels.iter().map(|l| l.to_string()).collect(),
                    status: JobStatus::Queued,
                    runner: None,
                },
            );
            job_id
        })
    }

    /// Adds a job to an existing run (for runs with several jobs).
    pub fn add_job(&self, run_id: u64, labels: &[&str]) -> u64 {
        self.with(|s| {
            let repo = s.runs[&run_id].repo.clone();
            let id = s.id();
            s.jobs.insert(
                id,
                Job {
                    id,
                    run_id,
                    repo,
                    name: format!("job-{id}"),
                    labels: labels.iter().map(|l| l.to_string()).collect(),
                    status: JobStatus::Queued,
                    runner: None,
                },
            );
            id
        })
    }

    /// Starts a queued job on a registered runner (as if the runner had taken it; no
    /// webhook is sent).
    pub fn start_job(&self, job_id: u64, runner_name: &str) {
        self.with(|s| {
            let runner = s
                .runners
                .values_mut()
                .find(|r| r.name == runner_name)
                .expect("a registered runner");
            runner.busy = true;
            runner.online = true;
            runner.job = Some(job_id);
            let (id, name, group) = (runner.id, runner.name.clone(), runner.group_id);
            let group_name = match &runner.home {
                RunnerHome::Org(org) => s
                    .orgs
                    .get(org)
                    .and_then(|g| g.iter().find(|g| g.id == group))
                    .map_or_else(|| "Default".to_string(), |g| g.name.clone()),
                RunnerHome::Repo(_) => "Default".to_string(),
            };
            let job = s.jobs.get_mut(&job_id).expect("a job");
            job.status = JobStatus::InProgress;
            job.runner = Some((id, name, group, group_name));
        });
    }

    /// A job's current state.
    pub fn job(&self, id: u64) -> Job {
        self.with(|s| s.jobs[&id].clone())
    }

    /// Registered runners.
    pub fn runners(&self) -> Vec<Runner> {
        self.with(|s| s.runners.values().cloned().collect())
    }

    /// Registers an idle runner directly (as if it had been configured earlier).
    pub fn add_runner(
        &self,
        home: RunnerHome,
        name: &str,
        labels: &[&str],
        online: bool,
        busy: bool,
    ) -> u64 {
        self.with(|s| {
            let id = s.id();
            s.runners.insert(
                id,
                Runner {
                    id,
                    name: name.into(),
                    home,
                    group_id: 1,
                    labels: labels.iter().map(|l| l.to_string()).collect(),
                    online,
                    busy,
                    ephemeral: true,
                    secret: format!("runner-secret-{id}"),
                    job: None,
                },
            );
            id
        })
    }

    /// The issues (and pull requests) of `repo`, in number order.
    pub fn issues(&self, repo: &str) -> Vec<issues::Issue> {
        self.with(|s| s.issues.repos.get(repo).cloned().unwrap_or_default())
    }

    /// Opens an issue (or, with `pull_request`, a pull request) directly, as a person
    /// would; returns its number.
    pub fn add_issue(
        &self,
        repo: &str,
        title: &str,
        body: &str,
        labels: &[&str],
        pull_request: bool,
    ) -> u64 {
        self.with(|s| {
            let id = s.id();
            let labels: Vec<String> = labels.iter().map(|l| l.to_string()).collect();
            s.issues
                .add(id, repo, title, Some(body), &labels, pull_request)
        })
    }

    /// Replaces an issue's labels directly, as a person would.
    pub fn set_issue_labels(&self, repo: &str, number: u64, labels: &[&str]) {
        self.with(|s| {
            let issue = s
                .issues
                .repos
                .get_mut(repo)
                .and_then(|l| l.iter_mut().find(|i| i.number == number))
                .expect("no such issue");
            issue.labels = labels.iter().map(|l| l.to_string()).collect();
        });
    }

    /// Issue writes made through the API: (method, repo, number).
    pub fn issue_writes(&self) -> Vec<(String, String, u64)> {
        self.with(|s| s.issues.writes.clone())
    }

    /// Answers every `method path` request with a server error `status` (after
    /// authentication) until [`GithubEmulator::clear_path_faults`].
    pub fn fail_path(&self, method: &str, path: &str, status: u16) {
        self.with(|s| s.path_faults.push((method.into(), path.into(), status)));
    }

    /// Ends every [`GithubEmulator::fail_path`].
    pub fn clear_path_faults(&self) {
        self.with(|s| s.path_faults.clear());
    }

    /// Answers the next `times` requests (to the REST API) with `fault`.
    pub fn inject(&self, fault: Fault, times: usize) {
        self.with(|s| s.faults.extend(std::iter::repeat_n(fault, times)));
    }

    /// Injected faults not yet answered.
    pub fn pending_faults(&self) -> usize {
        self.with(|s| s.faults.len())
    }

    /// Every REST request seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.with(|s| s.seen.clone())
    }

    /// How many REST requests had a path starting with `prefix`.
    pub fn count(&self, prefix: &str) -> usize {
        self.with(|s| s.seen.iter().filter(|r| r.path.starts_with(prefix)).count())
    }

    /// Requests left in the budget.
    pub fn remaining(&self) -> u32 {
        self.with(|s| s.remaining)
    }

    /// Sets the budget left (to test running low).
    pub fn set_remaining(&self, remaining: u32) {
        self.with(|s| s.remaining = remaining);
    }

    /// Installation tokens minted so far.
    pub fn tokens_issued(&self) -> u32 {
        self.with(|s| s.tokens_issued)
    }

    /// Schema and protocol violations found so far.
    pub fn violations(&self) -> Vec<String> {
        self.with(|s| s.violations.clone())
    }

    /// Fails when any request or response broke GitHub's OpenAPI description.
    pub fn assert_conformant(&self) {
        let v = self.violations();
        assert!(v.is_empty(), "GitHub API violations:\n{}", v.join("\n"));
    }

    /// Sends `workflow_job` deliveries for job state changes the runner protocol makes
    /// (in_progress, completed) to `url`, signed with `secret`.
    pub fn set_webhook(&self, url: &str, secret: &str) {
        self.with(|s| s.webhook = Some((url.into(), secret.into())));
    }

    /// The signed delivery of a `workflow_job` event for `job_id` with `action`
    /// (`queued`, `waiting`, `in_progress`, `completed`): (headers, body). Checked against
    /// the description's webhook schema.
    pub fn delivery(
        &self,
        job_id: u64,
        action: &str,
        secret: &str,
    ) -> (Vec<(String, String)>, Vec<u8>) {
        self.with(|s| delivery(s, job_id, action, secret))
    }

    /// Sends one `workflow_job` delivery to `url`; returns the HTTP status.
    pub async fn deliver(&self, url: &str, secret: &str, job_id: u64, action: &str) -> u16 {
        let (headers, body) = self.delivery(job_id, action, secret);
        send(url, headers, body).await
    }
}

/// Builds (and checks) a signed `workflow_job` delivery.
pub(crate) fn delivery(
    s: &mut State,
    job_id: u64,
    action: &str,
    secret: &str,
) -> (Vec<(String, String)>, Vec<u8>) {
    let job = s.jobs[&job_id].clone();
    let repo_id = s.runs[&job.run_id].repo_id;
    let mut wj = objects::webhook_job(&s.base, &job);
    // The payload shows the job in the state the action announces.
    match action {
        "waiting" | "queued" | "in_progress" => wj["status"] = json!(action),
        "completed" => {
            wj["status"] = json!("completed");
            wj["conclusion"] = json!("success");
            wj["completed_at"] = json!(objects::TIME);
        }
        _ => {}
    }
    let payload = json!({
        "action": action,
        "workflow_job": wj,
        "repository": objects::webhook_repository(&s.base, &job.repo, repo_id),
        "sender": objects::sender(&s.base),
        "installation": {"id": s.config.installation_id, "node_id": "I_1"},
    });
    let name = format!("workflow-job-{}", action.replace('_', "-"));
    let problems = openapi::OpenApi::get().check_webhook(&name, &payload);
    s.violations.extend(problems);
    let body = serde_json::to_vec(&payload).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(&body);
    let sig = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let id = s.id();
    let headers = vec![
        ("X-GitHub-Event".into(), "workflow_job".into()),
        (
            "X-GitHub-Delivery".into(),
            format!("00000000-0000-0000-0000-{id:012}"),
        ),
        ("X-Hub-Signature-256".into(), sig),
        ("Content-Type".into(), "application/json".into()),
    ];
    (headers, body)
}

/// POSTs a delivery.
pub(crate) async fn send(url: &str, headers: Vec<(String, String)>, body: Vec<u8>) -> u16 {
    drover::tls::install_crypto_provider();
    let mut req = reqwest::Client::new().post(url).body(body);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    req.send().await.map(|r| r.status().as_u16()).unwrap_or(0)
}

/// The JIT config the emulator hands out: base64 of JSON, as GitHub's is (its content
/// is the emulator's own).
pub fn encode_jit(base: &str, runner_id: u64, secret: &str) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(json!({"url": base, "runner_id": runner_id, "secret": secret}).to_string())
}

/// Decodes [`encode_jit`]'s output.
pub fn decode_jit(encoded: &str) -> Option<Value> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Pull requests, issue comments, check runs and statuses (see [`pulls`]).
impl GithubEmulator {
    /// Opens a pull request in `repo` from `head_repo` (a fork when it differs).
    pub fn add_pull(&self, repo: &str, number: u64, head_sha: &str, head_repo: &str) {
        self.with(|s| {
            s.pulls.pulls.push(pulls::Pull {
                repo: repo.into(),
                number,
                head_sha: head_sha.into(),
                head_repo: head_repo.into(),
                base_ref: "main".into(),
            })
        });
    }

    /// Adds a comment as someone else would (to test that drover finds its own).
    pub fn add_comment(&self, repo: &str, issue: u64, body: &str) -> u64 {
        self.with(|s| {
            let id = s.id();
            s.pulls.comments.insert(
                id,
                pulls::Comment {
                    id,
                    repo: repo.into(),
                    issue,
                    body: body.into(),
                    edits: 0,
                },
            );
            id
        })
    }

    /// The comments of an issue or pull request, oldest first.
    pub fn comments(&self, repo: &str, issue: u64) -> Vec<pulls::Comment> {
        self.with(|s| {
            s.pulls
                .comments
                .values()
                .filter(|c| c.repo == repo && c.issue == issue)
                .cloned()
                .collect()
        })
    }

    /// Every check run created.
    pub fn check_runs(&self) -> Vec<pulls::CheckRun> {
        self.with(|s| s.pulls.check_runs.values().cloned().collect())
    }

    /// Every commit status set.
    pub fn statuses(&self) -> Vec<pulls::Status> {
        self.with(|s| s.pulls.statuses.clone())
    }

    /// Makes comment writes (`deny_comments`) or check-run writes (`deny_check_runs`)
    /// fail with 403.
    pub fn deny_pull_writes(&self, deny_comments: bool, deny_check_runs: bool) {
        self.with(|s| {
            s.pulls.deny_comments = deny_comments;
            s.pulls.deny_check_runs = deny_check_runs;
        });
    }
}
