//! The `forgeone` command line: parse, call the library, print.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod anchor;
mod audit_cmd;
mod boot_cmd;
mod call;
mod cluster_cmd;
mod keygen;
mod manifest;
mod plan;
mod run;
mod sign;
mod signals;
mod up;
mod util;
mod verify;

/// ForgeOne: run WebAssembly components as verified, fuel-metered, audited containers.
#[derive(Debug, Parser)]
#[command(name = "forgeone", version, about, long_about = None, after_help = EXIT_CODES)]
struct Cli {
    /// Diagnostics on stderr, as a tracing filter (e.g. `info`,
    /// `forgeone=debug`). Audit events are also tracing events (target
    /// `forgeone::audit`), and so are guest log lines (`forgeone::guest`)
    /// and the boot checks of a command that keeps no audit log
    /// (`forgeone::boot`, e.g. `verify`). The CLI prints all three itself,
    /// so they are off by default: add `forgeone::audit=info` to see each
    /// event.
    #[arg(
        long,
        global = true,
        env = "FORGEONE_LOG",
        default_value = "warn,forgeone::audit=off,forgeone::guest=off,forgeone::boot=off",
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
    /// Create, rotate, sign and show trust anchors.
    #[command(subcommand)]
    Anchor(anchor::Command),
    /// Sign a component: writes COMPONENT.wasm.sig.json.
    Sign(sign::Args),
    /// Verify a component against its signature and a trust anchor.
    Verify(verify::Args),
    /// Create, sign and show boot manifests.
    #[command(subcommand)]
    Manifest(manifest::Command),
    /// Boot: verify anchor, manifest and components; print the measurements.
    Boot(boot_cmd::Args),
    /// Check a boot quote against the host key and an expected register.
    VerifyQuote(boot_cmd::QuoteArgs),
    /// Run a WebAssembly component as a verified, fuel-metered, audited container.
    ///
    /// The component is a `wasi:cli/command`. Only verified code runs: pass
    /// the trust anchor with `--anchor` (and the detached signature with
    /// `--sig`, default `COMPONENT.wasm.sig.json`), or explicitly
    /// `--allow-unsigned`, which is loud and audited. The container gets
    /// nothing it is not granted: no directories but `--dir`, no environment
    /// but `--env`, no network. It reads this process's stdin, as `wasmtime
    /// run` does (recorded as a grant in the audit log), so
    /// `cat notes.md | forgeone run md.wasm > notes.html` works.
    ///
    /// The guest's stdout and stderr reach this process's stdout and stderr
    /// in full, byte for byte, with back-pressure. Only on a terminal are the
    /// characters that could control it escaped (ESC, C1 and bidi controls;
    /// `--raw-output` passes those too). `--max-output` bounds the copy kept
    /// for the audit log and the evidence, not what reaches you.
    ///
    /// The run is bounded by `--timeout` (60s by default; `none` for no
    /// deadline) and by `--fuel` only when it is given. The outcome (exit
    /// code, fuel used, peak memory, wall time) goes to stderr.
    Run(run::Args),
    /// Call a plugin once: verify it, load it, print the value and what the call cost.
    ///
    /// The plugin is a component exporting `forgeone:kernel/plugin-api`
    /// (see the guest SDK's `export_plugin!`). Only verified code loads:
    /// pass the trust anchor with `--anchor`, or explicitly
    /// `--allow-unsigned` (audited). The call runs in a fresh instance
    /// under `--fuel`, `--max-memory` and `--timeout`, with no directories,
    /// environment or network; it is audited as `container.plugin.call`.
    /// The value goes to stdout (text and JSON as they are); the fuel, peak
    /// memory and wall time to stderr. `--list` prints the plugin's calls.
    ///
    /// Example: `forgeone call text_plugin.wasm word-count --text "the cat"
    /// --anchor anchor.json`
    Call(call::Args),
    /// Show where each workload of a deployment would run, and why, without running anything.
    Plan(plan::Args),
    /// Boot, verify, schedule and run a deployment (`forgeone.toml`) under supervision.
    Up(up::Args),
    /// Verify, export and follow audit logs.
    #[command(subcommand)]
    Audit(audit_cmd::Command),
    /// Run this machine as a host of a cluster (NATS JetStream).
    Host(cluster_cmd::HostArgs),
    /// Upload a deployment's components and make it the cluster's desired state.
    Deploy(cluster_cmd::DeployArgs),
    /// Remove a deployment from the cluster; its replicas stop.
    Undeploy(cluster_cmd::UndeployArgs),
    /// Show the cluster's nodes and workloads.
    Ps(cluster_cmd::PsArgs),
    /// Stop a workload in the cluster (its host carries it out).
    Stop(cluster_cmd::WorkloadArgs),
    /// Pause a workload in the cluster.
    Pause(cluster_cmd::WorkloadArgs),
    /// Resume a stopped or paused workload in the cluster.
    Resume(cluster_cmd::WorkloadArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    util::init_tracing(&cli.log_level);
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(failure) => failure.report(),
    }
}

/// Runs one parsed command (also used by the in-process CLI tests).
fn dispatch(command: Command) -> util::CmdResult {
    match command {
        Command::Keygen(args) => keygen::run(args),
        Command::Anchor(command) => anchor::run(command),
        Command::Sign(args) => sign::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Manifest(command) => manifest::run(command),
        Command::Boot(args) => boot_cmd::run(args),
        Command::VerifyQuote(args) => boot_cmd::verify_quote(args),
        Command::Run(args) => run::run(args),
        Command::Call(args) => call::run(args),
        Command::Up(args) => up::run(args),
        Command::Plan(args) => plan::run(args),
        Command::Audit(command) => audit_cmd::run(command),
        Command::Host(args) => cluster_cmd::host(args),
        Command::Deploy(args) => cluster_cmd::deploy(args),
        Command::Undeploy(args) => cluster_cmd::undeploy(args),
        Command::Ps(args) => cluster_cmd::ps(args),
        Command::Stop(args) => cluster_cmd::desire(args, forgeone::cluster::Desired::Stopped),
        Command::Pause(args) => cluster_cmd::desire(args, forgeone::cluster::Desired::Paused),
        Command::Resume(args) => cluster_cmd::desire(args, forgeone::cluster::Desired::Running),
    }
}
