//! `drover apply`: plan each site, then change it.

use std::io::{BufRead, IsTerminal, Write};

use clap::Args;
use drover::fleet::model::SitePolicy;
use drover::plan::{ApplyReport, Plan};
use drover::reconcile;

use super::Exit;
use super::fleet_arg::{FleetArgs, load_valid, runtime};
use super::plan_args::{PlanFormat, format_plan};

/// Arguments of `drover apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The fleet and sites.
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// Delete owned objects the fleet no longer declares (default: the Fleet's `reconcile.prune`).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub prune: Option<bool>,
    /// Server-side dry run: every write is sent with dryRun, nothing changes.
    #[arg(long)]
    pub dry_run: bool,
    /// Take ownership of fields another field manager owns.
    #[arg(long)]
    pub force_conflicts: bool,
    /// Allow a prune that deletes more than the Fleet's `massPrunePercent` of a site's objects.
    #[arg(long)]
    pub allow_mass_prune: bool,
    /// Apply without asking for confirmation (required when stdin is not a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
}

/// Runs `drover apply`.
pub fn run(args: &ApplyArgs) -> anyhow::Result<Exit> {
    let Some(repo) = load_valid(&args.fleet.dir)? else {
        return Ok(Exit::Failure);
    };
    let mut options = args.fleet.run_options();
    options.apply.dry_run = args.dry_run;
    options.apply.prune = args.prune;
    options.apply.force_conflicts = args.force_conflicts;
    options.apply.allow_mass_prune = args.allow_mass_prune;
    let rt = runtime()?;
    let site = args.fleet.site.as_deref();
    if !args.yes && !args.dry_run {
        let plan = rt.block_on(reconcile::plan(&repo, &options, site))?;
        print!("{}", format_plan(&plan, PlanFormat::Text));
        if !plan.has_changes() {
            println!("No changes.");
            return Ok(if plan.has_errors() {
                Exit::Failure
            } else {
                Exit::Success
            });
        }
        if !std::io::stdin().is_terminal() {
            eprintln!(
                "error: stdin is not a terminal: pass --yes to apply without confirmation; nothing was changed"
            );
            return Ok(Exit::Usage);
        }
        if !confirm()? {
            eprintln!("Apply cancelled; nothing was changed.");
            return Ok(Exit::Usage);
        }
    }
    let (plan, reports) = rt.block_on(reconcile::apply(&repo, &options, site))?;
    if args.yes || args.dry_run {
        print!("{}", format_plan(&plan, PlanFormat::Text));
    }
    Ok(summarise(&plan, &reports, args.dry_run))
}

fn confirm() -> anyhow::Result<bool> {
    print!("Apply these changes? Only 'yes' is accepted: ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(answer.trim() == "yes")
}

/// Prints what happened per site; failure if any change failed or a site was refused for a
/// reason other than its report-only policy.
fn summarise(plan: &Plan, reports: &[ApplyReport], dry_run: bool) -> Exit {
    let verb = if dry_run {
        "would apply (dry run)"
    } else {
        "applied"
    };
    let mut failed = false;
    for (site, report) in plan.sites.iter().zip(reports) {
        let report_only = site.policy == SitePolicy::ReportOnly;
        match &report.refused {
            Some(why) if report_only => println!("site {}: not applied: {why}", report.site),
            Some(why) => {
                failed = true;
                println!("site {}: refused: {why}", report.site);
            }
            None => println!(
                "site {}: {verb} {} change(s), {} failed",
                report.site,
                report.applied.len(),
                report.failed.len()
            ),
        }
        for (action, target, error) in &report.failed {
            failed = true;
            println!("  failed to {} {target}: {error}", action.as_str());
        }
    }
    if failed { Exit::Failure } else { Exit::Success }
}
