//! How a container run ends: typed outcomes and the figures measured on the way.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// Why a container run failed. Each cause is its own variant so callers,
/// the audit log and the CLI can tell them apart without parsing text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Failure {
    /// The guest exited with a non-zero code (`wasi:cli/exit` or an error
    /// result from `run`).
    Exit {
        /// The exit code.
        code: i32,
    },
    /// The guest used its whole fuel budget.
    OutOfFuel {
        /// The budget it was given.
        budget: u64,
    },
    /// The wall-clock deadline passed (time spent paused does not count).
    Deadline {
        /// The deadline it was given, in milliseconds.
        timeout_ms: u64,
    },
    /// The guest failed after the host refused to grow its linear memory
    /// past the limit (`memory.grow` returned -1 inside the guest).
    MemoryLimit {
        /// The limit in bytes (all linear memories of the container).
        limit: u64,
        /// The total the refused growth asked for, in bytes.
        requested: u64,
        /// The trap or exit that followed.
        detail: String,
    },
    /// The guest failed after the host refused to grow a table past the
    /// limit (`table.grow` returned -1 inside the guest).
    TableLimit {
        /// The limit in elements (per table).
        limit: u64,
        /// The size the refused growth asked for.
        requested: u64,
        /// The trap or exit that followed.
        detail: String,
    },
    /// The guest failed after the host refused it a handle past its
    /// open-files limit ([`Limits::max_open_files`](super::Limits::max_open_files):
    /// the call returned `error-code::quota`), or trapped on a full
    /// resource table.
    OpenFilesLimit {
        /// The limit: handles held at once.
        limit: u64,
        /// How many calls were refused a handle.
        refused: u32,
        /// The trap or exit that followed.
        detail: String,
    },
    /// The guest trapped (unreachable, stack overflow, out-of-bounds access,
    /// a panic, a wasm exception no handler caught: `uncaught wasm
    /// exception`, ...).
    Trap {
        /// The trap message, e.g. `wasm trap: call stack exhausted`.
        trap: String,
        /// The wasm backtrace, innermost frame first (`func (module)`).
        backtrace: Vec<String>,
    },
    /// The component asked for a host capability the kernel does not grant:
    /// today, an import of an interface the host does not provide.
    HostCallDenied {
        /// The interface, e.g. `forgeone:kernel/secrets@0.1.0`.
        interface: String,
        /// The linker's explanation.
        detail: String,
    },
    /// Instantiation failed for another reason (for example its initial
    /// memory is already above the limit).
    Instantiate {
        /// What went wrong.
        message: String,
    },
    /// The audit log could not be written, so the run was not started, or
    /// was stopped (see
    /// [`RuntimeConfig::on_audit_failure`](crate::runtime::RuntimeConfig::on_audit_failure)):
    /// nothing runs unaudited. Not the guest's fault, and never restarted
    /// by the restart policy.
    AuditUnavailable {
        /// The audit log.
        log: std::path::PathBuf,
        /// Why it cannot be written.
        cause: String,
    },
}

impl Failure {
    /// A short stable name: `exit`, `out-of-fuel`, `deadline`,
    /// `memory-limit`, `table-limit`, `open-files-limit`, `trap`,
    /// `host-call-denied`, `instantiate`, `audit-unavailable`.
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::Exit { .. } => "exit",
            Failure::OutOfFuel { .. } => "out-of-fuel",
            Failure::Deadline { .. } => "deadline",
            Failure::MemoryLimit { .. } => "memory-limit",
            Failure::TableLimit { .. } => "table-limit",
            Failure::OpenFilesLimit { .. } => "open-files-limit",
            Failure::Trap { .. } => "trap",
            Failure::HostCallDenied { .. } => "host-call-denied",
            Failure::Instantiate { .. } => "instantiate",
            Failure::AuditUnavailable { .. } => "audit-unavailable",
        }
    }

    /// True when restarting cannot help: the component cannot link, or the
    /// audit log cannot be written (nothing may run until it can).
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Failure::HostCallDenied { .. } | Failure::AuditUnavailable { .. }
        )
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Exit { code } => write!(f, "exited with code {code}"),
            Failure::OutOfFuel { budget } => write!(f, "out of fuel (budget {budget})"),
            Failure::Deadline { timeout_ms } => {
                write!(f, "deadline of {timeout_ms} ms passed")
            }
            Failure::MemoryLimit {
                limit,
                requested,
                detail,
            } => write!(
                f,
                "memory limit hit: asked for {requested} bytes, limit {limit} ({detail})"
            ),
            Failure::TableLimit {
                limit,
                requested,
                detail,
            } => write!(
                f,
                "table limit hit: asked for {requested} elements, limit {limit} ({detail})"
            ),
            Failure::OpenFilesLimit {
                limit,
                refused,
                detail,
            } => write!(
                f,
                "open-files limit hit: {refused} handle(s) refused, limit {limit} open at once \
                 ({detail})"
            ),
            Failure::Trap { trap, .. } => write!(f, "trapped: {trap}"),
            Failure::HostCallDenied { interface, .. } => {
                write!(
                    f,
                    "host call denied: the host does not provide `{interface}`"
                )
            }
            Failure::Instantiate { message } => write!(f, "could not instantiate: {message}"),
            Failure::AuditUnavailable { log, cause } => write!(
                f,
                "stopped: the audit log {} cannot be written ({cause}); nothing runs unaudited",
                log.display()
            ),
        }
    }
}

impl std::error::Error for Failure {}

/// How one run of a container ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "end", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum RunEnd {
    /// The guest's `run` returned success (exit code 0).
    Success,
    /// An operator stopped it.
    Stopped {
        /// True when it did not finish within the grace period and was
        /// dropped at its next yield point.
        forced: bool,
    },
    /// It failed.
    Failed(Failure),
}

/// Figures measured during one run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RunStats {
    /// Fuel consumed (roughly one unit per wasm instruction).
    pub fuel_consumed: u64,
    /// Peak linear memory of the container, in bytes.
    pub peak_memory: u64,
    /// Wall time from the start of instantiation to the end, paused time
    /// included. In audit records: `wall_time_us`, in microseconds (a
    /// plugin call often takes less than a millisecond).
    #[serde(rename = "wall_time_us", with = "duration_us")]
    pub wall_time: Duration,
    /// How many `memory.grow` requests the limiter refused. (In audit
    /// records, this and the fields below are left out when zero, false
    /// or none: a record per call stays small.)
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub memory_refusals: u32,
    /// How many `table.grow` requests the limiter refused.
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub table_refusals: u32,
    /// Bytes of stdout and stderr the guest wrote (kept or not).
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub output_bytes: u64,
    /// True when output went past the kept limit
    /// ([`Limits::max_output`](super::Limits::max_output)): the kept copy
    /// (line view, evidence, audit log) stops there; byte sinks got it all.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub output_truncated: bool,
    /// The first byte sink that failed during the run, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sink_failure: Option<SinkFailure>,
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

/// A byte sink ([`ContainerConfig::stdout`](super::ContainerConfig::stdout))
/// that failed during a run. The guest's later writes to that stream
/// failed; what it had written before, and the sink had not yet taken, is
/// lost (the kept copy still has what fits in it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SinkFailure {
    /// `stdout` or `stderr`.
    pub stream: &'static str,
    /// The error.
    pub error: String,
    /// True when the error was a broken pipe: the reader went away.
    pub broken_pipe: bool,
    /// Bytes the guest had written that the sink never took (after
    /// escaping, for a terminal sink).
    pub lost_bytes: u64,
}

/// The outcome of one run of a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// How it ended.
    pub end: RunEnd,
    /// What it used.
    pub stats: RunStats,
    /// Which run this was (1 for the first, +1 per restart).
    pub run: u32,
    /// Its last output lines (escaped), oldest first.
    pub last_output: Vec<String>,
}

impl Outcome {
    /// The guest's exit code, when it exited (0 on success).
    pub fn exit_code(&self) -> Option<i32> {
        match &self.end {
            RunEnd::Success => Some(0),
            RunEnd::Failed(Failure::Exit { code }) => Some(*code),
            _ => None,
        }
    }

    /// The failure, if it failed.
    pub fn failure(&self) -> Option<&Failure> {
        match &self.end {
            RunEnd::Failed(f) => Some(f),
            _ => None,
        }
    }

    /// True when the run succeeded.
    pub fn is_success(&self) -> bool {
        self.end == RunEnd::Success
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.end {
            RunEnd::Success => f.write_str("exited with code 0")?,
            RunEnd::Stopped { forced: false } => f.write_str("stopped")?,
            RunEnd::Stopped { forced: true } => f.write_str("stopped (forced)")?,
            RunEnd::Failed(failure) => write!(f, "{failure}")?,
        }
        write!(
            f,
            "; fuel {}, peak memory {}, wall {:?}",
            self.stats.fuel_consumed,
            bytesize::ByteSize::b(self.stats.peak_memory),
            self.stats.wall_time
        )
    }
}

pub(crate) mod duration_us {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    }
}

pub(crate) mod duration_ms {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}
