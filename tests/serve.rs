//! `drover serve` end to end over HTTP on loopback: readiness after the first reconcile,
//! status and metrics, refusing an invalid revision while keeping the last good one,
//! HMAC-verified and de-duplicated webhooks, the authenticated manual trigger, and a clean
//! shutdown.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use drover::credentials::Secret;
use drover::serve::{self, LocalDir, ServeConfig, Service, webhook};
use drover::sites::RunOptions;
use serde_json::Value;

const FLEET: &str = "apiVersion: drover.dev/v1alpha1\nkind: Fleet\nmetadata:\n  name: serve-test\nspec:\n  github:\n    tokenRef: gh\n---\napiVersion: drover.dev/v1alpha1\nkind: SecretRef\nmetadata:\n  name: gh\nspec:\n  env: {name: GH_TOKEN}\n---\napiVersion: drover.dev/v1alpha1\nkind: SecretRef\nmetadata:\n  name: jwt\nspec:\n  file: {path: /nonexistent/jwt}\n---\napiVersion: drover.dev/v1alpha1\nkind: Site\nmetadata:\n  name: hpc\nspec:\n  slurm:\n    rest: {url: \"http://127.0.0.1:9\", user: ci, tokenRef: jwt}\n    defaultPartition: cpu\n  timeoutSeconds: 2\n";

struct Running {
    base: String,
    service: Arc<Service>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    http: reqwest::Client,
}

async fn start(dir: &Path) -> Running {
    drover::tls::install_crypto_provider();
    let config = ServeConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        poll_interval: Duration::from_secs(3600),
        reconcile_interval: Duration::from_secs(3600),
        webhook_secret: Some(Secret::new("hook-secret")),
        trigger_token: Some(Secret::new("trigger-token")),
        run_options: RunOptions::default(),
        lease: None,
    };
    let (service, triggers) = Service::new(config, Box::new(LocalDir(dir.to_path_buf())));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
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
        stop,
        task,
        http: reqwest::Client::new(),
    }
}

impl Running {
    async fn get(&self, path: &str) -> (u16, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn status(&self) -> Value {
        serde_json::from_str(&self.get("/status").await.1).unwrap()
    }

    /// Polls until `check` holds on /status (generous bound; no fixed sleeps).
    async fn wait_for(&self, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..200 {
            let status = self.status().await;
            if check(&status) {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting for {what}: {:#}", self.status().await);
    }

    async fn webhook(&self, event: &str, delivery: &str, body: &str, signature: &str) -> u16 {
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
}

fn write_fleet(dir: &Path, text: &str) {
    std::fs::write(dir.join("fleet.yaml"), text).unwrap();
}

#[tokio::test]
async fn ready_after_first_reconcile_with_status_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    write_fleet(dir.path(), FLEET);
    let svc = start(dir.path()).await;
    assert_eq!(svc.get("/healthz").await.0, 200);
    let status = svc
        .wait_for("the first reconcile", |s| s["ready"] == true)
        .await;
    assert_eq!(svc.get("/readyz").await.0, 200);
    let good = status["source"]["good_revision"].as_str().unwrap();
    assert!(good.starts_with("dir-"), "{status:#}");
    let site = &status["sites"]["hpc"];
    assert_eq!(site["kind"], "slurm");
    assert_eq!(site["outcome"], "failed", "{site:#}");
    assert!(site["error"].as_str().is_some());
    let (code, metrics) = svc.get("/metrics").await;
    assert_eq!(code, 200);
    assert!(
        metrics.contains("drover_reconciles_total{site=\"hpc\",outcome=\"failed\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("drover_reconcile_duration_seconds_count{site=\"hpc\"} 1"),
        "{metrics}"
    );
    let (code, page) = svc.get("/").await;
    assert_eq!(code, 200);
    assert!(
        page.contains("<b>hpc</b>") && page.contains("failed"),
        "{page}"
    );
    svc.stop.send(()).unwrap();
    svc.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn invalid_revision_is_refused_and_the_last_good_one_kept() {
    let dir = tempfile::tempdir().unwrap();
    write_fleet(dir.path(), FLEET);
    let svc = start(dir.path()).await;
    let first = svc
        .wait_for("the first reconcile", |s| s["ready"] == true)
        .await;
    let good = first["source"]["good_revision"].clone();

    write_fleet(dir.path(), &FLEET.replace("kind: Site", "kind: Sight"));
    let unauthorised = svc
        .http
        .post(format!("{}/reconcile", svc.base))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorised.status().as_u16(), 401);
    let queued = svc
        .http
        .post(format!("{}/reconcile", svc.base))
        .bearer_auth("trigger-token")
        .send()
        .await
        .unwrap();
    assert_eq!(queued.status().as_u16(), 202);
    let refused = svc
        .wait_for("the refusal", |s| {
            s["source"]["validation_errors"]
                .as_array()
                .is_some_and(|e| !e.is_empty())
        })
        .await;
    assert_eq!(
        refused["source"]["good_revision"], good,
        "the last good revision stays"
    );
    let errors = refused["source"]["validation_errors"].to_string();
    assert!(
        errors.contains("fleet.yaml:") && errors.contains("E202"),
        "{errors}"
    );
    assert!(
        svc.get("/metrics")
            .await
            .1
            .contains("drover_validation_failures_total 1")
    );
    assert!(svc.get("/").await.1.contains("failed validation"));

    write_fleet(
        dir.path(),
        &FLEET.replace("timeoutSeconds: 2", "timeoutSeconds: 3"),
    );
    svc.service.trigger(serve::Trigger::Full);
    let recovered = svc
        .wait_for("recovery", |s| {
            s["source"]["validation_errors"]
                .as_array()
                .is_some_and(|e| e.is_empty())
                && s["source"]["good_revision"] != good
        })
        .await;
    assert_ne!(recovered["source"]["good_revision"], good);
    svc.stop.send(()).unwrap();
    svc.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn webhooks_are_verified_and_deduplicated() {
    let dir = tempfile::tempdir().unwrap();
    write_fleet(dir.path(), FLEET);
    let svc = start(dir.path()).await;
    svc.wait_for("the first reconcile", |s| s["ready"] == true)
        .await;
    let body = r#"{"ref":"refs/heads/main"}"#;
    let forged = webhook::sign(b"not-the-secret", body.as_bytes());
    assert_eq!(svc.webhook("push", "d-1", body, &forged).await, 401);
    assert_eq!(svc.webhook("push", "d-1", body, "sha256=00").await, 401);
    let signed = webhook::sign(b"hook-secret", body.as_bytes());
    assert_eq!(svc.webhook("push", "d-2", body, &signed).await, 202);
    assert_eq!(
        svc.webhook("push", "d-2", body, &signed).await,
        200,
        "a redelivery is a duplicate"
    );
    assert_eq!(svc.webhook("ping", "d-3", body, &signed).await, 200);
    let oversized = "x".repeat(webhook::MAX_BODY_BYTES + 1);
    let sig = webhook::sign(b"hook-secret", oversized.as_bytes());
    assert_eq!(svc.webhook("push", "d-4", &oversized, &sig).await, 413);
    let metrics = svc.get("/metrics").await.1;
    assert!(
        metrics.contains(
            "drover_webhook_deliveries_total{event=\"push\",outcome=\"bad_signature\"} 2"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("drover_webhook_deliveries_total{event=\"push\",outcome=\"accepted\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("drover_webhook_deliveries_total{event=\"push\",outcome=\"duplicate\"} 1"),
        "{metrics}"
    );
    svc.stop.send(()).unwrap();
    svc.task.await.unwrap().unwrap();
}
