//! The `drover` command line: validate, schema, and (as they land) plan, apply, drift, serve.
//!
//! This is the binary edge: it parses arguments, sets up logging, calls the library and
//! maps outcomes to documented exit codes. `anyhow` context lives only here.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    drover::tls::install_crypto_provider();
    let args = cli::Cli::parse();
    cli::init_logging(&args.global);
    match cli::run(args) {
        Ok(code) => code.into(),
        Err(err) => {
            eprintln!("error: {err:#}");
            cli::Exit::Failure.into()
        }
    }
}
