//! The scheduler's audit events.

use serde::Serialize;
use uuid::Uuid;

use super::placement::Reason;

use crate::audit::{AuditEvent, Severity};
use crate::identity::{Priority, TrustLevel};

/// One side of a preemption.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Party {
    /// Workload id.
    pub workload: Uuid,
    /// Workload name.
    pub name: String,
    /// Tenant.
    pub tenant: String,
    /// Principal.
    pub principal: String,
    /// Priority.
    pub priority: Priority,
    /// Trust level.
    pub trust: TrustLevel,
}

/// A rejection count in an event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rejection {
    /// Why.
    pub reason: Reason,
    /// How many nodes.
    pub nodes: u32,
}

/// Every event the scheduler writes to the audit log.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum ScheduleEvent {
    /// `schedule.placed`: a workload got a node.
    Placed {
        /// Workload id.
        workload: Uuid,
        /// Workload name.
        name: String,
        /// Tenant.
        tenant: String,
        /// Priority.
        priority: Priority,
        /// Chosen node.
        node: String,
        /// Its zone.
        zone: String,
        /// Its score.
        score: u32,
        /// Nodes that passed every filter.
        feasible: u32,
        /// Nodes considered.
        considered: u32,
        /// Rejections by reason.
        rejected: Vec<Rejection>,
        /// Names of the workloads evicted for it.
        preempted: Vec<String>,
    },
    /// `schedule.unschedulable`: no node fits.
    Unschedulable {
        /// Workload id.
        workload: Uuid,
        /// Workload name.
        name: String,
        /// Tenant.
        tenant: String,
        /// Priority.
        priority: Priority,
        /// Nodes considered.
        considered: u32,
        /// Rejections by reason.
        rejected: Vec<Rejection>,
        /// Why preemption did not help, if it was considered.
        #[serde(skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    /// `schedule.preempted`: `victim` was evicted from `node` for
    /// `preemptor`.
    Preempted {
        /// The node.
        node: String,
        /// Who was evicted.
        victim: Party,
        /// Who took the room.
        preemptor: Party,
    },
    /// `schedule.released`: a placement ended.
    Released {
        /// Workload id.
        workload: Uuid,
        /// Workload name.
        name: String,
        /// The node.
        node: String,
    },
    /// `policy.denied`: a policy refused the workload before placement.
    PolicyDenied {
        /// Workload id.
        workload: Uuid,
        /// Workload name.
        name: String,
        /// Tenant.
        tenant: String,
        /// The rule: `unknown_tenant`, `priority_cap`, `max_containers`,
        /// `cpu_share`.
        rule: &'static str,
        /// What exactly.
        detail: String,
    },
}

impl AuditEvent for ScheduleEvent {
    fn kind(&self) -> &'static str {
        match self {
            ScheduleEvent::Placed { .. } => "schedule.placed",
            ScheduleEvent::Unschedulable { .. } => "schedule.unschedulable",
            ScheduleEvent::Preempted { .. } => "schedule.preempted",
            ScheduleEvent::Released { .. } => "schedule.released",
            ScheduleEvent::PolicyDenied { .. } => "policy.denied",
        }
    }

    fn details(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }))
    }

    fn severity(&self) -> Severity {
        match self {
            ScheduleEvent::Placed { .. } | ScheduleEvent::Released { .. } => Severity::Info,
            _ => Severity::Warn,
        }
    }
}
