//! The compiled node index, node sets, and the explanation every decision
//! carries.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use serde::ser::{SerializeMap, SerializeStruct};
use uuid::Uuid;

use super::inventory::{Capacity, Node};
use super::selector::{LabelSelector, LocationPattern, SelectorOp};
use super::types::{NodeId, Workload};
use crate::identity::TrustLevel;

/// A set of node indices as a bitmap (1,000 nodes = 16 words).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NodeSet {
    words: Vec<u64>,
}

impl NodeSet {
    pub(crate) fn empty(n: usize) -> NodeSet {
        NodeSet {
            words: vec![0; n.div_ceil(64)],
        }
    }

    pub(crate) fn full(n: usize) -> NodeSet {
        let mut s = NodeSet::empty(n);
        for i in 0..n {
            s.set(i);
        }
        s
    }

    pub(crate) fn words(&self) -> &[u64] {
        &self.words
    }

    pub(crate) fn set(&mut self, i: usize) {
        self.words[i / 64] |= 1 << (i % 64);
    }

    pub(crate) fn clear(&mut self, i: usize) {
        self.words[i / 64] &= !(1 << (i % 64));
    }

    pub(crate) fn get(&self, i: usize) -> bool {
        self.words[i / 64] & (1 << (i % 64)) != 0
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.words.iter().all(|w| *w == 0)
    }

    pub(crate) fn clear_all(&mut self) {
        self.words.fill(0);
    }

    pub(crate) fn copy_from(&mut self, other: &NodeSet) {
        self.words.copy_from_slice(&other.words);
    }

    pub(crate) fn or(&mut self, other: &NodeSet) {
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a |= *b;
        }
    }

    pub(crate) fn invert(&mut self, n: usize) {
        for w in &mut self.words {
            *w = !*w;
        }
        let tail = n % 64;
        if tail != 0
            && let Some(last) = self.words.last_mut()
        {
            *last &= (1u64 << tail) - 1;
        }
    }

    /// Restricts `self` to `keep` (or to its complement when `negate`);
    /// appends the removed bits to `removed` and returns how many there were.
    pub(crate) fn restrict(&mut self, keep: &NodeSet, negate: bool, removed: &mut Vec<u64>) -> u32 {
        let mut count = 0;
        let start = removed.len();
        for (a, b) in self.words.iter_mut().zip(&keep.words) {
            let b = if negate { !*b } else { *b };
            let gone = *a & !b;
            count += gone.count_ones();
            removed.push(gone);
            *a &= b;
        }
        if count == 0 {
            removed.truncate(start);
        }
        count
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words
            .iter()
            .enumerate()
            .flat_map(|(wi, &w)| BitIter(w).map(move |b| wi * 64 + b))
    }
}

pub(crate) struct BitIter(pub(crate) u64);

impl Iterator for BitIter {
    type Item = usize;
    fn next(&mut self) -> Option<usize> {
        if self.0 == 0 {
            return None;
        }
        let b = self.0.trailing_zeros() as usize;
        self.0 &= self.0 - 1;
        Some(b)
    }
}

/// The nodes compiled for fast filtering: interned locations, one node set
/// per label, and the numbers the scorer reads in flat arrays.
#[derive(Debug)]
pub(crate) struct Index {
    pub(crate) n: usize,
    pub(crate) ids: Arc<[NodeId]>,
    pub(crate) pos: HashMap<NodeId, usize>,
    pub(crate) zone_of: Vec<u32>,
    pub(crate) zones: Arc<[Arc<str>]>,
    pub(crate) region_of: Vec<Arc<str>>,
    /// Distinct (region, zone) pairs with their nodes.
    locations: Vec<(Arc<str>, Arc<str>, NodeSet)>,
    hardware: HashMap<String, NodeSet>,
    network: HashMap<String, NodeSet>,
    label_key: HashMap<String, NodeSet>,
    label_value: HashMap<String, HashMap<String, NodeSet>>,
    pub(crate) trust: Vec<TrustLevel>,
    pub(crate) cap: Vec<Capacity>,
    pub(crate) used: Vec<Capacity>,
    pub(crate) util: Vec<f32>,
    pub(crate) all: NodeSet,
    pub(crate) total_cpu: u64,
}

impl Index {
    pub(crate) fn build(nodes: &[Node]) -> Index {
        let n = nodes.len();
        let mut zones: Vec<Arc<str>> = Vec::new();
        let mut zone_pos: HashMap<String, u32> = HashMap::new();
        let mut locations: Vec<(Arc<str>, Arc<str>, NodeSet)> = Vec::new();
        let mut loc_pos: HashMap<(String, String), usize> = HashMap::new();
        let mut hardware: HashMap<String, NodeSet> = HashMap::new();
        let mut network: HashMap<String, NodeSet> = HashMap::new();
        let mut label_key: HashMap<String, NodeSet> = HashMap::new();
        let mut label_value: HashMap<String, HashMap<String, NodeSet>> = HashMap::new();
        let mut zone_of = Vec::with_capacity(n);
        let mut region_of = Vec::with_capacity(n);
        let mut pos = HashMap::with_capacity(n);
        for (i, node) in nodes.iter().enumerate() {
            pos.insert(node.id.clone(), i);
            let z = *zone_pos.entry(node.zone.clone()).or_insert_with(|| {
                zones.push(Arc::from(node.zone.as_str()));
                (zones.len() - 1) as u32
            });
            zone_of.push(z);
            let l = *loc_pos
                .entry((node.region.clone(), node.zone.clone()))
                .or_insert_with(|| {
                    locations.push((
                        Arc::from(node.region.as_str()),
                        zones[z as usize].clone(),
                        NodeSet::empty(n),
                    ));
                    locations.len() - 1
                });
            locations[l].2.set(i);
            region_of.push(locations[l].0.clone());
            for h in &node.hardware {
                hardware
                    .entry(h.clone())
                    .or_insert_with(|| NodeSet::empty(n))
                    .set(i);
            }
            for h in &node.network {
                network
                    .entry(h.clone())
                    .or_insert_with(|| NodeSet::empty(n))
                    .set(i);
            }
            for (k, v) in &node.labels {
                label_key
                    .entry(k.clone())
                    .or_insert_with(|| NodeSet::empty(n))
                    .set(i);
                label_value
                    .entry(k.clone())
                    .or_default()
                    .entry(v.clone())
                    .or_insert_with(|| NodeSet::empty(n))
                    .set(i);
            }
        }
        Index {
            n,
            ids: nodes.iter().map(|n| n.id.clone()).collect(),
            pos,
            zone_of,
            zones: zones.into(),
            region_of,
            locations,
            hardware,
            network,
            label_key,
            label_value,
            trust: nodes.iter().map(|n| n.trust).collect(),
            cap: nodes.iter().map(|n| n.capacity).collect(),
            used: nodes.iter().map(|n| n.used).collect(),
            util: nodes
                .iter()
                .map(|n| n.utilisation.unwrap_or(0.0) as f32)
                .collect(),
            all: NodeSet::full(n),
            total_cpu: nodes.iter().map(|n| n.capacity.cpu_millis).sum(),
        }
    }

    pub(crate) fn location_set(&self, pattern: &LocationPattern) -> NodeSet {
        let mut set = NodeSet::empty(self.n);
        for (region, zone, nodes) in &self.locations {
            if pattern.matches(region, zone) {
                set.or(nodes);
            }
        }
        set
    }

    pub(crate) fn hardware_set(&self, label: &str) -> NodeSet {
        self.hardware
            .get(label)
            .cloned()
            .unwrap_or_else(|| NodeSet::empty(self.n))
    }

    pub(crate) fn network_set(&self, label: &str) -> NodeSet {
        self.network
            .get(label)
            .cloned()
            .unwrap_or_else(|| NodeSet::empty(self.n))
    }

    pub(crate) fn selector_set(&self, sel: &LabelSelector) -> NodeSet {
        let mut set = NodeSet::empty(self.n);
        match sel.op {
            SelectorOp::In | SelectorOp::NotIn => {
                if let Some(values) = self.label_value.get(&sel.key) {
                    for v in &sel.values {
                        if let Some(s) = values.get(v) {
                            set.or(s);
                        }
                    }
                }
                if sel.op == SelectorOp::NotIn {
                    set.invert(self.n);
                }
            }
            SelectorOp::Exists | SelectorOp::DoesNotExist => {
                if let Some(s) = self.label_key.get(&sel.key) {
                    set.or(s);
                }
                if sel.op == SelectorOp::DoesNotExist {
                    set.invert(self.n);
                }
            }
        }
        set
    }
}

/// Why a node was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// The tenant's policy does not allow the node's location.
    TenantLocation(Arc<str>),
    /// A location constraint.
    Location(Arc<str>),
    /// A hardware constraint.
    Hardware(Arc<str>),
    /// A network constraint.
    Network(Arc<str>),
    /// A node-label selector.
    Label(Arc<str>),
    /// An affinity term no workload on the node matches.
    Affinity(Arc<str>),
    /// An anti-affinity term a workload on the node matches.
    AntiAffinity(Arc<str>),
    /// A workload on the node has an anti-affinity term matching this one.
    Repelled(Arc<str>),
    /// Tenant isolation (ours or an occupant's).
    TenantIsolation,
    /// Signer isolation (ours or an occupant's).
    SignerIsolation,
    /// Not enough free CPU.
    Cpu,
    /// Not enough free memory.
    Memory,
    /// Not enough free storage.
    Storage,
    /// The node's container limit is reached.
    Containers,
}

impl Reason {
    /// A short machine name: `location`, `hardware`, `cpu`, ...
    pub fn kind(&self) -> &'static str {
        match self {
            Reason::TenantLocation(_) => "policy_location",
            Reason::Location(_) => "location",
            Reason::Hardware(_) => "hardware",
            Reason::Network(_) => "network",
            Reason::Label(_) => "label",
            Reason::Affinity(_) => "affinity",
            Reason::AntiAffinity(_) => "anti_affinity",
            Reason::Repelled(_) => "repelled",
            Reason::TenantIsolation => "tenant_isolation",
            Reason::SignerIsolation => "signer_isolation",
            Reason::Cpu => "cpu",
            Reason::Memory => "memory",
            Reason::Storage => "storage",
            Reason::Containers => "containers",
        }
    }

    /// The constraint text the reason refers to, if any.
    pub fn detail(&self) -> Option<&str> {
        match self {
            Reason::TenantLocation(t)
            | Reason::Location(t)
            | Reason::Hardware(t)
            | Reason::Network(t)
            | Reason::Label(t)
            | Reason::Affinity(t)
            | Reason::AntiAffinity(t)
            | Reason::Repelled(t) => Some(t),
            _ => None,
        }
    }

    /// Whether freeing resources (preemption) could lift it.
    pub fn is_capacity(&self) -> bool {
        matches!(
            self,
            Reason::Cpu | Reason::Memory | Reason::Storage | Reason::Containers
        )
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::TenantLocation(t) => write!(f, "tenant policy allows only `{t}`"),
            Reason::Location(t) => write!(f, "location `{t}`"),
            Reason::Hardware(t) => write!(f, "hardware `{t}`"),
            Reason::Network(t) => write!(f, "network `{t}`"),
            Reason::Label(t) => write!(f, "label `{t}`"),
            Reason::Affinity(t) => write!(f, "affinity `{t}`: no matching workload there"),
            Reason::AntiAffinity(t) => {
                write!(f, "anti-affinity `{t}`: a matching workload runs there")
            }
            Reason::Repelled(t) => write!(f, "repelled: a workload there has anti-affinity `{t}`"),
            Reason::TenantIsolation => f.write_str("tenant isolation"),
            Reason::SignerIsolation => f.write_str("signer isolation"),
            Reason::Cpu => f.write_str("insufficient cpu"),
            Reason::Memory => f.write_str("insufficient memory"),
            Reason::Storage => f.write_str("insufficient storage"),
            Reason::Containers => f.write_str("container limit reached"),
        }
    }
}

impl Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("kind", self.kind())?;
        if let Some(d) = self.detail() {
            m.serialize_entry("detail", d)?;
        }
        m.serialize_entry("text", &self.to_string())?;
        m.end()
    }
}

/// Nodes removed by one reason (each node is counted under the first
/// reason that removed it, in filter order).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RejectGroup {
    /// Why.
    pub reason: Reason,
    /// How many nodes.
    pub count: u32,
}

/// The parts of a node's score, each 0..=100 (see [`ScoreWeights`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ScoreParts {
    /// Least loaded after placement (CPU or memory, whichever is fuller;
    /// measured utilisation counts when the node reports it).
    pub load: u32,
    /// CPU and memory equally used after placement.
    pub balance: u32,
    /// Few workloads of the same group in the node's zone.
    pub spread: u32,
    /// Share of the preferred constraints' weight the node matches.
    pub preferred: u32,
    /// The node's trust level (25 per level above untrusted).
    pub trust: u32,
}

/// How the score parts are weighted. The total is
/// `Σ weight × part`; the highest total wins, ties to the earlier node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ScoreWeights {
    /// Weight of [`ScoreParts::load`]. Default 2.
    pub load: u32,
    /// Weight of [`ScoreParts::balance`]. Default 1.
    pub balance: u32,
    /// Weight of [`ScoreParts::spread`]. Default 2.
    pub spread: u32,
    /// Weight of [`ScoreParts::preferred`]. Default 3.
    pub preferred: u32,
    /// Weight of [`ScoreParts::trust`]. Default 1.
    pub trust: u32,
}

impl Default for ScoreWeights {
    fn default() -> Self {
        ScoreWeights {
            load: 2,
            balance: 1,
            spread: 2,
            preferred: 3,
            trust: 1,
        }
    }
}

impl ScoreWeights {
    pub(crate) fn total(&self, p: &ScoreParts) -> u32 {
        self.load * p.load
            + self.balance * p.balance
            + self.spread * p.spread
            + self.preferred * p.preferred
            + self.trust * p.trust
    }
}

/// A scored node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeScore {
    /// The node.
    pub node: NodeId,
    /// The weighted total.
    pub score: u32,
    /// The parts.
    pub parts: ScoreParts,
}

/// Why a workload went where it went, or nowhere: the nodes each reason
/// removed (counts, with the node names on demand) and the best-scored
/// survivors.
#[derive(Clone)]
pub struct Explanation {
    pub(crate) ids: Arc<[NodeId]>,
    pub(crate) words: usize,
    pub(crate) considered: u32,
    pub(crate) feasible: u32,
    pub(crate) groups: Vec<RejectGroup>,
    pub(crate) bits: Vec<u64>,
    pub(crate) top: Vec<NodeScore>,
    pub(crate) note: Option<String>,
}

impl fmt::Debug for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Explanation")
            .field("considered", &self.considered)
            .field("feasible", &self.feasible)
            .field("rejected", &self.groups)
            .field("top", &self.top)
            .field("note", &self.note)
            .finish()
    }
}

impl Explanation {
    /// Nodes in the inventory when the decision was made.
    pub fn considered(&self) -> u32 {
        self.considered
    }

    /// Nodes that passed every filter.
    pub fn feasible(&self) -> u32 {
        self.feasible
    }

    /// Rejections grouped by reason, in filter order.
    pub fn rejected(&self) -> &[RejectGroup] {
        &self.groups
    }

    /// The nodes in rejection group `group` (an index into
    /// [`rejected`](Self::rejected)).
    pub fn rejected_nodes(&self, group: usize) -> impl Iterator<Item = &NodeId> + '_ {
        let words: &[u64] = self
            .bits
            .get(group * self.words..(group + 1) * self.words)
            .unwrap_or(&[]);
        words
            .iter()
            .enumerate()
            .flat_map(|(wi, &w)| BitIter(w).map(move |b| wi * 64 + b))
            .filter_map(|i| self.ids.get(i))
    }

    /// How many nodes `reason`'s kind removed (summed over groups of that
    /// kind).
    pub fn rejected_by(&self, kind: &str) -> u32 {
        self.groups
            .iter()
            .filter(|g| g.reason.kind() == kind)
            .map(|g| g.count)
            .sum()
    }

    /// The best-scored feasible nodes, best first (the top 5 by default;
    /// see [`SchedulerContext::explain_top`](super::SchedulerContext::explain_top)).
    pub fn scores(&self) -> &[NodeScore] {
        &self.top
    }

    /// A note on preemption (why it was refused, or whom it evicted).
    pub fn note(&self) -> Option<&str> {
        self.note.as_deref()
    }

    /// One line: `3 of 1000 nodes fit; 600 location `eu-*`, ...`.
    pub fn summary(&self) -> String {
        let mut s = format!("{} of {} nodes fit", self.feasible, self.considered);
        for (i, g) in self.groups.iter().enumerate() {
            s.push_str(if i == 0 { "; rejected: " } else { ", " });
            s.push_str(&format!("{} by {}", g.count, g.reason));
        }
        if let Some(note) = &self.note {
            s.push_str("; ");
            s.push_str(note);
        }
        s
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary())
    }
}

impl Serialize for Explanation {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Group<'a> {
            reason: &'a Reason,
            count: u32,
            nodes: Vec<&'a NodeId>,
        }
        let groups: Vec<Group<'_>> = self
            .groups
            .iter()
            .enumerate()
            .map(|(i, g)| Group {
                reason: &g.reason,
                count: g.count,
                nodes: self.rejected_nodes(i).collect(),
            })
            .collect();
        let mut st = s.serialize_struct("Explanation", 5)?;
        st.serialize_field("considered", &self.considered)?;
        st.serialize_field("feasible", &self.feasible)?;
        st.serialize_field("rejected", &groups)?;
        st.serialize_field("scores", &self.top)?;
        st.serialize_field("note", &self.note)?;
        st.end()
    }
}

/// Where a workload was placed, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Allocation {
    /// The workload's id.
    pub workload: Uuid,
    /// The workload's name.
    pub name: String,
    /// The chosen node.
    pub node_id: NodeId,
    /// The node's region.
    pub region: String,
    /// The node's zone.
    pub zone: String,
    /// The node's score.
    pub score: u32,
    /// Workloads evicted to make room (now unplaced; resubmit them).
    pub preempted: Vec<Workload>,
    /// Rejections and scores.
    pub explanation: Explanation,
}
