//! The arguments and the output of `drover plan`, shared by plain plans (`cli/plan.rs`) and
//! pull-request plans (`cli/pr_plan.rs`), and the plan format of `apply` and `drift`.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use drover::plan::{Plan, render};

use super::Exit;
use super::fleet_arg::FleetArgs;

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
    pub pr: PrArgs,
}

/// Options of `drover plan --pr`.
#[derive(Debug, Args)]
pub struct PrArgs {
    /// Plan a pull request of the fleet repo: post (or update) one sticky comment, set a
    /// check run with annotations, write $GITHUB_STEP_SUMMARY. Never applies. Without N the
    /// pull request comes from $GITHUB_EVENT_PATH (GitHub Actions); put DIR before `--pr`.
    /// The token is read from $GITHUB_TOKEN.
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "0", help_heading = "Pull requests")]
    pub pr: Option<u64>,
    /// The repository of `--pr N` (default: $GITHUB_REPOSITORY). With the event payload,
    /// the payload's base repository is used.
    #[arg(long, value_name = "OWNER/NAME", help_heading = "Pull requests")]
    pub repo: Option<String>,
    /// A checkout of the fleet at the base branch. Site connections and the SecretRefs they
    /// use are read from it, never from the pull request; sites without credentials are
    /// planned against it (offline). Without it every site is planned offline as new.
    #[arg(long, value_name = "DIR", help_heading = "Pull requests")]
    pub base_dir: Option<PathBuf>,
    /// Plan every site offline (the pull request against the base branch), even when
    /// credentials are present.
    #[arg(long, help_heading = "Pull requests")]
    pub offline: bool,
    /// The GitHub API root (default: $GITHUB_API_URL, else https://api.github.com).
    #[arg(long, value_name = "URL", help_heading = "Pull requests")]
    pub github_api: Option<String>,
    /// Also write the full plan (markdown) to FILE, e.g. to upload as an artifact.
    #[arg(long, value_name = "FILE", help_heading = "Pull requests")]
    pub summary_out: Option<PathBuf>,
}

/// Renders a plan in the chosen format (text is coloured only on a terminal).
pub fn format_plan(plan: &Plan, format: PlanFormat) -> String {
    match format {
        PlanFormat::Text => render::text(plan, std::io::stdout().is_terminal()),
        PlanFormat::Markdown => render::markdown(plan),
        PlanFormat::Json => format!("{}\n", render::json(plan)),
    }
}

/// The exit code of a plan: failure on errors, `Changes` with `--detailed-exitcode`.
pub(super) fn exit_for(plan: &Plan, detailed: bool) -> Exit {
    if plan.has_errors() {
        Exit::Failure
    } else if detailed && plan.has_changes() {
        Exit::Changes
    } else {
        Exit::Success
    }
}
