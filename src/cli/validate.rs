//! `drover validate`: check a fleet repo and print every problem at once.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use drover::fleet::{self, LoadOptions, Validation};
use serde_json::json;

use super::{Exit, OutputFormat};

/// Arguments of `drover validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Fleet repo directory.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
    /// Largest YAML file read, in bytes.
    #[arg(long, default_value_t = LoadOptions::default().max_file_bytes, value_name = "BYTES")]
    pub max_file_size: u64,
    /// Treat warnings as errors.
    #[arg(long)]
    pub strict: bool,
}

/// Runs `drover validate`.
pub fn run(args: &ValidateArgs) -> anyhow::Result<Exit> {
    let options = LoadOptions {
        max_file_bytes: args.max_file_size,
        ..LoadOptions::default()
    };
    let validation = match fleet::validate_dir(&args.dir, &options) {
        Ok(v) => v,
        Err(err) => {
            eprintln!("error: {err}");
            return Ok(Exit::Usage);
        }
    };
    let mut out = std::io::stdout().lock();
    match args.format {
        OutputFormat::Text => print_text(&mut out, args, &validation)?,
        OutputFormat::Json => print_json(&mut out, &validation)?,
    }
    let failed = !validation.is_valid() || (args.strict && validation.warning_count() > 0);
    Ok(if failed { Exit::Failure } else { Exit::Success })
}

fn print_text(out: &mut impl Write, args: &ValidateArgs, v: &Validation) -> std::io::Result<()> {
    for d in &v.diagnostics {
        let mut shown = d.clone();
        shown.file = if d.file.as_os_str() == "." {
            args.dir.clone()
        } else {
            args.dir.join(&d.file)
        };
        writeln!(out, "{shown}")?;
    }
    let repo = &v.repo;
    let summary = format!(
        "{} file(s), {} document(s): {} Site(s), {} NodePool(s), {} RunnerSet(s), {} SecretRef(s)",
        v.files,
        v.documents,
        repo.sites.len(),
        repo.pools.len(),
        repo.runner_sets.len(),
        repo.secrets.len()
    );
    if v.is_valid() {
        writeln!(
            out,
            "{} is valid: {summary}; {} warning(s)",
            args.dir.display(),
            v.warning_count()
        )
    } else {
        writeln!(
            out,
            "{} is invalid: {} error(s), {} warning(s) in {summary}",
            args.dir.display(),
            v.error_count(),
            v.warning_count()
        )
    }
}

fn print_json(out: &mut impl Write, v: &Validation) -> std::io::Result<()> {
    let report = json!({
        "valid": v.is_valid(),
        "files": v.files,
        "documents": v.documents,
        "errors": v.error_count(),
        "warnings": v.warning_count(),
        "diagnostics": v.diagnostics,
    });
    serde_json::to_writer_pretty(&mut *out, &report)?;
    writeln!(out)
}
