//! Phase 1: the trust anchor: loaded, within its validity, and (with a
//! state directory) the pinned one, an authorised rotation of it, or an
//! explicitly allowed downgrade.

use crate::boot::BootError;
use crate::boot::anchor::TrustAnchor;
use crate::boot::event::{BootEvent, Emitter};
use crate::boot::measure::{MeasurementRegister, anchor_measurement};
use crate::boot::rollback::check_pin;
use crate::boot::state::BootState;

use super::{BootBuilder, Mode, Run, Source};

impl BootBuilder {
    /// Loads and checks the anchor, opens the state directory and checks
    /// the pin; returns the boot in progress with the anchor measured.
    pub(super) fn trust_anchor<'a>(
        &self,
        emit: Emitter<'a>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Run<'a>, BootError> {
        self.report_progress("verifying the trust anchor");
        let anchor = match &self.anchor {
            Source::Loaded(anchor) => anchor.clone(),
            Source::File(path) => {
                TrustAnchor::from_file(path).map_err(|e| self.refuse_anchor(&emit, e, None))?
            }
        };
        anchor
            .check_time(now)
            .map_err(|e| self.refuse_anchor(&emit, e, Some(&anchor)))?;
        let state = match (&self.state, &self.state_dir) {
            (Some(state), _) => Some(state.clone()),
            (None, Some(dir)) => Some(BootState::open_waiting(dir, self.lock_timeout, |lock| {
                if let Some(tell) = &self.on_lock_wait {
                    tell(lock);
                }
            })?),
            (None, None) => None,
        };
        if let (Mode::Signatures(_), Some(state)) = (&self.mode, &state) {
            self.refuse_signatures_after_manifest(&emit, state)?;
        }
        if let Some(state) = &state {
            state.set_max_tries(self.max_tries);
            if let Some(log) = &self.audit {
                state.set_audit(log.clone());
            }
        }
        let pin = match &state {
            Some(state) => check_pin(&emit, state, &anchor, self.allow_downgrade, |e| {
                self.refuse_anchor(&emit, e, Some(&anchor))
            })?,
            None => "unpinned",
        };
        let mut run = Run {
            emit,
            now,
            measurements: Vec::new(),
            register: MeasurementRegister::new(),
            anchor,
            state,
        };
        run.measure(anchor_measurement(&run.anchor, now));
        let anchor = &run.anchor;
        run.emit.emit(
            &BootEvent::AnchorVerified {
                anchor_id: anchor.id().to_string(),
                version: anchor.version(),
                digest: anchor.digest().to_hex(),
                signers: anchor.signers().iter().map(ToString::to_string).collect(),
                expires_at: anchor.expires_at(),
                pin,
            },
            None,
        )?;
        Ok(run)
    }

    /// Audits an anchor refusal; returns the error to propagate (the audit
    /// error, if the refusal itself cannot be audited).
    fn refuse_anchor(
        &self,
        emit: &Emitter<'_>,
        error: BootError,
        anchor: Option<&TrustAnchor>,
    ) -> BootError {
        if let BootError::Rollback {
            what,
            found,
            highest,
        } = &error
            && let Err(audit) = emit.emit(
                &BootEvent::RollbackRefused {
                    what: what.clone(),
                    found: found.clone(),
                    highest: highest.clone(),
                },
                None,
            )
        {
            return audit;
        }
        match emit.emit(
            &BootEvent::AnchorRefused {
                code: error.code(),
                reason: error.to_string(),
                anchor_id: anchor.map(|a| a.id().to_string()),
                version: anchor.map(TrustAnchor::version),
            },
            None,
        ) {
            Ok(()) => error,
            Err(audit) => audit,
        }
    }
}
