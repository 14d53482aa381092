//! The log's own events (`audit.*`): opened, recovered, resumed, pruned.

use serde::Serialize;

use super::config::{FailMode, FsyncPolicy};
use crate::audit::event::{AuditEvent, Severity};

/// The log's own events (`audit.*`).
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub(super) enum LogEvent {
    Opened {
        version: &'static str,
        host_key_id: String,
        host_public_key: String,
        fsync: FsyncPolicy,
        fail_mode: FailMode,
        checkpoint_every: u64,
        existing_records: u64,
    },
    Recovered {
        reason: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        torn_offset: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        torn_bytes: Option<u64>,
        last_seq: u64,
    },
    Resumed {
        error: String,
        outage_ms: u64,
        refused_records: u64,
    },
    Pruned {
        removed: Vec<crate::audit::PrunedSegment>,
        first_seq: u64,
        last_seq: u64,
        head: String,
        moved_to: Option<String>,
    },
}

impl AuditEvent for LogEvent {
    fn kind(&self) -> &'static str {
        match self {
            LogEvent::Opened { .. } => "audit.opened",
            LogEvent::Recovered { .. } => "audit.recovered",
            LogEvent::Resumed { .. } => "audit.resumed",
            LogEvent::Pruned { .. } => "audit.pruned",
        }
    }
    fn details(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("audit events serialise")
    }
    fn severity(&self) -> Severity {
        match self {
            LogEvent::Opened { .. } | LogEvent::Pruned { .. } => Severity::Info,
            LogEvent::Recovered { .. } | LogEvent::Resumed { .. } => Severity::Warn,
        }
    }
}
