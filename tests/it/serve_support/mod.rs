//! Helpers shared by the `drover serve` test binaries: starting the service in-process on
//! loopback, polling `/status` with generous bounds (never fixed sleeps as assertions),
//! and fleet documents for Kubernetes sites on the API emulator.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use drover::credentials::Secret;
use drover::serve::{self, FleetSource, ServeConfig, Service};
use drover::sites::RunOptions;
use serde_json::Value;

/// The webhook secret of test services.
pub const HOOK_SECRET: &str = "hook-secret";
/// The trigger token of test services.
pub const TRIGGER_TOKEN: &str = "trigger-token";

/// A service running in this process.
pub struct Running {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The service.
    pub service: Arc<Service>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    /// An HTTP client.
    pub http: reqwest::Client,
}

/// Settings for tests: loopback, hour-long intervals (tests trigger what they need),
/// webhook secret and trigger token set.
pub fn config(run_options: RunOptions) -> ServeConfig {
    ServeConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        poll_interval: Duration::from_secs(3600),
        reconcile_interval: Duration::from_secs(3600),
        webhook_secret: Some(Secret::new(HOOK_SECRET)),
        trigger_token: Some(Secret::new(TRIGGER_TOKEN)),
        run_options,
        autoscale: None,
        lease: None,
        drift_issues: None,
    }
}

/// Starts the service on an ephemeral loopback port.
pub async fn start(config: ServeConfig, source: Box<dyn FleetSource>) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    start_on(listener, config, source).await
}

/// Starts the service on a listener the test bound (to know the URL beforehand).
pub async fn start_on(
    listener: tokio::net::TcpListener,
    config: ServeConfig,
    source: Box<dyn FleetSource>,
) -> Running {
    drover::tls::install_crypto_provider();
    let (service, triggers) = Service::new(config, source);
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve::run_with_listener(
        service.clone(),
        triggers,
        listener,
        async move {
            let _ = stopped.await;
        },
    ));
    Running {
        base,
        service,
        stop: Some(stop),
        task: Some(task),
        http: reqwest::Client::new(),
    }
}

impl Running {
    /// GET a path: status code and body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// `/status` as JSON.
    pub async fn status(&self) -> Value {
        serde_json::from_str(&self.get("/status").await.1).unwrap()
    }

    /// `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.get("/metrics").await.1
    }

    /// Polls `/status` every 50 ms until `check` holds, for at most `limit`.
    pub async fn wait_for(
        &self,
        what: &str,
        limit: Duration,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let started = Instant::now();
        loop {
            let status = self.status().await;
            if check(&status) {
                return status;
            }
            assert!(
                started.elapsed() < limit,
                "timed out after {limit:?} waiting for {what}: {status:#}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends a webhook delivery; returns the HTTP status.
    pub async fn webhook(&self, event: &str, delivery: &str, body: &str, signature: &str) -> u16 {
        self.http
            .post(format!("{}/webhook", self.base))
            .header("x-github-event", event)
            .header("x-github-delivery", delivery)
            .header("x-hub-signature-256", signature)
            .body(body.to_string())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// Stops the service and waits for it (the in-flight reconcile finishes first).
    pub async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
    }
}

/// Waits (polling, bounded) until `check` holds.
pub async fn eventually(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A unique lowercase suffix for fleet names.
pub fn unique(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{tag}-{:x}{:x}{}",
        std::process::id() % 0xfff,
        nanos % 0xffff,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The Fleet and GitHub SecretRef documents of a fleet named `name`.
pub fn fleet_header(name: &str) -> String {
    format!(
        r#"apiVersion: drover.dev/v1alpha1
kind: Fleet
metadata: {{name: {name}}}
spec:
  github: {{tokenRef: gh}}
  reconcile: {{drift: heal}}
---
apiVersion: drover.dev/v1alpha1
kind: SecretRef
metadata: {{name: gh}}
spec: {{env: {{name: DROVER_TEST_UNUSED_GITHUB_TOKEN}}}}
"#
    )
}

/// The Slurm test bed as site `site` (the REST driver, as `$DROVER_SLURM_USER` at
/// `$DROVER_SLURM_REST_URL`, its token read from `jwt`) with scratch directory `scratch`, and
/// its `cpu` partition as pool `pool`: the `slurm-jwt` SecretRef, the Site and the NodePool.
pub fn slurm_rest_site(site: &str, pool: &str, jwt: &str, scratch: &str) -> String {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("{name} is not set: run `eval \"$(scripts/slurm-testbed.sh env)\"`")
        })
    };
    format!(
        r#"---
apiVersion: drover.dev/v1alpha1
kind: SecretRef
metadata: {{name: slurm-jwt}}
spec: {{file: {{path: "{jwt}"}}}}
---
apiVersion: drover.dev/v1alpha1
kind: Site
metadata: {{name: {site}}}
spec:
  slurm:
    rest: {{url: "{url}", user: {user}, tokenRef: slurm-jwt}}
    defaultPartition: cpu
    scratchDir: "{scratch}"
  timeoutSeconds: 20
---
apiVersion: drover.dev/v1alpha1
kind: NodePool
metadata: {{name: {pool}}}
spec: {{site: {site}, nodeCount: 1, slurm: {{partition: cpu}}}}
"#,
        url = var("DROVER_SLURM_REST_URL"),
        user = var("DROVER_SLURM_USER"),
    )
}

/// A Kubernetes site `site` (kubeconfig context `context`, namespace `namespace`) with a
/// pool `<site>-pool` and `sets` runner sets `<site>-set-<i>` whose image tag is `tag`.
pub fn kube_site(site: &str, context: &str, namespace: &str, sets: usize, tag: &str) -> String {
    let mut yaml = format!(
        r#"---
apiVersion: drover.dev/v1alpha1
kind: Site
metadata: {{name: {site}}}
spec:
  kubernetes: {{context: {context}, namespace: {namespace}}}
  timeoutSeconds: 10
---
apiVersion: drover.dev/v1alpha1
kind: NodePool
metadata: {{name: {site}-pool}}
spec:
  site: {site}
  nodeCount: 1
  kubernetes: {{nodeSelector: {{pool: cpu}}}}
"#
    );
    for i in 0..sets {
        yaml.push_str(&format!(
            r#"---
apiVersion: drover.dev/v1alpha1
kind: RunnerSet
metadata: {{name: {site}-set-{i}}}
spec:
  github: {{org: acme}}
  labels: [self-hosted, {site}-l{i}]
  pool: {site}-pool
  max: 4
  resources: {{cpu: "1", memory: 1Gi}}
  image: "ghcr.io/actions/actions-runner:{tag}"
"#
        ));
    }
    yaml
}
