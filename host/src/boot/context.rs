//! The result of a boot: what was measured, how it ended and what may run.

use serde::Serialize;

use super::anchor::TrustAnchor;
use super::measure::Measurement;
use super::quote::{BootQuote, BootReport, REPORT_FORMAT, ReportAnchor, ReportComponent};
use super::state::BootState;
use super::status::{BootOutcome, IntegrityStatus};
use super::{Digest, Provenance, VerifiedComponent};
use crate::keys::{KeyId, SigningKey};

/// A component that was refused and replaced by a last-known-good copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recovery {
    /// The component.
    pub name: String,
    /// The digest of the refused bytes, when they could be measured.
    pub failed_digest: Option<Digest>,
    /// Why they were refused.
    pub reason: String,
    /// The digest of the copy used instead.
    pub digest: Digest,
    /// Its version.
    pub version: String,
}

/// A component that does not run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeftOut {
    /// The component.
    pub name: String,
    /// The version the manifest listed.
    pub version: String,
    /// Why it was refused (and why no copy could replace it).
    pub reason: String,
}

/// The result of a boot, as in the core spec, plus what may run.
///
/// Only [`BootContext::components`] reaches the runtime: when the outcome is
/// [`BootOutcome::Compromised`] it is empty.
#[derive(Debug)]
#[non_exhaustive]
pub struct BootContext {
    /// The anchor the boot trusted.
    pub trust_anchor: TrustAnchor,
    /// Every measurement, in the order it was extended into the register.
    pub boot_measurements: Vec<Measurement>,
    /// The integrity of the boot.
    pub integrity_status: IntegrityStatus,
    /// When the boot started (the boot's clock).
    pub boot_time: chrono::DateTime<chrono::Utc>,
    /// How it ended.
    pub outcome: BootOutcome,
    /// The components allowed to run, in manifest order.
    pub components: Vec<VerifiedComponent>,
    /// Components replaced by their last-known-good copy.
    pub recovered: Vec<Recovery>,
    /// Components that do not run.
    pub left_out: Vec<LeftOut>,
    /// The final measurement register.
    pub register: Digest,
    /// The manifest's release, when the manifest verified.
    pub release: Option<String>,
    /// The manifest's version, when the manifest verified.
    pub manifest_version: Option<u64>,
    /// The boot quote, when the boot was given a host key.
    pub quote: Option<BootQuote>,
    pub(crate) state: Option<BootState>,
}

impl BootContext {
    /// The state directory the boot used, for
    /// [`BootState::record_start`].
    pub fn state(&self) -> Option<&BootState> {
        self.state.as_ref()
    }

    /// The verified component called `name`.
    pub fn component(&self, name: &str) -> Option<&VerifiedComponent> {
        self.components.iter().find(|c| c.name() == name)
    }

    /// The boot report (what a quote signs). `host_key` is the id of the key
    /// that will sign it, if any.
    pub fn report(&self, host_key: Option<&KeyId>, nonce: Option<&str>) -> BootReport {
        BootReport {
            format: REPORT_FORMAT.into(),
            boot_time: self.boot_time,
            host_key: host_key.map(|k| k.to_string()),
            nonce: nonce.map(str::to_owned),
            anchor: ReportAnchor {
                id: self.trust_anchor.id(),
                version: self.trust_anchor.version(),
                digest: self.trust_anchor.digest(),
            },
            release: self.release.clone(),
            manifest_version: self.manifest_version,
            outcome: self.outcome,
            integrity: self.integrity_status.clone(),
            measurements: self.boot_measurements.clone(),
            register: self.register,
            components: self
                .components
                .iter()
                .map(|c| ReportComponent {
                    name: c.name().to_owned(),
                    version: c.version().to_owned(),
                    digest: c.digest(),
                    recovered: matches!(c.provenance(), Provenance::Recovered { .. }),
                })
                .collect(),
        }
    }

    /// Signs the boot report with the host key: a quote another party can
    /// check with [`super::verify_quote`]. `nonce` is the verifier's
    /// challenge, if it sent one (it proves the quote is fresh).
    pub fn sign_quote(&self, host_key: &SigningKey, nonce: Option<&str>) -> BootQuote {
        BootQuote::sign(self.report(Some(host_key.id()), nonce), host_key)
    }
}
