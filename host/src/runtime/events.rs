//! The runtime's audit events (`container.*`, and `policy.*` for unsigned code).

use serde::Serialize;

use crate::audit::{AuditEvent, Severity, Untrusted};

use super::file_io::FileIo;
use super::grants::Grants;
use super::limits::Limits;
use super::outcome::{Failure, RunStats};

/// Everything the runtime writes to the audit log. Guest-supplied text is
/// always [`Untrusted`] (escaped).
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub(crate) enum ContainerEvent {
    /// A component was compiled (or loaded from the compiled cache).
    Compiled {
        name: String,
        source: &'static str,
        compile_ms: u64,
    },
    /// A verified component could not be compiled: nothing of it runs.
    CompileFailed {
        name: String,
        digest: String,
        error: String,
    },
    /// A cached compiled artifact failed its integrity check and was rebuilt.
    CacheRejected { path: String, reason: String },
    /// A container was created.
    Created {
        name: String,
        workload: Option<String>,
        signers: Vec<String>,
        capabilities: Grants,
        limits: Limits,
        restart: &'static str,
        /// Where its file calls run (`on-thread` or `pool`).
        file_io: FileIo,
    },
    /// A run started.
    Started { run: u32 },
    /// A run ended successfully.
    Exited {
        run: u32,
        code: i32,
        stats: RunStats,
    },
    /// A run failed.
    Failed {
        run: u32,
        #[serde(flatten)]
        failure: Failure,
        stats: RunStats,
    },
    /// A run was stopped by an operator.
    Stopped {
        run: u32,
        forced: bool,
        stats: RunStats,
    },
    /// A stop was requested.
    StopRequested { grace_ms: u64 },
    /// Paused.
    Paused,
    /// Resumed.
    Resumed { paused_ms: u64 },
    /// Was paused while the audit log could not be written, and resumed
    /// when it could (recorded then).
    AuditPaused { cause: String, paused_ms: u64 },
    /// A restart was scheduled after a backoff.
    RestartScheduled {
        run: u32,
        backoff_ms: u64,
        policy: &'static str,
    },
    /// Crash loop: quarantined until released.
    Quarantined {
        failures: u32,
        last_failure: Failure,
        fuel_consumed: u64,
        last_output: Vec<Untrusted>,
        restart_history: Vec<serde_json::Value>,
    },
    /// An operator released a quarantined container.
    Released,
    /// A lifecycle request was refused.
    TransitionRefused {
        action: &'static str,
        status: String,
    },
    /// A chunk of guest output: at most 16 KiB of one stream, starting at
    /// `offset` in it (see `output::chunks` for the format).
    Output {
        stream: &'static str,
        offset: u64,
        bytes: u64,
        lines: u64,
        text: Untrusted,
    },
    /// Output went past the capture limit.
    OutputTruncated { limit_bytes: u64 },
    /// Output and log lines counted, not written, past the run's audit
    /// budget (one record, at the end of the run).
    OutputDropped {
        budget_bytes: u64,
        stdout_bytes: u64,
        stderr_bytes: u64,
        log_lines: u64,
    },
    /// A structured log line from the guest (`forgeone:kernel/log`).
    Log {
        level: &'static str,
        message: Untrusted,
        fields: Vec<(Untrusted, Untrusted)>,
    },
    /// Log lines were dropped past the per-run limit.
    LogDropped { limit: u32 },
    /// Unsigned code was allowed to run (loud on purpose).
    UnsignedAllowed { name: String, digest: String },
    /// Unsigned code was refused.
    UnsignedRefused { name: String, digest: String },
    /// Network access was requested but the policy does not allow it.
    NetworkRefused { name: String },
    /// A plugin was loaded.
    PluginLoaded {
        plugin: String,
        name: String,
        version: String,
        /// The configuration keys the service passed (not their values,
        /// which may be secrets).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        config_keys: Vec<String>,
    },
    /// A signed plugin said it is another plugin than the one signed: it
    /// was not loaded.
    PluginRefused {
        plugin: String,
        /// The name its signature gives it.
        signed: String,
        /// The name its `describe()` returned (capped).
        described: String,
    },
    /// A plugin call ended. (The plugin is the record's `container`
    /// subject.)
    PluginCall {
        call: String,
        result: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        failure: Option<Failure>,
        stats: RunStats,
    },
}

impl AuditEvent for ContainerEvent {
    fn kind(&self) -> &'static str {
        match self {
            ContainerEvent::Compiled { .. } => "container.compiled",
            ContainerEvent::CompileFailed { .. } => "container.compile_failed",
            ContainerEvent::CacheRejected { .. } => "container.cache_rejected",
            ContainerEvent::Created { .. } => "container.created",
            ContainerEvent::Started { .. } => "container.started",
            ContainerEvent::Exited { .. } => "container.exited",
            ContainerEvent::Failed { .. } => "container.failed",
            ContainerEvent::Stopped { .. } => "container.stopped",
            ContainerEvent::StopRequested { .. } => "container.stop_requested",
            ContainerEvent::Paused => "container.paused",
            ContainerEvent::Resumed { .. } => "container.resumed",
            ContainerEvent::AuditPaused { .. } => "container.audit_paused",
            ContainerEvent::RestartScheduled { .. } => "container.restart_scheduled",
            ContainerEvent::Quarantined { .. } => "container.quarantined",
            ContainerEvent::Released => "container.released",
            ContainerEvent::TransitionRefused { .. } => "container.transition_refused",
            ContainerEvent::Output { .. } => "container.output",
            ContainerEvent::OutputTruncated { .. } => "container.output_truncated",
            ContainerEvent::OutputDropped { .. } => "container.output_dropped",
            ContainerEvent::Log { .. } => "container.log",
            ContainerEvent::LogDropped { .. } => "container.log_dropped",
            ContainerEvent::UnsignedAllowed { .. } => "policy.unsigned_allowed",
            ContainerEvent::UnsignedRefused { .. } => "policy.unsigned_refused",
            ContainerEvent::NetworkRefused { .. } => "policy.network_refused",
            ContainerEvent::PluginLoaded { .. } => "container.plugin.loaded",
            ContainerEvent::PluginRefused { .. } => "container.plugin.refused",
            ContainerEvent::PluginCall { .. } => "container.plugin.call",
        }
    }

    fn details(&self) -> serde_json::Value {
        match self {
            // Unit variants serialise as `null` untagged; details must be an object.
            ContainerEvent::Paused | ContainerEvent::Released => serde_json::json!({}),
            other => serde_json::to_value(other)
                .unwrap_or_else(|e| serde_json::json!({ "serialization_error": e.to_string() })),
        }
    }

    fn write_details(&self, out: &mut Vec<u8>) {
        match self {
            ContainerEvent::Paused | ContainerEvent::Released => out.extend_from_slice(b"{}"),
            other => {
                let start = out.len();
                if let Err(e) = serde_json::to_writer(&mut *out, other) {
                    out.truncate(start);
                    let _ = serde_json::to_writer(
                        out,
                        &serde_json::json!({ "serialization_error": e.to_string() }),
                    );
                }
            }
        }
    }

    fn size_hint(&self) -> usize {
        let untrusted = |items: &[Untrusted]| items.iter().map(|u| u.as_str().len()).sum::<usize>();
        let failure = |f: &Failure| match f {
            Failure::Trap { trap, backtrace } => {
                trap.len() + backtrace.iter().map(String::len).sum::<usize>()
            }
            Failure::MemoryLimit { detail, .. }
            | Failure::TableLimit { detail, .. }
            | Failure::HostCallDenied { detail, .. } => detail.len(),
            _ => 0,
        };
        match self {
            ContainerEvent::Output { text, .. } => text.as_str().len(),
            ContainerEvent::Log {
                message, fields, ..
            } => {
                message.as_str().len()
                    + fields
                        .iter()
                        .map(|(k, v)| k.as_str().len() + v.as_str().len())
                        .sum::<usize>()
            }
            ContainerEvent::CompileFailed { error, .. } => error.len(),
            ContainerEvent::Failed { failure: f, .. } => failure(f),
            ContainerEvent::Quarantined {
                last_failure,
                last_output,
                restart_history,
                ..
            } => failure(last_failure) + untrusted(last_output) + 128 * restart_history.len(),
            _ => 0,
        }
    }

    fn severity(&self) -> Severity {
        match self {
            ContainerEvent::Failed { .. }
            | ContainerEvent::CompileFailed { .. }
            | ContainerEvent::CacheRejected { .. }
            | ContainerEvent::Quarantined { .. }
            | ContainerEvent::TransitionRefused { .. }
            | ContainerEvent::OutputTruncated { .. }
            | ContainerEvent::OutputDropped { .. }
            | ContainerEvent::AuditPaused { .. }
            | ContainerEvent::LogDropped { .. }
            | ContainerEvent::UnsignedAllowed { .. }
            | ContainerEvent::UnsignedRefused { .. }
            | ContainerEvent::NetworkRefused { .. } => Severity::Warn,
            ContainerEvent::PluginCall {
                failure: Some(_), ..
            }
            | ContainerEvent::PluginRefused { .. } => Severity::Warn,
            _ => Severity::Info,
        }
    }
}
