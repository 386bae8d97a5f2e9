//! `drover serve` benchmark (prints figures; harness = false): a fleet of 1,000 runner
//! sets on one Kubernetes site (the API emulator), served by `drover serve --dir` as a
//! child process (release build):
//!
//! - push webhook received → one-object change applied on the emulator: p50 / p90 / max
//!   over 15 changes (each edits one runner set's image; the webhook triggers a fetch,
//!   validation of the whole fleet, a plan of every object and one server-side apply);
//! - the idle service: CPU over 10 s (utime + stime from /proc/PID/stat) and RSS.
//!
//! Figures are recorded in docs/performance.md ("drover serve").

// The emulator tree is shared with the integration tests (it allows unused items itself).
#[path = "../tests/it/support/mod.rs"]
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::kube_emulator::KubeEmulator;

const SETS: usize = 1000;
const CHANGES: usize = 15;
const SECRET: &str = "bench-hook-secret";

fn fleet(tags: &[String]) -> String {
    let mut yaml = String::from(
        "apiVersion: drover.dev/v1alpha1\nkind: Fleet\nmetadata: {name: bench}\nspec:\n  github: {tokenRef: gh}\n---\n\
         apiVersion: drover.dev/v1alpha1\nkind: SecretRef\nmetadata: {name: gh}\nspec: {env: {name: GH_TOKEN}}\n---\n\
         apiVersion: drover.dev/v1alpha1\nkind: Site\nmetadata: {name: lab}\nspec:\n  kubernetes: {context: bench, namespace: runners}\n  timeoutSeconds: 30\n---\n\
         apiVersion: drover.dev/v1alpha1\nkind: NodePool\nmetadata: {name: cpu}\nspec: {site: lab, nodeCount: 1, kubernetes: {nodeSelector: {pool: cpu}}}\n",
    );
    for (i, tag) in tags.iter().enumerate() {
        yaml.push_str(&format!(
            "---\napiVersion: drover.dev/v1alpha1\nkind: RunnerSet\nmetadata: {{name: set-{i}}}\nspec:\n  github: {{org: acme}}\n  labels: [self-hosted, l{i}]\n  pool: cpu\n  max: 4\n  resources: {{cpu: \"1\", memory: 1Gi}}\n  image: \"ghcr.io/actions/actions-runner:{tag}\"\n"
        ));
    }
    yaml
}

fn image_of(emu: &KubeEmulator, set: usize) -> Option<String> {
    emu.get_object("v1", "PodTemplate", Some("runners"), &format!("set-{set}"))
        .and_then(|t| {
            t["template"]["spec"]["containers"][0]["image"]
                .as_str()
                .map(str::to_string)
        })
}

/// (utime + stime) in seconds and VmRSS in MiB of a process.
fn usage(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_comm = stat.rsplit_once(')').unwrap().1;
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // Fields 14 and 15 of stat; after the comm field they are at 11 and 12.
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss_kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    (ticks / 100.0, rss_kb / 1024.0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
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
    let emu = KubeEmulator::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let kubeconfig = tmp.path().join("kubeconfig");
    std::fs::write(&kubeconfig, emu.kubeconfig_yaml("bench")).unwrap();
    let dir = tmp.path().join("fleet");
    std::fs::create_dir(&dir).unwrap();
    let mut tags: Vec<String> = vec!["2.321.0".into(); SETS];
    std::fs::write(dir.join("fleet.yaml"), fleet(&tags)).unwrap();
    let port = support::git_server::free_port();
    let config = tmp.path().join("serve.yaml");
    std::fs::write(
        &config,
        format!(
            "source: {{dir: {}}}\nlisten: 127.0.0.1:{port}\nkubeconfig: {}\nwebhookSecretFrom: {{env: BENCH_HOOK}}\n",
            dir.display(),
            kubeconfig.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("BENCH_HOOK", SECRET)
        .stdout(Stdio::null())
        .stderr(
            std::fs::File::create(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/target/serve-bench.log"
            ))
            .unwrap(),
        )
        .spawn()
        .unwrap();
    let pid = child.id();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();

    let started = Instant::now();
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
            && (0..SETS).step_by(97).all(|i| image_of(&emu, i).is_some())
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "no first apply"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let objects: usize = ["PodTemplate", "ResourceQuota"]
        .iter()
        .map(|k| emu.list_objects("v1", k, Some("runners")).len())
        .sum();
    println!(
        "serve_webhook: first apply of {SETS} runner sets ({objects}+ objects): {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let mut latencies = Vec::new();
    for n in 0..CHANGES {
        let set = (n * 131) % SETS;
        let tag = format!("2.400.{n}");
        tags[set] = tag.clone();
        std::fs::write(dir.join("fleet.yaml"), fleet(&tags)).unwrap();
        let body = format!(r#"{{"ref":"refs/heads/main","n":{n}}}"#);
        let signature = drover::serve::webhook::sign(SECRET.as_bytes(), body.as_bytes());
        let want = format!("ghcr.io/actions/actions-runner:{tag}");
        let t0 = Instant::now();
        let code = http
            .post(format!("{base}/webhook"))
            .header("x-github-event", "push")
            .header("x-github-delivery", format!("bench-{n}"))
            .header("x-hub-signature-256", signature)
            .body(body)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(code.as_u16(), 202);
        while image_of(&emu, set).as_deref() != Some(want.as_str()) {
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "change not applied"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        latencies.push(t0.elapsed());
        // Let the reconcile finish before the next change.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    latencies.sort();
    println!(
        "serve_webhook: webhook -> one-object change applied, {CHANGES} changes: p50 {:.0} ms, p90 {:.0} ms, max {:.0} ms (goal p50 < 300 ms)",
        percentile(&latencies, 0.5).as_secs_f64() * 1000.0,
        percentile(&latencies, 0.9).as_secs_f64() * 1000.0,
        latencies.last().unwrap().as_secs_f64() * 1000.0,
    );

    tokio::time::sleep(Duration::from_secs(2)).await;
    let (cpu0, _) = usage(pid);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (cpu1, rss) = usage(pid);
    let share = (cpu1 - cpu0) / t0.elapsed().as_secs_f64() * 100.0;
    println!(
        "serve_webhook: idle service with {SETS} runner sets: CPU {share:.2}% of a core over 10 s (goal < 1%), RSS {rss:.1} MiB (goal < 100 MB)"
    );
    let _ = child.kill();
    let _ = child.wait();
}
