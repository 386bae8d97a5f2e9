//! A strict, stateful Kubernetes API emulator for integration tests.
//!
//! [`KubeEmulator::start`] serves the Kubernetes REST API over plain HTTP on loopback. A
//! client reaches it through an ordinary kubeconfig ([`KubeEmulator::kubeconfig_yaml`]), so
//! production code cannot tell it from a real API server. It keeps state (objects, a global
//! resourceVersion, watch history, field ownership), refuses what a real server refuses
//! (with `metav1.Status` bodies and the right HTTP codes), applies server-side defaults,
//! and lets tests inject faults and inspect requests.
//!
//! ```ignore
//! let emu = KubeEmulator::start().await;
//! let client = emu.client().await; // kube::Client built from the kubeconfig
//! emu.faults().only(RequestFilter::any().method("PATCH")).fail_next(1, FaultKind::Status500);
//! emu.put_object_as("kubectl-edit", json!({...})).unwrap(); // out-of-band edit
//! assert_eq!(emu.write_count(), 0);
//! ```
//!
//! Module map: [`http`] (server, auth, faults, routing), [`discovery`], [`verbs`] (REST
//! verbs and watch), [`store`] (objects, resourceVersion, events) and `writes` (write
//! semantics), [`upstream`] (custom-resource groups forwarded to a real API server), [`ssa`] and [`fields`] (managedFields and server-side apply), [`defaults`],
//! [`validation`], [`selectors`], [`faults`] (fault injection and request log), [`status`].
//!
//! # Known deviations from a real API server
//!
//! - Only the kinds in [`resources::builtin_types`] (all `v1`) plus CRD kinds are served;
//!   no conversion between CRD versions (every version serves the stored object).
//! - Strategic merge patch and JSON patch answer 415 (a real server supports them for
//!   built-in kinds); merge patch and apply are supported.
//! - Field ownership: maps recurse, lists are atomic except list-maps keyed by `name`
//!   (containers, initContainers, ephemeralContainers, env, volumes, imagePullSecrets),
//!   `mountPath` (volumeMounts) and `containerPort`/`port` + `protocol` (ports). Maps do not
//!   get `.` entries in `fieldsV1`. Defaulted fields are owned by nobody. Apply to the
//!   `status` subresource merges without ownership tracking.
//! - Deletion is immediate (no finalizers, no graceful deletion, no Terminating phase);
//!   deleting a Namespace or CRD removes its contents at once. Garbage collection of
//!   dependents (`ownerReferences`) is synchronous, after every delete and create, where a
//!   real cluster's collector works in the background ([`admission`]).
//! - Admission: Pods are checked for their ServiceAccount (only when named), PriorityClass
//!   and ResourceQuota (pods, cpu, memory, extended resources); see [`admission`]. Pod spec updates are not
//!   refused (a real server allows only a few fields to change).
//! - No controllers: no `default` ServiceAccount or `kube-root-ca.crt` per namespace, no
//!   ReplicaSets/Pods from workloads; status changes only through the status subresource
//!   or [`KubeEmulator::set_status`]. CRDs are Established immediately.
//! - Watch: an expired resourceVersion gets an `ERROR` event carrying a 410 Expired
//!   Status inside a 200 stream (as real servers do for watches); no bookmarks; a MODIFIED
//!   object that stops matching a label selector is not turned into DELETED;
//!   [`KubeEmulator::end_watches`] ends every open watch, as an API server restart does.
//!   List ignores `resourceVersion`/`resourceVersionMatch` and `limit` (a real server may
//!   also answer in one page) and always serves the latest state.
//! - Without `fieldManager`, writes are attributed to the User-Agent prefix or `unknown`.
//! - `fieldValidation` defaults to Warn (unknown fields pruned, `Warning` header). Unknown
//!   fields of built-in kinds are found by a k8s-openapi round trip; for custom resources
//!   the CRD's `openAPIV3Schema` `properties` are checked (no schema or
//!   `x-kubernetes-preserve-unknown-fields` accepts anything). Custom resources are also
//!   validated against the schema (types, int-or-string, enums, required, `minimum`,
//!   `maxLength`; not `pattern`, `format`, CEL rules or the other bounds) and defaulted from
//!   its `default`s. Only `served` versions are served (404 otherwise, discovery
//!   included). With an [`upstream::Upstream`], CRD groups go to a real server instead.
//! - Validation covers names (DNS-1123), labels, Pod containers, workload selector vs
//!   template labels and selector immutability, and CRD naming; not the full rule set.
//! - PodTemplate (v1) and PriorityClass (scheduling.k8s.io/v1) were added for the
//!   Kubernetes driver; PodTemplate's `template.spec` gets the Pod spec defaults.
//! - Defaults cover the fields listed in [`defaults`]; admission plugins (e.g. service
//!   account or toleration injection) are not emulated.

pub mod admission;
mod body;
pub mod defaults;
pub mod discovery;
pub mod faults;
pub mod fields;
pub mod http;
pub mod resources;
pub mod selectors;
pub mod ssa;
pub mod status;
pub mod store;
pub mod upstream;
pub mod validation;
pub mod verbs;
mod writes;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::sync::watch;

pub use faults::{FaultKind, Faults, RequestFilter, RequestRecord};
pub use status::ApiError;

use http::Shared;
use store::{ObjKey, Store, WriteOptions};

/// Settings of an emulator instance.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// `gitVersion` reported by `/version`.
    pub git_version: String,
    /// How many watch events are kept; watches from older resourceVersions get 410.
    pub event_history: usize,
    /// The bearer token clients must send.
    pub token: String,
    /// A real API server for the custom-resource groups (see [`upstream`]); `None` serves
    /// CRDs and custom resources from the emulator itself.
    pub upstream: Option<upstream::Upstream>,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            git_version: "v1.31.2".to_string(),
            event_history: 1000,
            token: "kube-emulator-token".to_string(),
            upstream: None,
        }
    }
}

/// A running emulator; stops serving when dropped.
pub struct KubeEmulator {
    shared: Arc<Shared>,
    address: SocketAddr,
    shutdown: watch::Sender<bool>,
}

impl KubeEmulator {
    /// Starts an emulator with default settings on 127.0.0.1 and an ephemeral port.
    pub async fn start() -> Self {
        Self::start_with(EmulatorConfig::default()).await
    }

    /// Starts an emulator with `config`.
    pub async fn start_with(config: EmulatorConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let address = listener.local_addr().expect("local address");
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new(config.event_history)),
            faults: Faults::default(),
            log: faults::RequestLog::default(),
            git_version: config.git_version,
            token: config.token,
            address: address.to_string(),
            end_watches: watch::channel(0).0,
            upstream: config.upstream.map(upstream::Forwarder::new),
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        tokio::spawn(http::serve(listener, shared.clone(), shutdown_rx));
        Self {
            shared,
            address,
            shutdown,
        }
    }

    /// Base URL, e.g. `http://127.0.0.1:38001`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// A kubeconfig whose current context `context_name` points at this emulator with a
    /// token user and namespace `default`.
    pub fn kubeconfig_yaml(&self, context_name: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: kube-emulator\n  cluster:\n    server: {url}\n\
             contexts:\n- name: {context_name}\n  context:\n    cluster: kube-emulator\n    user: kube-emulator-user\n    namespace: default\n\
             current-context: {context_name}\nusers:\n- name: kube-emulator-user\n  user:\n    token: {token}\npreferences: {{}}\n",
            url = self.url(),
            token = self.shared.token,
        )
    }

    /// Writes [`Self::kubeconfig_yaml`] (context `kube-emulator`) to `path`.
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig_yaml("kube-emulator"))
    }

    /// A `kube::Config` built the normal way, from the kubeconfig.
    ///
    /// kube builds a rustls client config even for `http://` servers, and this crate's
    /// dependency graph enables both rustls providers (kube's `ring`, reqwest's `aws-lc-rs`),
    /// so rustls cannot choose one on its own: install `ring` as the process default first.
    pub async fn client_config(&self) -> kube::Config {
        install_crypto_provider();
        let context = "kube-emulator";
        let kubeconfig = kube::config::Kubeconfig::from_yaml(&self.kubeconfig_yaml(context))
            .expect("valid kubeconfig");
        let options = kube::config::KubeConfigOptions {
            context: Some(context.to_string()),
            ..Default::default()
        };
        kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .expect("config from kubeconfig")
    }

    /// A `kube::Client` built from the kubeconfig (kube's default retry of 429/503/504 on).
    pub async fn client(&self) -> kube::Client {
        kube::Client::try_from(self.client_config().await).expect("client from config")
    }

    /// Fault injection controls.
    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// Every request served so far (including faulted ones), oldest first.
    pub fn request_log(&self) -> Vec<RequestRecord> {
        self.shared.log.snapshot()
    }

    /// Forgets the request log.
    pub fn clear_request_log(&self) {
        self.shared.log.clear()
    }

    /// Number of logged POST/PUT/PATCH/DELETE requests (dry runs included).
    pub fn write_count(&self) -> usize {
        self.request_log().iter().filter(|r| r.is_write()).count()
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.store().resource_version()
    }

    /// Ends every open watch (the response ends, as when an API server restarts); clients
    /// watch again from their last resourceVersion.
    pub fn end_watches(&self) {
        self.shared.end_watches.send_modify(|g| *g += 1);
    }

    /// Drops the watch history (like etcd compaction): older watches get 410 Expired.
    pub fn compact_history(&self) {
        self.store().compact()
    }

    /// A stored object, or `None`. `namespace` is ignored for cluster-scoped kinds.
    pub fn get_object(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let store = self.store();
        let rt = store.type_of(api_version, kind)?;
        store.get(&rt, namespace, name).ok()
    }

    /// Every stored object of a kind (in `namespace`, or all namespaces).
    pub fn list_objects(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
    ) -> Vec<Value> {
        let store = self.store();
        let Some(rt) = store.type_of(api_version, kind) else {
            return Vec::new();
        };
        store.list(&rt, namespace, &Default::default(), &Default::default())
    }

    /// Writes `obj` as field manager `manager` with an Update (creating it if absent), as
    /// another controller or a human editing out of band would.
    pub fn put_object_as(&self, manager: &str, obj: Value) -> Result<Value, ApiError> {
        let mut store = self.store();
        let rt = type_of_object(&store, &obj)?;
        store.put_as(&rt, manager, obj)
    }

    /// Server-side applies `obj` as `manager` (optionally forcing), as another applier would.
    pub fn apply_object_as(
        &self,
        manager: &str,
        obj: Value,
        force: bool,
    ) -> Result<Value, ApiError> {
        let mut store = self.store();
        let rt = type_of_object(&store, &obj)?;
        let namespace = obj["metadata"]["namespace"].as_str().map(str::to_string);
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let opts = WriteOptions {
            force,
            ..WriteOptions::internal(manager)
        };
        Ok(store
            .apply(&rt, namespace.as_deref(), &name, obj, &opts)?
            .object)
    }

    /// Deletes an object directly.
    pub fn delete_object(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        let mut store = self.store();
        let rt = store
            .type_of(api_version, kind)
            .ok_or_else(ApiError::no_such_resource)?;
        store.delete(&rt, namespace, name, &Value::Null, false)
    }

    /// Merges `status` into the object's status without going through the API (as a
    /// controller would, e.g. `{"numberReady": 3}` on a DaemonSet); bumps resourceVersion.
    pub fn set_status(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        status: Value,
    ) -> Result<Value, ApiError> {
        let mut store = self.store();
        let rt = store
            .type_of(api_version, kind)
            .ok_or_else(ApiError::no_such_resource)?;
        store.write_status(
            &rt,
            namespace,
            name,
            &json!({"status": status}),
            true,
            false,
        )
    }

    /// Runs the garbage collector now (it also runs after every delete and create).
    pub fn collect_garbage(&self) -> usize {
        self.store().collect_garbage()
    }

    /// Creates a Ready Node (as the kubelet would) and returns it.
    pub fn add_node(&self, node: NodeBuilder) -> Value {
        let name = node.name.clone();
        let status = node.status();
        self.put_object_as("kubelet", node.object())
            .expect("node is valid");
        self.set_status("v1", "Node", None, &name, status)
            .expect("node exists")
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.shared.store.lock().unwrap()
    }

    /// Direct mutable access to a stored object; `edit` returns whether it changed anything
    /// (then the resourceVersion is bumped and a MODIFIED event sent).
    pub fn edit_object(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        edit: impl FnOnce(&mut Value) -> bool,
    ) -> Option<Value> {
        let mut store = self.store();
        let rt = store.type_of(api_version, kind)?;
        let key = ObjKey::new(&rt, namespace, name);
        if edit(store.raw_mut(&key)?) {
            store.touch(key)
        } else {
            store.get(&rt, namespace, name).ok()
        }
    }
}

impl Drop for KubeEmulator {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// Installs rustls' `ring` provider as the process default (idempotent). Needed before
/// building any kube client in this crate; see [`KubeEmulator::client_config`].
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn type_of_object(store: &Store, obj: &Value) -> Result<resources::ResourceType, ApiError> {
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let kind = obj["kind"].as_str().unwrap_or_default();
    store
        .type_of(api_version, kind)
        .ok_or_else(ApiError::no_such_resource)
}

/// Describes a Node for [`KubeEmulator::add_node`].
#[derive(Debug, Clone)]
pub struct NodeBuilder {
    name: String,
    labels: BTreeMap<String, String>,
    taints: Vec<Value>,
    allocatable: BTreeMap<String, String>,
    ready: bool,
}

impl NodeBuilder {
    /// A Ready linux/amd64 node with 8 CPUs, 32Gi memory and 110 pods.
    pub fn new(name: &str) -> Self {
        let labels = [
            ("kubernetes.io/hostname", name),
            ("kubernetes.io/os", "linux"),
            ("kubernetes.io/arch", "amd64"),
        ];
        let allocatable = [("cpu", "8"), ("memory", "32Gi"), ("pods", "110")];
        Self {
            name: name.to_string(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            taints: Vec::new(),
            allocatable: allocatable
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ready: true,
        }
    }

    /// Adds a label.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_string(), value.to_string());
        self
    }

    /// Adds a taint (`effect`: NoSchedule, PreferNoSchedule or NoExecute).
    pub fn taint(mut self, key: &str, value: &str, effect: &str) -> Self {
        self.taints
            .push(json!({"key": key, "value": value, "effect": effect}));
        self
    }

    /// Sets an allocatable (and capacity) quantity, e.g. `("amd.com/gpu", "8")`.
    pub fn allocatable(mut self, resource: &str, quantity: &str) -> Self {
        self.allocatable
            .insert(resource.to_string(), quantity.to_string());
        self
    }

    /// Marks the node NotReady.
    pub fn not_ready(mut self) -> Self {
        self.ready = false;
        self
    }

    fn object(&self) -> Value {
        let mut node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.name, "labels": self.labels}, "spec": {}});
        if !self.taints.is_empty() {
            node["spec"]["taints"] = json!(self.taints);
        }
        node
    }

    fn status(&self) -> Value {
        json!({
            "capacity": self.allocatable,
            "allocatable": self.allocatable,
            "conditions": [{"type": "Ready", "status": if self.ready { "True" } else { "False" }, "reason": "KubeletReady"}],
            "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux", "kubeletVersion": "v1.31.2"},
        })
    }
}
