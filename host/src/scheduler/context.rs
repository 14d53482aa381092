//! [`SchedulerContext`]: placement (filter, score, preempt), the pending
//! queue, quotas and the audit trail of every decision.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use uuid::Uuid;

use super::ScheduleError;
use super::events::{Party, Rejection, ScheduleEvent};
use super::inventory::{Capacity, Claim, NodeInventory};
use super::placement::{
    Allocation, Explanation, Index, NodeScore, NodeSet, Reason, RejectGroup, ScoreParts,
    ScoreWeights,
};
use super::selector::{AffinityTerm, LabelSelector, LocationPattern};
use super::types::{
    ConstraintType, CpuState, MemoryState, NetworkState, NodeId, ResourceRequirements,
    ResourceState, SchedulerMetrics, StorageState, Workload,
};
use crate::audit::{AuditLog, Entry};
use crate::identity::{IdentityContext, TrustVector};
use crate::policy::{Isolation, PolicySet};

/// A node-static hard constraint compiled to the set of nodes it allows.
#[derive(Debug)]
struct StaticC {
    reason: Reason,
    set: NodeSet,
}

#[derive(Debug, Clone)]
enum Pref {
    Static(Arc<StaticC>),
    Affinity(usize),
    Anti(usize),
}

/// An affinity term with the nodes where matching workloads run
/// (`occ`) and the nodes where workloads that repel it run (`repel`).
#[derive(Debug)]
struct TermState {
    term: AffinityTerm,
    text: Arc<str>,
    occ: NodeSet,
    occ_count: HashMap<usize, u32>,
    repel: NodeSet,
    repel_count: HashMap<usize, u32>,
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

#[derive(Debug)]
struct Placement {
    w: Arc<Workload>,
    node: usize,
    zone_index: usize,
    reserved: Capacity,
    tenant: Arc<str>,
    signer_group: Arc<str>,
    iso_tenant: bool,
    iso_signer: bool,
    anti_terms: Vec<usize>,
    spread_group: Arc<str>,
    foreign: bool,
    seq: u64,
}

#[derive(Debug, Default, Clone)]
struct NodeOcc {
    placements: Vec<usize>,
    tenants: Vec<(Arc<str>, u32)>,
    signers: Vec<(Arc<str>, u32)>,
    iso_tenant: u32,
    iso_signer: u32,
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
struct Hot {
    free_cpu: i64,
    free_mem: i64,
    free_storage: i64,
    free_containers: i64,
    inv_cpu: f32,
    inv_mem: f32,
    util: f32,
    zone: u32,
    trust: u32,
    occupied: bool,
    iso_guard: bool,
}

#[derive(Debug, Default, Clone, Copy)]
struct TenantUsage {
    containers: u32,
    cpu_millis: u64,
}

#[derive(Debug, Default)]
struct State {
    hot: Vec<Hot>,
    alloc: Vec<Capacity>,
    occ: Vec<NodeOcc>,
    terms: Vec<TermState>,
    term_ids: HashMap<String, usize>,
    name_terms: HashMap<String, usize>,
    label_terms: HashMap<String, Vec<usize>>,
    spread: HashMap<Arc<str>, Vec<u32>>,
    tenants: HashMap<Arc<str>, TenantUsage>,
    slab: Vec<Option<Placement>>,
    free: Vec<usize>,
    by_id: HashMap<Uuid, usize>,
    interned: HashMap<String, Arc<str>>,
    /// Placement slots by workload name, and by label key and value.
    name_index: HashMap<String, Vec<usize>>,
    label_index: HashMap<String, HashMap<String, Vec<usize>>>,
}

impl State {
    fn new(index: &Index) -> State {
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
    fn resync(&mut self, ix: &Index, i: usize) {
        let (cap, used, alloc, o) = (&ix.cap[i], &ix.used[i], &self.alloc[i], &self.occ[i]);
        let free = |c: u64, u: u64, a: u64| c as i64 - u as i64 - a as i64;
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

    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.interned.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.interned.insert(s.to_string(), a.clone());
        a
    }

    /// The id of the term written `text`, compiling it (and its occupancy
    /// from the current placements) on first use.
    fn term_id(&mut self, text: &str, n: usize) -> Result<usize, String> {
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
    fn matching_terms(
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

    fn add(&mut self, p: Placement, ix: &Index) -> usize {
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

    fn remove(&mut self, slot: usize, ix: &Index) -> Option<Placement> {
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
    fn new(
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

/// Per-decision buffers, reused so the hot path does not allocate per node.
#[derive(Debug)]
struct Scratch {
    survivors: NodeSet,
    bits: Vec<u64>,
    groups: Vec<RejectGroup>,
    dynamic: [NodeSet; 6],
    dyn_counts: [u32; 6],
    hard: Vec<Arc<StaticC>>,
    aff: Vec<(usize, bool)>,
    prefs: Vec<(Pref, u32)>,
    top: Vec<(u32, usize, ScoreParts)>,
    key: String,
}

const DYN_REASONS: [Reason; 6] = [
    Reason::TenantIsolation,
    Reason::SignerIsolation,
    Reason::Cpu,
    Reason::Memory,
    Reason::Storage,
    Reason::Containers,
];

impl Scratch {
    fn new(n: usize) -> Scratch {
        Scratch {
            survivors: NodeSet::empty(n),
            bits: Vec::new(),
            groups: Vec::new(),
            dynamic: std::array::from_fn(|_| NodeSet::empty(n)),
            dyn_counts: [0; 6],
            hard: Vec::new(),
            aff: Vec::new(),
            prefs: Vec::new(),
            top: Vec::new(),
            key: String::new(),
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
}

#[derive(Debug, Default)]
struct Cache {
    location: HashMap<String, Arc<StaticC>>,
    hardware: HashMap<String, Arc<StaticC>>,
    network: HashMap<String, Arc<StaticC>>,
    label: HashMap<String, Arc<StaticC>>,
    tenant_location: HashMap<String, Option<Arc<StaticC>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Location,
    Hardware,
    Network,
    Label,
}

impl Cache {
    fn get(&mut self, kind: Kind, value: &str, index: &Index) -> Result<Arc<StaticC>, String> {
        let map = match kind {
            Kind::Location => &mut self.location,
            Kind::Hardware => &mut self.hardware,
            Kind::Network => &mut self.network,
            Kind::Label => &mut self.label,
        };
        if let Some(c) = map.get(value) {
            return Ok(c.clone());
        }
        let text: Arc<str> = Arc::from(value.trim());
        let compiled = match kind {
            Kind::Location => {
                let p = LocationPattern::parse(value)?;
                StaticC {
                    reason: Reason::Location(text),
                    set: index.location_set(&p),
                }
            }
            Kind::Hardware => StaticC {
                set: index.hardware_set(value.trim()),
                reason: Reason::Hardware(text),
            },
            Kind::Network => StaticC {
                set: index.network_set(value.trim()),
                reason: Reason::Network(text),
            },
            Kind::Label => {
                let s = LabelSelector::parse(value)?;
                StaticC {
                    set: index.selector_set(&s),
                    reason: Reason::Label(text),
                }
            }
        };
        let c = Arc::new(compiled);
        map.insert(value.to_string(), c.clone());
        Ok(c)
    }
}

/// A queued workload, ordered by priority, then trust, then age.
#[derive(Debug)]
struct Pending {
    w: Workload,
    seq: u64,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    /// Max-heap order: higher priority, then higher trust, then older
    /// (smaller sequence number) first.
    fn cmp(&self, other: &Self) -> Ordering {
        self.w
            .priority
            .cmp(&other.w.priority)
            .then(self.w.identity.trust.cmp(&other.w.identity.trust))
            .then(other.seq.cmp(&self.seq))
    }
}

/// The result of one queued workload in [`SchedulerContext::schedule_pending`].
#[derive(Debug)]
pub struct Outcome {
    /// The workload's id.
    pub workload: Uuid,
    /// Its name.
    pub name: String,
    /// Where it went, or why it did not.
    pub result: Result<Allocation, ScheduleError>,
}

enum Failure {
    Denied {
        rule: &'static str,
        detail: String,
        error: Box<ScheduleError>,
    },
    Invalid(Box<ScheduleError>),
    Unschedulable(Box<Explanation>),
}

impl Failure {
    fn invalid(e: ScheduleError) -> Failure {
        Failure::Invalid(Box::new(e))
    }
}

struct Decision {
    node: usize,
    score: u32,
    explanation: Explanation,
    victims: Vec<usize>,
}

/// What the scheduler knows and decides: the spec's `SchedulerContext`
/// (its `workloads`, `resources`, `policies` and `metrics` are the
/// accessors of the same names).
///
/// ```
/// use std::sync::Arc;
/// use forgeone::scheduler::{Capacity, Constraint, Node, SchedulerContext, StaticInventory, Workload};
/// use forgeone::{IdentityContext, PolicySet, Priority, TrustLevel, TrustVector};
///
/// let cap = Capacity { cpu_millis: 4000, memory: 8 << 30, storage: 0, containers: 100 };
/// let nodes = vec![
///     Node::new("fra-1", "eu-central", "eu-central-1a", cap),
///     Node::new("iad-1", "us-east", "us-east-1a", cap),
/// ];
/// let mut ctx = SchedulerContext::new(Arc::new(StaticInventory::new(nodes)), PolicySet::permissive())?;
/// let identity = IdentityContext::new("acme", "ci", TrustVector::new(TrustLevel::Medium, 1));
/// let mut workload = Workload::new("api", Priority::High, identity);
/// workload.constraint(Constraint::location("eu-*"));
/// let allocation = ctx.schedule_workload(workload)?;
/// assert_eq!(allocation.node_id, "fra-1");
/// println!("Workload scheduled on node: {}", allocation.node_id);
/// # Ok::<(), forgeone::scheduler::ScheduleError>(())
/// ```
#[derive(Debug)]
pub struct SchedulerContext {
    inventory: Arc<dyn NodeInventory>,
    generation: u64,
    policies: PolicySet,
    metrics: SchedulerMetrics,
    weights: ScoreWeights,
    top_n: usize,
    audit: Option<AuditLog>,
    record: bool,
    events: Vec<ScheduleEvent>,
    index: Index,
    st: State,
    cache: Cache,
    scratch: Scratch,
    pending: BinaryHeap<Pending>,
    seq: u64,
    evicted_seq: HashMap<Uuid, u64>,
}

impl SchedulerContext {
    /// A context placing onto `inventory` under `policies`.
    pub fn new(
        inventory: Arc<dyn NodeInventory>,
        policies: PolicySet,
    ) -> Result<SchedulerContext, ScheduleError> {
        let generation = inventory.generation();
        let nodes = inventory.nodes()?;
        let index = Index::build(&nodes);
        let mut ctx = SchedulerContext {
            inventory,
            generation,
            policies,
            metrics: SchedulerMetrics::default(),
            weights: ScoreWeights::default(),
            top_n: 5,
            audit: None,
            record: false,
            events: Vec::new(),
            st: State::new(&index),
            scratch: Scratch::new(index.n),
            index,
            cache: Cache::default(),
            pending: BinaryHeap::new(),
            seq: 0,
            evicted_seq: HashMap::new(),
        };
        ctx.load_foreign()?;
        Ok(ctx)
    }

    /// Writes every decision to `log` (and refuses to place while it cannot
    /// be written). Default: no audit log.
    pub fn audit(&mut self, log: AuditLog) -> &mut Self {
        self.audit = Some(log);
        self
    }

    /// Keeps every event in memory for [`take_events`](Self::take_events).
    /// Default false.
    pub fn record_events(&mut self, on: bool) -> &mut Self {
        self.record = on;
        self
    }

    /// The recorded events since the last call.
    pub fn take_events(&mut self) -> Vec<ScheduleEvent> {
        std::mem::take(&mut self.events)
    }

    /// Sets the score weights. Default [`ScoreWeights::default`].
    pub fn weights(&mut self, weights: ScoreWeights) -> &mut Self {
        self.weights = weights;
        self
    }

    /// How many scored nodes an explanation keeps (best first). Default 5;
    /// `usize::MAX` keeps every feasible node's score.
    pub fn explain_top(&mut self, n: usize) -> &mut Self {
        self.top_n = n.max(1);
        self
    }

    /// The placed workloads (the spec's `workloads`).
    pub fn workloads(&self) -> impl Iterator<Item = &Workload> + '_ {
        self.st
            .slab
            .iter()
            .flatten()
            .filter(|p| !p.foreign)
            .map(|p| &*p.w)
    }

    /// The node `workload` is placed on.
    pub fn placement_of(&self, workload: Uuid) -> Option<&NodeId> {
        let slot = *self.st.by_id.get(&workload)?;
        let p = self.st.slab[slot].as_ref()?;
        self.index.ids.get(p.node)
    }

    /// The workloads placed on `node`.
    pub fn workloads_on(&self, node: &str) -> Vec<&Workload> {
        let Some(&i) = self.index.pos.get(&NodeId::new(node)) else {
            return Vec::new();
        };
        self.st.occ[i]
            .placements
            .iter()
            .filter_map(|&s| self.st.slab[s].as_ref())
            .map(|p| &*p.w)
            .collect()
    }

    /// The policies (the spec's `policies`).
    pub fn policies(&self) -> &PolicySet {
        &self.policies
    }

    /// The decision counters (the spec's `metrics`).
    pub fn metrics(&self) -> &SchedulerMetrics {
        &self.metrics
    }

    /// Resources across the inventory (the spec's `resources`): capacity,
    /// what other work committed, and this scheduler's reservations.
    pub fn resources(&self) -> ResourceState {
        let ix = &self.index;
        let sum = |f: &dyn Fn(&Capacity) -> u64| -> (u64, u64) {
            let total = ix.cap.iter().map(f).sum();
            let used = ix.used.iter().chain(&self.st.alloc).map(f).sum();
            (total, used)
        };
        let (cpu_total, cpu_used) = sum(&|c| c.cpu_millis);
        let (mem_total, mem_used) = sum(&|c| c.memory);
        let (sto_total, sto_used) = sum(&|c| c.storage);
        let util = if ix.n == 0 {
            0.0
        } else {
            ix.util.iter().map(|u| f64::from(*u)).sum::<f64>() / ix.n as f64
        };
        let _ = cpu_total;
        ResourceState {
            cpu: CpuState {
                cores: u32::try_from(cpu_total / 1000).unwrap_or(u32::MAX),
                utilisation: util,
                committed_millis: cpu_used,
                ..CpuState::default()
            },
            memory: MemoryState {
                total: mem_total,
                committed: mem_used,
            },
            storage: StorageState {
                total: sto_total,
                granted: sto_used,
            },
            network: NetworkState {
                granted: u32::try_from(
                    self.workloads()
                        .filter(|w| w.resource_requirements.network)
                        .count(),
                )
                .unwrap_or(u32::MAX),
            },
        }
    }

    /// Node ids in inventory order.
    pub fn nodes(&self) -> &[NodeId] {
        &self.index.ids
    }

    /// Zone of `node`.
    pub fn zone_of(&self, node: &NodeId) -> Option<&str> {
        let i = *self.index.pos.get(node)?;
        Some(&self.index.zones[self.index.zone_of[i] as usize])
    }

    /// Re-reads every node's committed load and utilisation (cheap; labels
    /// are not recompiled). Recompiles everything if the inventory's
    /// generation moved, returning the workloads whose node disappeared.
    pub fn refresh(&mut self) -> Result<Vec<Workload>, ScheduleError> {
        let nodes = self.inventory.nodes()?;
        let generation = self.inventory.generation();
        if generation == self.generation && nodes.len() == self.index.n {
            for n in &nodes {
                if let Some(&i) = self.index.pos.get(&n.id) {
                    self.index.used[i] = n.used;
                    self.index.util[i] = n.utilisation.unwrap_or(0.0) as f32;
                    self.st.resync(&self.index, i);
                }
            }
            return Ok(Vec::new());
        }
        self.generation = generation;
        let old: Vec<Placement> = self
            .st
            .slab
            .iter_mut()
            .filter_map(Option::take)
            .filter(|p| !p.foreign)
            .collect();
        let old_ids = self.index.ids.clone();
        self.index = Index::build(&nodes);
        self.st = State::new(&self.index);
        self.cache = Cache::default();
        self.scratch = Scratch::new(self.index.n);
        self.load_foreign()?;
        let mut displaced = Vec::new();
        let mut old = old;
        old.sort_by_key(|p| p.seq);
        for p in old {
            match self.index.pos.get(&old_ids[p.node]).copied() {
                Some(i) => {
                    let w = p.w.clone();
                    self.add_own(w, i, p.seq)?;
                }
                None => displaced.push((*p.w).clone()),
            }
        }
        Ok(displaced)
    }

    fn load_foreign(&mut self) -> Result<(), ScheduleError> {
        for c in self.inventory.foreign_claims()? {
            let Some(&node) = self.index.pos.get(&c.node) else {
                continue;
            };
            let mut w = Workload::new(
                c.name.clone(),
                c.priority,
                IdentityContext::new(c.tenant.clone(), "foreign", TrustVector::default()),
            );
            w.id = c.workload;
            w.labels = c.labels.clone();
            w.signers = c.signers.clone();
            let mut anti = Vec::new();
            for t in &c.anti_affinity {
                anti.push(
                    self.st
                        .term_id(t, self.index.n)
                        .map_err(|reason| invalid(&w.name, t, reason))?,
                );
            }
            let iso = if c.isolate_tenant {
                Isolation::Tenant
            } else if c.isolate_signer {
                Isolation::Signer
            } else {
                Isolation::Shared
            };
            let p = self.make_placement(Arc::new(w), node, c.reserved, iso, anti, true, 0);
            self.st.add(p, &self.index);
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn make_placement(
        &mut self,
        w: Arc<Workload>,
        node: usize,
        reserved: Capacity,
        iso: Isolation,
        anti_terms: Vec<usize>,
        foreign: bool,
        seq: u64,
    ) -> Placement {
        let tenant = self.st.intern(&w.identity.tenant);
        let signer_group = if w.signers.is_empty() {
            self.st.intern("")
        } else {
            let mut s = w.signers.clone();
            s.sort();
            s.dedup();
            self.st.intern(&s.join(","))
        };
        let spread_group = match w.labels.get("app") {
            Some(app) => self.st.intern(&format!("app={app}")),
            None => self.st.intern(&format!("tenant={}", w.identity.tenant)),
        };
        let zone = self.index.zone_of[node] as usize;
        Placement::new(
            w,
            node,
            zone,
            reserved,
            tenant,
            signer_group,
            iso,
            anti_terms,
            spread_group,
            foreign,
            seq,
        )
    }

    fn add_own(&mut self, w: Arc<Workload>, node: usize, seq: u64) -> Result<usize, ScheduleError> {
        let iso = self
            .policies
            .get(&w.identity.tenant)
            .map(|p| p.isolation)
            .unwrap_or_default();
        let mut anti = Vec::new();
        for c in &w.constraints {
            if c.constraint_type == ConstraintType::AntiAffinity && c.preferred.is_none() {
                anti.push(
                    self.st
                        .term_id(&c.value, self.index.n)
                        .map_err(|reason| invalid(&w.name, &c.value, reason))?,
                );
            }
        }
        let req = &w.resource_requirements;
        let reserved = Capacity {
            cpu_millis: u64::from(req.cpu_millis),
            memory: req.memory,
            storage: req.storage,
            containers: 1,
        };
        let p = self.make_placement(w, node, reserved, iso, anti, false, seq);
        Ok(self.st.add(p, &self.index))
    }

    /// Places `workload` now (preempting lower-priority work if it may and
    /// must), or explains why not. Every outcome is audited.
    pub fn schedule_workload(&mut self, workload: Workload) -> Result<Allocation, ScheduleError> {
        self.seq += 1;
        let seq = self.seq;
        let (result, _) = self.schedule_one(workload, seq, true);
        result
    }

    /// Queues `workload` for [`schedule_pending`](Self::schedule_pending).
    pub fn submit(&mut self, workload: Workload) -> Uuid {
        self.seq += 1;
        let id = workload.id;
        self.pending.push(Pending {
            w: workload,
            seq: self.seq,
        });
        id
    }

    /// Queued workloads.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Places every queued workload in order: priority, then trust (the
    /// identity's [`TrustVector`]), then age. A workload whose affinity
    /// target is still queued waits for it; workloads evicted by a
    /// preemption are queued again (keeping their age) and get their own
    /// outcome. Load is refreshed from the inventory first.
    pub fn schedule_pending(&mut self) -> Result<Vec<Outcome>, ScheduleError> {
        self.refresh()?;
        let mut outcomes = Vec::new();
        loop {
            let mut deferred: Vec<(Pending, Box<Explanation>)> = Vec::new();
            let mut progress = false;
            while let Some(p) = self.pending.pop() {
                let t0 = Instant::now();
                match self.decide(&p.w, true) {
                    Ok(d) => {
                        let name = p.w.name.clone();
                        let id = p.w.id;
                        let result = self.commit(Arc::new(p.w), p.seq, d, t0);
                        if let Ok(a) = &result {
                            progress = true;
                            for v in &a.preempted {
                                // Evicted work is queued again with its
                                // original age.
                                let seq = self.evicted_seq.remove(&v.id).unwrap_or(p.seq);
                                self.pending.push(Pending { w: v.clone(), seq });
                            }
                        }
                        outcomes.push(Outcome {
                            workload: id,
                            name,
                            result,
                        });
                    }
                    Err(Failure::Unschedulable(e))
                        if e.rejected_by("affinity") > 0 && !self.pending.is_empty() =>
                    {
                        deferred.push((p, e));
                    }
                    Err(f) => {
                        let result = Err(self.fail(&p.w, f, t0));
                        outcomes.push(Outcome {
                            workload: p.w.id,
                            name: p.w.name.clone(),
                            result,
                        });
                    }
                }
            }
            if deferred.is_empty() {
                break;
            }
            if progress {
                for (p, _) in deferred {
                    self.pending.push(p);
                }
                continue;
            }
            for (p, e) in deferred {
                let result = Err(self.fail(&p.w, Failure::Unschedulable(e), Instant::now()));
                outcomes.push(Outcome {
                    workload: p.w.id,
                    name: p.w.name.clone(),
                    result,
                });
            }
            break;
        }
        Ok(outcomes)
    }

    /// Ends `workload`'s placement (its container stopped). Audited.
    pub fn release(&mut self, workload: Uuid) -> Result<Workload, ScheduleError> {
        let slot = *self
            .st
            .by_id
            .get(&workload)
            .ok_or(ScheduleError::UnknownWorkload(workload))?;
        let p = self
            .st
            .remove(slot, &self.index)
            .ok_or(ScheduleError::UnknownWorkload(workload))?;
        let node = self.index.ids[p.node].clone();
        self.inventory.release(&node, workload)?;
        if self.observing() {
            let ev = ScheduleEvent::Released {
                workload,
                name: p.w.name.clone(),
                node: node.to_string(),
            };
            self.emit(ev, &p.w.name, Some(node.as_str()), Some(&p.w.identity))?;
        }
        Ok((*p.w).clone())
    }

    fn schedule_one(
        &mut self,
        workload: Workload,
        seq: u64,
        allow_preempt: bool,
    ) -> (Result<Allocation, ScheduleError>, bool) {
        let t0 = Instant::now();
        if self.st.by_id.contains_key(&workload.id) {
            return (
                Err(ScheduleError::DuplicateWorkload {
                    workload: workload.name.clone(),
                    id: workload.id,
                }),
                false,
            );
        }
        match self.decide(&workload, allow_preempt) {
            Ok(d) => (self.commit(Arc::new(workload), seq, d, t0), true),
            Err(f) => (Err(self.fail(&workload, f, t0)), false),
        }
    }

    fn observing(&self) -> bool {
        self.audit.is_some() || self.record
    }

    fn emit(
        &mut self,
        ev: ScheduleEvent,
        workload: &str,
        node: Option<&str>,
        actor: Option<&IdentityContext>,
    ) -> Result<(), ScheduleError> {
        if let Some(log) = &self.audit {
            let mut entry = Entry::new(&ev).workload(workload);
            entry = match actor {
                Some(a) => entry.actor(a),
                None => entry.actor(crate::audit::Actor::host()),
            };
            if let Some(n) = node {
                entry = entry.node(n);
            }
            log.append(entry)?;
        }
        if self.record {
            self.events.push(ev);
        }
        Ok(())
    }

    fn fail(&mut self, w: &Workload, failure: Failure, t0: Instant) -> ScheduleError {
        self.metrics.decision_time += t0.elapsed();
        match failure {
            Failure::Denied {
                rule,
                detail,
                error,
            } => {
                self.metrics.denied += 1;
                if self.observing() {
                    let ev = ScheduleEvent::PolicyDenied {
                        workload: w.id,
                        name: w.name.clone(),
                        tenant: w.identity.tenant.clone(),
                        rule,
                        detail,
                    };
                    if let Err(e) = self.emit(ev, &w.name, None, Some(&w.identity)) {
                        return e;
                    }
                }
                *error
            }
            Failure::Invalid(e) => {
                self.metrics.denied += 1;
                *e
            }
            Failure::Unschedulable(explanation) => {
                self.metrics.decisions += 1;
                self.metrics.unschedulable += 1;
                if self.observing() {
                    let ev = ScheduleEvent::Unschedulable {
                        workload: w.id,
                        name: w.name.clone(),
                        tenant: w.identity.tenant.clone(),
                        priority: w.priority,
                        considered: explanation.considered,
                        rejected: rejections(&explanation),
                        note: explanation.note.clone(),
                    };
                    if let Err(e) = self.emit(ev, &w.name, None, Some(&w.identity)) {
                        return e;
                    }
                }
                ScheduleError::Unschedulable {
                    workload: w.name.clone(),
                    explanation,
                }
            }
        }
    }

    fn commit(
        &mut self,
        w: Arc<Workload>,
        seq: u64,
        d: Decision,
        t0: Instant,
    ) -> Result<Allocation, ScheduleError> {
        if let Some(log) = &self.audit {
            log.ensure_writable()?;
        }
        let node_id = self.index.ids[d.node].clone();
        // Evict the victims first.
        let mut evicted: Vec<Placement> = Vec::new();
        for v in &d.victims {
            if let Some(p) = self.st.remove(*v, &self.index) {
                evicted.push(p);
            }
        }
        for p in &evicted {
            self.inventory.release(&node_id, p.w.id)?;
        }
        let slot = self.add_own(w.clone(), d.node, seq)?;
        let claim = self.claim_for(slot);
        if let Err(e) = self.inventory.claim(&claim) {
            self.st.remove(slot, &self.index);
            for p in evicted {
                let id = p.w.id;
                let slot = self.st.add(p, &self.index);
                let claim = self.claim_for(slot);
                if self.inventory.claim(&claim).is_err() {
                    tracing::warn!(workload = %id, "could not restore a claim after a failed preemption");
                }
            }
            return Err(e.into());
        }
        self.metrics.decisions += 1;
        self.metrics.placed += 1;
        self.metrics.preemptions += evicted.len() as u64;
        self.metrics.decision_time += t0.elapsed();
        for p in &evicted {
            self.evicted_seq.insert(p.w.id, p.seq);
        }
        let preempted: Vec<Workload> = evicted.iter().map(|p| (*p.w).clone()).collect();
        if self.observing() {
            let zone = self.index.zones[self.index.zone_of[d.node] as usize].to_string();
            for p in &evicted {
                let ev = ScheduleEvent::Preempted {
                    node: node_id.to_string(),
                    victim: party(&p.w),
                    preemptor: party(&w),
                };
                self.emit(ev, &p.w.name, Some(node_id.as_str()), Some(&w.identity))?;
            }
            let ev = ScheduleEvent::Placed {
                workload: w.id,
                name: w.name.clone(),
                tenant: w.identity.tenant.clone(),
                priority: w.priority,
                node: node_id.to_string(),
                zone,
                score: d.score,
                feasible: d.explanation.feasible,
                considered: d.explanation.considered,
                rejected: rejections(&d.explanation),
                preempted: preempted.iter().map(|v| v.name.clone()).collect(),
            };
            if let Err(e) = self.emit(ev, &w.name, Some(node_id.as_str()), Some(&w.identity)) {
                // Fail closed: a placement that cannot be audited is undone.
                self.st.remove(slot, &self.index);
                let _ = self.inventory.release(&node_id, w.id);
                return Err(e);
            }
        }
        Ok(Allocation {
            workload: w.id,
            name: w.name.clone(),
            region: self.index.region_of[d.node].to_string(),
            zone: self.index.zones[self.index.zone_of[d.node] as usize].to_string(),
            node_id,
            score: d.score,
            preempted,
            explanation: d.explanation,
        })
    }

    fn claim_for(&self, slot: usize) -> Claim {
        let p = self.st.slab[slot]
            .as_ref()
            .expect("claim_for is called right after the slot was filled");
        Claim {
            workload: p.w.id,
            name: p.w.name.clone(),
            tenant: p.w.identity.tenant.clone(),
            priority: p.w.priority,
            labels: p.w.labels.clone(),
            signers: p.w.signers.clone(),
            anti_affinity: p
                .anti_terms
                .iter()
                .map(|&t| self.st.terms[t].text.to_string())
                .collect(),
            isolate_tenant: p.iso_tenant,
            isolate_signer: p.iso_signer,
            node: self.index.ids[p.node].clone(),
            reserved: p.reserved,
        }
    }

    /// Filter, score, and (if nothing fits) look for victims.
    fn decide(&mut self, w: &Workload, allow_preempt: bool) -> Result<Decision, Failure> {
        let tenant = w.identity.tenant.as_str();
        let Some(policy) = self.policies.get(tenant) else {
            return Err(Failure::Denied {
                rule: "unknown_tenant",
                detail: format!("no policy for tenant `{tenant}`"),
                error: Box::new(ScheduleError::UnknownTenant {
                    workload: w.name.clone(),
                    tenant: tenant.to_string(),
                }),
            });
        };
        if w.priority > policy.max_priority {
            return Err(Failure::Denied {
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
        let req = &w.resource_requirements;
        let usage = self.st.tenants.get(tenant).copied().unwrap_or_default();
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
            let limit = (share * self.index.total_cpu as f64) as u64;
            let want = usage.cpu_millis + u64::from(req.cpu_millis);
            if want > limit {
                let detail = format!(
                    "tenant `{tenant}` would reserve {want}m CPU, above its share {share} of {}m",
                    self.index.total_cpu
                );
                return Err(quota(w, "cpu_share", detail));
            }
        }
        let iso = policy.isolation;
        let tenant_loc = match self.cache.tenant_location.get(tenant) {
            Some(c) => c.clone(),
            None => {
                let c = if policy.allowed_locations.is_empty() {
                    None
                } else {
                    let text = policy.allowed_locations.join(",");
                    let pattern = LocationPattern::parse(&text).map_err(|reason| {
                        Failure::invalid(ScheduleError::InvalidPolicy {
                            tenant: tenant.to_string(),
                            reason,
                        })
                    })?;
                    Some(Arc::new(StaticC {
                        set: self.index.location_set(&pattern),
                        reason: Reason::TenantLocation(Arc::from(text)),
                    }))
                };
                self.cache
                    .tenant_location
                    .insert(tenant.to_string(), c.clone());
                c
            }
        };

        // Compile the constraints (cached by text).
        let sc = &mut self.scratch;
        sc.hard.clear();
        sc.aff.clear();
        sc.prefs.clear();
        for c in &w.constraints {
            let kind = match &c.constraint_type {
                ConstraintType::Location => Some(Kind::Location),
                ConstraintType::Hardware => Some(Kind::Hardware),
                ConstraintType::Network => Some(Kind::Network),
                ConstraintType::Custom(k) if k == "label" => Some(Kind::Label),
                ConstraintType::Custom(k) => {
                    return Err(Failure::invalid(invalid(
                        &w.name,
                        &c.value,
                        format!("unknown custom constraint kind `{k}` (only `label` is defined)"),
                    )));
                }
                ConstraintType::Affinity | ConstraintType::AntiAffinity => None,
            };
            match kind {
                Some(kind) => {
                    let compiled = self
                        .cache
                        .get(kind, &c.value, &self.index)
                        .map_err(|r| Failure::invalid(invalid(&w.name, &c.value, r)))?;
                    match c.preferred {
                        None => sc.hard.push(compiled),
                        Some(wt) => sc.prefs.push((Pref::Static(compiled), wt)),
                    }
                }
                None => {
                    let anti = c.constraint_type == ConstraintType::AntiAffinity;
                    let t = self
                        .st
                        .term_id(&c.value, self.index.n)
                        .map_err(|r| Failure::invalid(invalid(&w.name, &c.value, r)))?;
                    match (c.preferred, anti) {
                        (None, _) => sc.aff.push((t, anti)),
                        (Some(wt), false) => sc.prefs.push((Pref::Affinity(t), wt)),
                        (Some(wt), true) => sc.prefs.push((Pref::Anti(t), wt)),
                    }
                }
            }
        }

        // Filter by node sets: policy, static constraints, affinity.
        sc.survivors.copy_from(&self.index.all);
        sc.bits.clear();
        sc.groups.clear();
        if let Some(tl) = &tenant_loc {
            sc.restrict(&tl.reason, &tl.set, false);
        }
        for i in 0..sc.hard.len() {
            let h = sc.hard[i].clone();
            sc.restrict(&h.reason, &h.set, false);
        }
        for k in 0..sc.aff.len() {
            let (t, anti) = sc.aff[k];
            let ts = &self.st.terms[t];
            if anti {
                sc.restrict(&Reason::AntiAffinity(ts.text.clone()), &ts.occ, true);
            } else if ts.occ.is_empty() && ts.term.matches(&w.name, &w.labels) {
                // The first of a group that wants to be together goes
                // anywhere (as Kubernetes does for self-matching terms).
            } else {
                sc.restrict(&Reason::Affinity(ts.text.clone()), &ts.occ, false);
            }
        }
        let st = &self.st;
        st.matching_terms(&w.name, &w.labels, |t| {
            let ts = &st.terms[t];
            if !ts.repel.is_empty() {
                sc.restrict(&Reason::Repelled(ts.text.clone()), &ts.repel, true);
            }
        });

        // Per-node checks and scores.
        for k in 0..6 {
            if sc.dyn_counts[k] > 0 {
                sc.dynamic[k].clear_all();
                sc.dyn_counts[k] = 0;
            }
        }
        sc.top.clear();
        let signer_key = signer_group(&w.signers);
        sc.key.clear();
        match w.labels.get("app") {
            Some(app) => {
                sc.key.push_str("app=");
                sc.key.push_str(app);
            }
            None => {
                sc.key.push_str("tenant=");
                sc.key.push_str(tenant);
            }
        }
        let zone_counts = st.spread.get(sc.key.as_str()).map(Vec::as_slice);
        let max_zone = zone_counts
            .and_then(|z| z.iter().max().copied())
            .unwrap_or(0);
        let total_pref: u32 = sc.prefs.iter().map(|(_, w)| *w).sum();
        let ix = &self.index;
        let mut feasible = 0u32;
        let isolated = iso != Isolation::Shared;
        let need = (
            i64::from(req.cpu_millis),
            i64::try_from(req.memory).unwrap_or(i64::MAX),
            i64::try_from(req.storage).unwrap_or(i64::MAX),
        );
        let top_n = self.top_n;
        for wi in 0..sc.survivors.words().len() {
            let mut word = sc.survivors.words()[wi];
            while word != 0 {
                let i = wi * 64 + word.trailing_zeros() as usize;
                word &= word - 1;
                let h = &st.hot[i];
                if (h.iso_guard || (isolated && h.occupied))
                    && let Some(k) = isolation_conflict(&st.occ[i], iso, tenant, &signer_key)
                {
                    sc.dynamic[k].set(i);
                    sc.dyn_counts[k] += 1;
                    continue;
                }
                let short = if need.0 > h.free_cpu {
                    2
                } else if need.1 > h.free_mem {
                    3
                } else if need.2 > h.free_storage {
                    4
                } else if h.free_containers < 1 {
                    5
                } else {
                    0
                };
                if short != 0 {
                    sc.dynamic[short].set(i);
                    sc.dyn_counts[short] += 1;
                    continue;
                }
                feasible += 1;
                let parts =
                    score_parts(h, st, i, need, zone_counts, max_zone, &sc.prefs, total_pref);
                let score = self.weights.total(&parts);
                let pos = sc.top.partition_point(|(s, _, _)| *s >= score);
                if pos < top_n {
                    sc.top.insert(pos, (score, i, parts));
                    if sc.top.len() > top_n {
                        sc.top.pop();
                    }
                }
            }
        }
        for (k, reason) in DYN_REASONS.iter().enumerate() {
            if sc.dyn_counts[k] > 0 {
                sc.bits.extend_from_slice(sc.dynamic[k].words());
                sc.groups.push(RejectGroup {
                    reason: reason.clone(),
                    count: sc.dyn_counts[k],
                });
            }
        }
        let mut explanation = Explanation {
            ids: ix.ids.clone(),
            words: sc.survivors.words().len(),
            considered: ix.n as u32,
            feasible,
            groups: sc.groups.clone(),
            bits: sc.bits.clone(),
            top: sc
                .top
                .iter()
                .map(|&(score, i, parts)| NodeScore {
                    node: ix.ids[i].clone(),
                    score,
                    parts,
                })
                .collect(),
            note: None,
        };
        self.metrics.nodes_scored += u64::from(feasible);
        if let Some(&(score, node, _)) = sc.top.first() {
            return Ok(Decision {
                node,
                score,
                explanation,
                victims: Vec::new(),
            });
        }

        // Nothing fits. Preemption can only help where capacity was the
        // problem (those nodes passed every other check).
        let capacity_blocked: u32 = sc.dyn_counts[2..].iter().sum();
        if !allow_preempt || capacity_blocked == 0 {
            return Err(Failure::Unschedulable(Box::new(explanation)));
        }
        let min_trust = self.policies.min_trust_to_preempt();
        if w.identity.trust.level < min_trust {
            explanation.note = Some(format!(
                "preemption refused: trust `{}` is below `{min_trust}`",
                w.identity.trust.level
            ));
            return Err(Failure::Unschedulable(Box::new(explanation)));
        }
        let mut candidates = NodeSet::empty(ix.n);
        for k in 2..6 {
            candidates.or(&sc.dynamic[k]);
        }
        match find_victims(ix, st, &candidates, w) {
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
                Ok(Decision {
                    node,
                    score: 0,
                    explanation,
                    victims,
                })
            }
            None => {
                explanation.note = Some(format!(
                    "preemption found no lower-priority work whose eviction makes room (priority `{}`)",
                    w.priority
                ));
                Err(Failure::Unschedulable(Box::new(explanation)))
            }
        }
    }
}

fn invalid(workload: &str, constraint: &str, reason: String) -> ScheduleError {
    ScheduleError::InvalidConstraint {
        workload: workload.to_string(),
        constraint: constraint.to_string(),
        reason,
    }
}

fn quota(w: &Workload, rule: &'static str, detail: String) -> Failure {
    Failure::Denied {
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

fn party(w: &Workload) -> Party {
    Party {
        workload: w.id,
        name: w.name.clone(),
        tenant: w.identity.tenant.clone(),
        principal: w.identity.principal.clone(),
        priority: w.priority,
        trust: w.identity.trust.level,
    }
}

fn rejections(e: &Explanation) -> Vec<Rejection> {
    e.groups
        .iter()
        .map(|g| Rejection {
            reason: g.reason.clone(),
            nodes: g.count,
        })
        .collect()
}

fn signer_group(signers: &[String]) -> String {
    if signers.len() <= 1 {
        return signers.first().cloned().unwrap_or_default();
    }
    let mut s = signers.to_vec();
    s.sort();
    s.dedup();
    s.join(",")
}

/// Index into `DYN_REASONS` of the isolation rule the node breaks, if any.
fn isolation_conflict(
    o: &NodeOcc,
    iso: Isolation,
    tenant: &str,
    signer_key: &str,
) -> Option<usize> {
    let only_mine = o.tenants.len() == 1 && &*o.tenants[0].0 == tenant;
    if (iso == Isolation::Tenant || o.iso_tenant > 0) && !only_mine {
        return Some(0);
    }
    let only_my_signers = o.signers.len() == 1 && &*o.signers[0].0 == signer_key;
    if (iso == Isolation::Signer || o.iso_signer > 0) && !only_my_signers {
        return Some(1);
    }
    None
}

/// Index into `DYN_REASONS` of the first resource the node lacks, if any.
fn capacity_shortfall(
    cap: &Capacity,
    used: &Capacity,
    alloc: &Capacity,
    req: &ResourceRequirements,
) -> Option<usize> {
    if used.cpu_millis + alloc.cpu_millis + u64::from(req.cpu_millis) > cap.cpu_millis {
        return Some(2);
    }
    if used.memory + alloc.memory + req.memory > cap.memory {
        return Some(3);
    }
    if used.storage + alloc.storage + req.storage > cap.storage {
        return Some(4);
    }
    if u64::from(used.containers) + u64::from(alloc.containers) + 1 > u64::from(cap.containers) {
        return Some(5);
    }
    None
}

#[allow(clippy::too_many_arguments)]
#[inline]
fn score_parts(
    h: &Hot,
    st: &State,
    i: usize,
    need: (i64, i64, i64),
    zone_counts: Option<&[u32]>,
    max_zone: u32,
    prefs: &[(Pref, u32)],
    total_pref: u32,
) -> ScoreParts {
    // Fraction of capacity in use once the workload is placed.
    let frac = |free: i64, need: i64, inv: f32| -> f32 {
        if inv == 0.0 {
            1.0
        } else {
            (1.0 - (free - need) as f32 * inv).clamp(0.0, 1.0)
        }
    };
    let cpu = frac(h.free_cpu, need.0, h.inv_cpu).max(h.util);
    let mem = frac(h.free_mem, need.1, h.inv_mem);
    let load = ((1.0 - cpu.max(mem)) * 100.0) as u32;
    let balance = ((1.0 - (cpu - mem).abs()) * 100.0) as u32;
    let spread = match zone_counts {
        Some(z) if max_zone > 0 => {
            let here = z.get(h.zone as usize).copied().unwrap_or(0);
            (max_zone - here.min(max_zone)) * 100 / max_zone
        }
        _ => 100,
    };
    let preferred = {
        let mut matched = 0;
        for (p, wt) in prefs {
            let hit = match p {
                Pref::Static(s) => s.set.get(i),
                Pref::Affinity(t) => st.terms[*t].occ.get(i),
                Pref::Anti(t) => !st.terms[*t].occ.get(i),
            };
            if hit {
                matched += wt;
            }
        }
        (matched * 100).checked_div(total_pref).unwrap_or(0)
    };
    let trust = h.trust * 25;
    ScoreParts {
        load,
        balance,
        spread,
        preferred,
        trust,
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
        let fits =
            |alloc: &Capacity| capacity_shortfall(&ix.cap[i], &ix.used[i], alloc, req).is_none();
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
