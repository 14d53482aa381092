//! `forgeone run`: verify a component, run it as a container, stream its
//! output, print the outcome, exit with the guest's exit code.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use forgeone::SigningKey;
use forgeone::audit::AuditLog;
use forgeone::boot::{ComponentCheck, DEFAULT_MAX_COMPONENT_SIZE, TrustAnchor, VerifiedComponent};
use forgeone::deployment::parse_size;
use forgeone::identity::{IdentityContext, TrustLevel, TrustVector};
use forgeone::runtime::{
    ByteSink, ContainerConfig, DirGrant, EngineConfig, Failure as RunFailure, FileIo, Outcome,
    OutputSink, RunEnd, Runtime, RuntimeConfig, StdinGrant, Stream,
};

use crate::signals::{self, Signal, Signals};
use crate::util::{CmdResult, Failure, lock_failure};

/// Exit codes of `forgeone run` (besides the guest's own exit code).
pub const RUN_EXIT_CODES: &str = "\
Exit codes of `run`: the guest's exit code when it exits (0-255); otherwise
  1    refused before running (unverified or unsigned code, policy, a component
       over the engine's structural limits)
  3    could not run: unreadable component, bad audit log or key, I/O error;
       or stopped because the audit log could not be written (the message
       names the log); or the guest exited 0 but its output could not all
       be written (a full disk, say: the message names the stream)
  124  the --timeout deadline passed (also while the guest's last output was
       still being written to a reader that did not take it)
  126  host call denied: the component imports what the host does not provide
  130  stopped by SIGINT (Ctrl-C): the container was stopped, the log sealed
  143  stopped by SIGTERM: likewise
  134  the guest trapped (panic, unreachable, stack overflow, ...)
  135  the guest hit the --max-memory (or table) or --max-open-files limit
  137  the guest ran out of --fuel";

/// The arguments of `forgeone run` (its help text is on `Command::Run`).
#[derive(Debug, clap::Args)]
#[command(after_help = RUN_EXIT_CODES)]
pub struct Args {
    /// The component to run.
    #[arg(value_name = "COMPONENT.wasm")]
    component: PathBuf,
    /// Verify the component against this trust anchor.
    #[arg(long, value_name = "ANCHOR", conflicts_with = "allow_unsigned")]
    anchor: Option<PathBuf>,
    /// The component's detached signature envelope (default:
    /// COMPONENT.wasm.sig.json).
    #[arg(long, value_name = "FILE", requires = "anchor")]
    sig: Option<PathBuf>,
    /// Run the component without verifying it. Loud and audited.
    #[arg(long)]
    allow_unsigned: bool,
    /// Fuel budget (about one unit per wasm instruction; a tight loop
    /// burns about 2.3e10 a second on a 2-core Xeon VM, real programs
    /// less). Without it there is no fuel cap, as in `wasmtime run`: the
    /// run is bounded by --timeout, and the fuel used is still counted and
    /// reported.
    #[arg(long, value_name = "N")]
    fuel: Option<u64>,
    /// Linear memory limit, e.g. `64MiB`.
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = parse_size)]
    max_memory: u64,
    /// Wall-clock deadline, e.g. `5s`, `500ms`, `2m`; `none` (or `0`) for no
    /// deadline.
    #[arg(long, value_name = "DURATION|none", default_value = "60s", value_parser = parse_timeout)]
    timeout: Timeout,
    /// Grant a host directory at an absolute guest path: `HOST::GUEST` is
    /// read-only (as in forgeone.toml), `HOST::GUEST:rw` read-write
    /// (`:ro` may be spelled out). Repeatable.
    #[arg(long = "dir", value_name = "HOST::GUEST[:ro|:rw]")]
    dirs: Vec<DirGrant>,
    /// Grant an environment variable `K=V`.
    #[arg(long = "env", value_name = "K=V", value_parser = parse_env)]
    envs: Vec<(String, String)>,
    /// Host handles the guest may hold open at once (files, directories,
    /// streams, pollables, sockets); past it the guest's open fails with
    /// `quota` (EDQUOT).
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    max_open_files: u32,
    /// Output kept per run for the audit log and the evidence (stdout and
    /// stderr together), e.g. `1MiB`. The guest's output itself always
    /// reaches stdout and stderr in full.
    #[arg(long, value_name = "SIZE", default_value = "1MiB", value_parser = parse_size)]
    max_output: u64,
    /// The most code (all code sections together) a component may hold;
    /// one with more is refused before it is compiled. CPython for WASI
    /// needs about `80MiB`.
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = parse_size)]
    max_code_size: u64,
    /// Who runs it, and where its state and audit log are.
    #[command(flatten)]
    local: Local,
    /// Where the guest's file calls run: `on-thread`, on the thread that
    /// runs the guest, as `wasmtime run` runs them (FIFOs, devices and
    /// sockets still go to a pool thread, so they cannot hold it past the
    /// deadline); or `pool`, every call on a pool thread (several times
    /// slower for file-heavy programs; for directories on filesystems that
    /// can stall, such as network mounts). Recorded in `container.created`.
    #[arg(long, value_name = "MODE", default_value = "on-thread", value_parser = parse_file_io)]
    file_io: FileIo,
    /// On a terminal too, pass the guest's output through unescaped
    /// (terminal escapes included). Where stdout or stderr is not a
    /// terminal (a pipe, a file), the guest's bytes always pass exactly.
    #[arg(long)]
    raw_output: bool,
    /// Print the outcome as one JSON object on stderr.
    #[arg(long)]
    json: bool,
    /// Arguments for the guest (after `--`).
    #[arg(last = true, value_name = "ARGS")]
    args: Vec<String>,
}

/// `--timeout`: a deadline, or none.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeout(pub(crate) Option<Duration>);

pub(crate) fn parse_timeout(text: &str) -> Result<Timeout, String> {
    if text.eq_ignore_ascii_case("none") {
        return Ok(Timeout(None));
    }
    let duration = humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration like 5s, or `none`: {e}"))?;
    Ok(Timeout((!duration.is_zero()).then_some(duration)))
}

fn parse_file_io(text: &str) -> Result<FileIo, String> {
    text.parse()
        .map_err(|e: forgeone::runtime::FileIoError| e.to_string())
}

pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("`{text}` is not a duration like 5s: {e}"))
}

pub(crate) fn parse_env(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{text}`: expected K=V")),
    }
}

/// The one place `forgeone run` and `forgeone call` obtain a
/// [`VerifiedComponent`]: verified against the anchor (every outcome
/// audited), or explicitly unsigned.
pub(crate) fn verified_component(
    path: &Path,
    anchor: Option<&Path>,
    sig: Option<&Path>,
    allow_unsigned: bool,
    audit: &AuditLog,
) -> Result<VerifiedComponent, Failure> {
    if let Some(anchor_path) = anchor {
        let anchor = TrustAnchor::from_file(anchor_path)
            .map_err(|e| Failure::check(format!("trust anchor {}: {e}", anchor_path.display())))?;
        let mut check = ComponentCheck::new(&anchor);
        check.audit(audit.clone());
        if let Some(sig) = sig {
            check.signature_path(sig);
        }
        let component = check.verify_file(path).map_err(|e| {
            let message = format!("refused {}: {e}", path.display());
            if e.is_operational() {
                Failure::input(message)
            } else {
                Failure::check(message)
            }
        })?;
        let signers: Vec<String> = component
            .signers()
            .iter()
            .map(ToString::to_string)
            .collect();
        eprintln!(
            "forgeone: verified {}@{} {} by {}",
            component.name(),
            component.version(),
            component.digest(),
            signers.join(", ")
        );
        return Ok(component);
    }
    if !allow_unsigned {
        return Err(Failure::check(format!(
            "refusing to run {}: it is not verified. Pass --anchor ANCHOR (and --sig FILE) to \
             verify it, or --allow-unsigned to run it anyway (audited)",
            path.display()
        )));
    }
    // The reader signed components go through: a regular file, its size
    // capped before a byte is read.
    let component = VerifiedComponent::unsigned_file(path, DEFAULT_MAX_COMPONENT_SIZE)
        .map_err(|e| Failure::input(format!("unsigned component {e}")))?;
    eprintln!(
        "warning: running UNSIGNED component {} (blake3 {}) because of --allow-unsigned; it runs \
         as trust level `untrusted` and this is recorded in the audit log",
        path.display(),
        component.digest()
    );
    Ok(component)
}

/// Who runs the work and where its state and audit log are: the flags
/// `run` and `call` share.
#[derive(Debug, clap::Args)]
pub(crate) struct Local {
    /// Tenant the work runs for.
    #[arg(long, default_value = "local")]
    tenant: String,
    /// Principal the work runs as (default: $USER).
    #[arg(long)]
    principal: Option<String>,
    /// How long to wait, saying so once, while another process holds the
    /// audit log (e.g. `30s`, `2m`; `0s` gives up at once).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    lock_timeout: Duration,
    /// Where ForgeOne keeps its state (audit log, compiled cache).
    #[arg(
        long,
        value_name = "DIR",
        env = "FORGEONE_STATE_DIR",
        default_value = ".forgeone"
    )]
    state_dir: PathBuf,
    /// The audit log (default: STATE_DIR/audit.jsonl).
    #[arg(long, value_name = "LOG")]
    audit_log: Option<PathBuf>,
    /// Seal the audit log's active segment and start a new one at this
    /// size (sealed segments go to `audit.segments/` beside the log; `0`
    /// never rotates).
    #[arg(long, value_name = "SIZE", env = "FORGEONE_AUDIT_SEGMENT_SIZE", default_value = "256MiB", value_parser = parse_size)]
    audit_segment_size: u64,
    /// The host's signing key for audit checkpoints (PKCS#8 PEM). Without
    /// one, an ephemeral key is generated for this process (and said so).
    #[arg(long, value_name = "KEY", env = "FORGEONE_HOST_KEY")]
    host_key: Option<PathBuf>,
    /// Do not cache compiled components on disk.
    #[arg(long)]
    no_cache: bool,
}

impl Local {
    /// The audit log (STATE_DIR/audit.jsonl unless `--audit-log`), signed
    /// by the host key or an ephemeral key (said so), waiting up to
    /// `--lock-timeout` for another process that holds it. `Err`: a signal
    /// came while waiting.
    pub(crate) fn open_audit(
        &self,
        runtime: &signals::Runtime,
    ) -> Result<Result<AuditLog, Signal>, Failure> {
        let key = host_key(self.host_key.as_deref())?;
        std::fs::create_dir_all(&self.state_dir)
            .map_err(|e| Failure::input(format!("{}: {e}", self.state_dir.display())))?;
        let log_path = self
            .audit_log
            .clone()
            .unwrap_or_else(|| self.state_dir.join("audit.jsonl"));
        let config =
            crate::util::audit_config(&log_path, self.lock_timeout, self.audit_segment_size);
        match runtime.unless_signalled(move || AuditLog::open(&log_path, key, &config)) {
            Ok(opened) => Ok(Ok(opened.map_err(|e| Failure::input(lock_failure(e)))?)),
            Err(signal) => Ok(Err(signal)),
        }
    }

    /// A runtime config with the compiled cache in STATE_DIR/cache, unless
    /// `--no-cache`.
    pub(crate) fn runtime_config(&self) -> RuntimeConfig {
        let mut config = RuntimeConfig::new();
        if !self.no_cache {
            config.cache_dir(self.state_dir.join("cache"));
        }
        config
    }

    /// `--tenant` and `--principal` (default $USER), at medium trust (the
    /// runtime derives the rest from the component).
    pub(crate) fn identity(&self) -> IdentityContext {
        let principal = self
            .principal
            .clone()
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "operator".into());
        IdentityContext::new(&self.tenant, principal, TrustVector::at(TrustLevel::Medium))
    }
}

fn host_key(path: Option<&Path>) -> Result<SigningKey, Failure> {
    match path {
        // The error names the file.
        Some(path) => {
            SigningKey::from_file(path).map_err(|e| Failure::input(format!("host key {e}")))
        }
        None => {
            let key = SigningKey::generate();
            eprintln!(
                "note: no --host-key (or FORGEONE_HOST_KEY): audit checkpoints are signed with an \
                 ephemeral key {} that is not kept; the log proves integrity, not authorship",
                key.id()
            );
            Ok(key)
        }
    }
}

fn exit_code_for(outcome: &Outcome) -> u8 {
    match &outcome.end {
        RunEnd::Success => 0,
        RunEnd::Stopped { .. } => 130,
        RunEnd::Failed(failure) => failure_exit_code(failure),
        _ => 134,
    }
}

/// The exit code for a run or call that failed this way (`run`'s exit
/// codes, which `call` shares).
pub(crate) fn failure_exit_code(failure: &RunFailure) -> u8 {
    match failure {
        RunFailure::Exit { code } => u8::try_from(*code).unwrap_or(1),
        RunFailure::Deadline { .. } => 124,
        RunFailure::HostCallDenied { .. } => 126,
        RunFailure::MemoryLimit { .. }
        | RunFailure::TableLimit { .. }
        | RunFailure::OpenFilesLimit { .. } => 135,
        RunFailure::OutOfFuel { .. } => 137,
        RunFailure::AuditUnavailable { .. } => 3,
        _ => 134,
    }
}

pub fn run(args: Args) -> CmdResult {
    // First, before anything slow: from here on SIGINT and SIGTERM stop
    // the run (at any moment) rather than end the process.
    let runtime = signals::Runtime::start(None)?;
    let audit = match args.local.open_audit(&runtime)? {
        Ok(audit) => audit,
        Err(signal) => return Ok(stopped_before_start(signal)),
    };
    let component = match verified_component(
        &args.component,
        args.anchor.as_deref(),
        args.sig.as_deref(),
        args.allow_unsigned,
        &audit,
    ) {
        Ok(component) => component,
        Err(failure) => {
            let _ = audit.close();
            return Err(failure);
        }
    };

    let result = match runtime.received() {
        Some(signal) => Ok(stopped_before_start(signal)),
        None => runtime.block_on(run_container(
            &args,
            component,
            audit.clone(),
            runtime.signals(),
        )),
    };
    if let Err(e) = audit.close() {
        eprintln!("warning: closing the audit log: {e}");
    }
    result
}

/// A signal before the container was created: nothing ran.
pub(crate) fn stopped_before_start(signal: Signal) -> ExitCode {
    eprintln!(
        "forgeone: stopping ({}) before the container started",
        signal.name()
    );
    ExitCode::from(signal.exit_code())
}

async fn run_container(
    args: &Args,
    component: VerifiedComponent,
    audit: AuditLog,
    mut signals: Signals,
) -> CmdResult {
    let mut config = args.local.runtime_config();
    config
        .engine(EngineConfig::new().max_code_size(args.max_code_size))
        .allow_unsigned(args.allow_unsigned);
    let runtime = Runtime::new(config, audit).map_err(|e| Failure::input(e.to_string()))?;

    // Structured log lines (`forgeone:kernel/log`) go to stderr, marked;
    // stdout and stderr themselves go through the byte sinks below.
    let logs = OutputSink::new(move |line| {
        if line.stream == Stream::Log {
            eprintln!("forgeone: {}", line.escaped());
        }
    });
    let mut container = ContainerConfig::new(component);
    container
        .fuel(args.fuel)
        .max_memory(args.max_memory)
        .timeout(args.timeout.0)
        .max_output(args.max_output)
        .max_open_files(args.max_open_files as usize)
        .file_io(args.file_io)
        .output(logs)
        .stdout(byte_sink(
            tokio::io::stdout(),
            std::io::stdout().is_terminal(),
            args.raw_output,
        ))
        .stderr(byte_sink(
            tokio::io::stderr(),
            std::io::stderr().is_terminal(),
            args.raw_output,
        ))
        // The invoking user's own input, as `wasmtime run` gives it; the
        // grant is in `container.created`.
        .stdin(StdinGrant::Inherit);
    for grant in &args.dirs {
        container.grant_dir(grant.clone());
    }
    for (k, v) in &args.envs {
        container.env(k, v);
    }
    for arg in &args.args {
        container.arg(arg);
    }
    let id = runtime
        .launch_container(container, args.local.identity())
        .map_err(|e| match e {
            forgeone::RuntimeError::UnsignedRefused { .. }
            | forgeone::RuntimeError::NetworkRefused { .. }
            | forgeone::RuntimeError::TooComplex { .. } => Failure::check(e),
            other => Failure::input(other),
        })?;

    // A signal that arrived while the container was being created is
    // returned at once here.
    let (outcome, signal) = tokio::select! {
        outcome = runtime.wait(id) => (outcome, None),
        (signal, _) = signals.next() => {
            eprintln!("forgeone: stopping ({})", signal.name());
            let _ = runtime.stop_with_grace(id, Duration::ZERO);
            (runtime.wait(id).await, Some(signal))
        }
    };
    let outcome = outcome.map_err(|e| Failure::input(e.to_string()))?;
    let code = match (signal, &outcome.end) {
        (Some(signal), RunEnd::Stopped { .. }) => signal.exit_code(),
        _ => exit_code_for(&outcome),
    };
    // Output that could not be written is never a silent success (a reader
    // that went away, a broken pipe, is no error of the run).
    let code = match &outcome.stats.sink_failure {
        Some(failed) if !failed.broken_pipe && code == 0 => 3,
        _ => code,
    };
    print_outcome(args, id, &outcome, code);
    Ok(ExitCode::from(code))
}

/// Exact bytes, unless `terminal` (and not `raw`): then escaped for it.
fn byte_sink(
    writer: impl tokio::io::AsyncWrite + Send + 'static,
    terminal: bool,
    raw: bool,
) -> ByteSink {
    if terminal && !raw {
        ByteSink::terminal(writer)
    } else {
        ByteSink::new(writer)
    }
}

fn print_outcome(args: &Args, id: uuid::Uuid, outcome: &Outcome, code: u8) {
    let stats = &outcome.stats;
    if args.json {
        let json = serde_json::json!({
            "container": id,
            "outcome": outcome,
            "exit_code": code,
        });
        eprintln!("{json}");
        return;
    }
    let what = match &outcome.end {
        RunEnd::Success => "exited with code 0".to_string(),
        RunEnd::Stopped { .. } => "stopped".to_string(),
        RunEnd::Failed(f) => f.to_string(),
        other => format!("{other:?}"),
    };
    eprintln!(
        "forgeone: {} {what} · fuel {} · peak memory {} · wall {}",
        short(id),
        stats.fuel_consumed,
        bytesize::ByteSize::b(stats.peak_memory),
        humantime::format_duration(Duration::from_micros(stats.wall_time.as_micros() as u64))
    );
    if let RunEnd::Failed(RunFailure::Trap { backtrace, .. }) = &outcome.end {
        for frame in backtrace.iter().take(12) {
            eprintln!("forgeone:     at {frame}");
        }
    }
    if let Some(failed) = &stats.sink_failure
        && !failed.broken_pipe
    {
        eprintln!(
            "forgeone: error: writing the guest's {} failed: {}; {} of its output was not written",
            failed.stream,
            failed.error,
            bytesize::ByteSize::b(failed.lost_bytes)
        );
    }
    if stats.output_truncated {
        eprintln!(
            "forgeone: note: all {} of output was written; the audit log and the evidence keep \
             the first {} (--max-output)",
            bytesize::ByteSize::b(stats.output_bytes),
            bytesize::ByteSize::b(args.max_output)
        );
    }
}

fn short(id: uuid::Uuid) -> String {
    id.simple().to_string()[..12].to_string()
}
