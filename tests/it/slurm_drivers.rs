//! One behaviour suite run against both Slurm drivers on the real Slurm test beds, once per
//! Slurm generation (`slurm_22_05::…`, `slurm_24_11::…`, `slurm_26_05::…`).
//!
//! Needs `scripts/slurm-testbed.sh up` and its `env` output in the environment:
//! `eval "$(scripts/slurm-testbed.sh env)" && cargo nextest run -E "test(/^slurm_drivers::/)"`.
//! A missing test bed fails the tests; they are never skipped.

use crate::per_generation;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use drover::sites::slurm::cli::{CliConfig, CliDriver};
use drover::sites::slurm::rest::{RestConfig, RestDriver};
use drover::sites::slurm::{ApiVersion, Error, Job, JobSpec, JobState, Secret, SlurmDriver};

use crate::support::slurm_bed::Bed;

/// The REST version drover should choose on each generation: the newest it serves.
fn newest_version(bed: &Bed) -> &'static str {
    match bed.generation.as_str() {
        "22.05" => "v0.0.38",
        "24.11" => "v0.0.42",
        _ => "v0.0.45",
    }
}

fn rest(bed: &Bed) -> RestDriver {
    RestDriver::new(RestConfig::new(
        &bed.url,
        &bed.user,
        Secret::new(&bed.token),
    ))
    .unwrap()
}

fn running_as_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}

fn cli(bed: &Bed) -> CliDriver {
    CliDriver::new(CliConfig {
        run_as: running_as_root().then(|| bed.user.clone()),
        slurm_conf: Some(PathBuf::from(&bed.conf)),
        bin_dir: Some(bed.bin.clone()),
        timeout: Duration::from_secs(30),
    })
}

/// A job name no other test (or earlier run) uses.
fn unique(tag: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "drover-test-{tag}-{}-{}",
        std::process::id(),
        nanos % 1_000_000_000
    )
}

fn spec(bed: &Bed, name: &str, partition: &str, gres: Option<&str>) -> JobSpec {
    JobSpec {
        name: name.to_owned(),
        comment: format!("drover:runnerset={name}"),
        partition: partition.to_owned(),
        account: None,
        qos: None,
        gres: gres.map(str::to_owned),
        cpus_per_task: 1,
        memory_mb: Some(64),
        time_limit_minutes: Some(5),
        constraint: None,
        working_directory: bed.workdir.clone(),
        script: "#!/bin/sh\nsleep 30\n".to_owned(),
        environment: BTreeMap::new(),
    }
}

async fn find_job(driver: &dyn SlurmDriver, id: u64) -> Job {
    let jobs = driver.jobs().await.unwrap();
    jobs.into_iter()
        .find(|j| j.id == id)
        .unwrap_or_else(|| panic!("job {id} not listed"))
}

/// Polls until `id` reaches `want`, or panics after 20 s.
async fn wait_for_state(driver: &dyn SlurmDriver, id: u64, want: JobState) -> Job {
    let start = Instant::now();
    loop {
        let job = find_job(driver, id).await;
        if job.state == want || start.elapsed() > Duration::from_secs(20) {
            assert_eq!(job.state, want, "job {id}: {job:?}");
            return job;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn submit_list_cancel(driver: &dyn SlurmDriver, bed: &Bed, tag: &str) {
    let cpu_spec = spec(bed, &unique(&format!("{tag}-cpu")), "cpu", None);
    let gpu_spec = spec(
        bed,
        &unique(&format!("{tag}-gpu")),
        "gpu",
        Some("gpu:a100:1"),
    );
    let cpu_id = driver.submit(&cpu_spec).await.unwrap();
    let gpu_id = driver.submit(&gpu_spec).await.unwrap();
    for (id, spec, gres) in [(cpu_id, &cpu_spec, ""), (gpu_id, &gpu_spec, "gpu:a100:1")] {
        let job = find_job(driver, id).await;
        assert_eq!(
            (job.name.as_str(), job.comment.as_str()),
            (spec.name.as_str(), spec.comment.as_str())
        );
        assert_eq!(
            (job.partition.as_str(), job.gres.as_str()),
            (spec.partition.as_str(), gres)
        );
        assert_eq!(job.user, bed.user);
        assert!(job.state.is_active(), "{job:?}");
        assert!(job.submit_time > 1_600_000_000, "{job:?}");
    }
    for id in [cpu_id, gpu_id] {
        driver.cancel(id).await.unwrap();
        wait_for_state(driver, id, JobState::Cancelled).await;
    }
}

async fn rest_submits_lists_and_cancels_on_each_partition(bed: Bed) {
    let bed = &bed;
    submit_list_cancel(&rest(bed), bed, "rest").await;
}

async fn cli_submits_lists_and_cancels_on_each_partition(bed: Bed) {
    let bed = &bed;
    submit_list_cancel(&cli(bed), bed, "cli").await;
}

async fn partitions_and_nodes(driver: &dyn SlurmDriver) {
    let parts = driver.partitions().await.unwrap();
    for name in ["cpu", "gpu"] {
        let p = parts
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no {name} in {parts:?}"));
        assert_eq!(p.state, "UP", "{p:?}");
        assert_eq!(
            (p.nodes.clone(), p.total_nodes),
            (vec!["localhost".to_owned()], 1)
        );
        assert_eq!(p.gres, "gpu:a100:4", "{p:?}");
    }
    let nodes = driver.nodes().await.unwrap();
    let node = nodes
        .iter()
        .find(|n| n.name == "localhost")
        .expect("node localhost");
    assert!(
        ["IDLE", "MIXED", "ALLOCATED"]
            .iter()
            .any(|s| node.state.starts_with(s)),
        "{node:?}"
    );
    assert_eq!(node.gres, "gpu:a100:4");
    assert!(
        node.partitions.contains(&"cpu".to_owned()) && node.partitions.contains(&"gpu".to_owned()),
        "{node:?}"
    );
}

async fn rest_lists_partitions_and_nodes(bed: Bed) {
    let bed = &bed;
    partitions_and_nodes(&rest(bed)).await;
}

async fn cli_lists_partitions_and_nodes(bed: Bed) {
    let bed = &bed;
    partitions_and_nodes(&cli(bed)).await;
}

/// The job sees its environment; the secret never shows up in what Slurm lists.
async fn environment_reaches_job_but_not_listing(driver: &dyn SlurmDriver, bed: &Bed, tag: &str) {
    let name = unique(tag);
    let secret = format!("secret-{name}");
    let out = format!("{}/{name}.out", bed.workdir);
    let mut s = spec(bed, &name, "cpu", None);
    s.environment
        .insert("DROVER_TEST_SECRET".to_owned(), secret.clone());
    s.script = format!("#!/bin/sh\nprintf '%s' \"$DROVER_TEST_SECRET\" > {out}\n");
    let id = driver.submit(&s).await.unwrap();
    let listing = format!("{:?}", driver.jobs().await.unwrap());
    assert!(
        !listing.contains(&secret),
        "secret leaked into the job listing"
    );
    let start = Instant::now();
    while std::fs::read_to_string(&out).map_or(true, |t| t.is_empty())
        && start.elapsed() < Duration::from_secs(20)
    {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        std::fs::read_to_string(&out).unwrap_or_default(),
        secret,
        "job {id} did not see its environment"
    );
    let _ = std::fs::remove_file(&out);
    let _ = std::fs::remove_file(format!("{}/slurm-{id}.out", bed.workdir));
}

async fn rest_passes_environment_to_the_job(bed: Bed) {
    let bed = &bed;
    environment_reaches_job_but_not_listing(&rest(bed), bed, "rest-env").await;
}

async fn cli_passes_environment_to_the_job(bed: Bed) {
    let bed = &bed;
    environment_reaches_job_but_not_listing(&cli(bed), bed, "cli-env").await;
}

async fn rest_negotiates_the_version_the_server_offers(bed: Bed) {
    let bed = &bed;
    let version = rest(bed).version().await.unwrap();
    assert_eq!(
        version.as_str(),
        newest_version(bed),
        "the newest version Slurm {} offers",
        bed.generation
    );
}

async fn rest_wrong_token_is_an_auth_error_without_the_token(bed: Bed) {
    let bed = &bed;
    for token in [
        "not-a-token",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdW4iOiJkcm92ZXItY2kifQ.forged-signature",
    ] {
        let newest = ApiVersion::PREFERENCE
            .into_iter()
            .find(|v| v.as_str() == newest_version(bed));
        for forced in [None, newest] {
            let mut cfg = RestConfig::new(&bed.url, &bed.user, Secret::new(token));
            cfg.version = forced;
            let err = RestDriver::new(cfg)
                .unwrap()
                .partitions()
                .await
                .unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, Error::Auth { .. }), "{err:?}");
            assert!(text.contains(&bed.url) && !text.contains(token), "{text}");
            assert!(!format!("{err:?}").contains(token));
        }
    }
}

async fn rest_unreachable_site_is_reported_with_its_url(bed: Bed) {
    let bed = &bed;
    let url = &bed.rest_down_url;
    let driver = RestDriver::new(RestConfig::new(url, "drover-ci", Secret::new("t"))).unwrap();
    let err = driver.jobs().await.unwrap_err();
    assert!(matches!(err, Error::RestUnreachable { .. }), "{err:?}");
    assert!(err.to_string().contains(url), "{err}");
}

async fn bad_partition(driver: &dyn SlurmDriver, bed: &Bed) -> Error {
    driver
        .submit(&spec(bed, &unique("bad"), "no-such-partition", None))
        .await
        .unwrap_err()
}

async fn submit_to_unknown_partition_reports_slurms_error(bed: Bed) {
    let bed = &bed;
    let rest_err = bad_partition(&rest(bed), bed).await;
    assert!(matches!(rest_err, Error::Api { .. }), "{rest_err:?}");
    assert!(
        rest_err
            .to_string()
            .contains("Invalid partition name specified"),
        "{rest_err}"
    );
    let cli_err = bad_partition(&cli(bed), bed).await;
    assert!(matches!(cli_err, Error::Command { .. }), "{cli_err:?}");
    assert!(
        cli_err.to_string().contains("invalid partition"),
        "{cli_err}"
    );
}

/// Sets a partition's state with `scontrol` (as root, the test bed's admin).
fn set_partition_state(bed: &Bed, partition: &str, state: &str) {
    let status = bed
        .tool("scontrol")
        .args([
            "update",
            &format!("partitionname={partition}"),
            &format!("state={state}"),
        ])
        .status()
        .expect("run scontrol");
    assert!(
        status.success(),
        "scontrol update partitionname={partition} state={state} failed"
    );
}

/// Puts the partition back UP even when an assertion fails.
struct Restore<'a>(&'a Bed, &'a str);

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        set_partition_state(self.0, self.1, "up");
    }
}

async fn partition_state(driver: &dyn SlurmDriver, name: &str) -> String {
    let parts = driver.partitions().await.unwrap();
    parts
        .into_iter()
        .find(|p| p.name == name)
        .map(|p| p.state)
        .unwrap_or_default()
}

async fn a_partition_set_down_is_observed_by_both_drivers(bed: Bed) {
    let bed = &bed;
    set_partition_state(bed, "maint", "down");
    let _restore = Restore(bed, "maint");
    assert_eq!(partition_state(&rest(bed), "maint").await, "DOWN");
    assert_eq!(partition_state(&cli(bed), "maint").await, "DOWN");
}

per_generation!(
    rest_submits_lists_and_cancels_on_each_partition,
    cli_submits_lists_and_cancels_on_each_partition,
    rest_lists_partitions_and_nodes,
    cli_lists_partitions_and_nodes,
    rest_passes_environment_to_the_job,
    cli_passes_environment_to_the_job,
    rest_negotiates_the_version_the_server_offers,
    rest_wrong_token_is_an_auth_error_without_the_token,
    rest_unreachable_site_is_reported_with_its_url,
    submit_to_unknown_partition_reports_slurms_error,
    a_partition_set_down_is_observed_by_both_drivers,
);
