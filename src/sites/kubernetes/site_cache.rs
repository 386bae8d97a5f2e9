//! What `drover serve` keeps per Kubernetes site between runs: the site's client, and a
//! watch of drover's runner Pods on it.
//!
//! The autoscaler applies runner changes many times a second under load. Building a client
//! per run (kubeconfig, TLS roots) and listing every runner Pod per run would make each
//! round cost what the site holds rather than what it changes, so:
//!
//! - **One client per site**, rebuilt when the site's connection settings change and at
//!   least every [`CLIENT_MAX_AGE`] (so that a rotated kubeconfig SecretRef is picked up).
//! - **A watch of the runner Pods** (kube-runtime's `watcher`: one list, then watch events,
//!   resumed from the last resourceVersion when the server ends a watch). Runners-only
//!   rounds read the Pods from memory once the watch has listed them ([`PodStore`]);
//!   full reconciles still list.
//! - **Expectations**, as in Kubernetes' own ReplicaSet controller: a Pod drover created
//!   counts from the moment the API server accepted it, and a Pod it deleted stops counting
//!   at once, even before the watch reports either; a relist (after a watch restart) does not
//!   undo them. Expectations expire after [`EXPECTATION_TTL`].
//! - **Failure**: any watch error ends the watch and the site's rounds list Pods themselves
//!   until a new watch (started by the next run, after a backoff of one second doubling up
//!   to a minute) has listed them again. A stale or missing watch is safe: deletes carry the
//!   observed uid and resourceVersion, and busy/idle state always comes from GitHub.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::watcher;

use super::client::{self, Error};
use super::kinds;
use super::runners::{self, RunnerPod};
use crate::sites::SiteContext;

/// The longest a site's client is used before it is built again.
pub(crate) const CLIENT_MAX_AGE: Duration = Duration::from_secs(300);

/// How long a create or delete drover made counts before the watch must have confirmed it.
pub(crate) const EXPECTATION_TTL: Duration = Duration::from_secs(300);

/// The watch's per-read timeout: above the watcher's server-side timeout (290 s), so that
/// a quiet watch is ended by the server, not by the client.
const WATCH_READ_TIMEOUT: Duration = Duration::from_secs(300);

/// Per-site clients and runner Pod watches, shared by the runs of one `drover serve`.
#[derive(Default)]
pub struct SiteCache {
    sites: Mutex<HashMap<String, Entry>>,
}

impl std::fmt::Debug for SiteCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sites: Vec<String> = self.sites().keys().cloned().collect();
        f.debug_struct("SiteCache").field("sites", &sites).finish()
    }
}

struct Entry {
    /// Fingerprint of the connection settings and the fleet (the watch's selector).
    key: u64,
    fleet: String,
    config: kube::Config,
    client: kube::Client,
    connected: Instant,
    store: Arc<Mutex<PodStore>>,
    watch: Watch,
}

/// The watch task of a site and when it was started.
struct Watch {
    task: tokio::task::JoinHandle<()>,
    started: Instant,
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.watch.task.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The fingerprint of what the site's client and watch depend on.
fn fingerprint(ctx: &SiteContext<'_>) -> u64 {
    let spec = &ctx.site.value.spec;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(&spec.kubernetes)
        .unwrap_or_default()
        .hash(&mut h);
    spec.timeout_seconds.hash(&mut h);
    ctx.options.kubeconfig.hash(&mut h);
    ctx.fleet_name().hash(&mut h);
    if let Some(secret) = spec
        .kubernetes
        .as_ref()
        .and_then(|k| k.kubeconfig_ref.as_ref())
        .and_then(|name| ctx.repo.secrets.get(name))
    {
        serde_json::to_string(&secret.value.spec)
            .unwrap_or_default()
            .hash(&mut h);
    }
    h.finish()
}

impl SiteCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    fn sites(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        lock(&self.sites)
    }

    /// The site's client: the kept one while the settings are unchanged and it is younger
    /// than [`CLIENT_MAX_AGE`]. Also (re)starts the site's runner Pod watch when there is
    /// none, or when the last one failed and its backoff has passed.
    pub async fn client(&self, ctx: &SiteContext<'_>) -> Result<kube::Client, Error> {
        let key = fingerprint(ctx);
        let site = ctx.name();
        if let Some(client) = self.kept(site, key) {
            return Ok(client);
        }
        let config = client::config(ctx).await?;
        let client = client::client_from(config.clone())?;
        let mut sites = self.sites();
        match sites.get_mut(site).filter(|e| e.key == key) {
            Some(entry) => {
                entry.config = config;
                entry.client = client.clone();
                entry.connected = Instant::now();
                restart_if_due(site, entry);
            }
            None => {
                let store = Arc::new(Mutex::new(PodStore::default()));
                let watch = start_watch(site, ctx.fleet_name(), &config, &store);
                sites.insert(
                    site.to_string(),
                    Entry {
                        key,
                        fleet: ctx.fleet_name().to_string(),
                        config,
                        client: client.clone(),
                        connected: Instant::now(),
                        store,
                        watch,
                    },
                );
            }
        }
        Ok(client)
    }

    /// The kept client, if it can be used (restarting a failed watch when due).
    fn kept(&self, site: &str, key: u64) -> Option<kube::Client> {
        let mut sites = self.sites();
        let entry = sites.get_mut(site)?;
        if entry.key != key || entry.connected.elapsed() >= CLIENT_MAX_AGE {
            return None;
        }
        restart_if_due(site, entry);
        Some(entry.client.clone())
    }

    /// The site's runner Pods from its watch, once the watch has listed them and while it
    /// runs; `None` otherwise (the caller lists).
    pub fn pods(&self, site: &str) -> Option<Vec<RunnerPod>> {
        let store = self.sites().get(site)?.store.clone();
        lock(&store).snapshot(Instant::now())
    }

    /// Records a Pod drover created (counted before the watch reports it).
    pub fn created(&self, site: &str, pod: RunnerPod) {
        if let Some(store) = self.store(site) {
            lock(&store).created(pod, Instant::now());
        }
    }

    /// Records a Pod drover deleted (no longer counted, whatever the watch says until it
    /// reports the deletion).
    pub fn deleted(&self, site: &str, namespace: &str, name: &str) {
        if let Some(store) = self.store(site) {
            lock(&store).deleted(&key_of(namespace, name), Instant::now());
        }
    }

    /// Stops the watches of sites not in `sites` (removed from the fleet).
    pub fn retain(&self, sites: &BTreeSet<String>) {
        self.sites().retain(|name, _| sites.contains(name));
    }

    fn store(&self, site: &str) -> Option<Arc<Mutex<PodStore>>> {
        self.sites().get(site).map(|e| e.store.clone())
    }
}

/// Restarts a failed watch once its backoff has passed.
fn restart_if_due(site: &str, entry: &mut Entry) {
    if !entry.watch.task.is_finished() {
        return;
    }
    let failures = lock(&entry.store).failures;
    if entry.watch.started.elapsed() < restart_backoff(failures) {
        return;
    }
    entry.watch = start_watch(site, &entry.fleet, &entry.config, &entry.store);
}

/// The wait before restarting a watch after `failures` failures in a row: 1 s, doubling,
/// at most a minute.
fn restart_backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.min(6)).min(Duration::from_secs(60))
}

fn start_watch(
    site: &str,
    fleet: &str,
    config: &kube::Config,
    store: &Arc<Mutex<PodStore>>,
) -> Watch {
    let mut config = config.clone();
    config.read_timeout = Some(WATCH_READ_TIMEOUT);
    lock(store).restarted();
    let task = match client::client_from(config) {
        Ok(client) => tokio::spawn(watch(
            client,
            site.to_string(),
            fleet.to_string(),
            store.clone(),
        )),
        Err(e) => {
            tracing::warn!(site, error = %e, "cannot watch runner Pods");
            lock(store).failed();
            tokio::spawn(async {})
        }
    };
    Watch {
        task,
        started: Instant::now(),
    }
}

/// Runs the watch until it fails.
async fn watch(client: kube::Client, site: String, fleet: String, store: Arc<Mutex<PodStore>>) {
    let api: Api<DynamicObject> = Api::all_with(client, &kinds::POD.api_resource());
    let config = watcher::Config::default().labels(&runners::runner_pod_selector(&fleet));
    let mut events = std::pin::pin!(watcher::watcher(api, config));
    while let Some(item) = events.next().await {
        match item {
            Ok(event) => lock(&store).apply(PodEvent::from(event), Instant::now()),
            Err(e) => {
                tracing::warn!(
                    site,
                    error = %e,
                    "watching runner Pods failed; rounds list them until the watch is restarted"
                );
                lock(&store).failed();
                return;
            }
        }
    }
}

/// A watch event, reduced to what the store needs.
#[derive(Debug, Clone)]
pub(crate) enum PodEvent {
    /// A (re)list begins.
    Init,
    /// A Pod of the list.
    InitApply(Option<RunnerPod>),
    /// The list is complete.
    InitDone,
    /// A Pod was added or changed.
    Apply(Option<RunnerPod>),
    /// A Pod was deleted (its key).
    Delete(String),
}

fn runner_pod(obj: &DynamicObject) -> Option<RunnerPod> {
    RunnerPod::from_value(&serde_json::to_value(obj).ok()?)
}

impl From<watcher::Event<DynamicObject>> for PodEvent {
    fn from(event: watcher::Event<DynamicObject>) -> Self {
        match event {
            watcher::Event::Init => PodEvent::Init,
            watcher::Event::InitApply(o) => PodEvent::InitApply(runner_pod(&o)),
            watcher::Event::InitDone => PodEvent::InitDone,
            watcher::Event::Apply(o) => PodEvent::Apply(runner_pod(&o)),
            watcher::Event::Delete(o) => PodEvent::Delete(key_of(
                o.metadata.namespace.as_deref().unwrap_or_default(),
                o.metadata.name.as_deref().unwrap_or_default(),
            )),
        }
    }
}

/// A Pod's key in the store: `namespace/name`.
pub(crate) fn key_of(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

fn key(pod: &RunnerPod) -> String {
    key_of(&pod.namespace, &pod.name)
}

/// The runner Pods of one site as the watch and drover's own writes describe them. Pure:
/// time is passed in.
#[derive(Debug, Default)]
pub(crate) struct PodStore {
    /// The watch has listed the Pods and has not failed since.
    synced: bool,
    pods: BTreeMap<String, RunnerPod>,
    /// The Pods of a list in progress.
    listing: Option<BTreeMap<String, RunnerPod>>,
    /// Pods drover created that the watch has not reported yet.
    expected_created: HashMap<String, (Instant, RunnerPod)>,
    /// Pods drover deleted that the watch has not reported gone yet.
    expected_deleted: HashMap<String, Instant>,
    /// Watch failures since the last complete list.
    failures: u32,
}

impl PodStore {
    /// The Pods, when the watch has listed them and not failed since.
    pub(crate) fn snapshot(&self, now: Instant) -> Option<Vec<RunnerPod>> {
        if !self.synced {
            return None;
        }
        let created = self
            .expected_created
            .iter()
            .filter(|(k, (at, _))| !self.pods.contains_key(*k) && live(*at, now))
            .map(|(_, (_, pod))| pod);
        let deleted = |k: &String| {
            self.expected_deleted
                .get(k)
                .is_some_and(|at| live(*at, now))
        };
        Some(
            self.pods
                .iter()
                .filter(|(k, _)| !deleted(k))
                .map(|(_, pod)| pod)
                .chain(created)
                .cloned()
                .collect(),
        )
    }

    /// Applies a watch event.
    pub(crate) fn apply(&mut self, event: PodEvent, now: Instant) {
        match event {
            PodEvent::Init => self.listing = Some(BTreeMap::new()),
            PodEvent::InitApply(pod) => {
                if let (Some(listing), Some(pod)) = (self.listing.as_mut(), pod) {
                    self.expected_created.remove(&key(&pod));
                    listing.insert(key(&pod), pod);
                }
            }
            PodEvent::InitDone => {
                self.pods = self.listing.take().unwrap_or_default();
                self.forget_expired(now);
                // A deletion the list no longer shows is confirmed.
                self.expected_deleted
                    .retain(|k, _| self.pods.contains_key(k));
                self.synced = true;
                self.failures = 0;
            }
            PodEvent::Apply(Some(pod)) => {
                let k = key(&pod);
                self.expected_created.remove(&k);
                let deleted = self
                    .expected_deleted
                    .get(&k)
                    .is_some_and(|at| live(*at, now));
                if !deleted {
                    self.pods.insert(k, pod);
                }
            }
            PodEvent::Apply(None) => {}
            PodEvent::Delete(k) => {
                self.pods.remove(&k);
                self.expected_created.remove(&k);
                self.expected_deleted.remove(&k);
            }
        }
    }

    /// Records a Pod drover created.
    pub(crate) fn created(&mut self, pod: RunnerPod, now: Instant) {
        self.forget_expired(now);
        let k = key(&pod);
        if !self.pods.contains_key(&k) {
            self.expected_created.insert(k, (now, pod));
        }
    }

    /// Records a Pod drover deleted. The expectation stays until the watch reports the
    /// deletion or a list no longer shows the Pod (or it expires).
    pub(crate) fn deleted(&mut self, key: &str, now: Instant) {
        self.forget_expired(now);
        self.expected_created.remove(key);
        self.pods.remove(key);
        self.expected_deleted.insert(key.to_string(), now);
    }

    /// Drops expectations older than [`EXPECTATION_TTL`].
    fn forget_expired(&mut self, now: Instant) {
        self.expected_created.retain(|_, (at, _)| live(*at, now));
        self.expected_deleted.retain(|_, at| live(*at, now));
    }

    /// The watch failed: its Pods are not used until a new watch has listed them.
    pub(crate) fn failed(&mut self) {
        self.synced = false;
        self.listing = None;
        self.failures = self.failures.saturating_add(1);
    }

    /// A new watch starts: not used until it has listed the Pods.
    pub(crate) fn restarted(&mut self) {
        self.synced = false;
        self.listing = None;
    }
}

fn live(at: Instant, now: Instant) -> bool {
    now.saturating_duration_since(at) < EXPECTATION_TTL
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sites::kubernetes::runners::Phase;

    fn pod(name: &str, rv: &str) -> RunnerPod {
        RunnerPod {
            name: name.into(),
            namespace: "runners".into(),
            site: Some("lab".into()),
            set: "small".into(),
            uid: format!("uid-{name}"),
            resource_version: rv.into(),
            phase: Phase::Pending,
            created: 0,
            terminating: false,
            detail: None,
        }
    }

    fn names(store: &PodStore, now: Instant) -> Option<Vec<String>> {
        store.snapshot(now).map(|pods| {
            let mut names: Vec<String> = pods.into_iter().map(|p| p.name).collect();
            names.sort();
            names
        })
    }

    fn listed(store: &mut PodStore, pods: &[RunnerPod], now: Instant) {
        store.apply(PodEvent::Init, now);
        for p in pods {
            store.apply(PodEvent::InitApply(Some(p.clone())), now);
        }
        store.apply(PodEvent::InitDone, now);
    }

    #[test]
    fn nothing_is_used_before_the_first_complete_list() {
        let now = Instant::now();
        let mut store = PodStore::default();
        assert_eq!(names(&store, now), None);
        store.apply(PodEvent::Init, now);
        store.apply(PodEvent::InitApply(Some(pod("a", "1"))), now);
        assert_eq!(names(&store, now), None, "a list in progress is not used");
        store.apply(PodEvent::InitDone, now);
        assert_eq!(names(&store, now), Some(vec!["a".into()]));
    }

    #[test]
    fn watch_events_add_change_and_remove_pods() {
        let now = Instant::now();
        let mut store = PodStore::default();
        listed(&mut store, &[pod("a", "1")], now);
        store.apply(PodEvent::Apply(Some(pod("b", "2"))), now);
        let mut running = pod("a", "3");
        running.phase = Phase::Running;
        store.apply(PodEvent::Apply(Some(running)), now);
        store.apply(PodEvent::Apply(None), now);
        let pods = store.snapshot(now).unwrap();
        assert_eq!(pods.len(), 2);
        assert!(
            pods.iter()
                .any(|p| p.name == "a" && p.phase == Phase::Running)
        );
        store.apply(PodEvent::Delete(key_of("runners", "b")), now);
        assert_eq!(names(&store, now), Some(vec!["a".into()]));
    }

    #[test]
    fn drovers_own_writes_count_before_the_watch_reports_them() {
        let now = Instant::now();
        let mut store = PodStore::default();
        listed(&mut store, &[pod("a", "1"), pod("b", "1")], now);
        store.created(pod("c", "5"), now);
        store.deleted(&key_of("runners", "a"), now);
        assert_eq!(names(&store, now), Some(vec!["b".into(), "c".into()]));
        // A late change of the deleted Pod (sent before its deletion) does not revive it.
        store.apply(PodEvent::Apply(Some(pod("a", "2"))), now);
        assert_eq!(names(&store, now), Some(vec!["b".into(), "c".into()]));
        // The watch catches up.
        store.apply(PodEvent::Apply(Some(pod("c", "5"))), now);
        store.apply(PodEvent::Delete(key_of("runners", "a")), now);
        assert_eq!(names(&store, now), Some(vec!["b".into(), "c".into()]));
        assert!(store.expected_created.is_empty() && store.expected_deleted.is_empty());
    }

    #[test]
    fn a_relist_taken_before_drovers_writes_does_not_undo_them() {
        let now = Instant::now();
        let mut store = PodStore::default();
        listed(&mut store, &[pod("a", "1")], now);
        store.apply(PodEvent::Init, now);
        store.apply(PodEvent::InitApply(Some(pod("a", "1"))), now);
        // drover creates c and deletes a while the list (taken before) is being read.
        store.created(pod("c", "5"), now);
        store.deleted(&key_of("runners", "a"), now);
        store.apply(PodEvent::InitDone, now);
        assert_eq!(names(&store, now), Some(vec!["c".into()]));
        // A list that no longer shows the deleted Pod confirms its deletion.
        listed(&mut store, &[pod("c", "5")], now);
        assert!(store.expected_deleted.is_empty() && store.expected_created.is_empty());
        assert_eq!(names(&store, now), Some(vec!["c".into()]));
    }

    #[test]
    fn expectations_expire() {
        let now = Instant::now();
        let later = now + EXPECTATION_TTL + Duration::from_secs(1);
        let mut store = PodStore::default();
        listed(&mut store, &[pod("a", "1")], now);
        store.created(pod("ghost", "9"), now);
        store.deleted(&key_of("runners", "a"), now);
        assert_eq!(names(&store, now), Some(vec!["ghost".into()]));
        // Never confirmed: after the TTL the watch's view wins again.
        assert_eq!(names(&store, later), Some(vec![]));
        listed(&mut store, &[pod("a", "1")], later);
        assert_eq!(names(&store, later), Some(vec!["a".into()]));
        assert!(store.expected_created.is_empty() && store.expected_deleted.is_empty());
    }

    #[test]
    fn a_failed_watch_is_not_used_until_a_new_one_has_listed() {
        let now = Instant::now();
        let mut store = PodStore::default();
        listed(&mut store, &[pod("a", "1")], now);
        store.failed();
        store.failed();
        assert_eq!(names(&store, now), None);
        assert_eq!(store.failures, 2);
        store.restarted();
        store.apply(PodEvent::Init, now);
        assert_eq!(names(&store, now), None);
        store.apply(PodEvent::InitDone, now);
        assert_eq!(names(&store, now), Some(vec![]));
        assert_eq!(store.failures, 0);
    }

    #[test]
    fn restarts_back_off_from_a_second_to_a_minute() {
        assert_eq!(restart_backoff(0), Duration::from_secs(1));
        assert_eq!(restart_backoff(3), Duration::from_secs(8));
        assert_eq!(restart_backoff(6), Duration::from_secs(60));
        assert_eq!(restart_backoff(40), Duration::from_secs(60));
    }
}
