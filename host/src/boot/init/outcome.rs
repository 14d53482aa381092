//! Phase 4: the outcome under the policy, the state written (last-known-good
//! copies of what booted verified), `boot.completed` and the quote.

use crate::audit::Untrusted;
use crate::boot::BootError;
use crate::boot::Provenance;
use crate::boot::context::BootContext;
use crate::boot::event::{BootEvent, Emitter};
use crate::boot::manifest::BootManifest;
use crate::boot::status::{BootOutcome, BootPolicy, IntegrityStatus};

use super::{BootBuilder, Run, Tally};

impl BootBuilder {
    /// Decides the outcome, keeps copies of what booted verified under
    /// `manifest` (none in a boot by signatures), and completes the boot.
    pub(super) fn outcome(
        &self,
        run: Run<'_>,
        manifest: Option<BootManifest>,
        mut tally: Tally,
    ) -> Result<BootContext, BootError> {
        let (outcome, integrity) = self.decide(&tally);
        if outcome == BootOutcome::Compromised {
            tally.hold_back(&format!(
                "verified, but nothing runs: the boot is {integrity}"
            ));
        }
        let Tally {
            components,
            recovered,
            left_out,
            files,
        } = tally;
        if let Some(state) = &run.state {
            if let Some(manifest) = &manifest
                && outcome != BootOutcome::Compromised
            {
                for component in &components {
                    if matches!(component.provenance(), Provenance::Manifest { .. }) {
                        state.store_copy(component, manifest, run.now, self.allow_downgrade)?;
                    }
                }
            }
            state.prune_and_save()?;
        }
        let ctx = BootContext {
            trust_anchor: run.anchor,
            boot_measurements: run.measurements,
            integrity_status: integrity,
            boot_time: run.now,
            outcome,
            components,
            recovered,
            left_out,
            register: run.register.value(),
            release: manifest.as_ref().map(|m| m.release().to_owned()),
            manifest_version: manifest.as_ref().map(BootManifest::version),
            quote: None,
            state: run.state,
            manifest,
            files,
        };
        self.complete(&run.emit, ctx)
    }

    /// The outcome and integrity of a boot that found `tally`, under the
    /// policy.
    pub(super) fn decide(&self, tally: &Tally) -> (BootOutcome, IntegrityStatus) {
        let downgrades = tally
            .recovered
            .iter()
            .filter_map(|r| {
                let from = r.downgraded_from.as_ref()?;
                Some(format!(
                    "{} {from} -> {} (last-known-good copy, allowed explicitly)",
                    r.name, r.version
                ))
            })
            .collect::<Vec<_>>()
            .join("; ");
        let left_out = &tally.left_out;
        if left_out.is_empty() {
            return if !downgrades.is_empty() {
                (
                    BootOutcome::Downgraded,
                    IntegrityStatus::Compromised(format!("downgraded: {downgrades}")),
                )
            } else if tally.recovered.is_empty() {
                (BootOutcome::Verified, IntegrityStatus::Verified)
            } else {
                (BootOutcome::Recovered, IntegrityStatus::Verified)
            };
        }
        let reasons = left_out
            .iter()
            .map(|l| format!("{}: {}", l.name, l.reason))
            .collect::<Vec<_>>()
            .join("; ");
        match self.policy {
            BootPolicy::Degraded => {
                let mut reason = format!(
                    "degraded: {} component(s) left out ({reasons})",
                    left_out.len()
                );
                if !downgrades.is_empty() {
                    reason.push_str(&format!("; downgraded: {downgrades}"));
                }
                (BootOutcome::Degraded, IntegrityStatus::Compromised(reason))
            }
            _ => (
                BootOutcome::Compromised,
                IntegrityStatus::Compromised(format!("failed closed: {reasons}")),
            ),
        }
    }

    /// Writes `boot.completed` and signs the quote.
    pub(super) fn complete(
        &self,
        emit: &Emitter<'_>,
        mut ctx: BootContext,
    ) -> Result<BootContext, BootError> {
        emit.emit(
            &BootEvent::Completed {
                outcome: ctx.outcome.as_str(),
                integrity: ctx.integrity_status.to_string(),
                register: ctx.register.to_hex(),
                components: ctx
                    .components
                    .iter()
                    .map(|c| format!("{}@{} {}", c.name(), c.version(), c.digest()))
                    .collect(),
                recovered: ctx.recovered.iter().map(|r| r.name.clone()).collect(),
                left_out: ctx.left_out.iter().map(|l| l.name.clone()).collect(),
                measurements: ctx.boot_measurements.len(),
            },
            None,
        )?;
        if let Some(key) = &self.host_key {
            let quote = ctx.sign_quote(key, self.quote_nonce.as_deref());
            emit.emit(
                &BootEvent::QuoteSigned {
                    register: ctx.register.to_hex(),
                    host_key: key.id().to_string(),
                    quote_digest: quote.digest().to_hex(),
                    nonce: self.quote_nonce.as_deref().map(Untrusted::new),
                },
                None,
            )?;
            ctx.quote = Some(quote);
        }
        Ok(ctx)
    }
}
