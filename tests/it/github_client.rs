//! drover's GitHub client against the strict GitHub API emulator: App auth and token
//! refresh, JIT round trip with the stand-in runner, conditional polling, backoff, the
//! rate budget, and OpenAPI conformance of everything exchanged.

use crate::support::fake_runner;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::github_emulator::objects::RunnerHome;
use crate::support::github_emulator::openapi::OpenApi;
use crate::support::github_emulator::{AppKeys, Config, Fault, GithubEmulator};
use drover::credentials::Secret;
use drover::github::{Auth, GithubClient, GithubError, JitRequest, RetryPolicy, Scope};

fn app_auth(cfg: &Config) -> Auth {
    Auth::App {
        app_id: cfg.app_id,
        installation_id: cfg.installation_id,
        private_key: Secret::new(AppKeys::get().private_pem.clone()),
    }
}

fn fast() -> RetryPolicy {
    RetryPolicy {
        min_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        reserve: 0,
        ..RetryPolicy::default()
    }
}

async fn setup(cfg: Config) -> (GithubEmulator, GithubClient) {
    let emu = GithubEmulator::start(cfg.clone()).await;
    emu.add_org("acme", &["gpu-ci"]);
    let client = GithubClient::new(&emu.url, &app_auth(&cfg), fast()).unwrap();
    (emu, client)
}

fn org() -> Scope {
    Scope::Org("acme".into())
}

#[tokio::test]
async fn app_auth_mints_and_refreshes_installation_tokens() {
    let cfg = Config {
        token_ttl_secs: 38,
        ..Config::default()
    };
    let (emu, client) = setup(cfg).await;
    client.runners(&org()).await.unwrap();
    client.runners(&org()).await.unwrap();
    assert_eq!(emu.tokens_issued(), 1, "a valid token is reused");
    // 38 s tokens fall inside octocrab's 30 s refresh margin after 8 s; the margin before
    // that keeps the reuse check above robust on a loaded machine.
    tokio::time::sleep(Duration::from_secs(9)).await;
    client.runners(&org()).await.unwrap();
    assert_eq!(
        emu.tokens_issued(),
        2,
        "a token about to expire is replaced first"
    );
    emu.assert_conformant();
}

#[tokio::test]
async fn a_wrong_app_id_is_refused_without_leaking_the_key() {
    let emu = GithubEmulator::start(Config::default()).await;
    emu.add_org("acme", &[]);
    let auth = Auth::App {
        app_id: 999,
        installation_id: 77,
        private_key: Secret::new(AppKeys::get().private_pem.clone()),
    };
    let client = GithubClient::new(&emu.url, &auth, fast()).unwrap();
    let err = client.runners(&org()).await.unwrap_err();
    assert!(
        matches!(err, GithubError::Status { status: 401, .. }),
        "{err}"
    );
    assert!(!err.to_string().contains("PRIVATE KEY"));
    assert_eq!(emu.count("/app/"), 1, "auth failures are not retried");
}

#[tokio::test]
async fn personal_access_tokens_work() {
    let cfg = Config {
        pat: Some("ghp_emulated".into()),
        ..Config::default()
    };
    let emu = GithubEmulator::start(cfg).await;
    emu.add_org("acme", &[]);
    let client =
        GithubClient::new(&emu.url, &Auth::Token(Secret::new("ghp_emulated")), fast()).unwrap();
    assert!(client.runners(&org()).await.unwrap().is_empty());
    let bad = GithubClient::new(&emu.url, &Auth::Token(Secret::new("ghp_wrong")), fast()).unwrap();
    let err = bad.runners(&org()).await.unwrap_err().to_string();
    assert!(err.contains("401") && !err.contains("ghp_wrong"), "{err}");
}

/// Receives webhook deliveries and checks their signatures with drover's verifier.
async fn webhook_receiver(secret: &'static str) -> (String, Arc<Mutex<Vec<(String, String)>>>) {
    use axum::http::HeaderMap;
    let got: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let sink = sink.clone();
            async move {
                let sig = headers
                    .get("x-hub-signature-256")
                    .and_then(|v| v.to_str().ok());
                if drover::serve::webhook::verify(secret.as_bytes(), &body, sig).is_err() {
                    return axum::http::StatusCode::UNAUTHORIZED;
                }
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                sink.lock().unwrap().push((
                    v["action"].as_str().unwrap().to_string(),
                    v["workflow_job"]["id"].to_string(),
                ));
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, got)
}

#[tokio::test]
async fn jit_round_trip_with_the_stand_in_runner() {
    let (emu, client) = setup(Config::default()).await;
    let (hook_url, deliveries) = webhook_receiver("hook-secret").await;
    emu.set_webhook(&hook_url, "hook-secret");
    let job = emu.queue_job("acme/widgets", &["self-hosted", "GPU"]);
    assert_eq!(
        emu.deliver(&hook_url, "hook-secret", job, "queued").await,
        204
    );

    let group = client.runner_group_id(&org(), "gpu-ci").await.unwrap();
    assert_eq!(Some(group), emu.group_id("acme", "gpu-ci"));
    let request = JitRequest {
        name: "drover-gpu-0".into(),
        runner_group_id: group,
        labels: vec![
            "self-hosted".into(),
            "linux".into(),
            "x64".into(),
            "gpu".into(),
        ],
        work_folder: Some("_work".into()),
    };
    let jit = client.generate_jitconfig(&org(), &request).await.unwrap();
    assert!(
        !format!("{jit:?}").contains(jit.encoded.expose()),
        "the JIT config is a secret"
    );
    let listed = client.runners(&org()).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, "drover-gpu-0");
    assert!(!listed[0].online() && !listed[0].busy);

    let again = client
        .generate_jitconfig(&org(), &request)
        .await
        .unwrap_err();
    assert!(
        matches!(again, GithubError::Status { status: 409, .. }),
        "{again}"
    );

    let queued = client.queued_jobs(&["acme/widgets".into()]).await.unwrap();
    assert_eq!(queued.iter().map(|j| j.id).collect::<Vec<_>>(), [job]);

    let out = tokio::process::Command::new(fake_runner())
        .args([
            "--jitconfig",
            jit.encoded.expose(),
            "--work-ms",
            "50",
            "--wait-secs",
            "20",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(emu.job(job).status.as_str(), "completed");
    assert!(
        client.runners(&org()).await.unwrap().is_empty(),
        "ephemeral runners leave"
    );
    assert!(
        client
            .queued_jobs(&["acme/widgets".into()])
            .await
            .unwrap()
            .is_empty()
    );
    let got: Vec<String> = deliveries
        .lock()
        .unwrap()
        .iter()
        .map(|(a, _)| a.clone())
        .collect();
    assert_eq!(got, ["queued", "in_progress", "completed"]);
    emu.assert_conformant();
}

#[tokio::test]
async fn idle_polling_costs_no_rate_limit() {
    let (emu, client) = setup(Config::default()).await;
    emu.queue_job("acme/widgets", &["self-hosted", "cpu"]);
    let repos = ["acme/widgets".to_string()];
    let first = client.queued_jobs(&repos).await.unwrap();
    let after_first = emu.remaining();
    let requests = emu.seen().len();
    for _ in 0..3 {
        assert_eq!(client.queued_jobs(&repos).await.unwrap(), first);
    }
    assert_eq!(emu.remaining(), after_first, "304s are free");
    let polls = &emu.seen()[requests..];
    assert!(
        !polls.is_empty() && polls.iter().all(|r| r.status == 304),
        "{polls:?}"
    );
    // A change is seen (and paid for) on the next poll.
    emu.queue_job("acme/widgets", &["self-hosted", "cpu"]);
    assert_eq!(client.queued_jobs(&repos).await.unwrap().len(), 2);
    assert!(emu.remaining() < after_first);
    emu.assert_conformant();
}

#[tokio::test]
async fn runners_are_paginated_and_deleted() {
    let (emu, client) = setup(Config::default()).await;
    for i in 0..150 {
        emu.add_runner(
            RunnerHome::Org("acme".into()),
            &format!("r{i}"),
            &["self-hosted"],
            i % 2 == 0,
            i == 0,
        );
    }
    let repo_runner = emu.add_runner(
        RunnerHome::Repo("acme/big".into()),
        "repo-1",
        &["a100"],
        true,
        false,
    );
    let runners = client.runners(&org()).await.unwrap();
    assert_eq!(runners.len(), 150);
    assert_eq!(runners.iter().filter(|r| r.online()).count(), 75);
    assert_eq!(
        emu.count("/orgs/acme/actions/runners"),
        2,
        "two pages of 100"
    );
    let repo = Scope::Repo("acme/big".into());
    assert_eq!(client.runners(&repo).await.unwrap()[0].id, repo_runner);
    assert!(client.delete_runner(&repo, repo_runner).await.unwrap());
    assert!(
        !client.delete_runner(&repo, repo_runner).await.unwrap(),
        "already gone"
    );
    let busy = runners.iter().find(|r| r.busy).unwrap();
    let err = client.delete_runner(&org(), busy.id).await.unwrap_err();
    assert!(
        matches!(err, GithubError::Status { status: 422, .. }),
        "{err}"
    );
    emu.assert_conformant();
}

#[tokio::test]
async fn transient_failures_back_off_without_runaway_requests() {
    let (emu, client) = setup(Config::default()).await;
    client.runners(&org()).await.unwrap(); // token minted
    let base = emu.count("/orgs/");

    emu.inject(Fault::Server(502), 2);
    client.runners(&org()).await.unwrap();
    assert_eq!(emu.count("/orgs/") - base, 3, "two 502s, then success");

    let start = Instant::now();
    emu.inject(Fault::SecondaryRateLimit { retry_after: 1 }, 1);
    client.runners(&org()).await.unwrap();
    emu.inject(Fault::TooManyRequests { retry_after: 1 }, 1);
    client.runners(&org()).await.unwrap();
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "Retry-After is honoured"
    );
    assert_eq!(emu.count("/orgs/") - base, 7);

    emu.inject(Fault::Server(500), 20);
    let err = client.runners(&org()).await.unwrap_err();
    assert!(
        matches!(
            err,
            GithubError::RetriesExhausted {
                attempts: 5,
                status: 500,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        emu.count("/orgs/") - base,
        12,
        "exactly 1 + max_retries attempts"
    );
    emu.assert_conformant();
}

#[tokio::test]
async fn stops_before_the_budget_runs_out() {
    let cfg = Config::default();
    let emu = GithubEmulator::start(cfg.clone()).await;
    emu.add_org("acme", &[]);
    let policy = RetryPolicy {
        reserve: 11,
        ..fast()
    };
    let client = GithubClient::new(&emu.url, &app_auth(&cfg), policy).unwrap();
    emu.set_remaining(12);
    client.runners(&org()).await.unwrap();
    let err = client.runners(&org()).await.unwrap_err();
    assert!(
        matches!(
            err,
            GithubError::RateLimited {
                remaining: 11,
                reserve: 11,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(emu.count("/orgs/"), 1, "the second call was never sent");
    assert_eq!(client.rate_limit().unwrap().remaining, 11);
}

#[tokio::test]
async fn the_emulator_catches_malformed_requests_and_responses() {
    let spec = OpenApi::get();
    let op = spec.operation("GET", "/orgs/acme/actions/runners").unwrap();
    assert_eq!(op.id, "actions/list-self-hosted-runners-for-org");
    let good = serde_json::json!({"total_count": 1, "runners": [{
        "id": 1, "name": "r", "os": "Linux", "status": "online", "busy": false,
        "labels": [{"name": "self-hosted"}]}]});
    assert!(spec.check_response(&op, 200, Some(&good)).is_empty());
    let mut bad = good.clone();
    bad["runners"][0].as_object_mut().unwrap().remove("busy");
    let problems = spec.check_response(&op, 200, Some(&bad));
    assert!(problems.iter().any(|p| p.contains("busy")), "{problems:?}");
    let nulled = serde_json::json!({"total_count": 1, "runners": [{
        "id": 1, "name": "r", "os": "Linux", "status": "online", "busy": false,
        "labels": [], "version": null}]});
    assert!(
        spec.check_response(&op, 200, Some(&nulled)).is_empty(),
        "nullable is understood"
    );

    let jit = spec
        .operation("POST", "/orgs/acme/actions/runners/generate-jitconfig")
        .unwrap();
    let body = serde_json::json!({"name": "x", "runner_group_id": 1, "labels": []});
    assert!(
        !spec.check_request(&jit, &[], Some(&body)).is_empty(),
        "labels need 1..=100"
    );
    let runs = spec.operation("GET", "/repos/acme/w/actions/runs").unwrap();
    let q = [("status".to_string(), "bogus".to_string())];
    assert!(
        !spec.check_request(&runs, &q, None).is_empty(),
        "status is an enum"
    );
    let q = [("colour".to_string(), "red".to_string())];
    assert!(
        !spec.check_request(&runs, &q, None).is_empty(),
        "undeclared parameter"
    );
    assert!(
        spec.operation("GET", "/orgs/acme/actions/nothing")
            .is_none()
    );

    // The live emulator refuses and records a non-conforming request.
    let (emu, _client) = setup(Config {
        pat: Some("ghp_x".into()),
        ..Config::default()
    })
    .await;
    drover::tls::install_crypto_provider();
    let status = reqwest::Client::new()
        .post(format!(
            "{}/orgs/acme/actions/runners/generate-jitconfig",
            emu.url
        ))
        .bearer_auth("ghp_x")
        .json(&body)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 422);
    assert!(!emu.violations().is_empty());
}

#[tokio::test]
async fn webhook_deliveries_conform_to_the_description() {
    let emu = GithubEmulator::start(Config::default()).await;
    let job = emu.queue_job("acme/widgets", &["self-hosted"]);
    for action in ["queued", "waiting", "in_progress", "completed"] {
        let (headers, body) = emu.delivery(job, action, "s");
        let sig = headers
            .iter()
            .find(|(k, _)| k == "X-Hub-Signature-256")
            .map(|(_, v)| v.as_str());
        assert!(drover::serve::webhook::verify(b"s", &body, sig).is_ok());
    }
    emu.assert_conformant();
}

/// Every runner set of the example fleet that drover scales gets a JIT config from the
/// emulator, with the runner group drover resolves for it: the repository-scoped Slurm
/// set registers in `Default` (the only group a repository has), the others in the
/// organization's `gpu-ci`.
#[tokio::test]
async fn every_scaled_set_of_the_example_fleet_gets_a_runner() {
    let cfg = Config::default();
    let emu = GithubEmulator::start(cfg.clone()).await;
    emu.add_org("acme-ml", &["gpu-ci"]);
    let client = GithubClient::new(&emu.url, &app_auth(&cfg), fast()).unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fleet");
    let validation =
        drover::fleet::validate_dir(&root, &drover::fleet::load::LoadOptions::default()).unwrap();
    assert!(validation.is_valid(), "{:#?}", validation.diagnostics);
    let config = drover::autoscale::ScaleConfig::from_repo(&validation.repo);
    assert!(config.sets.contains_key("gpu-a100-slurm"), "{config:#?}");
    for (name, set) in &config.sets {
        let group = client
            .runner_group_id(&set.scope, &set.group)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let request = JitRequest {
            name: format!("drover-{name}-1"),
            runner_group_id: group,
            labels: set.labels.clone(),
            work_folder: Some("_work".into()),
        };
        client
            .generate_jitconfig(&set.scope, &request)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    assert_eq!(config.sets["gpu-a100-slurm"].group, "Default");
    assert_eq!(config.sets["gpu-mi300x"].group, "gpu-ci");
}
