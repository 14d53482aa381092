//! What a boot may do when a component fails ([`BootPolicy`]) and how it
//! ended ([`BootOutcome`], [`IntegrityStatus`]).

use serde::{Deserialize, Serialize};

/// What a boot does with a component that fails verification. One policy
/// for the library, `forgeone boot --policy` and `boot_policy` in
/// `forgeone.toml`.
///
/// | policy | a refused component | with no usable copy |
/// |---|---|---|
/// | [`FailClosed`](BootPolicy::FailClosed) | never replaced | the boot is compromised: nothing runs |
/// | [`Recover`](BootPolicy::Recover) | replaced by a last-known-good copy that still verifies | the boot is compromised: nothing runs |
/// | [`Degraded`](BootPolicy::Degraded) | replaced by a last-known-good copy that still verifies | left out; the rest runs |
///
/// Recovery needs a state directory (it keeps the copies), and a copy
/// older than the highest accepted version of its component is used only
/// when recovery downgrades are allowed
/// ([`BootBuilder::allow_recovery_downgrade`](super::BootBuilder::allow_recovery_downgrade)).
///
/// Parsed from `fail-closed` (or its alias `strict`), `recover` and
/// `degraded`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum BootPolicy {
    /// Any component that fails verification makes the boot
    /// [`IntegrityStatus::Compromised`] and nothing runs; no last-known-good
    /// copy is ever used. The default.
    #[default]
    #[serde(alias = "strict")]
    FailClosed,
    /// Fall back to a last-known-good copy that still verifies; without
    /// one, the boot is compromised and nothing runs.
    Recover,
    /// Fall back to a last-known-good copy that still verifies; without
    /// one, boot without that component and run the rest.
    Degraded,
}

impl BootPolicy {
    /// `fail-closed`, `recover` or `degraded`.
    pub fn as_str(&self) -> &'static str {
        match self {
            BootPolicy::FailClosed => "fail-closed",
            BootPolicy::Recover => "recover",
            BootPolicy::Degraded => "degraded",
        }
    }

    /// True when a refused component may be replaced by a last-known-good
    /// copy.
    pub(crate) fn recovers(&self) -> bool {
        !matches!(self, BootPolicy::FailClosed)
    }
}

impl std::fmt::Display for BootPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for BootPolicy {
    type Err = ParseBootPolicyError;

    /// `fail-closed` (or `strict`), `recover` or `degraded`.
    fn from_str(text: &str) -> Result<BootPolicy, ParseBootPolicyError> {
        match text {
            "fail-closed" | "strict" => Ok(BootPolicy::FailClosed),
            "recover" => Ok(BootPolicy::Recover),
            "degraded" => Ok(BootPolicy::Degraded),
            other => Err(ParseBootPolicyError {
                found: crate::boot::shown(other),
            }),
        }
    }
}

/// A boot policy name that is none of the choices.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown boot policy `{found}`: expected fail-closed (alias strict), recover or degraded")]
pub struct ParseBootPolicyError {
    found: String,
}

/// The integrity of a boot, as in the core spec.
///
/// `Verified`: every component of the manifest runs from bytes that
/// verified (some possibly recovered from a last-known-good copy of the
/// same or a newer version; see
/// [`BootContext::outcome`](super::BootContext::outcome)).
/// `Compromised(reason)`: the manifest was refused, or a component was
/// refused without a good copy to fall back on (with
/// [`BootPolicy::Degraded`] the verified rest runs, otherwise nothing), or
/// a component runs from a copy older than its highest accepted version (an
/// explicitly allowed downgrade: [`BootOutcome::Downgraded`]).
/// `Unknown`: not measured.
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
    /// Everything runs from bytes that verified, but at least one component
    /// fell back to a copy older than its highest accepted version (allowed
    /// explicitly). The integrity is not `Verified`.
    Downgraded,
    /// At least one component is left out (degraded policy).
    Degraded,
    /// Nothing runs.
    Compromised,
}

impl BootOutcome {
    /// `verified`, `recovered`, `downgraded`, `degraded` or `compromised`.
    pub fn as_str(&self) -> &'static str {
        match self {
            BootOutcome::Verified => "verified",
            BootOutcome::Recovered => "recovered",
            BootOutcome::Downgraded => "downgraded",
            BootOutcome::Degraded => "degraded",
            BootOutcome::Compromised => "compromised",
        }
    }
}
