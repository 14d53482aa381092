//! Boot's audit events (`boot.*`).

use serde::Serialize;

use super::{BootError, Digest};
use crate::audit::{Actor, AuditEvent, AuditLog, Entry, Severity, Untrusted};

/// Every step of a boot and every component check, as an audit event.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub(crate) enum BootEvent {
    /// `boot.started`
    Started {
        /// `manifest` or `signatures`.
        mode: &'static str,
        policy: &'static str,
        state_dir: Option<Untrusted>,
        anchor: Option<Untrusted>,
        manifest: Option<Untrusted>,
        allow_downgrade: bool,
        allow_recovery_downgrade: bool,
    },
    /// `boot.refused`: the boot as a whole was refused before anything was
    /// measured (a boot by signatures where a manifest was accepted).
    Refused { code: &'static str, reason: String },
    /// `boot.anchor.verified`
    AnchorVerified {
        anchor_id: String,
        version: u64,
        digest: String,
        signers: Vec<String>,
        expires_at: chrono::DateTime<chrono::Utc>,
        /// `first-use` (pinned now), `pinned` (matches the pin), `rotated`,
        /// `downgraded`, or `unpinned` (no state directory).
        pin: &'static str,
    },
    /// `boot.anchor.refused`
    AnchorRefused {
        code: &'static str,
        reason: String,
        anchor_id: Option<String>,
        version: Option<u64>,
    },
    /// `boot.anchor.rotated`
    AnchorRotated {
        anchor_id: String,
        from_version: u64,
        to_version: u64,
        signed_by_previous: Vec<String>,
        signed_by_new: Vec<String>,
    },
    /// `boot.downgrade.allowed`
    DowngradeAllowed {
        what: String,
        from: String,
        to: String,
    },
    /// `boot.rollback.refused`
    RollbackRefused {
        what: String,
        found: String,
        highest: String,
    },
    /// `boot.manifest.verified`
    ManifestVerified {
        release: String,
        version: u64,
        digest: String,
        signers: Vec<String>,
        components: usize,
        expires_at: chrono::DateTime<chrono::Utc>,
    },
    /// `boot.manifest.refused`
    ManifestRefused {
        code: &'static str,
        reason: String,
        release: Option<Untrusted>,
        version: Option<u64>,
    },
    /// `boot.component.measured`
    ComponentMeasured {
        name: String,
        version: String,
        digest: String,
        expected: String,
        size: u64,
        status: &'static str,
    },
    /// `boot.component.refused`
    ComponentRefused {
        name: Untrusted,
        version: Option<String>,
        code: &'static str,
        reason: String,
        expected: Option<String>,
        measured: Option<String>,
    },
    /// `boot.component.recovered`
    ComponentRecovered {
        name: String,
        failed_digest: Option<String>,
        digest: String,
        version: String,
        reason: String,
    },
    /// `boot.component.downgraded`: a refused component replaced by an older
    /// copy than its highest accepted version (explicitly allowed).
    ComponentDowngraded {
        name: String,
        /// The highest accepted version.
        from_version: String,
        /// The version of the copy that runs instead.
        to_version: String,
        listed_version: String,
        listed_digest: String,
        failed_digest: Option<String>,
        digest: String,
        reason: String,
    },
    /// `boot.component.left-out`
    ComponentLeftOut {
        name: String,
        reason: String,
        policy: &'static str,
    },
    /// `boot.component.verified` (a per-component signature checked outside
    /// a boot)
    ComponentVerified {
        name: String,
        version: String,
        digest: String,
        size: u64,
        signers: Vec<String>,
        anchor: String,
    },
    /// `boot.component.start-recorded`
    StartRecorded {
        name: String,
        digest: String,
        ok: bool,
        failures: u32,
        status: &'static str,
    },
    /// `boot.component.marked-bad`
    MarkedBad {
        name: String,
        digest: String,
        failures: u32,
        max_tries: u32,
    },
    /// `boot.completed`
    Completed {
        outcome: &'static str,
        integrity: String,
        register: String,
        components: Vec<String>,
        recovered: Vec<String>,
        left_out: Vec<String>,
        measurements: usize,
    },
    /// `boot.quote.signed`
    QuoteSigned {
        register: String,
        host_key: String,
        quote_digest: String,
        nonce: Option<Untrusted>,
    },
}

impl AuditEvent for BootEvent {
    fn kind(&self) -> &'static str {
        match self {
            BootEvent::Started { .. } => "boot.started",
            BootEvent::Refused { .. } => "boot.refused",
            BootEvent::AnchorVerified { .. } => "boot.anchor.verified",
            BootEvent::AnchorRefused { .. } => "boot.anchor.refused",
            BootEvent::AnchorRotated { .. } => "boot.anchor.rotated",
            BootEvent::DowngradeAllowed { .. } => "boot.downgrade.allowed",
            BootEvent::RollbackRefused { .. } => "boot.rollback.refused",
            BootEvent::ManifestVerified { .. } => "boot.manifest.verified",
            BootEvent::ManifestRefused { .. } => "boot.manifest.refused",
            BootEvent::ComponentMeasured { .. } => "boot.component.measured",
            BootEvent::ComponentRefused { .. } => "boot.component.refused",
            BootEvent::ComponentRecovered { .. } => "boot.component.recovered",
            BootEvent::ComponentDowngraded { .. } => "boot.component.downgraded",
            BootEvent::ComponentLeftOut { .. } => "boot.component.left-out",
            BootEvent::ComponentVerified { .. } => "boot.component.verified",
            BootEvent::StartRecorded { .. } => "boot.component.start-recorded",
            BootEvent::MarkedBad { .. } => "boot.component.marked-bad",
            BootEvent::Completed { .. } => "boot.completed",
            BootEvent::QuoteSigned { .. } => "boot.quote.signed",
        }
    }

    fn details(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("boot events serialise")
    }

    fn severity(&self) -> Severity {
        match self {
            BootEvent::AnchorRefused { .. }
            | BootEvent::ManifestRefused { .. }
            | BootEvent::Refused { .. } => Severity::Error,
            BootEvent::Completed { outcome, .. } => match *outcome {
                "compromised" => Severity::Error,
                "verified" => Severity::Info,
                _ => Severity::Warn,
            },
            BootEvent::ComponentRefused { .. }
            | BootEvent::ComponentRecovered { .. }
            | BootEvent::ComponentDowngraded { .. }
            | BootEvent::ComponentLeftOut { .. }
            | BootEvent::RollbackRefused { .. }
            | BootEvent::DowngradeAllowed { .. }
            | BootEvent::MarkedBad { .. } => Severity::Warn,
            BootEvent::StartRecorded { ok: false, .. } => Severity::Warn,
            _ => Severity::Info,
        }
    }
}

/// Writes boot events to the audit log when there is one, and to tracing
/// when there is not (the log traces what it appends itself).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Emitter<'a> {
    log: Option<&'a AuditLog>,
}

impl<'a> Emitter<'a> {
    pub(crate) fn new(log: Option<&'a AuditLog>) -> Emitter<'a> {
        Emitter { log }
    }

    /// Appends `event` with the host as actor and `digest` as the component
    /// subject. An audit failure stops the boot: nothing runs unaudited.
    pub(crate) fn emit(&self, event: &BootEvent, digest: Option<Digest>) -> Result<(), BootError> {
        match self.log {
            Some(log) => {
                let mut entry = Entry::new(event).actor(Actor::host());
                if let Some(digest) = digest {
                    entry = entry.component(digest.to_hex());
                }
                log.append(entry)?;
            }
            None => {
                let kind = event.kind();
                let details = event.details();
                let component = digest.map(|d| d.to_hex());
                match event.severity() {
                    Severity::Info => {
                        tracing::info!(target: "forgeone::boot", kind, component, %details, "{kind}")
                    }
                    Severity::Warn => {
                        tracing::warn!(target: "forgeone::boot", kind, component, %details, "{kind}")
                    }
                    Severity::Error => {
                        tracing::error!(target: "forgeone::boot", kind, component, %details, "{kind}")
                    }
                }
            }
        }
        Ok(())
    }
}
