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
    /// This host stopped its replicas on its own: it could not renew its
    /// node record for the lost-node interval, so the lease holder may
    /// already have placed them elsewhere.
    Fenced {
        /// The replicas it stopped (assignment keys).
        replicas: Vec<String>,
        /// Why.
        reason: String,
    },
    /// This host could not renew its node record (NATS does not answer);
    /// audited once per outage.
    RenewalFailed {
        /// The error.
        error: String,
    },
    /// This host renewed its node record again after failing to.
    RenewalRestored {
        /// How long it could not (milliseconds).
        after_ms: u64,
    },
    /// This host started a replica it was assigned.
    ReplicaStarted {
        /// The assignment key.
        key: String,
        /// The assignment's epoch.
        epoch: u64,
    },
    /// This host stopped a replica on its own (not the operator): moved,
    /// re-decided, undeployed, fenced or drained.
    ReplicaStopped {
        /// The assignment key.
        key: String,
        /// The epoch it ran at.
        epoch: u64,
        /// Why.
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
            ClusterEvent::Fenced { .. } => "cluster.fenced",
            ClusterEvent::RenewalFailed { .. } => "cluster.renewal.failed",
            ClusterEvent::RenewalRestored { .. } => "cluster.renewal.restored",
            ClusterEvent::ReplicaStarted { .. } => "cluster.replica.started",
            ClusterEvent::ReplicaStopped { .. } => "cluster.replica.stopped",
        }
    }

    fn details(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }))
    }

    fn severity(&self) -> Severity {
        match self {
            ClusterEvent::LeaseTaken { .. }
            | ClusterEvent::Assigned { .. }
            | ClusterEvent::ReplicaStarted { .. }
            | ClusterEvent::RenewalRestored { .. }
            | ClusterEvent::ReplicaStopped { .. } => Severity::Info,
            _ => Severity::Warn,
        }
    }
}
