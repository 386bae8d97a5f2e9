//! Slurm runner submission and observation on the real test beds (`harness = false`), once
//! per Slurm generation (22.05, 24.11, 26.05; `BENCH_GENERATIONS` picks some).
//!
//! ```sh
//! scripts/slurm-testbed.sh up && eval "$(scripts/slurm-testbed.sh env)"
//! cargo bench --bench slurm_submit            # BENCH_JOBS=50 BENCH_QUEUE=1000 by default
//! ```
//!
//! Prints, per generation, in one run on the same machine:
//! 1. runner submissions per second through drover's `apply` (REST driver: held submit,
//!    queue re-read, release), through the bare REST driver's `submit`, and through a plain
//!    `sbatch` loop, with the ratios;
//! 2. how long `plan` (observe + plan) takes with 1,000 of drover's jobs queued, for both
//!    drivers.
//!
//! Every job goes to a partition the benchmark creates DOWN, so nothing runs; everything
//! is cancelled and the partition deleted at the end. The `sbatch` loop runs the
//! generation's own sbatch inside its root (the test bed's wrapper, one `chroot` per call).
//! It ends with one table row per generation for docs/performance.md.

use std::time::{Duration, Instant};

#[path = "../tests/it/support/slurm_bed.rs"]
#[allow(dead_code, unused_macros)]
mod slurm_bed;
use slurm_bed::Bed;

use drover::credentials::Secret;
use drover::fleet::{LoadOptions, Validation, validate_dir};
use drover::sites::slurm::SlurmDriver;
use drover::sites::slurm::rest::{RestConfig, RestDriver};
use drover::sites::{RunOptions, SiteContext};

fn count(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A fleet with one runner set on `partition`, reached by REST or CLI.
fn fleet(bed: &Bed, dir: &std::path::Path, name: &str, partition: &str, rest: bool) -> Validation {
    let token = dir.join("jwt");
    std::fs::write(&token, &bed.token).unwrap();
    let user = &bed.user;
    let driver = if rest {
        format!(
            "rest: {{url: \"{}\", user: {user}, tokenRef: jwt}}",
            bed.url
        )
    } else {
        format!(
            "cli: {{user: {user}, binDir: \"{}\", slurmConf: \"{}\"}}",
            bed.bin.display(),
            bed.conf
        )
    };
    let yaml = format!(
        r#"apiVersion: drover.dev/v1alpha1
kind: Fleet
metadata: {{name: {name}}}
spec: {{github: {{tokenRef: jwt}}}}
---
apiVersion: drover.dev/v1alpha1
kind: SecretRef
metadata: {{name: jwt}}
spec: {{file: {{path: "{token}"}}}}
---
apiVersion: drover.dev/v1alpha1
kind: Site
metadata: {{name: bed}}
spec:
  slurm: {{{driver}, scratchDir: /tmp}}
  timeoutSeconds: 120
---
apiVersion: drover.dev/v1alpha1
kind: NodePool
metadata: {{name: down}}
spec: {{site: bed, slurm: {{partition: {partition}}}}}
---
apiVersion: drover.dev/v1alpha1
kind: RunnerSet
metadata: {{name: bench}}
spec:
  github: {{org: acme}}
  labels: [self-hosted, bench]
  pool: down
  max: 10000
  resources: {{cpu: "1", memory: 64Mi}}
  command: [sleep, "300"]
"#,
        token = token.display()
    );
    std::fs::write(dir.join("fleet.yaml"), yaml).unwrap();
    let v = validate_dir(dir, &LoadOptions::default()).unwrap();
    assert!(v.is_valid(), "{:?}", v.diagnostics);
    v
}

fn options(n: u32) -> RunOptions {
    RunOptions {
        desired_runners: [("bench".to_owned(), n)].into(),
        ..RunOptions::default()
    }
}

fn ctx<'a>(v: &'a Validation, options: &'a RunOptions) -> SiteContext<'a> {
    SiteContext {
        repo: &v.repo,
        site: &v.repo.sites["bed"],
        options,
    }
}

fn cancel_partition(bed: &Bed, partition: &str) {
    let _ = bed
        .tool("scancel")
        .args([&format!("--partition={partition}")])
        .status();
}

fn rate(n: u32, took: Duration) -> f64 {
    f64::from(n) / took.as_secs_f64()
}

/// One generation's figures, for the closing table.
struct Row {
    generation: String,
    version: String,
    api: String,
    apply: f64,
    driver: f64,
    sbatch: f64,
    plan_rest_ms: f64,
    plan_cli_ms: f64,
}

async fn run(bed: &Bed, partition: &str, jobs: u32, queue: u32) -> Row {
    let dir = tempfile::tempdir().unwrap();
    let fleet_name = format!("bench-{}", std::process::id());
    let rest_fleet = fleet(bed, dir.path(), &fleet_name, partition, true);

    // 1. drover apply (REST): held submit + re-read + release, CONCURRENCY in flight.
    let opts = options(jobs);
    let started = Instant::now();
    let (_, report) = drover::sites::slurm::apply(&ctx(&rest_fleet, &opts)).await;
    let apply_took = started.elapsed();
    assert!(report.is_success(), "{report:#?}");
    assert_eq!(report.applied.len(), jobs as usize);
    cancel_partition(bed, partition);

    // 2. The bare REST driver, one submit after another.
    let driver = RestDriver::new(RestConfig::new(
        &bed.url,
        &bed.user,
        Secret::new(&bed.token),
    ))
    .unwrap();
    let api = driver.version().await.unwrap().as_str().to_owned();
    let templates = drover::sites::slurm::render::render(&ctx(&rest_fleet, &opts)).unwrap();
    let spec = templates[0].job(1);
    let started = Instant::now();
    for _ in 0..jobs {
        driver.submit(&spec).await.unwrap();
    }
    let driver_took = started.elapsed();
    cancel_partition(bed, partition);

    // 3. A plain sbatch loop (as root, no runuser), one process per job.
    let started = Instant::now();
    for _ in 0..jobs {
        let ok = bed
            .tool("sbatch")
            .args([
                "--parsable",
                "--quiet",
                &format!("--partition={partition}"),
                "--job-name=bench-sbatch",
                "--chdir=/tmp",
                "--mem=64M",
                "--wrap=sleep 300",
            ])
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "sbatch failed");
    }
    let sbatch_took = started.elapsed();
    cancel_partition(bed, partition);

    let (a, d, s) = (
        rate(jobs, apply_took),
        rate(jobs, driver_took),
        rate(jobs, sbatch_took),
    );
    println!(
        "submitting {jobs} runner jobs on Slurm {} ({}, slurmrestd {api}):",
        bed.generation, bed.version
    );
    println!(
        "  drover apply (REST, held + release):  {a:8.1} jobs/s  ({:.2} s)",
        apply_took.as_secs_f64()
    );
    println!(
        "  bare REST driver submit (sequential): {d:8.1} jobs/s  ({:.2} s)",
        driver_took.as_secs_f64()
    );
    println!(
        "  plain sbatch loop:                    {s:8.1} jobs/s  ({:.2} s)",
        sbatch_took.as_secs_f64()
    );
    println!(
        "  ratio drover apply / sbatch = {:.2}, REST driver / sbatch = {:.2}",
        a / s,
        d / s
    );

    // 4. Observe + plan with `queue` drover jobs queued.
    let opts = options(queue);
    let started = Instant::now();
    let (_, report) = drover::sites::slurm::apply(&ctx(&rest_fleet, &opts)).await;
    let fill_took = started.elapsed();
    assert!(report.is_success(), "{:?}", report.failed.first());
    println!(
        "queued {queue} runner jobs with one drover apply in {:.1} s ({:.0} jobs/s)",
        fill_took.as_secs_f64(),
        rate(queue, fill_took)
    );
    let cli_dir = tempfile::tempdir().unwrap();
    let cli_fleet = fleet(bed, cli_dir.path(), &fleet_name, partition, false);
    let mut medians = Vec::new();
    for (label, v) in [("REST", &rest_fleet), ("CLI ", &cli_fleet)] {
        let mut times = Vec::new();
        for _ in 0..5 {
            let started = Instant::now();
            let plan = drover::sites::slurm::plan(&ctx(v, &opts)).await;
            times.push(started.elapsed());
            assert!(plan.error.is_none(), "{:?}", plan.error);
            assert_eq!(plan.counts().unchanged, queue as usize);
        }
        times.sort();
        println!(
            "  plan with {queue} queued jobs, {label}: median {:.0} ms (min {:.0} ms, max {:.0} ms, 5 runs)",
            times[2].as_secs_f64() * 1e3,
            times[0].as_secs_f64() * 1e3,
            times[4].as_secs_f64() * 1e3
        );
        medians.push(times[2].as_secs_f64() * 1e3);
    }
    cancel_partition(bed, partition);
    Row {
        generation: bed.generation.clone(),
        version: bed.version.clone(),
        api,
        apply: a,
        driver: d,
        sbatch: s,
        plan_rest_ms: medians[0],
        plan_cli_ms: medians[1],
    }
}

/// Runs the benchmark on one generation, with its own DOWN partition.
fn bench_generation(bed: &Bed, jobs: u32, queue: u32) -> Row {
    let partition = format!("bench{}", std::process::id());
    bed.scontrol(&[
        "create",
        &format!("PartitionName={partition}"),
        "Nodes=localhost",
        "State=DOWN",
    ]);
    let result = std::panic::catch_unwind(|| {
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(run(bed, &partition, jobs, queue))
    });
    cancel_partition(bed, &partition);
    std::thread::sleep(Duration::from_secs(1));
    let _ = bed
        .tool("scontrol")
        .args(["delete", &format!("PartitionName={partition}")])
        .status();
    result.unwrap_or_else(|e| std::panic::resume_unwind(e))
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: run briefly.
    let quick = !std::env::args().any(|a| a == "--bench");
    let jobs = count("BENCH_JOBS", if quick { 5 } else { 50 });
    let queue = count("BENCH_QUEUE", if quick { 20 } else { 1000 });
    let generations =
        std::env::var("BENCH_GENERATIONS").unwrap_or_else(|_| slurm_bed::GENERATIONS.join(" "));
    let rows: Vec<Row> = generations
        .split_whitespace()
        .map(|g| bench_generation(&Bed::load(g), jobs, queue))
        .collect();
    println!();
    println!(
        "| Slurm | REST | drover apply (jobs/s) | bare REST driver (jobs/s) | sbatch loop (jobs/s) | apply / sbatch | plan, {queue} queued, REST | plan, CLI |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} ({}) | {} | {:.1} | {:.1} | {:.1} | {:.2} | {:.0} ms | {:.0} ms |",
            r.generation,
            r.version,
            r.api,
            r.apply,
            r.driver,
            r.sbatch,
            r.apply / r.sbatch,
            r.plan_rest_ms,
            r.plan_cli_ms
        );
    }
}
