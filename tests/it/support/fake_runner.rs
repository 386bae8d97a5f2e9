//! A stand-in for the GitHub Actions runner, for tests: `fake_runner --jitconfig <cfg>`.
//!
//! Like `./run.sh --jitconfig`, it takes only the JIT config drover generated. It
//! connects to the GitHub API emulator named in the config (the emulator's `/_runner/`
//! protocol stands for the Actions service), waits for a queued job its labels match,
//! runs it (sleeps `--work-ms`, default 200), reports it completed and exits 0: it is
//! ephemeral. Exits 2 when no job arrives within `--wait-secs` (default 60), 1 on errors.
//! Built as the `fake_runner` example so it can run as a Slurm job or in a pod.

use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let code = match run(&args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("fake_runner: {e}");
            1
        }
    };
    std::process::exit(code);
}

async fn run(args: &[String]) -> Result<i32, String> {
    drover::tls::install_crypto_provider();
    let cfg = arg(args, "--jitconfig")
        .or_else(|| std::env::var("ACTIONS_RUNNER_INPUT_JITCONFIG").ok())
        .ok_or("usage: fake_runner --jitconfig <encoded> [--work-ms N] [--wait-secs N]")?;
    let work = Duration::from_millis(
        arg(args, "--work-ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(200),
    );
    let wait = Duration::from_secs(
        arg(args, "--wait-secs")
            .and_then(|v| v.parse().ok())
            .unwrap_or(60),
    );
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(cfg.trim())
        .map_err(|_| "jitconfig is not base64")?;
    let cfg: Value = serde_json::from_slice(&bytes).map_err(|_| "jitconfig is not JSON")?;
    let base = cfg["url"]
        .as_str()
        .ok_or("jitconfig has no url")?
        .to_string();
    let who = json!({"runner_id": cfg["runner_id"], "secret": cfg["secret"]});
    let http = reqwest::Client::new();
    let call = |op: &'static str| {
        let http = http.clone();
        let url = format!("{base}/_runner/{op}");
        let who = who.clone();
        async move {
            let resp = http
                .post(url)
                .json(&who)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if !resp.status().is_success() {
                return Err(format!("{op}: HTTP {}", resp.status()));
            }
            resp.json::<Value>().await.map_err(|e| e.to_string())
        }
    };
    let me = call("connect").await?;
    println!("runner {} online with labels {}", me["name"], me["labels"]);
    let start = Instant::now();
    let job = loop {
        let got = call("acquire").await?;
        if let Some(job) = got["job_id"].as_u64() {
            break job;
        }
        if start.elapsed() > wait {
            println!("no job within {wait:?}");
            return Ok(2);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("running job {job}");
    tokio::time::sleep(work).await;
    call("complete").await?;
    println!("completed job {job}");
    Ok(0)
}
