//! What a boot may do when a component fails ([`BootPolicy`]) and how it
//! ended ([`BootOutcome`], [`IntegrityStatus`]).

use serde::{Deserialize, Serialize};

/// What happens when a component fails verification and no last-known-good
/// copy of it verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum BootPolicy {
    /// The whole boot is [`IntegrityStatus::Compromised`] and nothing runs.
    /// The default.
    #[default]
    FailClosed,
    /// Boot without that component; the rest runs.
    Degraded,
}

impl BootPolicy {
    /// `fail-closed` or `degraded`.
    pub fn as_str(&self) -> &'static str {
        match self {
            BootPolicy::FailClosed => "fail-closed",
            BootPolicy::Degraded => "degraded",
        }
    }
}

/// The integrity of a boot, as in the core spec.
///
/// `Verified`: every component of the manifest runs from bytes that
/// verified (some possibly recovered from their last-known-good copy; see
/// [`BootContext::outcome`]). `Compromised(reason)`: the manifest was
/// refused, or a component was refused without a good copy to fall back on;
/// with [`BootPolicy::FailClosed`] nothing runs, with
/// [`BootPolicy::Degraded`] the verified rest runs. `Unknown`: not measured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "status", content = "reason")]
pub enum IntegrityStatus {
    /// Everything that runs verified.
    Verified,
    /// Something failed verification; the reason names it.
    Compromised(String),
    /// Not measured.
    Unknown,
}

impl std::fmt::Display for IntegrityStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IntegrityStatus::Verified => f.write_str("verified"),
            IntegrityStatus::Compromised(reason) => write!(f, "compromised: {reason}"),
            IntegrityStatus::Unknown => f.write_str("unknown"),
        }
    }
}

/// How the boot ended, in one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum BootOutcome {
    /// Everything verified as listed.
    Verified,
    /// Everything runs verified, but at least one component came from its
    /// last-known-good copy.
    Recovered,
    /// At least one component is left out (degraded policy).
    Degraded,
    /// Nothing runs.
    Compromised,
}

impl BootOutcome {
    /// `verified`, `recovered`, `degraded` or `compromised`.
    pub fn as_str(&self) -> &'static str {
        match self {
            BootOutcome::Verified => "verified",
            BootOutcome::Recovered => "recovered",
            BootOutcome::Degraded => "degraded",
            BootOutcome::Compromised => "compromised",
        }
    }
}
