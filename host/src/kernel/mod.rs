//! The kernel: the audit log, the runtime, the scheduler and the executor
//! wired into one object, as `forgeone up` and an embedding service use
//! them.
//!
//! Data flow for one workload ([`Kernel::submit`], then
//! [`Kernel::schedule`]):
//!
//! 1. The caller brings a [`Workload`] (priority, identity, requirements,
//!    constraints) and a [`ContainerConfig`] whose component is a
//!    [`VerifiedComponent`](crate::boot::VerifiedComponent): only bytes that
//!    passed the boot or a per-component check reach the runtime.
//! 2. **Trust is derived, never claimed.** On submit the kernel sets the
//!    workload's signers from its verified component and its trust level
//!    from its tenant's policy; unsigned code is always `untrusted`. The
//!    caller's own `identity.trust` and `signers` are ignored, so a claim
//!    cannot buy preemption, an earlier place in the queue or a faster
//!    executor lane. A container granted network access needs a tenant
//!    whose policy grants it.
//! 3. [`SchedulerContext::schedule_pending`] places every queued workload on
//!    the local node by priority, trust and age (policy, constraints,
//!    capacity, preemption), each decision audited (`schedule.*`,
//!    `policy.denied`).
//! 4. A placed workload's container is prepared by the [`Runtime`]
//!    (compiled once per digest, `container.created`), its resources are
//!    committed to the node's [`ResourceMonitor`] (which feeds the next
//!    placement's load score), and its future is spawned on the
//!    work-stealing executor in the lane of its priority class and derived
//!    trust. No path of the kernel runs a container outside those lanes:
//!    [`Kernel::start`], [`Kernel::stop`], [`Kernel::pause`],
//!    [`Kernel::resume`] and [`Kernel::release`] act through the same
//!    placement and executor. (A [`Runtime`] used on its own, as
//!    `forgeone run` does, runs its containers on tokio.)
//! 5. When the container's task ends (stopped, or failed for good) its
//!    resources are given back and its placement is released
//!    (`schedule.released`). A quarantined container keeps both until it is
//!    released or stopped. A workload evicted by preemption has its
//!    container stopped and is queued again.
//! 6. **Boot assessment.** When the kernel was given the [`BootContext`]
//!    its components came from, a container that runs healthily (its run
//!    exits 0, or keeps running for [`KernelConfig::healthy_after`])
//!    confirms its component as last-known-good in the boot state; one
//!    that crash-loops into quarantine or fails counts a failed start
//!    ([`BootState::record_start`](crate::boot::BootState::record_start)),
//!    so recovery works for an embedder exactly as for `forgeone up`.
//!
//! Fail closed: the scheduler refuses to place and the runtime refuses to
//! create containers while the audit log cannot be written, so nothing runs
//! unaudited. A container's run starts only once its `container.created`
//! and `container.started` records are durable (written and fsynced: one
//! group-committed flush per start), and when the log fails while
//! containers run, they are stopped (the default) or paused until it can
//! be written again ([`KernelConfig::on_audit_failure`]); a stopped run
//! fails with [`Failure::AuditUnavailable`](crate::runtime::Failure::AuditUnavailable).
//!
//! A kernel that runs for days stays flat: the tasks of settled containers
//! are dropped as new ones start, each container keeps a bounded history,
//! and [`Kernel::remove`] forgets a settled workload.
//!
//! A deployment file runs with a handful of calls (see
//! [`Kernel::from_deployment`]); workloads can also be submitted one by one:
//!
//! ```no_run
//! # async fn demo(audit: forgeone::audit::AuditLog, component: forgeone::boot::VerifiedComponent)
//! #     -> Result<(), forgeone::kernel::KernelError> {
//! use forgeone::kernel::{Kernel, KernelConfig};
//! use forgeone::runtime::ContainerConfig;
//! use forgeone::scheduler::{Capacity, Node, Workload};
//! use forgeone::{IdentityContext, PolicySet, Priority, TrustVector};
//!
//! let cap = Capacity { cpu_millis: 2000, memory: 1 << 30, storage: 0, containers: 100 };
//! let node = Node::new("local", "eu-west", "eu-west-1a", cap);
//! let kernel = Kernel::new(KernelConfig::new(node, PolicySet::permissive()), audit)?;
//! // The trust in the identity is ignored: the kernel derives it.
//! let identity = IdentityContext::new("acme", "api", TrustVector::default());
//! let workload = Workload::new("api", Priority::Critical, identity);
//! kernel.submit(workload, ContainerConfig::new(component))?;
//! let report = kernel.schedule()?;
//! for launched in &report.launched {
//!     println!("{} runs as container {}", launched.name, launched.container);
//! }
//! kernel.wait_settled().await;
//! kernel.drain("done", std::time::Duration::from_secs(5))?;
//! kernel.wait().await;
//! kernel.shutdown("done");
//! # Ok(()) }
//! ```

mod assess;
mod deploy;
mod launch;
mod ops;
mod submit;
mod views;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use uuid::Uuid;

use crate::audit::{Actor, AuditError, AuditLog, Entry};
use crate::boot::{BootContext, BootOutcome};
use crate::deployment::DeploymentError;
use crate::policy::PolicySet;
use crate::runtime::{
    ContainerConfig, ContainerContext, ContainerStatus, Outcome, OutputSink, Runtime,
    RuntimeConfig, RuntimeError,
};

pub use crate::runtime::AuditFailure;
use crate::scheduler::{
    Executor, LocalNode, Node, NodeId, ResourceMonitor, ResourceState, ScheduleError,
    SchedulerContext, SpawnOptions, Workload,
};

pub use deploy::pool_size;
pub use views::{KernelEvent, Launched, NotRun, Preempted, Refused, ScheduleReport, WorkloadView};

/// Errors of the kernel.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KernelError {
    /// Placement or policy refused the work, or the executor could not start.
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    /// The runtime refused or could not create the container.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The audit log cannot be written: the kernel refuses new work.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The deployment does not fit this host (a constraint names a label
    /// the node does not have).
    #[error(transparent)]
    Deployment(#[from] DeploymentError),
    /// The boot the kernel was given is compromised: nothing runs.
    #[error("boot is {integrity}; nothing runs")]
    BootCompromised {
        /// The boot's integrity status.
        integrity: String,
    },
    /// The workload asks for network access and its tenant's policy does
    /// not grant it (audited as `policy.denied`, rule `network`).
    #[error(
        "workload `{workload}`: network access is granted by tenant policy, and tenant `{tenant}` does not grant it"
    )]
    NetworkNotGranted {
        /// The workload.
        workload: String,
        /// Its tenant.
        tenant: String,
    },
    /// No workload with this id was submitted (or it was removed).
    #[error("no workload {0}")]
    UnknownWorkload(Uuid),
    /// The request does not apply to the workload in its current state.
    #[error("cannot {action} workload `{workload}`: it is {state}")]
    IllegalTransition {
        /// The workload's name.
        workload: String,
        /// The request (`start`, `stop`, `pause`, `resume`, `release`,
        /// `remove`, `wait for`).
        action: &'static str,
        /// Where it is (`queued`, `running`, `not run`, ...).
        state: String,
    },
    /// The kernel is shutting down and takes no new work.
    #[error("the kernel is shutting down")]
    ShuttingDown,
}

/// How to build a [`Kernel`]. Every setter states its default.
#[derive(Debug)]
#[non_exhaustive]
pub struct KernelConfig {
    node: Node,
    policies: PolicySet,
    runtime: RuntimeConfig,
    workers: Option<usize>,
    output: Option<OutputSink>,
    healthy_after: Duration,
    boot: Option<BootContext>,
    on_audit_failure: Option<AuditFailure>,
}

impl KernelConfig {
    /// A kernel whose local node is `node`, placing under `policies`.
    pub fn new(node: Node, policies: PolicySet) -> KernelConfig {
        KernelConfig {
            node,
            policies,
            runtime: RuntimeConfig::new(),
            workers: None,
            output: None,
            healthy_after: Duration::from_secs(600),
            boot: None,
            on_audit_failure: None,
        }
    }

    /// The runtime's configuration (engine, unsigned code, the network
    /// master switch, compiled cache, backoff). Default:
    /// [`RuntimeConfig::new`].
    pub fn runtime(&mut self, config: RuntimeConfig) -> &mut Self {
        self.runtime = config;
        self
    }

    /// What happens to running containers when the audit log cannot be
    /// written: stopped ([`AuditFailure::Stop`], the default, as auditd's
    /// `disk_full_action`), or paused until it can
    /// ([`AuditFailure::Pause`]). Either way the kernel places and starts
    /// nothing meanwhile. Overrides
    /// [`RuntimeConfig::on_audit_failure`] when set. Default: the runtime
    /// configuration's, [`AuditFailure::Stop`] unless set there.
    pub fn on_audit_failure(&mut self, action: AuditFailure) -> &mut Self {
        self.on_audit_failure = Some(action);
        self
    }

    /// Executor worker threads. Default: one per core.
    pub fn workers(&mut self, n: usize) -> &mut Self {
        self.workers = Some(n.max(1));
        self
    }

    /// Streams every container's output lines to `sink` (each line names
    /// its container), for containers that have no sink of their own.
    /// Default: output goes only to the audit log.
    pub fn output(&mut self, sink: OutputSink) -> &mut Self {
        self.output = Some(sink);
        self
    }

    /// How long a run must keep running to count as healthy for boot
    /// assessment (a run that exits 0 is healthy at once). Default 10
    /// minutes, the supervisor's own `healthy_after`.
    pub fn healthy_after(&mut self, after: Duration) -> &mut Self {
        self.healthy_after = after.max(Duration::from_millis(1));
        self
    }

    /// The boot the kernel's components come from: a compromised boot is
    /// refused, [`Kernel::deploy`] takes each workload's component from it,
    /// and healthy or failed starts are recorded in its state (boot
    /// assessment). Default: none (components are checked by the caller,
    /// e.g. with [`ComponentCheck`](crate::boot::ComponentCheck), and
    /// nothing is assessed).
    pub fn boot(&mut self, boot: BootContext) -> &mut Self {
        self.boot = Some(boot);
        self
    }
}

/// Where a submitted workload stands.
struct Slot {
    /// As submitted, with the trust the kernel derived.
    workload: Workload,
    /// `None` when its component never verified.
    container: Option<ContainerConfig>,
    spawn: SpawnOptions,
    node: Option<NodeId>,
    /// Its container, once it got one (kept after it settles).
    running: Option<Uuid>,
    not_run: Option<NotRun>,
    /// The launch its container's current task belongs to.
    launch: u64,
    /// Whether that task has ended (placement and resources given back,
    /// boot assessment recorded). True before the first launch.
    task_done: bool,
    /// The launch whose placement the scheduler holds for it, if any.
    placement: Option<u64>,
}

impl Slot {
    fn new(
        workload: Workload,
        container: Option<ContainerConfig>,
        spawn: SpawnOptions,
        not_run: Option<NotRun>,
    ) -> Slot {
        Slot {
            workload,
            container,
            spawn,
            node: None,
            running: None,
            not_run,
            launch: 0,
            task_done: true,
            placement: None,
        }
    }
}

#[derive(Default)]
struct Book {
    entries: HashMap<Uuid, Slot>,
    order: Vec<Uuid>,
    /// Launches so far (numbers each container task).
    launches: u64,
    draining: bool,
}

/// The kernel: audit log, runtime, scheduler and executor together.
/// `Send + Sync`; share it behind an `Arc`.
pub struct Kernel {
    audit: AuditLog,
    runtime: Runtime,
    executor: Executor,
    monitor: ResourceMonitor,
    // Shared with the container tasks, which release their placement when
    // they settle; they hold no reference to the kernel itself.
    scheduler: Arc<Mutex<SchedulerContext>>,
    book: Arc<Mutex<Book>>,
    /// Woken whenever a container task ends.
    changed: Arc<Notify>,
    boot: Option<Arc<BootContext>>,
    output: Option<OutputSink>,
    healthy_after: Duration,
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernel")
            .field("audit", &self.audit.path())
            .field("executor", &self.executor)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Kernel {
    /// Starts a kernel writing every event to `audit`: the runtime (one
    /// engine), the executor's workers (inside the current tokio runtime if
    /// there is one) and a scheduler whose only node is the local one,
    /// measured by a [`ResourceMonitor`] attached to the executor. A
    /// compromised boot ([`KernelConfig::boot`]) is refused.
    pub fn new(config: KernelConfig, audit: AuditLog) -> Result<Kernel, KernelError> {
        if let Some(boot) = &config.boot
            && boot.outcome == BootOutcome::Compromised
        {
            return Err(KernelError::BootCompromised {
                integrity: boot.integrity_status.to_string(),
            });
        }
        audit.ensure_writable()?;
        let mut runtime_config = config.runtime;
        if let Some(action) = config.on_audit_failure {
            runtime_config.on_audit_failure(action);
        }
        let runtime = Runtime::new(runtime_config, audit.clone())?;
        let mut builder = Executor::builder();
        if let Some(n) = config.workers {
            builder.workers(n);
        }
        let executor = builder.build()?;
        let monitor =
            ResourceMonitor::new(config.node.capacity.memory, config.node.capacity.storage);
        monitor.attach(&executor);
        let inventory = Arc::new(LocalNode::new(config.node, monitor.clone()));
        let mut scheduler = SchedulerContext::new(inventory, config.policies)?;
        scheduler.audit(audit.clone());
        Ok(Kernel {
            audit,
            runtime,
            executor,
            monitor,
            scheduler: Arc::new(Mutex::new(scheduler)),
            book: Arc::default(),
            changed: Arc::default(),
            boot: config.boot.map(Arc::new),
            output: config.output,
            healthy_after: config.healthy_after,
        })
    }

    /// The boot the kernel's components come from, if it was given one.
    pub fn boot(&self) -> Option<&BootContext> {
        self.boot.as_deref()
    }

    /// The audit log.
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// The instance allocator its runtime uses (pooling, or on demand and
    /// why; see [`KernelConfig::from_deployment`]).
    pub fn allocation(&self) -> &crate::runtime::Allocation {
        self.runtime.allocation()
    }

    /// What the local node has in use now.
    pub fn resources(&self) -> ResourceState {
        self.monitor.snapshot()
    }

    /// Like [`Kernel::resources`], without starting a new CPU window (so
    /// an observer does not change what the scheduler and the cluster
    /// heartbeat see).
    pub fn peek_resources(&self) -> ResourceState {
        self.monitor.peek()
    }

    /// Executor worker threads.
    pub fn workers(&self) -> usize {
        self.executor.workers()
    }

    /// Every submitted workload, in submission order: where it runs and
    /// its container's current state, or why it does not run.
    pub fn workloads(&self) -> Vec<WorkloadView> {
        let book = lock(&self.book);
        book.order
            .iter()
            .filter_map(|id| book.entries.get(id).map(|e| self.view(*id, e)))
            .collect()
    }

    /// A snapshot of one of the kernel's containers (resources are live
    /// while it runs).
    pub fn container(&self, id: Uuid) -> Option<ContainerContext> {
        self.runtime.context(id)
    }

    /// One workload's view.
    pub fn workload(&self, id: Uuid) -> Option<WorkloadView> {
        let book = lock(&self.book);
        book.entries.get(&id).map(|e| self.view(id, e))
    }

    fn view(&self, id: Uuid, e: &Slot) -> WorkloadView {
        WorkloadView {
            workload: id,
            name: e.workload.name.clone(),
            priority: e.workload.priority,
            tenant: e.workload.identity.tenant.clone(),
            trust: e.workload.identity.trust.level,
            node: e.node.as_ref().map(ToString::to_string),
            container: e.running.and_then(|c| self.runtime.context(c)),
            not_run: e.not_run.clone(),
        }
    }

    /// Whether every submitted workload has settled: nothing more runs
    /// without an operator (see [`WorkloadView::settled`]). A quarantined
    /// container has settled, though its task waits for a release.
    pub fn settled(&self) -> bool {
        self.workloads().iter().all(WorkloadView::settled)
    }

    /// Waits until every started container has settled and its task has
    /// done its part (placement released, boot assessment recorded); a
    /// quarantined container counts as settled.
    pub async fn wait_settled(&self) {
        let workloads: Vec<Uuid> = lock(&self.book)
            .entries
            .iter()
            .filter(|(_, e)| e.running.is_some())
            .map(|(id, _)| *id)
            .collect();
        for w in workloads {
            // Gone (removed by an operator) counts as settled.
            let _ = self.wait_for(w).await;
        }
    }

    /// Waits until the workload's container settles (stopped, failed with
    /// no restart due, or quarantined) and, unless it is quarantined, until
    /// its task has given back its placement and resources; returns its
    /// last run's outcome. [`Kernel::start`] may follow at once.
    pub async fn wait_for(&self, workload: Uuid) -> Result<Outcome, KernelError> {
        let container = {
            let book = lock(&self.book);
            let slot = book
                .entries
                .get(&workload)
                .ok_or(KernelError::UnknownWorkload(workload))?;
            slot.running.ok_or_else(|| KernelError::IllegalTransition {
                workload: slot.workload.name.clone(),
                action: "wait for",
                state: if slot.not_run.is_some() {
                    "not run"
                } else {
                    "queued"
                }
                .to_string(),
            })?
        };
        let outcome = self.runtime.wait(container).await?;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let done = lock(&self.book)
                .entries
                .get(&workload)
                .is_none_or(|e| e.task_done);
            let quarantined = matches!(
                self.runtime.status(container),
                Ok(ContainerStatus::Quarantined(_)) | Err(_)
            );
            if done || quarantined {
                return Ok(outcome);
            }
            changed.await;
        }
    }

    /// Container tasks still alive (running, restarting, or quarantined
    /// and waiting for a release).
    pub fn live_tasks(&self) -> usize {
        lock(&self.book)
            .entries
            .values()
            .filter(|e| e.running.is_some() && !e.task_done)
            .count()
    }

    /// Whether every started container's task has ended. A quarantined
    /// container's task lives until it is released or stopped.
    pub fn idle(&self) -> bool {
        self.live_tasks() == 0
    }

    /// Waits until every started container's task has ended (stopped,
    /// failed for good, or cancelled by [`Kernel::shutdown`]); quarantined
    /// containers must be released or stopped first (see
    /// [`Kernel::drain`]). Cancelling the wait loses nothing.
    pub async fn wait(&self) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.idle() {
                return;
            }
            changed.await;
        }
    }

    /// Starts a drain: audits it (`schedule.drain` with `reason`), refuses
    /// new work, and stops every container, gracefully for `grace` and then
    /// at its next yield point. Use [`Kernel::wait`] to wait for them.
    pub fn drain(&self, reason: &str, grace: Duration) -> Result<(), KernelError> {
        let containers: Vec<Uuid> = {
            let mut book = lock(&self.book);
            book.draining = true;
            book.entries.values().filter_map(|e| e.running).collect()
        };
        let running = containers
            .iter()
            .filter(|c| {
                matches!(
                    self.runtime.status(**c),
                    Ok(ContainerStatus::Running
                        | ContainerStatus::Paused
                        | ContainerStatus::Creating)
                )
            })
            .count();
        let event = KernelEvent::Drain {
            reason: reason.to_string(),
            running,
            grace_ms: u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
        };
        self.audit
            .append(Entry::owned(event).actor(Actor::host()))?;
        for c in containers {
            // A settled container cannot be stopped again; that is fine.
            let _ = self.runtime.stop_with_grace(c, grace);
        }
        Ok(())
    }

    /// Stops the executor, cancelling any task still running. Drain first
    /// ([`Kernel::drain`], then [`Kernel::wait`]) to stop containers
    /// cleanly; if tasks are still alive here, the drain is done now with
    /// `reason` (and audited) before they are cancelled.
    pub fn shutdown(&self, reason: &str) {
        let draining = std::mem::replace(&mut lock(&self.book).draining, true);
        if !draining && !self.idle() {
            let _ = self.drain(reason, Duration::ZERO);
        }
        self.executor.shutdown();
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        self.executor.shutdown();
    }
}

#[cfg(test)]
mod tests;
