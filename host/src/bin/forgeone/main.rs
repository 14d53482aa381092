//! The `forgeone` command line: parse, call the library, print.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod audit_cmd;
mod keygen;
mod run;
mod util;

/// ForgeOne: run WebAssembly components as verified, fuel-metered, audited containers.
#[derive(Debug, Parser)]
#[command(name = "forgeone", version, about, long_about = None, after_help = EXIT_CODES)]
struct Cli {
    /// Log filter for diagnostics on stderr (e.g. `info`, `forgeone=debug`).
    /// Audit events are logged at `info` under target `forgeone::audit`.
    #[arg(
        long,
        global = true,
        env = "FORGEONE_LOG",
        default_value = "warn",
        value_name = "FILTER"
    )]
    log_level: String,

    #[command(subcommand)]
    command: Command,
}

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  a check failed: verification, integrity, or a refused run
  2  bad command line
  3  could not do the work: unreadable or malformed input, I/O error";

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process; boxing buys nothing
enum Command {
    /// Generate an Ed25519 key pair (PKCS#8 PEM private key, SPKI PEM public key).
    Keygen(keygen::Args),
    /// Verify, export and follow audit logs.
    #[command(subcommand)]
    Audit(audit_cmd::Command),
    /// Run a WebAssembly component as a verified, fuel-metered, audited container.
    Run(run::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    util::init_tracing(&cli.log_level);
    let result = match cli.command {
        Command::Keygen(args) => keygen::run(args),
        Command::Audit(command) => audit_cmd::run(command),
        Command::Run(args) => run::run(args),
    };
    match result {
        Ok(code) => code,
        Err(failure) => failure.report(),
    }
}
