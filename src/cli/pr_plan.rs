//! `drover plan --pr`: plan a fleet-repo pull request and report on it — one sticky
//! comment, a check run (or commit status) with annotations, the job summary — and never
//! apply anything. The pure parts live in `drover::pr`; behaviour is documented in
//! `docs/pr-plans.md`.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;

use drover::credentials::Secret;
use drover::fleet::{self, FleetRepo, LoadOptions};
use drover::github::pulls::{CheckRun, Reported};
use drover::github::{Auth, GithubClient, GithubError, RetryPolicy};
use drover::plan::Plan;
use drover::pr::comment::{self, Report};
use drover::pr::trust::{self, SiteMode};
use drover::pr::{self, Annotation, PrContext};
use drover::reconcile;
use drover::redact::Redactor;

use super::Exit;
use super::fleet_arg::runtime;
use super::plan_args::{PlanArgs, PrArgs, exit_for, format_plan};

/// Name of the check run (and commit status context).
const CHECK_NAME: &str = "drover plan";
/// GitHub's limit on a job summary is 1 MiB (bytes); this many characters stay below it
/// even with some multi-byte text.
const STEP_SUMMARY_LIMIT: usize = 500_000;

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Runs `drover plan --pr`.
pub fn run(args: &PlanArgs) -> anyhow::Result<Exit> {
    let opts = &args.pr;
    let token = env("GITHUB_TOKEN");
    let mut masker = Redactor::new();
    if let Some(t) = &token {
        masker.know(t);
    }
    let api = opts
        .github_api
        .clone()
        .or_else(|| env("GITHUB_API_URL"))
        .unwrap_or_else(|| "https://api.github.com".into());
    let rt = runtime()?;
    // octocrab's client must be built inside a runtime.
    let _runtime = rt.enter();
    let client = match &token {
        Some(t) => Some(GithubClient::new(
            &api,
            &Auth::Token(Secret::new(t.clone())),
            // A handful of calls: no reserve to keep for an autoscaler (GITHUB_TOKEN's
            // budget is 1,000 requests an hour).
            RetryPolicy {
                reserve: 0,
                ..RetryPolicy::default()
            },
        )?),
        None => None,
    };
    let context = match rt.block_on(pr_context(opts, client.as_ref())) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {}", masker.text(&e.to_string()));
            return Ok(Exit::Usage);
        }
    };

    // The pull request's fleet: loaded and validated, never executed.
    let dir = &args.fleet.dir;
    let validation = fleet::validate_dir(dir, &LoadOptions::default())?;
    let prefix = pr::repo_relative(dir);
    let mut annotations = pr::annotations(&validation.diagnostics, &prefix);
    for a in &mut annotations {
        a.message = masker.text(&a.message);
    }
    for d in &validation.diagnostics {
        let mut shown = d.clone();
        shown.file = prefix.join(&d.file);
        eprintln!("{}", masker.text(&shown.to_string()));
    }
    let fleet_path = if prefix.as_os_str().is_empty() {
        ".".to_string()
    } else {
        prefix.display().to_string()
    };
    let mut modes = BTreeMap::new();
    let mut note = None;
    let plan = if validation.is_valid() {
        let base = load_base(opts.base_dir.as_deref(), &mut note);
        let only = args.fleet.site.as_deref();
        if let Some(s) = only
            && !validation.repo.sites.contains_key(s)
            && !base.sites.contains_key(s)
        {
            eprintln!(
                "error: site `{s}` is declared neither in the pull request nor on the base branch"
            );
            return Ok(Exit::Usage);
        }
        let options = args.fleet.run_options();
        let (plan, m) = rt.block_on(plan_pr(
            &validation.repo,
            &base,
            &options,
            only,
            opts.offline,
            &mut masker,
        ));
        modes = m;
        Some(plan)
    } else {
        eprintln!(
            "error: the pull request's fleet {} is invalid ({} error(s)); nothing was planned",
            dir.display(),
            validation.error_count()
        );
        None
    };
    let mut plan = plan;
    if let Some(p) = &mut plan {
        masker.plan(p);
    }
    let report = Report {
        context: &context,
        fleet_path: &fleet_path,
        plan: plan.as_ref(),
        modes: &modes,
        annotations: &annotations,
        note: note.as_deref(),
    };
    let markdown = masker.text(&comment::markdown(&report));

    let step_summary = env("GITHUB_STEP_SUMMARY");
    if let Some(path) = &step_summary {
        let text = comment::truncate(
            &markdown,
            STEP_SUMMARY_LIMIT,
            "> [!WARNING]\n> Truncated: GitHub limits a job summary to 1 MiB.",
        );
        append(Path::new(path), &text)?;
    }
    if let Some(path) = &opts.summary_out {
        std::fs::write(path, &markdown)?;
    }
    if let Some(p) = &plan {
        print!("{}", masker.text(&format_plan(p, args.format)));
    }

    let mut ok = true;
    match &client {
        Some(client) => {
            let full_at = full_plan_location(step_summary.is_some(), opts.summary_out.as_deref());
            let body = comment::comment_body(&markdown, &full_at);
            let check = CheckRun {
                name: CHECK_NAME.into(),
                head_sha: context.head_sha.clone().unwrap_or_default(),
                conclusion: if report.failed() {
                    "failure"
                } else {
                    "success"
                }
                .into(),
                title: masker.text(&report.title()),
                summary: comment::truncate(
                    &markdown,
                    comment::COMMENT_LIMIT - 1,
                    &format!("> [!WARNING]\n> Truncated. The full plan is in {full_at}."),
                ),
                annotations: annotations.clone(),
            };
            ok = rt.block_on(publish(
                client,
                &context,
                &body,
                &check,
                &annotations,
                &masker,
            ));
        }
        None => {
            eprintln!(
                "warning: GITHUB_TOKEN is not set: no comment and no check run; the plan is printed{}",
                if step_summary.is_some() {
                    " and in the job summary"
                } else {
                    ""
                }
            );
            workflow_commands(&annotations);
        }
    }

    Ok(match &plan {
        None => Exit::Failure,
        Some(_) if !ok => Exit::Failure,
        Some(p) => exit_for(p, args.detailed_exitcode),
    })
}

/// Which pull request: from the event payload (`--pr`) or the flags (`--pr N`).
async fn pr_context(opts: &PrArgs, client: Option<&GithubClient>) -> anyhow::Result<PrContext> {
    let repo = opts.repo.clone().or_else(|| env("GITHUB_REPOSITORY"));
    match opts.pr {
        Some(0) | None => {
            let path = env("GITHUB_EVENT_PATH").ok_or_else(|| anyhow::anyhow!(
                "`--pr` without a number reads the pull request from $GITHUB_EVENT_PATH, which is not set: pass --pr N --repo OWNER/NAME",
            ))?;
            Ok(PrContext::from_event_file(
                Path::new(&path),
                repo.as_deref(),
            )?)
        }
        Some(number) => {
            let repo = repo.ok_or(pr::PrError::NoRepo)?;
            let mut ctx = PrContext {
                repo,
                number,
                head_sha: env("GITHUB_SHA"),
                ..PrContext::default()
            };
            if let Some(client) = client {
                let pull = client.pull_request(&ctx.repo, number).await?;
                ctx.fork = pull.head_repo.as_deref() != Some(ctx.repo.as_str());
                ctx.head_sha = Some(pull.head_sha);
                ctx.base_ref = Some(pull.base_ref);
            }
            Ok(ctx)
        }
    }
}

/// The base branch's fleet; an empty one (every site new) when none is given or it
/// cannot be read.
fn load_base(dir: Option<&Path>, note: &mut Option<String>) -> FleetRepo {
    let Some(dir) = dir else {
        *note = Some(
            "No base-branch checkout was given (--base-dir): every site is planned offline, as new."
                .into(),
        );
        return FleetRepo::default();
    };
    match fleet::validate_dir(dir, &LoadOptions::default()) {
        Ok(v) => {
            if !v.is_valid() {
                *note = Some(format!(
                    "The base branch's fleet has {} error(s); only its valid documents were used.",
                    v.error_count()
                ));
            }
            v.repo
        }
        Err(e) => {
            *note = Some(format!(
                "The base-branch checkout cannot be read ({e}): every site is planned offline, as new."
            ));
            FleetRepo::default()
        }
    }
}

/// Plans the pull request: sites with a trusted connection and credentials against live
/// state, the others offline; sites the PR removes are reported.
async fn plan_pr(
    pr_repo: &FleetRepo,
    base: &FleetRepo,
    options: &drover::sites::RunOptions,
    only: Option<&str>,
    offline: bool,
    masker: &mut Redactor,
) -> (Plan, BTreeMap<String, SiteMode>) {
    let (merged, trusted) = trust::overlay(pr_repo, base);
    let selected = |name: &str| only.is_none_or(|o| o == name);
    let mut modes = BTreeMap::new();
    for (name, site) in merged.sites.iter().filter(|(n, _)| selected(n)) {
        let mode = if offline {
            SiteMode::Offline("--offline".into())
        } else if !trusted.contains(name) {
            SiteMode::Offline("new in this pull request: no connection on the base branch".into())
        } else {
            match trust::credentials_for(&merged, &site.value, options) {
                Ok(()) => {
                    for v in trust::credential_values(&merged, &site.value) {
                        masker.know(&v);
                    }
                    SiteMode::Live
                }
                Err(why) => {
                    SiteMode::Offline(format!("no credentials: {}", masker.text(&why.to_string())))
                }
            }
        };
        modes.insert(name.clone(), mode);
    }
    let mut live_repo = merged.clone();
    live_repo
        .sites
        .retain(|name, _| modes.get(name) == Some(&SiteMode::Live));
    let mut plan = if live_repo.sites.is_empty() {
        Plan::default()
    } else {
        reconcile::plan(&live_repo, options, None)
            .await
            .unwrap_or_default()
    };
    for (name, mode) in &modes {
        if let SiteMode::Offline(_) = mode {
            plan.sites.push(trust::offline_site(pr_repo, base, name));
        }
    }
    for name in base.sites.keys().filter(|n| selected(n)) {
        if !pr_repo.sites.contains_key(name) {
            plan.sites.push(trust::removed_site(base, name));
        }
    }
    plan.sites.sort_by(|a, b| a.site.cmp(&b.site));
    (plan, modes)
}

/// Posts the comment and the check; `false` when something failed that the user must
/// see (a refusal for lack of permission is only a warning).
async fn publish(
    client: &GithubClient,
    context: &PrContext,
    body: &str,
    check: &CheckRun<Annotation>,
    annotations: &[Annotation],
    masker: &Redactor,
) -> bool {
    let mut ok = true;
    let refused = |e: &GithubError| {
        matches!(
            e,
            GithubError::Status {
                status: 403 | 404,
                ..
            }
        )
    };
    match client
        .upsert_marked_comment(&context.repo, context.number, comment::MARKER, body)
        .await
    {
        Ok((id, created)) => eprintln!(
            "{} the plan comment ({id}) on {}#{}",
            if created { "created" } else { "updated" },
            context.repo,
            context.number
        ),
        Err(e) if refused(&e) => eprintln!(
            "warning: cannot comment on {}#{} ({}); pull requests from forks get a read-only token under `pull_request`: the plan is in the job summary",
            context.repo,
            context.number,
            masker.text(&e.to_string())
        ),
        Err(e) => {
            eprintln!("error: {}", masker.text(&e.to_string()));
            ok = false;
        }
    }
    if check.head_sha.is_empty() {
        eprintln!("warning: the head commit is unknown: no check run");
        workflow_commands(annotations);
        return ok;
    }
    match client.report_check(&context.repo, check).await {
        Ok(Reported::CheckRun(id)) => eprintln!("created check run {id}"),
        Ok(Reported::Status) => {
            eprintln!("the token may not create check runs: set a commit status instead");
            workflow_commands(annotations);
        }
        Err(e) if refused(&e) => {
            eprintln!(
                "warning: cannot set a check or status ({})",
                masker.text(&e.to_string())
            );
            workflow_commands(annotations);
        }
        Err(e) => {
            eprintln!("error: {}", masker.text(&e.to_string()));
            workflow_commands(annotations);
            ok = false;
        }
    }
    ok
}

/// Inside GitHub Actions, annotations as workflow commands (when no check run carries
/// them).
fn workflow_commands(annotations: &[Annotation]) {
    if env("GITHUB_ACTIONS").as_deref() != Some("true") {
        return;
    }
    for a in annotations {
        println!("{}", pr::workflow_command(a));
    }
}

fn full_plan_location(step_summary: bool, artifact: Option<&Path>) -> String {
    let run = match (
        env("GITHUB_SERVER_URL"),
        env("GITHUB_REPOSITORY"),
        env("GITHUB_RUN_ID"),
    ) {
        (Some(s), Some(r), Some(id)) => format!("[this workflow run]({s}/{r}/actions/runs/{id})"),
        _ => "the workflow run".into(),
    };
    let mut places = Vec::new();
    if step_summary {
        places.push(format!("the job summary of {run}"));
    }
    if let Some(a) = artifact {
        let name = a.file_name().map_or_else(
            || a.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        places.push(format!("`{name}` (the plan artifact of {run})"));
    }
    if places.is_empty() {
        places.push("the output of `drover plan --pr`".into());
    }
    places.join(" and ")
}

fn append(path: &Path, text: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    writeln!(f, "{text}")
}
