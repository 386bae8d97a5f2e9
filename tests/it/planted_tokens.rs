//! A planted token through every failure path. One loopback server plays every remote
//! and echoes, in its error answers, the credentials it was sent: GitHub's 401 "Bad
//! credentials" naming the token, a slurmrestd error quoting its `X-SLURM-USER-TOKEN`, and
//! a Kubernetes `Status` quoting the bearer header. The tokens are not shaped like any
//! known credential, so only drover's knowledge of them (the redaction layer remembers
//! every credential it resolves) can keep them out. Every output is read: `drover plan`
//! (text and JSON), `drover apply`, and `drover serve`'s log, `/status`, page and metrics.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

const GITHUB_TOKEN: &str = "planted-github-0c7e41d9b2";
const SLURM_TOKEN: &str = "planted-slurm-5a18fe03c6";
const KUBE_TOKEN: &str = "planted-kube-93b6d2e07f";
const TOKENS: [&str; 3] = [GITHUB_TOKEN, SLURM_TOKEN, KUBE_TOKEN];

/// Answers every request with an error that repeats the credentials it was sent.
async fn leak(headers: HeaderMap) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let auth = header("authorization");
    let slurm = header("x-slurm-user-token");
    let bare = auth.split_whitespace().last().unwrap_or("").to_owned();
    let body = json!({
        // GitHub's shape.
        "message": format!("Bad credentials for {bare} ({auth})"),
        // slurmrestd's shape.
        "errors": [{"error_number": 1007, "error": format!("token {slurm} rejected"),
                    "description": format!("X-SLURM-USER-TOKEN {slurm}")}],
        // Kubernetes' Status.
        "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 401,
        "reason": "Unauthorized",
        "details": {"causes": [{"message": format!("token {bare} is not valid")}]},
    });
    (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response()
}

async fn start_leaky_remote() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().fallback(leak);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn fleet(remote: SocketAddr) -> String {
    format!(
        r#"apiVersion: drover.dev/v1alpha1
kind: Fleet
metadata: {{name: planted}}
spec:
  github: {{url: "http://{remote}", tokenRef: gh}}
---
apiVersion: drover.dev/v1alpha1
kind: SecretRef
metadata: {{name: gh}}
spec: {{env: {{name: PLANTED_GH}}}}
---
apiVersion: drover.dev/v1alpha1
kind: SecretRef
metadata: {{name: slurm-jwt}}
spec: {{env: {{name: PLANTED_SLURM}}}}
---
apiVersion: drover.dev/v1alpha1
kind: Site
metadata: {{name: hpc}}
spec:
  slurm:
    rest: {{url: "http://{remote}", user: ci, tokenRef: slurm-jwt}}
---
apiVersion: drover.dev/v1alpha1
kind: Site
metadata: {{name: lab}}
spec:
  kubernetes: {{context: leaky}}
---
apiVersion: drover.dev/v1alpha1
kind: NodePool
metadata: {{name: cpu}}
spec: {{site: lab}}
---
apiVersion: drover.dev/v1alpha1
kind: NodePool
metadata: {{name: batch}}
spec: {{site: hpc, slurm: {{partition: cpu}}}}
---
apiVersion: drover.dev/v1alpha1
kind: RunnerSet
metadata: {{name: small}}
spec:
  github: {{org: acme}}
  labels: [self-hosted, linux, small]
  pool: cpu
  max: 2
  image: ghcr.io/actions/actions-runner:2.328.0
---
apiVersion: drover.dev/v1alpha1
kind: RunnerSet
metadata: {{name: batch}}
spec:
  github: {{org: acme}}
  labels: [self-hosted, linux, batch]
  pool: batch
  max: 2
"#
    )
}

fn kubeconfig(remote: SocketAddr) -> String {
    format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: leaky\n\
         clusters: [{{name: leaky, cluster: {{server: \"http://{remote}\"}}}}]\n\
         users: [{{name: leaky, user: {{token: {KUBE_TOKEN}}}}}]\n\
         contexts: [{{name: leaky, context: {{cluster: leaky, user: leaky}}}}]\n"
    )
}

struct World {
    tmp: tempfile::TempDir,
    remote: SocketAddr,
}

impl World {
    async fn new() -> World {
        let remote = start_leaky_remote().await;
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("fleet")).unwrap();
        std::fs::write(tmp.path().join("fleet/fleet.yaml"), fleet(remote)).unwrap();
        std::fs::write(tmp.path().join("kubeconfig"), kubeconfig(remote)).unwrap();
        World { tmp, remote }
    }

    fn drover(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_drover"));
        cmd.env("PLANTED_GH", GITHUB_TOKEN)
            .env("PLANTED_SLURM", SLURM_TOKEN)
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `drover -v <args> <fleet> --kubeconfig <file>`; its stdout and stderr.
    async fn run(&self, args: &[&str]) -> String {
        let mut cmd = self.drover();
        cmd.arg("-v")
            .args(args)
            .arg(self.tmp.path().join("fleet"))
            .arg("--kubeconfig")
            .arg(self.tmp.path().join("kubeconfig"));
        let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap();
        format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

/// Fails naming the output and the token when `text` shows any planted token.
fn assert_clean(what: &str, text: &str) {
    for token in TOKENS {
        assert!(
            !text.contains(token),
            "{what} shows the planted token {token}:\n{text}"
        );
    }
}

#[tokio::test]
async fn cli_outputs_never_show_a_token_a_remote_echoed() {
    let world = World::new().await;
    for args in [
        &["plan"][..],
        &["plan", "--format", "json"],
        &["apply"],
        &["drift"],
    ] {
        let out = world.run(args).await;
        // Each site failed, and said so: the outputs do carry the remotes' answers.
        assert!(
            out.contains("hpc") && out.contains("lab"),
            "drover {args:?} did not report both sites:\n{out}"
        );
        assert!(
            out.contains("<redacted>") || out.contains("wrong or expired"),
            "drover {args:?} shows no sign of a refused credential:\n{out}"
        );
        assert_clean(&format!("drover {args:?}"), &out);
    }
}

#[tokio::test]
async fn serve_log_status_page_and_metrics_never_show_a_token_a_remote_echoed() {
    drover::tls::install_crypto_provider();
    let world = World::new().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = world.tmp.path().join("serve.yaml");
    std::fs::write(
        &config,
        format!(
            "source: {{dir: {fleet}}}\nlisten: 127.0.0.1:{port}\nkubeconfig: {kube}\n\
             reconcileIntervalSeconds: 1\n\
             driftIssues: {{repo: acme/fleet}}\n\
             autoscale: {{repositories: [acme/app], pollIntervalSeconds: 1, refreshIntervalSeconds: 1}}\n",
            fleet = world.tmp.path().join("fleet").display(),
            kube = world.tmp.path().join("kubeconfig").display(),
        ),
    )
    .unwrap();
    let log = world.tmp.path().join("serve.log");
    let mut child = world
        .drover()
        .args(["-vv", "serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    // Both sites failed and a drift-issue sync failed on GitHub's 401; the autoscaler's
    // GitHub reads fail in the log meanwhile.
    let status = loop {
        let status: Option<serde_json::Value> = match reqwest::get(format!("{base}/status")).await {
            Ok(r) => r.json().await.ok(),
            Err(_) => None,
        };
        let done = status.as_ref().is_some_and(|s| {
            let failed = |site: &str| !s["sites"][site]["error"].is_null();
            failed("hpc") && failed("lab") && !s["drift_issues"]["error"].is_null()
        });
        if done {
            break status.unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "serve never reported the failures; status {status:#?}; log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let page = reqwest::get(format!("{base}/"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Let a few more rounds log their failures.
    tokio::time::sleep(Duration::from_secs(3)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        log.contains(&world.remote.to_string()) || log.contains("hpc"),
        "the log shows no failure at all:\n{log}"
    );
    assert_clean("/status", &status.to_string());
    assert_clean("the page", &page);
    assert_clean("/metrics", &metrics);
    assert_clean("the log", &log);
}
