//! The cluster's audit events (`cluster.*`).

use serde::Serialize;

use crate::audit::{AuditEvent, Severity};

/// What a host of the cluster audits.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ClusterEvent {
    /// This host took the scheduler lease.
    LeaseTaken {
        /// The lease's term.
        term: u64,
    },
    /// The lease holder placed a replica (or moved it).
    Assigned {
        /// The assignment key.
        key: String,
        /// The node.
        node: String,
        /// The new epoch.
        epoch: u64,
        /// The scheduler's explanation.
        explanation: String,
    },
    /// The lease holder found no node for a replica.
    Unplaced {
        /// The assignment key.
        key: String,
        /// Why.
        reason: String,
        /// The new epoch.
        epoch: u64,
    },
    /// A node record was left out of placement.
    NodeIgnored {
        /// The node (as its key).
        node: String,
        /// Why.
        reason: String,
    },
    /// A node missed three heartbeats or announced it is leaving.
    NodeGone {
        /// The node.
        node: String,
        /// `lost` or `leaving`.
        why: String,
    },
    /// This host refused to run what it was assigned.
    Refused {
        /// The assignment key.
        key: String,
        /// Why.
        reason: String,
    },
}

impl AuditEvent for ClusterEvent {
    fn kind(&self) -> &'static str {
        match self {
            ClusterEvent::LeaseTaken { .. } => "cluster.lease.taken",
            ClusterEvent::Assigned { .. } => "cluster.assigned",
            ClusterEvent::Unplaced { .. } => "cluster.unplaced",
            ClusterEvent::NodeIgnored { .. } => "cluster.node.ignored",
            ClusterEvent::NodeGone { .. } => "cluster.node.gone",
            ClusterEvent::Refused { .. } => "cluster.refused",
        }
    }

    fn details(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }))
    }

    fn severity(&self) -> Severity {
        match self {
            ClusterEvent::LeaseTaken { .. } | ClusterEvent::Assigned { .. } => Severity::Info,
            _ => Severity::Warn,
        }
    }
}
