//! A [`RunnerRegistry`] for tests, backed by drover's real [`GithubClient`] (usually against
//! the GitHub API emulator): JIT configs through `generate-jitconfig`, deregistration through
//! `DELETE .../runners/{id}` (GitHub answers 422 for a busy runner), and `registered` from
//! the last [`GithubRegistry::refresh`] (a runner list), as the autoscaler's observation
//! would be.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use drover::credentials::Secret;
use drover::github::{GithubClient, GithubError, JitRequest, Scope};
use drover::runners::{JitGrant, JitRequest as SlurmJitRequest};
use drover::runners::{RegisteredRunner, RegistryError, Removal, RunnerRegistry};
use futures::future::BoxFuture;

/// A registry over one GitHub scope; every runner set registers with `labels[set]`.
pub struct GithubRegistry {
    client: GithubClient,
    scope: Scope,
    labels: BTreeMap<String, Vec<String>>,
    seen: Mutex<BTreeMap<String, RegisteredRunner>>,
    /// JIT configs minted.
    pub minted: AtomicUsize,
    /// Deregistrations asked for.
    pub deregistrations: AtomicUsize,
}

impl GithubRegistry {
    /// A registry for `scope`; `sets` gives each runner set's labels.
    pub fn new(client: GithubClient, scope: Scope, sets: &[(&str, &[&str])]) -> Self {
        Self {
            client,
            scope,
            labels: sets
                .iter()
                .map(|(s, l)| (s.to_string(), l.iter().map(|l| l.to_string()).collect()))
                .collect(),
            seen: Mutex::default(),
            minted: AtomicUsize::new(0),
            deregistrations: AtomicUsize::new(0),
        }
    }

    /// Re-reads GitHub's runner list (the autoscaler's observation).
    pub async fn refresh(&self) {
        let runners = self
            .client
            .runners(&self.scope)
            .await
            .expect("list runners");
        let seen = runners
            .into_iter()
            .map(|r| {
                let state = RegisteredRunner {
                    id: r.id,
                    online: r.online(),
                    busy: r.busy,
                };
                (r.name, state)
            })
            .collect();
        *self.seen.lock().unwrap() = seen;
    }
}

impl RunnerRegistry for GithubRegistry {
    fn registered(&self, name: &str) -> Option<RegisteredRunner> {
        self.seen.lock().unwrap().get(name).copied()
    }

    fn jit_config<'a>(
        &'a self,
        set: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Secret, RegistryError>> {
        Box::pin(async move {
            let labels = self
                .labels
                .get(set)
                .cloned()
                .ok_or_else(|| RegistryError::new(format!("unknown runner set {set}")))?;
            let request = JitRequest {
                name: name.to_string(),
                runner_group_id: 1,
                labels,
                work_folder: Some("_work".into()),
            };
            let jit = self
                .client
                .generate_jitconfig(&self.scope, &request)
                .await
                .map_err(RegistryError::new)?;
            self.minted.fetch_add(1, Ordering::SeqCst);
            self.seen.lock().unwrap().insert(
                name.to_string(),
                RegisteredRunner {
                    id: jit.runner.id,
                    online: false,
                    busy: false,
                },
            );
            Ok(jit.encoded)
        })
    }

    fn deregister<'a>(
        &'a self,
        _set: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Removal, RegistryError>> {
        Box::pin(async move {
            self.deregistrations.fetch_add(1, Ordering::SeqCst);
            let listed = self
                .client
                .runners(&self.scope)
                .await
                .map_err(RegistryError::new)?;
            let Some(runner) = listed.into_iter().find(|r| r.name == name) else {
                self.seen.lock().unwrap().remove(name);
                return Ok(Removal::NotRegistered);
            };
            match self.client.delete_runner(&self.scope, runner.id).await {
                Ok(true) => {
                    self.seen.lock().unwrap().remove(name);
                    Ok(Removal::Removed)
                }
                Ok(false) => Ok(Removal::NotRegistered),
                Err(GithubError::Status { status: 422, .. }) => Ok(Removal::Busy),
                Err(e) => Err(RegistryError::new(e)),
            }
        })
    }

    fn slurm_grant(&self, _request: &SlurmJitRequest) -> Result<JitGrant, RegistryError> {
        Err(RegistryError::new("this test registry has no JIT endpoint"))
    }
}
