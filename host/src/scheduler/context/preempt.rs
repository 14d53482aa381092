//! Preemption: when no node fits only for lack of capacity, the victim
//! search ([`victims`]) looks for the smallest set of strictly
//! lower-priority work whose eviction makes room, if the workload's trust
//! allows it to preempt at all.

use crate::identity::TrustLevel;

use super::super::inventory::Capacity;
use super::super::placement::{Explanation, Index, NodeSet};
use super::super::types::{ResourceRequirements, Workload};
use super::state::{Placement, State};

/// Looks for victims for `w` among the nodes in `candidates` (those
/// rejected for lack of capacity only): the node and the victims' slots.
/// Sets the explanation's note either way (what was preempted, or why
/// nothing could be), and its feasible count to 1 on success.
pub(super) fn victims(
    ix: &Index,
    st: &State,
    candidates: &NodeSet,
    w: &Workload,
    min_trust: TrustLevel,
    explanation: &mut Explanation,
) -> Option<(usize, Vec<usize>)> {
    if w.identity.trust.level < min_trust {
        explanation.note = Some(format!(
            "preemption refused: trust `{}` is below `{min_trust}`",
            w.identity.trust.level
        ));
        return None;
    }
    match find_victims(ix, st, candidates, w) {
        Some((node, victims)) => {
            let names: Vec<&str> = victims
                .iter()
                .filter_map(|&v| st.slab[v].as_ref())
                .map(|p| p.w.name.as_str())
                .collect();
            explanation.note = Some(format!(
                "preempted {} on {}: {}",
                victims.len(),
                ix.ids[node],
                names.join(", ")
            ));
            explanation.feasible = 1;
            Some((node, victims))
        }
        None => {
            explanation.note = Some(format!(
                "preemption found no lower-priority work whose eviction makes room (priority `{}`)",
                w.priority
            ));
            None
        }
    }
}

/// Chooses the node and the smallest set of lower-priority victims whose
/// eviction makes room for `w`.
///
/// Per node: victims are taken lowest priority first (then lowest trust,
/// then youngest) until the workload fits, then each is given back if the
/// workload still fits without evicting it (most important first). Among
/// nodes, the choice minimises the highest victim priority, then the number
/// of victims, then their total trust. Workloads placed by other schedulers
/// are never victims.
fn find_victims(
    ix: &Index,
    st: &State,
    candidates: &NodeSet,
    w: &Workload,
) -> Option<(usize, Vec<usize>)> {
    let req = &w.resource_requirements;
    // (highest victim rank, victims, their trust), node, victim slots.
    type Choice = ((u8, usize, u64), usize, Vec<usize>);
    let mut best: Option<Choice> = None;
    for i in candidates.iter() {
        let mut cands: Vec<&Placement> = st.occ[i]
            .placements
            .iter()
            .filter_map(|&s| st.slab[s].as_ref())
            .filter(|p| !p.foreign && p.w.priority < w.priority)
            .collect();
        if cands.is_empty() {
            continue;
        }
        cands.sort_by(|a, b| {
            a.w.priority
                .cmp(&b.w.priority)
                .then(a.w.identity.trust.cmp(&b.w.identity.trust))
                .then(b.seq.cmp(&a.seq))
        });
        let mut alloc = st.alloc[i];
        let fits = |alloc: &Capacity| fits_on(&ix.cap[i], &ix.used[i], alloc, req);
        let mut chosen: Vec<&Placement> = Vec::new();
        for p in cands {
            if fits(&alloc) {
                break;
            }
            sub(&mut alloc, &p.reserved);
            chosen.push(p);
        }
        if !fits(&alloc) {
            continue;
        }
        // Reprieve, most important victim first.
        let mut k = chosen.len();
        while k > 0 {
            k -= 1;
            let mut with = alloc;
            add(&mut with, &chosen[k].reserved);
            if fits(&with) {
                alloc = with;
                chosen.remove(k);
            }
        }
        let key = (
            chosen
                .iter()
                .map(|p| p.w.priority.rank())
                .max()
                .unwrap_or(0),
            chosen.len(),
            chosen
                .iter()
                .map(|p| u64::from(p.w.identity.trust.score()))
                .sum::<u64>(),
        );
        if best.as_ref().is_none_or(|(k, _, _)| key < *k) {
            let slots = chosen
                .iter()
                .filter_map(|p| st.by_id.get(&p.w.id).copied())
                .collect();
            best = Some((key, i, slots));
        }
    }
    best.map(|(_, i, v)| (i, v))
}

/// Whether `req` fits on a node of capacity `cap` with `used` committed
/// outside this scheduler and `alloc` reserved by it.
fn fits_on(cap: &Capacity, used: &Capacity, alloc: &Capacity, req: &ResourceRequirements) -> bool {
    used.cpu_millis + alloc.cpu_millis + u64::from(req.cpu_millis) <= cap.cpu_millis
        && used.memory + alloc.memory + req.memory <= cap.memory
        && used.storage + alloc.storage + req.storage <= cap.storage
        && u64::from(used.containers) + u64::from(alloc.containers) < u64::from(cap.containers)
}

fn sub(a: &mut Capacity, b: &Capacity) {
    a.cpu_millis -= b.cpu_millis;
    a.memory -= b.memory;
    a.storage -= b.storage;
    a.containers -= b.containers;
}

fn add(a: &mut Capacity, b: &Capacity) {
    a.cpu_millis += b.cpu_millis;
    a.memory += b.memory;
    a.storage += b.storage;
    a.containers += b.containers;
}
