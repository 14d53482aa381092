//! The nodes placement chooses from, behind [`NodeInventory`].
//!
//! Two implementations ship: [`LocalNode`] (this host, labels from the
//! deployment's `[node]`, load from the executor's [`ResourceMonitor`]) and
//! [`StaticInventory`] (many nodes described in a `nodes.toml`, for
//! `forgeone plan`). A cluster backend (NATS JetStream key-value: node
//! records with heartbeats, claims by compare-and-set) implements the same
//! trait; its needs shaped it:
//!
//! - node descriptions change rarely, so they carry a [`generation`] and the
//!   scheduler recompiles its label index only when it moves;
//! - committed load and measured utilisation change often, so they are read
//!   again by [`SchedulerContext::refresh_load`] without recompiling;
//! - a placement is a [`claim`] that can *fail* with
//!   [`InventoryError::Conflict`] when another scheduler took the capacity
//!   first (the scheduler then refreshes and decides again);
//! - placements made by other schedulers are visible as
//!   [`foreign_claims`], so affinity, isolation and capacity see them.
//!
//! [`generation`]: NodeInventory::generation
//! [`claim`]: NodeInventory::claim
//! [`foreign_claims`]: NodeInventory::foreign_claims
//! [`SchedulerContext::refresh_load`]: super::SchedulerContext::refresh_load

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use uuid::Uuid;

use super::resources::ResourceMonitor;
use super::types::NodeId;
use crate::identity::{Priority, TrustLevel};

/// Amounts of the resources placement reserves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Capacity {
    /// CPU in thousandths of a core.
    pub cpu_millis: u64,
    /// Memory in bytes.
    pub memory: u64,
    /// Storage in bytes.
    pub storage: u64,
    /// Containers.
    pub containers: u32,
}

/// One node: where it is, what it has, how loaded and how trusted it is.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Node {
    /// Unique name.
    pub id: NodeId,
    /// Region (`eu-west`).
    pub region: String,
    /// Zone within the region (`eu-west-1a`).
    pub zone: String,
    /// Hardware labels (`x86_64`, `gpu`, `avx512`).
    pub hardware: BTreeSet<String>,
    /// Network labels (`public`, `10gbe`).
    pub network: BTreeSet<String>,
    /// Custom labels (`disk = "ssd"`).
    pub labels: BTreeMap<String, String>,
    /// What the node offers to containers.
    pub capacity: Capacity,
    /// Load committed on the node outside this scheduler's claims.
    pub used: Capacity,
    /// Measured CPU utilisation (0.0..=1.0), when the node reports one.
    pub utilisation: Option<f64>,
    /// How far the node itself is trusted.
    pub trust: TrustLevel,
}

impl Node {
    /// A node named `id` in `region`/`zone` with `capacity`, no labels, no
    /// load, trust `Medium`.
    pub fn new(
        id: impl Into<NodeId>,
        region: impl Into<String>,
        zone: impl Into<String>,
        capacity: Capacity,
    ) -> Node {
        Node {
            id: id.into(),
            region: region.into(),
            zone: zone.into(),
            hardware: BTreeSet::new(),
            network: BTreeSet::new(),
            labels: BTreeMap::new(),
            capacity,
            used: Capacity::default(),
            utilisation: None,
            trust: TrustLevel::Medium,
        }
    }

    /// Adds a hardware label.
    pub fn hardware(&mut self, label: impl Into<String>) -> &mut Self {
        self.hardware.insert(label.into());
        self
    }

    /// Adds a network label.
    pub fn network(&mut self, label: impl Into<String>) -> &mut Self {
        self.network.insert(label.into());
        self
    }

    /// Sets a custom label.
    pub fn label(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Sets the node's trust (default `Medium`).
    pub fn trust(&mut self, level: TrustLevel) -> &mut Self {
        self.trust = level;
        self
    }

    /// Sets the load committed outside this scheduler (default none).
    pub fn used(&mut self, used: Capacity) -> &mut Self {
        self.used = used;
        self
    }

    /// Finishes a `&mut` chain.
    pub fn build(&mut self) -> Node {
        self.clone()
    }
}

/// A placement holding resources on a node, as recorded in the inventory.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Claim {
    /// The placed workload.
    pub workload: Uuid,
    /// Its name.
    pub name: String,
    /// Its tenant.
    pub tenant: String,
    /// Its priority.
    pub priority: Priority,
    /// Its workload labels (affinity terms select on them).
    pub labels: BTreeMap<String, String>,
    /// Its signer key ids.
    pub signers: Vec<String>,
    /// Its anti-affinity terms (so later placements keep away).
    pub anti_affinity: Vec<String>,
    /// Whether its tenant asked for tenant isolation.
    pub isolate_tenant: bool,
    /// Whether its tenant asked for signer isolation.
    pub isolate_signer: bool,
    /// The node.
    pub node: NodeId,
    /// What it reserves.
    pub reserved: Capacity,
}

/// Errors of a node inventory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InventoryError {
    /// A claim or release named a node the inventory does not have.
    #[error("unknown node `{0}`")]
    UnknownNode(NodeId),
    /// Another scheduler claimed the capacity first; refresh and retry.
    #[error("claim on node `{node}` lost a race: {reason}")]
    Conflict {
        /// The node.
        node: NodeId,
        /// What changed.
        reason: String,
    },
    /// The inventory backend cannot be reached.
    #[error("node inventory unavailable: {source}")]
    Unavailable {
        /// The backend's own error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The nodes placement chooses from. See the module docs for why each
/// method exists.
pub trait NodeInventory: Send + Sync + fmt::Debug {
    /// Changes whenever a node joins, leaves, or changes its labels,
    /// capacity or trust; the scheduler recompiles its index when it does.
    fn generation(&self) -> u64;

    /// Every node, with capacity and the load committed outside this
    /// scheduler's claims.
    fn nodes(&self) -> Result<Vec<Node>, InventoryError>;

    /// Records a placement. May fail with [`InventoryError::Conflict`].
    fn claim(&self, claim: &Claim) -> Result<(), InventoryError>;

    /// Gives a placement's resources back (no-op if unknown).
    fn release(&self, node: &NodeId, workload: Uuid) -> Result<(), InventoryError>;

    /// Placements made by other schedulers. Local and static inventories
    /// have none.
    fn foreign_claims(&self) -> Result<Vec<Claim>, InventoryError> {
        Ok(Vec::new())
    }
}

/// A fixed set of nodes (for `forgeone plan`, read from a `nodes.toml`
/// by [`crate::deployment::read_nodes`]).
#[derive(Debug)]
pub struct StaticInventory {
    nodes: Vec<Node>,
    ids: HashSet<NodeId>,
    claims: Mutex<HashMap<Uuid, NodeId>>,
}

impl StaticInventory {
    /// An inventory of `nodes`.
    pub fn new(nodes: Vec<Node>) -> StaticInventory {
        StaticInventory {
            ids: nodes.iter().map(|n| n.id.clone()).collect(),
            nodes,
            claims: Mutex::new(HashMap::new()),
        }
    }

    /// Placements recorded through [`NodeInventory::claim`].
    pub fn claimed(&self) -> usize {
        self.claims.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl NodeInventory for StaticInventory {
    fn generation(&self) -> u64 {
        1
    }

    fn nodes(&self) -> Result<Vec<Node>, InventoryError> {
        Ok(self.nodes.clone())
    }

    fn claim(&self, claim: &Claim) -> Result<(), InventoryError> {
        if !self.ids.contains(&claim.node) {
            return Err(InventoryError::UnknownNode(claim.node.clone()));
        }
        self.claims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(claim.workload, claim.node.clone());
        Ok(())
    }

    fn release(&self, _node: &NodeId, workload: Uuid) -> Result<(), InventoryError> {
        self.claims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&workload);
        Ok(())
    }
}

/// This host as the only node: labels from configuration, utilisation from
/// the executor (through a [`ResourceMonitor`]).
#[derive(Debug)]
pub struct LocalNode {
    node: Node,
    monitor: ResourceMonitor,
    claims: Mutex<HashMap<Uuid, Capacity>>,
    generation: AtomicU64,
}

impl LocalNode {
    /// The local node described by `node`, measured by `monitor`.
    pub fn new(node: Node, monitor: ResourceMonitor) -> LocalNode {
        LocalNode {
            node,
            monitor,
            claims: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(1),
        }
    }

    /// The monitor feeding this node's load.
    pub fn monitor(&self) -> &ResourceMonitor {
        &self.monitor
    }
}

impl NodeInventory for LocalNode {
    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    fn nodes(&self) -> Result<Vec<Node>, InventoryError> {
        let state = self.monitor.snapshot();
        let mut node = self.node.clone();
        node.utilisation = Some(state.cpu.utilisation);
        // Memory committed by containers this scheduler did not place (the
        // runtime's commitments minus our own claims) counts as used.
        let claimed: u64 = self
            .claims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|c| c.memory)
            .sum();
        node.used.memory = node
            .used
            .memory
            .saturating_add(state.memory.committed.saturating_sub(claimed));
        Ok(vec![node])
    }

    fn claim(&self, claim: &Claim) -> Result<(), InventoryError> {
        if claim.node != self.node.id {
            return Err(InventoryError::UnknownNode(claim.node.clone()));
        }
        self.claims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(claim.workload, claim.reserved);
        Ok(())
    }

    fn release(&self, _node: &NodeId, workload: Uuid) -> Result<(), InventoryError> {
        self.claims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&workload);
        Ok(())
    }
}
