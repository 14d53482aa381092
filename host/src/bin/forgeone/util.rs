//! Shared CLI plumbing: errors with exit codes, tracing, time parsing.

use std::fmt;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use forgeone::audit::{self, AuditConfig, AuditError};

/// A failed command: the message to print and the exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    /// A check failed (exit 1).
    pub fn check(message: impl fmt::Display) -> Failure {
        Failure {
            code: 1,
            message: message.to_string(),
        }
    }

    /// The work could not be done (exit 3).
    pub fn input(message: impl fmt::Display) -> Failure {
        Failure {
            code: 3,
            message: message.to_string(),
        }
    }

    /// The command line is wrong (exit 2, as clap's own errors).
    pub fn usage(message: impl fmt::Display) -> Failure {
        Failure {
            code: 2,
            message: message.to_string(),
        }
    }

    pub fn report(self) -> ExitCode {
        eprintln!("error: {}", self.message);
        ExitCode::from(self.code)
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Failure {
        Failure::input(format!("{e:#}"))
    }
}

pub type CmdResult = Result<ExitCode, Failure>;

pub fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    use std::io::IsTerminal as _;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(true)
        .try_init();
}

/// Parses a point in time: RFC 3339 (`2026-11-28T10:00:00Z`) or a duration
/// ago (`90s`, `15m`, `2h`, `7days`).
pub fn parse_time(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    match humantime::parse_duration(text) {
        Ok(ago) => {
            let ago =
                chrono::Duration::from_std(ago).map_err(|_| format!("`{text}` is too far back"))?;
            Ok(chrono::Utc::now() - ago)
        }
        Err(_) => Err(format!(
            "`{text}` is neither an RFC 3339 time (2026-11-28T10:00:00Z) nor a duration ago (15m, 2h, 7days)"
        )),
    }
}

/// How `run` and `up` keep their audit log: the latest signed head beside
/// it (`audit.head.json`, so a log cut back to an earlier checkpoint is
/// refused on the next start), segments sealed at `segment_size` bytes
/// (`--audit-segment-size`; 0 never rotates), and a lock another process
/// holds waited for up to `lock_timeout`, saying so once on stderr.
pub fn audit_config(log: &Path, lock_timeout: Duration, segment_size: u64) -> AuditConfig {
    let mut config = AuditConfig::new();
    config
        .head_file(audit::head_file_for(log))
        .segment_size(segment_size)
        .lock_timeout(lock_timeout)
        .on_lock_wait(move |path| {
            eprintln!(
                "forgeone: waiting for the audit log {}: another process is using it (up to {}, --lock-timeout)",
                path.display(),
                humantime::format_duration(lock_timeout)
            );
        });
    config
}

/// An audit log that would not open; one still locked after the wait names
/// the flag that sets it.
pub fn lock_failure(e: AuditError) -> String {
    match e {
        AuditError::Locked { .. } => format!("{e}; see --lock-timeout"),
        e => format!("audit log: {e}"),
    }
}
