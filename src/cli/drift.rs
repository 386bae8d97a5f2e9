//! `drover drift`: what differs between the fleet repo and each site. Never changes anything.

use clap::Args;
use drover::autoscale::controller::unserved_jobs;
use drover::drift::DriftReport;
use drover::reconcile;

use super::Exit;
use super::fleet_arg::{FleetArgs, load_valid, runtime};
use super::plan_args::PlanFormat;

/// Arguments of `drover drift`.
#[derive(Debug, Args)]
pub struct DriftArgs {
    /// The fleet and sites.
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
    pub format: PlanFormat,
    /// Exit 2 when any site drifts (for cron and CI); 0 otherwise.
    #[arg(long)]
    pub exit_code: bool,
    /// Repositories (`owner/name`) whose queued jobs are checked for jobs no runner set can
    /// serve, besides those of repository-scoped runner sets. Needs the fleet's GitHub
    /// connection.
    #[arg(long = "github-repo", value_name = "OWNER/NAME")]
    pub github_repos: Vec<String>,
}

/// Runs `drover drift`: plans every site with pruning on (so undeclared owned objects
/// show), applies nothing, and reports.
pub fn run(args: &DriftArgs) -> anyhow::Result<Exit> {
    let Some(repo) = load_valid(&args.fleet.dir)? else {
        return Ok(Exit::Failure);
    };
    let mut options = args.fleet.run_options();
    options.apply.prune = Some(true);
    let rt = runtime()?;
    let plan = rt.block_on(reconcile::plan(&repo, &options, args.fleet.site.as_deref()))?;
    let mut report = DriftReport::from_plan(&plan);
    match rt.block_on(unserved_jobs(&repo, &args.github_repos)) {
        Ok(jobs) => report.unserved = jobs,
        Err(why) => report.jobs_unchecked = Some(why.to_string()),
    }
    match args.format {
        PlanFormat::Text => print!("{}", report.text()),
        PlanFormat::Markdown => print!("{}", report.markdown()),
        PlanFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    Ok(if plan.has_errors() {
        Exit::Failure
    } else if args.exit_code && report.has_drift() {
        Exit::Changes
    } else {
        Exit::Success
    })
}
