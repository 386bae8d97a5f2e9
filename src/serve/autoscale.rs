//! The service's side of autoscaling: the loop that reads demand and runners from GitHub
//! and applies runner changes to the sites (runners only, the fast path), the run options
//! every site reconcile gets from the autoscaler, and the Slurm JIT endpoint (`POST /jit`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use super::Service;
use super::site_worker::SiteTrigger;
use crate::autoscale::Autoscaler;
use crate::fleet::FleetRepo;
use crate::plan::{Action, RunnerReason};
use crate::runners::RunnerId;
use crate::sites::{Registry, RunOptions, SiteContext};

/// The run options of a site reconcile with the autoscaler's decisions and registry.
/// Before the autoscaler has read GitHub once, or without one, `options` is unchanged.
pub(crate) fn with_autoscaler(options: &mut RunOptions, autoscaler: Option<&Arc<Autoscaler>>) {
    let Some(a) = autoscaler else {
        return;
    };
    if !a.has_sets() || !a.warm() {
        return;
    }
    options.desired_runners.extend(a.desired());
    options.scale_notes = a
        .rows()
        .into_iter()
        .map(|(set, row)| (set, row.explain))
        .collect();
    options.registry = Some(Registry(a.clone()));
    options.site_cache = Some(a.site_cache());
}

/// The autoscaler: a GitHub task (runner list and queued-job polls on their intervals)
/// and the decision loop (a decision after every change, and a runners-only apply of each
/// site whose runners may need to change, every site once per refresh interval). They run
/// side by side, so a slow GitHub read never delays runner creation. Only the leader acts.
///
/// Runner counts are runtime state, like the Pods of a Deployment: with autoscaling on they
/// are kept at the decision whatever the site's drift policy. Without it, runner counts
/// change only with applies (new revision, manual trigger, `heal`).
pub(crate) async fn run(service: Arc<Service>, stop: tokio::sync::watch::Receiver<bool>) {
    let Some(autoscaler) = service.autoscaler.clone() else {
        return;
    };
    tokio::join!(
        github_sync(service.clone(), autoscaler.clone(), stop.clone()),
        decide_loop(service, autoscaler, stop)
    );
}

/// Reads GitHub's runner list and polls queued jobs on their intervals (leader only).
async fn github_sync(
    service: Arc<Service>,
    autoscaler: Arc<Autoscaler>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let settings = service.config.autoscale.clone().unwrap_or_default();
    let mut next_poll = Instant::now();
    loop {
        if service.status().leader && autoscaler.has_sets() {
            if let Err(e) = autoscaler.refresh_runners().await {
                tracing::warn!(error = %e, "reading GitHub's runners failed");
            }
            if Instant::now() >= next_poll {
                next_poll = Instant::now() + settings.poll_interval;
                if let Err(e) = autoscaler.poll_jobs().await {
                    tracing::warn!(error = %e, "polling queued jobs failed");
                }
            }
            autoscaler.wake();
        }
        let pause = settings
            .refresh_interval
            .min(next_poll.saturating_duration_since(Instant::now()))
            .max(Duration::from_millis(200));
        tokio::select! {
            _ = stop.changed() => break,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// Decides after every change and applies runner changes to the sites that need them.
async fn decide_loop(
    service: Arc<Service>,
    autoscaler: Arc<Autoscaler>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let settings = service.config.autoscale.clone().unwrap_or_default();
    let tick = Duration::from_secs(1);
    let mut last_desired: BTreeMap<String, u32> = BTreeMap::new();
    let mut next_round = Instant::now();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = autoscaler.woken(tick) => {}
        }
        if !service.status().leader || !autoscaler.has_sets() || !autoscaler.warm() {
            continue;
        }
        let all_sites = Instant::now() >= next_round;
        let desired = autoscaler.decide().desired();
        let sites = sites_to_round(&autoscaler, &last_desired, &desired, all_sites);
        last_desired = desired;
        if all_sites {
            next_round = Instant::now() + settings.refresh_interval;
        }
        if !sites.is_empty() {
            runner_round(&service, sites).await;
        }
    }
}

/// Sites whose sets' desired counts changed, or every scaled site.
fn sites_to_round(
    autoscaler: &Autoscaler,
    before: &BTreeMap<String, u32>,
    now: &BTreeMap<String, u32>,
    all: bool,
) -> BTreeSet<String> {
    autoscaler
        .set_sites()
        .into_iter()
        .filter(|(set, _)| all || before.get(set) != now.get(set))
        .map(|(_, site)| site)
        .collect()
}

/// Applies runner changes (only) to `sites`, concurrently, each under its site lock.
async fn runner_round(service: &Arc<Service>, sites: BTreeSet<String>) {
    let Some((_, repo)) = service.good.lock().expect("good lock").clone() else {
        return;
    };
    if let Some(a) = &service.autoscaler {
        a.site_cache().retain(&repo.sites.keys().cloned().collect());
    }
    let mut tasks = Vec::new();
    for site in sites {
        let (service, repo) = (service.clone(), repo.clone());
        tasks.push(tokio::spawn(async move {
            let span = tracing::info_span!("runners", site = %site);
            runners_only(&service, &repo, &site).instrument(span).await;
        }));
    }
    for task in tasks {
        if let Err(e) = task.await {
            tracing::error!(error = %e, "a runner round failed");
        }
    }
}

async fn runners_only(service: &Arc<Service>, repo: &FleetRepo, site: &str) {
    let done = service
        .reconcile_site(repo, site, SiteTrigger::RunnersOnly)
        .await;
    if let Some(e) = &done.plan.error {
        tracing::warn!(site, error = %e, "runner round failed");
        return;
    }
    for (action, target, error) in done.report.iter().flat_map(|r| &r.failed) {
        tracing::warn!(site, ?action, target = %target, %error, "runner change failed");
    }
}

/// Counts runners replaced because they never came online (`runner-start-timeout`).
pub(crate) fn count_failed_starts(autoscaler: &Autoscaler, plan: &crate::plan::SitePlan) {
    for change in &plan.changes {
        let timed_out = change.action == Action::Delete
            && change
                .runner
                .is_some_and(|r| r.reason == RunnerReason::StartTimeout);
        if let Some(id) = RunnerId::of_target(&change.target).filter(|_| timed_out) {
            autoscaler.failed_start(&id.set);
        }
    }
}

/// Header a Slurm runner job names itself with when it redeems its grant.
pub(crate) const SLURM_JOB_HEADER: &str = "x-drover-slurm-job";

/// `POST /jit`: a starting Slurm runner job trades its one-time credential for its JIT
/// config. The credential is consumed by the first attempt; the job must be drover's
/// running job for the grant's site, runner set and slot, submitted after the grant was
/// issued. Answers 401 for an unknown, used or expired credential and 403 when the job
/// does not match; the config itself is the body (`text/plain`).
pub(crate) async fn jit(State(service): State<Arc<Service>>, headers: HeaderMap) -> Response {
    let Some(autoscaler) = service.autoscaler.clone() else {
        return (StatusCode::NOT_FOUND, "autoscaling is off").into_response();
    };
    let token = super::http::bearer_token(&headers);
    let Some(grant) = token.and_then(|t| autoscaler.take_grant(t)) else {
        return (
            StatusCode::UNAUTHORIZED,
            "unknown, used or expired credential",
        )
            .into_response();
    };
    let Some(job_id) = headers
        .get(SLURM_JOB_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
    else {
        return (StatusCode::BAD_REQUEST, "missing X-Drover-Slurm-Job").into_response();
    };
    let Some((_, repo)) = service.good.lock().expect("good lock").clone() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "no fleet revision").into_response();
    };
    let Some(site) = repo.sites.get(&grant.request.site) else {
        return (StatusCode::FORBIDDEN, "the grant's site is gone").into_response();
    };
    let options = service.config.run_options.clone();
    let ctx = SiteContext {
        repo: &repo,
        site,
        options: &options,
    };
    let runner = match crate::sites::slurm::runner_job(&ctx, job_id).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            return (StatusCode::FORBIDDEN, "no such running drover runner job").into_response();
        }
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let matches = runner.identity.set == grant.request.runner_set
        && runner.identity.slot == grant.request.slot
        && runner.identity.fleet == grant.request.fleet
        && runner.submit_time + 5 >= grant.issued_at;
    if !matches {
        tracing::warn!(
            job = job_id,
            "a JIT credential was presented by a job it was not issued for"
        );
        return (
            StatusCode::FORBIDDEN,
            "the credential was not issued for this job",
        )
            .into_response();
    }
    let name = runner.runner_name();
    let registry: &dyn crate::runners::RunnerRegistry = autoscaler.as_ref();
    match registry.jit_config(&runner.identity.set, &name).await {
        Ok(config) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain")],
            config.expose().to_string(),
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(job = job_id, error = %e, "generating a JIT config failed");
            (StatusCode::BAD_GATEWAY, format!("GitHub: {e}")).into_response()
        }
    }
}
