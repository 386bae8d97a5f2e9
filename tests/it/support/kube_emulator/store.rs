//! The object store: every object of every type, a global resourceVersion counter and a
//! bounded history of watch events; reads and bookkeeping. The write verbs are in
//! [`super::writes`].

use std::collections::{BTreeMap, VecDeque};
use std::hash::{BuildHasher, RandomState};

use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::body::render;
use super::resources::{self, ResourceType};
use super::selectors::{FieldSelector, LabelSelector};
use super::status::ApiError;

/// Where an object lives: type (group + plural), namespace ("" if cluster-scoped), name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjKey {
    pub group: String,
    pub plural: String,
    pub namespace: String,
    pub name: String,
}

impl ObjKey {
    /// The key of `name` in `namespace` for type `rt`.
    pub fn new(rt: &ResourceType, namespace: Option<&str>, name: &str) -> Self {
        Self {
            group: rt.group.clone(),
            plural: rt.plural.clone(),
            namespace: if rt.namespaced {
                namespace.unwrap_or_default().to_string()
            } else {
                String::new()
            },
            name: name.to_string(),
        }
    }
}

/// A watch event (`ADDED`, `MODIFIED`, `DELETED`) at resourceVersion `rv`.
#[derive(Debug, Clone)]
pub struct Event {
    pub rv: u64,
    pub group: String,
    pub plural: String,
    pub namespace: String,
    pub kind: &'static str,
    pub object: Value,
}

/// `fieldValidation` query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

/// Options shared by the write verbs.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    pub manager: String,
    pub dry_run: bool,
    pub validation: FieldValidation,
    pub force: bool,
}

/// Result of a successful write.
#[derive(Debug, Clone)]
pub struct Written {
    /// The object as stored (or as it would be, for a dry run).
    pub object: Value,
    /// Whether the write created the object (HTTP 201).
    pub created: bool,
    /// `Warning` headers to send (unknown fields under `fieldValidation=Warn`).
    pub warnings: Vec<String>,
}

/// All state of one emulated cluster.
pub struct Store {
    rv: u64,
    pub(super) objects: BTreeMap<ObjKey, Value>,
    history: VecDeque<Event>,
    history_limit: usize,
    compacted_rv: u64,
    events: broadcast::Sender<Event>,
    next_ip: u32,
    ids: u64,
    random: RandomState,
}

/// RFC 3339 "now" with second precision, as Kubernetes renders `metav1.Time`.
pub fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

impl Store {
    /// An empty cluster holding the namespaces every cluster has.
    pub fn new(history_limit: usize) -> Self {
        let (events, _) = broadcast::channel(4096);
        let mut store = Self {
            rv: 0,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            compacted_rv: 0,
            events,
            next_ip: 1,
            ids: 0,
            random: RandomState::new(),
        };
        let ns_type = store
            .type_of("v1", "Namespace")
            .expect("Namespace is built in");
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            store
                .create(
                    &ns_type,
                    None,
                    body,
                    &WriteOptions::internal("kube-apiserver"),
                )
                .expect("seed namespace");
        }
        store
    }

    /// The current (latest) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// Subscribes to future events.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Forgets the event history, as etcd compaction does: watches from any older
    /// resourceVersion get 410 Expired.
    pub fn compact(&mut self) {
        self.history.clear();
        self.compacted_rv = self.rv;
    }

    // ----- resource types -------------------------------------------------------------

    /// Every servable type: built-ins plus the served versions of stored CRDs.
    pub fn all_types(&self) -> Vec<ResourceType> {
        let mut types = resources::builtin_types();
        for (key, crd) in &self.objects {
            if key.group == "apiextensions.k8s.io" && key.plural == "customresourcedefinitions" {
                types.extend(resources::crd_types(crd));
            }
        }
        types
    }

    /// The type served at `group/version/plural`, if any.
    pub fn type_at(&self, group: &str, version: &str, plural: &str) -> Option<ResourceType> {
        self.all_types()
            .into_iter()
            .find(|t| t.group == group && t.version == version && t.plural == plural)
    }

    /// The type of objects with this apiVersion and kind, if served.
    pub fn type_of(&self, api_version: &str, kind: &str) -> Option<ResourceType> {
        let (group, version) = resources::split_api_version(api_version);
        self.all_types()
            .into_iter()
            .find(|t| t.group == group && t.version == version && t.kind == kind)
    }

    // ----- reads ----------------------------------------------------------------------

    /// One object, rendered at `rt`'s apiVersion.
    pub fn get(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        self.objects
            .get(&ObjKey::new(rt, namespace, name))
            .map(|o| render(rt, o))
            .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))
    }

    /// Objects of type `rt` (in `namespace`, or everywhere) matching the selectors, sorted.
    pub fn list(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|(k, _)| k.group == rt.group && k.plural == rt.plural)
            .filter(|(k, _)| namespace.is_none_or(|ns| k.namespace == ns))
            .filter(|(_, o)| labels.matches(&o["metadata"]["labels"]) && fields.matches(o))
            .map(|(_, o)| render(rt, o))
            .collect()
    }

    /// Events after `from` for type `rt` (in `namespace`), plus a receiver for later ones.
    /// `from == None` (or 0) replays the current objects as ADDED, like a real server.
    pub fn watch_from(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        from: Option<u64>,
    ) -> Result<(Vec<Event>, broadcast::Receiver<Event>), ApiError> {
        let receiver = self.events.subscribe();
        let in_scope = |e: &Event| {
            e.group == rt.group
                && e.plural == rt.plural
                && namespace.is_none_or(|ns| e.namespace == ns)
        };
        let backlog = match from {
            None | Some(0) => self
                .objects
                .iter()
                .filter(|(k, _)| k.group == rt.group && k.plural == rt.plural)
                .filter(|(k, _)| namespace.is_none_or(|ns| k.namespace == ns))
                .map(|(k, o)| Event {
                    rv: self.rv,
                    group: k.group.clone(),
                    plural: k.plural.clone(),
                    namespace: k.namespace.clone(),
                    kind: "ADDED",
                    object: o.clone(),
                })
                .collect(),
            Some(rv) if rv < self.compacted_rv => {
                return Err(ApiError::expired(format!(
                    "too old resource version: {rv} ({})",
                    self.compacted_rv + 1
                )));
            }
            Some(rv) => self
                .history
                .iter()
                .filter(|e| e.rv > rv && in_scope(e))
                .cloned()
                .collect(),
        };
        Ok((backlog, receiver))
    }

    // ----- bookkeeping shared with the write verbs (see `writes`) ----------------------

    /// Bumps the resourceVersion, stores `obj` and records/broadcasts the event.
    pub(super) fn commit(&mut self, key: ObjKey, mut obj: Value, kind: &'static str) -> Value {
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.objects.insert(key.clone(), obj.clone());
        self.record(key, kind, obj.clone());
        obj
    }

    pub(super) fn remove(&mut self, key: ObjKey) -> Value {
        let mut obj = self.objects.remove(&key).unwrap_or(Value::Null);
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.record(key, "DELETED", obj.clone());
        obj
    }

    pub(super) fn record(&mut self, key: ObjKey, kind: &'static str, object: Value) {
        let event = Event {
            rv: self.rv,
            group: key.group,
            plural: key.plural,
            namespace: key.namespace,
            kind,
            object,
        };
        self.history.push_back(event.clone());
        while self.history.len() > self.history_limit {
            if let Some(old) = self.history.pop_front() {
                self.compacted_rv = old.rv;
            }
        }
        let _ = self.events.send(event);
    }

    pub(super) fn uid(&mut self) -> String {
        self.ids += 1;
        let a = self.random.hash_one(self.ids);
        let b = self.random.hash_one(a);
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            b >> 52,
            b & 0xffff_ffff_ffff
        )
    }

    pub(super) fn random_suffix(&mut self) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        self.ids += 1;
        let mut n = self.random.hash_one(self.ids);
        (0..5)
            .map(|_| {
                let c = ALPHABET[(n % ALPHABET.len() as u64) as usize] as char;
                n /= ALPHABET.len() as u64;
                c
            })
            .collect()
    }

    pub(super) fn cluster_ip(&mut self) -> String {
        let n = self.next_ip;
        self.next_ip += 1;
        format!("10.96.{}.{}", n / 250, n % 250 + 1)
    }

    /// Raw access for the test handle.
    pub fn raw_mut(&mut self, key: &ObjKey) -> Option<&mut Value> {
        self.objects.get_mut(key)
    }

    /// Re-commits a raw object after the test handle changed it (bumps rv, emits MODIFIED).
    pub fn touch(&mut self, key: ObjKey) -> Option<Value> {
        let obj = self.objects.get(&key)?.clone();
        Some(self.commit(key, obj, "MODIFIED"))
    }
}

impl WriteOptions {
    /// Options for writes the emulator makes itself or on a test's behalf.
    pub fn internal(manager: &str) -> Self {
        Self {
            manager: manager.to_string(),
            dry_run: false,
            validation: FieldValidation::Strict,
            force: false,
        }
    }
}
