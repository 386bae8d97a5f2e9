//! `drover plan`: what would change on each site.

use drover::reconcile;

use super::Exit;
use super::fleet_arg::{load_valid, runtime};
use super::plan_args::{PlanArgs, exit_for, format_plan};

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
