//! Submitting work: the kernel derives each workload's trust from what
//! was verified and what its tenant's policy grants, never from what the
//! caller claims.

use uuid::Uuid;

use crate::audit::Entry;
use crate::identity::TrustLevel;
use crate::runtime::ContainerConfig;
use crate::scheduler::{ScheduleError, ScheduleEvent, SpawnOptions, Workload};

use super::{Kernel, KernelError, NotRun, Slot, lock};

impl Kernel {
    /// Queues `workload` to run as `container`, returning its id. Nothing is
    /// placed until [`Kernel::schedule`]. The container's name and workload
    /// default to the workload's name.
    ///
    /// The kernel derives the workload's trust (see the module docs): its
    /// signers are the component's verified signers, its trust level its
    /// tenant's policy level (`untrusted` when the component is unsigned or
    /// the tenant has no policy). A container asking for network access is
    /// refused unless its tenant's policy grants it
    /// ([`KernelError::NetworkNotGranted`], audited as `policy.denied`).
    pub fn submit(
        &self,
        workload: Workload,
        container: ContainerConfig,
    ) -> Result<Uuid, KernelError> {
        self.submit_entry(workload, Some(container), None)
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
        self.submit_entry(workload, Some(container), Some(worker))
    }

    fn submit_entry(
        &self,
        mut workload: Workload,
        container: Option<ContainerConfig>,
        worker: Option<usize>,
    ) -> Result<Uuid, KernelError> {
        if lock(&self.book).draining {
            return Err(KernelError::ShuttingDown);
        }
        let policy = lock(&self.scheduler)
            .policies()
            .get(&workload.identity.tenant)
            .cloned();
        let container = container.map(|mut c| {
            if c.workload.is_none() {
                c.workload(workload.name.clone());
            }
            if c.name.is_empty() || c.name == c.component().name() {
                c.name(workload.name.clone());
            }
            if c.output.is_none()
                && let Some(sink) = &self.output
            {
                c.output(sink.clone());
            }
            c
        });
        // Trust is derived from what was verified and what policy grants.
        let component = container.as_ref().map(ContainerConfig::component);
        let signers: Vec<String> = component
            .map(|c| c.signers().iter().map(ToString::to_string).collect())
            .unwrap_or_default();
        let signed = component.is_some_and(|c| c.is_signed());
        workload.identity.trust.level = match &policy {
            Some(p) if signed => p.trust,
            _ => TrustLevel::Untrusted,
        };
        workload.identity.trust.signers = u8::try_from(signers.len()).unwrap_or(u8::MAX);
        // Incidents are the kernel's to count, never the caller's to state.
        workload.identity.trust.incidents = 0;
        workload.signers = signers;
        if let Some(c) = &container {
            workload.resource_requirements.network = c.grants().network;
            if c.grants().network && !policy.as_ref().is_some_and(|p| p.network) {
                self.deny_network(&workload)?;
                return Err(KernelError::NetworkNotGranted {
                    workload: workload.name.clone(),
                    tenant: workload.identity.tenant.clone(),
                });
            }
        }
        let mut spawn = SpawnOptions::new(workload.priority);
        spawn.trust(workload.identity.trust.level);
        if let Some(w) = worker {
            spawn.worker(w);
        }
        let id = workload.id;
        let queued = container.as_ref().map(|_| workload.clone());
        {
            // In the book before the scheduler can place it, so that a
            // concurrent `schedule` finds it there.
            let mut book = lock(&self.book);
            if book.entries.contains_key(&id) {
                return Err(ScheduleError::DuplicateWorkload {
                    workload: workload.name.clone(),
                    id,
                }
                .into());
            }
            book.order.push(id);
            book.entries
                .insert(id, Slot::new(workload, container, spawn, None));
        }
        if let Some(w) = queued {
            lock(&self.scheduler).submit(w);
        }
        Ok(id)
    }

    fn deny_network(&self, w: &Workload) -> Result<(), KernelError> {
        let event = ScheduleEvent::PolicyDenied {
            workload: w.id,
            name: w.name.clone(),
            tenant: w.identity.tenant.clone(),
            rule: "network",
            detail: format!(
                "the container asks for network access; tenant `{}` does not grant it",
                w.identity.tenant
            ),
        };
        self.audit
            .append(Entry::owned(event).workload(&w.name).actor(&w.identity))?;
        Ok(())
    }

    /// Records a workload that does not run at all (its component was
    /// refused at boot, or the kernel refused it on submit), so that
    /// [`Kernel::workloads`] reports it with the reason.
    pub(super) fn submit_not_run(&self, mut workload: Workload, not_run: NotRun) {
        workload.identity.trust.level = TrustLevel::Untrusted;
        workload.identity.trust.signers = 0;
        workload.signers.clear();
        let spawn = SpawnOptions::new(workload.priority);
        let id = workload.id;
        let mut book = lock(&self.book);
        if book.entries.contains_key(&id) {
            return;
        }
        book.order.push(id);
        book.entries
            .insert(id, Slot::new(workload, None, spawn, Some(not_run)));
    }
}
