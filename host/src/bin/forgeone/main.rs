//! The `forgeone` command line: parse, call the library, print.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod audit_cmd;
mod keygen;
mod plan;
mod util;

/// ForgeOne: run WebAssembly components as verified, fuel-metered, audited containers.
#[derive(Debug, Parser)]
#[command(name = "forgeone", version, about, long_about = None, after_help = EXIT_CODES)]
struct Cli {
    /// Log filter for diagnostics on stderr (e.g. `info`, `forgeone=debug`).
    /// Audit events are logged at `info` under target `forgeone::audit`.
    #[arg(long, global = true, env = "FORGEONE_LOG", default_value = "warn")]
    log: String,

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
enum Command {
    /// Generate an Ed25519 key pair (PKCS#8 PEM private key, SPKI PEM public key).
    Keygen(keygen::Args),
    /// Verify, export and follow audit logs.
    #[command(subcommand)]
    Audit(audit_cmd::Command),
    /// Show where each workload of a deployment would run, and why, without running anything.
    Plan(plan::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    util::init_tracing(&cli.log);
    let result = match cli.command {
        Command::Keygen(args) => keygen::run(args),
        Command::Audit(command) => audit_cmd::run(command),
        Command::Plan(args) => plan::run(args),
    };
    match result {
        Ok(code) => code,
        Err(failure) => failure.report(),
    }
}
