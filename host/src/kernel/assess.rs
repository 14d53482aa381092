//! Boot assessment, in the style of systemd's: a component that booted as
//! a new (pending) version becomes last-known-good once one of its
//! containers has run healthily, and counts a failed start when one
//! crash-loops into quarantine or fails. The verdict goes to the boot
//! state the component came from ([`BootState::record_start`]), which
//! audits it and marks a version bad after too many failed starts, so the
//! next boot falls back to the previous good copy.

use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::boot::{BootContext, BootState, Digest, VerifiedComponent};
use crate::runtime::{ContainerStatus, Failure, RunEnd, Runtime};

/// Watches one container for its component's verdict.
pub(super) struct Assessment {
    inner: Option<Inner>,
}

struct Inner {
    state: BootState,
    runtime: Runtime,
    name: String,
    digest: Digest,
    container: Uuid,
    /// Successful runs before this assessment began.
    base_successes: u64,
    healthy_after: Duration,
}

impl Assessment {
    /// An assessment of `container` running `component`, when the kernel
    /// booted from a state directory; otherwise one that does nothing.
    /// Made before the container's next run starts.
    pub(super) fn new(
        boot: Option<&Arc<BootContext>>,
        runtime: &Runtime,
        component: &VerifiedComponent,
        container: Uuid,
        healthy_after: Duration,
    ) -> Assessment {
        let inner = boot.and_then(|b| b.state()).map(|state| Inner {
            state: state.clone(),
            runtime: runtime.clone(),
            name: component.name().to_owned(),
            digest: component.digest(),
            container,
            base_successes: runtime.context(container).map_or(0, |c| c.totals.successes),
            healthy_after,
        });
        Assessment { inner }
    }

    /// Runs until the verdict is recorded or the container settles without
    /// one (stopped by an operator before it proved healthy).
    pub(super) async fn run(self) {
        let Some(a) = self.inner else { return };
        let Some(ok) = a.verdict().await else { return };
        // Recorded (atomically, with an fsync) and audited by the state, off
        // the executor's workers; a failure to record must not disturb the
        // container.
        let Inner {
            state,
            name,
            digest,
            ..
        } = a;
        let recorded = tokio::task::spawn_blocking(move || {
            state.record_start(&name, digest, ok).map_err(|e| {
                format!("boot assessment of {name} {digest} could not be recorded: {e}")
            })
        })
        .await;
        match recorded {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!("{e}"),
            Err(e) => tracing::warn!("boot assessment task failed: {e}"),
        }
    }
}

impl Inner {
    /// `Some(true)` once a run exits 0 or keeps running for
    /// `healthy_after`; `Some(false)` when the container settles failed or
    /// quarantined; `None` when it was stopped (or removed) before either.
    async fn verdict(&self) -> Option<bool> {
        // Checked at least every second, so that a service restarted
        // `always` is confirmed by its first exit 0 without waiting for a
        // whole `healthy_after`.
        let poll = self.healthy_after.min(Duration::from_secs(1));
        // The run seen going, and since when.
        let mut seen: Option<(u32, Instant)> = None;
        let settled = self.runtime.wait(self.container);
        tokio::pin!(settled);
        loop {
            tokio::select! {
                outcome = &mut settled => {
                    // Decided by the outcome it settled with, not by its
                    // status now: an operator may already be stopping it.
                    // A failure it settled with failed it for good or
                    // quarantined it.
                    return match outcome.map(|o| o.end) {
                        Ok(RunEnd::Success) => Some(true),
                        // The audit log failed, not the component.
                        Ok(RunEnd::Failed(Failure::AuditUnavailable { .. })) => None,
                        Ok(RunEnd::Failed(_)) => Some(false),
                        _ => None,
                    };
                }
                () = tokio::time::sleep(poll) => {
                    let ctx = self.runtime.context(self.container)?;
                    if ctx.totals.successes > self.base_successes {
                        return Some(true);
                    }
                    match ctx.status {
                        ContainerStatus::Running | ContainerStatus::Paused => {
                            let since = match seen {
                                Some((run, since)) if run == ctx.run => since,
                                _ => {
                                    seen = Some((ctx.run, Instant::now()));
                                    continue;
                                }
                            };
                            if ctx.status == ContainerStatus::Running
                                && since.elapsed() >= self.healthy_after
                            {
                                return Some(true);
                            }
                        }
                        // Between runs: the next run starts its own clock.
                        _ => seen = None,
                    }
                }
            }
        }
    }
}
