//! What the scheduler holds between decisions: every placement (a slab
//! indexed by slot), the per-node hot entries the filter and score loop
//! read, each node's occupants (tenants, signer groups, isolation), the
//! affinity terms with the nodes they match, spread counts per zone, and
//! each tenant's usage for its quotas.
//!
//! Every change goes through [`State::add`] and [`State::remove`], which
//! keep all of these (and the name and label indexes the terms are
//! compiled from) in step.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use uuid::Uuid;

use crate::policy::Isolation;

use super::super::inventory::Capacity;
use super::super::placement::{Index, NodeSet};
use super::super::selector::AffinityTerm;
use super::super::types::Workload;

/// An affinity term with the nodes where matching workloads run
/// (`occ`) and the nodes where workloads that repel it run (`repel`).
#[derive(Debug)]
pub(super) struct TermState {
    pub(super) term: AffinityTerm,
    pub(super) text: Arc<str>,
    pub(super) occ: NodeSet,
    pub(super) occ_count: HashMap<usize, u32>,
    pub(super) repel: NodeSet,
    pub(super) repel_count: HashMap<usize, u32>,
}

fn bump(set: &mut NodeSet, counts: &mut HashMap<usize, u32>, node: usize, up: bool) {
    let c = counts.entry(node).or_insert(0);
    if up {
        *c += 1;
        set.set(node);
    } else {
        *c = c.saturating_sub(1);
        if *c == 0 {
            counts.remove(&node);
            set.clear(node);
        }
    }
}

/// One placed workload: where, what it reserves, and the keys it is
/// counted under (tenant, signer group, spread group, anti-affinity terms).
/// `foreign` placements were made by another scheduler and are never
/// victims.
#[derive(Debug)]
pub(super) struct Placement {
    pub(super) w: Arc<Workload>,
    pub(super) node: usize,
    pub(super) zone_index: usize,
    pub(super) reserved: Capacity,
    pub(super) tenant: Arc<str>,
    pub(super) signer_group: Arc<str>,
    pub(super) iso_tenant: bool,
    pub(super) iso_signer: bool,
    pub(super) anti_terms: Vec<usize>,
    pub(super) spread_group: Arc<str>,
    pub(super) foreign: bool,
    pub(super) seq: u64,
}

/// Who occupies a node: its placement slots, tenants and signer groups
/// (with counts), and how many of them asked for isolation.
#[derive(Debug, Default, Clone)]
pub(super) struct NodeOcc {
    pub(super) placements: Vec<usize>,
    pub(super) tenants: Vec<(Arc<str>, u32)>,
    pub(super) signers: Vec<(Arc<str>, u32)>,
    pub(super) iso_tenant: u32,
    pub(super) iso_signer: u32,
}

fn count_in(list: &mut Vec<(Arc<str>, u32)>, key: &Arc<str>, up: bool) {
    if let Some(pos) = list.iter().position(|(k, _)| k == key) {
        if up {
            list[pos].1 += 1;
        } else {
            list[pos].1 -= 1;
            if list[pos].1 == 0 {
                list.swap_remove(pos);
            }
        }
    } else if up {
        list.push((key.clone(), 1));
    }
}

/// What the per-node loop reads, packed in one place (one cache line per
/// node): free capacity after every reservation, inverse capacities for
/// the load fractions, and whether the isolation checks must look closer.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Hot {
    pub(super) free_cpu: i64,
    pub(super) free_mem: i64,
    pub(super) free_storage: i64,
    pub(super) free_containers: i64,
    pub(super) inv_cpu: f32,
    pub(super) inv_mem: f32,
    pub(super) util: f32,
    pub(super) zone: u32,
    pub(super) trust: u32,
    pub(super) occupied: bool,
    pub(super) iso_guard: bool,
}

/// What a tenant holds across the inventory, for its quotas.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct TenantUsage {
    pub(super) containers: u32,
    pub(super) cpu_millis: u64,
}

/// Everything placed, indexed for the filters and scores.
#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) hot: Vec<Hot>,
    pub(super) alloc: Vec<Capacity>,
    pub(super) occ: Vec<NodeOcc>,
    pub(super) terms: Vec<TermState>,
    pub(super) term_ids: HashMap<String, usize>,
    pub(super) name_terms: HashMap<String, usize>,
    pub(super) label_terms: HashMap<String, Vec<usize>>,
    pub(super) spread: HashMap<Arc<str>, Vec<u32>>,
    pub(super) tenants: HashMap<Arc<str>, TenantUsage>,
    pub(super) slab: Vec<Option<Placement>>,
    pub(super) free: Vec<usize>,
    pub(super) by_id: HashMap<Uuid, usize>,
    pub(super) interned: HashMap<String, Arc<str>>,
    /// Placement slots by workload name, and by label key and value.
    pub(super) name_index: HashMap<String, Vec<usize>>,
    pub(super) label_index: HashMap<String, HashMap<String, Vec<usize>>>,
}

impl State {
    pub(super) fn new(index: &Index) -> State {
        let mut st = State {
            hot: vec![Hot::default(); index.n],
            alloc: vec![Capacity::default(); index.n],
            occ: vec![NodeOcc::default(); index.n],
            ..State::default()
        };
        for i in 0..index.n {
            st.resync(index, i);
        }
        st
    }

    /// Recomputes node `i`'s hot entry from the index and the reservations.
    pub(super) fn resync(&mut self, ix: &Index, i: usize) {
        let (cap, used, alloc, o) = (&ix.cap[i], &ix.used[i], &self.alloc[i], &self.occ[i]);
        // In i128, then clamped: sizes of 8 EiB and more (a `used` of
        // "16EiB" saturates to u64::MAX) must neither overflow nor wrap
        // into free capacity.
        let free = |c: u64, u: u64, a: u64| {
            (i128::from(c) - i128::from(u) - i128::from(a))
                .clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
        };
        let inv = |c: u64| if c == 0 { 0.0 } else { 1.0 / c as f32 };
        self.hot[i] = Hot {
            free_cpu: free(cap.cpu_millis, used.cpu_millis, alloc.cpu_millis),
            free_mem: free(cap.memory, used.memory, alloc.memory),
            free_storage: free(cap.storage, used.storage, alloc.storage),
            free_containers: free(
                u64::from(cap.containers),
                u64::from(used.containers),
                u64::from(alloc.containers),
            ),
            inv_cpu: inv(cap.cpu_millis),
            inv_mem: inv(cap.memory),
            util: ix.util[i],
            zone: ix.zone_of[i],
            trust: ix.trust[i] as u32,
            occupied: !o.placements.is_empty(),
            iso_guard: o.iso_tenant > 0 || o.iso_signer > 0,
        };
    }

    pub(super) fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.interned.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.interned.insert(s.to_string(), a.clone());
        a
    }

    /// The id of the term written `text`, compiling it (and its occupancy
    /// from the current placements) on first use.
    pub(super) fn term_id(&mut self, text: &str, n: usize) -> Result<usize, String> {
        if let Some(&id) = self.term_ids.get(text) {
            return Ok(id);
        }
        let term = AffinityTerm::parse(text)?;
        let id = self.terms.len();
        let mut state = TermState {
            term,
            text: Arc::from(text.trim()),
            occ: NodeSet::empty(n),
            occ_count: HashMap::new(),
            repel: NodeSet::empty(n),
            repel_count: HashMap::new(),
        };
        // The placements it matches, found through the name and label
        // indexes rather than by scanning every placement.
        let slots: Vec<usize> = match &state.term {
            AffinityTerm::Name(name) => self.name_index.get(name).cloned().unwrap_or_default(),
            AffinityTerm::Label { key, values } => self
                .label_index
                .get(key)
                .map(|by_value| {
                    values
                        .iter()
                        .filter_map(|v| by_value.get(v))
                        .flatten()
                        .copied()
                        .collect()
                })
                .unwrap_or_default(),
        };
        for slot in slots {
            if let Some(p) = &self.slab[slot] {
                bump(&mut state.occ, &mut state.occ_count, p.node, true);
            }
        }
        match &state.term {
            AffinityTerm::Name(name) => {
                self.name_terms.insert(name.clone(), id);
            }
            AffinityTerm::Label { key, .. } => {
                self.label_terms.entry(key.clone()).or_default().push(id);
            }
        }
        self.terms.push(state);
        self.term_ids.insert(text.to_string(), id);
        Ok(id)
    }

    /// Calls `f` with every term matching a workload named `name` with
    /// `labels`.
    pub(super) fn matching_terms(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
        mut f: impl FnMut(usize),
    ) {
        if let Some(&t) = self.name_terms.get(name) {
            f(t);
        }
        for (k, v) in labels {
            if let Some(ts) = self.label_terms.get(k) {
                for &t in ts {
                    if let AffinityTerm::Label { values, .. } = &self.terms[t].term
                        && values.contains(v)
                    {
                        f(t);
                    }
                }
            }
        }
    }

    pub(super) fn add(&mut self, p: Placement, ix: &Index) -> usize {
        let zones = ix.zones.len();
        let node = p.node;
        let a = &mut self.alloc[node];
        a.cpu_millis += p.reserved.cpu_millis;
        a.memory += p.reserved.memory;
        a.storage += p.reserved.storage;
        a.containers += p.reserved.containers;
        let mut matched = Vec::new();
        self.matching_terms(&p.w.name, &p.w.labels, |t| matched.push(t));
        for t in matched {
            let ts = &mut self.terms[t];
            bump(&mut ts.occ, &mut ts.occ_count, node, true);
        }
        for &t in &p.anti_terms {
            let ts = &mut self.terms[t];
            bump(&mut ts.repel, &mut ts.repel_count, node, true);
        }
        let o = &mut self.occ[node];
        count_in(&mut o.tenants, &p.tenant, true);
        count_in(&mut o.signers, &p.signer_group, true);
        o.iso_tenant += u32::from(p.iso_tenant);
        o.iso_signer += u32::from(p.iso_signer);
        let zone_counts = self
            .spread
            .entry(p.spread_group.clone())
            .or_insert_with(|| vec![0; zones]);
        zone_counts[p.zone_index] += 1;
        let u = self.tenants.entry(p.tenant.clone()).or_default();
        u.containers += 1;
        u.cpu_millis += p.reserved.cpu_millis;
        let id = p.w.id;
        let slot = match self.free.pop() {
            Some(s) => {
                self.slab[s] = Some(p);
                s
            }
            None => {
                self.slab.push(Some(p));
                self.slab.len() - 1
            }
        };
        self.occ[node].placements.push(slot);
        self.by_id.insert(id, slot);
        if let Some(p) = &self.slab[slot] {
            self.name_index
                .entry(p.w.name.clone())
                .or_default()
                .push(slot);
            for (k, v) in &p.w.labels {
                self.label_index
                    .entry(k.clone())
                    .or_default()
                    .entry(v.clone())
                    .or_default()
                    .push(slot);
            }
        }
        self.resync(ix, node);
        slot
    }

    pub(super) fn remove(&mut self, slot: usize, ix: &Index) -> Option<Placement> {
        let p = self.slab.get_mut(slot)?.take()?;
        self.free.push(slot);
        self.by_id.remove(&p.w.id);
        if let Some(v) = self.name_index.get_mut(&p.w.name) {
            v.retain(|&s| s != slot);
            if v.is_empty() {
                self.name_index.remove(&p.w.name);
            }
        }
        for (k, val) in &p.w.labels {
            if let Some(v) = self
                .label_index
                .get_mut(k)
                .and_then(|by_value| by_value.get_mut(val))
            {
                v.retain(|&s| s != slot);
            }
        }
        let node = p.node;
        let a = &mut self.alloc[node];
        a.cpu_millis -= p.reserved.cpu_millis;
        a.memory -= p.reserved.memory;
        a.storage -= p.reserved.storage;
        a.containers -= p.reserved.containers;
        let mut matched = Vec::new();
        self.matching_terms(&p.w.name, &p.w.labels, |t| matched.push(t));
        for t in matched {
            let ts = &mut self.terms[t];
            bump(&mut ts.occ, &mut ts.occ_count, node, false);
        }
        for &t in &p.anti_terms {
            let ts = &mut self.terms[t];
            bump(&mut ts.repel, &mut ts.repel_count, node, false);
        }
        let o = &mut self.occ[node];
        o.placements.retain(|&s| s != slot);
        count_in(&mut o.tenants, &p.tenant, false);
        count_in(&mut o.signers, &p.signer_group, false);
        o.iso_tenant -= u32::from(p.iso_tenant);
        o.iso_signer -= u32::from(p.iso_signer);
        if let Some(z) = self.spread.get_mut(&p.spread_group) {
            z[p.zone_index] = z[p.zone_index].saturating_sub(1);
        }
        if let Some(u) = self.tenants.get_mut(&p.tenant) {
            u.containers -= 1;
            u.cpu_millis -= p.reserved.cpu_millis;
        }
        self.resync(ix, node);
        Some(p)
    }
}

impl Placement {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        w: Arc<Workload>,
        node: usize,
        zone_index: usize,
        reserved: Capacity,
        tenant: Arc<str>,
        signer_group: Arc<str>,
        iso: Isolation,
        anti_terms: Vec<usize>,
        spread_group: Arc<str>,
        foreign: bool,
        seq: u64,
    ) -> Placement {
        Placement {
            w,
            node,
            zone_index,
            reserved,
            tenant,
            signer_group,
            iso_tenant: iso == Isolation::Tenant,
            iso_signer: iso == Isolation::Signer,
            anti_terms,
            spread_group,
            foreign,
            seq,
        }
    }
}

/// The key a workload's signers are grouped under for signer isolation
/// (sorted, deduplicated, comma-joined).
pub(super) fn signer_group(signers: &[String]) -> String {
    if signers.len() <= 1 {
        return signers.first().cloned().unwrap_or_default();
    }
    let mut s = signers.to_vec();
    s.sort();
    s.dedup();
    s.join(",")
}
