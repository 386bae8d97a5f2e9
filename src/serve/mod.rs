//! `drover serve`: the long-running GitOps service.
//!
//! One loop owns reconciliation. Triggers (poll ticks, full-reconcile ticks, verified
//! `push` webhooks, authenticated manual requests) go into a queue of one, so triggers
//! that arrive during a reconcile coalesce into a single next run, and a site is never
//! reconciled twice at once. Each run fetches the source, validates a new revision (an
//! invalid one is refused: the last good revision stays applied), then reconciles every
//! site concurrently with its own deadline. A shutdown signal stops intake; an in-flight
//! run finishes before the loop exits.

pub(crate) mod autoscale;
pub mod client;
mod clock;
pub mod config;
pub mod drift;
pub(crate) mod http;
pub mod lease;
pub(crate) mod listener;
pub mod metrics;
pub(crate) mod page;
mod site_worker;
pub(crate) mod status;
pub mod webhook;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::Instrument;

use crate::credentials::Secret;
use crate::fleet::model::SitePolicy;
use crate::fleet::{self, FleetRepo, LoadOptions};
use crate::plan::{ApplyReport, SitePlan};
use crate::sites::RunOptions;

use self::metrics::{
    FindingLabels, Metrics, OutcomeLabels, RevisionLabels, RunnerLabels, SiteLabels,
};
use self::site_worker::SiteTrigger;
use self::status::{SiteStatus, Status};

/// A boxed future, for object-safe traits.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A fetched fleet: a revision id and a directory holding the tree at that revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Commit id, or a content digest for a local directory.
    pub revision: String,
    /// Directory to validate and load.
    pub dir: PathBuf,
}

/// Where the service reads the fleet from (a git remote, or a local directory).
pub trait FleetSource: Send + Sync {
    /// Fetches the newest revision. Errors are shown to people, so they never contain
    /// credentials.
    fn fetch(&self) -> BoxFuture<'_, Result<Snapshot, FetchError>>;
    /// A description for the status page (a URL without credentials, or a path).
    fn location(&self) -> String;
    /// A local directory to watch for changes (each burst of changes triggers a poll),
    /// for sources that have one.
    fn watch_dir(&self) -> Option<PathBuf> {
        None
    }
}

/// A fleet read from a local directory; the revision is a digest of its YAML files.
pub struct LocalDir(pub PathBuf);

/// Why the service could not read its fleet source. Never holds a credential.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The git remote.
    #[error(transparent)]
    Git(#[from] crate::source::SourceError),
    /// A file or directory of a local fleet.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The reading task died.
    #[error(transparent)]
    Task(#[from] tokio::task::JoinError),
}

impl FleetSource for LocalDir {
    fn fetch(&self) -> BoxFuture<'_, Result<Snapshot, FetchError>> {
        let dir = self.0.clone();
        Box::pin(async move {
            let digest = tokio::task::spawn_blocking({
                let dir = dir.clone();
                move || digest_dir(&dir)
            })
            .await??;
            Ok(Snapshot {
                revision: digest,
                dir,
            })
        })
    }

    fn location(&self) -> String {
        self.0.display().to_string()
    }

    fn watch_dir(&self) -> Option<PathBuf> {
        Some(self.0.clone())
    }
}

/// A stable digest of every file's path and content under `dir` (hidden entries skipped).
fn digest_dir(dir: &std::path::Path) -> Result<String, FetchError> {
    use sha2::{Digest, Sha256};
    let mut files = Vec::new();
    collect_files(dir, dir, &mut files).map_err(|source| FetchError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    files.sort();
    let mut hash = Sha256::new();
    for (rel, path) in files {
        hash.update(rel.as_bytes());
        // Only regular files are read: a FIFO or device would block the read forever. Others
        // count by name; validation then reports them (E109).
        if let Some(path) = path {
            let content = std::fs::read(&path).map_err(|source| FetchError::Read {
                path: path.clone(),
                source,
            })?;
            hash.update(content);
        }
    }
    Ok(format!("dir-{}", &hex::encode(hash.finalize())[..12]))
}

fn collect_files(
    root: &std::path::Path,
    dir: &std::path::Path,
    out: &mut Vec<(String, Option<PathBuf>)>,
) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            collect_files(root, &path, out)?;
        } else {
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .display()
                .to_string();
            let regular = std::fs::metadata(&path).is_ok_and(|m| m.is_file());
            out.push((rel, regular.then_some(path)));
        }
    }
    Ok(())
}

/// Service settings (from the config file, flags and environment; see `drover serve --help`).
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address of the HTTP listener (health, metrics, status, webhooks).
    pub listen: SocketAddr,
    /// How often the source is polled for new revisions.
    pub poll_interval: Duration,
    /// How often every site is checked for drift (and healed where its drift policy is
    /// `heal`) when there is no new revision.
    pub reconcile_interval: Duration,
    /// HMAC secret of GitHub webhooks; without it `/webhook` refuses every delivery.
    pub webhook_secret: Option<Secret>,
    /// Bearer token for `POST /reconcile`; without it the endpoint is disabled.
    pub trigger_token: Option<Secret>,
    /// Options for the site drivers.
    pub run_options: RunOptions,
    /// Leader election for several replicas; a single replica (`None`) always leads.
    pub lease: Option<lease::LeaseConfig>,
    /// One GitHub issue per drifting site, when set.
    pub drift_issues: Option<drift::DriftIssues>,
    /// Runner autoscaling from GitHub demand; off when `None`.
    pub autoscale: Option<crate::autoscale::Settings>,
}

/// Why a reconcile was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A poll tick: reconcile only if the source has a new revision.
    Poll,
    /// A full reconcile of every site (push webhook, manual request, startup).
    Full,
    /// The schedule: apply a new revision if there is one, else check every site for
    /// drift (see [`drift`]).
    Drift,
}

/// The running service's shared state.
pub struct Service {
    config: ServeConfig,
    source: Box<dyn FleetSource>,
    status: RwLock<Status>,
    /// Exported metrics.
    pub metrics: Metrics,
    deliveries: Mutex<webhook::Deliveries>,
    triggers: mpsc::Sender<Trigger>,
    good: Mutex<Option<(String, Arc<FleetRepo>)>>,
    last_fetched: Mutex<Option<String>>,
    /// A full reconcile was asked for: a poll that runs while this is set runs in full.
    full_pending: AtomicBool,
    /// A drift check was asked for (the schedule).
    drift_pending: AtomicBool,
    /// The GitHub client for drift issues, with the revision it was built from.
    issues_client: Mutex<Option<(String, Arc<crate::github::GithubClient>)>>,
    /// The `drover_runners` series set per site (to remove stale ones).
    runner_series: Mutex<HashMap<String, Vec<RunnerLabels>>>,
    /// The autoscaler, when autoscaling is on.
    pub autoscaler: Option<Arc<crate::autoscale::Autoscaler>>,
    /// One lock per site: a site is never reconciled by two tasks at once.
    site_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// What `/status` and the page pass through: the service's own secrets and every
    /// credential shape ([`crate::redact`]).
    redactor: crate::redact::Redactor,
}

impl Service {
    /// Creates the service and the receiving end of its trigger queue.
    pub fn new(
        config: ServeConfig,
        source: Box<dyn FleetSource>,
    ) -> (Arc<Self>, mpsc::Receiver<Trigger>) {
        let (triggers, rx) = mpsc::channel(1);
        let metrics = Metrics::new();
        let autoscaler = config
            .autoscale
            .clone()
            .map(|settings| crate::autoscale::Autoscaler::new(settings, metrics.autoscale.clone()));
        let status = Status {
            leader: config.lease.is_none(),
            source: status::SourceStatus {
                location: source.location(),
                ..Default::default()
            },
            drift_issues: config.drift_issues.as_ref().map(|d| drift::IssuesStatus {
                repo: d.repo.clone(),
                label: d.label().to_string(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut redactor = crate::redact::Redactor::new();
        for secret in [&config.webhook_secret, &config.trigger_token]
            .into_iter()
            .flatten()
        {
            redactor.know(secret.expose());
        }
        let service = Arc::new(Self {
            redactor,
            config,
            source,
            status: RwLock::new(status),
            metrics,
            deliveries: Mutex::new(webhook::Deliveries::new(
                webhook::DELIVERY_CAPACITY,
                webhook::DELIVERY_WINDOW,
            )),
            triggers,
            good: Mutex::new(None),
            last_fetched: Mutex::new(None),
            full_pending: AtomicBool::new(false),
            drift_pending: AtomicBool::new(false),
            issues_client: Mutex::new(None),
            runner_series: Mutex::new(HashMap::new()),
            autoscaler,
            site_locks: Mutex::new(HashMap::new()),
        });
        service
            .metrics
            .leader
            .set(i64::from(service.config.lease.is_none()));
        (service, rx)
    }

    /// The lock of one site: held by [`site_worker`] for each step on the site.
    fn site_lock(&self, site: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.site_locks
            .lock()
            .expect("site locks")
            .entry(site.to_string())
            .or_default()
            .clone()
    }

    /// The current status.
    pub fn status(&self) -> Status {
        let mut status = self.status.read().expect("status lock").clone();
        if let Some(a) = &self.autoscaler {
            let view = status.autoscale.get_or_insert_default();
            view.sets = a.rows();
            view.unserved = a.unserved();
        }
        status
    }

    /// Queues a reconcile; merged into the pending one if there is one (a full request
    /// is never lost to a pending poll or drift check: the merged run is full; a drift
    /// check is never lost to a pending poll).
    pub fn trigger(&self, trigger: Trigger) {
        match trigger {
            Trigger::Full => self.full_pending.store(true, Ordering::SeqCst),
            Trigger::Drift => self.drift_pending.store(true, Ordering::SeqCst),
            Trigger::Poll => {}
        }
        if self.triggers.try_send(trigger).is_err() {
            self.metrics.triggers_coalesced.inc();
        }
    }

    /// One reconcile run: fetch, validate if new, reconcile every site.
    pub async fn run_once(self: &Arc<Self>, trigger: Trigger) {
        let trigger = if self.full_pending.swap(false, Ordering::SeqCst) {
            Trigger::Full
        } else if self.drift_pending.swap(false, Ordering::SeqCst) {
            Trigger::Drift
        } else {
            trigger
        };
        let span = tracing::info_span!("reconcile", ?trigger);
        async {
            let new_revision = self.refresh().await;
            if trigger == Trigger::Poll && !new_revision {
                return;
            }
            let good = self.good.lock().expect("good lock").clone();
            match good {
                Some((revision, repo)) if trigger == Trigger::Drift && !new_revision => {
                    self.drift_round(revision, repo).await
                }
                Some((revision, repo)) => self.reconcile_sites(revision, repo).await,
                None => tracing::warn!("no valid fleet revision yet; nothing reconciled"),
            }
        }
        .instrument(span)
        .await
    }

    /// Fetches the source and validates a new revision; `true` when a new good revision
    /// was adopted.
    async fn refresh(&self) -> bool {
        let snapshot = match self.source.fetch().await {
            Ok(s) => s,
            Err(err) => {
                tracing::error!(error = %err, "fetching the fleet failed; keeping the last good revision");
                self.metrics.source_errors.inc();
                self.status.write().expect("status lock").source.fetch_error =
                    Some(err.to_string());
                return false;
            }
        };
        {
            let mut st = self.status.write().expect("status lock");
            st.source.fetch_error = None;
            st.source.last_fetch = Some(clock::now());
            st.source.fetched_revision = Some(snapshot.revision.clone());
        }
        let seen = {
            let mut last = self.last_fetched.lock().expect("fetched lock");
            let seen = last.as_deref() == Some(snapshot.revision.as_str());
            *last = Some(snapshot.revision.clone());
            seen
        };
        if seen {
            return false;
        }
        self.adopt(snapshot).await
    }

    async fn adopt(&self, snapshot: Snapshot) -> bool {
        let dir = snapshot.dir.clone();
        let validation =
            tokio::task::spawn_blocking(move || fleet::validate_dir(&dir, &LoadOptions::default()))
                .await;
        let errors: Vec<String> = match &validation {
            Ok(Ok(v)) if v.is_valid() => Vec::new(),
            Ok(Ok(v)) => v
                .diagnostics
                .iter()
                .filter(|d| d.is_error())
                .take(50)
                .map(|d| d.to_string())
                .collect(),
            Ok(Err(err)) => vec![err.to_string()],
            Err(err) => vec![err.to_string()],
        };
        if !errors.is_empty() {
            tracing::error!(revision = %snapshot.revision, errors = errors.len(), "fleet revision is invalid; keeping the last good revision");
            self.metrics.validation_failures.inc();
            self.status
                .write()
                .expect("status lock")
                .source
                .validation_errors = errors;
            return false;
        }
        let repo = validation.expect("checked").expect("checked").repo;
        tracing::info!(revision = %snapshot.revision, "adopted fleet revision");
        if let Some(a) = &self.autoscaler {
            let outcome = a.configure(&snapshot.revision, &repo);
            if let Err(e) = &outcome {
                tracing::error!(error = %e, "autoscaling cannot reach GitHub; runner counts stay at min");
            }
            self.status
                .write()
                .expect("status lock")
                .autoscale
                .get_or_insert_default()
                .error = outcome.err().map(|e| e.to_string());
        }
        *self.good.lock().expect("good lock") = Some((snapshot.revision.clone(), Arc::new(repo)));
        let mut st = self.status.write().expect("status lock");
        st.source.good_revision = Some(snapshot.revision);
        st.source.validation_errors.clear();
        true
    }

    /// Reconciles every site, each in its own task: a panicking driver cannot take the
    /// loop down, and sites never wait on each other.
    async fn reconcile_sites(self: &Arc<Self>, revision: String, repo: Arc<FleetRepo>) {
        let leader = self.status.read().expect("status lock").leader;
        let mut tasks = Vec::new();
        for name in repo.sites.keys().cloned() {
            let (service, repo, revision) = (self.clone(), repo.clone(), revision.clone());
            tasks.push(tokio::spawn(async move {
                service.apply_revision(revision, repo, name, leader).await;
            }));
        }
        for task in tasks {
            if let Err(err) = task.await {
                tracing::error!(error = %err, "a site reconcile task failed");
            }
        }
        self.status.write().expect("status lock").ready = true;
    }

    /// Reconciles site `name` with revision `revision` (applied on the leader, planned
    /// elsewhere) and records the outcome.
    async fn apply_revision(
        &self,
        revision: String,
        repo: Arc<FleetRepo>,
        name: String,
        leader: bool,
    ) {
        let done = self
            .reconcile_site(&repo, &name, SiteTrigger::Full { leader })
            .await;
        let outcome = outcome(&done.plan, done.report.as_ref());
        self.record(
            &revision,
            &name,
            &done.plan,
            done.report.as_ref(),
            outcome,
            done.took,
        );
    }

    fn record(
        &self,
        revision: &str,
        name: &str,
        plan: &SitePlan,
        report: Option<&ApplyReport>,
        outcome: &str,
        took: Duration,
    ) {
        let site = SiteLabels {
            site: name.to_string(),
        };
        self.metrics
            .reconcile_duration
            .get_or_create(&site)
            .observe(took.as_secs_f64());
        self.metrics
            .reconciles
            .get_or_create(&OutcomeLabels {
                site: name.into(),
                outcome: outcome.into(),
            })
            .inc();
        let counts = plan.counts();
        self.metrics
            .drifted_objects
            .get_or_create(&site)
            .set((counts.create + counts.update + counts.delete) as i64);
        for severity in ["warning", "error"] {
            let n = plan
                .findings
                .iter()
                .filter(|f| format!("{:?}", f.severity).eq_ignore_ascii_case(severity))
                .count();
            self.metrics
                .findings
                .get_or_create(&FindingLabels {
                    site: name.into(),
                    severity: severity.into(),
                })
                .set(n as i64);
        }
        let applied = plan.error.is_none() && outcome != "refused";
        let mut st = self.status.write().expect("status lock");
        let previous = st.sites.get(name).and_then(|s| s.revision.clone());
        let revision_now = if applied {
            Some(revision.to_string())
        } else {
            previous.clone()
        };
        if applied && previous.as_deref() != Some(revision) {
            if let Some(prev) = previous {
                self.metrics
                    .applied_revision
                    .get_or_create(&RevisionLabels {
                        site: name.into(),
                        revision: prev,
                    })
                    .set(0);
            }
            self.metrics
                .applied_revision
                .get_or_create(&RevisionLabels {
                    site: name.into(),
                    revision: revision.into(),
                })
                .set(1);
        }
        let site_status =
            SiteStatus::from_plan(plan, report, revision_now, outcome, took.as_millis() as u64);
        self.record_runners(name, plan, &site_status);
        st.sites.insert(name.to_string(), site_status);
    }

    /// Sets `drover_runners` for a site and removes the series it no longer has. A failed
    /// plan knows nothing about runners: the previous figures stay.
    fn record_runners(&self, name: &str, plan: &SitePlan, site: &SiteStatus) {
        if plan.error.is_some() {
            return;
        }
        let mut series = self.runner_series.lock().expect("runner series lock");
        let now: Vec<RunnerLabels> = site
            .runner_states
            .iter()
            .flat_map(|(set, states)| {
                states.keys().map(move |state| RunnerLabels {
                    site: name.into(),
                    runner_set: set.clone(),
                    state: state.clone(),
                })
            })
            .collect();
        for old in series.remove(name).unwrap_or_default() {
            if !now.contains(&old) {
                self.metrics.runners.remove(&old);
            }
        }
        for labels in &now {
            let n = site.runner_states[&labels.runner_set][&labels.state];
            self.metrics.runners.get_or_create(labels).set(n as i64);
        }
        series.insert(name.to_string(), now);
    }

    /// Records a webhook delivery; `false` when its id was seen before.
    pub fn first_delivery(&self, id: &str) -> bool {
        self.deliveries
            .lock()
            .expect("deliveries lock")
            .first_time(id)
    }

    /// [`Service::status`] as `/status` shows it: every string passed through the
    /// redaction layer.
    pub fn status_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self.status()).unwrap_or_default();
        redact_strings(&mut v, &self.redactor);
        v
    }

    /// The status page, passed through the redaction layer.
    pub fn page(&self) -> String {
        // The mask lands in HTML: escape it, or a browser would read it as a tag.
        self.redactor
            .text(&page::render(&self.status()))
            .replace(crate::redact::MASK, "&lt;redacted&gt;")
    }

    /// The service settings.
    pub fn config(&self) -> &ServeConfig {
        &self.config
    }
}

fn redact_strings(v: &mut serde_json::Value, redactor: &crate::redact::Redactor) {
    match v {
        serde_json::Value::String(s) => *s = redactor.text(s),
        serde_json::Value::Array(items) => {
            for item in items {
                redact_strings(item, redactor);
            }
        }
        serde_json::Value::Object(map) => {
            for item in map.values_mut() {
                redact_strings(item, redactor);
            }
        }
        _ => {}
    }
}

/// The run options for one site: with drift policy `heal` (the site's, else the fleet's),
/// applies take back fields another field manager changed out of band
/// (`force_conflicts`); with `report` such conflicts are reported and left alone.
fn outcome(plan: &SitePlan, report: Option<&ApplyReport>) -> &'static str {
    if plan.error.is_some() {
        return "failed";
    }
    if plan.policy == SitePolicy::ReportOnly {
        return "report_only";
    }
    match report {
        Some(r) if r.refused.is_some() => "refused",
        Some(r) if !r.failed.is_empty() => "failed",
        Some(r) if !r.applied.is_empty() => "changed",
        _ if plan.has_changes() => "changed",
        _ => "ok",
    }
}

/// Runs the service until `shutdown` resolves: the HTTP listener, the tickers and the
/// reconcile loop. An in-flight reconcile finishes before this returns.
pub async fn run(
    service: Arc<Service>,
    triggers: mpsc::Receiver<Trigger>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = listener::bind(service.config.listen)?;
    run_with_listener(service, triggers, listener, shutdown).await
}

/// [`run`] on an already bound listener (tests bind port 0 and read the address).
pub async fn run_with_listener(
    service: Arc<Service>,
    mut triggers: mpsc::Receiver<Trigger>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "listening");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = http::serve(listener, service.clone(), stop_rx.clone());
    let tickers = tickers(service.clone(), stop_rx.clone());
    let election = elect(service.clone(), stop_rx.clone());
    let watcher = watch_source(service.clone(), stop_rx.clone());
    let autoscaler = autoscale::run(service.clone(), stop_rx.clone());
    service.trigger(Trigger::Full);
    let mut stop = stop_rx.clone();
    let looped = service.clone();
    let reconcile_loop = async move {
        loop {
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                Some(trigger) = triggers.recv() => looped.run_once(trigger).await,
            }
        }
    };
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: finishing the in-flight reconcile");
        let _ = stop_tx.send(true);
    };
    let (served, ..) = tokio::join!(
        server,
        tickers,
        election,
        watcher,
        autoscaler,
        reconcile_loop,
        signal
    );
    served
}

/// For a local directory source: every burst of file changes triggers a poll (which
/// reconciles when the directory's digest changed). Polling keeps running as a fallback.
async fn watch_source(service: Arc<Service>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let Some(dir) = service.source.watch_dir() else {
        return;
    };
    let (_watcher, mut events) = match crate::source::watch(&dir, Duration::from_millis(200)) {
        Ok(w) => w,
        Err(err) => {
            tracing::warn!(error = %err, "cannot watch the fleet directory; polling only");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            event = events.recv() => match event {
                Some(event) => {
                    tracing::info!(paths = event.paths.len(), rescan = event.rescan, "fleet directory changed");
                    service.metrics.watch_events.inc();
                    service.trigger(Trigger::Poll);
                }
                None => break,
            },
        }
    }
}

/// Runs election rounds every third of the lease duration until stopped, then releases
/// the lease so a follower takes over at once. Without a lease this replica leads.
async fn elect(service: Arc<Service>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let Some(config) = service.config.lease.clone() else {
        return;
    };
    service.status.write().expect("status lock").leader = false;
    let client = match config.client().await {
        Ok(client) => client,
        Err(err) => {
            tracing::error!(error = %err, "no Kubernetes client for the lease; this replica will not apply");
            return;
        }
    };
    let period = config.duration / 3;
    let elector = lease::Elector::new(client, config);
    loop {
        let leader = match elector.round().await {
            Ok(role) => role == lease::Role::Leader,
            Err(err) => {
                tracing::warn!(error = %err, "lease round failed; acting as follower");
                false
            }
        };
        let was = std::mem::replace(
            &mut service.status.write().expect("status lock").leader,
            leader,
        );
        service.metrics.leader.set(i64::from(leader));
        if was != leader {
            tracing::info!(leader, "leadership changed");
        }
        tokio::select! {
            _ = stop.changed() => break,
            _ = tokio::time::sleep(period) => {}
        }
    }
    if let Err(err) = elector.release().await {
        tracing::warn!(error = %err, "releasing the lease failed; a follower takes over when it expires");
    }
}

async fn tickers(service: Arc<Service>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut poll = tokio::time::interval(service.config.poll_interval);
    let mut full = tokio::time::interval(service.config.reconcile_interval);
    poll.tick().await;
    full.tick().await;
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = poll.tick() => service.trigger(Trigger::Poll),
            _ = full.tick() => service.trigger(Trigger::Drift),
        }
    }
}

/// A git remote as the service's source: fetch the reference, snapshot its tree.
pub struct GitFleet(pub crate::source::GitSource);

impl FleetSource for GitFleet {
    fn fetch(&self) -> BoxFuture<'_, Result<Snapshot, FetchError>> {
        Box::pin(async move {
            let revision = self.0.fetch().await?;
            let snapshot = self.0.snapshot(&revision).await?;
            Ok(Snapshot {
                revision: revision.commit.clone(),
                dir: snapshot.path().to_path_buf(),
            })
        })
    }

    fn location(&self) -> String {
        format!("{} ({})", self.0.url_for_display(), self.0.reference())
    }
}
