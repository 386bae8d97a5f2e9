//! Autoscaler polling cost (prints figures; harness = false): GitHub requests per hour at
//! steady state for 100 repositories in polling mode, against the GitHub API emulator.
//!
//! Each of the 100 repositories has one workflow run in progress (one job running on a
//! drover runner, so the run stays listed) and nothing queued. The autoscaler polls queued
//! jobs of every repository and reads the org's runner list, as `drover serve` does on its
//! intervals (30 s and 15 s by default). After a first cycle fills the ETag cache, every
//! later cycle is counted: requests sent, and requests *charged* to the rate limit (GitHub
//! does not charge a conditional request answered `304 Not Modified`). Figures per hour use
//! the default intervals. A second phase queues a job in 5 repositories between cycles, to
//! show what a changing repository costs.
//!
//! Figures are recorded in docs/performance.md ("Autoscaler polling").

#[path = "../tests/it/support/mod.rs"]
mod support;

use drover::autoscale::metrics::AutoscaleMetrics;
use drover::autoscale::{Autoscaler, Settings};
use drover::fleet::{LoadOptions, validate_dir};
use support::github_emulator::objects::RunnerHome;
use support::github_emulator::{Config, GithubEmulator};

const REPOS: usize = 100;
const CYCLES: usize = 20;
const PAT: &str = "ghp_bench";

fn charged(emu: &GithubEmulator) -> (usize, usize) {
    let seen = emu.seen();
    let charged = seen.iter().filter(|r| r.status != 304).count();
    (seen.len(), charged)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    drover::tls::install_crypto_provider();
    let emu = GithubEmulator::start(Config {
        pat: Some(PAT.into()),
        rate_limit: 1_000_000,
        ..Config::default()
    })
    .await;
    emu.add_org("acme", &[]);
    let repos: Vec<String> = (0..REPOS).map(|i| format!("acme/repo-{i:03}")).collect();
    for (i, repo) in repos.iter().enumerate() {
        // A job in progress on a drover runner: its run stays `in_progress`.
        let job = emu.queue_job(repo, &["self-hosted", "bench"]);
        let name = format!("drover-bench-cpu-r{i}");
        emu.add_runner(
            RunnerHome::Org("acme".into()),
            &name,
            &["self-hosted", "bench"],
            true,
            false,
        );
        emu.start_job(job, &name);
    }

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gh.token"), PAT).unwrap();
    std::fs::write(
        dir.path().join("fleet.yaml"),
        format!(
            "apiVersion: drover.dev/v1alpha1\nkind: Fleet\nmetadata: {{name: bench}}\nspec:\n  github: {{url: \"{}\", tokenRef: gh}}\n---\n\
             apiVersion: drover.dev/v1alpha1\nkind: SecretRef\nmetadata: {{name: gh}}\nspec: {{file: {{path: \"{}/gh.token\"}}}}\n---\n\
             apiVersion: drover.dev/v1alpha1\nkind: Site\nmetadata: {{name: lab}}\nspec: {{kubernetes: {{context: bench}}}}\n---\n\
             apiVersion: drover.dev/v1alpha1\nkind: NodePool\nmetadata: {{name: cpu}}\nspec: {{site: lab}}\n---\n\
             apiVersion: drover.dev/v1alpha1\nkind: RunnerSet\nmetadata: {{name: cpu}}\nspec:\n  github: {{org: acme}}\n  labels: [bench]\n  pool: cpu\n  max: 200\n  image: runner:1\n",
            emu.url,
            dir.path().display()
        ),
    )
    .unwrap();
    let validation = validate_dir(dir.path(), &LoadOptions::default()).unwrap();
    assert!(validation.is_valid(), "{:#?}", validation.diagnostics);
    let autoscaler = Autoscaler::new(
        Settings {
            repositories: repos.clone(),
            ..Settings::default()
        },
        AutoscaleMetrics::new(),
    );
    autoscaler.configure("r1", &validation.repo).unwrap();

    let settings = Settings::default();
    let polls_per_hour = 3600.0 / settings.poll_interval.as_secs_f64();
    let refreshes_per_hour = 3600.0 / settings.refresh_interval.as_secs_f64();

    // Warm-up cycle: fills the ETag cache.
    autoscaler.poll_jobs().await.unwrap();
    autoscaler.refresh_runners().await.unwrap();
    let (sent0, charged0) = charged(&emu);

    let (mut poll_sent, mut poll_charged) = (0, 0);
    let (mut refresh_sent, mut refresh_charged) = (0, 0);
    for _ in 0..CYCLES {
        let before = charged(&emu);
        autoscaler.poll_jobs().await.unwrap();
        let mid = charged(&emu);
        autoscaler.refresh_runners().await.unwrap();
        let after = charged(&emu);
        poll_sent += mid.0 - before.0;
        poll_charged += mid.1 - before.1;
        refresh_sent += after.0 - mid.0;
        refresh_charged += after.1 - mid.1;
    }
    let per = |n: usize| n as f64 / CYCLES as f64;
    let hour_sent = per(poll_sent) * polls_per_hour + per(refresh_sent) * refreshes_per_hour;
    let hour_charged =
        per(poll_charged) * polls_per_hour + per(refresh_charged) * refreshes_per_hour;
    println!(
        "autoscaler polling, {REPOS} repositories, steady state ({CYCLES} cycles after warm-up)"
    );
    println!("  warm-up cycle: {sent0} requests, {charged0} charged");
    println!(
        "  per poll of queued jobs: {:.1} requests, {:.2} charged",
        per(poll_sent),
        per(poll_charged)
    );
    println!(
        "  per runner-list refresh: {:.1} requests, {:.2} charged",
        per(refresh_sent),
        per(refresh_charged)
    );
    println!(
        "  per hour (poll every {} s, refresh every {} s): {hour_sent:.0} requests, {hour_charged:.0} charged = {:.2}% of 5,000",
        settings.poll_interval.as_secs(),
        settings.refresh_interval.as_secs(),
        hour_charged / 5000.0 * 100.0
    );

    // Changing repositories: a new job queued in 5 repositories before every poll.
    let (mut sent, mut charged_n) = (0, 0);
    for cycle in 0..CYCLES {
        for r in 0..5 {
            emu.queue_job(&repos[(cycle * 5 + r) % REPOS], &["self-hosted", "bench"]);
        }
        let before = charged(&emu);
        autoscaler.poll_jobs().await.unwrap();
        let after = charged(&emu);
        sent += after.0 - before.0;
        charged_n += after.1 - before.1;
    }
    println!(
        "  with 5 repositories changing per poll: {:.1} requests, {:.1} charged per poll = {:.0} charged per hour",
        per(sent),
        per(charged_n),
        per(charged_n) * polls_per_hour
    );
    emu.assert_conformant();
}
