//! Phase 3: the components, each checked against its manifest entry
//! (rollback, boot assessment, size, blake3 over every byte, the Wasm
//! header), refused ones replaced by a last-known-good copy when one
//! verifies ([`super::recovery`]) or left out.

use std::path::PathBuf;

use crate::audit::Untrusted;
use crate::boot::context::{LeftOut, Recovery};
use crate::boot::event::{BootEvent, Emitter};
use crate::boot::manifest::{BootManifest, ManifestComponent};
use crate::boot::measure::{MeasurementStatus, component_measurement};
use crate::boot::read::{read_component, wasm_kind};
use crate::boot::rollback::check_component_version;
use crate::boot::state::{BootState, CopyStatus};
use crate::boot::status::BootPolicy;
use crate::boot::{BootError, Digest, Provenance, VerifiedComponent};
use crate::keys::KeyId;

use super::recovery::Fallback;
use super::{BootBuilder, Run, Tally};

impl BootBuilder {
    /// Measures every component of the verified `manifest`, in order.
    pub(super) fn components(
        &self,
        run: &mut Run<'_>,
        manifest: &BootManifest,
        signers: &[KeyId],
    ) -> Result<Tally, BootError> {
        let mut tally = Tally::default();
        for entry in manifest.components() {
            self.report_progress(&format!(
                "measuring {} {} ({})",
                entry.name,
                entry.version,
                bytesize::ByteSize::b(entry.size)
            ));
            match self.measure_component(&run.emit, run.state.as_ref(), manifest, entry, signers) {
                Ok(component) => {
                    run.measure(component_measurement(
                        entry,
                        Some(component.digest()),
                        run.now,
                        MeasurementStatus::Valid,
                        None,
                    ));
                    run.emit.emit(
                        &BootEvent::ComponentMeasured {
                            name: entry.name.clone(),
                            version: entry.version.clone(),
                            digest: component.digest().to_hex(),
                            expected: entry.blake3.to_hex(),
                            size: entry.size,
                            status: MeasurementStatus::Valid.as_str(),
                        },
                        Some(component.digest()),
                    )?;
                    tally.runs(&manifest.path_of(entry), component);
                }
                Err((error, measured)) => {
                    let path = manifest.path_of(entry);
                    self.refused(run, &mut tally, path, entry, error, measured, signers)?;
                }
            }
        }
        Ok(tally)
    }

    /// Measures and audits a refused component, then recovers it or leaves
    /// it out.
    #[allow(clippy::too_many_arguments)]
    fn refused(
        &self,
        run: &mut Run<'_>,
        tally: &mut Tally,
        path: PathBuf,
        entry: &ManifestComponent,
        error: BootError,
        measured: Option<Digest>,
        signers: &[KeyId],
    ) -> Result<(), BootError> {
        if matches!(error, BootError::Audit(_) | BootError::StateCorrupt { .. }) {
            return Err(error);
        }
        let status = if measured.is_some() {
            MeasurementStatus::Invalid
        } else {
            MeasurementStatus::NotMeasured
        };
        run.measure(component_measurement(
            entry,
            measured,
            run.now,
            status,
            Some(error.to_string()),
        ));
        run.emit.emit(
            &BootEvent::ComponentRefused {
                name: Untrusted::new(&entry.name),
                version: Some(entry.version.clone()),
                code: error.code(),
                reason: error.to_string(),
                expected: Some(entry.blake3.to_hex()),
                measured: measured.map(|d| d.to_hex()),
            },
            Some(measured.unwrap_or(entry.blake3)),
        )?;
        let fallback = match self.policy.recovers() {
            true => self.recover(run, entry, &error, measured, signers)?,
            false => Fallback::Unavailable { note: None },
        };
        match fallback {
            Fallback::Used {
                component,
                reason,
                downgraded_from,
            } => {
                tally.recovered.push(Recovery {
                    name: entry.name.clone(),
                    path: path.clone(),
                    failed_digest: measured,
                    reason,
                    digest: component.digest(),
                    version: component.version().to_owned(),
                    downgraded_from,
                });
                tally.runs(&path, component);
            }
            Fallback::Unavailable { note } => {
                let reason = match note {
                    Some(note) => format!("{error}; {note}"),
                    None => error.to_string(),
                };
                if self.policy == BootPolicy::Degraded {
                    run.emit.emit(
                        &BootEvent::ComponentLeftOut {
                            name: entry.name.clone(),
                            reason: reason.clone(),
                            policy: self.policy.as_str(),
                        },
                        Some(entry.blake3),
                    )?;
                }
                tally.left_out(LeftOut {
                    name: entry.name.clone(),
                    version: entry.version.clone(),
                    path,
                    reason,
                });
            }
        }
        Ok(())
    }

    /// Checks one manifest entry: rollback, boot assessment, then the bytes
    /// (read once, hashed while read), then the Wasm header. On failure,
    /// returns the digest of the bytes if they were measured.
    // The error is large, but this is a private function on the refusal path.
    #[allow(clippy::result_large_err)]
    fn measure_component(
        &self,
        emit: &Emitter<'_>,
        state: Option<&BootState>,
        manifest: &BootManifest,
        entry: &ManifestComponent,
        signers: &[KeyId],
    ) -> Result<VerifiedComponent, (BootError, Option<Digest>)> {
        if let Some(state) = state {
            check_component_version(
                emit,
                state,
                &entry.name,
                &entry.version,
                Some(entry.blake3),
                self.allow_downgrade,
            )
            .map_err(|e| (e, None))?;
            if let Some(bad) = state
                .copies(&entry.name)
                .into_iter()
                .find(|c| c.digest == entry.blake3 && c.status == CopyStatus::Bad)
            {
                return Err((
                    BootError::MarkedBad {
                        name: entry.name.clone(),
                        digest: bad.digest,
                        failures: bad.failures,
                    },
                    None,
                ));
            }
        }
        let path = manifest.path_of(entry);
        let (bytes, digest) = read_component(
            &path,
            &entry.name,
            self.max_component_size,
            Some(entry.size),
        )
        .map_err(|e| (e, None))?;
        if digest != entry.blake3 {
            return Err((
                BootError::DigestMismatch {
                    name: entry.name.clone(),
                    expected: entry.blake3,
                    actual: digest,
                },
                Some(digest),
            ));
        }
        wasm_kind(&bytes).map_err(|reason| {
            (
                BootError::NotWasm {
                    name: entry.name.clone(),
                    reason,
                },
                Some(digest),
            )
        })?;
        Ok(VerifiedComponent::verified(
            entry.name.clone(),
            entry.version.clone(),
            digest,
            bytes,
            signers.to_vec(),
            Provenance::Manifest {
                release: manifest.release().to_owned(),
            },
        ))
    }
}
