//! Per-component signatures: a DSSE envelope over an in-toto style
//! statement, detached beside the component (`app.wasm.sig.json`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::anchor::{Role, TrustAnchor};
use super::dsse::{COMPONENT_PAYLOAD_TYPE, Envelope};
use super::event::{BootEvent, Emitter};
use super::read::{DEFAULT_MAX_COMPONENT_SIZE, read_component, wasm_kind};
use super::rollback::{check_component_version, check_pin};
use super::state::BootState;
use super::{
    BootError, Digest, MAX_STATEMENT_BYTES, Provenance, VerifiedComponent, check_validity,
    parse_version, shown, valid_name,
};
use crate::audit::{AuditLog, Untrusted};
use crate::keys::SigningKey;

/// The in-toto Statement type.
pub(crate) const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// The predicate type of a ForgeOne component statement.
pub(crate) const PREDICATE_TYPE: &str = "https://forgeone.dev/component/v1";

/// What a component signature says: in-toto Statement v1 with one subject
/// `{name, digest: {blake3}}` and a predicate binding version, size, issue
/// time and optional expiry.
///
/// ```json
/// {"_type": "https://in-toto.io/Statement/v1",
///  "subject": [{"name": "hello", "digest": {"blake3": "af13..."}}],
///  "predicateType": "https://forgeone.dev/component/v1",
///  "predicate": {"version": "1.0.0", "size": 105714,
///                "issued_at": "2026-11-28T10:00:00Z", "expires_at": null}}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentStatement {
    /// Always `https://in-toto.io/Statement/v1`.
    #[serde(rename = "_type")]
    pub statement_type: String,
    /// Exactly one subject: the component.
    pub subject: Vec<StatementSubject>,
    /// Always `https://forgeone.dev/component/v1`.
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    /// Version, size and validity.
    pub predicate: ComponentPredicate,
}

/// The statement's subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatementSubject {
    /// The component name.
    pub name: String,
    /// Its digests (blake3 only).
    pub digest: SubjectDigest,
}

/// The subject's digests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectDigest {
    /// blake3 over every byte of the component.
    pub blake3: Digest,
}

/// The statement's predicate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentPredicate {
    /// The component version (semantic version).
    pub version: String,
    /// The component's size in bytes.
    pub size: u64,
    /// When it was signed.
    pub issued_at: chrono::DateTime<chrono::Utc>,
    /// After this the signature is refused.
    #[serde(default)]
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl ComponentStatement {
    /// A statement for `bytes` as `name`@`version`, issued now.
    pub fn new(
        name: impl Into<String>,
        version: impl Into<String>,
        bytes: &[u8],
        expires_at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> ComponentStatement {
        ComponentStatement {
            statement_type: STATEMENT_TYPE.into(),
            subject: vec![StatementSubject {
                name: name.into(),
                digest: SubjectDigest {
                    blake3: Digest::of(bytes),
                },
            }],
            predicate_type: PREDICATE_TYPE.into(),
            predicate: ComponentPredicate {
                version: version.into(),
                size: bytes.len() as u64,
                issued_at: chrono::Utc::now(),
                expires_at,
            },
        }
    }

    /// The statement as JSON: the bytes that get signed.
    pub fn to_payload(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a statement serialises")
    }

    /// The statement in an envelope signed by `keys`.
    pub fn sign(&self, keys: &[&SigningKey]) -> Envelope {
        let mut envelope = Envelope::new(COMPONENT_PAYLOAD_TYPE, self.to_payload());
        for key in keys {
            envelope.sign(key);
        }
        envelope
    }

    /// The component name (the single subject's).
    pub fn name(&self) -> &str {
        self.subject.first().map_or("", |s| s.name.as_str())
    }

    /// The component version.
    pub fn version(&self) -> &str {
        &self.predicate.version
    }

    /// The signed digest.
    pub fn digest(&self) -> Option<Digest> {
        self.subject.first().map(|s| s.digest.blake3)
    }

    fn validate(&self) -> Result<(), BootError> {
        let invalid = |reason: String| BootError::Invalid {
            what: "component statement".into(),
            reason,
            source: None,
        };
        if self.statement_type != STATEMENT_TYPE {
            return Err(invalid(format!(
                "_type `{}`, expected `{STATEMENT_TYPE}`",
                shown(&self.statement_type)
            )));
        }
        if self.predicate_type != PREDICATE_TYPE {
            return Err(invalid(format!(
                "predicateType `{}`, expected `{PREDICATE_TYPE}`",
                shown(&self.predicate_type)
            )));
        }
        if self.subject.len() != 1 {
            return Err(invalid(format!(
                "{} subjects; a component statement has exactly one",
                self.subject.len()
            )));
        }
        if !valid_name(self.name()) {
            return Err(invalid(format!(
                "component name `{}` is not 1-64 of [A-Za-z0-9._-]",
                shown(self.name())
            )));
        }
        parse_version("component statement", self.version())?;
        Ok(())
    }
}

/// Verifies `bytes` against a component signature `envelope` under
/// `anchor`, at the current time. See [`ComponentCheck`] for the checks and
/// for options (expected name and version, audit log, clock).
pub fn verify_component(
    bytes: impl Into<Arc<[u8]>>,
    envelope: &Envelope,
    anchor: &TrustAnchor,
) -> Result<VerifiedComponent, BootError> {
    ComponentCheck::new(anchor).verify(bytes, envelope)
}

/// Reads `path` once and verifies it against `<path>.sig.json` under
/// `anchor`, at the current time.
pub fn verify_component_file(
    path: impl AsRef<Path>,
    anchor: &TrustAnchor,
) -> Result<VerifiedComponent, BootError> {
    ComponentCheck::new(anchor).verify_file(path)
}

/// Verifies components that carry their own signature (plugins,
/// `forgeone run --anchor`), outside a boot manifest.
///
/// The checks, in order: the anchor is not expired; with a state directory
/// ([`ComponentCheck::state`]), the anchor is the pinned one; the envelope
/// is a component statement ([`COMPONENT_PAYLOAD_TYPE`]); a threshold of
/// the anchor's release keys signed it (distinct keys; key ids derived);
/// the statement is well-formed and within its validity; it names the
/// expected component and version (when set); the size and the blake3
/// digest of every byte match; the bytes are Wasm at all; with a state
/// directory, the version is not older than the highest accepted one.
/// Every outcome is audited when a log is set (`boot.component.verified` /
/// `boot.component.refused`).
///
/// ```no_run
/// # fn main() -> Result<(), forgeone::boot::BootError> {
/// use forgeone::boot::{ComponentCheck, TrustAnchor};
/// let anchor = TrustAnchor::from_file("trust_anchor.json")?;
/// let plugin = ComponentCheck::new(&anchor)
///     .expect_name("auth")
///     .verify_file("plugins/auth.wasm")?; // signature: plugins/auth.wasm.sig.json
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ComponentCheck<'a> {
    anchor: &'a TrustAnchor,
    now: Option<chrono::DateTime<chrono::Utc>>,
    name: Option<String>,
    version: Option<String>,
    max_size: u64,
    signature_path: Option<PathBuf>,
    audit: Option<AuditLog>,
    state: Option<&'a BootState>,
    allow_downgrade: bool,
    /// The caller (a boot) already checked the anchor against the pin.
    pin_checked: bool,
}

impl<'a> ComponentCheck<'a> {
    /// Checks under `anchor`.
    pub fn new(anchor: &'a TrustAnchor) -> ComponentCheck<'a> {
        ComponentCheck {
            anchor,
            now: None,
            name: None,
            version: None,
            max_size: DEFAULT_MAX_COMPONENT_SIZE,
            signature_path: None,
            audit: None,
            state: None,
            allow_downgrade: false,
            pin_checked: false,
        }
    }

    /// The time expiries are checked against. Default: the system clock when
    /// the check runs.
    pub fn now(&mut self, now: chrono::DateTime<chrono::Utc>) -> &mut Self {
        self.now = Some(now);
        self
    }

    /// Refuse a statement for another component name. Default: any name.
    pub fn expect_name(&mut self, name: impl Into<String>) -> &mut Self {
        self.name = Some(name.into());
        self
    }

    /// Refuse a statement for another version. Default: any version.
    pub fn expect_version(&mut self, version: impl Into<String>) -> &mut Self {
        self.version = Some(version.into());
        self
    }

    /// Largest component file read. Default: [`DEFAULT_MAX_COMPONENT_SIZE`] (256 MiB).
    pub fn max_size(&mut self, bytes: u64) -> &mut Self {
        self.max_size = bytes;
        self
    }

    /// Where [`ComponentCheck::verify_file`] reads the signature. Default:
    /// the component path with `.sig.json` appended.
    pub fn signature_path(&mut self, path: impl Into<PathBuf>) -> &mut Self {
        self.signature_path = Some(path.into());
        self
    }

    /// Audit every outcome to `log`. Default: no log (outcomes are still
    /// traced under `forgeone::audit`).
    pub fn audit(&mut self, log: AuditLog) -> &mut Self {
        self.audit = Some(log);
        self
    }

    /// Enforce the rollback protection of `state`, as a manifest boot does:
    /// the anchor is pinned on first use, another anchor id is refused, a
    /// newer anchor version only when the pinned version's root keys
    /// authorise the rotation; a component version older than the highest
    /// accepted version of its name is refused (see
    /// [`ComponentCheck::allow_downgrade`]), and a newer one is recorded as
    /// the new highest. Default: none (no pinning, no version check).
    pub fn state(&mut self, state: &'a BootState) -> &mut Self {
        self.state = Some(state);
        self
    }

    /// With [`ComponentCheck::state`]: accept an older anchor or component
    /// version than the highest accepted one. Each such downgrade is
    /// audited (`boot.downgrade.allowed`) and becomes the recorded version.
    /// Default: false.
    pub fn allow_downgrade(&mut self, allow: bool) -> &mut Self {
        self.allow_downgrade = allow;
        self
    }

    /// The anchor was already checked against the state's pin (by a boot).
    pub(crate) fn pin_checked(&mut self) -> &mut Self {
        self.pin_checked = true;
        self
    }

    /// Verifies in-memory `bytes` (taken without a copy when given an
    /// `Arc<[u8]>` or a `Vec<u8>`).
    pub fn verify(
        &self,
        bytes: impl Into<Arc<[u8]>>,
        envelope: &Envelope,
    ) -> Result<VerifiedComponent, BootError> {
        let bytes = bytes.into();
        let digest = Digest::of(&bytes);
        self.finish(self.check(bytes, digest, envelope), "<bytes>", Some(digest))
    }

    /// Reads `path` once (refusing missing paths, directories and files over
    /// the size limit), then verifies it against its signature file.
    pub fn verify_file(&self, path: impl AsRef<Path>) -> Result<VerifiedComponent, BootError> {
        let path = path.as_ref();
        let signature = self
            .signature_path
            .clone()
            .unwrap_or_else(|| default_signature_path(path));
        let mut measured = None;
        let result = Envelope::from_file(&signature, MAX_STATEMENT_BYTES).and_then(|envelope| {
            let (bytes, digest) =
                read_component(path, &path.display().to_string(), self.max_size, None)?;
            measured = Some(digest);
            self.check(bytes, digest, &envelope)
        });
        self.finish(result, &path.display().to_string(), measured)
    }

    fn check(
        &self,
        bytes: Arc<[u8]>,
        digest: Digest,
        envelope: &Envelope,
    ) -> Result<VerifiedComponent, BootError> {
        let now = self.now.unwrap_or_else(chrono::Utc::now);
        self.anchor.check_time(now)?;
        let emit = Emitter::new(self.audit.as_ref());
        if let Some(state) = self.state
            && !self.pin_checked
        {
            check_pin(&emit, state, self.anchor, self.allow_downgrade, |e| {
                audit_rollback(&emit, e)
            })?;
        }
        let signers = envelope.verify_threshold(
            "component signature",
            COMPONENT_PAYLOAD_TYPE,
            &self.anchor.key_pairs(),
            Role::Release.as_str(),
            self.anchor.thresholds().release as usize,
        )?;
        // Parsed only now: what is parsed is exactly the payload that verified.
        let statement: ComponentStatement =
            serde_json::from_slice(envelope.payload()).map_err(|e| {
                BootError::MalformedDocument {
                    what: "component statement".into(),
                    source: Box::new(e),
                }
            })?;
        statement.validate()?;
        let name = statement.name().to_owned();
        let version = statement.version().to_owned();
        check_validity(
            &format!("signature of {name}@{version}"),
            statement.predicate.issued_at,
            statement.predicate.expires_at,
            now,
        )?;
        let wrong_name = self.name.as_ref().is_some_and(|n| *n != name);
        let wrong_version = self.version.as_ref().is_some_and(|v| *v != version);
        if wrong_name || wrong_version {
            return Err(BootError::WrongComponent {
                expected: format!(
                    "{}@{}",
                    self.name.as_deref().unwrap_or(&name),
                    self.version.as_deref().unwrap_or(&version)
                ),
                found: format!("{name}@{version}"),
            });
        }
        if statement.predicate.size != bytes.len() as u64 {
            return Err(BootError::SizeMismatch {
                name,
                expected: statement.predicate.size,
                actual: bytes.len() as u64,
            });
        }
        let expected = statement.subject[0].digest.blake3;
        if expected != digest {
            return Err(BootError::DigestMismatch {
                name,
                expected,
                actual: digest,
            });
        }
        wasm_kind(&bytes).map_err(|reason| BootError::NotWasm {
            name: name.clone(),
            reason,
        })?;
        if let Some(state) = self.state {
            check_component_version(
                &emit,
                state,
                &name,
                &version,
                Some(digest),
                self.allow_downgrade,
            )?;
            state.record_version(&name, &version, self.allow_downgrade)?;
        }
        Ok(VerifiedComponent::verified(
            name,
            version,
            digest,
            bytes,
            signers,
            Provenance::Signature,
        ))
    }

    fn finish(
        &self,
        result: Result<VerifiedComponent, BootError>,
        source: &str,
        measured: Option<Digest>,
    ) -> Result<VerifiedComponent, BootError> {
        let emitter = Emitter::new(self.audit.as_ref());
        match &result {
            Ok(component) => emitter.emit(
                &BootEvent::ComponentVerified {
                    name: component.name().to_owned(),
                    version: component.version().to_owned(),
                    digest: component.digest().to_hex(),
                    size: component.bytes().len() as u64,
                    signers: component.signers().iter().map(|k| k.to_string()).collect(),
                    anchor: self.anchor.id().to_string(),
                },
                Some(component.digest()),
            )?,
            Err(error) => emitter.emit(
                &BootEvent::ComponentRefused {
                    name: Untrusted::new(source),
                    version: None,
                    code: error.code(),
                    reason: error.to_string(),
                    expected: None,
                    measured: measured.map(|d| d.to_hex()),
                },
                measured,
            )?,
        }
        result
    }
}

/// Audits a rollback refusal (`boot.rollback.refused`) before it is
/// returned; other refusals are audited with the check's outcome.
fn audit_rollback(emit: &Emitter<'_>, error: BootError) -> BootError {
    let BootError::Rollback {
        what,
        found,
        highest,
    } = &error
    else {
        return error;
    };
    let event = BootEvent::RollbackRefused {
        what: what.clone(),
        found: found.clone(),
        highest: highest.clone(),
    };
    match emit.emit(&event, None) {
        Ok(()) => error,
        Err(audit) => audit,
    }
}

/// `<path>.sig.json`.
pub(crate) fn default_signature_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".sig.json");
    PathBuf::from(name)
}
