//! Who a container runs as: [`IdentityContext`] and its [`TrustVector`],
//! and how urgent its work is: [`Priority`]. This is the shared vocabulary
//! below every other module; it imports nothing above the audit log.
//!
//! An identity is fixed when a container is launched. The tenant and
//! principal come from the deployment (or the embedding service); the trust
//! vector combines what boot verification proved about the component (how
//! many distinct anchor keys signed it), what the policy grants
//! ([`TrustLevel`]), and how the workload has behaved (incidents such as
//! crashes and quarantines lower it). The scheduler orders contended work by
//! [`TrustVector::score`], so trust is earned by signatures and policy and
//! lost by misbehaviour, never claimed by a guest.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::audit;

/// How far the kernel trusts a container (mirrors `forgeone:kernel/identity`'s
/// `trust-level`). Ordered: `Untrusted < Low < Medium < High < System`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum TrustLevel {
    /// Not signed by a key of the trust anchor (only with `--allow-unsigned`).
    Untrusted,
    /// Signed, but the policy grants only minimal trust.
    Low,
    /// Signed by a release key; the default for deployed workloads.
    #[default]
    Medium,
    /// Signed and granted elevated trust by policy.
    High,
    /// Part of the kernel's own boot set.
    System,
}

impl fmt::Display for TrustLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TrustLevel::Untrusted => "untrusted",
            TrustLevel::Low => "low",
            TrustLevel::Medium => "medium",
            TrustLevel::High => "high",
            TrustLevel::System => "system",
        })
    }
}

impl std::str::FromStr for TrustLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "untrusted" => TrustLevel::Untrusted,
            "low" => TrustLevel::Low,
            "medium" => TrustLevel::Medium,
            "high" => TrustLevel::High,
            "system" => TrustLevel::System,
            other => {
                return Err(format!(
                    "unknown trust level `{other}` (expected untrusted, low, medium, high or system)"
                ));
            }
        })
    }
}

/// The trust vector of an identity: level granted by policy, distinct
/// anchor keys that signed the component, and recent incidents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct TrustVector {
    /// The level granted by policy.
    pub level: TrustLevel,
    /// Number of distinct trust-anchor keys whose signatures verified the
    /// component (0 for unsigned code). Evidence, not a claim: the runtime
    /// and the kernel set it from the component's verified signatures when
    /// they admit work, replacing whatever the caller put here.
    pub signers: u8,
    /// Recent incidents (crashes, quarantines, denied host calls); each
    /// lowers the score.
    pub incidents: u16,
}

impl TrustVector {
    /// A vector at `level` with no signatures counted and no incidents:
    /// what a caller building an [`IdentityContext`] needs, since the
    /// signature count is filled in from the verified component when the
    /// work is admitted.
    pub fn at(level: TrustLevel) -> TrustVector {
        TrustVector::new(level, 0)
    }

    /// A vector at `level` with `signers` verified signatures and no
    /// incidents. The runtime and the kernel replace `signers` by the
    /// count of the component's verified signatures when they admit work
    /// (so `TrustVector::at(level)` says the same with less to mislead);
    /// `signers` matters only to code that scores vectors itself
    /// ([`TrustVector::score`]).
    pub fn new(level: TrustLevel, signers: u8) -> TrustVector {
        TrustVector {
            level,
            signers,
            incidents: 0,
        }
    }

    /// A single number ordering identities by trust, higher is more trusted.
    ///
    /// The level dominates (1000 per step), then signatures (up to 5 count,
    /// 40 each), minus 25 per incident (up to 20 incidents); unsigned code
    /// never outranks signed code at the same level.
    pub fn score(&self) -> u32 {
        let level = self.level as u32 * 1000;
        let signers = u32::from(self.signers.min(5)) * 40;
        let incidents = u32::from(self.incidents.min(20)) * 25;
        (level + 500 + signers).saturating_sub(incidents)
    }
}

impl PartialOrd for TrustVector {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for TrustVector {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.score()
            .cmp(&other.score())
            .then(self.level.cmp(&other.level))
            .then(self.signers.cmp(&other.signers))
            .then(other.incidents.cmp(&self.incidents))
    }
}

/// How urgent a workload is. Ordered: `Background < Low < Normal < High <
/// Critical` (so `Priority::Critical > Priority::Low`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Must run; may preempt everything below it. CPU weight 16.
    Critical,
    /// Important service work. CPU weight 8.
    High,
    /// The default. CPU weight 4.
    #[default]
    Normal,
    /// Batch work. CPU weight 2.
    Low,
    /// Runs on what is left, but never starves. CPU weight 1.
    Background,
}

impl Priority {
    /// Every priority, most urgent first.
    pub const ALL: [Priority; 5] = [
        Priority::Critical,
        Priority::High,
        Priority::Normal,
        Priority::Low,
        Priority::Background,
    ];

    /// 4 for `Critical` down to 0 for `Background`.
    pub fn rank(self) -> u8 {
        4 - self.lane() as u8
    }

    /// 0 for `Critical` up to 4 for `Background` (the executor's lane).
    pub(crate) fn lane(self) -> usize {
        match self {
            Priority::Critical => 0,
            Priority::High => 1,
            Priority::Normal => 2,
            Priority::Low => 3,
            Priority::Background => 4,
        }
    }

    /// The executor's CPU weight of this class under contention
    /// (16, 8, 4, 2, 1; see the executor docs).
    pub fn cpu_weight(self) -> u32 {
        1 << self.rank()
    }

    /// The lower-case name (`critical`, ..., `background`).
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Critical => "critical",
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
            Priority::Background => "background",
        }
    }
}

impl PartialOrd for Priority {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Priority {
    fn cmp(&self, other: &Self) -> Ordering {
        self.rank().cmp(&other.rank())
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Priority {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "critical" => Priority::Critical,
            "high" => Priority::High,
            "normal" => Priority::Normal,
            "low" => Priority::Low,
            "background" => Priority::Background,
            other => {
                return Err(format!(
                    "unknown priority `{other}` (expected critical, high, normal, low or background)"
                ));
            }
        })
    }
}

/// Who a container or workload runs as.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IdentityContext {
    /// The tenant that owns the work.
    pub tenant: String,
    /// The principal (user or service account) acting for the tenant.
    pub principal: String,
    /// How far the kernel trusts this identity.
    pub trust: TrustVector,
}

impl IdentityContext {
    /// An identity for `principal` of `tenant` with the given trust.
    pub fn new(
        tenant: impl Into<String>,
        principal: impl Into<String>,
        trust: TrustVector,
    ) -> Self {
        IdentityContext {
            tenant: tenant.into(),
            principal: principal.into(),
            trust,
        }
    }

    /// The identity the host itself acts as (boot, supervision, scheduling).
    pub fn host() -> Self {
        IdentityContext::new(
            "system",
            "forgeone-host",
            TrustVector::new(TrustLevel::System, 0),
        )
    }
}

impl fmt::Display for IdentityContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} (trust {})",
            self.tenant, self.principal, self.trust.level
        )
    }
}

impl From<&IdentityContext> for audit::Actor {
    fn from(identity: &IdentityContext) -> audit::Actor {
        audit::Actor {
            tenant: Some(identity.tenant.clone()),
            principal: identity.principal.clone(),
            trust: Some(identity.trust.level.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_orders_by_level_then_signers_then_incidents() {
        let low = TrustVector::new(TrustLevel::Low, 3);
        let medium = TrustVector::new(TrustLevel::Medium, 1);
        let medium2 = TrustVector::new(TrustLevel::Medium, 2);
        let mut troubled = medium2;
        troubled.incidents = 3;
        assert!(low < medium);
        assert!(medium < medium2);
        assert!(troubled < medium2);
        let unsigned = TrustVector::new(TrustLevel::Untrusted, 0);
        assert!(unsigned < TrustVector::new(TrustLevel::Low, 0));
    }
}
