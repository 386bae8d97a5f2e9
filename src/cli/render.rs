//! `drover render`: print the objects drover would own on each site, as YAML.

use clap::Args;
use drover::reconcile;
use drover::sites::{self, SiteContext};

use super::Exit;
use super::fleet_arg::{FleetArgs, load_valid};

/// Arguments of `drover render`.
#[derive(Debug, Args)]
pub struct RenderArgs {
    /// The fleet and sites.
    #[command(flatten)]
    pub fleet: FleetArgs,
}

/// Runs `drover render`. Pure: no site is contacted.
pub fn run(args: &RenderArgs) -> anyhow::Result<Exit> {
    let Some(repo) = load_valid(&args.fleet.dir)? else {
        return Ok(Exit::Failure);
    };
    let options = args.fleet.run_options();
    let mut failed = false;
    for site in reconcile::select(&repo, args.fleet.site.as_deref())? {
        let ctx = SiteContext {
            repo: &repo,
            site,
            options: &options,
        };
        match sites::render(&ctx) {
            Ok(values) => {
                for value in values {
                    println!("---\n# site: {}", ctx.name());
                    print!("{}", serde_saphyr::to_string(&value)?);
                }
            }
            Err(err) => {
                failed = true;
                eprintln!("error: site {}: {err}", ctx.name());
            }
        }
    }
    Ok(if failed { Exit::Failure } else { Exit::Success })
}
