//! What the kernel reports: the result of a scheduling round, one view per
//! workload, and the kernel's own audit events.

use serde::Serialize;
use uuid::Uuid;

use crate::audit::{AuditEvent, Severity};
use crate::identity::{Priority, TrustLevel};
use crate::runtime::{ContainerContext, ContainerStatus};
use crate::scheduler::{Allocation, Explanation};

use super::KernelError;

/// A workload whose container was started.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Launched {
    /// The workload's id.
    pub workload: Uuid,
    /// The workload's name.
    pub name: String,
    /// The container running it.
    pub container: Uuid,
    /// Where it was placed, and why.
    pub allocation: Allocation,
}

/// A workload that did not start.
#[derive(Debug)]
#[non_exhaustive]
pub struct Refused {
    /// The workload's id.
    pub workload: Uuid,
    /// The workload's name.
    pub name: String,
    /// Why (for an unschedulable workload, the placement explanation).
    pub error: KernelError,
}

/// A workload stopped to make room for another.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Preempted {
    /// The evicted workload's name.
    pub name: String,
    /// Its container, if it had one running.
    pub container: Option<Uuid>,
    /// The workload that took its place.
    pub by: String,
}

/// What one [`Kernel::schedule`](super::Kernel::schedule) did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct ScheduleReport {
    /// Started, in placement order (priority, trust, age).
    pub launched: Vec<Launched>,
    /// Not started, with the reason.
    pub refused: Vec<Refused>,
    /// Evicted by preemption (their containers are being stopped).
    pub preempted: Vec<Preempted>,
}

/// Why a workload does not run.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "stage", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum NotRun {
    /// Its component did not verify at boot (or is not part of the boot).
    Boot {
        /// Why, as boot reported it.
        reason: String,
    },
    /// No node fits it.
    Unschedulable {
        /// How many nodes each filter removed, and why preemption did not
        /// help.
        explanation: Box<Explanation>,
    },
    /// Policy, the runtime or the executor refused it.
    Refused {
        /// Why.
        reason: String,
    },
}

impl NotRun {
    /// A short label: `refused at boot`, `unschedulable` or `refused`.
    pub fn label(&self) -> &'static str {
        match self {
            NotRun::Boot { .. } => "refused at boot",
            NotRun::Unschedulable { .. } => "unschedulable",
            NotRun::Refused { .. } => "refused",
        }
    }
}

impl std::fmt::Display for NotRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotRun::Boot { reason } => write!(f, "refused at boot: {reason}"),
            NotRun::Unschedulable { explanation } => {
                let mut parts: Vec<String> = explanation
                    .rejected()
                    .iter()
                    .map(|g| {
                        let s = if g.count == 1 { "" } else { "s" };
                        format!("{} node{s} rejected by {}", g.count, g.reason)
                    })
                    .collect();
                if let Some(note) = explanation.note() {
                    parts.push(note.to_string());
                }
                f.write_str(&parts.join("; "))
            }
            NotRun::Refused { reason } => f.write_str(reason),
        }
    }
}

/// One workload as the kernel sees it: its identity as derived, its
/// placement and its container, or why it does not run.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct WorkloadView {
    /// The workload's id.
    pub workload: Uuid,
    /// Its name.
    pub name: String,
    /// Its priority.
    pub priority: Priority,
    /// Its tenant.
    pub tenant: String,
    /// The trust level the kernel derived for it (tenant policy; always
    /// `untrusted` for unsigned code).
    pub trust: TrustLevel,
    /// The node it was placed on, once it was.
    pub node: Option<String>,
    /// Its container (status, resources, restart history), once it has one.
    pub container: Option<ContainerContext>,
    /// Why it does not run, if it was refused.
    pub not_run: Option<NotRun>,
}

impl WorkloadView {
    /// Whether nothing more runs for it without an operator: refused, or
    /// its container stopped, failed for good, or quarantined. A workload
    /// still queued has not settled.
    pub fn settled(&self) -> bool {
        if self.not_run.is_some() {
            return true;
        }
        self.container.as_ref().is_some_and(|c| {
            matches!(
                c.status,
                ContainerStatus::Stopped
                    | ContainerStatus::Failed(_)
                    | ContainerStatus::Quarantined(_)
            ) && c.next_restart.is_none()
        })
    }
}

/// Kernel events in the audit log.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum KernelEvent {
    /// `schedule.drain`: the kernel stops every container and takes no new
    /// work.
    Drain {
        /// Why (e.g. `interrupted (Ctrl-C)`).
        reason: String,
        /// Containers still running when the drain began.
        running: usize,
        /// How long each gets to stop before it is stopped at its next
        /// yield point.
        grace_ms: u64,
    },
}

impl AuditEvent for KernelEvent {
    fn kind(&self) -> &'static str {
        match self {
            KernelEvent::Drain { .. } => "schedule.drain",
        }
    }

    fn details(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }))
    }

    fn severity(&self) -> Severity {
        Severity::Warn
    }
}
