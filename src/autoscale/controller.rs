//! The autoscaler's I/O edge: demand from webhooks and polls, GitHub's runner list, the
//! decisions that feed [`crate::sites::RunOptions::desired_runners`], and the
//! [`RunnerRegistry`] the site drivers use to mint JIT configs and deregister runners.
//!
//! Nothing here counts runners from memory: live runners come from the sites' plans, and
//! registered/busy runners from GitHub's runner list (kept current between refreshes by
//! `workflow_job` deliveries). A restarted drover starts from the same facts.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::Value;
use tokio::sync::Notify;

use super::config::{ScaleConfig, Scaling};
use super::demand::{Demand, Effect, JobEvent};
use super::error::Error;
use super::matching::JobRequest;
use super::metrics::{AutoscaleMetrics, CallLabels, SetLabels};
use crate::credentials::Secret;
use crate::fleet::FleetRepo;
use crate::fleet::model::GithubConnection;
use crate::github::{self, GithubClient, GithubError, JitRequest as GithubJit, RetryPolicy, Scope};
use crate::runners::grants::{Grant, Grants};
use crate::runners::set_of_runner;
use crate::runners::{JitGrant, JitRequest};
use crate::runners::{RegisteredRunner, RegistryError, Removal, RunnerRegistry};
use crate::sites::kubernetes::site_cache::SiteCache;

/// Autoscaler settings (from `drover serve`'s config).
#[derive(Debug, Clone)]
pub struct Settings {
    /// drover's JIT endpoint as Slurm jobs reach it (`http://host:port/jit`); without it
    /// Slurm runner sets with the default command cannot start.
    pub jit_url: Option<String>,
    /// Repositories polled for queued jobs besides those of repository-scoped sets.
    pub repositories: Vec<String>,
    /// How often queued jobs are polled (repairs missed webhooks).
    pub poll_interval: Duration,
    /// How often GitHub's runner list is read.
    pub refresh_interval: Duration,
    /// How long an unused Slurm JIT grant stays valid.
    pub grant_ttl: Duration,
    /// How long a registered runner may be offline with no live pod or job before it is
    /// deregistered as a leftover.
    pub orphan_grace: Duration,
    /// Retries and rate-limit reserve of the GitHub client.
    pub retry: RetryPolicy,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            jit_url: None,
            repositories: Vec::new(),
            poll_interval: Duration::from_secs(30),
            refresh_interval: Duration::from_secs(15),
            grant_ttl: Duration::from_secs(24 * 3600),
            orphan_grace: Duration::from_secs(120),
            retry: RetryPolicy::default(),
        }
    }
}

/// A drover runner GitHub knows about.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Tracked {
    set: String,
    id: u64,
    online: bool,
    busy: bool,
    /// Since when (Unix ms) it has been offline with no live pod or job.
    orphan_since: Option<u64>,
}

/// One runner set's autoscaling state, for the status page and `/status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SetRow {
    /// The site its pool is on.
    pub site: String,
    /// Queued jobs matched to it.
    pub queued: u32,
    /// Runners running a job.
    pub busy: u32,
    /// Runners online and idle.
    pub idle: u32,
    /// Live runners (pods, jobs) not online yet.
    pub pending: u32,
    /// The desired count.
    pub desired: u32,
    /// Why: e.g. "desired 8 (demand 9, bounded by max)".
    pub explain: String,
    /// The pool could not hold what demand asked for.
    pub pool_at_capacity: bool,
}

/// A queued job no runner set can serve, for the status page, `/status` and drift.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UnservedJob {
    /// Job id.
    pub job_id: u64,
    /// Repository.
    pub repo: String,
    /// Its `runs-on` labels.
    pub labels: Vec<String>,
    /// Why no set can serve it, naming the missing labels.
    pub reason: String,
}

#[derive(Default)]
struct Inner {
    revision: Option<String>,
    config: Arc<ScaleConfig>,
    demand: Demand,
    book: BTreeMap<String, Tracked>,
    seen_repos: BTreeSet<String>,
    scaling: Scaling,
    rows: BTreeMap<String, SetRow>,
    live: BTreeMap<String, Vec<String>>,
    groups: HashMap<(Scope, String), u64>,
    refreshed: bool,
    polled: bool,
}

/// The autoscaler, shared by the service's tasks and the site drivers.
pub struct Autoscaler {
    settings: Settings,
    inner: Mutex<Inner>,
    client: RwLock<Option<(GithubConnection, Arc<GithubClient>)>>,
    grants: Grants,
    /// Its metrics.
    pub metrics: AutoscaleMetrics,
    wake: Notify,
    sites: Arc<SiteCache>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Autoscaler {
    /// A new autoscaler with no fleet yet.
    pub fn new(settings: Settings, metrics: AutoscaleMetrics) -> Arc<Self> {
        Arc::new(Self {
            grants: Grants::new(settings.jit_url.clone(), settings.grant_ttl),
            settings,
            inner: Mutex::new(Inner::default()),
            client: RwLock::new(None),
            metrics,
            wake: Notify::new(),
            sites: Arc::new(SiteCache::new()),
        })
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adopts a fleet revision: its scaled sets and GitHub connection. Demand and the
    /// runner book are kept. `Err` when the GitHub connection cannot be used.
    pub fn configure(&self, revision: &str, repo: &FleetRepo) -> Result<(), Error> {
        {
            let mut inner = self.inner();
            if inner.revision.as_deref() != Some(revision) {
                inner.revision = Some(revision.to_string());
                inner.config = Arc::new(ScaleConfig::from_repo(repo));
            }
        }
        let Some(fleet) = repo.fleet.as_ref() else {
            return Err(Error::NoFleet);
        };
        let connection = &fleet.value.spec.github;
        let current = self
            .client
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(c, _)| c.clone());
        if current.as_ref() != Some(connection) {
            let client = github::connect::client(repo, self.settings.retry.clone())?;
            *self.client.write().unwrap_or_else(|e| e.into_inner()) =
                Some((connection.clone(), Arc::new(client)));
        }
        Ok(())
    }

    /// The Kubernetes sites' clients and runner Pod watches shared by the service's runs.
    pub fn site_cache(&self) -> Arc<SiteCache> {
        self.sites.clone()
    }

    /// Whether the fleet has runner sets to scale.
    pub fn has_sets(&self) -> bool {
        !self.inner().config.sets.is_empty()
    }

    /// Whether demand and runners were read from GitHub at least once: before that, a
    /// decision would scale down to `min` what a restarted drover knows nothing about.
    pub fn warm(&self) -> bool {
        let inner = self.inner();
        inner.refreshed && inner.polled
    }

    fn client(&self) -> Result<Arc<GithubClient>, Error> {
        self.client
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(_, c)| c.clone())
            .ok_or(Error::NotConnected)
    }

    fn count<T>(&self, call: &str, result: &Result<T, GithubError>) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(e) => e.label(),
        };
        self.metrics.call(call, outcome);
        if let Ok(client) = self.client()
            && let Some(rate) = client.rate_limit()
        {
            self.metrics
                .rate_limit_remaining
                .set(i64::from(rate.remaining));
        }
    }

    /// Wakes the decision loop (after a GitHub read).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Waits until demand changed (a webhook) or `timeout` passed.
    pub async fn woken(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.wake.notified()).await;
    }

    /// Takes a `workflow_job` delivery; `true` when demand or busy runners changed (the
    /// autoscaler is woken).
    pub fn observe_webhook(&self, payload: &Value) -> bool {
        let Some(event) = JobEvent::from_payload(payload) else {
            return false;
        };
        let now = now_ms();
        let mut inner = self.inner();
        inner
            .seen_repos
            .insert(event.request.repo.to_ascii_lowercase());
        let runner = event.runner.clone();
        let phase = event.phase;
        let effect = inner.demand.observe(event, now);
        let config = inner.config.clone();
        let mut changed = effect != Effect::None;
        // The runner named in the delivery is busy (in progress) or done (completed).
        if let Some(name) = runner
            && let Some(t) = inner.book.get_mut(&name)
        {
            match phase {
                super::demand::Phase::InProgress if !t.busy => {
                    t.busy = true;
                    t.online = true;
                    changed = true;
                }
                super::demand::Phase::Completed => {
                    inner.book.remove(&name);
                    changed = true;
                }
                _ => {}
            }
        }
        if let Effect::Left {
            waited_ms: Some(ms),
            runner: Some(name),
        } = &effect
            && let Some(set) =
                set_of_runner(name, &config.fleet, config.sets.keys().map(String::as_str))
        {
            self.metrics
                .queue_wait
                .get_or_create(&SetLabels {
                    runner_set: set.to_string(),
                })
                .observe(*ms as f64 / 1000.0);
        }
        drop(inner);
        if changed {
            self.metrics
                .demand_updates
                .get_or_create(&CallLabels {
                    call: "webhook".into(),
                    outcome: "changed".into(),
                })
                .inc();
            self.wake.notify_one();
        }
        changed
    }

    /// Polls queued jobs of every repository in scope and repairs demand.
    pub async fn poll_jobs(&self) -> Result<usize, Error> {
        let client = self.client()?;
        let repos = {
            let inner = self.inner();
            let extra: Vec<String> = self
                .settings
                .repositories
                .iter()
                .chain(inner.seen_repos.iter())
                .cloned()
                .collect();
            inner.config.poll_repos(extra.iter())
        };
        let started = now_ms();
        let result = client.queued_jobs(&repos).await;
        self.count("queued_jobs", &result);
        let jobs = result?;
        let requests: Vec<JobRequest> = jobs
            .into_iter()
            .map(|j| JobRequest {
                id: j.id,
                repo: j.repo,
                enterprise: None,
                labels: j.labels,
            })
            .collect();
        let mut inner = self.inner();
        let repaired = inner
            .demand
            .reconcile_poll(&repos, &requests, started, now_ms());
        inner
            .demand
            .forget_before(now_ms().saturating_sub(3_600_000));
        inner.polled = true;
        drop(inner);
        if repaired > 0 {
            self.metrics
                .demand_updates
                .get_or_create(&CallLabels {
                    call: "poll".into(),
                    outcome: "changed".into(),
                })
                .inc_by(repaired as u64);
            self.wake.notify_one();
        }
        Ok(repaired)
    }

    /// Reads GitHub's runner list for every scope in use, then deregisters leftovers:
    /// drover runners offline, idle and with no live pod or job for the grace period.
    pub async fn refresh_runners(&self) -> Result<(), Error> {
        let client = self.client()?;
        let config = self.inner().config.clone();
        let scopes: BTreeSet<Scope> = config.sets.values().map(|s| s.scope.clone()).collect();
        let mut listed: BTreeMap<String, (String, github::Runner)> = BTreeMap::new();
        for scope in &scopes {
            let result = client.runners(scope).await;
            self.count("runners", &result);
            for runner in result? {
                let sets = config.sets.keys().map(String::as_str);
                if let Some(set) = set_of_runner(&runner.name, &config.fleet, sets) {
                    listed.insert(runner.name.clone(), (set.to_string(), runner));
                }
            }
        }
        let now = now_ms();
        let leftovers = {
            let mut inner = self.inner();
            let live: BTreeSet<String> = inner.live.values().flatten().cloned().collect();
            let old = std::mem::take(&mut inner.book);
            for (name, (set, r)) in listed {
                let orphan = !r.online() && !r.busy && !live.contains(&name);
                let since = old.get(&name).and_then(|t| t.orphan_since);
                inner.book.insert(
                    name,
                    Tracked {
                        set,
                        id: r.id,
                        online: r.online(),
                        busy: r.busy,
                        orphan_since: orphan.then(|| since.unwrap_or(now)),
                    },
                );
            }
            inner.refreshed = true;
            let grace = self.settings.orphan_grace.as_millis() as u64;
            inner
                .book
                .iter()
                .filter(|(_, t)| {
                    t.orphan_since
                        .is_some_and(|s| now.saturating_sub(s) >= grace)
                })
                .map(|(name, t)| (name.clone(), t.set.clone()))
                .collect::<Vec<_>>()
        };
        for (name, set) in leftovers {
            match self.deregister_named(&set, &name).await {
                Ok(Removal::Removed) => {
                    tracing::info!(runner = %name, "deregistered a leftover offline runner");
                    self.metrics.deregistered.inc();
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(runner = %name, error = %e, "could not deregister a leftover runner")
                }
            }
        }
        Ok(())
    }

    /// Decides every set from current demand and busy runners, updates the metrics and
    /// returns the decisions.
    pub fn decide(&self) -> Scaling {
        let mut inner = self.inner();
        let mut busy: BTreeMap<String, u32> = BTreeMap::new();
        let mut idle: BTreeMap<String, u32> = BTreeMap::new();
        for t in inner.book.values() {
            if t.busy {
                *busy.entry(t.set.clone()).or_default() += 1;
            } else if t.online {
                *idle.entry(t.set.clone()).or_default() += 1;
            }
        }
        let scaling = inner.config.decide(&inner.demand.queued(), &busy);
        let live: BTreeSet<&String> = inner.live.values().flatten().collect();
        let mut rows = BTreeMap::new();
        for (name, s) in &scaling.sets {
            let labels = SetLabels {
                runner_set: name.clone(),
            };
            let online = inner
                .book
                .iter()
                .filter(|(n, t)| &t.set == name && t.online && live.contains(n))
                .count();
            let live_here = live
                .iter()
                .filter(|n| set_of_runner(n, &inner.config.fleet, [name.as_str()]).is_some())
                .count();
            let idle_here = idle.get(name).copied().unwrap_or(0);
            let pending = live_here.saturating_sub(online) as u32;
            rows.insert(
                name.clone(),
                SetRow {
                    site: inner.config.sets[name].site.clone(),
                    queued: s.queued,
                    busy: s.busy,
                    idle: idle_here,
                    pending,
                    desired: s.decision.desired,
                    explain: s.decision.explain(),
                    pool_at_capacity: s.decision.pool_at_capacity(),
                },
            );
            let m = &self.metrics;
            m.queued.get_or_create(&labels).set(i64::from(s.queued));
            m.busy.get_or_create(&labels).set(i64::from(s.busy));
            m.idle.get_or_create(&labels).set(i64::from(idle_here));
            m.pending.get_or_create(&labels).set(i64::from(pending));
            m.desired
                .get_or_create(&labels)
                .set(i64::from(s.decision.desired));
            m.pool_at_capacity
                .get_or_create(&labels)
                .set(i64::from(s.decision.pool_at_capacity()));
        }
        self.metrics
            .unmatched_jobs
            .set(scaling.unmatched.len() as i64);
        inner.rows = rows;
        inner.scaling = scaling.clone();
        scaling
    }

    /// Each scaled set's state at the last decision.
    pub fn rows(&self) -> BTreeMap<String, SetRow> {
        self.inner().rows.clone()
    }

    /// Queued jobs no runner set can serve, at the last decision.
    pub fn unserved(&self) -> Vec<UnservedJob> {
        unserved(&self.inner().scaling)
    }

    /// The last decisions.
    pub fn scaling(&self) -> Scaling {
        self.inner().scaling.clone()
    }

    /// The desired runner counts of the last decisions (empty until [`Self::warm`]).
    pub fn desired(&self) -> BTreeMap<String, u32> {
        let inner = self.inner();
        if inner.refreshed && inner.polled {
            inner.scaling.desired()
        } else {
            BTreeMap::new()
        }
    }

    /// The site each scaled set lives on.
    pub fn set_sites(&self) -> BTreeMap<String, String> {
        self.inner()
            .config
            .sets
            .iter()
            .map(|(n, s)| (n.clone(), s.site.clone()))
            .collect()
    }

    /// Records the live runners a site's plan saw (pods, jobs), by runner name.
    pub fn record_live(&self, site: &str, names: Vec<String>) {
        self.inner().live.insert(site.to_string(), names);
    }

    /// Counts a runner that failed to start (never online in time).
    pub fn failed_start(&self, set: &str) {
        self.metrics
            .failed_starts
            .get_or_create(&SetLabels {
                runner_set: set.into(),
            })
            .inc();
    }

    /// Takes (and so invalidates) the Slurm JIT grant of `token`, if it is valid.
    pub fn take_grant(&self, token: &str) -> Option<Grant> {
        self.grants.take(token)
    }

    fn set_config(&self, set: &str) -> Option<(Scope, String, Vec<String>)> {
        let inner = self.inner();
        let s = inner.config.sets.get(set)?;
        Some((s.scope.clone(), s.group.clone(), s.labels.clone()))
    }

    async fn group_id(&self, scope: &Scope, group: &str) -> Result<u64, Error> {
        let key = (scope.clone(), group.to_ascii_lowercase());
        if let Some(id) = self.inner().groups.get(&key) {
            return Ok(*id);
        }
        let result = self.client()?.runner_group_id(scope, group).await;
        self.count("runner_groups", &result);
        let id = result?;
        self.inner().groups.insert(key, id);
        Ok(id)
    }

    async fn jit(&self, set: &str, name: &str) -> Result<Secret, Error> {
        let (scope, group, labels) = self
            .set_config(set)
            .ok_or_else(|| Error::NotScaled(set.to_owned()))?;
        let request = GithubJit {
            name: name.to_string(),
            runner_group_id: self.group_id(&scope, &group).await?,
            labels,
            work_folder: Some("_work".into()),
        };
        let result = self.client()?.generate_jitconfig(&scope, &request).await;
        self.count("jitconfig", &result);
        let labels = SetLabels {
            runner_set: set.into(),
        };
        match result {
            Ok(cfg) => {
                self.metrics.created.get_or_create(&labels).inc();
                self.inner().book.insert(
                    name.to_string(),
                    Tracked {
                        set: set.to_string(),
                        id: cfg.runner.id,
                        online: false,
                        busy: false,
                        orphan_since: None,
                    },
                );
                Ok(cfg.encoded)
            }
            Err(e) => {
                self.metrics.failed_starts.get_or_create(&labels).inc();
                Err(e.into())
            }
        }
    }

    async fn deregister_named(&self, set: &str, name: &str) -> Result<Removal, Error> {
        let Some((scope, _, _)) = self.set_config(set) else {
            return Ok(Removal::NotRegistered);
        };
        let Some(id) = self.inner().book.get(name).map(|t| t.id) else {
            return Ok(Removal::NotRegistered);
        };
        let result = self.client()?.delete_runner(&scope, id).await;
        self.count("delete_runner", &result);
        match result {
            Ok(gone) => {
                self.inner().book.remove(name);
                Ok(if gone {
                    Removal::Removed
                } else {
                    Removal::NotRegistered
                })
            }
            Err(GithubError::Status { status: 422, .. }) => {
                if let Some(t) = self.inner().book.get_mut(name) {
                    t.busy = true;
                }
                Ok(Removal::Busy)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// The queued jobs of `repos` (plus those of repository-scoped sets) that no runner set
/// of the fleet can serve, read once from GitHub (`drover drift`).
pub async fn unserved_jobs(repo: &FleetRepo, repos: &[String]) -> Result<Vec<UnservedJob>, Error> {
    let config = ScaleConfig::from_repo(repo);
    let repos = config.poll_repos(repos.iter());
    if repos.is_empty() {
        return Err(Error::NoRepositories);
    }
    let client = github::connect::client(repo, RetryPolicy::default())?;
    let queued: Vec<JobRequest> = client
        .queued_jobs(&repos)
        .await?
        .into_iter()
        .map(|j| JobRequest {
            id: j.id,
            repo: j.repo,
            enterprise: None,
            labels: j.labels,
        })
        .collect();
    Ok(unserved(&config.decide(&queued, &BTreeMap::new())))
}

fn unserved(scaling: &Scaling) -> Vec<UnservedJob> {
    scaling
        .unmatched
        .iter()
        .map(|(job, u)| UnservedJob {
            job_id: job.id,
            repo: job.repo.clone(),
            labels: job.labels.clone(),
            reason: super::matching::describe(&u.reason),
        })
        .collect()
}

/// The registry the site drivers see.
impl RunnerRegistry for Autoscaler {
    fn registered(&self, name: &str) -> Option<RegisteredRunner> {
        self.inner().book.get(name).map(|t| RegisteredRunner {
            id: t.id,
            online: t.online,
            busy: t.busy,
        })
    }

    fn jit_config<'a>(
        &'a self,
        set: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Secret, RegistryError>> {
        Box::pin(async move { Ok(self.jit(set, name).await?) })
    }

    fn deregister<'a>(
        &'a self,
        set: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Removal, RegistryError>> {
        Box::pin(async move { Ok(self.deregister_named(set, name).await?) })
    }

    fn slurm_grant(&self, request: &JitRequest) -> Result<JitGrant, RegistryError> {
        self.grants.issue(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_desired_before_github_was_read() {
        let a = Autoscaler::new(Settings::default(), AutoscaleMetrics::new());
        assert!(!a.warm());
        assert!(a.desired().is_empty());
    }
}
