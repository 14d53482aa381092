//! `forgeone up`: boot, verify, schedule and run a deployment under
//! supervision, with a live table, a summary and an audit verification.
//! Every step is a library call (`Deployment::boot_builder`,
//! `Kernel::from_deployment_with`); this module parses arguments and
//! prints.

mod live;
mod summary;

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use forgeone::audit::AuditLog;
use forgeone::boot::{BootContext, BootError, BootOutcome};
use forgeone::kernel::{Kernel, KernelConfig, KernelError, NotRun, ScheduleReport};
use forgeone::runtime::{OutputLine, OutputSink};
use forgeone::{Deployment, KeyError, SigningKey};
use serde_json::json;

use crate::signals::{self, Signal, Signals};
use crate::util::{CmdResult, Failure, lock_failure};

const UP_EXIT_CODES: &str = "\
Exit codes of `up`:
  0    every workload was placed, ran, and ended well (exit 0 or stopped)
  1    something was refused or failed: a component at boot, a workload by
       policy or placement, a container that failed or was quarantined, or
       the audit log did not verify; or the boot ran a downgraded component
       (allow_recovery_downgrade)
  3    bad input: the deployment (the error names line and column), keys,
       anchor or manifest unreadable, or a --metrics address that cannot
       be bound
  130  interrupted by SIGINT (Ctrl-C): every container was stopped, the drain
       audited and the log sealed (a signal during boot or placement too)
  143  stopped by SIGTERM: likewise";

/// Boot, verify, schedule and run every workload of a deployment.
///
/// Reads DEPLOYMENT (`forgeone.toml`), then:
///
/// 1. boots from the trust anchor as the file's `boot` says: `manifest`
///    verifies the signed boot manifest (rollback protection, last-known-good
///    recovery and try counters in the state directory; a missing manifest
///    is an error), `signatures` verifies each workload's component against
///    its own signature (refused once the state directory has accepted a
///    manifest). A component that fails is handled by `boot_policy`
///    (fail-closed, recover or degraded) and its workload does not run.
/// 2. places every workload on this host's `[node]` by priority, trust and
///    age, under the tenants' policies and the workloads' constraints; trust
///    comes from the tenant's policy and the verified signatures, never from
///    the file. A workload that does not fit is reported with the reason.
/// 3. runs the containers under supervision on the work-stealing executor,
///    showing a live table (workload, node, priority, status, fuel, memory,
///    restarts) until every container has settled; a component whose
///    container ran healthily becomes last-known-good.
/// 4. prints a summary, seals the audit log and verifies it with the host key.
///
/// Ctrl-C (SIGINT) or SIGTERM stops every container (gracefully for
/// --stop-grace, then at the next yield point), records the drain in the
/// audit log and seals it; a second signal stops them at once. The
/// handlers are in place before anything slow: a signal while `up` waits
/// for a lock (--lock-timeout) or boots stops it at once, one during
/// placement as soon as the placement ends, and nothing more starts.
#[derive(Debug, clap::Args)]
#[command(after_help = UP_EXIT_CODES)]
pub struct Args {
    /// The deployment (`forgeone.toml`).
    #[arg(value_name = "DEPLOYMENT")]
    deployment: PathBuf,
    /// Print machine-readable events (one JSON object per line) instead of
    /// the table.
    #[arg(long)]
    json: bool,
    /// How long a container gets to stop after Ctrl-C or SIGTERM before it
    /// is stopped at its next yield point.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    stop_grace: Duration,
    /// Executor worker threads (default: one per core).
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// How long to wait, saying so once, while another process holds the
    /// audit log or the state directory (e.g. `30s`, `2m`; `0s` gives up
    /// at once).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    lock_timeout: Duration,
    /// Serve Prometheus metrics at http://ADDR/metrics while the
    /// deployment runs (e.g. `127.0.0.1:9464`): containers by status,
    /// starts, exits by outcome, fuel, plugin calls, scheduler decisions,
    /// the executor and the audit log. Off by default.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
    /// Seal the audit log's active segment and start a new one at this
    /// size (sealed segments go to `audit.segments/` beside the log; `0`
    /// never rotates).
    #[arg(long, value_name = "SIZE", env = "FORGEONE_AUDIT_SEGMENT_SIZE", default_value = "256MiB", value_parser = forgeone::deployment::parse_size)]
    audit_segment_size: u64,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("`{text}` is not a duration like 5s: {e}"))
}

/// How the command reports: a table for people, JSON lines for programs.
#[derive(Clone, Copy)]
struct Out {
    json: bool,
    tty: bool,
}

impl Out {
    /// A progress or diagnostic line (stderr; not in JSON mode).
    fn note(&self, text: impl std::fmt::Display) {
        if !self.json {
            eprintln!("forgeone: {text}");
        }
    }

    /// A line of the human report (stdout).
    fn line(&self, text: impl std::fmt::Display) {
        if !self.json {
            println!("{text}");
        }
    }

    /// A machine-readable event (stdout, JSON mode only).
    fn event(&self, value: serde_json::Value) {
        if self.json {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{value}");
        }
    }
}

/// The audit log and the boot quote each take the host key.
fn copy_key(key: &SigningKey) -> Result<SigningKey, Failure> {
    SigningKey::from_pem(&key.to_pem()).map_err(Failure::input)
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Guest output waiting to be printed above the table.
type Pending = Arc<Mutex<Vec<OutputLine>>>;

pub fn run(args: Args) -> CmdResult {
    let out = Out {
        json: args.json,
        tty: std::io::stdout().is_terminal() && !args.json,
    };
    // First, before anything slow: from here on SIGINT and SIGTERM stop
    // the deployment (at any moment) rather than end the process.
    let runtime = signals::Runtime::start(Some(1))?;
    let deployment = Deployment::from_file(&args.deployment).map_err(Failure::input)?;
    let settings = &deployment.settings;
    std::fs::create_dir_all(&settings.state_dir).map_err(|e| {
        Failure::input(format!(
            "state directory {}: {e}",
            settings.state_dir.display()
        ))
    })?;
    let key = SigningKey::from_file(&settings.host_key).map_err(|e| match e {
        KeyError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            Failure::input(format!(
                "host key {}: {source} (make one with `forgeone keygen {}`)",
                settings.host_key.display(),
                settings.host_key.display()
            ))
        }
        e => Failure::input(format!("host key {e}")),
    })?;
    let host_public = key.public().clone();
    let (log_path, log_key) = (settings.audit_log.clone(), copy_key(&key)?);
    // The latest signed head is kept beside the log (audit.head.json), so a
    // log cut back to an earlier checkpoint is refused on the next start.
    let mut config =
        crate::util::audit_config(&log_path, args.lock_timeout, args.audit_segment_size);
    if let Some(addr) = args.metrics {
        // Metrics are a projection of the audit log: the observer sees
        // every record from the first one (`audit.opened`) on.
        forgeone::telemetry::serve_prometheus(addr).map_err(Failure::input)?;
        config.observer(Arc::new(forgeone::telemetry::Metrics::new()));
        out.note(format!("metrics at http://{addr}/metrics"));
    }
    let audit = match runtime.unless_signalled(move || AuditLog::open(&log_path, log_key, &config))
    {
        Ok(opened) => opened.map_err(|e| Failure::input(lock_failure(e)))?,
        Err(signal) => return Ok(stopped_before_start(signal, out)),
    };
    out.note(format!(
        "deployment {} · {} workload{} · boot by {} · audit log {}",
        args.deployment.display(),
        deployment.workloads.len(),
        plural(deployment.workloads.len()),
        settings.boot.as_str(),
        settings.audit_log.display()
    ));

    let mut downgraded = false;
    let result = boot(&args, &deployment, &audit, key, out, &runtime).and_then(|boot| {
        let Some(boot) = boot.filter(|_| runtime.received().is_none()) else {
            // A signal during boot: nothing more starts.
            return Ok(stopped_before_start(
                runtime.received().expect("a signal"),
                out,
            ));
        };
        downgraded = boot.outcome == BootOutcome::Downgraded;
        runtime.block_on(run_kernel(
            &args,
            &deployment,
            boot,
            &audit,
            out,
            runtime.signals(),
        ))
    });
    let close = audit.close();
    let code = match result {
        Ok(code) => code,
        Err(failure) => {
            if let Err(e) = close {
                eprintln!("warning: closing the audit log: {e}");
            }
            return Err(failure);
        }
    };
    if let Err(e) = close {
        return Err(Failure::input(format!("closing the audit log: {e}")));
    }
    let audit_ok = summary::verify_audit(&settings.audit_log, host_public, out);
    if downgraded {
        out.note("the boot ran a component older than its highest accepted version (downgraded)");
    }
    Ok(if audit_ok && (!downgraded || code != ExitCode::SUCCESS) {
        code
    } else {
        ExitCode::from(1)
    })
}

/// A signal before any container started.
fn stopped_before_start(signal: Signal, out: Out) -> ExitCode {
    out.note(format!("stopping ({}): nothing was started", signal.name()));
    ExitCode::from(signal.exit_code())
}

/// Boots the deployment's components as its `boot` mode says, and prints
/// the boot report; `None` when a signal cut the boot short.
fn boot(
    args: &Args,
    deployment: &Deployment,
    audit: &AuditLog,
    key: SigningKey,
    out: Out,
    runtime: &signals::Runtime,
) -> Result<Option<BootContext>, Failure> {
    let settings = &deployment.settings;
    let mut builder = deployment.boot_builder();
    let timeout = args.lock_timeout;
    builder
        .audit(audit.clone())
        .host_key(key)
        .lock_timeout(timeout)
        .on_lock_wait(move |lock| {
            eprintln!(
                "forgeone: waiting for the boot state {}: another process is using it (up to {}, --lock-timeout)",
                lock.parent().unwrap_or(lock).display(),
                humantime::format_duration(timeout)
            );
        });
    if !out.json {
        builder.progress(|line| eprintln!("forgeone: {line}"));
    }
    let Ok(booted) = runtime.unless_signalled(move || builder.run()) else {
        return Ok(None);
    };
    let ctx = booted.map_err(|e| match e {
        BootError::StateLocked { .. } => Failure::input(format!(
            "{e} (waited {}, --lock-timeout)",
            humantime::format_duration(timeout)
        )),
        e => crate::anchor::boot_failure(e),
    })?;
    if !out.json {
        println!(
            "boot ({}, {} policy)",
            settings.boot.as_str(),
            settings.boot_policy
        );
        crate::boot_cmd::print_report(&ctx);
        println!();
    }
    out.event(json!({
        "event": "boot",
        "mode": settings.boot.as_str(),
        "outcome": ctx.outcome.as_str(),
        "integrity": ctx.integrity_status.to_string(),
        "register": ctx.register.to_hex(),
        "release": ctx.release,
        "components": ctx.components.iter().map(|c| json!({
            "name": c.name(), "version": c.version(), "digest": c.digest().to_hex(),
        })).collect::<Vec<_>>(),
        "recovered": ctx.recovered,
        "left_out": ctx.left_out,
    }));
    if ctx.outcome == BootOutcome::Compromised {
        return Err(Failure::check(format!(
            "boot: {}; nothing runs (boot_policy = \"{}\")",
            ctx.integrity_status, settings.boot_policy
        )));
    }
    Ok(Some(ctx))
}

async fn run_kernel(
    args: &Args,
    deployment: &Deployment,
    boot: BootContext,
    audit: &AuditLog,
    out: Out,
    signals: Signals,
) -> CmdResult {
    let pending: Pending = Arc::default();
    let sink_pending = pending.clone();
    let mut config = KernelConfig::from_deployment(deployment).map_err(Failure::input)?;
    config.boot(boot).output(OutputSink::new(move |line| {
        sink_pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(line.clone());
    }));
    if let Some(n) = args.workers {
        config.workers(n);
    }
    let (kernel, report) =
        Kernel::from_deployment_with(deployment, config, audit.clone()).map_err(kernel_failure)?;
    let kernel = Arc::new(kernel);
    let sampler = args
        .metrics
        .map(|_| forgeone::telemetry::spawn_sampler(&kernel, Duration::from_secs(1)));
    print_allocation(&kernel, out);
    print_schedule(&kernel, &report, deployment, out);

    // A signal that arrived during placement is taken at once.
    let interrupted = live::watch(&kernel, &pending, args.stop_grace, out, signals).await;
    // The final state, before quarantined containers are let go.
    let views = kernel.workloads();
    if !kernel.idle() {
        // Quarantined containers wait for an operator; `up` is ending, so
        // stop them (audited as a drain) and wait for their tasks.
        if let Err(e) = kernel.drain("deployment settled; ending `forgeone up`", Duration::ZERO) {
            out.note(format!("could not record the drain: {e}"));
        }
        kernel.wait().await;
    }
    kernel.shutdown("deployment settled");
    if let Some(sampler) = sampler {
        sampler.abort();
        forgeone::telemetry::sample(&kernel);
    }
    let ok = summary::summary(&views, out);
    Ok(ExitCode::from(if let Some(signal) = interrupted {
        signal.exit_code()
    } else if ok {
        0
    } else {
        1
    }))
}

fn kernel_failure(e: KernelError) -> Failure {
    match e {
        KernelError::Audit(e) => Failure::input(format!(
            "the audit log cannot be written, so nothing runs: {e}"
        )),
        KernelError::Deployment(e) => Failure::input(e),
        KernelError::BootCompromised { .. } => Failure::check(e),
        other => Failure::input(other),
    }
}

/// Which instance allocator runs the containers: the pool sized from the
/// deployment, or on demand and why the deployment does not fit a pool.
fn print_allocation(kernel: &Kernel, out: Out) {
    let allocation = kernel.allocation();
    out.line(format!("instances: {allocation}"));
    out.event(json!({ "event": "allocation", "allocation": allocation }));
}

/// What the first scheduling round did, and every workload that did not
/// get that far.
fn print_schedule(kernel: &Kernel, report: &ScheduleReport, deployment: &Deployment, out: Out) {
    out.line(format!(
        "schedule: {} placed on node `{}`, {} not placed",
        report.launched.len(),
        deployment.node.id,
        kernel.workloads().len() - report.launched.len()
    ));
    for l in &report.launched {
        let a = &l.allocation;
        out.line(format!(
            "  {:<14} -> {} [{}] score {}",
            l.name, a.node_id, a.zone, a.score
        ));
        out.event(json!({
            "event": "placed", "workload": l.name, "node": a.node_id.to_string(),
            "zone": a.zone, "score": a.score, "container": l.container,
        }));
    }
    for p in &report.preempted {
        out.line(format!("  {:<14} preempted by {}", p.name, p.by));
        out.event(json!({ "event": "preempted", "workload": p.name, "by": p.by }));
    }
    for v in kernel.workloads() {
        let Some(not_run) = &v.not_run else { continue };
        let (label, stage, unschedulable) = match not_run {
            NotRun::Boot { .. } => ("NOT RUN", "boot", false),
            NotRun::Unschedulable { .. } => ("UNSCHEDULABLE", "schedule", true),
            _ => ("REFUSED", "schedule", false),
        };
        let reason = match not_run {
            NotRun::Boot { reason } => reason.clone(),
            other => other.to_string(),
        };
        out.line(format!("  {:<14} {label}: {reason}", v.name));
        out.event(json!({
            "event": "refused", "stage": stage, "workload": v.name,
            "unschedulable": unschedulable, "reason": reason,
        }));
    }
    out.line("");
}
