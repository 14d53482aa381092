//! Phase 2: the boot manifest: signed by a threshold of release keys,
//! well-formed, within its validity, and not older than the highest
//! accepted manifest version.

use crate::audit::Untrusted;
use crate::boot::BootError;
use crate::boot::context::BootContext;
use crate::boot::event::{BootEvent, Emitter};
use crate::boot::manifest::BootManifest;
use crate::boot::measure::{
    MANIFEST_MEASUREMENT, Measurement, MeasurementKind, MeasurementStatus, manifest_measurement,
};
use crate::boot::state::BootState;
use crate::boot::status::{BootOutcome, IntegrityStatus};
use crate::keys::KeyId;

use super::{BootBuilder, Run, Source};

/// The end of the manifest phase.
pub(super) enum ManifestPhase {
    /// Verified, with the release keys that signed it.
    Verified(BootManifest, Vec<KeyId>),
    /// Refused; the manifest when it could be parsed.
    Refused(Option<BootManifest>, BootError),
}

impl BootBuilder {
    /// Reads (when given a path) and verifies the manifest against the
    /// anchor and the state's highest manifest version, measures it and
    /// records it as accepted. A refusal comes back with the manifest, when
    /// it could be parsed, for [`BootBuilder::manifest_refused`].
    pub(super) fn boot_manifest(
        &self,
        run: &mut Run<'_>,
        source: &Source<BootManifest>,
    ) -> ManifestPhase {
        self.report_progress("verifying the boot manifest");
        let manifest = match source {
            Source::Loaded(manifest) => manifest.clone(),
            Source::File(path) => match BootManifest::from_file(path) {
                Ok(manifest) => manifest,
                Err(error) => return ManifestPhase::Refused(None, error),
            },
        };
        let verified = manifest.verify(&run.anchor, run.now).and_then(|signers| {
            self.check_manifest_version(&run.emit, run.state.as_ref(), &manifest)
                .map(|()| signers)
        });
        let signers = match verified {
            Ok(signers) => signers,
            Err(error) => return ManifestPhase::Refused(Some(manifest), error),
        };
        run.measure(manifest_measurement(
            &manifest,
            run.now,
            MeasurementStatus::Valid,
            None,
        ));
        let emitted = run.emit.emit(
            &BootEvent::ManifestVerified {
                release: manifest.release().to_owned(),
                version: manifest.version(),
                digest: manifest.digest().to_hex(),
                signers: signers.iter().map(ToString::to_string).collect(),
                components: manifest.components().len(),
                expires_at: manifest.document().expires_at,
            },
            None,
        );
        if let Err(audit) = emitted {
            return ManifestPhase::Refused(None, audit);
        }
        if let Some(state) = &run.state {
            state.record_manifest(&manifest);
        }
        ManifestPhase::Verified(manifest, signers)
    }

    fn check_manifest_version(
        &self,
        emit: &Emitter<'_>,
        state: Option<&BootState>,
        manifest: &BootManifest,
    ) -> Result<(), BootError> {
        let Some(record) = state.and_then(BootState::manifest_record) else {
            return Ok(());
        };
        let (highest, digest) = (record.version, record.digest);
        let what = "boot manifest".to_owned();
        if manifest.version() < highest {
            if !self.allow_downgrade {
                emit.emit(
                    &BootEvent::RollbackRefused {
                        what: what.clone(),
                        found: manifest.version().to_string(),
                        highest: highest.to_string(),
                    },
                    None,
                )?;
                return Err(BootError::Rollback {
                    what,
                    found: manifest.version().to_string(),
                    highest: highest.to_string(),
                });
            }
            emit.emit(
                &BootEvent::DowngradeAllowed {
                    what,
                    from: highest.to_string(),
                    to: manifest.version().to_string(),
                },
                None,
            )?;
        } else if manifest.version() == highest && manifest.digest() != digest {
            return Err(BootError::VersionConflict {
                what,
                version: highest.to_string(),
            });
        }
        Ok(())
    }

    /// Ends a boot whose manifest was refused: Compromised, nothing runs.
    pub(super) fn manifest_refused(
        &self,
        mut run: Run<'_>,
        manifest: Option<&BootManifest>,
        error: BootError,
    ) -> Result<BootContext, BootError> {
        if let BootError::Audit(_) = error {
            return Err(error);
        }
        // A manifest that cannot be read at all is an input error, not a
        // verdict on the boot: audited, then returned as `Err`.
        if manifest.is_none()
            && matches!(
                error,
                BootError::Io { .. }
                    | BootError::Missing { .. }
                    | BootError::NotAFile { .. }
                    | BootError::Changed { .. }
            )
        {
            run.emit.emit(
                &BootEvent::ManifestRefused {
                    code: error.code(),
                    reason: error.to_string(),
                    release: None,
                    version: None,
                },
                None,
            )?;
            return Err(error);
        }
        let status = match manifest {
            Some(_) => MeasurementStatus::Invalid,
            None => MeasurementStatus::NotMeasured,
        };
        let measurement = match manifest {
            Some(m) => manifest_measurement(m, run.now, status, Some(error.to_string())),
            None => Measurement {
                component: MANIFEST_MEASUREMENT.into(),
                kind: MeasurementKind::Manifest,
                version: String::new(),
                hash: String::new(),
                expected_hash: String::new(),
                timestamp: run.now,
                status,
                reason: Some(error.to_string()),
            },
        };
        run.measure(measurement);
        run.emit.emit(
            &BootEvent::ManifestRefused {
                code: error.code(),
                reason: error.to_string(),
                release: manifest.map(|m| Untrusted::new(m.release())),
                version: manifest.map(BootManifest::version),
            },
            None,
        )?;
        if let Some(state) = &run.state {
            state.save()?;
        }
        let ctx = BootContext {
            trust_anchor: run.anchor,
            boot_measurements: run.measurements,
            integrity_status: IntegrityStatus::Compromised(format!(
                "boot manifest refused: {error}"
            )),
            boot_time: run.now,
            outcome: BootOutcome::Compromised,
            components: Vec::new(),
            recovered: Vec::new(),
            left_out: Vec::new(),
            register: run.register.value(),
            release: None,
            manifest_version: None,
            quote: None,
            state: run.state,
            manifest: None,
            files: Vec::new(),
        };
        self.complete(&run.emit, ctx)
    }
}
