//! A boot by per-component signatures: each component file verified
//! against its own signature by a [`ComponentCheck`] (with the state
//! directory's rollback protection) and measured. No manifest authorises a
//! stored copy, so there is no recovery.

use crate::boot::context::{FileKey, LeftOut};
use crate::boot::event::{BootEvent, Emitter};
use crate::boot::measure::{Measurement, MeasurementKind, MeasurementStatus};
use crate::boot::state::BootState;
use crate::boot::statement::ComponentCheck;
use crate::boot::status::BootPolicy;
use crate::boot::{BootError, VerifiedComponent};

use super::{BootBuilder, Run, SignedFile, Tally};

impl BootBuilder {
    /// Refuses a boot by signatures once `state` has accepted a boot
    /// manifest (audited as `boot.refused`).
    pub(super) fn refuse_signatures_after_manifest(
        &self,
        emit: &Emitter<'_>,
        state: &BootState,
    ) -> Result<(), BootError> {
        let Some(record) = state.manifest_record() else {
            return Ok(());
        };
        let error = BootError::ManifestRequired {
            state_dir: state.dir().to_owned(),
            version: record.version,
            release: record.release,
        };
        emit.emit(
            &BootEvent::Refused {
                code: error.code(),
                reason: error.to_string(),
            },
            None,
        )?;
        Err(error)
    }

    /// Verifies and measures every file, in order (a file named twice
    /// once).
    pub(super) fn signed_components(
        &self,
        run: &mut Run<'_>,
        files: &[SignedFile],
    ) -> Result<Tally, BootError> {
        let mut tally = Tally::default();
        let mut seen: Vec<FileKey> = Vec::new();
        for file in files {
            let key = FileKey::of(&file.path);
            if seen.iter().any(|k| k.matches(&key)) {
                continue;
            }
            seen.push(key);
            self.report_progress(&format!("verifying {}", file.path.display()));
            match self.check_file(run, file) {
                Ok(component) => {
                    run.measure(signed_measurement(&component, run.now));
                    tally.runs(&file.path, component);
                }
                Err(error)
                    if matches!(error, BootError::Audit(_) | BootError::StateCorrupt { .. }) =>
                {
                    return Err(error);
                }
                Err(error) => self.refused_file(run, &mut tally, file, &error)?,
            }
        }
        Ok(tally)
    }

    /// One file through a [`ComponentCheck`] with this boot's settings.
    fn check_file(&self, run: &Run<'_>, file: &SignedFile) -> Result<VerifiedComponent, BootError> {
        let mut check = ComponentCheck::new(&run.anchor);
        check
            .now(run.now)
            .max_size(self.max_component_size)
            .signature_path(&file.signature)
            .allow_downgrade(self.allow_downgrade);
        if let Some(log) = &self.audit {
            check.audit(log.clone());
        }
        if let Some(state) = &run.state {
            // The anchor phase has checked (and pinned) the anchor.
            check.state(state).pin_checked();
        }
        check.verify_file(&file.path)
    }

    /// Measures a refused file and leaves it out (the check audited it).
    fn refused_file(
        &self,
        run: &mut Run<'_>,
        tally: &mut Tally,
        file: &SignedFile,
        error: &BootError,
    ) -> Result<(), BootError> {
        let name = file.path.display().to_string();
        let (hash, expected_hash) = match error {
            BootError::DigestMismatch {
                expected, actual, ..
            } => (actual.to_hex(), expected.to_hex()),
            _ => (String::new(), String::new()),
        };
        let status = if error.is_operational() || matches!(error, BootError::TooLarge { .. }) {
            MeasurementStatus::NotMeasured
        } else {
            MeasurementStatus::Invalid
        };
        run.measure(Measurement {
            component: name.clone(),
            kind: MeasurementKind::Component,
            version: String::new(),
            hash,
            expected_hash,
            timestamp: run.now,
            status,
            reason: Some(error.to_string()),
        });
        if self.policy == BootPolicy::Degraded {
            run.emit.emit(
                &BootEvent::ComponentLeftOut {
                    name: name.clone(),
                    reason: error.to_string(),
                    policy: self.policy.as_str(),
                },
                None,
            )?;
        }
        tally.left_out(LeftOut {
            name,
            version: String::new(),
            path: file.path.clone(),
            reason: error.to_string(),
        });
        Ok(())
    }
}

/// The measurement of a component whose own signature verified.
fn signed_measurement(
    component: &VerifiedComponent,
    now: chrono::DateTime<chrono::Utc>,
) -> Measurement {
    Measurement {
        component: component.name().to_owned(),
        kind: MeasurementKind::Component,
        version: component.version().to_owned(),
        hash: component.digest().to_hex(),
        expected_hash: component.digest().to_hex(),
        timestamp: now,
        status: MeasurementStatus::Valid,
        reason: None,
    }
}
