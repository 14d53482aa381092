//! Recovery: a refused component replaced by a last-known-good copy from
//! the state directory that still verifies against the current anchor.

use crate::audit::Untrusted;
use crate::boot::anchor::TrustAnchor;
use crate::boot::event::BootEvent;
use crate::boot::manifest::{BootManifest, ManifestComponent};
use crate::boot::measure::{Measurement, MeasurementKind, MeasurementStatus};
use crate::boot::read::{read_component, wasm_kind};
use crate::boot::state::{BootState, CopyStatus, StoredCopy};
use crate::boot::{BootError, Digest, Provenance, VerifiedComponent};
use crate::keys::KeyId;

use super::{BootBuilder, Run};

impl BootBuilder {
    /// Looks for a last-known-good copy of `entry` that still verifies:
    /// the exact bytes the manifest lists first, then good copies, then
    /// pending ones, newest first; never a copy marked bad, and after a
    /// rollback refusal never one older than the highest accepted version.
    pub(super) fn recover(
        &self,
        run: &mut Run<'_>,
        entry: &ManifestComponent,
        error: &BootError,
        failed: Option<Digest>,
        signers: &[KeyId],
    ) -> Result<Option<(VerifiedComponent, String)>, BootError> {
        let Some(state) = run.state.clone() else {
            return Ok(None);
        };
        let floor = match error {
            BootError::Rollback { .. } => state
                .highest_version(&entry.name)
                .and_then(|h| semver::Version::parse(&h).ok()),
            _ => None,
        };
        let mut candidates: Vec<StoredCopy> = state
            .copies(&entry.name)
            .into_iter()
            .filter(|c| c.status != CopyStatus::Bad && Some(c.digest) != failed)
            .filter(|c| match (&floor, semver::Version::parse(&c.version)) {
                (Some(floor), Ok(v)) => v >= *floor,
                (Some(_), Err(_)) => false,
                (None, _) => true,
            })
            .collect();
        // Stable sort of the newest-first list: exact match, then good, then pending.
        candidates.sort_by_key(|c| {
            let exact = c.digest == entry.blake3 && c.version == entry.version;
            (!exact, c.status != CopyStatus::Good)
        });
        for copy in candidates {
            self.report_progress(&format!(
                "trying the last-known-good copy of {} ({})",
                entry.name,
                copy.digest.short()
            ));
            match self.verify_copy(&state, &run.anchor, entry, &copy, error, signers, run.now) {
                Ok(component) => {
                    let reason = format!(
                        "{}; booted the last-known-good copy {}@{} instead",
                        error,
                        component.version(),
                        component.digest()
                    );
                    run.measure(Measurement {
                        component: entry.name.clone(),
                        kind: MeasurementKind::Recovery,
                        version: component.version().to_owned(),
                        hash: component.digest().to_hex(),
                        expected_hash: copy.digest.to_hex(),
                        timestamp: run.now,
                        status: MeasurementStatus::Valid,
                        reason: Some(reason.clone()),
                    });
                    run.emit.emit(
                        &BootEvent::ComponentRecovered {
                            name: entry.name.clone(),
                            failed_digest: failed.map(|d| d.to_hex()),
                            digest: component.digest().to_hex(),
                            version: component.version().to_owned(),
                            reason: error.to_string(),
                        },
                        Some(component.digest()),
                    )?;
                    return Ok(Some((component, reason)));
                }
                Err(copy_error) => {
                    run.emit.emit(
                        &BootEvent::ComponentRefused {
                            name: Untrusted::new(&entry.name),
                            version: Some(copy.version.clone()),
                            code: copy_error.code(),
                            reason: format!(
                                "last-known-good copy {} does not verify: {copy_error}",
                                copy.digest
                            ),
                            expected: Some(copy.digest.to_hex()),
                            measured: None,
                        },
                        Some(copy.digest),
                    )?;
                }
            }
        }
        Ok(None)
    }

    /// Re-verifies a stored copy: its bytes against its digest, its header,
    /// and its authorisation: the current manifest when it lists exactly
    /// these bytes, otherwise the stored manifest that listed them, which
    /// must still verify under the current anchor (signatures and expiry).
    #[allow(clippy::too_many_arguments)]
    fn verify_copy(
        &self,
        state: &BootState,
        anchor: &TrustAnchor,
        entry: &ManifestComponent,
        copy: &StoredCopy,
        error: &BootError,
        signers: &[KeyId],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<VerifiedComponent, BootError> {
        let path = state.object_path(&copy.digest);
        let (bytes, digest) =
            read_component(&path, &entry.name, self.max_component_size, Some(copy.size))?;
        if digest != copy.digest {
            return Err(BootError::DigestMismatch {
                name: entry.name.clone(),
                expected: copy.digest,
                actual: digest,
            });
        }
        wasm_kind(&bytes).map_err(|reason| BootError::NotWasm {
            name: entry.name.clone(),
            reason,
        })?;
        let (version, signers) = if copy.digest == entry.blake3 && copy.size == entry.size {
            (entry.version.clone(), signers.to_vec())
        } else {
            let stored = BootManifest::from_file(state.manifest_path(&copy.manifest))?;
            if stored.digest() != copy.manifest {
                return Err(BootError::StateCorrupt {
                    path: state.manifest_path(&copy.manifest),
                    reason: format!("holds manifest {}", stored.digest()),
                });
            }
            let signers = stored.verify(anchor, now)?;
            let listed = stored
                .components()
                .iter()
                .find(|c| c.name == entry.name && c.blake3 == copy.digest && c.size == copy.size)
                .ok_or_else(|| BootError::Invalid {
                    what: format!("stored manifest {} v{}", stored.release(), stored.version()),
                    reason: format!("does not list {} {}", entry.name, copy.digest),
                })?;
            (listed.version.clone(), signers)
        };
        Ok(VerifiedComponent::verified(
            entry.name.clone(),
            version,
            digest,
            bytes,
            signers,
            Provenance::Recovered {
                reason: error.to_string(),
            },
        ))
    }
}
