//! The audit failure policy during a run ([`AuditFailure`]): while the
//! audit log cannot be written (with `FailMode::Closed`), the run is
//! stopped, or paused until the log can be written again.
//!
//! The supervisor watches the log's health beside the run. The guest
//! itself notices at once: its output and log calls wait while the log
//! fails, and the epoch callback hands control back to the supervisor at
//! the next tick, so the policy acts within a fuel yield interval or an
//! epoch tick even for a guest that never calls the host.

use std::sync::Arc;
use std::time::Instant;

use uuid::Uuid;

use crate::audit::{AuditHealth, FailMode};

use crate::runtime::RuntimeError;
use crate::runtime::container::Run;
use crate::runtime::control::Control;
use crate::runtime::events::ContainerEvent;
use crate::runtime::outcome::{Failure, Outcome, RunEnd};

use super::Runtime;
use super::types::{AuditFailure, ContainerStatus};

/// What the policy did to the current run.
#[derive(Default)]
struct Acted {
    /// Stopped because of this cause.
    stopped: Option<String>,
    /// Paused since then, because of this cause.
    paused: Option<(Instant, String)>,
}

impl Runtime {
    /// One run under the audit failure policy.
    pub(super) async fn run_guarded(
        &self,
        id: Uuid,
        prepared: Result<Run, RuntimeError>,
        control: &Arc<Control>,
        run: u32,
    ) -> Outcome {
        let mut health = self.inner.audit.health();
        let mut watching = self.inner.audit.fail_mode() == FailMode::Closed;
        let mut acted = Acted::default();
        // The state now, then every change.
        let mut now = Some(health.borrow_and_update().clone());
        let guest = Self::run_once(prepared, run);
        tokio::pin!(guest);
        loop {
            if let Some(state) = now.take() {
                self.act(id, control, state, &mut acted).await;
            }
            tokio::select! {
                outcome = &mut guest => return self.ended(id, outcome, acted).await,
                changed = health.changed(), if watching => match changed {
                    Ok(()) => now = Some(health.borrow_and_update().clone()),
                    Err(_) => watching = false,
                },
            }
        }
    }

    async fn act(&self, id: Uuid, control: &Control, state: AuditHealth, acted: &mut Acted) {
        match state {
            AuditHealth::Failing { cause } => match self.inner.config.on_audit_failure {
                AuditFailure::Stop if acted.stopped.is_none() => {
                    tracing::error!(container = %id, "audit log failing ({cause}); stopping the container");
                    self.stop_now(id, control);
                    acted.stopped = Some(cause);
                }
                // Only a running container is paused (one an operator has
                // paused stays theirs to resume).
                AuditFailure::Pause if acted.paused.is_none() && self.pause_now(id, control) => {
                    tracing::error!(container = %id, "audit log failing ({cause}); pausing the container");
                    acted.paused = Some((Instant::now(), cause));
                }
                _ => {}
            },
            AuditHealth::Writable => {
                if let Some((since, cause)) = acted.paused.take() {
                    self.resume_now(id, control, since);
                    self.record_audit_pause(id, since, cause).await;
                }
            }
            AuditHealth::Closed => {}
        }
    }

    /// Stops the run at once (its status becomes `stopping`).
    fn stop_now(&self, id: Uuid, control: &Control) {
        if let Some(entry) = self.containers().get_mut(&id) {
            entry.ctx.status = ContainerStatus::Stopping;
        }
        let mut requests = control.lock();
        let now = Instant::now();
        requests.stop_at = Some(requests.stop_at.map_or(now, |at| at.min(now)));
        control.wake(requests);
    }

    /// Pauses the run if it is running (not when an operator already
    /// paused or is stopping it); true when it did.
    fn pause_now(&self, id: Uuid, control: &Control) -> bool {
        {
            let mut containers = self.containers();
            match containers.get_mut(&id) {
                Some(entry) if entry.ctx.status == ContainerStatus::Running => {
                    entry.ctx.status = ContainerStatus::Paused;
                }
                _ => return false,
            }
        }
        let mut requests = control.lock();
        requests.paused = true;
        requests.paused_since = Some(Instant::now());
        control.wake(requests);
        true
    }

    /// Resumes a run paused by the policy, unless an operator has stopped
    /// it since.
    fn resume_now(&self, id: Uuid, control: &Control, since: Instant) {
        {
            let mut containers = self.containers();
            match containers.get_mut(&id) {
                Some(entry) if entry.ctx.status == ContainerStatus::Paused => {
                    entry.ctx.status = ContainerStatus::Running;
                }
                _ => return,
            }
        }
        let mut requests = control.lock();
        requests.paused = false;
        requests.paused_total += since.elapsed();
        requests.paused_since = None;
        control.wake(requests);
    }

    /// Records, once the log can be written, that the run was paused.
    async fn record_audit_pause(&self, id: Uuid, since: Instant, cause: String) {
        let event = ContainerEvent::AuditPaused {
            cause,
            paused_ms: u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX),
        };
        let entry = self.entry_for(id, event);
        if let Err(e) = self.inner.audit.append_async(entry).await {
            tracing::error!(container = %id, "audit append failed: {e}");
        }
    }

    /// The run's outcome, as the policy made it: a run the policy stopped
    /// failed with [`Failure::AuditUnavailable`].
    async fn ended(&self, id: Uuid, mut outcome: Outcome, acted: Acted) -> Outcome {
        if let Some(cause) = acted.stopped
            && outcome.end != RunEnd::Success
        {
            outcome.end = RunEnd::Failed(Failure::AuditUnavailable {
                log: self.inner.audit.path().to_path_buf(),
                cause,
            });
        }
        if let Some((since, cause)) = acted.paused {
            // Stopped while paused by the policy: recorded if it can be.
            self.record_audit_pause(id, since, cause).await;
        }
        outcome
    }
}
