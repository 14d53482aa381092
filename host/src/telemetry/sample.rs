//! Gauges read from a kernel: what is a state, not an event.

use std::sync::Arc;
use std::time::Duration;

use metrics::{describe_gauge, gauge};

use crate::Kernel;
use crate::audit::AuditHealth;

/// Every status a container can be in, so a status that no container holds
/// any more reads 0 rather than its last value.
const STATUSES: [&str; 7] = [
    "creating",
    "running",
    "paused",
    "quarantined",
    "stopping",
    "stopped",
    "failed",
];

/// Priority classes, Critical first (the executor's order).
const CLASSES: [&str; 5] = ["critical", "high", "normal", "low", "background"];

/// Sets the gauges that describe `kernel` now: containers by status (and
/// workloads that do not run, by why), the executor's busy time per
/// priority class and its container tasks, workloads waiting for a node,
/// memory committed, and whether the audit log is writable.
pub fn sample(kernel: &Kernel) {
    let mut by_status = [0u64; STATUSES.len()];
    let mut not_run = [0u64; 3];
    for view in kernel.workloads() {
        if let Some(container) = &view.container {
            let name = container.status.name();
            if let Some(i) = STATUSES.iter().position(|s| *s == name) {
                by_status[i] += 1;
            }
        } else if let Some(why) = &view.not_run {
            let i = match why.label() {
                "refused at boot" => 0,
                "unschedulable" => 1,
                _ => 2,
            };
            not_run[i] += 1;
        }
    }
    for (status, n) in STATUSES.iter().zip(by_status) {
        gauge!("forgeone_containers", "status" => *status).set(n as f64);
    }
    for (why, n) in ["refused-at-boot", "unschedulable", "refused"]
        .iter()
        .zip(not_run)
    {
        gauge!("forgeone_workloads_not_run", "why" => *why).set(n as f64);
    }
    let resources = kernel.peek_resources();
    for (class, busy) in CLASSES.iter().zip(resources.cpu.busy) {
        gauge!("forgeone_executor_busy_seconds", "class" => *class).set(busy.as_secs_f64());
    }
    gauge!("forgeone_executor_workers").set(kernel.workers() as f64);
    gauge!("forgeone_executor_tasks").set(kernel.live_tasks() as f64);
    gauge!("forgeone_scheduler_pending").set(kernel.pending() as f64);
    gauge!("forgeone_memory_committed_bytes").set(resources.memory.committed as f64);
    let (records, bytes) = kernel.audit().backlog();
    gauge!("forgeone_audit_backlog_records").set(records as f64);
    gauge!("forgeone_audit_backlog_bytes").set(bytes as f64);
    let writable = matches!(*kernel.audit().health().borrow(), AuditHealth::Writable);
    gauge!("forgeone_audit_writable").set(if writable { 1.0 } else { 0.0 });
}

/// Calls [`sample`] every `every` on the current tokio runtime, until the
/// returned task is aborted or the kernel is dropped by everyone else.
///
/// # Panics
///
/// Outside a tokio runtime.
pub fn spawn_sampler(kernel: &Arc<Kernel>, every: Duration) -> tokio::task::JoinHandle<()> {
    describe();
    let kernel = Arc::downgrade(kernel);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(kernel) = kernel.upgrade() else {
                return;
            };
            sample(&kernel);
        }
    })
}

fn describe() {
    describe_gauge!("forgeone_containers", "Containers by status.");
    describe_gauge!(
        "forgeone_workloads_not_run",
        "Workloads that do not run: refused at boot, unschedulable, refused."
    );
    describe_gauge!(
        "forgeone_executor_busy_seconds",
        "Executor time spent running tasks since it started, by priority class (deriv() gives each class's CPU share)."
    );
    describe_gauge!("forgeone_executor_workers", "Executor worker threads.");
    describe_gauge!(
        "forgeone_executor_tasks",
        "Container tasks alive (running, restarting, or quarantined)."
    );
    describe_gauge!(
        "forgeone_scheduler_pending",
        "Workloads waiting for a node."
    );
    describe_gauge!(
        "forgeone_memory_committed_bytes",
        "Memory committed to containers."
    );
    describe_gauge!(
        "forgeone_audit_backlog_records",
        "Audit records appended and not yet durable."
    );
    describe_gauge!(
        "forgeone_audit_backlog_bytes",
        "Estimated bytes of audit records waiting to be written."
    );
    describe_gauge!(
        "forgeone_audit_writable",
        "1 while the audit log can be written, 0 while it fails."
    );
}
