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
//! 2. [`SchedulerContext::schedule_pending`] places every queued workload on
//!    the local node by priority, trust and age (policy, constraints,
//!    capacity, preemption), each decision audited (`schedule.*`,
//!    `policy.denied`).
//! 3. A placed workload's container is prepared by the [`Runtime`]
//!    (compiled once per digest, `container.created`), its resources are
//!    committed to the node's [`ResourceMonitor`] (which feeds the next
//!    placement's load score), and its future is spawned on the
//!    work-stealing executor in the lane of its priority class and
//!    trust level.
//! 4. When the container settles (stopped, failed for good, quarantined)
//!    the resources are given back and the placement is released
//!    (`schedule.released`). A workload evicted by preemption has its
//!    container stopped.
//!
//! Fail closed: the scheduler refuses to place and the runtime refuses to
//! create containers while the audit log cannot be written, so nothing runs
//! unaudited.
//!
//! ```no_run
//! # async fn demo(audit: forgeone::audit::AuditLog, component: forgeone::boot::VerifiedComponent)
//! #     -> Result<(), forgeone::kernel::KernelError> {
//! use forgeone::kernel::{Kernel, KernelConfig};
//! use forgeone::runtime::ContainerConfig;
//! use forgeone::scheduler::{Node, Capacity, Workload};
//! use forgeone::{IdentityContext, PolicySet, Priority, TrustLevel, TrustVector};
//!
//! let cap = Capacity { cpu_millis: 2000, memory: 1 << 30, storage: 0, containers: 100 };
//! let node = Node::new("local", "eu-west", "eu-west-1a", cap);
//! let kernel = Kernel::new(KernelConfig::new(node, PolicySet::permissive()), audit)?;
//! let identity = IdentityContext::new("acme", "api", TrustVector::new(TrustLevel::Medium, 1));
//! let workload = Workload::new("api", Priority::Critical, identity);
//! kernel.submit(workload, ContainerConfig::new(component));
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

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use uuid::Uuid;

use crate::audit::{Actor, AuditError, AuditEvent, AuditLog, Entry, Severity};
use crate::identity::Priority;
use crate::policy::PolicySet;
use crate::runtime::{
    ContainerConfig, ContainerContext, ContainerStatus, Outcome, Runtime, RuntimeConfig,
    RuntimeError,
};
use crate::scheduler::{
    Allocation, CommitGuard, Commitment, Executor, JoinHandle, LocalNode, Node, NodeId,
    ResourceMonitor, ResourceState, ScheduleError, SchedulerContext, SpawnOptions, Workload,
};

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
    /// The kernel is shutting down and takes no new work.
    #[error("the kernel is shutting down")]
    ShuttingDown,
}

/// How to build a [`Kernel`]. Every setter states its default.
#[derive(Debug)]
pub struct KernelConfig {
    node: Node,
    policies: PolicySet,
    runtime: RuntimeConfig,
    workers: Option<usize>,
}

impl KernelConfig {
    /// A kernel whose local node is `node`, placing under `policies`.
    pub fn new(node: Node, policies: PolicySet) -> KernelConfig {
        KernelConfig {
            node,
            policies,
            runtime: RuntimeConfig::new(),
            workers: None,
        }
    }

    /// The runtime's configuration (engine, unsigned code, network,
    /// compiled cache, backoff). Default: [`RuntimeConfig::new`].
    pub fn runtime(&mut self, config: RuntimeConfig) -> &mut Self {
        self.runtime = config;
        self
    }

    /// Executor worker threads. Default: one per core.
    pub fn workers(&mut self, n: usize) -> &mut Self {
        self.workers = Some(n.max(1));
        self
    }
}

/// A workload whose container was started.
#[derive(Debug, Clone)]
pub struct Launched {
    /// The workload's id.
    pub workload: Uuid,
    /// The workload's name.
    pub name: String,
    /// The container running it.
    pub container: Uuid,
    /// Where it was placed, and why.
    pub allocation: Allocation,
}

/// A workload that did not start.
#[derive(Debug)]
pub struct Refused {
    /// The workload's id.
    pub workload: Uuid,
    /// The workload's name.
    pub name: String,
    /// Why (for an unschedulable workload, the placement explanation).
    pub error: KernelError,
}

/// A workload stopped to make room for another.
#[derive(Debug, Clone)]
pub struct Preempted {
    /// The evicted workload's name.
    pub name: String,
    /// Its container, if it had one running.
    pub container: Option<Uuid>,
    /// The workload that took its place.
    pub by: String,
}

/// What one [`Kernel::schedule`] did.
#[derive(Debug, Default)]
pub struct ScheduleReport {
    /// Started, in placement order (priority, trust, age).
    pub launched: Vec<Launched>,
    /// Not started, with the reason.
    pub refused: Vec<Refused>,
    /// Evicted by preemption (their containers are being stopped).
    pub preempted: Vec<Preempted>,
}

/// One workload as the kernel sees it: its placement and its container.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadView {
    /// The workload's id.
    pub workload: Uuid,
    /// Its name.
    pub name: String,
    /// Its priority.
    pub priority: Priority,
    /// The node it was placed on.
    pub node: String,
    /// Its container (status, resources, restart history).
    pub container: Option<ContainerContext>,
}

impl WorkloadView {
    /// Whether its container has settled: nothing more runs without an
    /// operator (stopped, failed for good, or quarantined).
    pub fn settled(&self) -> bool {
        self.container.as_ref().is_none_or(|c| {
            matches!(
                c.status,
                ContainerStatus::Stopped
                    | ContainerStatus::Failed(_)
                    | ContainerStatus::Quarantined(_)
            ) && c.next_restart.is_none()
        })
    }
}

/// Kernel events in the audit log.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum KernelEvent {
    /// `schedule.drain`: the kernel stops every container and takes no new
    /// work.
    Drain {
        /// Why (e.g. `interrupted (Ctrl-C)`).
        reason: String,
        /// Containers still running when the drain began.
        running: usize,
        /// How long each gets to stop before it is stopped at its next
        /// yield point.
        grace_ms: u64,
    },
}

impl AuditEvent for KernelEvent {
    fn kind(&self) -> &'static str {
        match self {
            KernelEvent::Drain { .. } => "schedule.drain",
        }
    }

    fn details(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }))
    }

    fn severity(&self) -> Severity {
        Severity::Warn
    }
}

struct Submitted {
    workload: Workload,
    container: ContainerConfig,
    spawn: SpawnOptions,
}

struct Running {
    name: String,
    priority: Priority,
    node: NodeId,
    container: Uuid,
}

#[derive(Default)]
struct Book {
    submitted: HashMap<Uuid, Submitted>,
    running: HashMap<Uuid, Running>,
    order: Vec<Uuid>,
    handles: Vec<JoinHandle<Outcome>>,
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
    /// measured by a [`ResourceMonitor`] attached to the executor.
    pub fn new(config: KernelConfig, audit: AuditLog) -> Result<Kernel, KernelError> {
        audit.ensure_writable()?;
        let runtime = Runtime::new(config.runtime, audit.clone())?;
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
        })
    }

    /// The runtime (pause, resume, stop, release, status of containers).
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The audit log.
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// What the local node has in use now.
    pub fn resources(&self) -> ResourceState {
        self.monitor.snapshot()
    }

    /// Queues `workload` to run as `container`, returning its id. Nothing is
    /// placed until [`Kernel::schedule`]. The container's name and workload
    /// default to the workload's name.
    pub fn submit(&self, workload: Workload, mut container: ContainerConfig) -> Uuid {
        let id = workload.id;
        if container.workload.is_none() {
            container.workload(workload.name.clone());
        }
        if container.name.is_empty() || container.name == container.component().name() {
            container.name(workload.name.clone());
        }
        let mut spawn = SpawnOptions::new(workload.priority);
        spawn.trust(workload.identity.trust.level);
        lock(&self.scheduler).submit(workload.clone());
        let mut book = lock(&self.book);
        book.order.push(id);
        book.submitted.insert(
            id,
            Submitted {
                workload,
                container,
                spawn,
            },
        );
        id
    }

    /// Like [`Kernel::submit`], pinning the container to executor worker
    /// `worker` (worker affinity): it runs only there and is never stolen.
    pub fn submit_pinned(
        &self,
        workload: Workload,
        container: ContainerConfig,
        worker: usize,
    ) -> Result<Uuid, KernelError> {
        if worker >= self.executor.workers() {
            return Err(ScheduleError::NoSuchWorker {
                worker,
                workers: self.executor.workers(),
            }
            .into());
        }
        let id = self.submit(workload, container);
        if let Some(s) = lock(&self.book).submitted.get_mut(&id) {
            s.spawn.worker(worker);
        }
        Ok(id)
    }

    /// Places every queued workload (priority, then trust, then age) and
    /// starts the container of each one placed. Preempted workloads have
    /// their containers stopped (and are queued again, as the scheduler
    /// does). A workload refused because the audit log cannot be written
    /// stays queued for the next call. `Err` only when nothing could be
    /// decided (the inventory failed, or the kernel is draining).
    pub fn schedule(&self) -> Result<ScheduleReport, KernelError> {
        if lock(&self.book).draining {
            return Err(KernelError::ShuttingDown);
        }
        let outcomes = lock(&self.scheduler).schedule_pending()?;
        let mut report = ScheduleReport::default();
        for outcome in outcomes {
            match outcome.result {
                Ok(allocation) => {
                    for victim in &allocation.preempted {
                        let container = lock(&self.book)
                            .running
                            .get(&victim.id)
                            .map(|r| r.container);
                        if let Some(c) = container {
                            // Stopped within its grace period, then at its
                            // next yield point. Already settled is fine.
                            let _ = self.runtime.stop(c);
                        }
                        report.preempted.push(Preempted {
                            name: victim.name.clone(),
                            container,
                            by: allocation.name.clone(),
                        });
                    }
                    match self.launch(&allocation) {
                        Ok(container) => report.launched.push(Launched {
                            workload: outcome.workload,
                            name: outcome.name,
                            container,
                            allocation,
                        }),
                        Err(error) => {
                            // Give the room back; the runtime audited why
                            // (or could not: then keep it queued).
                            let _ = lock(&self.scheduler).release(outcome.workload);
                            if matches!(
                                error,
                                KernelError::Audit(_)
                                    | KernelError::Runtime(RuntimeError::Audit(_))
                            ) {
                                self.requeue(outcome.workload);
                            }
                            report.refused.push(Refused {
                                workload: outcome.workload,
                                name: outcome.name,
                                error,
                            });
                        }
                    }
                }
                Err(error) => {
                    if matches!(error, ScheduleError::Audit(_)) {
                        // Not the workload's fault: keep it queued for the
                        // next `schedule` once the log can be written.
                        self.requeue(outcome.workload);
                    }
                    report.refused.push(Refused {
                        workload: outcome.workload,
                        name: outcome.name,
                        error: error.into(),
                    })
                }
            }
        }
        Ok(report)
    }

    fn requeue(&self, workload: Uuid) {
        let w = lock(&self.book)
            .submitted
            .get(&workload)
            .map(|s| s.workload.clone());
        if let Some(w) = w {
            lock(&self.scheduler).submit(w);
        }
    }

    /// Workloads queued and not yet placed (including those kept queued
    /// because the audit log could not be written).
    pub fn pending(&self) -> usize {
        lock(&self.scheduler).pending()
    }

    fn launch(&self, allocation: &Allocation) -> Result<Uuid, KernelError> {
        let (workload, container, spawn) = {
            let book = lock(&self.book);
            let s = book
                .submitted
                .get(&allocation.workload)
                .ok_or(ScheduleError::UnknownWorkload(allocation.workload))?;
            (s.workload.clone(), s.container.clone(), s.spawn.clone())
        };
        let commitment = Commitment {
            memory: container.current_limits().max_memory,
            cpu_millis: u64::from(workload.resource_requirements.cpu_millis),
            storage: workload.resource_requirements.storage,
            network: container.grants().network,
        };
        let prepared = self
            .runtime
            .prepare_container(container, workload.identity.clone())?;
        let container_id = prepared.id();
        let guard: CommitGuard = self.monitor.commit(commitment);
        let scheduler = Arc::downgrade(&self.scheduler);
        let book = Arc::downgrade(&self.book);
        let workload_id = workload.id;
        let future = prepared.into_future();
        let task = async move {
            let outcome = future.await;
            drop(guard);
            // Release the placement only if it is still this container's:
            // a preempted workload may have been placed again since.
            let current = book
                .upgrade()
                .and_then(|b| lock(&b).running.get(&workload_id).map(|r| r.container));
            if current == Some(container_id)
                && let Some(s) = scheduler.upgrade()
            {
                // Already released (preempted) is fine.
                let _ = lock(&s).release(workload_id);
            }
            outcome
        };
        // Recorded before the task can run, so that it finds itself there.
        lock(&self.book).running.insert(
            workload_id,
            Running {
                name: workload.name.clone(),
                priority: workload.priority,
                node: allocation.node_id.clone(),
                container: container_id,
            },
        );
        match self.executor.spawn_with(task, &spawn) {
            Ok(handle) => {
                lock(&self.book).handles.push(handle);
                Ok(container_id)
            }
            Err(e) => {
                lock(&self.book).running.remove(&workload_id);
                let _ = self.runtime.stop(container_id);
                Err(e.into())
            }
        }
    }

    /// Every workload that got a container, in submission order, with its
    /// container's current state.
    pub fn workloads(&self) -> Vec<WorkloadView> {
        let book = lock(&self.book);
        book.order
            .iter()
            .filter_map(|id| {
                let r = book.running.get(id)?;
                Some(WorkloadView {
                    workload: *id,
                    name: r.name.clone(),
                    priority: r.priority,
                    node: r.node.to_string(),
                    container: self.runtime.context(r.container),
                })
            })
            .collect()
    }

    /// Whether every started container has settled: nothing more runs
    /// without an operator (see [`WorkloadView::settled`]). A quarantined
    /// container has settled, though its task waits for a release.
    pub fn settled(&self) -> bool {
        self.workloads().iter().all(WorkloadView::settled)
    }

    /// Waits until every started container has settled.
    pub async fn wait_settled(&self) {
        let containers: Vec<Uuid> = lock(&self.book)
            .running
            .values()
            .map(|r| r.container)
            .collect();
        for c in containers {
            // Gone (removed by an operator) counts as settled.
            let _ = self.runtime.wait(c).await;
        }
    }

    /// Whether every started container's task has ended. A quarantined
    /// container's task lives until it is released or stopped.
    pub fn idle(&self) -> bool {
        lock(&self.book).handles.iter().all(JoinHandle::is_finished)
    }

    /// Waits until every started container's task has ended (stopped,
    /// failed for good, or cancelled by [`Kernel::shutdown`]); quarantined
    /// containers must be released or stopped first (see
    /// [`Kernel::drain`]).
    pub async fn wait(&self) {
        loop {
            let handles = std::mem::take(&mut lock(&self.book).handles);
            if handles.is_empty() {
                return;
            }
            for h in handles {
                let _ = h.await;
            }
        }
    }

    /// Starts a drain: audits it (`schedule.drain` with `reason`), refuses
    /// new work, and stops every container, gracefully for `grace` and then
    /// at its next yield point. Use [`Kernel::wait`] to wait for them.
    pub fn drain(&self, reason: &str, grace: Duration) -> Result<(), KernelError> {
        let containers: Vec<Uuid> = {
            let mut book = lock(&self.book);
            book.draining = true;
            book.running.values().map(|r| r.container).collect()
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
        let draining = lock(&self.book).draining;
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
mod tests {
    use super::*;

    #[test]
    fn kernel_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Kernel>();
    }
}
