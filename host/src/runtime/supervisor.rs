//! Supervision: restart policies, exponential backoff, crash-loop
//! quarantine.
//!
//! The defaults follow Kubernetes: a failed container restarts after 10 s,
//! doubling up to 5 min, and the backoff resets once a run stays up for
//! 10 min. ForgeOne adds quarantine: after `crash_loop_threshold`
//! consecutive failed runs (none healthy in between) the container is held
//! in `Quarantined` with its evidence until an operator releases it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::outcome::Failure;

/// When a container is restarted after a run ends: the one restart policy
/// of ForgeOne, for the runtime, the deployment file and the CLI. Its text
/// form (parsed by `str::parse`, shown by `Display`, and used by serde) is
/// `never`, `on-failure` or `always`; the default is `never`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum RestartPolicy {
    /// Never restart.
    #[default]
    Never,
    /// Restart when the run failed (not when it exited 0 or was stopped).
    OnFailure,
    /// Restart whenever the run ended, unless an operator stopped it.
    Always,
}

impl RestartPolicy {
    /// `never`, `on-failure` or `always`.
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::Never => "never",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Always => "always",
        }
    }
}

impl std::fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RestartPolicy {
    type Err = RestartPolicyError;

    /// `never`, `on-failure` or `always` (exactly; as [`Display`](std::fmt::Display) writes them).
    fn from_str(text: &str) -> Result<Self, RestartPolicyError> {
        match text {
            "never" => Ok(RestartPolicy::Never),
            "on-failure" => Ok(RestartPolicy::OnFailure),
            "always" => Ok(RestartPolicy::Always),
            other => Err(RestartPolicyError {
                text: other.to_string(),
            }),
        }
    }
}

/// A restart policy that is not `never`, `on-failure` or `always`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown restart policy `{text}`: expected never | on-failure | always")]
pub struct RestartPolicyError {
    text: String,
}

impl RestartPolicyError {
    /// The refused text.
    pub fn text(&self) -> &str {
        &self.text
    }
}

/// Restart backoff and crash-loop detection, for all containers of a runtime.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BackoffConfig {
    pub(crate) initial: Duration,
    pub(crate) max: Duration,
    pub(crate) reset_after: Duration,
    pub(crate) crash_loop_threshold: u32,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig::new()
    }
}

impl BackoffConfig {
    /// 10 s doubling to 5 min, reset after 10 min healthy, quarantine after
    /// 5 consecutive failed runs.
    pub fn new() -> Self {
        BackoffConfig {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(300),
            reset_after: Duration::from_secs(600),
            crash_loop_threshold: 5,
        }
    }

    /// The first backoff. By default, 10 s.
    pub fn initial(&mut self, delay: Duration) -> &mut Self {
        self.initial = delay;
        self
    }

    /// The largest backoff. By default, 5 min.
    pub fn max(&mut self, delay: Duration) -> &mut Self {
        self.max = delay;
        self
    }

    /// A run lasting this long counts as healthy and resets the backoff and
    /// the crash-loop count. By default, 10 min.
    pub fn reset_after(&mut self, healthy: Duration) -> &mut Self {
        self.reset_after = healthy;
        self
    }

    /// Consecutive failed runs that make a crash loop (then quarantine); 0
    /// disables quarantine. By default, 5.
    pub fn crash_loop_threshold(&mut self, failures: u32) -> &mut Self {
        self.crash_loop_threshold = failures;
        self
    }

    /// The backoff before restart number `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// One entry of a container's restart history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestartRecord {
    /// The run that ended.
    pub run: u32,
    /// When it ended.
    pub ended_at: chrono::DateTime<chrono::Utc>,
    /// How it ended (`exit 0`, a failure kind, `stopped`).
    pub ended: String,
    /// Its failure, if it failed.
    pub failure: Option<Failure>,
    /// Fuel it used.
    pub fuel_consumed: u64,
    /// How long it waited before the next run, if one was scheduled.
    #[serde(with = "super::outcome::duration_ms")]
    pub backoff: Duration,
}

/// Why a container is quarantined, with the evidence kept for the operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Quarantine {
    /// Consecutive failed runs.
    pub failures: u32,
    /// The last run's failure (the trap, with its backtrace).
    pub last_failure: Failure,
    /// Fuel used by the last run.
    pub fuel_consumed: u64,
    /// The last output lines (escaped).
    pub last_output: Vec<String>,
    /// The container's run history at the time: its last
    /// [`ContainerContext::HISTORY_LIMIT`](super::ContainerContext::HISTORY_LIMIT)
    /// runs, oldest first.
    pub restart_history: Vec<RestartRecord>,
}

impl std::fmt::Display for Quarantine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "crash loop: {} consecutive failures, last: {}",
            self.failures, self.last_failure
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policy_text_display_and_serde_agree() {
        assert_eq!(RestartPolicy::default(), RestartPolicy::Never);
        for (policy, text) in [
            (RestartPolicy::Never, "never"),
            (RestartPolicy::OnFailure, "on-failure"),
            (RestartPolicy::Always, "always"),
        ] {
            assert_eq!(text.parse::<RestartPolicy>(), Ok(policy));
            assert_eq!(policy.to_string(), text);
            assert_eq!(policy.as_str(), text);
            let json = serde_json::to_string(&policy).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(
                serde_json::from_str::<RestartPolicy>(&json).unwrap(),
                policy
            );
        }
        for bad in ["OnFailure", "on_failure", "Always", "", "restart"] {
            let error = bad.parse::<RestartPolicy>().unwrap_err();
            assert_eq!(error.text(), bad);
            assert_eq!(
                error.to_string(),
                format!("unknown restart policy `{bad}`: expected never | on-failure | always")
            );
            assert!(serde_json::from_str::<RestartPolicy>(&format!("\"{bad}\"")).is_err());
        }
    }

    #[test]
    fn backoff_doubles_to_the_cap() {
        let config = BackoffConfig::new();
        assert_eq!(config.delay(1), Duration::from_secs(10));
        assert_eq!(config.delay(2), Duration::from_secs(20));
        assert_eq!(config.delay(5), Duration::from_secs(160));
        assert_eq!(config.delay(6), Duration::from_secs(300));
        assert_eq!(config.delay(60), Duration::from_secs(300));
    }
}
