//! Placing queued work and starting each placed workload's container on
//! the executor, in the lane of its priority and derived trust.

use std::future::Future;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use uuid::Uuid;

use crate::runtime::{Outcome, RuntimeError};
use crate::scheduler::{Allocation, CommitGuard, Commitment, ScheduleError, SchedulerContext};

use super::{
    Book, Kernel, KernelError, Launched, NotRun, Preempted, Refused, ScheduleReport, assess, lock,
};

impl Kernel {
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
            self.apply(outcome.workload, outcome.name, outcome.result, &mut report);
        }
        Ok(report)
    }

    /// Acts on one placement decision: launches the container, stops the
    /// victims of a preemption, or records the refusal.
    pub(super) fn apply(
        &self,
        workload: Uuid,
        name: String,
        result: Result<Allocation, ScheduleError>,
        report: &mut ScheduleReport,
    ) {
        match result {
            Ok(allocation) => {
                for victim in &allocation.preempted {
                    // The scheduler took its placement back (and queued it
                    // again): its task must not release what is no longer
                    // its own.
                    let container = lock(&self.book).entries.get_mut(&victim.id).and_then(|e| {
                        e.placement = None;
                        e.running
                    });
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
                        workload,
                        name,
                        container,
                        allocation,
                    }),
                    Err(Launch::NotYet) => {
                        // Its previous container is still stopping (a
                        // preempted workload placed again at once): give
                        // the room back and try again next round.
                        let _ = lock(&self.scheduler).release(workload);
                        self.requeue(workload);
                    }
                    Err(Launch::Failed(error)) => {
                        // Give the room back; the runtime audited why (or
                        // could not: then keep it queued).
                        let _ = lock(&self.scheduler).release(workload);
                        if is_audit(&error) {
                            self.requeue(workload);
                        } else {
                            self.set_not_run(
                                workload,
                                NotRun::Refused {
                                    reason: error.to_string(),
                                },
                            );
                        }
                        report.refused.push(Refused {
                            workload,
                            name,
                            error,
                        });
                    }
                }
            }
            Err(error) => {
                if matches!(error, ScheduleError::Audit(_)) {
                    // Not the workload's fault: keep it queued for the
                    // next `schedule` once the log can be written.
                    self.requeue(workload);
                } else {
                    let not_run = match &error {
                        ScheduleError::Unschedulable { explanation, .. } => NotRun::Unschedulable {
                            explanation: explanation.clone(),
                        },
                        other => NotRun::Refused {
                            reason: other.to_string(),
                        },
                    };
                    self.set_not_run(workload, not_run);
                }
                report.refused.push(Refused {
                    workload,
                    name,
                    error: error.into(),
                })
            }
        }
    }

    /// Records why a workload does not run, unless it has a container
    /// (then its container's state says where it is).
    fn set_not_run(&self, workload: Uuid, not_run: NotRun) {
        if let Some(e) = lock(&self.book).entries.get_mut(&workload)
            && e.running.is_none()
        {
            e.not_run = Some(not_run);
        }
    }

    fn requeue(&self, workload: Uuid) {
        let w = lock(&self.book)
            .entries
            .get(&workload)
            .map(|e| e.workload.clone());
        if let Some(w) = w {
            lock(&self.scheduler).submit(w);
        }
    }

    /// Workloads queued and not yet placed (including those kept queued
    /// because the audit log could not be written).
    pub fn pending(&self) -> usize {
        lock(&self.scheduler).pending()
    }

    /// Starts the placed workload's container on the executor: a new one,
    /// or its settled one again (same id, next run).
    fn launch(&self, allocation: &Allocation) -> Result<Uuid, Launch> {
        let workload_id = allocation.workload;
        let (workload, container, spawn, previous) = {
            let book = lock(&self.book);
            let e = book
                .entries
                .get(&workload_id)
                .ok_or(KernelError::UnknownWorkload(workload_id))?;
            if e.running.is_some() && !e.task_done {
                return Err(Launch::NotYet);
            }
            let container = e
                .container
                .clone()
                .ok_or(KernelError::UnknownWorkload(workload_id))?;
            (e.workload.clone(), container, e.spawn.clone(), e.running)
        };
        let commitment = Commitment {
            memory: container.current_limits().max_memory,
            cpu_millis: u64::from(workload.resource_requirements.cpu_millis),
            storage: workload.resource_requirements.storage,
            network: container.grants().network,
        };
        let component = container.component().clone();
        let prepared = match previous {
            Some(id) => self.runtime.prepare_start(id),
            None => self
                .runtime
                .prepare_container(container, workload.identity.clone()),
        }
        .map_err(KernelError::from)?;
        let container_id = prepared.id();
        let assessment = assess::Assessment::new(
            self.boot.as_ref(),
            &self.runtime,
            &component,
            container_id,
            self.healthy_after,
        );
        // Recorded before the task can run, so that it finds itself there.
        let (launch, draining) = {
            let mut book = lock(&self.book);
            book.launches += 1;
            let launch = book.launches;
            let draining = book.draining;
            if let Some(e) = book.entries.get_mut(&workload_id) {
                e.node = Some(allocation.node_id.clone());
                e.running = Some(container_id);
                e.not_run = None;
                e.launch = launch;
                e.placement = Some(launch);
                e.task_done = false;
            }
            (launch, draining)
        };
        let task = Task {
            book: Arc::downgrade(&self.book),
            scheduler: Arc::downgrade(&self.scheduler),
            changed: self.changed.clone(),
            workload: workload_id,
            launch,
            done: false,
        }
        .run(
            prepared.into_future(),
            assessment,
            self.monitor.commit(commitment),
        );
        match self.executor.spawn_with(task, &spawn) {
            Ok(handle) => {
                // Detached: the task says when it ends (`Slot::task_done`),
                // so the kernel holds nothing per finished container.
                drop(handle);
                if draining {
                    // A drain began while it was being prepared: it runs
                    // only to be stopped, as the drain would have.
                    let _ = self.runtime.stop_with_grace(container_id, Duration::ZERO);
                }
                Ok(container_id)
            }
            Err(e) => {
                let _ = self.runtime.stop(container_id);
                Err(KernelError::from(e).into())
            }
        }
    }
}

/// Why a placed workload did not start.
pub(super) enum Launch {
    /// Its previous container's task has not ended yet.
    NotYet,
    /// It cannot start.
    Failed(KernelError),
}

impl<E: Into<KernelError>> From<E> for Launch {
    fn from(e: E) -> Launch {
        Launch::Failed(e.into())
    }
}

/// The end of a container's task: it gives back what this launch holds
/// (its placement, unless preemption took it or the workload was placed
/// again since; its resources) and says so to whoever waits, also when the
/// executor drops it unfinished.
struct Task {
    book: Weak<Mutex<Book>>,
    scheduler: Weak<Mutex<SchedulerContext>>,
    changed: Arc<Notify>,
    workload: Uuid,
    launch: u64,
    done: bool,
}

impl Task {
    async fn run(
        mut self,
        container: impl Future<Output = Outcome>,
        assessment: assess::Assessment,
        resources: CommitGuard,
    ) -> Outcome {
        let (outcome, ()) = tokio::join!(container, assessment.run());
        drop(resources);
        self.finish();
        outcome
    }

    fn finish(&mut self) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        if let Some(book) = self.book.upgrade() {
            let mut book = lock(&book);
            if let Some(slot) = book.entries.get_mut(&self.workload) {
                if slot.launch == self.launch {
                    slot.task_done = true;
                }
                if slot.placement == Some(self.launch) {
                    slot.placement = None;
                    // Lock order: book, then scheduler (never the reverse).
                    if let Some(s) = self.scheduler.upgrade() {
                        let _ = lock(&s).release(self.workload);
                    }
                }
            }
        }
        self.changed.notify_waiters();
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        self.finish();
    }
}

fn is_audit(error: &KernelError) -> bool {
    matches!(
        error,
        KernelError::Audit(_) | KernelError::Runtime(RuntimeError::Audit(_))
    )
}
