//! The REST driver against real slurmrestd of every Slurm generation the test beds run:
//! version negotiation, a held job submitted, listed and cancelled, and the error kinds of
//! a bad token, a stopped slurmctld and a stopped slurmrestd, with nothing submitted or
//! cancelled by mistake. Plus 24.11's slurmrestd restricted to v0.0.40 and to v0.0.41, so
//! the older codecs keep a live test now that the newest version is preferred.
//!
//! Needs the test beds: `scripts/slurm-testbed.sh up`, then
//! `eval "$(scripts/slurm-testbed.sh env)" && cargo nextest run -E "test(/^slurm_rest::/)"`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::support::slurm_bed::Bed;
use drover::sites::slurm::observe::{self, ObserveError};
use drover::sites::slurm::rest::{RestConfig, RestDriver};
use drover::sites::slurm::{ApiVersion, Error, Job, JobSpec, JobState, Secret, SlurmDriver};

/// Long enough for slurmrestd's own retries when slurmctld is down (~10 s per request,
/// and a fault instance may be serving other tests' requests too).
const PATIENCE: Duration = Duration::from_secs(60);

fn driver_at(url: &str, bed: &Bed, token: &str) -> RestDriver {
    let mut cfg = RestConfig::new(url, &bed.user, Secret::new(token));
    cfg.timeout = PATIENCE;
    RestDriver::new(cfg).unwrap()
}

fn driver(bed: &Bed) -> RestDriver {
    driver_at(&bed.url, bed, &bed.token)
}

/// The newest version each generation serves.
fn newest(bed: &Bed) -> ApiVersion {
    match bed.generation.as_str() {
        "22.05" => ApiVersion::V0038,
        "24.11" => ApiVersion::V0042,
        "26.05" => ApiVersion::V0045,
        other => panic!("no expectation for Slurm {other}"),
    }
}

/// A job name no other test uses: `drover-resttest-<generation>-<what>-<unique>`.
fn unique(bed: &Bed, what: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "drover-resttest-{}-{what}-{}{nanos:09}",
        bed.generation.replace('.', ""),
        std::process::id()
    )
}

fn spec(bed: &Bed, name: &str) -> JobSpec {
    JobSpec {
        name: name.to_owned(),
        comment: "drover REST driver test".into(),
        partition: "cpu".into(),
        account: None,
        qos: None,
        gres: None,
        cpus_per_task: 1,
        memory_mb: Some(100),
        time_limit_minutes: Some(5),
        constraint: None,
        working_directory: bed.workdir.clone(),
        script: "#!/bin/sh\nsleep 300\n".into(),
        environment: [("DROVER_TEST".to_owned(), "1".to_owned())].into(),
    }
}

/// Cancels the test's jobs (by name prefix, as root) when the test ends, even on panic.
struct Cleanup<'a> {
    bed: &'a Bed,
    prefix: String,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        self.bed.cancel_named(&self.prefix);
    }
}

/// The jobs named `name` on the bed's main slurmrestd.
async fn named(bed: &Bed, name: &str) -> Vec<Job> {
    let jobs = driver(bed).jobs().await.unwrap();
    jobs.into_iter().filter(|j| j.name == name).collect()
}

/// A held job submitted through the main slurmrestd, whose survival shows that a failed
/// cancel cancelled nothing.
async fn witness(bed: &Bed, name: &str) -> u64 {
    let id = driver(bed).submit_held(&spec(bed, name)).await.unwrap();
    assert_held(bed, name, id).await;
    id
}

async fn assert_held(bed: &Bed, name: &str, id: u64) {
    let jobs = named(bed, name).await;
    assert_eq!(jobs.len(), 1, "Slurm {}: {jobs:?}", bed.generation);
    let job = &jobs[0];
    assert_eq!(
        (job.id, &job.state, job.reason.as_str()),
        (id, &JobState::Pending, "JobHeldUser"),
        "Slurm {}: {job:?}",
        bed.generation
    );
}

/// Every call of `driver` fails with the error kind `is_kind` accepts, nothing is submitted
/// (no job named `name` appears) and the witness job `keep` is not cancelled. Returns the
/// error of observing (the three reads in parallel).
async fn every_call_fails(
    bed: &Bed,
    driver: &RestDriver,
    name: &str,
    keep: u64,
    is_kind: fn(&Error) -> bool,
    secrets: &[&str],
) -> Error {
    let check = |what: &str, err: &Error| {
        assert!(is_kind(err), "Slurm {} {what}: {err:?}", bed.generation);
        let text = format!("{err} {err:?}");
        for s in secrets {
            assert!(!text.contains(s), "the token leaked: {text}");
        }
        eprintln!("Slurm {} {what}: {err}", bed.generation);
    };
    let observed = match observe::observe(driver, PATIENCE * 2).await {
        Err(ObserveError::Slurm(e)) => e,
        other => panic!(
            "Slurm {}: observe must fail, never see an empty site: {other:?}",
            bed.generation
        ),
    };
    check("observe", &observed);
    check("jobs", &driver.jobs().await.unwrap_err());
    let id = driver.submit_held(&spec(bed, name)).await;
    check("submit", &id.unwrap_err());
    check("cancel", &driver.cancel(keep).await.unwrap_err());
    check("release", &driver.release(keep).await.unwrap_err());
    assert!(
        named(bed, name).await.is_empty(),
        "Slurm {}: a job was submitted",
        bed.generation
    );
    let witness = named(bed, &format!("{name}-witness")).await;
    assert_eq!(
        witness.iter().map(|j| (j.id, &j.state)).collect::<Vec<_>>(),
        vec![(keep, &JobState::Pending)],
        "Slurm {}: the witness job was touched",
        bed.generation
    );
    observed
}

// ---------------------------------------------------------------------------------------
// On every generation
// ---------------------------------------------------------------------------------------

crate::per_generation!(
    negotiates_the_newest_version,
    held_job_is_submitted_listed_and_cancelled,
    bad_tokens_are_auth_errors,
    stopped_slurmctld_is_controller_unreachable,
    stopped_slurmrestd_is_rest_unreachable,
);

async fn negotiates_the_newest_version(bed: Bed) {
    let rest = driver(&bed);
    assert_eq!(rest.api(), None, "nothing is known before the first call");
    assert_eq!(rest.version().await.unwrap(), newest(&bed));
    assert_eq!(
        rest.api().as_deref(),
        Some(format!("slurmrestd {}", newest(&bed)).as_str())
    );
}

async fn held_job_is_submitted_listed_and_cancelled(bed: Bed) {
    round_trip(&bed, &bed.url, newest(&bed)).await;
}

/// Through the slurmrestd at `url`, which must negotiate `version`: a held job is
/// submitted and seen held, released and seen released, cancelled and seen ended;
/// partitions and nodes are read.
async fn round_trip(bed: &Bed, url: &str, version: ApiVersion) {
    let name = unique(bed, &format!("trip{}", version.as_str().replace('.', "")));
    let _cleanup = Cleanup {
        bed,
        prefix: name.clone(),
    };
    let rest = driver_at(url, bed, &bed.token);
    assert_eq!(rest.version().await.unwrap(), version, "{url}");
    let id = rest.submit_held(&spec(bed, &name)).await.unwrap();
    let listed: Vec<Job> = rest
        .jobs()
        .await
        .unwrap()
        .into_iter()
        .filter(|j| j.name == name)
        .collect();
    assert_eq!(listed.len(), 1, "{listed:?}");
    let job = &listed[0];
    assert_eq!(
        (job.id, &job.state, job.reason.as_str()),
        (id, &JobState::Pending, "JobHeldUser")
    );
    assert_eq!(
        (
            job.user.as_str(),
            job.partition.as_str(),
            job.comment.as_str()
        ),
        (bed.user.as_str(), "cpu", "drover REST driver test")
    );
    assert!(
        job.submit_time > 0 && job.tres.contains("mem=100M"),
        "{job:?}"
    );
    rest.release(id).await.unwrap();
    let released = rest.jobs().await.unwrap();
    let job = released.iter().find(|j| j.id == id).expect("listed");
    assert!(
        job.state.is_active() && job.reason != "JobHeldUser",
        "Slurm {} {version}: not released: {job:?}",
        bed.generation
    );
    rest.cancel(id).await.unwrap();
    let after: Vec<Job> = rest
        .jobs()
        .await
        .unwrap()
        .into_iter()
        .filter(|j| j.id == id)
        .collect();
    assert!(
        after.iter().all(|j| !j.state.is_active()),
        "Slurm {} {version}: still active after cancel: {after:?}",
        bed.generation
    );
    // Cancelling it again is not an error (v0.0.42+ report "already completing or
    // completed" per job; older versions answer success).
    rest.cancel(id).await.unwrap();
    let partitions = rest.partitions().await.unwrap();
    let cpu = partitions.iter().find(|p| p.name == "cpu").expect("cpu");
    assert!(cpu.total_nodes >= 1 && !cpu.nodes.is_empty(), "{cpu:?}");
    let nodes = rest.nodes().await.unwrap();
    assert!(
        nodes
            .iter()
            .any(|n| n.partitions.iter().any(|p| p == "cpu")),
        "{nodes:?}"
    );
}

async fn bad_tokens_are_auth_errors(bed: Bed) {
    let name = unique(&bed, "auth");
    let _cleanup = Cleanup {
        bed: &bed,
        prefix: name.clone(),
    };
    let keep = witness(&bed, &format!("{name}-witness")).await;
    let garbage = "not-a-token";
    for token in [bed.expired_token.as_str(), garbage] {
        let rest = driver_at(&bed.url, &bed, token);
        let err = every_call_fails(
            &bed,
            &rest,
            &name,
            keep,
            |e| matches!(e, Error::Auth { .. }),
            &[token, &bed.token],
        )
        .await;
        // 1007 from 24.11 on (the partitions endpoint's bare 511 loses), -1 on 22.05.
        let code = if bed.generation == "22.05" { -1 } else { 1007 };
        assert_eq!(err.code(), Some(code), "{err:?}");
    }
}

async fn stopped_slurmctld_is_controller_unreachable(bed: Bed) {
    let name = unique(&bed, "ctld");
    let _cleanup = Cleanup {
        bed: &bed,
        prefix: name.clone(),
    };
    let keep = witness(&bed, &format!("{name}-witness")).await;
    let rest = driver_at(&bed.ctld_down_url, &bed, &bed.token);
    let err = every_call_fails(
        &bed,
        &rest,
        &name,
        keep,
        |e| matches!(e, Error::ControllerUnreachable { .. }),
        &[&bed.token],
    )
    .await;
    // The coded answer wins over the partitions endpoint's bare 502: 1800 from 24.11 on,
    // 22.05's slow unspecified error (-1) before.
    let code = if bed.generation == "22.05" { -1 } else { 1800 };
    assert_eq!(err.code(), Some(code), "{err:?}");
    assert!(
        err.to_string().contains("slurmctld is down or unreachable"),
        "{err}"
    );
    assert_eq!(rest.api(), Some(format!("slurmrestd {}", newest(&bed))));
}

async fn stopped_slurmrestd_is_rest_unreachable(bed: Bed) {
    let name = unique(&bed, "restdown");
    let _cleanup = Cleanup {
        bed: &bed,
        prefix: name.clone(),
    };
    let keep = witness(&bed, &format!("{name}-witness")).await;
    let rest = driver_at(&bed.rest_down_url, &bed, &bed.token);
    let err = rest.version().await.unwrap_err();
    assert!(matches!(err, Error::RestUnreachable { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&bed.rest_down_url) && text.contains("unreachable"),
        "{text}"
    );
    let _ = every_call_fails(
        &bed,
        &rest,
        &name,
        keep,
        |e| matches!(e, Error::RestUnreachable { .. }),
        &[&bed.token],
    )
    .await;
    assert_eq!(rest.api(), None, "no version was chosen");
}

// ---------------------------------------------------------------------------------------
// 24.11's slurmrestd restricted to one older version
// ---------------------------------------------------------------------------------------

fn restricted(key: &str) -> (Bed, String) {
    let bed = Bed::load("24.11");
    let url = bed
        .extra
        .get(key)
        .unwrap_or_else(|| panic!("the 24.11 test bed has no {key}"))
        .clone();
    (bed, url)
}

#[tokio::test]
async fn slurm_24_11_restricted_to_v0040_is_spoken_in_v0040() {
    let (bed, url) = restricted("REST_URL_V0040");
    round_trip(&bed, &url, ApiVersion::V0040).await;
}

#[tokio::test]
async fn slurm_24_11_restricted_to_v0041_is_spoken_in_v0041() {
    let (bed, url) = restricted("REST_URL_V0041");
    round_trip(&bed, &url, ApiVersion::V0041).await;
}
