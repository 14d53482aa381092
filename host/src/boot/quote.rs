//! Boot quotes: the boot report signed by the host key, and their check.

use serde::{Deserialize, Serialize};

use super::anchor::TrustAnchor;
use super::dsse::{Envelope, QUOTE_PAYLOAD_TYPE};
use super::manifest::BootManifest;
use super::measure::{
    Measurement, MeasurementRegister, MeasurementStatus, anchor_measurement, component_measurement,
    manifest_measurement,
};
use super::status::{BootOutcome, IntegrityStatus};
use super::{BootError, Digest, MAX_QUOTE_BYTES, shown};
use crate::keys::{PublicKey, SigningKey};

pub(crate) const REPORT_FORMAT: &str = "forgeone.boot-report.v1";

/// The anchor a boot trusted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportAnchor {
    /// Its id.
    pub id: uuid::Uuid,
    /// Its version.
    pub version: u64,
    /// blake3 of its signed payload.
    pub digest: Digest,
}

/// A component that runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportComponent {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// blake3 of its bytes.
    pub digest: Digest,
    /// True when it is a last-known-good copy.
    pub recovered: bool,
}

/// The boot report: every measurement, the final register, the outcome and
/// what runs. A [`BootQuote`] is this, signed by the host key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootReport {
    /// `forgeone.boot-report.v1`.
    pub format: String,
    /// When the boot started.
    pub boot_time: chrono::DateTime<chrono::Utc>,
    /// The id of the host key that signs it (none in an unsigned report).
    pub host_key: Option<String>,
    /// The verifier's challenge, if any.
    pub nonce: Option<String>,
    /// The trust anchor.
    pub anchor: ReportAnchor,
    /// The manifest's release, when it verified.
    pub release: Option<String>,
    /// The manifest's version, when it verified.
    pub manifest_version: Option<u64>,
    /// How the boot ended.
    pub outcome: BootOutcome,
    /// Its integrity.
    pub integrity: IntegrityStatus,
    /// Every measurement, in register order.
    pub measurements: Vec<Measurement>,
    /// The final register.
    pub register: Digest,
    /// What runs.
    pub components: Vec<ReportComponent>,
}

/// A boot report signed by the host key (a DSSE envelope of type
/// [`QUOTE_PAYLOAD_TYPE`]).
#[derive(Debug, Clone)]
pub struct BootQuote {
    envelope: Envelope,
    report: BootReport,
}

impl BootQuote {
    pub(crate) fn sign(report: BootReport, key: &SigningKey) -> BootQuote {
        let payload = serde_json::to_vec_pretty(&report).expect("a boot report serialises");
        let mut envelope = Envelope::new(QUOTE_PAYLOAD_TYPE, payload);
        envelope.sign(key);
        BootQuote { envelope, report }
    }

    /// The quote as envelope JSON (what is handed to a verifier).
    pub fn to_json(&self) -> Vec<u8> {
        self.envelope.to_json()
    }

    /// The signed report.
    pub fn report(&self) -> &BootReport {
        &self.report
    }

    /// The envelope.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// blake3 of the signed payload.
    pub fn digest(&self) -> Digest {
        Digest::of(self.envelope.payload())
    }
}

/// What a verifier expects of a quote.
#[derive(Debug, Clone, Default)]
pub struct QuoteCheck {
    expected_register: Option<Digest>,
    nonce: Option<String>,
    require_verified: bool,
}

impl QuoteCheck {
    /// Checks the signature and the register's consistency only.
    pub fn new() -> QuoteCheck {
        QuoteCheck::default()
    }

    /// The register the boot must have reached (see [`expected_register`]).
    /// Default: not checked.
    pub fn expected_register(&mut self, register: Digest) -> &mut Self {
        self.expected_register = Some(register);
        self
    }

    /// The challenge the quote must carry. Default: not checked.
    pub fn nonce(&mut self, nonce: impl Into<String>) -> &mut Self {
        self.nonce = Some(nonce.into());
        self
    }

    /// Refuse quotes whose integrity is not `Verified`. Default: false.
    pub fn require_verified(&mut self, require: bool) -> &mut Self {
        self.require_verified = require;
        self
    }
}

/// Checks a boot quote: signed by `host_key` as a boot quote; a well-formed
/// report whose register is what its measurements extend to; and, as
/// `check` asks, the expected register, the nonce, a verified integrity.
/// Returns the report.
pub fn verify_quote(
    bytes: &[u8],
    host_key: &PublicKey,
    check: &QuoteCheck,
) -> Result<BootReport, BootError> {
    let envelope = Envelope::from_slice(bytes, MAX_QUOTE_BYTES, "boot quote")?;
    envelope.verify_threshold(
        "boot quote",
        QUOTE_PAYLOAD_TYPE,
        &[(host_key, "host")],
        "host",
        1,
    )?;
    let report: BootReport =
        serde_json::from_slice(envelope.payload()).map_err(|e| BootError::MalformedDocument {
            what: "boot report".into(),
            source: Box::new(e),
        })?;
    if report.format != REPORT_FORMAT {
        return Err(BootError::Quote(format!(
            "report format `{}`, expected `{REPORT_FORMAT}`",
            shown(&report.format)
        )));
    }
    if report.host_key.as_deref() != Some(host_key.id().as_str()) {
        return Err(BootError::Quote(format!(
            "report names host key {:?}, but key {} signed it",
            report.host_key.as_deref().map(shown),
            host_key.id()
        )));
    }
    let replayed = MeasurementRegister::replay(&report.measurements);
    if replayed != report.register {
        return Err(BootError::Quote(format!(
            "register {} is not what its {} measurements extend to ({replayed})",
            report.register,
            report.measurements.len()
        )));
    }
    if let Some(expected) = check.expected_register
        && expected != report.register
    {
        return Err(BootError::RegisterMismatch {
            expected,
            found: report.register,
        });
    }
    if let Some(nonce) = &check.nonce
        && report.nonce.as_ref() != Some(nonce)
    {
        return Err(BootError::Quote(format!(
            "nonce {:?} where {:?} was expected (a replayed quote?)",
            report.nonce.as_deref().map(shown),
            shown(nonce)
        )));
    }
    if check.require_verified && report.integrity != IntegrityStatus::Verified {
        return Err(BootError::Quote(format!(
            "integrity is {}",
            report.integrity
        )));
    }
    Ok(report)
}

/// The register a clean boot of `manifest` under `anchor` reaches: every
/// check valid, every component the exact bytes listed. Computed from the
/// signed documents alone, so a verifier can know it in advance.
pub fn expected_register(anchor: &TrustAnchor, manifest: &BootManifest) -> Digest {
    let now = chrono::Utc::now();
    let mut register = MeasurementRegister::new();
    register.extend_measurement(&anchor_measurement(anchor, now));
    register.extend_measurement(&manifest_measurement(
        manifest,
        now,
        MeasurementStatus::Valid,
        None,
    ));
    for entry in manifest.components() {
        register.extend_measurement(&component_measurement(
            entry,
            Some(entry.blake3),
            now,
            MeasurementStatus::Valid,
            None,
        ));
    }
    register.value()
}
