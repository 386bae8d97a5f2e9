//! `drover serve` end to end over HTTP on loopback: readiness after the first reconcile,
//! status and metrics, refusing an invalid revision while keeping the last good one,
//! HMAC-verified and de-duplicated webhooks, the authenticated manual trigger, and a clean
//! shutdown.

use std::path::Path;
use std::time::Duration;

use crate::serve_support::{HOOK_SECRET, Running, TRIGGER_TOKEN};
use drover::serve::{self, LocalDir, webhook};
use drover::sites::RunOptions;

const FLEET: &str = "apiVersion: drover.dev/v1alpha1\nkind: Fleet\nmetadata:\n  name: serve-test\nspec:\n  github:\n    tokenRef: gh\n---\napiVersion: drover.dev/v1alpha1\nkind: SecretRef\nmetadata:\n  name: gh\nspec:\n  env: {name: GH_TOKEN}\n---\napiVersion: drover.dev/v1alpha1\nkind: SecretRef\nmetadata:\n  name: jwt\nspec:\n  file: {path: /nonexistent/jwt}\n---\napiVersion: drover.dev/v1alpha1\nkind: Site\nmetadata:\n  name: hpc\nspec:\n  slurm:\n    rest: {url: \"http://127.0.0.1:9\", user: ci, tokenRef: jwt}\n    defaultPartition: cpu\n  timeoutSeconds: 2\n";

/// How long a test waits for the service to reach a state.
const WAIT: Duration = Duration::from_secs(10);

async fn start(dir: &Path) -> Running {
    let config = crate::serve_support::config(RunOptions::default());
    crate::serve_support::start(config, Box::new(LocalDir(dir.to_path_buf()))).await
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
        .wait_for("the first reconcile", WAIT, |s| s["ready"] == true)
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
    svc.shutdown().await;
}

#[tokio::test]
async fn invalid_revision_is_refused_and_the_last_good_one_kept() {
    let dir = tempfile::tempdir().unwrap();
    write_fleet(dir.path(), FLEET);
    let svc = start(dir.path()).await;
    let first = svc
        .wait_for("the first reconcile", WAIT, |s| s["ready"] == true)
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
    // The auth scheme is case-insensitive (RFC 9110): `bearer` works as `Bearer` does.
    let lowercase = svc
        .http
        .post(format!("{}/reconcile", svc.base))
        .header("Authorization", format!("bearer {TRIGGER_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(lowercase.status().as_u16(), 202);
    let queued = svc
        .http
        .post(format!("{}/reconcile", svc.base))
        .bearer_auth(TRIGGER_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(queued.status().as_u16(), 202);
    let refused = svc
        .wait_for("the refusal", WAIT, |s| {
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
        .wait_for("recovery", WAIT, |s| {
            s["source"]["validation_errors"]
                .as_array()
                .is_some_and(|e| e.is_empty())
                && s["source"]["good_revision"] != good
        })
        .await;
    assert_ne!(recovered["source"]["good_revision"], good);
    svc.shutdown().await;
}

#[tokio::test]
async fn webhooks_are_verified_and_deduplicated() {
    let dir = tempfile::tempdir().unwrap();
    write_fleet(dir.path(), FLEET);
    let svc = start(dir.path()).await;
    svc.wait_for("the first reconcile", WAIT, |s| s["ready"] == true)
        .await;
    let body = r#"{"ref":"refs/heads/main"}"#;
    let forged = webhook::sign(b"not-the-secret", body.as_bytes());
    assert_eq!(svc.webhook("push", "d-1", body, &forged).await, 401);
    assert_eq!(svc.webhook("push", "d-1", body, "sha256=00").await, 401);
    let signed = webhook::sign(HOOK_SECRET.as_bytes(), body.as_bytes());
    assert_eq!(svc.webhook("push", "d-2", body, &signed).await, 202);
    assert_eq!(
        svc.webhook("push", "d-2", body, &signed).await,
        200,
        "a redelivery is a duplicate"
    );
    assert_eq!(svc.webhook("ping", "d-3", body, &signed).await, 200);
    let oversized = "x".repeat(webhook::MAX_BODY_BYTES + 1);
    let sig = webhook::sign(HOOK_SECRET.as_bytes(), oversized.as_bytes());
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
    assert!(
        metrics.contains("drover_webhook_deliveries_total{event=\"push\",outcome=\"too_large\"} 1"),
        "{metrics}"
    );
    // Unverified deliveries of made-up events add no series: labels come from a fixed set.
    let series = |m: &str| {
        m.lines()
            .filter(|l| l.starts_with("drover_webhook"))
            .count()
    };
    let before = series(&metrics);
    for i in 0..50 {
        let event = format!("made-up-{i}");
        assert_eq!(
            svc.webhook(&event, &format!("x-{i}"), body, &forged).await,
            401
        );
    }
    let metrics = svc.get("/metrics").await.1;
    assert_eq!(series(&metrics), before, "{metrics}");
    assert!(
        metrics.contains(
            "drover_webhook_deliveries_total{event=\"other\",outcome=\"bad_signature\"} 50"
        ),
        "{metrics}"
    );
    svc.shutdown().await;
}

/// A site that could not be observed has unknown drift, never 0: `changes` is null in
/// `/status` and the page says "unknown". Its error reads plainly (the kubeconfig path
/// once, not quoted twice).
#[tokio::test]
async fn an_unobserved_site_shows_unknown_not_zero() {
    let dir = tempfile::tempdir().unwrap();
    let lab = "---\napiVersion: drover.dev/v1alpha1\nkind: Site\nmetadata:\n  name: lab\nspec:\n  kubernetes: {context: lab-ctx}\n  timeoutSeconds: 2\n";
    write_fleet(dir.path(), &format!("{FLEET}{lab}"));
    // The error quotes a JWT-shaped token (here in the kubeconfig's path, the error's one
    // input from outside the fleet): it must not reach /status or the page.
    let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJjaS11c2VyIn0.c2lnbmF0dXJlLXZhbHVl";
    let config = crate::serve_support::config(RunOptions {
        kubeconfig: Some(format!("/nonexistent/{jwt}/kubeconfig").into()),
        ..RunOptions::default()
    });
    let svc =
        crate::serve_support::start(config, Box::new(LocalDir(dir.path().to_path_buf()))).await;
    let status = svc
        .wait_for("the first reconcile", WAIT, |s| s["ready"] == true)
        .await;
    for site in ["hpc", "lab"] {
        let s = &status["sites"][site];
        assert_eq!(s["outcome"], "failed", "{s:#}");
        assert!(s["changes"].is_null(), "unknown, not 0: {s:#}");
    }
    let error = status["sites"]["lab"]["error"].as_str().unwrap();
    assert!(
        error.contains("cannot read kubeconfig /nonexistent/<redacted>/kubeconfig"),
        "{error}"
    );
    assert!(!error.contains("'\""), "{error}");
    let (_, raw_status) = svc.get("/status").await;
    assert!(!raw_status.contains("c2lnbmF0dXJl"), "{raw_status}");
    let page = svc.get("/").await.1;
    assert!(!page.contains("c2lnbmF0dXJl"), "{page}");
    assert!(page.contains("&lt;redacted&gt;"), "{page}");
    let row = |site: &str| {
        let start = page.find(&format!("<td><b>{site}</b></td>")).unwrap();
        page[start..start + page[start..].find("</tr>").unwrap()].to_string()
    };
    for site in ["hpc", "lab"] {
        assert!(row(site).contains("<td>unknown</td>"), "{}", row(site));
    }
    svc.shutdown().await;
}
