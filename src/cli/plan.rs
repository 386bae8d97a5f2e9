//! `drover plan`: what would change on each site.

use std::io::IsTerminal;

use clap::{Args, ValueEnum};
use drover::plan::{Plan, render};
use drover::reconcile;

use super::Exit;
use super::fleet_arg::{FleetArgs, load_valid, runtime};

/// Plan output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    /// Text (coloured on a terminal).
    Text,
    /// Markdown (pull request comments, job summaries).
    Markdown,
    /// JSON.
    Json,
}

/// Arguments of `drover plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The fleet and sites.
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
    pub format: PlanFormat,
    /// Exit 0 when there are no changes, 2 when there are, 1 on errors (like terraform).
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Pull-request plans (`--pr`, `--repo`, `--base-dir`, ...).
    #[command(flatten)]
    pub pr: super::pr_plan::PrArgs,
}

/// Runs `drover plan`.
pub fn run(args: &PlanArgs) -> anyhow::Result<Exit> {
    if args.pr.pr.is_some() {
        return super::pr_plan::run(args);
    }
    let Some(repo) = load_valid(&args.fleet.dir)? else {
        return Ok(Exit::Failure);
    };
    let options = args.fleet.run_options();
    let plan = runtime()?.block_on(reconcile::plan(&repo, &options, args.fleet.site.as_deref()))?;
    print!("{}", format_plan(&plan, args.format));
    Ok(exit_for(&plan, args.detailed_exitcode))
}

/// Renders a plan in the chosen format (text is coloured only on a terminal).
pub fn format_plan(plan: &Plan, format: PlanFormat) -> String {
    match format {
        PlanFormat::Text => render::text(plan, std::io::stdout().is_terminal()),
        PlanFormat::Markdown => render::markdown(plan),
        PlanFormat::Json => format!("{}\n", render::json(plan)),
    }
}

pub(super) fn exit_for(plan: &Plan, detailed: bool) -> Exit {
    if plan.has_errors() {
        Exit::Failure
    } else if detailed && plan.has_changes() {
        Exit::Changes
    } else {
        Exit::Success
    }
}
