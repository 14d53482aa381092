//! Supervision: the loop that runs a container with its restart policy
//! and backoff until it settles, recording each run and quarantining crash
//! loops.

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use uuid::Uuid;

use crate::audit::Entry;
use crate::runtime::RuntimeError;
use crate::runtime::container::{Run, RunSpec};
use crate::runtime::control::Control;
use crate::runtime::events::ContainerEvent;
use crate::runtime::outcome::{Failure, Outcome, RunEnd, RunStats};
use crate::runtime::supervisor::{Quarantine, RestartPolicy};

use super::Runtime;
use super::types::ContainerStatus;

impl Runtime {
    pub(super) async fn link_failed(&self, id: Uuid, failure: Failure) -> Outcome {
        let outcome = Outcome {
            end: RunEnd::Failed(failure.clone()),
            stats: RunStats::default(),
            run: 1,
            last_output: Vec::new(),
        };
        self.record_run(id, &outcome).await;
        self.settle(id, ContainerStatus::Failed(failure), &outcome);
        outcome
    }

    fn set_status(&self, id: Uuid, status: ContainerStatus) {
        if let Some(entry) = self.containers().get_mut(&id) {
            entry.ctx.status = status;
        }
    }

    /// Marks the container settled (nothing more will run without an
    /// operator) and wakes `wait`ers.
    fn settle(&self, id: Uuid, status: ContainerStatus, outcome: &Outcome) {
        let mut containers = self.containers();
        if let Some(entry) = containers.get_mut(&id) {
            entry.ctx.status = status;
            entry.ctx.next_restart = None;
            if !matches!(entry.ctx.status, ContainerStatus::Quarantined(_)) {
                entry.supervising = false;
            }
            entry.settled.send_replace(Some(outcome.clone()));
        }
    }

    /// Appends `entry` without blocking the executor thread; a failure is
    /// logged (the caller goes on: what it reports already happened).
    async fn audit_async(&self, id: Uuid, entry: Entry) {
        if let Err(e) = self.inner.audit.append_async(entry).await {
            tracing::error!(container = %id, "audit append failed: {e}");
        }
    }

    /// Audits a finished run and records it in the container's history.
    async fn record_run(&self, id: Uuid, outcome: &Outcome) {
        let event = match &outcome.end {
            RunEnd::Success => ContainerEvent::Exited {
                run: outcome.run,
                code: 0,
                stats: outcome.stats.clone(),
            },
            RunEnd::Stopped { forced } => ContainerEvent::Stopped {
                run: outcome.run,
                forced: *forced,
                stats: outcome.stats.clone(),
            },
            RunEnd::Failed(failure) => ContainerEvent::Failed {
                run: outcome.run,
                failure: failure.clone(),
                stats: outcome.stats.clone(),
            },
        };
        let entry = {
            let mut containers = self.containers();
            let Some(entry) = containers.get_mut(&id) else {
                return;
            };
            entry.ctx.record_run(outcome);
            entry.audit_entry(event)
        };
        self.audit_async(id, entry).await;
    }

    /// Waits until `done` is true, re-checking on every lifecycle request,
    /// or until `timeout` (if any) elapses. Returns true if `done`.
    async fn wait_for(
        control: &Control,
        timeout: Option<Duration>,
        done: impl Fn(&Control) -> bool,
    ) -> bool {
        let until = timeout.map(|t| tokio::time::Instant::now() + t);
        loop {
            let notified = control.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if done(control) {
                return true;
            }
            match until {
                Some(until) => {
                    if tokio::time::Instant::now() >= until {
                        return false;
                    }
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = tokio::time::sleep_until(until) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Runs a container with its restart policy until it settles.
    pub(super) async fn supervise(self, id: Uuid, control: Arc<Control>, spec: RunSpec) -> Outcome {
        let backoff = self.inner.config.backoff.clone();
        let policy = spec.config.restart;
        let mut run = self.containers().get(&id).map_or(0, |e| e.ctx.run);
        let mut consecutive_failures = 0u32;
        let mut attempt = 0u32;
        loop {
            run += 1;
            // Wait out a pause requested before the run starts.
            if control.lock().paused {
                Self::wait_for(&control, None, |c| {
                    let r = c.lock();
                    !r.paused || r.stop_at.is_some()
                })
                .await;
            }
            if control.stop_requested() {
                return self.stopped_before_run(id, &control, run);
            }
            let outcome = self.start_run(id, &spec, &control, run).await;
            self.record_run(id, &outcome).await;

            if let Some(failure @ Failure::AuditUnavailable { .. }) = outcome.failure() {
                // Not run, or stopped, because the audit log cannot be
                // written: failed for good, whatever the restart policy.
                self.clear_requests(&control);
                self.settle(id, ContainerStatus::Failed(failure.clone()), &outcome);
                return outcome;
            }
            let stop_requested = control.stop_requested();
            if stop_requested || matches!(outcome.end, RunEnd::Stopped { .. }) {
                self.clear_requests(&control);
                self.settle(id, ContainerStatus::Stopped, &outcome);
                return outcome;
            }
            let failure = outcome.failure().cloned();
            if outcome.stats.wall_time >= backoff.reset_after {
                consecutive_failures = 0;
                attempt = 0;
            }
            if failure.is_some() {
                consecutive_failures += 1;
            }
            let permanent = failure.as_ref().is_some_and(Failure::is_permanent);
            let restart = !permanent
                && match policy {
                    RestartPolicy::Never => false,
                    RestartPolicy::OnFailure => failure.is_some(),
                    RestartPolicy::Always => true,
                };
            let ended_status = match &failure {
                Some(f) => ContainerStatus::Failed(f.clone()),
                None => ContainerStatus::Stopped,
            };
            if !restart {
                self.settle(id, ended_status, &outcome);
                return outcome;
            }
            if let Some(last_failure) = failure.clone()
                && backoff.crash_loop_threshold > 0
                && consecutive_failures >= backoff.crash_loop_threshold
            {
                let quarantine = self
                    .quarantine(id, consecutive_failures, last_failure, &outcome)
                    .await;
                self.settle(
                    id,
                    ContainerStatus::Quarantined(Box::new(quarantine)),
                    &outcome,
                );
                Self::wait_for(&control, None, |c| {
                    let r = c.lock();
                    r.released || r.stop_at.is_some()
                })
                .await;
                if control.stop_requested() {
                    self.clear_requests(&control);
                    self.settle(id, ContainerStatus::Stopped, &outcome);
                    return outcome;
                }
                control.lock().released = false;
                consecutive_failures = 0;
                attempt = 0;
                continue;
            }
            attempt += 1;
            let delay = backoff.delay(attempt);
            {
                let mut containers = self.containers();
                if let Some(entry) = containers.get_mut(&id) {
                    entry.ctx.status = ended_status;
                    entry.ctx.next_restart = chrono::Duration::from_std(delay)
                        .ok()
                        .map(|d| chrono::Utc::now() + d);
                    if let Some(last) = entry.ctx.history.last_mut() {
                        last.backoff = delay;
                    }
                }
            }
            let event = ContainerEvent::RestartScheduled {
                run: run + 1,
                backoff_ms: delay.as_millis() as u64,
                policy: policy.as_str(),
            };
            let entry = self.entry_for(id, event);
            self.audit_async(id, entry).await;
            Self::wait_for(&control, Some(delay), |c| c.stop_requested()).await;
            if control.stop_requested() {
                self.clear_requests(&control);
                self.settle(id, ContainerStatus::Stopped, &outcome);
                return outcome;
            }
            self.set_status(id, ContainerStatus::Creating);
        }
    }

    /// Starts run number `run`: its `container.started` record made
    /// durable (with the store set up meanwhile), then the guest under the
    /// audit failure policy.
    async fn start_run(
        &self,
        id: Uuid,
        spec: &RunSpec,
        control: &Arc<Control>,
        run: u32,
    ) -> Outcome {
        {
            let mut containers = self.containers();
            if let Some(entry) = containers.get_mut(&id) {
                entry.ctx.run = run;
                entry.ctx.next_restart = None;
                // Not running until its start is on the record: while
                // `container.started` is made durable the run is being
                // created (a stop meanwhile needs no grace period).
                entry.ctx.status = ContainerStatus::Creating;
            }
        }
        // Built from the run's identity, with its shared actor and
        // subjects: no strings are copied per record.
        let entry = spec.identity.entry(ContainerEvent::Started { run });
        let mut durable = std::pin::pin!(self.durable_start(entry));
        // The first poll queues `container.started` and asks the writer
        // for the fsync; while it works (on another core), the run's
        // store and WASI context are set up here. Nothing of the guest
        // runs before the records are durable: instantiation (which
        // may run a module's start function) comes after.
        let queued = std::future::poll_fn(|cx| Poll::Ready(durable.as_mut().poll(cx))).await;
        let prepared = Run::prepare(spec, control.clone(), run);
        let written = match queued {
            Poll::Ready(written) => written,
            Poll::Pending => durable.await,
        };
        match written {
            Ok(()) => {
                if let Some(entry) = self.containers().get_mut(&id)
                    && entry.ctx.status == ContainerStatus::Creating
                {
                    entry.ctx.status = ContainerStatus::Running;
                }
                self.run_guarded(id, prepared, control, run).await
            }
            Err(failure) => Outcome {
                end: RunEnd::Failed(failure),
                stats: RunStats::default(),
                run,
                last_output: Vec::new(),
            },
        }
    }

    fn stopped_before_run(&self, id: Uuid, control: &Control, run: u32) -> Outcome {
        let outcome = Outcome {
            end: RunEnd::Stopped { forced: false },
            stats: RunStats::default(),
            run: run.saturating_sub(1),
            last_output: Vec::new(),
        };
        self.clear_requests(control);
        self.settle(id, ContainerStatus::Stopped, &outcome);
        outcome
    }

    fn clear_requests(&self, control: &Control) {
        let mut requests = control.lock();
        requests.stop_at = None;
        requests.paused = false;
        requests.paused_since = None;
        requests.released = false;
    }

    async fn quarantine(
        &self,
        id: Uuid,
        failures: u32,
        last_failure: Failure,
        outcome: &Outcome,
    ) -> Quarantine {
        let history = self
            .containers()
            .get(&id)
            .map(|e| e.ctx.history.clone())
            .unwrap_or_default();
        let last_output = outcome.last_output.clone();
        let quarantine = Quarantine {
            failures,
            last_failure: last_failure.clone(),
            fuel_consumed: outcome.stats.fuel_consumed,
            last_output: last_output.clone(),
            restart_history: history.clone(),
        };
        let event = ContainerEvent::Quarantined {
            failures,
            last_failure,
            fuel_consumed: outcome.stats.fuel_consumed,
            // Lines are kept escaped; the event escapes them once more so
            // the record shows exactly what the evidence holds.
            last_output: last_output
                .iter()
                .map(|l| crate::audit::Untrusted::new(l))
                .collect(),
            restart_history: history
                .iter()
                .map(|h| serde_json::to_value(h).unwrap_or_default())
                .collect(),
        };
        let entry = self.entry_for(id, event);
        self.audit_async(id, entry).await;
        quarantine
    }

    /// Appends the run's `container.started` and waits until it, the
    /// container's `container.created` and everything before them are
    /// durable: no guest instruction runs before its start is on disk.
    /// `Err` (the run must not start) when the log cannot take them.
    async fn durable_start(&self, started: Entry) -> Result<(), Failure> {
        let audit = &self.inner.audit;
        let result = match audit.append_async(started).await {
            Ok(_) => audit.flush_async().await,
            Err(e) => Err(e),
        };
        result.map_err(|e| Failure::AuditUnavailable {
            log: audit.path().to_path_buf(),
            cause: e.to_string(),
        })
    }

    /// One run of the guest (its store prepared by [`Run::prepare`]), then
    /// its output: the last of it cut into records and every record
    /// queued in the log.
    pub(super) async fn run_once(prepared: Result<Run, RuntimeError>, run: u32) -> Outcome {
        match prepared {
            Ok(prepared) => {
                let capture = prepared.capture();
                let outcome = prepared.into_future().await;
                capture.finish();
                capture.drain().await;
                outcome
            }
            Err(e) => Outcome {
                end: RunEnd::Failed(Failure::Instantiate {
                    message: e.to_string(),
                }),
                stats: RunStats::default(),
                run,
                last_output: Vec::new(),
            },
        }
    }
}
