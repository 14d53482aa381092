//! `forgeone up`: boot, verify, schedule and run a deployment under
//! supervision, with a live table, a summary and an audit verification.

use std::collections::{BTreeMap, HashMap};
use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use forgeone::audit::{self, AuditConfig, AuditLog, VerifyOptions};
use forgeone::boot::{
    BootBuilder, BootContext, BootManifest, BootOutcome, BootPolicy, ComponentCheck, TrustAnchor,
    VerifiedComponent,
};
use forgeone::deployment::{self, BootPolicy as DeploymentBootPolicy, Deployment, WorkloadSpec};
use forgeone::kernel::{Kernel, KernelConfig, KernelError, WorkloadView};
use forgeone::runtime::{
    BackoffConfig, ContainerConfig, ContainerStatus, Failure as RunFailure, OutputSink,
    RestartPolicy, RuntimeConfig, Stream,
};
use forgeone::scheduler::{self, ScheduleError};
use forgeone::{SigningKey, TrustVector};
use serde_json::json;

use crate::util::{CmdResult, Failure};

const UP_EXIT_CODES: &str = "\
Exit codes of `up`:
  0    every workload was placed, ran, and ended well (exit 0 or stopped)
  1    something was refused or failed: a component at boot, a workload by
       policy or placement, a container that failed or was quarantined, or
       the audit log did not verify
  3    bad input: the deployment (the error names line and column), keys,
       anchor or manifest unreadable
  130  interrupted (Ctrl-C): every container was stopped and that is audited";

/// Boot, verify, schedule and run every workload of a deployment.
///
/// Reads DEPLOYMENT (`forgeone.toml`), then:
///
/// 1. boots from the trust anchor: with the boot manifest when the file
///    exists (rollback protection, last-known-good recovery and try
///    counters in the state directory), else each workload's component
///    against its own signature (`signature`, default COMPONENT.sig.json).
///    A component that fails is refused and its workload does not run.
/// 2. places every workload on this host's `[node]` by priority, trust and
///    age, under the tenants' policies and the workloads' constraints; a
///    workload that does not fit is reported with the reason.
/// 3. runs the containers under supervision on the work-stealing executor,
///    showing a live table (workload, node, priority, status, fuel, memory,
///    restarts) until every container has settled;
/// 4. prints a summary, seals the audit log and verifies it with the host key.
///
/// Ctrl-C stops every container (gracefully for --stop-grace, then at the
/// next yield point) and records the drain in the audit log; a second
/// Ctrl-C stops them at once.
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
    /// How long a container gets to stop after Ctrl-C before it is stopped
    /// at its next yield point.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    stop_grace: Duration,
    /// Executor worker threads (default: one per core).
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
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

/// Why a workload did not run.
#[derive(Debug, Clone)]
enum NotRun {
    Boot(String),
    Schedule { unschedulable: bool, reason: String },
}

pub fn run(args: Args) -> CmdResult {
    let out = Out {
        json: args.json,
        tty: std::io::stdout().is_terminal() && !args.json,
    };
    let deployment = Deployment::from_file(&args.deployment).map_err(Failure::input)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let node = scheduler::node_from_config(&deployment.node, cores);
    // A constraint naming a label this node does not have is a typo, not
    // an unschedulable workload: refuse before anything starts.
    deployment
        .check_labels(&scheduler::known_labels(std::slice::from_ref(&node)))
        .map_err(Failure::input)?;
    let settings = &deployment.settings;
    std::fs::create_dir_all(&settings.state_dir).map_err(|e| {
        Failure::input(format!(
            "state directory {}: {e}",
            settings.state_dir.display()
        ))
    })?;
    let key = SigningKey::from_file(&settings.host_key).map_err(|e| {
        Failure::input(format!(
            "host key {}: {e} (make one with `forgeone keygen --out {}`)",
            settings.host_key.display(),
            settings.host_key.with_extension("").display()
        ))
    })?;
    let host_public = key.public().clone();
    let audit = AuditLog::open(&settings.audit_log, copy_key(&key)?, &AuditConfig::new())
        .map_err(|e| Failure::input(format!("audit log {}: {e}", settings.audit_log.display())))?;
    out.note(format!(
        "deployment {} · {} workload{} · audit log {}",
        args.deployment.display(),
        deployment.workloads.len(),
        plural(deployment.workloads.len()),
        settings.audit_log.display()
    ));

    let result = boot_and_run(&args, &deployment, node, &audit, key, out);
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
    let audit_ok = verify_audit(&settings.audit_log, host_public, out);
    Ok(if audit_ok { code } else { ExitCode::from(1) })
}

fn copy_key(key: &SigningKey) -> Result<SigningKey, Failure> {
    SigningKey::from_pem(&key.to_pem()).map_err(Failure::input)
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Seals are checked with the host key from the deployment, so the result
/// says who wrote the log, not only that it is intact.
fn verify_audit(path: &Path, key: forgeone::PublicKey, out: Out) -> bool {
    let key_id = key.id().to_string();
    let mut options = VerifyOptions::new();
    options.key(key);
    match audit::verify_file(path, &options) {
        Ok(report) => {
            out.line(format!(
                "\naudit: verified {} records, {} checkpoint{}, head {} (signed by host key {key_id})",
                report.records,
                report.checkpoints,
                plural(report.checkpoints as usize),
                report.head
            ));
            out.line(format!(
                "       check it yourself: forgeone audit verify {} --key <host public key>",
                path.display()
            ));
            out.event(json!({
                "event": "audit",
                "verified": true,
                "log": path,
                "records": report.records,
                "checkpoints": report.checkpoints,
                "head": report.head,
                "host_key": key_id,
            }));
            true
        }
        Err(e) => {
            out.line(format!("\naudit: VERIFICATION FAILED: {e}"));
            out.event(
                json!({ "event": "audit", "verified": false, "log": path, "error": e.to_string() }),
            );
            false
        }
    }
}

/// The component each workload runs, or why it does not run.
type Verified = BTreeMap<String, Result<VerifiedComponent, String>>;

fn boot_and_run(
    args: &Args,
    deployment: &Deployment,
    node: scheduler::Node,
    audit: &AuditLog,
    key: SigningKey,
    out: Out,
) -> CmdResult {
    let settings = &deployment.settings;
    let (verified, boot) = if settings.boot_manifest.is_file() {
        boot_with_manifest(deployment, audit, key, out)?
    } else {
        out.note(format!(
            "no boot manifest at {}: verifying each component against its own signature",
            settings.boot_manifest.display()
        ));
        (verify_each(deployment, audit, out)?, None)
    };

    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| Failure::input(format!("cannot start the async runtime: {e}")))?;
    tokio.block_on(run_kernel(
        args, deployment, node, audit, verified, boot, out,
    ))
}

fn boot_with_manifest(
    deployment: &Deployment,
    audit: &AuditLog,
    key: SigningKey,
    out: Out,
) -> Result<(Verified, Option<BootContext>), Failure> {
    let settings = &deployment.settings;
    let policy = match settings.boot_policy {
        DeploymentBootPolicy::Degraded => BootPolicy::Degraded,
        DeploymentBootPolicy::Recover => BootPolicy::Recover,
        _ => BootPolicy::FailClosed,
    };
    let mut builder = BootBuilder::from_files(&settings.trust_anchor, &settings.boot_manifest);
    builder
        .state_dir(settings.state_dir.join("boot"))
        .policy(policy)
        .audit(audit.clone())
        .host_key(key);
    if !out.json {
        builder.progress(|line| eprintln!("forgeone: {line}"));
    }
    let ctx = builder.run().map_err(crate::anchor::boot_failure)?;
    if !out.json {
        println!("boot ({} policy)", policy_name(settings.boot_policy));
        crate::boot_cmd::print_report(&ctx);
        println!();
    }
    out.event(json!({
        "event": "boot",
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
            ctx.integrity_status,
            policy_name(settings.boot_policy)
        )));
    }
    let manifest = BootManifest::from_file(&settings.boot_manifest)
        .map_err(|e| Failure::input(format!("{}: {e}", settings.boot_manifest.display())))?;
    let mut verified = Verified::new();
    for spec in &deployment.workloads {
        let entry = match manifest_name(&manifest, spec) {
            None => Err(format!(
                "{} is not listed in the boot manifest {}; only listed components run",
                spec.component.display(),
                settings.boot_manifest.display()
            )),
            Some(name) => match ctx.component(&name) {
                Some(c) => Ok(c.clone()),
                None => Err(ctx
                    .left_out
                    .iter()
                    .find(|l| l.name == name)
                    .map(|l| format!("refused at boot: {}", l.reason))
                    .unwrap_or_else(|| format!("component `{name}` did not boot"))),
            },
        };
        verified.insert(spec.name.clone(), entry);
    }
    Ok((verified, Some(ctx)))
}

fn policy_name(p: DeploymentBootPolicy) -> &'static str {
    match p {
        DeploymentBootPolicy::Recover => "recover",
        DeploymentBootPolicy::Degraded => "degraded",
        _ => "strict",
    }
}

/// The manifest entry a workload's component is: the same file, else the
/// entry named like the workload or like the file.
fn manifest_name(manifest: &BootManifest, spec: &WorkloadSpec) -> Option<String> {
    let wanted = std::fs::canonicalize(&spec.component).ok();
    let components = manifest.components();
    if let Some(wanted) = &wanted
        && let Some(c) = components
            .iter()
            .find(|c| std::fs::canonicalize(manifest.path_of(c)).ok().as_ref() == Some(wanted))
    {
        return Some(c.name.clone());
    }
    let stem = spec
        .component
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned());
    components
        .iter()
        .find(|c| c.name == spec.name || Some(&c.name) == stem.as_ref())
        .map(|c| c.name.clone())
}

fn verify_each(deployment: &Deployment, audit: &AuditLog, out: Out) -> Result<Verified, Failure> {
    let path = &deployment.settings.trust_anchor;
    let anchor = TrustAnchor::from_file(path).map_err(|e| {
        Failure::check(format!(
            "trust anchor {}: {e} (make one with `forgeone anchor init`)",
            path.display()
        ))
    })?;
    let mut verified = Verified::new();
    for spec in &deployment.workloads {
        let mut check = ComponentCheck::new(&anchor);
        check.audit(audit.clone());
        if let Some(sig) = &spec.signature {
            check.signature_path(sig);
        }
        let entry = match check.verify_file(&spec.component) {
            Ok(c) => {
                out.note(format!(
                    "verified {} {}@{} {}",
                    spec.name,
                    c.name(),
                    c.version(),
                    c.digest().short()
                ));
                Ok(c)
            }
            Err(e) => {
                out.note(format!("REFUSED {}: {e}", spec.name));
                Err(format!("refused: {e}"))
            }
        };
        verified.insert(spec.name.clone(), entry);
    }
    Ok(verified)
}

fn restart_policy(p: deployment::RestartPolicy) -> RestartPolicy {
    match p {
        deployment::RestartPolicy::OnFailure => RestartPolicy::OnFailure,
        deployment::RestartPolicy::Always => RestartPolicy::Always,
        _ => RestartPolicy::Never,
    }
}

/// Guest output waiting to be printed above the table.
type Pending = Arc<Mutex<Vec<(String, Stream, String)>>>;

async fn run_kernel(
    args: &Args,
    deployment: &Deployment,
    node: scheduler::Node,
    audit: &AuditLog,
    verified: Verified,
    boot: Option<BootContext>,
    out: Out,
) -> CmdResult {
    let settings = &deployment.settings;
    let sup = settings.supervision;
    let mut backoff = BackoffConfig::new();
    backoff
        .initial(sup.backoff)
        .max(sup.max_backoff)
        .reset_after(sup.healthy_after)
        .crash_loop_threshold(sup.quarantine_after);
    let mut runtime = RuntimeConfig::new();
    runtime
        .cache_dir(settings.state_dir.join("cache"))
        .backoff(backoff)
        // The network is off unless a workload of this (operator-written)
        // deployment is granted it; each grant is audited with the container.
        .allow_network(deployment.workloads.iter().any(|w| w.capabilities.network));
    let mut config = KernelConfig::new(node, deployment.policies());
    config.runtime(runtime);
    if let Some(n) = args.workers {
        config.workers(n);
    }
    let kernel = Kernel::new(config, audit.clone()).map_err(kernel_failure)?;

    let pending: Pending = Arc::default();
    let mut not_run: BTreeMap<String, NotRun> = BTreeMap::new();
    let mut priority_of: HashMap<String, String> = HashMap::new();
    for spec in &deployment.workloads {
        priority_of.insert(spec.name.clone(), spec.priority.to_string());
        let component = match verified.get(&spec.name) {
            Some(Ok(c)) => c.clone(),
            Some(Err(reason)) => {
                not_run.insert(spec.name.clone(), NotRun::Boot(reason.clone()));
                continue;
            }
            None => continue,
        };
        let level = deployment
            .tenant(&spec.tenant)
            .map(|t| t.trust)
            .unwrap_or_default();
        let signers = u8::try_from(component.signers().len()).unwrap_or(u8::MAX);
        let mut workload = scheduler::workload_from_spec(spec, TrustVector::new(level, signers));
        workload.signers = component
            .signers()
            .iter()
            .map(ToString::to_string)
            .collect();
        if let Err(reason) = kernel_submit(&kernel, spec, workload, component, &pending, out) {
            not_run.insert(
                spec.name.clone(),
                NotRun::Schedule {
                    unschedulable: false,
                    reason,
                },
            );
        }
    }

    let report = kernel.schedule().map_err(kernel_failure)?;
    out.line(format!(
        "schedule: {} placed on node `{}`, {} not placed",
        report.launched.len(),
        deployment.node.id,
        report.refused.len()
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
    for r in &report.refused {
        let (unschedulable, reason) = match &r.error {
            KernelError::Schedule(ScheduleError::Unschedulable { explanation, .. }) => {
                let mut why: Vec<String> = explanation
                    .rejected()
                    .iter()
                    .map(|g| {
                        format!(
                            "{} node{} rejected by {}",
                            g.count,
                            plural(g.count as usize),
                            g.reason
                        )
                    })
                    .collect();
                if let Some(note) = explanation.note() {
                    why.push(note.to_string());
                }
                (true, why.join("; "))
            }
            other => (false, other.to_string()),
        };
        let label = if unschedulable {
            "UNSCHEDULABLE"
        } else {
            "REFUSED"
        };
        out.line(format!("  {:<14} {label}: {reason}", r.name));
        out.event(json!({
            "event": "refused", "stage": "schedule", "workload": r.name,
            "unschedulable": unschedulable, "reason": reason,
        }));
        not_run.insert(
            r.name.clone(),
            NotRun::Schedule {
                unschedulable,
                reason,
            },
        );
    }
    for (name, n) in &not_run {
        match n {
            NotRun::Boot(reason) => {
                out.line(format!("  {name:<14} NOT RUN: {reason}"));
                out.event(json!({
                    "event": "refused", "stage": "boot", "workload": name, "reason": reason,
                }));
            }
            // Refused before placement (e.g. a worker that does not exist).
            NotRun::Schedule { reason, .. } if !report.refused.iter().any(|r| &r.name == name) => {
                out.line(format!("  {name:<14} REFUSED: {reason}"));
                out.event(json!({
                    "event": "refused", "stage": "schedule", "workload": name,
                    "unschedulable": false, "reason": reason,
                }));
            }
            NotRun::Schedule { .. } => {}
        }
    }
    out.line("");

    let interrupted = watch(&kernel, &pending, args.stop_grace, out).await;
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
    if let Some(ctx) = &boot {
        record_starts(ctx, &views, &verified);
    }
    let ok = summary(deployment, &views, &not_run, &priority_of, out);
    Ok(ExitCode::from(if interrupted {
        130
    } else if ok {
        0
    } else {
        1
    }))
}

fn kernel_submit(
    kernel: &Kernel,
    spec: &WorkloadSpec,
    workload: forgeone::Workload,
    component: VerifiedComponent,
    pending: &Pending,
    out: Out,
) -> Result<(), String> {
    let name = spec.name.clone();
    let sink_pending = pending.clone();
    let sink = OutputSink::new(move |line| {
        if out.json {
            out.event(json!({
                "event": "output", "workload": name, "container": line.container,
                "stream": match line.stream { Stream::Stdout => "stdout", Stream::Stderr => "stderr", _ => "log" },
                "text": line.text,
            }));
        } else {
            sink_pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((name.clone(), line.stream, line.escaped()));
        }
    });
    let r = &spec.resources;
    let mut container = ContainerConfig::new(component);
    container
        .name(spec.name.clone())
        .workload(spec.name.clone())
        .max_memory(workload.resource_requirements.memory)
        .timeout(r.timeout)
        .restart(restart_policy(spec.restart))
        .network(spec.capabilities.network)
        .output(sink);
    if r.fuel.is_some() {
        container.fuel(r.fuel);
    }
    for d in &spec.capabilities.dirs {
        container.dir(&d.host, &d.guest, d.read_only);
    }
    for (k, v) in &spec.capabilities.env {
        container.env(k, v);
    }
    for a in &spec.capabilities.args {
        container.arg(a);
    }
    match spec.worker {
        None => {
            kernel.submit(workload, container);
            Ok(())
        }
        Some(worker) => kernel
            .submit_pinned(workload, container, worker)
            .map(drop)
            .map_err(|e| format!("worker affinity: {e}")),
    }
}

fn kernel_failure(e: KernelError) -> Failure {
    match e {
        KernelError::Audit(e) => Failure::input(format!(
            "the audit log cannot be written, so nothing runs: {e}"
        )),
        other => Failure::input(other),
    }
}

/// Shows the table until every container has settled, or until Ctrl-C
/// (then drains). Returns whether it was interrupted.
async fn watch(kernel: &Kernel, pending: &Pending, grace: Duration, out: Out) -> bool {
    let started = Instant::now();
    let mut last: HashMap<String, String> = HashMap::new();
    let mut drawn = 0usize;
    let mut interrupted = false;
    let mut forced = false;
    let mut tick = tokio::time::interval(Duration::from_millis(if out.tty { 200 } else { 100 }));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c(), if !forced => {
                if interrupted {
                    forced = true;
                    out.note("stopping every container now (second Ctrl-C)");
                    for v in kernel.workloads() {
                        if let Some(c) = v.container {
                            let _ = kernel.runtime().stop_with_grace(c.id, Duration::ZERO);
                        }
                    }
                } else {
                    interrupted = true;
                    out.note(format!(
                        "stopping every container (Ctrl-C); they get {} before they are stopped at their next yield; Ctrl-C again to stop them now",
                        humantime::format_duration(grace)
                    ));
                    if let Err(e) = kernel.drain("interrupted (Ctrl-C)", grace) {
                        out.note(format!("could not record the drain: {e}"));
                    }
                }
            }
        }
        drawn = render(kernel, pending, &mut last, drawn, started, out);
        if kernel.settled() {
            break;
        }
    }
    interrupted
}

/// Prints new guest output and status changes; on a terminal, redraws the
/// table under them. Returns the table's height (to erase it next time).
fn render(
    kernel: &Kernel,
    pending: &Pending,
    last: &mut HashMap<String, String>,
    drawn: usize,
    started: Instant,
    out: Out,
) -> usize {
    let views = kernel.workloads();
    let lines = std::mem::take(&mut *pending.lock().unwrap_or_else(|p| p.into_inner()));
    let mut stdout = std::io::stdout().lock();
    if out.tty && drawn > 0 {
        // Move up over the previous table and clear to the end of the screen.
        let _ = write!(stdout, "\x1b[{drawn}A\x1b[J");
    }
    for (name, stream, text) in lines {
        let tag = if matches!(stream, Stream::Stderr) {
            "!"
        } else {
            "|"
        };
        if !out.json {
            let _ = writeln!(stdout, "{name:>14} {tag} {text}");
        }
    }
    let at = started.elapsed();
    for v in &views {
        let status = status_text(v);
        if last.get(&v.name) != Some(&status) {
            if !out.tty && !out.json {
                let _ = writeln!(
                    stdout,
                    "[{:>6.2}s] {:<14} {status}",
                    at.as_secs_f64(),
                    v.name
                );
            }
            out.event(view_json(v, &status));
            last.insert(v.name.clone(), status);
        }
    }
    if out.tty {
        let table = table(&views);
        for line in &table {
            let _ = writeln!(stdout, "{line}");
        }
        let _ = stdout.flush();
        return table.len();
    }
    let _ = stdout.flush();
    0
}

fn view_json(v: &WorkloadView, status: &str) -> serde_json::Value {
    let c = v.container.as_ref();
    json!({
        "event": "status",
        "workload": v.name,
        "node": v.node,
        "priority": v.priority,
        "status": c.map(|c| c.status.name()).unwrap_or("unknown"),
        "detail": status,
        "container": c.map(|c| c.id),
        "fuel": c.map(fuel_used),
        "peak_memory": c.map(|c| c.resources.peak_memory),
        "restarts": c.map(restarts),
    })
}

/// Fuel used by every run, the current one included while it runs.
fn fuel_used(c: &forgeone::ContainerContext) -> u64 {
    match c.status {
        ContainerStatus::Running | ContainerStatus::Paused | ContainerStatus::Stopping => {
            c.resources.fuel_consumed_total + c.resources.fuel_consumed
        }
        _ => c.resources.fuel_consumed_total,
    }
}

fn restarts(c: &forgeone::ContainerContext) -> u32 {
    c.run.saturating_sub(1)
}

/// The status with what it means, for the log lines and the summary.
fn status_text(v: &WorkloadView) -> String {
    status(v, false)
}

/// The status, short enough for a table cell when `brief`.
fn status(v: &WorkloadView, brief: bool) -> String {
    let Some(c) = &v.container else {
        return "gone".into();
    };
    let failure = |f: &RunFailure| {
        if brief {
            f.kind().replace('-', " ")
        } else {
            short_failure(f)
        }
    };
    let mut s = match &c.status {
        ContainerStatus::Failed(f) => format!("failed: {}", failure(f)),
        ContainerStatus::Quarantined(q) if brief => {
            format!("quarantined ({} failures)", q.failures)
        }
        ContainerStatus::Quarantined(q) => format!(
            "quarantined after {} failed runs in a row (last: {})",
            q.failures,
            short_failure(&q.last_failure)
        ),
        ContainerStatus::Stopped => match c.last_outcome.as_ref().map(|o| &o.end) {
            Some(forgeone::runtime::RunEnd::Success) => "exited 0".into(),
            _ => "stopped".into(),
        },
        other => other.name().to_string(),
    };
    if c.next_restart.is_some() {
        let backoff = c.history.last().map(|h| h.backoff).unwrap_or_default();
        s.push_str(&format!(
            ", restart {} in {}",
            c.run + 1,
            humantime::format_duration(Duration::from_millis(backoff.as_millis() as u64))
        ));
    }
    s
}

fn short_failure(f: &RunFailure) -> String {
    let text = f.to_string();
    // The first line only: traps carry a backtrace.
    let first = text.lines().next().unwrap_or_default();
    if first.chars().count() > 60 {
        format!("{}…", first.chars().take(59).collect::<String>())
    } else {
        first.to_string()
    }
}

fn fuel(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.1}K", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1}M", n as f64 / 1e6),
        _ => format!("{:.2}G", n as f64 / 1e9),
    }
}

fn table(views: &[WorkloadView]) -> Vec<String> {
    let header = [
        "WORKLOAD", "NODE", "PRIORITY", "STATUS", "FUEL", "MEMORY", "RESTARTS",
    ]
    .map(String::from);
    let rows: Vec<[String; 7]> = views
        .iter()
        .map(|v| {
            let c = v.container.as_ref();
            [
                v.name.clone(),
                v.node.clone(),
                v.priority.to_string(),
                status(v, true),
                c.map(|c| fuel(fuel_used(c))).unwrap_or_default(),
                c.map(|c| bytesize::ByteSize::b(c.resources.peak_memory).to_string())
                    .unwrap_or_default(),
                c.map(|c| restarts(c).to_string()).unwrap_or_default(),
            ]
        })
        .collect();
    let mut width = header.clone().map(|h| h.chars().count());
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    std::iter::once(&header)
        .chain(rows.iter())
        .map(|r| {
            let mut s = String::new();
            for (i, c) in r.iter().enumerate() {
                if i >= 4 {
                    s.push_str(&format!("{c:>w$}  ", w = width[i]));
                } else {
                    s.push_str(&format!("{c:<w$}  ", w = width[i]));
                }
            }
            s.trim_end().to_string()
        })
        .collect()
}

/// Systemd-style boot assessment: a component whose container crash-looped
/// into quarantine or could not be instantiated failed to start.
fn record_starts(ctx: &BootContext, views: &[WorkloadView], verified: &Verified) {
    let Some(state) = ctx.state() else { return };
    for v in views {
        let (Some(c), Some(Ok(component))) = (&v.container, verified.get(&v.name)) else {
            continue;
        };
        let failed = matches!(
            &c.status,
            ContainerStatus::Quarantined(_)
                | ContainerStatus::Failed(
                    RunFailure::Instantiate { .. } | RunFailure::HostCallDenied { .. }
                )
        );
        if let Err(e) = state.record_start(component.name(), component.digest(), !failed) {
            eprintln!("warning: recording the start of {}: {e}", v.name);
        }
    }
}

/// Prints the final table and what happened to every workload; true when
/// every workload ran and ended well.
fn summary(
    deployment: &Deployment,
    views: &[WorkloadView],
    not_run: &BTreeMap<String, NotRun>,
    priority_of: &HashMap<String, String>,
    out: Out,
) -> bool {
    if !out.tty {
        out.line("");
        for line in table(views) {
            out.line(line);
        }
    }
    let mut ok = not_run.is_empty();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    out.line("\nsummary");
    for spec in &deployment.workloads {
        let name = &spec.name;
        let priority = priority_of.get(name).map(String::as_str).unwrap_or("");
        let what = if let Some(v) = views.iter().find(|v| &v.name == name) {
            let c = v.container.as_ref();
            let good = c.is_some_and(|c| matches!(c.status, ContainerStatus::Stopped));
            ok &= good;
            let key = match c.map(|c| (&c.status, c.last_outcome.as_ref().map(|o| &o.end))) {
                Some((ContainerStatus::Stopped, Some(forgeone::runtime::RunEnd::Success))) => {
                    "completed"
                }
                Some((status, _)) => status.name(),
                None => "gone",
            };
            *counts.entry(key.to_string()).or_default() += 1;
            let mut text = status_text(v);
            if let Some(c) = c {
                text.push_str(&format!(
                    " · fuel {} · peak memory {} · {} restart{}",
                    fuel(c.resources.fuel_consumed_total),
                    bytesize::ByteSize::b(c.resources.peak_memory),
                    restarts(c),
                    plural(restarts(c) as usize)
                ));
                if let ContainerStatus::Quarantined(q) = &c.status {
                    let evidence: Vec<&String> = q
                        .last_output
                        .iter()
                        .filter(|l| !l.trim().is_empty() && !l.contains("RUST_BACKTRACE"))
                        .collect();
                    text.push_str(&format!(
                        "\n  {:<25} evidence kept for the operator; last output:",
                        ""
                    ));
                    for line in &evidence[evidence.len().saturating_sub(3)..] {
                        text.push_str(&format!("\n  {:<25}   {line}", ""));
                    }
                }
            }
            text
        } else {
            match not_run.get(name) {
                Some(NotRun::Boot(reason)) => {
                    *counts.entry("refused at boot".into()).or_default() += 1;
                    format!("not run: {reason}")
                }
                Some(NotRun::Schedule {
                    unschedulable: true,
                    reason,
                }) => {
                    *counts.entry("unschedulable".into()).or_default() += 1;
                    format!("not placed: {reason}")
                }
                Some(NotRun::Schedule { reason, .. }) => {
                    *counts.entry("refused by policy".into()).or_default() += 1;
                    format!("refused: {reason}")
                }
                None => "not run".into(),
            }
        };
        out.line(format!("  {name:<14} {priority:<10} {what}"));
    }
    let counted: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
    out.line(format!(
        "{} workload{}: {}",
        deployment.workloads.len(),
        plural(deployment.workloads.len()),
        counted.join(", ")
    ));
    out.event(json!({
        "event": "summary",
        "workloads": deployment.workloads.len(),
        "counts": counts,
        "ok": ok,
    }));
    ok
}
