//! Placing queued work and starting each placed workload's container on
//! the executor, in the lane of its priority and derived trust.

use std::sync::Arc;

use uuid::Uuid;

use crate::runtime::RuntimeError;
use crate::scheduler::{Allocation, CommitGuard, Commitment, ScheduleError};

use super::{
    Kernel, KernelError, Launched, NotRun, Preempted, Refused, ScheduleReport, assess, lock,
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
                    let container = lock(&self.book)
                        .entries
                        .get(&victim.id)
                        .and_then(|e| e.running);
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
                    Err(error) => {
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

    fn set_not_run(&self, workload: Uuid, not_run: NotRun) {
        if let Some(e) = lock(&self.book).entries.get_mut(&workload) {
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
    fn launch(&self, allocation: &Allocation) -> Result<Uuid, KernelError> {
        let (workload, container, spawn, previous) = {
            let book = lock(&self.book);
            let e = book
                .entries
                .get(&allocation.workload)
                .ok_or(ScheduleError::UnknownWorkload(allocation.workload))?;
            let container = e
                .container
                .clone()
                .ok_or(KernelError::UnknownWorkload(allocation.workload))?;
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
            Some(id) => self.runtime.prepare_start(id)?,
            None => self
                .runtime
                .prepare_container(container, workload.identity.clone())?,
        };
        let container_id = prepared.id();
        let guard: CommitGuard = self.monitor.commit(commitment);
        let scheduler = Arc::downgrade(&self.scheduler);
        let book = Arc::downgrade(&self.book);
        let workload_id = workload.id;
        let future = prepared.into_future();
        let assessment = assess::Assessment::new(
            self.boot.as_ref(),
            &self.runtime,
            &component,
            container_id,
            self.healthy_after,
        );
        let task = async move {
            let (outcome, ()) = futures_join(future, assessment.run()).await;
            drop(guard);
            // Release the placement only if it is still this container's:
            // a preempted workload may have been placed again since.
            let current = book
                .upgrade()
                .and_then(|b| lock(&b).entries.get(&workload_id).and_then(|e| e.running));
            if current == Some(container_id)
                && let Some(s) = scheduler.upgrade()
            {
                // Already released (preempted) is fine.
                let _ = lock(&s).release(workload_id);
            }
            outcome
        };
        // Recorded before the task can run, so that it finds itself there.
        {
            let mut book = lock(&self.book);
            if let Some(e) = book.entries.get_mut(&workload_id) {
                e.node = Some(allocation.node_id.clone());
                e.running = Some(container_id);
                e.not_run = None;
            }
            book.handles.retain(|h| !h.is_finished());
        }
        match self.executor.spawn_with(task, &spawn) {
            Ok(handle) => {
                lock(&self.book).handles.push(handle);
                Ok(container_id)
            }
            Err(e) => {
                let _ = self.runtime.stop(container_id);
                Err(e.into())
            }
        }
    }
}

fn is_audit(error: &KernelError) -> bool {
    matches!(
        error,
        KernelError::Audit(_) | KernelError::Runtime(RuntimeError::Audit(_))
    )
}

/// Polls both futures to completion on the current task.
async fn futures_join<A: std::future::Future, B: std::future::Future>(
    a: A,
    b: B,
) -> (A::Output, B::Output) {
    tokio::join!(a, b)
}
