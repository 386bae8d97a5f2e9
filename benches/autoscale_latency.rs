//! Autoscaler latency (prints figures; harness = false): `workflow_job` webhook received →
//! runner creation request sent, at 200 deliveries/s.
//!
//! The GitHub API emulator and the Kubernetes API emulator run in this process;
//! `drover serve` runs as a child process (release build) with autoscaling on, one
//! Kubernetes site on the emulator and one `engine: drover` runner set with `max: 2000`
//! (no kubelet: the Pods stay `Pending`, the jobs stay queued, so every job keeps its
//! runner). After drover has read GitHub once, `JOBS` new jobs are queued and their
//! signed `queued` deliveries are sent on a fixed schedule of `RATE` per second, each from
//! its own task so that a slow answer does not slow the pace.
//!
//! For delivery i, the latency is the time from sending it to the i-th runner creation
//! request drover sends: the i-th `generate-jitconfig` request arriving at the GitHub
//! emulator (drover mints the JIT config, then creates the Pod). The i-th Pod `POST`
//! at the Kubernetes emulator is reported too. Queued-job polling is set to an hour so
//! that only the webhooks tell drover about the jobs.
//!
//! Figures are recorded in docs/performance.md ("Autoscaler latency").

#[path = "../tests/it/support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::github_emulator::{Config, GithubEmulator};
use support::kube_emulator::KubeEmulator;

const RATE: u64 = 200;
const JOBS: usize = 1000;
const SECRET: &str = "bench-hook-secret";
const PAT: &str = "ghp_bench_latency";
const LABEL: &str = "bench-latency";

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn summary(sorted: &[Duration]) -> String {
    format!(
        "p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(percentile(sorted, 0.5)),
        ms(percentile(sorted, 0.9)),
        ms(percentile(sorted, 0.99)),
        ms(*sorted.last().unwrap()),
    )
}

/// Arrival times of the runner creation requests: `generate-jitconfig` at GitHub.
fn jit_requests(gh: &GithubEmulator) -> Vec<(Instant, u16)> {
    let mut v: Vec<(Instant, u16)> = gh
        .seen()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/generate-jitconfig"))
        .map(|r| (r.at, r.status))
        .collect();
    v.sort();
    v
}

/// Arrival times of runner Pod creations at the Kubernetes emulator.
fn pod_creates(kube: &KubeEmulator) -> Vec<Instant> {
    let mut v: Vec<Instant> = kube
        .request_log()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == "/api/v1/namespaces/runners/pods")
        .filter(|r| r.status == 201)
        .map(|r| r.at)
        .collect();
    v.sort();
    v
}

fn main() {
    drover::tls::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    let gh = GithubEmulator::start(Config {
        pat: Some(PAT.into()),
        rate_limit: 10_000_000,
        ..Config::default()
    })
    .await;
    gh.add_org("acme", &[]);
    let kube = KubeEmulator::start().await;

    let tmp = tempfile::tempdir().unwrap();
    let kubeconfig = tmp.path().join("kubeconfig");
    std::fs::write(&kubeconfig, kube.kubeconfig_yaml("bench")).unwrap();
    std::fs::write(tmp.path().join("gh.token"), PAT).unwrap();
    let dir = tmp.path().join("fleet");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("fleet.yaml"),
        format!(
            "apiVersion: drover.dev/v1alpha1\nkind: Fleet\nmetadata: {{name: bench}}\nspec:\n  github: {{url: \"{gh}\", tokenRef: gh}}\n---\n\
             apiVersion: drover.dev/v1alpha1\nkind: SecretRef\nmetadata: {{name: gh}}\nspec: {{file: {{path: \"{tmp}/gh.token\"}}}}\n---\n\
             apiVersion: drover.dev/v1alpha1\nkind: Site\nmetadata: {{name: lab}}\nspec:\n  kubernetes: {{context: bench, namespace: runners}}\n  timeoutSeconds: 30\n---\n\
             apiVersion: drover.dev/v1alpha1\nkind: NodePool\nmetadata: {{name: cpu}}\nspec: {{site: lab, kubernetes: {{nodeSelector: {{pool: cpu}}}}}}\n---\n\
             apiVersion: drover.dev/v1alpha1\nkind: RunnerSet\nmetadata: {{name: cpu}}\nspec:\n  github: {{org: acme}}\n  engine: drover\n  labels: [{LABEL}]\n  pool: cpu\n  max: 2000\n  resources: {{cpu: \"1\", memory: 1Gi}}\n  image: ghcr.io/actions/actions-runner:2.321.0\n",
            gh = gh.url,
            tmp = tmp.path().display(),
        ),
    )
    .unwrap();
    let port = support::git_server::free_port();
    let config = tmp.path().join("serve.yaml");
    std::fs::write(
        &config,
        format!(
            "source: {{dir: {}}}\nlisten: 127.0.0.1:{port}\nkubeconfig: {}\nwebhookSecretFrom: {{env: BENCH_HOOK}}\n\
             autoscale:\n  repositories: [acme/app]\n  pollIntervalSeconds: 3600\n  refreshIntervalSeconds: 15\n",
            dir.display(),
            kubeconfig.display()
        ),
    )
    .unwrap();
    let log = std::env::temp_dir().join("drover-autoscale-latency.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("BENCH_HOOK", SECRET)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();

    // Ready, and the autoscaler has read GitHub once (it decides nothing before).
    let started = Instant::now();
    loop {
        if let Ok(r) = http.get(format!("{base}/status")).send().await
            && let Ok(status) = r.json::<serde_json::Value>().await
            && status["ready"] == true
            && status["autoscale"]["sets"]["cpu"].is_object()
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "drover serve did not become ready (see {})",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Warm-up: one job, so that one-time costs (the emulators' schema checks of each
    // operation, drover's runner group lookup, the first connections) are not measured.
    let warm = gh.queue_job("acme/app", &["self-hosted", LABEL]);
    assert_eq!(
        gh.deliver(&format!("{base}/webhook"), SECRET, warm, "queued")
            .await,
        202
    );
    while jit_requests(&gh).is_empty() || pod_creates(&kube).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "no warm-up runner"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (warm_jits, warm_pods) = (jit_requests(&gh).len(), pod_creates(&kube).len());

    // The jobs and their signed deliveries, prepared before the clock starts.
    let deliveries: Vec<_> = (0..JOBS)
        .map(|_| {
            let job = gh.queue_job("acme/app", &["self-hosted", LABEL]);
            gh.delivery(job, "queued", SECRET)
        })
        .collect();
    let hook = format!("{base}/webhook");
    let period = Duration::from_nanos(1_000_000_000 / RATE);
    let t0 = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::new();
    for (i, (headers, body)) in deliveries.into_iter().enumerate() {
        tokio::time::sleep_until(t0 + period * i as u32).await;
        let (http, hook) = (http.clone(), hook.clone());
        tasks.push(tokio::spawn(async move {
            let mut req = http.post(&hook).body(body);
            for (k, v) in headers {
                req = req.header(k, v);
            }
            let sent = Instant::now();
            let code = req.send().await.map(|r| r.status().as_u16()).unwrap_or(0);
            (sent, code, sent.elapsed())
        }));
    }
    let mut sends = Vec::new();
    for task in tasks {
        sends.push(task.await.unwrap());
    }
    sends.sort_by_key(|s| s.0);
    assert!(
        sends.iter().all(|s| s.1 == 202),
        "deliveries refused: {:?}",
        sends
            .iter()
            .filter(|s| s.1 != 202)
            .take(5)
            .collect::<Vec<_>>()
    );
    let span = sends.last().unwrap().0 - sends[0].0;
    let rate = (JOBS - 1) as f64 / span.as_secs_f64();

    // Every job gets its runner; then nothing more is created.
    let waited = Instant::now();
    let first = sends[0].0;
    let jit_after = |gh: &GithubEmulator| -> Vec<(Instant, u16)> {
        jit_requests(gh).into_iter().skip(warm_jits).collect()
    };
    let pods_after = |kube: &KubeEmulator| -> Vec<Instant> {
        pod_creates(kube).into_iter().skip(warm_pods).collect()
    };
    while jit_after(&gh).len() < JOBS || pods_after(&kube).len() < JOBS {
        assert!(
            waited.elapsed() < Duration::from_secs(300),
            "only {} JIT configs and {} Pods for {JOBS} jobs",
            jit_after(&gh).len(),
            pods_after(&kube).len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all_done = first.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let jits = jit_after(&gh);
    let pods = pods_after(&kube);
    assert!(
        jits.first().is_some_and(|j| j.0 >= first),
        "a runner before the first delivery"
    );

    let mut jit_latency: Vec<Duration> = sends
        .iter()
        .zip(&jits)
        .map(|(s, j)| j.0.saturating_duration_since(s.0))
        .collect();
    let mut pod_latency: Vec<Duration> = sends
        .iter()
        .zip(&pods)
        .map(|(s, p)| p.saturating_duration_since(s.0))
        .collect();
    // The first second alone: fewer than RATE runner Pods on the site yet.
    let mut early: Vec<Duration> = jit_latency[..RATE as usize].to_vec();
    early.sort();
    let mut reply: Vec<Duration> = sends.iter().map(|s| s.2).collect();
    jit_latency.sort();
    pod_latency.sort();
    reply.sort();

    let live_pods = kube.list_objects("v1", "Pod", Some("runners"));
    let names: BTreeSet<String> = live_pods
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    let registered = gh.runners().len();
    println!(
        "autoscale_latency: {JOBS} queued deliveries at {RATE}/s (achieved {rate:.1}/s over {:.2} s), every runner created {:.2} s after the first delivery",
        span.as_secs_f64(),
        all_done.as_secs_f64()
    );
    println!(
        "  webhook sent -> runner creation request (generate-jitconfig at GitHub): {} (goal p99 < 50 ms)",
        summary(&jit_latency)
    );
    println!(
        "  the same, first {RATE} deliveries only (under {RATE} runner Pods on the site): {}",
        summary(&early)
    );
    println!(
        "  webhook sent -> Pod create at Kubernetes: {}",
        summary(&pod_latency)
    );
    println!("  webhook answered (202): {}", summary(&reply));
    println!(
        "  jobs {JOBS} (+1 warm-up), JIT configs requested {} ({} failed), Pods created {}, Pods on the site {}, runners registered {registered}",
        jits.len(),
        jits.iter().filter(|j| j.1 != 201).count(),
        pods.len(),
        names.len(),
    );
    if std::env::var_os("BENCH_TIMELINE").is_some() {
        // The slowest delivery of each 250 ms of sending, and what drover asked the
        // emulators for meanwhile (to find what a slow stretch coincides with).
        let t = sends[0].0;
        let by_delivery: Vec<(Instant, Duration)> = sends
            .iter()
            .zip(&jits)
            .map(|(s, j)| (s.0, j.0.saturating_duration_since(s.0)))
            .collect();
        for bucket in 0..(span.as_millis() / 250 + 1) as u32 {
            let from = t + Duration::from_millis(250) * bucket;
            let to = from + Duration::from_millis(250);
            let worst = by_delivery
                .iter()
                .filter(|(at, _)| *at >= from && *at < to)
                .map(|(_, l)| *l)
                .max()
                .unwrap_or_default();
            let gh_reads: Vec<String> = gh
                .seen()
                .into_iter()
                .filter(|r| r.at >= from && r.at < to && r.method == "GET")
                .map(|r| r.path)
                .collect();
            let kube_reads = kube
                .request_log()
                .into_iter()
                .filter(|r| r.at >= from && r.at < to && r.method == "GET")
                .count();
            println!(
                "  +{:>5} ms: worst {:>6.1} ms; GitHub GETs {:?}; Kubernetes GETs {kube_reads}",
                250 * bucket,
                ms(worst),
                gh_reads
            );
        }
    }
    if std::env::var_os("BENCH_ROUNDS").is_some() {
        // Runner rounds: each lists the runner Pods, then creates.
        let t = sends[0].0;
        let lists: Vec<Instant> = kube
            .request_log()
            .into_iter()
            .filter(|r| r.method == "GET" && r.path == "/api/v1/pods")
            .map(|r| r.at)
            .filter(|at| *at >= t)
            .collect();
        for (n, at) in lists.iter().enumerate() {
            let next = lists.get(n + 1).copied().unwrap_or_else(Instant::now);
            let created: Vec<&(Instant, u16)> =
                jits.iter().filter(|j| j.0 >= *at && j.0 < next).collect();
            println!(
                "  round at {:.0} ms: {} JIT configs, first +{:.1} ms, last +{:.1} ms",
                ms(*at - t),
                created.len(),
                created.first().map_or(0.0, |j| ms(j.0 - *at)),
                created.last().map_or(0.0, |j| ms(j.0 - *at)),
            );
        }
    }
    assert_eq!(jits.len(), JOBS, "one runner creation per job");
    assert!(jits.iter().all(|j| j.1 == 201), "a JIT config was refused");
    assert_eq!(pods.len(), JOBS, "one Pod per job");
    assert_eq!(
        names.len(),
        JOBS + 1,
        "distinct runner Pods (and the warm-up's)"
    );
    assert_eq!(
        registered,
        JOBS + 1,
        "one registered runner per job (and the warm-up's)"
    );
    gh.assert_conformant();
    let _ = child.kill();
    let _ = child.wait();
}
