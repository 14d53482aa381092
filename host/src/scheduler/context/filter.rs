//! Filters, in the order the module docs of the scheduler give: the
//! tenant's policy ([`admit`]), then node sets (tenant locations, static
//! constraints, affinity, anti-affinity both ways: [`Filter::by_node_sets`]),
//! then the per-node checks the score loop makes on each survivor
//! (isolation and capacity: [`node_check`]). Every node a filter removes is
//! counted under its reason, for the explanation.

use crate::policy::{Isolation, PolicySet, TenantPolicy};

use super::super::ScheduleError;
use super::super::placement::{Index, NodeSet, Reason, RejectGroup};
use super::super::types::Workload;
use super::compile::{Compiled, StaticC};
use super::state::{Hot, NodeOcc, State, TenantUsage};

/// The reasons the per-node checks reject a node for, in the order they
/// are checked. Indexes into [`Filter::dynamic`].
const DYN_REASONS: [Reason; 6] = [
    Reason::TenantIsolation,
    Reason::SignerIsolation,
    Reason::Cpu,
    Reason::Memory,
    Reason::Storage,
    Reason::Containers,
];

/// The first index of [`DYN_REASONS`] that is about capacity (the only
/// rejections preemption can undo).
pub(super) const FIRST_CAPACITY: usize = 2;

/// A policy refusal: the rule, the detail for the `policy.denied` event,
/// and the error the caller gets.
pub(super) struct Denial {
    pub(super) rule: &'static str,
    pub(super) detail: String,
    pub(super) error: Box<ScheduleError>,
}

/// Step 1, the tenant's policy: known tenant, priority within its cap
/// (refused, never lowered), container and CPU quotas given `usage`.
/// Returns the policy the rest of the decision applies.
pub(super) fn admit<'p>(
    policies: &'p PolicySet,
    usage: TenantUsage,
    total_cpu: u64,
    w: &Workload,
) -> Result<&'p TenantPolicy, Denial> {
    let tenant = w.identity.tenant.as_str();
    let Some(policy) = policies.get(tenant) else {
        return Err(Denial {
            rule: "unknown_tenant",
            detail: format!("no policy for tenant `{tenant}`"),
            error: Box::new(ScheduleError::UnknownTenant {
                workload: w.name.clone(),
                tenant: tenant.to_string(),
            }),
        });
    };
    if w.priority > policy.max_priority {
        return Err(Denial {
            rule: "priority_cap",
            detail: format!(
                "asked for `{}`, tenant `{tenant}` is capped at `{}`",
                w.priority, policy.max_priority
            ),
            error: Box::new(ScheduleError::PriorityAboveCap {
                workload: w.name.clone(),
                tenant: tenant.to_string(),
                requested: w.priority,
                cap: policy.max_priority,
            }),
        });
    }
    if let Some(max) = policy.max_containers
        && usage.containers >= max
    {
        let detail = format!(
            "tenant `{tenant}` already runs {} of at most {max} containers",
            usage.containers
        );
        return Err(quota(w, "max_containers", detail));
    }
    if let Some(share) = policy.cpu_share {
        let limit = (share * total_cpu as f64) as u64;
        let want = usage.cpu_millis + u64::from(w.resource_requirements.cpu_millis);
        if want > limit {
            let detail = format!(
                "tenant `{tenant}` would reserve {want}m CPU, above its share {share} of {total_cpu}m"
            );
            return Err(quota(w, "cpu_share", detail));
        }
    }
    Ok(policy)
}

fn quota(w: &Workload, rule: &'static str, detail: String) -> Denial {
    Denial {
        rule,
        error: Box::new(ScheduleError::QuotaExceeded {
            workload: w.name.clone(),
            tenant: w.identity.tenant.clone(),
            quota: rule,
            detail: detail.clone(),
        }),
        detail,
    }
}

/// The surviving nodes of one decision and what removed the others: the
/// node-set filters as reject groups with their removed bits, the
/// per-node rejections as one set per [`DYN_REASONS`] entry. Reused from
/// one decision to the next, so the hot path does not allocate per node.
#[derive(Debug)]
pub(super) struct Filter {
    pub(super) survivors: NodeSet,
    pub(super) bits: Vec<u64>,
    pub(super) groups: Vec<RejectGroup>,
    pub(super) dynamic: [NodeSet; 6],
    pub(super) dyn_counts: [u32; 6],
}

impl Filter {
    pub(super) fn new(n: usize) -> Filter {
        Filter {
            survivors: NodeSet::empty(n),
            bits: Vec::new(),
            groups: Vec::new(),
            dynamic: std::array::from_fn(|_| NodeSet::empty(n)),
            dyn_counts: [0; 6],
        }
    }

    fn restrict(&mut self, reason: &Reason, keep: &NodeSet, negate: bool) {
        let count = self.survivors.restrict(keep, negate, &mut self.bits);
        if count > 0 {
            self.groups.push(RejectGroup {
                reason: reason.clone(),
                count,
            });
        }
    }

    /// Step 2: starts from every node and removes those outside the
    /// tenant's locations, the hard static constraints and the hard
    /// affinity terms, and those where placed work repels `w`. Clears the
    /// per-node rejections of the previous decision.
    pub(super) fn by_node_sets(
        &mut self,
        index: &Index,
        st: &State,
        tenant_location: Option<&StaticC>,
        compiled: &Compiled,
        w: &Workload,
    ) {
        self.survivors.copy_from(&index.all);
        self.bits.clear();
        self.groups.clear();
        for k in 0..DYN_REASONS.len() {
            if self.dyn_counts[k] > 0 {
                self.dynamic[k].clear_all();
                self.dyn_counts[k] = 0;
            }
        }
        if let Some(tl) = tenant_location {
            self.restrict(&tl.reason, &tl.set, false);
        }
        for h in &compiled.hard {
            self.restrict(&h.reason, &h.set, false);
        }
        for &(t, anti) in &compiled.aff {
            let ts = &st.terms[t];
            if anti {
                self.restrict(&Reason::AntiAffinity(ts.text.clone()), &ts.occ, true);
            } else if ts.occ.is_empty() && ts.term.matches(&w.name, &w.labels) {
                // The first of a group that wants to be together goes
                // anywhere (as Kubernetes does for self-matching terms).
            } else {
                self.restrict(&Reason::Affinity(ts.text.clone()), &ts.occ, false);
            }
        }
        st.matching_terms(&w.name, &w.labels, |t| {
            let ts = &st.terms[t];
            if !ts.repel.is_empty() {
                self.restrict(&Reason::Repelled(ts.text.clone()), &ts.repel, true);
            }
        });
    }

    /// Records that node `i` failed per-node check `k` (from [`node_check`]).
    #[inline]
    pub(super) fn reject(&mut self, k: usize, i: usize) {
        self.dynamic[k].set(i);
        self.dyn_counts[k] += 1;
    }

    /// Appends the per-node rejections to the reject groups (after the
    /// node-set ones, in [`DYN_REASONS`] order).
    pub(super) fn finish(&mut self) {
        for (k, reason) in DYN_REASONS.iter().enumerate() {
            if self.dyn_counts[k] > 0 {
                self.bits.extend_from_slice(self.dynamic[k].words());
                self.groups.push(RejectGroup {
                    reason: reason.clone(),
                    count: self.dyn_counts[k],
                });
            }
        }
    }

    /// How many nodes were rejected for lack of capacity only.
    pub(super) fn capacity_blocked(&self) -> u32 {
        self.dyn_counts[FIRST_CAPACITY..].iter().sum()
    }

    /// The nodes rejected for lack of capacity only.
    pub(super) fn capacity_blocked_nodes(&self, n: usize) -> NodeSet {
        let mut nodes = NodeSet::empty(n);
        for set in &self.dynamic[FIRST_CAPACITY..] {
            nodes.or(set);
        }
        nodes
    }
}

/// What a workload needs on a node, as the hot entries count it: CPU
/// millis, memory and storage bytes.
#[derive(Debug, Clone, Copy)]
pub(super) struct Need {
    pub(super) cpu: i64,
    pub(super) mem: i64,
    pub(super) storage: i64,
}

impl Need {
    pub(super) fn of(w: &Workload) -> Need {
        let req = &w.resource_requirements;
        Need {
            cpu: i64::from(req.cpu_millis),
            mem: i64::try_from(req.memory).unwrap_or(i64::MAX),
            storage: i64::try_from(req.storage).unwrap_or(i64::MAX),
        }
    }
}

/// Who asks, for the isolation checks: the tenant's isolation, the
/// tenant, and the workload's signer group.
#[derive(Debug)]
pub(super) struct Asker<'a> {
    pub(super) iso: Isolation,
    pub(super) tenant: &'a str,
    pub(super) signer_key: &'a str,
}

/// Step 3, on one surviving node: the index into [`DYN_REASONS`] of the
/// first check node `i` fails (isolation, then CPU, memory, storage,
/// container count), if any.
#[inline]
pub(super) fn node_check(h: &Hot, occ: &NodeOcc, need: Need, asker: &Asker<'_>) -> Option<usize> {
    let isolated = asker.iso != Isolation::Shared;
    if (h.iso_guard || (isolated && h.occupied))
        && let Some(k) = isolation_conflict(occ, asker)
    {
        return Some(k);
    }
    if need.cpu > h.free_cpu {
        Some(2)
    } else if need.mem > h.free_mem {
        Some(3)
    } else if need.storage > h.free_storage {
        Some(4)
    } else if h.free_containers < 1 {
        Some(5)
    } else {
        None
    }
}

/// Index into `DYN_REASONS` of the isolation rule the node breaks, if any.
fn isolation_conflict(o: &NodeOcc, asker: &Asker<'_>) -> Option<usize> {
    let iso = asker.iso;
    let only_mine = o.tenants.len() == 1 && &*o.tenants[0].0 == asker.tenant;
    if (iso == Isolation::Tenant || o.iso_tenant > 0) && !only_mine {
        return Some(0);
    }
    let only_my_signers = o.signers.len() == 1 && &*o.signers[0].0 == asker.signer_key;
    if (iso == Isolation::Signer || o.iso_signer > 0) && !only_my_signers {
        return Some(1);
    }
    None
}
