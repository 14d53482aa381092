//! Operating on a workload after it was submitted: start it again, stop,
//! pause, resume, release it from quarantine, forget it. Every request goes
//! through placement and the executor (a start is a placement decision, a
//! container only ever runs in its executor lane) and is audited by the
//! part that carries it out.

use uuid::Uuid;

use crate::runtime::ContainerStatus;

use super::{Kernel, KernelError, Launched, NotRun, ScheduleReport, lock};

impl Kernel {
    /// Places a workload again and starts it: a container that stopped or
    /// failed for good starts its next run (same container), and a
    /// workload refused by policy or placement is placed anew. Preemption
    /// applies as in [`Kernel::schedule`]: the workloads it evicts are
    /// stopped and queued again. A workload whose component was refused at
    /// boot, or that the kernel refused on submit, cannot start; one whose
    /// container is still stopping must be waited for first
    /// ([`Kernel::wait_for`]).
    pub fn start(&self, workload: Uuid) -> Result<Launched, KernelError> {
        let w = {
            let mut book = lock(&self.book);
            if book.draining {
                return Err(KernelError::ShuttingDown);
            }
            let slot = book
                .entries
                .get_mut(&workload)
                .ok_or(KernelError::UnknownWorkload(workload))?;
            let state = match (&slot.not_run, slot.running) {
                _ if slot.container.is_none() => Some(match &slot.not_run {
                    Some(NotRun::Boot { .. }) => "refused at boot".to_string(),
                    _ => "refused on submit".to_string(),
                }),
                (Some(_), _) => None,
                (None, None) => Some("queued".to_string()),
                (None, Some(_)) if !slot.task_done => Some("still stopping".to_string()),
                (None, Some(c)) => match self.runtime.context(c) {
                    Some(ctx)
                        if matches!(
                            ctx.status,
                            ContainerStatus::Stopped | ContainerStatus::Failed(_)
                        ) && ctx.next_restart.is_none() =>
                    {
                        None
                    }
                    Some(ctx) => Some(ctx.status.name().to_string()),
                    None => Some("removed".to_string()),
                },
            };
            if let Some(state) = state {
                return Err(KernelError::IllegalTransition {
                    workload: slot.workload.name.clone(),
                    action: "start",
                    state,
                });
            }
            slot.not_run = None;
            book.entries[&workload].workload.clone()
        };
        let name = w.name.clone();
        let result = lock(&self.scheduler).schedule_workload(w);
        let mut report = ScheduleReport::default();
        self.apply(workload, name, result, &mut report);
        match (report.launched.pop(), report.refused.pop()) {
            (Some(launched), _) => Ok(launched),
            (None, Some(refused)) => Err(refused.error),
            (None, None) => Err(KernelError::UnknownWorkload(workload)),
        }
    }

    /// Stops a workload's container: it may finish within its grace
    /// period, then it is stopped at its next yield point; its placement
    /// is released when it has stopped.
    pub fn stop(&self, workload: Uuid) -> Result<(), KernelError> {
        let c = self.container_of(workload, "stop")?;
        Ok(self.runtime.stop(c)?)
    }

    /// Pauses a workload's running container at its next yield point; it
    /// keeps its placement and uses no CPU until resumed.
    pub fn pause(&self, workload: Uuid) -> Result<(), KernelError> {
        let c = self.container_of(workload, "pause")?;
        Ok(self.runtime.pause(c)?)
    }

    /// Resumes a workload's paused container.
    pub fn resume(&self, workload: Uuid) -> Result<(), KernelError> {
        let c = self.container_of(workload, "resume")?;
        Ok(self.runtime.resume(c)?)
    }

    /// Releases a workload's quarantined container: it restarts, in its
    /// executor lane, with a fresh backoff (it kept its placement and
    /// resources while quarantined), and its runs are assessed again for
    /// boot assessment.
    pub fn release(&self, workload: Uuid) -> Result<(), KernelError> {
        let c = self.container_of(workload, "release")?;
        let (component, spawn) = {
            let book = lock(&self.book);
            let slot = &book.entries[&workload];
            (
                slot.container.as_ref().map(|c| c.component().clone()),
                slot.spawn.clone(),
            )
        };
        // Made before the release, so that it watches the next run.
        let assessment = component.map(|component| {
            super::assess::Assessment::new(
                self.boot.as_ref(),
                &self.runtime,
                &component,
                c,
                self.healthy_after,
            )
        });
        self.runtime.release(c)?;
        if let Some(a) = assessment {
            // Detached: it ends when the container settles again, or with
            // the executor.
            drop(self.executor.spawn_with(a.run(), &spawn));
        }
        Ok(())
    }

    /// Forgets a settled workload (refused, or its container stopped or
    /// failed for good) and its container, so that a long-running kernel
    /// does not grow. A workload still queued, running, restarting or
    /// quarantined is refused: stop it first.
    pub fn remove(&self, workload: Uuid) -> Result<(), KernelError> {
        let view = self
            .workload(workload)
            .ok_or(KernelError::UnknownWorkload(workload))?;
        let quarantined = view
            .container
            .as_ref()
            .is_some_and(|c| matches!(c.status, ContainerStatus::Quarantined(_)));
        if !view.settled() || quarantined {
            return Err(KernelError::IllegalTransition {
                workload: view.name,
                action: "remove",
                state: view
                    .container
                    .map_or("queued".to_string(), |c| c.status.name().to_string()),
            });
        }
        if let Some(c) = &view.container {
            self.runtime.remove(c.id)?;
        }
        // Its task releases the placement as it ends; if it has not ended
        // yet, release it here (a second release is harmless).
        let _ = lock(&self.scheduler).release(workload);
        let mut book = lock(&self.book);
        book.entries.remove(&workload);
        book.order.retain(|id| *id != workload);
        Ok(())
    }

    fn container_of(&self, workload: Uuid, action: &'static str) -> Result<Uuid, KernelError> {
        let book = lock(&self.book);
        let slot = book
            .entries
            .get(&workload)
            .ok_or(KernelError::UnknownWorkload(workload))?;
        slot.running.ok_or_else(|| KernelError::IllegalTransition {
            workload: slot.workload.name.clone(),
            action,
            state: match slot.not_run {
                Some(_) => "not run".to_string(),
                None => "queued".to_string(),
            },
        })
    }
}
