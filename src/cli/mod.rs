//! Argument parsing (clap derive), logging setup, exit codes, and dispatch to commands.

mod apply;
mod drift;
mod fleet_arg;
mod plan;
mod plan_args;
mod pr_plan;
mod reconcile;
mod render;
mod schema;
mod serve;
mod validate;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

/// Exit codes. Documented in README.md; never change their meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: success (a valid fleet; no changes).
    Success = 0,
    /// 1: the fleet is invalid, or an operation failed.
    Failure = 1,
    /// 2: usage error, or input that cannot be read (missing directory, I/O error).
    Usage = 2,
    /// 2 from `plan --detailed-exitcode`: the plan has changes (as terraform does).
    Changes = 3,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(match exit {
            Exit::Success => 0,
            Exit::Failure => 1,
            Exit::Usage | Exit::Changes => 2,
        })
    }
}

/// drover: a GitOps reconciler for self-hosted CI runner fleets on Kubernetes and Slurm.
///
/// A fleet repo (git) declares sites, node pools, runner sets and secret references.
/// drover validates it, plans changes against each site, applies them, autoscales
/// runners from GitHub Actions demand and reports drift.
#[derive(Debug, Parser)]
#[command(
    name = "drover",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Options shared by every command.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Options shared by every command.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// More log output on stderr (-v info, -vv debug, -vvv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "DROVER_LOG_FORMAT")]
    pub log_format: LogFormat,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Output format of reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// For people.
    Text,
    /// For machines.
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a fleet repo: YAML, schemas, references, inline secrets. Prints every problem
    /// as `file:line:col: error[CODE]: message`. Exit 0 valid, 1 invalid, 2 unreadable.
    Validate(validate::ValidateArgs),
    /// Print the JSON Schema of a fleet kind (or all), or write them to a directory.
    Schema(schema::SchemaArgs),
    /// Show what would change on each site: creates, updates, deletes, diffs and site
    /// findings. Exit 0, or with --detailed-exitcode 0 no changes / 2 changes; 1 on errors.
    /// With --pr, plan a fleet-repo pull request and report it there (one comment, a check
    /// run); never applies.
    Plan(plan_args::PlanArgs),
    /// Plan each site, then apply: server-side apply on Kubernetes, job submission and
    /// cancellation on Slurm. Exit 0 applied, 1 a change failed or a site was refused.
    Apply(apply::ApplyArgs),
    /// Print the objects drover owns on each site (Kubernetes manifests, Slurm job specs).
    Render(render::RenderArgs),
    /// Report drift between the fleet repo and each site: objects changed out of band (with
    /// diffs), missing, no longer declared, runner sets below min, site findings. Changes
    /// nothing. Exit 0, or 2 with --exit-code when there is drift; 1 on errors.
    Drift(drift::DriftArgs),
    /// Run the reconciler as a service: reconcile on new revisions (poll, push webhook),
    /// on a schedule and on request; serve /healthz, /readyz, /metrics, /status and a
    /// status page.
    Serve(serve::ServeArgs),
    /// Ask a running `drover serve` to reconcile now (`--now`), with its trigger token.
    /// Exit 0 queued, 1 refused, 2 usage error or service unreachable.
    Reconcile(reconcile::ReconcileArgs),
}

/// Sets up tracing to stderr.
pub fn init_logging(global: &GlobalArgs) {
    let level = match global.verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| RedactedStderr);
    match global.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Standard error through the redaction layer: every log line is masked
/// ([`drover::redact::Redactor::text`]) before it is written. The formatter writes each
/// event in one call, so a secret is never split across two writes.
struct RedactedStderr;

impl std::io::Write for RedactedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let masked = drover::redact::Redactor::new().text(&text);
        std::io::stderr().write_all(masked.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<Exit> {
    match cli.command {
        Command::Validate(args) => validate::run(&args),
        Command::Schema(args) => schema::run(&args),
        Command::Plan(args) => plan::run(&args),
        Command::Apply(args) => apply::run(&args),
        Command::Render(args) => render::run(&args),
        Command::Serve(args) => serve::run(&args),
        Command::Reconcile(args) => reconcile::run(&args),
        Command::Drift(args) => drift::run(&args),
    }
}
