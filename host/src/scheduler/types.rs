//! The core spec's scheduling vocabulary: [`Workload`],
//! [`ResourceRequirements`], [`Constraint`], [`ConstraintType`],
//! [`ResourceState`] and [`SchedulerMetrics`].

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use uuid::Uuid;

use crate::identity::{IdentityContext, Priority};

/// A node's name, cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(Arc<str>);

impl NodeId {
    /// A node id from its name.
    pub fn new(name: impl Into<Arc<str>>) -> NodeId {
        NodeId(name.into())
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", &self.0)
    }
}

impl From<&str> for NodeId {
    fn from(s: &str) -> Self {
        NodeId::new(s)
    }
}

impl From<String> for NodeId {
    fn from(s: String) -> Self {
        NodeId::new(s)
    }
}

impl PartialEq<str> for NodeId {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for NodeId {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl Serialize for NodeId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// What a workload needs from the node it runs on.
///
/// CPU and memory are reserved on the chosen node (placement refuses nodes
/// without room); fuel and timeout are limits the runtime enforces.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ResourceRequirements {
    /// CPU in thousandths of a core (`500` = half a core). Default 100.
    pub cpu_millis: u32,
    /// Memory limit in bytes (reserved on the node). Default 64 MiB.
    pub memory: u64,
    /// Storage granted (preopened directories' quota) in bytes. Default 0.
    pub storage: u64,
    /// Fuel per run, if metered. Default none.
    pub fuel: Option<u64>,
    /// Wall-clock deadline per run. Default none.
    pub timeout: Option<Duration>,
    /// Whether the workload is granted network access. Default false.
    pub network: bool,
}

impl Default for ResourceRequirements {
    fn default() -> Self {
        ResourceRequirements {
            cpu_millis: 100,
            memory: 64 << 20,
            storage: 0,
            fuel: None,
            timeout: None,
            network: false,
        }
    }
}

impl ResourceRequirements {
    /// `cpu_millis` thousandths of a core and `memory` bytes, the rest default.
    pub fn new(cpu_millis: u32, memory: u64) -> Self {
        ResourceRequirements {
            cpu_millis,
            memory,
            ..Default::default()
        }
    }

    /// Sets the storage grant in bytes (default 0).
    pub fn storage(&mut self, bytes: u64) -> &mut Self {
        self.storage = bytes;
        self
    }

    /// Sets the fuel limit (default none).
    pub fn fuel(&mut self, fuel: u64) -> &mut Self {
        self.fuel = Some(fuel);
        self
    }

    /// Sets the wall-clock deadline (default none).
    pub fn timeout(&mut self, timeout: Duration) -> &mut Self {
        self.timeout = Some(timeout);
        self
    }

    /// Grants network access (default false).
    pub fn network(&mut self, granted: bool) -> &mut Self {
        self.network = granted;
        self
    }
}

/// What a [`Constraint`] restricts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ConstraintType {
    /// The node's region or zone matches a pattern: `eu-*`, `eu-west`,
    /// `eu-west-1a`; alternatives separated by commas (`eu-*,us-east-1a`).
    Location,
    /// The node has a hardware label (`gpu`, `avx512`, `sgx`).
    Hardware,
    /// The node has a network label (`public`, `10gbe`).
    Network,
    /// The node already runs a workload matching the value: a workload name
    /// (`db`) or a workload-label selector with `=` or `in` (`app=db`).
    Affinity,
    /// The node runs no workload matching the value (same forms as
    /// `Affinity`). Symmetric: nothing matching is placed next to it later.
    AntiAffinity,
    /// `Custom("label")`: a selector over the node's custom labels, with the
    /// operators In, NotIn, Exists and DoesNotExist: `disk=ssd`,
    /// `disk in (ssd, nvme)`, `tier notin (spot)`, `!spot`, `gpu-model`.
    /// Other custom kinds are refused as unknown.
    Custom(String),
}

impl ConstraintType {
    /// The kind as written in explanations (`location`, `label`, ...).
    pub fn name(&self) -> &str {
        match self {
            ConstraintType::Location => "location",
            ConstraintType::Hardware => "hardware",
            ConstraintType::Network => "network",
            ConstraintType::Affinity => "affinity",
            ConstraintType::AntiAffinity => "anti_affinity",
            ConstraintType::Custom(kind) => kind,
        }
    }
}

/// A placement rule. Required (a hard filter) unless `preferred` is set,
/// in which case matching nodes score higher by that weight.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Constraint {
    /// What is constrained.
    pub constraint_type: ConstraintType,
    /// The rule's text (see [`ConstraintType`] for each form).
    pub value: String,
    /// `None` for a hard constraint; `Some(weight)` (1..=100) for a
    /// preference.
    pub preferred: Option<u32>,
}

impl Constraint {
    /// A hard constraint.
    pub fn new(constraint_type: ConstraintType, value: impl Into<String>) -> Constraint {
        Constraint {
            constraint_type,
            value: value.into(),
            preferred: None,
        }
    }

    /// A hard location constraint (`eu-*`).
    pub fn location(pattern: impl Into<String>) -> Constraint {
        Constraint::new(ConstraintType::Location, pattern)
    }

    /// A hard hardware constraint (`gpu`).
    pub fn hardware(label: impl Into<String>) -> Constraint {
        Constraint::new(ConstraintType::Hardware, label)
    }

    /// A hard network constraint (`public`).
    pub fn network(label: impl Into<String>) -> Constraint {
        Constraint::new(ConstraintType::Network, label)
    }

    /// A hard node-label selector (`disk in (ssd, nvme)`).
    pub fn label(selector: impl Into<String>) -> Constraint {
        Constraint::new(ConstraintType::Custom("label".into()), selector)
    }

    /// Co-locate with workloads matching `term`.
    pub fn affinity(term: impl Into<String>) -> Constraint {
        Constraint::new(ConstraintType::Affinity, term)
    }

    /// Stay off nodes running workloads matching `term`.
    pub fn anti_affinity(term: impl Into<String>) -> Constraint {
        Constraint::new(ConstraintType::AntiAffinity, term)
    }

    /// Turns this into a preference with `weight` (clamped to 1..=100).
    pub fn prefer(mut self, weight: u32) -> Constraint {
        self.preferred = Some(weight.clamp(1, 100));
        self
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} `{}`", self.constraint_type.name(), self.value)?;
        if let Some(w) = self.preferred {
            write!(f, " (preferred, weight {w})")?;
        }
        Ok(())
    }
}

/// A unit of work to place: what it is, how urgent, who runs it, what it
/// needs and where it may go.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Workload {
    /// Unique id.
    pub id: Uuid,
    /// The deployment's name for it (affinity terms and explanations use it).
    pub name: String,
    /// How urgent it is.
    pub priority: Priority,
    /// Who it runs as.
    pub identity: IdentityContext,
    /// What it needs.
    pub resource_requirements: ResourceRequirements,
    /// Where it may (or prefers to) go.
    pub constraints: Vec<Constraint>,
    /// Workload labels other workloads' affinity terms select on
    /// (`app = "web"`). The `app` label also groups workloads for
    /// topology spread (else the tenant does).
    pub labels: BTreeMap<String, String>,
    /// Key ids of the trust-anchor keys whose signatures verified the
    /// component (signer isolation groups by this set). Empty when unknown.
    pub signers: Vec<String>,
}

impl Workload {
    /// A workload named `name` with a fresh id, default requirements and no
    /// constraints, labels or signers.
    pub fn new(name: impl Into<String>, priority: Priority, identity: IdentityContext) -> Workload {
        Workload {
            id: Uuid::new_v4(),
            name: name.into(),
            priority,
            identity,
            resource_requirements: ResourceRequirements::default(),
            constraints: Vec::new(),
            labels: BTreeMap::new(),
            signers: Vec::new(),
        }
    }

    /// Adds a constraint.
    pub fn constraint(&mut self, constraint: Constraint) -> &mut Self {
        self.constraints.push(constraint);
        self
    }

    /// Sets the requirements (default [`ResourceRequirements::default`]).
    pub fn requirements(&mut self, requirements: ResourceRequirements) -> &mut Self {
        self.resource_requirements = requirements;
        self
    }

    /// Adds a workload label.
    pub fn label(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Sets the signer key ids (default none).
    pub fn signers(&mut self, signers: impl IntoIterator<Item = impl Into<String>>) -> &mut Self {
        self.signers = signers.into_iter().map(Into::into).collect();
        self
    }

    /// Clones the workload (builder finish for `&mut` chains).
    pub fn build(&mut self) -> Workload {
        self.clone()
    }
}

/// What a node has in use, as the spec's `ResourceState`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ResourceState {
    /// CPU: executor busy time per class.
    pub cpu: CpuState,
    /// Memory committed to containers.
    pub memory: MemoryState,
    /// Storage granted to containers.
    pub storage: StorageState,
    /// Network grants.
    pub network: NetworkState,
}

/// CPU in use on a node.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CpuState {
    /// Worker threads (cores) of the executor.
    pub cores: u32,
    /// Fraction of all cores busy running tasks since the previous
    /// snapshot (0.0..=1.0).
    pub utilisation: f64,
    /// Each class's share of the busy time since the previous snapshot,
    /// indexed Critical, High, Normal, Low, Background (sums to 1 when busy).
    pub class_share: [f64; 5],
    /// Cumulative busy time per class since the executor started.
    pub busy: [Duration; 5],
    /// CPU reserved by running containers, in thousandths of a core.
    pub committed_millis: u64,
}

/// Memory on a node.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MemoryState {
    /// Memory the node offers to containers, in bytes.
    pub total: u64,
    /// Sum of the running containers' memory limits, in bytes.
    pub committed: u64,
}

/// Storage on a node.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StorageState {
    /// Storage the node offers, in bytes.
    pub total: u64,
    /// Storage granted to running containers, in bytes.
    pub granted: u64,
}

/// Network on a node.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NetworkState {
    /// Running containers granted network access.
    pub granted: u32,
}

/// Counters of the scheduler's decisions.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SchedulerMetrics {
    /// Placement decisions made (placed + unschedulable).
    pub decisions: u64,
    /// Workloads placed.
    pub placed: u64,
    /// Workloads found unschedulable.
    pub unschedulable: u64,
    /// Workloads evicted to make room for higher-priority ones.
    pub preemptions: u64,
    /// Workloads refused by policy (priority cap, quota, unknown tenant).
    pub denied: u64,
    /// Nodes that reached the scoring stage, summed over decisions.
    pub nodes_scored: u64,
    /// Time spent deciding, summed.
    pub decision_time: Duration,
}

impl SchedulerMetrics {
    /// Decisions per second of deciding time (0 before the first decision).
    pub fn decisions_per_second(&self) -> f64 {
        let secs = self.decision_time.as_secs_f64();
        if secs == 0.0 {
            0.0
        } else {
            self.decisions as f64 / secs
        }
    }
}
