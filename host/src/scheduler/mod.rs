//! Smart scheduling: which node a workload runs on ([`SchedulerContext`]),
//! and how the node's cores are shared among containers (the executor,
//! crate-private: the [`Kernel`](crate::Kernel) runs containers on it).
//!
//! # Placement: filter, then score
//!
//! Nodes come from a [`NodeInventory`] ([`LocalNode`], [`StaticInventory`],
//! later a cluster backend). [`SchedulerContext::schedule_workload`] runs,
//! for one [`Workload`]:
//!
//! 1. **Policy** ([`PolicySet`](crate::PolicySet)): unknown tenant, priority
//!    above the tenant's cap (refused, never lowered), container and CPU
//!    quotas. A refusal is a `policy.denied` event.
//! 2. **Filters** that remove nodes, in this order: the tenant's allowed
//!    locations; location patterns (`eu-*`); hardware and network labels;
//!    node-label selectors (`disk in (ssd, nvme)`, `!spot`); affinity and
//!    anti-affinity to other workloads (symmetric: a placed workload's
//!    anti-affinity also keeps newcomers away); isolation (tenant or
//!    signer); capacity (CPU, memory, storage, container count).
//! 3. **Scores** for the survivors, each part 0..=100 and weighted
//!    ([`ScoreWeights`]): least loaded after placement (measured
//!    utilisation counts on the local node), CPU/memory balance, spread
//!    across zones of the workload's group (its `app` label, else its
//!    tenant), preferred constraints, node trust. The best node wins; ties
//!    go to the earlier node in the inventory.
//! 4. **Preemption** when no node fits only for lack of capacity: a
//!    workload may evict strictly lower-priority work if its identity's
//!    trust is at least [`PolicySet::min_trust_to_preempt`](crate::PolicySet::min_trust_to_preempt)
//!    (default `medium`); the victims are the smallest set on the best node
//!    (see the docs of the victim search in the source). Each eviction is a
//!    `schedule.preempted` event naming both parties.
//!
//! Every [`Allocation`] carries an [`Explanation`]: how many nodes each
//! reason removed (the node names on demand), and the top scores; an
//! unschedulable workload's [`ScheduleError::Unschedulable`] carries the same.
//!
//! Filters run on node bitmaps: each distinct constraint text is compiled
//! once into the set of nodes it allows (labels are indexed when the
//! inventory is loaded), so a decision costs a few word-wise ANDs plus one
//! pass over the surviving nodes, with no allocation per node.
//!
//! # Contention
//!
//! [`SchedulerContext::submit`] queues work; [`SchedulerContext::schedule_pending`]
//! places it by priority, then trust ([`TrustVector`](crate::TrustVector)
//! order), then age.
//!
//! On the node, the executor (a work-stealing pool, one worker per core by
//! default) runs each container in the lane of its priority class and
//! trust level, and picks the lane to serve at every fuel yield by
//! two-level stride scheduling. While classes contend, each gets CPU in
//! proportion to its weight, **Critical 16 : High 8 : Normal 4 : Low 2 :
//! Background 1** (with all five contending, Critical ≈ 51.6 %, Background
//! ≈ 3.2 %); within a class, trust levels share by **System 8 : High 6 :
//! Medium 4 : Low 2 : Untrusted 1**. No runnable class starves (Background
//! is served at least once every 31 slices per worker), and a critical
//! container that becomes runnable waits at most about one slice (one fuel
//! interval of whatever runs there). [`CpuState`] reports each class's
//! busy time and share.
//!
//! # Events
//!
//! [`ScheduleEvent`]: `schedule.placed`, `schedule.unschedulable`,
//! `schedule.preempted`, `schedule.released`, `policy.denied`.

mod context;
mod events;
mod executor;
mod inventory;
mod placement;
mod resources;
mod selector;
mod types;

pub use context::{Scheduled, SchedulerContext};
pub use events::{Party, Rejection, ScheduleEvent};
pub(crate) use executor::{Executor, SpawnOptions};
pub use inventory::{
    Capacity, Claim, InventoryError, LocalNode, Node, NodeInventory, StaticInventory,
};
pub use placement::{
    Allocation, Explanation, NodeScore, Reason, RejectGroup, ScoreParts, ScoreWeights,
};
pub use resources::{CommitGuard, Commitment, ResourceMonitor};
pub use selector::{AffinityTerm, LabelSelector, LocationPattern, SelectorOp};
pub use types::{
    Constraint, ConstraintType, CpuState, MemoryState, NetworkState, NodeId, ResourceRequirements,
    ResourceState, SchedulerMetrics, StorageState, Workload,
};

use uuid::Uuid;

use crate::audit::AuditError;
use crate::identity::Priority;

/// Errors of the scheduler.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScheduleError {
    /// No node fits; the explanation says which nodes each reason removed.
    #[error("workload `{workload}` is unschedulable: {explanation}")]
    Unschedulable {
        /// The workload's name.
        workload: String,
        /// Why.
        explanation: Box<Explanation>,
    },
    /// The workload's tenant has no policy.
    #[error("workload `{workload}`: unknown tenant `{tenant}` (no policy)")]
    UnknownTenant {
        /// The workload's name.
        workload: String,
        /// The tenant.
        tenant: String,
    },
    /// The workload asked for a priority above its tenant's cap (refused,
    /// not lowered).
    #[error(
        "workload `{workload}`: priority `{requested}` is above tenant `{tenant}`'s cap `{cap}`"
    )]
    PriorityAboveCap {
        /// The workload's name.
        workload: String,
        /// The tenant.
        tenant: String,
        /// What it asked for.
        requested: Priority,
        /// The cap.
        cap: Priority,
    },
    /// A tenant quota would be exceeded.
    #[error("workload `{workload}`: tenant `{tenant}` quota `{quota}` exceeded: {detail}")]
    QuotaExceeded {
        /// The workload's name.
        workload: String,
        /// The tenant.
        tenant: String,
        /// `max_containers` or `cpu_share`.
        quota: &'static str,
        /// The numbers.
        detail: String,
    },
    /// A constraint could not be understood.
    #[error("workload `{workload}`: constraint `{constraint}`: {reason}")]
    InvalidConstraint {
        /// The workload's name.
        workload: String,
        /// The constraint text.
        constraint: String,
        /// What is wrong.
        reason: String,
    },
    /// A tenant policy could not be understood.
    #[error("tenant `{tenant}` policy: {reason}")]
    InvalidPolicy {
        /// The tenant.
        tenant: String,
        /// What is wrong.
        reason: String,
    },
    /// A workload with this id is already placed.
    #[error("workload `{workload}` ({id}) is already placed")]
    DuplicateWorkload {
        /// The workload's name.
        workload: String,
        /// Its id.
        id: Uuid,
    },
    /// No placement has this id.
    #[error("no placed workload with id {0}")]
    UnknownWorkload(Uuid),
    /// The node inventory failed.
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    /// The audit log refused the event (the decision was not applied).
    #[error("audit: {0}")]
    Audit(#[from] AuditError),
    /// A task was pinned to a worker that does not exist.
    #[error("no worker {worker}: the executor has {workers}")]
    NoSuchWorker {
        /// The requested worker.
        worker: usize,
        /// Workers available.
        workers: usize,
    },
    /// The executor could not start: its own tokio runtime or a worker
    /// thread could not be created.
    #[error("executor: {what}: {source}")]
    Executor {
        /// What could not be started.
        what: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}
