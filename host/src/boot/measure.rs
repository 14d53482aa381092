//! Measurements and the measurement register.

use serde::{Deserialize, Serialize};

use super::Digest;
use super::anchor::TrustAnchor;
use super::manifest::{BootManifest, ManifestComponent};

/// Name of the anchor's measurement.
pub(crate) const ANCHOR_MEASUREMENT: &str = "trust-anchor";
/// Name of the manifest's measurement.
pub(crate) const MANIFEST_MEASUREMENT: &str = "boot-manifest";

/// The outcome of one measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MeasurementStatus {
    /// Measured, and it matched what was signed.
    Valid,
    /// Measured, and it did not match (or was refused by a rule).
    Invalid,
    /// Could not be measured (missing, unreadable, too large, skipped).
    NotMeasured,
}

impl MeasurementStatus {
    /// `valid`, `invalid` or `not-measured`.
    pub fn as_str(&self) -> &'static str {
        match self {
            MeasurementStatus::Valid => "valid",
            MeasurementStatus::Invalid => "invalid",
            MeasurementStatus::NotMeasured => "not-measured",
        }
    }
}

/// What a measurement is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum MeasurementKind {
    /// The trust anchor check (hash: blake3 of its signed payload).
    Anchor,
    /// The boot manifest check (hash: blake3 of its signed payload).
    Manifest,
    /// A component as listed in the manifest (hash: blake3 of its bytes).
    Component,
    /// A last-known-good copy used instead of a refused component.
    Recovery,
}

/// One check of the boot, as in the core spec, plus what it was of, its
/// version and, when it failed, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Measurement {
    /// `trust-anchor`, `boot-manifest`, or the component name.
    pub component: String,
    /// What was measured.
    pub kind: MeasurementKind,
    /// The anchor or manifest version, or the component version.
    pub version: String,
    /// The measured blake3 (hex); empty when not measured.
    pub hash: String,
    /// The signed blake3 (hex); empty when unknown.
    pub expected_hash: String,
    /// When it was measured.
    pub timestamp: chrono::DateTime<chrono::Utc>,
    /// The outcome.
    pub status: MeasurementStatus,
    /// Why it failed (or how it was recovered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The bytes of a measurement that are extended into the register: its
/// canonical JSON without the timestamp and reason, so a verifier can
/// compute the register a clean boot reaches in advance.
#[derive(Serialize)]
struct EventBytes<'a> {
    kind: MeasurementKind,
    component: &'a str,
    version: &'a str,
    hash: &'a str,
    expected_hash: &'a str,
    status: MeasurementStatus,
}

impl Measurement {
    /// The event bytes extended into the register.
    pub fn event_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&EventBytes {
            kind: self.kind,
            component: &self.component,
            version: &self.version,
            hash: &self.hash,
            expected_hash: &self.expected_hash,
            status: self.status,
        })
        .expect("a measurement serialises")
    }
}

/// A running measurement register, like a TPM PCR: starts at 32 zero bytes
/// and is extended by `M = blake3(M || blake3(event))`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeasurementRegister {
    value: [u8; 32],
}

impl Default for MeasurementRegister {
    fn default() -> Self {
        Self::new()
    }
}

impl MeasurementRegister {
    /// The initial register (32 zero bytes).
    pub fn new() -> MeasurementRegister {
        MeasurementRegister { value: [0; 32] }
    }

    /// Extends the register with `event`.
    pub fn extend(&mut self, event: &[u8]) {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&self.value);
        hasher.update(blake3::hash(event).as_bytes());
        self.value = *hasher.finalize().as_bytes();
    }

    /// Extends the register with a measurement's event bytes.
    pub fn extend_measurement(&mut self, measurement: &Measurement) {
        self.extend(&measurement.event_bytes());
    }

    /// The current value.
    pub fn value(&self) -> Digest {
        Digest::from_bytes(self.value)
    }

    /// The register reached by extending `measurements` in order from zero.
    pub fn replay(measurements: &[Measurement]) -> Digest {
        let mut register = MeasurementRegister::new();
        for m in measurements {
            register.extend_measurement(m);
        }
        register.value()
    }
}

/// The anchor's measurement when it is accepted.
pub(crate) fn anchor_measurement(
    anchor: &TrustAnchor,
    now: chrono::DateTime<chrono::Utc>,
) -> Measurement {
    Measurement {
        component: ANCHOR_MEASUREMENT.into(),
        kind: MeasurementKind::Anchor,
        version: anchor.version().to_string(),
        hash: anchor.digest().to_hex(),
        expected_hash: anchor.digest().to_hex(),
        timestamp: now,
        status: MeasurementStatus::Valid,
        reason: None,
    }
}

/// The manifest's measurement.
pub(crate) fn manifest_measurement(
    manifest: &BootManifest,
    now: chrono::DateTime<chrono::Utc>,
    status: MeasurementStatus,
    reason: Option<String>,
) -> Measurement {
    Measurement {
        component: MANIFEST_MEASUREMENT.into(),
        kind: MeasurementKind::Manifest,
        version: manifest.version().to_string(),
        hash: manifest.digest().to_hex(),
        expected_hash: if status == MeasurementStatus::Valid {
            manifest.digest().to_hex()
        } else {
            String::new()
        },
        timestamp: now,
        status,
        reason,
    }
}

/// A component's measurement.
pub(crate) fn component_measurement(
    entry: &ManifestComponent,
    measured: Option<Digest>,
    now: chrono::DateTime<chrono::Utc>,
    status: MeasurementStatus,
    reason: Option<String>,
) -> Measurement {
    Measurement {
        component: entry.name.clone(),
        kind: MeasurementKind::Component,
        version: entry.version.clone(),
        hash: measured.map(|d| d.to_hex()).unwrap_or_default(),
        expected_hash: entry.blake3.to_hex(),
        timestamp: now,
        status,
        reason,
    }
}
