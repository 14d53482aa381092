//! Boot assessment, in the style of systemd's: a component that booted as
//! a new (pending) version becomes last-known-good once one of its
//! containers has run healthily, and counts a failed start when one
//! crash-loops into quarantine or fails. The verdict goes to the boot
//! state the component came from ([`BootState::record_start`]), which
//! audits it and marks a version bad after too many failed starts, so the
//! next boot falls back to the previous good copy.

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use crate::boot::{BootContext, BootState, Digest, VerifiedComponent};
use crate::runtime::{ContainerStatus, RunEnd, Runtime};

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
    /// The first run this assessment watches.
    first_run: u32,
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
            first_run: runtime.context(container).map_or(1, |c| c.run + 1),
            healthy_after,
        });
        Assessment { inner }
    }

    /// Runs until the verdict is recorded or the container settles without
    /// one (stopped by an operator before it proved healthy).
    pub(super) async fn run(self) {
        let Some(a) = self.inner else { return };
        if let Some(ok) = a.verdict().await {
            // Recorded and audited by the state; a failure to write it is
            // audited there too, and must not disturb the container.
            if let Err(e) = a.state.record_start(&a.name, a.digest, ok) {
                tracing::warn!(
                    component = %a.name,
                    "boot assessment of {} could not be recorded: {e}",
                    a.digest
                );
            }
        }
    }
}

impl Inner {
    /// `Some(true)` once a run exits 0 or keeps running for
    /// `healthy_after`; `Some(false)` when the container settles failed or
    /// quarantined; `None` when it was stopped before either.
    async fn verdict(&self) -> Option<bool> {
        // The run that must stay up for a whole interval to count.
        let mut watching = self.first_run;
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
                        Ok(RunEnd::Failed(_)) => Some(false),
                        _ => None,
                    };
                }
                () = tokio::time::sleep(self.healthy_after) => {
                    // Removed by an operator: no verdict.
                    let ctx = self.runtime.context(self.container)?;
                    if ctx.status == ContainerStatus::Running && ctx.run == watching {
                        return Some(true);
                    }
                    // A later run: it must now last a whole interval.
                    watching = if ctx.status == ContainerStatus::Running {
                        ctx.run
                    } else {
                        ctx.run + 1
                    };
                }
            }
        }
    }
}
