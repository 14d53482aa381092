//! Shared CLI plumbing: errors with exit codes, tracing, time parsing.

use std::fmt;
use std::process::ExitCode;

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
