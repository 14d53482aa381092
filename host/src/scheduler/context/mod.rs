//! [`SchedulerContext`]: placement (filter, score, preempt), the pending
//! queue, quotas and the audit trail of every decision.
//!
//! This file is the public API and the pending queue; the rest is split
//! along the steps of a decision, each file using only those listed
//! before it:
//!
//! - `state`: every placement and the indexes kept from them (per-node
//!   hot entries, occupants, affinity terms, spread, tenant usage);
//! - `compile`: constraint texts compiled once into node sets or terms;
//! - `filter`: tenant policy, node-set filters, per-node checks;
//! - `score`: the pass over the survivors that checks and scores them;
//! - `preempt`: the victim search;
//! - `decide`: one decision, from policy to victims, changing nothing;
//! - `commit`: applying a decision (or a refusal), audited.

mod commit;
mod compile;
mod decide;
mod filter;
mod preempt;
mod score;
mod state;

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use uuid::Uuid;

use super::ScheduleError;
use super::events::ScheduleEvent;
use super::inventory::{Capacity, NodeInventory};
use super::placement::{Allocation, Explanation, Index, ScoreWeights};
use super::types::{
    CpuState, MemoryState, NetworkState, NodeId, ResourceState, SchedulerMetrics, StorageState,
    Workload,
};
use crate::audit::AuditLog;
use crate::policy::PolicySet;

use compile::Cache;
use decide::{Failure, Scratch};
use state::{Placement, State};

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

/// What became of one queued workload in
/// [`SchedulerContext::schedule_pending`]: placed (its [`Allocation`]) or
/// refused (the error).
#[derive(Debug)]
pub struct Scheduled {
    /// The workload's id.
    pub workload: Uuid,
    /// Its name.
    pub name: String,
    /// Where it went, or why it did not.
    pub result: Result<Allocation, ScheduleError>,
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

    /// Places `workload` now (preempting lower-priority work if it may and
    /// must), or explains why not. Every outcome is audited. Workloads it
    /// evicts are queued again with their original age, as
    /// [`schedule_pending`](Self::schedule_pending) does, so none is lost.
    pub fn schedule_workload(&mut self, workload: Workload) -> Result<Allocation, ScheduleError> {
        self.seq += 1;
        let seq = self.seq;
        let (result, _) = self.schedule_one(workload, seq, true);
        if let Ok(a) = &result {
            for v in &a.preempted {
                let seq = self.evicted_seq.remove(&v.id).unwrap_or(seq);
                self.pending.push(Pending { w: v.clone(), seq });
            }
        }
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
    /// identity's [`TrustVector`](crate::TrustVector)), then age. A
    /// workload whose affinity target is still queued waits for it;
    /// workloads evicted by a preemption are queued again (keeping their
    /// age) and get their own [`Scheduled`]. Load is refreshed from the
    /// inventory first.
    pub fn schedule_pending(&mut self) -> Result<Vec<Scheduled>, ScheduleError> {
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
                        outcomes.push(Scheduled {
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
                        outcomes.push(Scheduled {
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
                outcomes.push(Scheduled {
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
}
