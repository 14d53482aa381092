//! [`PolicySet`]: who may run what, where, how urgently and how much.
//!
//! A policy per tenant ([`TenantPolicy`]) caps the priority its workloads may
//! ask for, bounds how many containers and how much CPU it may hold, names
//! the locations it may run in, and asks for isolation from other tenants or
//! signers. The scheduler consults the set on every decision:
//!
//! - **Priority cap**: a workload asking for more than its tenant's
//!   `max_priority` is *refused* (`policy.denied`, rule `priority_cap`),
//!   never silently lowered: a deployment that says `critical` and runs as
//!   `normal` would hide a misconfiguration exactly when it matters.
//! - **Quotas**: `max_containers` counts the tenant's placed workloads;
//!   `cpu_share` bounds the sum of their CPU reservations as a fraction of
//!   the whole inventory's CPU. Preemption never overrides a quota.
//! - **Locations**: a tenant with `allowed_locations` is filtered off every
//!   node matching none of them (reported as a policy rejection).
//! - **Isolation**: see [`Isolation`].
//! - **Preemption**: only identities at or above
//!   [`PolicySet::preempt_min_trust`] (default [`TrustLevel::Medium`]) may
//!   evict lower-priority work, so a low-trust identity cannot buy its way
//!   in with a priority number.
//!
//! A workload whose tenant has no policy is refused (`unknown tenant`)
//! unless a default policy is set ([`PolicySet::permissive`] sets one).

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::identity::{Priority, TrustLevel};

/// Who a tenant's workloads may share a node with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Isolation {
    /// Any workload may share its nodes. The default.
    #[default]
    Shared,
    /// The tenant's workloads run only on nodes where every other workload
    /// belongs to the same tenant, and nothing of another tenant is placed
    /// next to them afterwards.
    Tenant,
    /// The tenant's workloads share nodes only with workloads whose
    /// component was signed by exactly the same set of keys (unknown or no
    /// signers form one group of their own).
    Signer,
}

impl fmt::Display for Isolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Isolation::Shared => "shared",
            Isolation::Tenant => "tenant",
            Isolation::Signer => "signer",
        })
    }
}

/// One tenant's policy. Build with [`TenantPolicy::new`] and the setters.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct TenantPolicy {
    /// The highest priority the tenant's workloads may ask for.
    pub max_priority: Priority,
    /// At most this many placed workloads at once (`None`: unlimited).
    pub max_containers: Option<u32>,
    /// At most this fraction (0..=1) of the inventory's CPU reserved at
    /// once (`None`: unlimited).
    pub cpu_share: Option<f64>,
    /// Location patterns the tenant may run in (empty: anywhere).
    pub allowed_locations: Vec<String>,
    /// Who the tenant's workloads may share nodes with.
    pub isolation: Isolation,
    /// The trust level policy grants the tenant's workloads.
    pub trust: TrustLevel,
    /// Whether the tenant's workloads may be granted network access.
    pub network: bool,
}

impl Default for TenantPolicy {
    fn default() -> Self {
        TenantPolicy::new()
    }
}

impl TenantPolicy {
    /// A policy with the defaults each setter states.
    pub fn new() -> TenantPolicy {
        TenantPolicy {
            max_priority: Priority::Normal,
            max_containers: None,
            cpu_share: None,
            allowed_locations: Vec::new(),
            isolation: Isolation::Shared,
            trust: TrustLevel::Medium,
            network: false,
        }
    }

    /// Caps the priority the tenant may ask for. Default `Normal`.
    pub fn max_priority(&mut self, cap: Priority) -> &mut Self {
        self.max_priority = cap;
        self
    }

    /// Caps the tenant's concurrent placed workloads. Default unlimited.
    pub fn max_containers(&mut self, max: u32) -> &mut Self {
        self.max_containers = Some(max);
        self
    }

    /// Caps the tenant's CPU reservations at `share` (0..=1) of the
    /// inventory's CPU. Default unlimited.
    pub fn cpu_share(&mut self, share: f64) -> &mut Self {
        self.cpu_share = Some(share.clamp(0.0, 1.0));
        self
    }

    /// Adds a location pattern the tenant may run in. Default: anywhere.
    pub fn allow_location(&mut self, pattern: impl Into<String>) -> &mut Self {
        self.allowed_locations.push(pattern.into());
        self
    }

    /// Sets the isolation. Default [`Isolation::Shared`].
    pub fn isolation(&mut self, isolation: Isolation) -> &mut Self {
        self.isolation = isolation;
        self
    }

    /// Sets the trust level granted to the tenant's workloads. Default
    /// [`TrustLevel::Medium`].
    pub fn trust(&mut self, level: TrustLevel) -> &mut Self {
        self.trust = level;
        self
    }

    /// Lets the tenant's workloads be granted network access (each grant
    /// is still audited with its container). Default false: a workload
    /// asking for the network is refused.
    pub fn network(&mut self, allow: bool) -> &mut Self {
        self.network = allow;
        self
    }

    /// Finishes a `&mut` chain.
    pub fn build(&mut self) -> TenantPolicy {
        self.clone()
    }
}

/// Every tenant's policy, plus the rules that apply to all.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicySet {
    tenants: BTreeMap<String, TenantPolicy>,
    default_policy: Option<TenantPolicy>,
    preempt_min_trust: TrustLevel,
}

impl Default for PolicySet {
    fn default() -> Self {
        PolicySet::new()
    }
}

impl PolicySet {
    /// An empty set: every tenant is unknown (refused) until added;
    /// preemption needs [`TrustLevel::Medium`].
    pub fn new() -> PolicySet {
        PolicySet {
            tenants: BTreeMap::new(),
            default_policy: None,
            preempt_min_trust: TrustLevel::Medium,
        }
    }

    /// A set whose default policy lets any tenant ask for any priority,
    /// without quotas, anywhere, shared. For tests and single-user embedding.
    pub fn permissive() -> PolicySet {
        let mut set = PolicySet::new();
        set.default_policy(TenantPolicy::new().max_priority(Priority::Critical).build());
        set
    }

    /// Sets `tenant`'s policy (replacing any).
    pub fn tenant(&mut self, tenant: impl Into<String>, policy: TenantPolicy) -> &mut Self {
        self.tenants.insert(tenant.into(), policy);
        self
    }

    /// Sets the policy of tenants not listed. Default none (refused).
    pub fn default_policy(&mut self, policy: TenantPolicy) -> &mut Self {
        self.default_policy = Some(policy);
        self
    }

    /// Sets the lowest trust level that may preempt. Default
    /// [`TrustLevel::Medium`].
    pub fn preempt_min_trust(&mut self, level: TrustLevel) -> &mut Self {
        self.preempt_min_trust = level;
        self
    }

    /// The lowest trust level that may preempt.
    pub fn min_trust_to_preempt(&self) -> TrustLevel {
        self.preempt_min_trust
    }

    /// The policy that applies to `tenant`, if any.
    pub fn get(&self, tenant: &str) -> Option<&TenantPolicy> {
        self.tenants.get(tenant).or(self.default_policy.as_ref())
    }

    /// The listed tenants and their policies.
    pub fn tenants(&self) -> impl Iterator<Item = (&str, &TenantPolicy)> {
        self.tenants.iter().map(|(k, v)| (k.as_str(), v))
    }
}
