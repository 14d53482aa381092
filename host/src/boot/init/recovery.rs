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
    /// Looks for a last-known-good copy of `entry` that still verifies: the
    /// exact bytes the manifest lists first, then good copies, then pending
    /// ones, newest first, copies at or above the highest accepted version
    /// before older ones; never a copy marked bad.
    ///
    /// The highest accepted version is the larger of the version the state
    /// records and the version the verified manifest lists (only the listed
    /// one when the operator allowed a downgrade to it). A copy below it is
    /// used only with [`BootBuilder::allow_recovery_downgrade`], and then as
    /// a downgrade; the recorded version is never lowered by a recovery.
    pub(super) fn recover(
        &self,
        run: &mut Run<'_>,
        entry: &ManifestComponent,
        error: &BootError,
        failed: Option<Digest>,
        signers: &[KeyId],
    ) -> Result<Fallback, BootError> {
        let Some(state) = run.state.clone() else {
            return Ok(Fallback::Unavailable { note: None });
        };
        let floor = self.highest_accepted(&state, entry);
        let below = |version: &str| semver::Version::parse(version).map_or(true, |v| v < floor);
        let mut candidates: Vec<StoredCopy> = state
            .copies(&entry.name)
            .into_iter()
            .filter(|c| c.status != CopyStatus::Bad && Some(c.digest) != failed)
            .collect();
        // Stable sort of the newest-first list: not a downgrade, exact match,
        // then good before pending.
        candidates.sort_by_key(|c| {
            let exact = c.digest == entry.blake3 && c.version == entry.version;
            (below(&c.version), !exact, c.status != CopyStatus::Good)
        });
        let mut refused_downgrade = None;
        for copy in candidates {
            self.report_progress(&format!(
                "trying the last-known-good copy of {} ({})",
                entry.name,
                copy.digest.short()
            ));
            let component = match self.verify_copy(
                &state,
                &run.anchor,
                entry,
                &copy,
                error,
                signers,
                run.now,
            ) {
                Ok(component) => component,
                Err(copy_error) => {
                    let reason = format!(
                        "last-known-good copy {} does not verify: {copy_error}",
                        copy.digest
                    );
                    refuse_copy(run, entry, &copy, copy_error.code(), reason)?;
                    continue;
                }
            };
            // The version that counts is the one its signed manifest lists.
            if !below(component.version()) {
                return self.recovered(run, entry, error, failed, component, None);
            }
            if self.allow_recovery_downgrade {
                let from = floor.to_string();
                return self.recovered(run, entry, error, failed, component, Some(from));
            }
            let note = format!(
                "its last-known-good copy {}@{} would downgrade it from {floor}, and recovery \
                 downgrades are not allowed",
                component.version(),
                component.digest()
            );
            refuse_copy(
                run,
                entry,
                &copy,
                "recovery-downgrade",
                format!("last-known-good copy: {note}"),
            )?;
            refused_downgrade.get_or_insert(note);
        }
        Ok(Fallback::Unavailable {
            note: refused_downgrade,
        })
    }

    /// The version below which a fall-back is a downgrade.
    fn highest_accepted(&self, state: &BootState, entry: &ManifestComponent) -> semver::Version {
        let listed = semver::Version::parse(&entry.version)
            .expect("a verified manifest lists semantic versions");
        if self.allow_downgrade {
            return listed;
        }
        state
            .highest_version(&entry.name)
            .and_then(|h| semver::Version::parse(&h).ok())
            .map_or(listed.clone(), |recorded| recorded.max(listed))
    }

    /// Measures and audits the copy used for `entry`: a recovery, or (when
    /// `downgraded_from` is set) a downgrade.
    fn recovered(
        &self,
        run: &mut Run<'_>,
        entry: &ManifestComponent,
        error: &BootError,
        failed: Option<Digest>,
        component: VerifiedComponent,
        downgraded_from: Option<String>,
    ) -> Result<Fallback, BootError> {
        let reason = match &downgraded_from {
            None => format!(
                "{error}; booted the last-known-good copy {}@{} instead",
                component.version(),
                component.digest()
            ),
            Some(from) => format!(
                "{error}; booted the older last-known-good copy {}@{} instead: a downgrade \
                 from {from}, allowed explicitly",
                component.version(),
                component.digest()
            ),
        };
        run.measure(Measurement {
            component: entry.name.clone(),
            kind: MeasurementKind::Recovery,
            version: component.version().to_owned(),
            hash: component.digest().to_hex(),
            expected_hash: component.digest().to_hex(),
            timestamp: run.now,
            status: MeasurementStatus::Valid,
            reason: Some(reason.clone()),
        });
        let event = match &downgraded_from {
            None => BootEvent::ComponentRecovered {
                name: entry.name.clone(),
                failed_digest: failed.map(|d| d.to_hex()),
                digest: component.digest().to_hex(),
                version: component.version().to_owned(),
                reason: error.to_string(),
            },
            Some(from) => BootEvent::ComponentDowngraded {
                name: entry.name.clone(),
                from_version: from.clone(),
                to_version: component.version().to_owned(),
                listed_version: entry.version.clone(),
                listed_digest: entry.blake3.to_hex(),
                failed_digest: failed.map(|d| d.to_hex()),
                digest: component.digest().to_hex(),
                reason: error.to_string(),
            },
        };
        run.emit.emit(&event, Some(component.digest()))?;
        Ok(Fallback::Used {
            component,
            reason,
            downgraded_from,
        })
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
                    source: None,
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
                    source: None,
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

/// What recovery found for a refused component.
pub(super) enum Fallback {
    /// A copy that verified, and why it is used.
    Used {
        component: VerifiedComponent,
        reason: String,
        /// The highest accepted version, when the copy is older (a downgrade).
        downgraded_from: Option<String>,
    },
    /// No usable copy; `note` says why a copy that verified was not used.
    Unavailable { note: Option<String> },
}

/// Audits a stored copy that recovery does not use.
fn refuse_copy(
    run: &Run<'_>,
    entry: &ManifestComponent,
    copy: &StoredCopy,
    code: &'static str,
    reason: String,
) -> Result<(), BootError> {
    run.emit.emit(
        &BootEvent::ComponentRefused {
            name: Untrusted::new(&entry.name),
            version: Some(copy.version.clone()),
            code,
            reason,
            expected: Some(copy.digest.to_hex()),
            measured: None,
        },
        Some(copy.digest),
    )
}
