//! Operations on containers: pause, resume, stop, start, release, remove,
//! wait, and the status and snapshot queries.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::runtime::RuntimeError;
use crate::runtime::events::ContainerEvent;
use crate::runtime::outcome::Outcome;
use crate::runtime::store::CacheStats;

use super::types::{
    ContainerContext, ContainerStatus, RuntimeContext, RuntimeResources, RuntimeStatus,
};
use super::{PreparedContainer, Runtime, live_context};

impl Runtime {
    /// Pauses a running container: it stops at its next yield point and
    /// uses no CPU until resumed (its deadline clock stops too).
    pub fn pause(&self, id: Uuid) -> Result<(), RuntimeError> {
        let control = self.with_entry(
            id,
            |entry| match entry.ctx.status {
                ContainerStatus::Running => {
                    entry.ctx.status = ContainerStatus::Paused;
                    Ok(entry.control.clone())
                }
                _ => Err("not running"),
            },
            "pause",
        )?;
        let mut requests = control.lock();
        requests.paused = true;
        requests.paused_since = Some(Instant::now());
        control.wake(requests);
        self.audit_ok(id, ContainerEvent::Paused)
    }

    /// Resumes a paused container. Refused while the audit log cannot be
    /// written (it would run unaudited).
    pub fn resume(&self, id: Uuid) -> Result<(), RuntimeError> {
        self.inner.audit.ensure_writable()?;
        let control = self.with_entry(
            id,
            |entry| match entry.ctx.status {
                ContainerStatus::Paused => {
                    entry.ctx.status = ContainerStatus::Running;
                    Ok(entry.control.clone())
                }
                _ => Err("not paused"),
            },
            "resume",
        )?;
        let mut requests = control.lock();
        requests.paused = false;
        let paused_for = requests
            .paused_since
            .take()
            .map(|since| since.elapsed())
            .unwrap_or_default();
        requests.paused_total += paused_for;
        control.wake(requests);
        self.audit_ok(
            id,
            ContainerEvent::Resumed {
                paused_ms: paused_for.as_millis() as u64,
            },
        )
    }

    /// Stops a container: it may finish within its grace period
    /// ([`ContainerConfig::stop_grace`](crate::runtime::ContainerConfig::stop_grace)); after that it is dropped at its
    /// next yield point. A paused container is stopped at once. Stopping a
    /// container that is already stopping forces it now.
    pub fn stop(&self, id: Uuid) -> Result<(), RuntimeError> {
        self.stop_inner(id, None)
    }

    /// Like [`Runtime::stop`] with an explicit grace period.
    pub fn stop_with_grace(&self, id: Uuid, grace: Duration) -> Result<(), RuntimeError> {
        self.stop_inner(id, Some(grace))
    }

    fn stop_inner(&self, id: Uuid, grace: Option<Duration>) -> Result<(), RuntimeError> {
        let (control, grace) = self.with_entry(
            id,
            |entry| {
                let restart_pending = entry.ctx.next_restart.is_some();
                let grace = grace.unwrap_or(
                    entry
                        .spec
                        .as_ref()
                        .map_or(Duration::ZERO, |s| s.config.stop_grace),
                );
                let grace = match entry.ctx.status {
                    ContainerStatus::Running => grace,
                    ContainerStatus::Creating
                    | ContainerStatus::Paused
                    | ContainerStatus::Quarantined(_)
                    | ContainerStatus::Stopping => Duration::ZERO,
                    ContainerStatus::Failed(_) | ContainerStatus::Stopped
                        if restart_pending && entry.supervising =>
                    {
                        Duration::ZERO
                    }
                    _ => return Err("not running"),
                };
                entry.ctx.status = ContainerStatus::Stopping;
                Ok((entry.control.clone(), grace))
            },
            "stop",
        )?;
        let mut requests = control.lock();
        let at = Instant::now() + grace;
        requests.stop_at = Some(requests.stop_at.map_or(at, |prev| prev.min(at)));
        control.wake(requests);
        self.audit_ok(
            id,
            ContainerEvent::StopRequested {
                grace_ms: grace.as_millis() as u64,
            },
        )
    }

    /// Releases a quarantined container: it restarts with a fresh backoff.
    pub fn release(&self, id: Uuid) -> Result<(), RuntimeError> {
        let control = self.with_entry(
            id,
            |entry| match entry.ctx.status {
                ContainerStatus::Quarantined(_) => {
                    entry.ctx.status = ContainerStatus::Creating;
                    entry.settled.send_replace(None);
                    Ok(entry.control.clone())
                }
                _ => Err("not quarantined"),
            },
            "release",
        )?;
        let mut requests = control.lock();
        requests.released = true;
        control.wake(requests);
        self.audit_ok(id, ContainerEvent::Released)
    }

    /// Starts a stopped or failed container again (same configuration and
    /// id, next run number) on tokio (the ambient runtime, or
    /// wasmtime-wasi's fallback runtime). A quarantined container must be
    /// released instead.
    pub fn start(&self, id: Uuid) -> Result<(), RuntimeError> {
        let future = self.prepare_start(id)?.into_future();
        wasmtime_wasi::runtime::with_ambient_tokio_runtime(|| tokio::spawn(future));
        Ok(())
    }

    /// Like [`Runtime::start`] (the same checks, transition to `Creating`
    /// and refusal audit) but returns the container with the future that
    /// runs it instead of spawning it, so that the caller polls it on an
    /// executor of its choice, as with [`Runtime::prepare_container`].
    /// Nothing runs until the future is polled.
    pub(crate) fn prepare_start(&self, id: Uuid) -> Result<PreparedContainer, RuntimeError> {
        // Checked before the transition: a refusal leaves the container as
        // it was.
        self.accepting()?;
        let (control, spec) = self.with_entry(
            id,
            |entry| match (&entry.ctx.status, &entry.spec) {
                (ContainerStatus::Stopped | ContainerStatus::Failed(_), Some(spec))
                    if !entry.supervising =>
                {
                    entry.ctx.status = ContainerStatus::Creating;
                    entry.supervising = true;
                    entry.settled.send_replace(None);
                    Ok((entry.control.clone(), spec.clone()))
                }
                _ => Err("not startable"),
            },
            "start",
        )?;
        let runtime = self.clone();
        Ok(PreparedContainer::new(
            id,
            Box::pin(async move { runtime.supervise(id, control, spec).await }),
        ))
    }

    /// Waits until the container settles (stopped, failed with no restart
    /// due, or quarantined) and returns its last run's outcome.
    pub async fn wait(&self, id: Uuid) -> Result<Outcome, RuntimeError> {
        let mut rx = self
            .containers()
            .get(&id)
            .map(|e| e.settled.subscribe())
            .ok_or(RuntimeError::NotFound(id))?;
        let outcome = rx
            .wait_for(Option::is_some)
            .await
            .map_err(|_| RuntimeError::NotFound(id))?;
        Ok(outcome.clone().expect("waited for Some"))
    }

    /// The container's status.
    pub fn status(&self, id: Uuid) -> Result<ContainerStatus, RuntimeError> {
        self.containers()
            .get(&id)
            .map(|e| e.ctx.status.clone())
            .ok_or(RuntimeError::NotFound(id))
    }

    /// A snapshot of one container (resources are live while it runs).
    pub fn context(&self, id: Uuid) -> Option<ContainerContext> {
        self.containers().get(&id).map(live_context)
    }

    /// True when a paused container's future has actually parked (it is
    /// no longer executing guest code).
    pub fn is_parked(&self, id: Uuid) -> bool {
        self.containers()
            .get(&id)
            .is_some_and(|e| e.control.parked.load(Ordering::SeqCst))
    }

    /// All containers, oldest first by run start is not guaranteed: sorted
    /// by name, then id.
    pub fn list(&self) -> Vec<ContainerContext> {
        let mut list: Vec<ContainerContext> =
            self.containers().values().map(live_context).collect();
        list.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        list
    }

    /// Forgets a settled container (stopped or failed, nothing pending) and
    /// returns its last context; long-running services call this so the
    /// runtime's table does not grow without bound. A container that is
    /// still running, restarting or quarantined is refused.
    pub fn remove(&self, id: Uuid) -> Result<ContainerContext, RuntimeError> {
        let removable = self.with_entry(
            id,
            |entry| match entry.ctx.status {
                ContainerStatus::Stopped | ContainerStatus::Failed(_) if !entry.supervising => {
                    Ok(())
                }
                _ => Err("still active"),
            },
            "remove",
        );
        removable?;
        self.containers()
            .remove(&id)
            .map(|e| e.ctx)
            .ok_or(RuntimeError::NotFound(id))
    }

    /// Compiled-component cache counters.
    pub fn cache_stats(&self) -> CacheStats {
        self.inner.store.stats()
    }

    /// A snapshot of the whole runtime.
    pub fn runtime_context(&self) -> RuntimeContext {
        let containers: HashMap<Uuid, ContainerContext> = self
            .containers()
            .iter()
            .map(|(id, e)| (*id, live_context(e)))
            .collect();
        let mut resources = RuntimeResources {
            cache: self.cache_stats(),
            ..RuntimeResources::default()
        };
        for ctx in containers.values() {
            resources.fuel_consumed += ctx.resources.fuel_consumed_total;
            if matches!(
                ctx.status,
                ContainerStatus::Running | ContainerStatus::Paused | ContainerStatus::Stopping
            ) {
                resources.active_containers += 1;
                resources.memory_reserved += ctx.execution_dna.limits.max_memory;
            }
        }
        let plugins = self.inner.plugins.snapshot();
        RuntimeContext {
            containers,
            plugins,
            resources,
            policies: self.inner.config.policy.clone(),
            status: self
                .inner
                .status
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    /// Stops every container at once (no grace) and refuses new work.
    pub async fn shutdown(&self) {
        *self.inner.status.lock().unwrap_or_else(|p| p.into_inner()) = RuntimeStatus::Stopping;
        let ids: Vec<Uuid> = self.containers().keys().copied().collect();
        for id in &ids {
            let _ = self.stop_with_grace(*id, Duration::ZERO);
        }
        for id in ids {
            let supervising = self.containers().get(&id).is_some_and(|e| e.supervising);
            if supervising {
                let _ = self.wait(id).await;
            }
        }
        *self.inner.status.lock().unwrap_or_else(|p| p.into_inner()) = RuntimeStatus::Stopped;
    }

    /// The runtime's state.
    pub fn runtime_status(&self) -> RuntimeStatus {
        self.inner
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditConfig, AuditLog};
    use crate::boot::VerifiedComponent;
    use crate::identity::{IdentityContext, TrustLevel, TrustVector};
    use crate::keys::SigningKey;
    use crate::runtime::{ContainerConfig, RuntimeConfig};

    /// A command component whose `run` succeeds at once.
    const TRIVIAL: &str = r#"
    (component
      (core module $m (func (export "run") (result i32) (i32.const 0)))
      (core instance $i (instantiate $m))
      (func $run (result (result)) (canon lift (core func $i "run")))
      (instance $run-instance (export "run" (func $run)))
      (export "wasi:cli/run@0.2.12" (instance $run-instance)))
    "#;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn prepare_start_returns_the_restart_for_the_callers_executor() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(
            dir.path().join("audit.jsonl"),
            SigningKey::generate(),
            &AuditConfig::new(),
        )
        .unwrap();
        let mut config = RuntimeConfig::new();
        config.allow_unsigned(true);
        let runtime = Runtime::new(config, log).unwrap();
        let component = VerifiedComponent::unsigned("trivial", wat::parse_str(TRIVIAL).unwrap());
        let identity =
            IdentityContext::new("acme", "alice", TrustVector::new(TrustLevel::Medium, 0));
        let id = runtime
            .launch_container(ContainerConfig::new(component), identity)
            .unwrap();
        assert_eq!(runtime.wait(id).await.unwrap().run, 1);

        // The same transition as `start`, but nothing is spawned.
        let prepared = runtime.prepare_start(id).unwrap();
        assert_eq!(prepared.id(), id);
        assert_eq!(runtime.status(id).unwrap(), ContainerStatus::Creating);
        assert_eq!(runtime.context(id).unwrap().run, 1, "nothing ran yet");
        // Already being started: refused (and audited) like `start`.
        for refused in [runtime.prepare_start(id).map(|_| ()), runtime.start(id)] {
            assert!(
                matches!(
                    refused,
                    Err(RuntimeError::IllegalTransition {
                        action: "start",
                        status: "creating",
                        ..
                    })
                ),
                "{refused:?}"
            );
        }

        // The caller runs it where it chooses: here, its own thread and
        // single-threaded executor.
        let future = prepared.into_future();
        let outcome = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(future)
        })
        .join()
        .unwrap();
        assert_eq!((outcome.run, outcome.is_success()), (2, true), "{outcome}");
        assert_eq!(runtime.status(id).unwrap(), ContainerStatus::Stopped);
        assert_eq!(runtime.wait(id).await.unwrap().run, 2);
        assert_eq!(runtime.context(id).unwrap().totals.runs, 2);

        // A runtime that is shutting down starts nothing, and the refusal
        // leaves the container as it was.
        runtime.shutdown().await;
        assert!(matches!(
            runtime.prepare_start(id),
            Err(RuntimeError::ShuttingDown)
        ));
        assert_eq!(runtime.status(id).unwrap(), ContainerStatus::Stopped);
    }
}
