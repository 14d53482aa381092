//! What the cluster stores in its key-value buckets, as JSON: one type per
//! bucket, each checked when read (a record from another host is input,
//! never trusted as it stands).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::identity::{Priority, TrustLevel};
use crate::scheduler::{Capacity, Node, NodeId};

/// The most CPU a node record may offer (thousandths of a core: 4,096
/// cores). A record beyond any of these bounds is ignored with the reason.
pub const MAX_NODE_CPU_MILLIS: u64 = 4096 * 1000;
/// The most memory a node record may offer (64 TiB).
pub const MAX_NODE_MEMORY: u64 = 64 << 40;
/// The most storage a node record may offer (1 PiB).
pub const MAX_NODE_STORAGE: u64 = 1 << 50;
/// The most containers a node record may offer.
pub const MAX_NODE_CONTAINERS: u32 = 100_000;
/// The longest heartbeat interval a node record may declare (5 minutes).
pub const MAX_HEARTBEAT_MS: u64 = 300_000;

/// Whether `name` may be a node id, deployment or workload name: it
/// becomes part of a key-value key, so `[A-Za-z0-9_-]`, 1 to 64 bytes.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The resources a node offers, as stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// CPU in thousandths of a core.
    pub cpu_millis: u64,
    /// Memory in bytes.
    pub memory: u64,
    /// Storage in bytes.
    pub storage: u64,
    /// Containers.
    pub containers: u32,
}

impl From<Capacity> for Resources {
    fn from(c: Capacity) -> Resources {
        Resources {
            cpu_millis: c.cpu_millis,
            memory: c.memory,
            storage: c.storage,
            containers: c.containers,
        }
    }
}

impl From<Resources> for Capacity {
    fn from(r: Resources) -> Capacity {
        Capacity {
            cpu_millis: r.cpu_millis,
            memory: r.memory,
            storage: r.storage,
            containers: r.containers,
        }
    }
}

/// A node's current load, from its kernels' `ResourceState`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Load {
    /// Containers the host runs now.
    pub containers: u32,
    /// Memory committed to them (bytes).
    pub memory: u64,
    /// CPU committed to them (thousandths of a core).
    pub cpu_millis: u64,
    /// Measured CPU utilisation of its executors (0.0..=1.0).
    pub utilisation: f64,
}

impl Load {
    /// Adds one kernel's resource state (memory and CPU committed; the
    /// highest utilisation).
    pub fn add(&mut self, state: &crate::scheduler::ResourceState) {
        self.memory = self.memory.saturating_add(state.memory.committed);
        self.cpu_millis = self.cpu_millis.saturating_add(state.cpu.committed_millis);
        self.utilisation = self.utilisation.max(state.cpu.utilisation);
    }
}

/// Whether a host is in the cluster or on its way out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Heartbeating and taking work.
    Active,
    /// Draining: its work is re-placed at once.
    Leaving,
}

/// A host's record in the `nodes` bucket (key: its id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeRecord {
    /// Node id (the key).
    pub id: String,
    /// Region.
    pub region: String,
    /// Zone.
    pub zone: String,
    /// Hardware labels.
    pub hardware: BTreeSet<String>,
    /// Network labels.
    pub network: BTreeSet<String>,
    /// Custom labels.
    pub labels: BTreeMap<String, String>,
    /// How far the node is trusted.
    pub trust: TrustLevel,
    /// What it offers to containers.
    pub capacity: Resources,
    /// What it runs now.
    pub load: Load,
    /// Active or leaving.
    pub state: NodeState,
    /// When the host last wrote the record.
    pub heartbeat: DateTime<Utc>,
    /// How often it writes it (milliseconds).
    pub heartbeat_ms: u64,
}

impl NodeRecord {
    /// The record of `node`, heartbeating every `heartbeat_ms`, now.
    pub fn of(node: &Node, heartbeat_ms: u64) -> NodeRecord {
        NodeRecord {
            id: node.id.to_string(),
            region: node.region.clone(),
            zone: node.zone.clone(),
            hardware: node.hardware.clone(),
            network: node.network.clone(),
            labels: node.labels.clone(),
            trust: node.trust,
            capacity: node.capacity.into(),
            load: Load::default(),
            state: NodeState::Active,
            heartbeat: Utc::now(),
            heartbeat_ms,
        }
    }

    /// Why the record cannot be used for placement, if it cannot: a bad
    /// id, or capacity or a heartbeat beyond sane bounds.
    pub fn problem(&self, key: &str) -> Option<String> {
        let c = &self.capacity;
        if self.id != key {
            return Some(format!("record for `{}` stored under `{key}`", self.id));
        }
        if !valid_name(&self.id) {
            return Some(format!(
                "node id `{}` is not [A-Za-z0-9_-]{{1,64}}",
                self.id
            ));
        }
        if c.cpu_millis > MAX_NODE_CPU_MILLIS {
            return Some(format!(
                "absurd capacity: cpu {} cores (at most {})",
                c.cpu_millis / 1000,
                MAX_NODE_CPU_MILLIS / 1000
            ));
        }
        if c.memory > MAX_NODE_MEMORY {
            return Some(format!(
                "absurd capacity: memory {} bytes (at most {MAX_NODE_MEMORY})",
                c.memory
            ));
        }
        if c.storage > MAX_NODE_STORAGE {
            return Some(format!(
                "absurd capacity: storage {} bytes (at most {MAX_NODE_STORAGE})",
                c.storage
            ));
        }
        if c.containers > MAX_NODE_CONTAINERS {
            return Some(format!(
                "absurd capacity: {} containers (at most {MAX_NODE_CONTAINERS})",
                c.containers
            ));
        }
        if self.heartbeat_ms == 0 || self.heartbeat_ms > MAX_HEARTBEAT_MS {
            return Some(format!(
                "heartbeat interval {} ms is outside 1..={MAX_HEARTBEAT_MS}",
                self.heartbeat_ms
            ));
        }
        None
    }

    /// Whether the host has missed three heartbeats at `now`.
    pub fn lost(&self, now: DateTime<Utc>) -> bool {
        let age = now.signed_duration_since(self.heartbeat);
        age.num_milliseconds() > 3 * self.heartbeat_ms as i64
    }

    /// The placement node this record describes. Placement reserves what
    /// workloads request, so the node is offered with no outside load: the
    /// same nodes and deployments always plan the same way, and load noise
    /// never moves running work.
    pub fn node(&self) -> Node {
        let mut node = Node::new(
            NodeId::new(self.id.as_str()),
            self.region.clone(),
            self.zone.clone(),
            self.capacity.into(),
        );
        node.trust(self.trust);
        node.hardware = self.hardware.clone();
        node.network = self.network.clone();
        node.labels = self.labels.clone();
        node
    }
}

/// A stored component: its bytes and its signature envelope, each an
/// object named by its blake3 digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentRef {
    /// blake3 of the component's bytes (hex): object `component.<hex>`.
    pub component: String,
    /// blake3 of the envelope's bytes (hex): object `envelope.<hex>`.
    pub envelope: String,
    /// The component's size in bytes.
    pub size: u64,
}

/// What the operator asked a workload to be.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Desired {
    /// Run it (the default).
    #[default]
    Running,
    /// Stop it and keep it stopped.
    Stopped,
    /// Pause it.
    Paused,
}

/// A deployment's desired state in the `deployments` bucket (key: its
/// name).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentRecord {
    /// The deployment's name.
    pub name: String,
    /// The file name it was deployed from (for messages).
    pub file: String,
    /// The `forgeone.toml` text, exactly as deployed.
    pub source: String,
    /// Each workload's component, by workload name.
    pub components: BTreeMap<String, ComponentRef>,
    /// The deploy keys' DSSE envelope over a [`DeploymentStatement`] of
    /// this record (its exact JSON text); `None` when deployed unsigned,
    /// which every host refuses.
    pub signature: Option<String>,
    /// Workloads the operator stopped or paused (absent: running). Not
    /// covered by the signature.
    #[serde(default)]
    pub desired: BTreeMap<String, Desired>,
    /// When it was deployed.
    pub deployed_at: DateTime<Utc>,
}

/// The DSSE payload type of a signed deployment.
pub const DEPLOYMENT_PAYLOAD_TYPE: &str = "application/vnd.forgeone.deployment.v1+json";

/// What a deploy key signs: the deployment's name, the blake3 of its
/// `forgeone.toml` text and each workload's component and envelope digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentStatement {
    /// The deployment's name.
    pub name: String,
    /// blake3 (hex) of the `forgeone.toml` text.
    pub source_blake3: String,
    /// Each workload's component, by workload name.
    pub components: BTreeMap<String, ComponentRef>,
}

impl DeploymentRecord {
    /// The statement a deploy key signs for this record.
    pub fn statement(&self) -> DeploymentStatement {
        DeploymentStatement {
            name: self.name.clone(),
            source_blake3: blake3::hash(self.source.as_bytes()).to_hex().to_string(),
            components: self.components.clone(),
        }
    }

    /// What the operator asked `workload` to be.
    pub fn desired(&self, workload: &str) -> Desired {
        self.desired.get(workload).copied().unwrap_or_default()
    }
}

/// The key of one replica of a workload: `<deployment>.<workload>.<replica>`
/// (the names are [`valid_name`]s, so the dots split it back).
pub fn replica_key(deployment: &str, workload: &str, replica: u32) -> String {
    format!("{deployment}.{workload}.{replica}")
}

/// A placement decision in the `assignments` bucket (key:
/// [`replica_key`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assignment {
    /// The deployment.
    pub deployment: String,
    /// The workload.
    pub workload: String,
    /// Which copy (0 for a workload without replicas).
    pub replica: u32,
    /// The workload's priority.
    pub priority: Priority,
    /// The node it runs on; `None` when no node fits.
    pub node: Option<String>,
    /// Why it is not placed, when it is not.
    pub reason: Option<String>,
    /// The scheduler's explanation (how many nodes fit, what rejected the rest).
    pub explanation: String,
    /// Raised each time the decision changes; a host runs only the epoch
    /// it was last given.
    pub epoch: u64,
    /// The lease holder that decided.
    pub leader: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// A replica's state in the `status` bucket (key: [`replica_key`]),
/// written by the host it was assigned to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusRecord {
    /// The reporting host.
    pub node: String,
    /// The assignment's epoch this is about.
    pub epoch: u64,
    /// `starting`, `running`, `paused`, `exited`, `failed`, `stopped`,
    /// `quarantined` or `refused`.
    pub state: String,
    /// Restarts so far.
    pub restarts: u32,
    /// The last run's exit code, once it exited.
    pub exit_code: Option<i32>,
    /// Why it is refused, failed or stopped.
    pub reason: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

/// The scheduler lease in the `lease` bucket (key `scheduler`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lease {
    /// The host holding it.
    pub holder: String,
    /// Until when, unless renewed.
    pub expires: DateTime<Utc>,
    /// Raised each time the lease changes hands.
    pub term: u64,
}
