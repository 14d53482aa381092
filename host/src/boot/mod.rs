//! Trust-anchor boot: nothing runs unless it is exactly what a trusted key
//! signed.
//!
//! # The chain of trust
//!
//! 1. **Trust anchor** ([`TrustAnchor`]): a DSSE envelope whose payload
//!    ([`AnchorDocument`]) names the trusted Ed25519 keys with their roles
//!    (`root`, `release`), a threshold per role, a version that only
//!    increases and an expiry. It is self-signed by a threshold of its root
//!    keys. A new version is accepted only when signed by a threshold of the
//!    pinned version's root keys *and* of its own
//!    ([`TrustAnchor::verify_successor`]).
//! 2. **Boot manifest** ([`BootManifest`]): a DSSE envelope signed by a
//!    threshold of release keys listing the components of one release:
//!    name, version, path, size and expected blake3 digest.
//! 3. **Component bytes**: read once into the buffer the runtime will
//!    compile, hashed while they are read (blake3 over every byte), compared
//!    with the signed digest, and checked to be Wasm at all. What was hashed
//!    is exactly what is handed over ([`VerifiedComponent`]); nothing is read
//!    twice.
//!
//! A component can also carry its own signature: a DSSE envelope over an
//! in-toto style [`ComponentStatement`] (`app.wasm.sig.json`), checked by
//! [`verify_component`] / [`verify_component_file`] / [`ComponentCheck`]
//! (with [`ComponentCheck::state`], under the same pinning and rollback
//! protection as a manifest boot). A boot can be made of such components
//! ([`BootBuilder::signatures`]); it yields the same [`BootContext`], and
//! is refused once the state directory has accepted a boot manifest, so
//! that deleting the manifest cannot drop its rollback protection.
//!
//! # Measurements
//!
//! Every check (the anchor, the manifest, each component, each recovery) is
//! a [`Measurement`] extended into a register like a TPM PCR:
//! `M = blake3(M || blake3(event))` from 32 zero bytes, where `event` is the
//! measurement's canonical JSON without its timestamp and reason
//! ([`MeasurementRegister`]). The register a clean boot must reach can be
//! computed in advance ([`expected_register`]); the boot report signed by the
//! host key ([`BootQuote`]) lets another party check it ([`verify_quote`]).
//!
//! # State, rollback and recovery
//!
//! With a state directory ([`BootState`]) the host pins the anchor and keeps
//! the highest accepted version of the anchor, the manifest and each
//! component (an older validly-signed one is refused unless a downgrade is
//! explicitly allowed, which is audited), a last-known-good copy of every
//! component that booted verified (content addressed by digest, together
//! with the signed manifest that authorised it) and try counters in the style
//! of systemd's boot assessment ([`BootState::record_start`]).
//!
//! The [`BootPolicy`] decides what a component that fails does to the boot:
//! `fail-closed` (the default) makes the boot compromised at once;
//! `recover` replaces it by a last-known-good copy that still verifies
//! against the current anchor, or fails closed without one; `degraded` does
//! the same but boots the rest without it.
//! Recovery never downgrades silently: a copy older than the component's
//! highest accepted version is used only when
//! [`BootBuilder::allow_recovery_downgrade`] allows it, the boot is then
//! [`BootOutcome::Downgraded`] (not verified) and each fall-back is audited
//! as `boot.component.downgraded`; the recorded highest version is never
//! lowered by a recovery.
//!
//! # Formats and limits
//!
//! Every document is size-capped before it is parsed, parsed with unknown
//! fields refused, and verified over the exact payload bytes received (never
//! a re-serialisation). Payload types keep a signature for one kind of
//! document from being replayed as another: [`ANCHOR_PAYLOAD_TYPE`],
//! [`MANIFEST_PAYLOAD_TYPE`], [`COMPONENT_PAYLOAD_TYPE`],
//! [`QUOTE_PAYLOAD_TYPE`]. Thresholds count distinct public keys.
//!
//! Every step writes a `boot.*` audit event when an audit log is given.

use std::path::PathBuf;

mod anchor;
mod context;
mod dsse;
mod event;
mod init;
mod manifest;
mod measure;
mod quote;
mod read;
mod rollback;
mod state;
mod statement;
mod status;
mod verified;

pub use anchor::{AnchorDocument, AnchorKey, AnchorKeyEntry, Role, Thresholds, TrustAnchor};
pub use context::{BootContext, LeftOut, Recovery};
pub use dsse::{
    ANCHOR_PAYLOAD_TYPE, COMPONENT_PAYLOAD_TYPE, Envelope, EnvelopeSignature,
    MANIFEST_PAYLOAD_TYPE, QUOTE_PAYLOAD_TYPE,
};
pub use init::{BootBuilder, initialize};
pub use manifest::{BootManifest, ManifestComponent, ManifestDocument};
pub use measure::{Measurement, MeasurementKind, MeasurementRegister, MeasurementStatus};
pub use quote::{
    BootQuote, BootReport, QuoteCheck, ReportAnchor, ReportComponent, expected_register,
    verify_quote,
};
pub use state::{BootState, CopyStatus, StartVerdict, StoredCopy};
pub use statement::{
    ComponentCheck, ComponentPredicate, ComponentStatement, StatementSubject, SubjectDigest,
    verify_component, verify_component_file,
};
pub use status::{BootOutcome, BootPolicy, IntegrityStatus, ParseBootPolicyError};
pub use verified::{Digest, Provenance, VerifiedComponent};

pub use read::DEFAULT_MAX_COMPONENT_SIZE;
pub(crate) use read::read_private;

/// Largest trust anchor file read (bytes).
pub const MAX_ANCHOR_BYTES: usize = 256 * 1024;
/// Largest boot manifest file read (bytes).
pub const MAX_MANIFEST_BYTES: usize = 1024 * 1024;
/// Largest component signature (statement envelope) file read (bytes).
pub const MAX_STATEMENT_BYTES: usize = 64 * 1024;
/// Largest boot quote read (bytes).
pub const MAX_QUOTE_BYTES: usize = 4 * 1024 * 1024;
/// How far in the future an `issued_at` may lie (clock skew between the
/// signer and this host), in seconds.
pub const MAX_CLOCK_SKEW_SECS: i64 = 300;

/// Why a boot step, a signature or a state operation was refused.
///
/// Every message names the cause: which file, which key id, which
/// component, which limit. Text taken from the input (payload types, key ids
/// of unknown signers, names) is escaped before it is shown.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BootError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A path that must exist does not.
    #[error("{path}: no such file")]
    Missing {
        /// The path.
        path: PathBuf,
    },
    /// A path is a directory or another non-regular file.
    #[error("{path}: is {found}, not a regular file")]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// What it is instead ("a directory", "a symbolic link", "a FIFO
        /// (named pipe)", "a socket", "a device", "a special file").
        found: &'static str,
    },
    /// Input larger than its limit; refused before it was parsed or hashed.
    #[error("{what} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// What was too large (a file path or a description).
        what: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A file changed size while it was read.
    #[error("{path}: changed while it was being read")]
    Changed {
        /// The file.
        path: PathBuf,
    },
    /// A signature envelope that is not well-formed DSSE JSON (empty,
    /// truncated, not JSON, unknown fields, bad base64, too many signatures).
    #[error("{source_name}: malformed signature envelope: {reason}")]
    MalformedEnvelope {
        /// Where the envelope came from (a path or a description).
        source_name: String,
        /// What is wrong.
        reason: String,
        /// The JSON or base64 error behind it, if any.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    },
    /// An envelope of another kind (a signature for a different document
    /// type cannot be replayed as this one).
    #[error("{what}: payload type `{found}` where `{expected}` was expected")]
    WrongPayloadType {
        /// What was being verified.
        what: String,
        /// The envelope's payload type (escaped).
        found: String,
        /// The required payload type.
        expected: &'static str,
    },
    /// A signature by a key the verifier knows does not verify (the payload
    /// or its type was changed after signing).
    #[error("{what}: signature {index} by key {key_id} does not verify")]
    BadSignature {
        /// What was being verified.
        what: String,
        /// Index of the signature in the envelope.
        index: usize,
        /// The key.
        key_id: crate::KeyId,
    },
    /// A signature's `keyid` is not the id derived from the key that made it.
    #[error(
        "{what}: signature {index} claims key id `{claimed}` but was made by key {actual}; key ids are derived, never chosen"
    )]
    KeyIdMismatch {
        /// What was being verified.
        what: String,
        /// Index of the signature in the envelope (or of the key in an anchor).
        index: usize,
        /// The claimed id (escaped).
        claimed: String,
        /// The id derived from the key.
        actual: crate::KeyId,
    },
    /// Not enough distinct trusted keys signed.
    #[error(
        "{what}: needs signatures by {required} distinct {role} key(s), found {found} ({detail})"
    )]
    Threshold {
        /// What was being verified.
        what: String,
        /// The role whose keys count.
        role: &'static str,
        /// Distinct keys required.
        required: usize,
        /// Distinct trusted keys whose signatures verified.
        found: usize,
        /// Unknown signers, duplicates, keys of another role.
        detail: String,
    },
    /// A signed document (anchor, manifest, statement, report) is not valid
    /// JSON of its schema.
    #[error("{what}: malformed document: {source}")]
    MalformedDocument {
        /// Which document.
        what: String,
        /// What is wrong: the JSON error (unknown field, missing field,
        /// wrong type, at line and column).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// A trust anchor lists a weak (small-order) or malformed public key.
    #[error("trust anchor key {index} ({role}): {source}")]
    AnchorKey {
        /// Index in the anchor's key list.
        index: usize,
        /// Its role.
        role: &'static str,
        /// Why the key was refused.
        source: crate::KeyError,
    },
    /// The same public key appears twice in an anchor (under two ids or
    /// roles): it would count twice toward a threshold.
    #[error("trust anchor lists key {key_id} twice (entries {first} and {second})")]
    DuplicateKey {
        /// The key.
        key_id: crate::KeyId,
        /// First entry.
        first: usize,
        /// Second entry.
        second: usize,
    },
    /// A threshold of 0, or greater than the number of keys of its role.
    #[error(
        "trust anchor {role} threshold is {threshold} with {keys} {role} key(s); it must be 1..={keys}"
    )]
    BadThreshold {
        /// The role.
        role: &'static str,
        /// The threshold.
        threshold: u64,
        /// Keys of that role.
        keys: usize,
    },
    /// A document is past its expiry.
    #[error("{what} expired at {expired_at} (now {now})")]
    Expired {
        /// Which document.
        what: String,
        /// Its expiry.
        expired_at: chrono::DateTime<chrono::Utc>,
        /// The time of the check.
        now: chrono::DateTime<chrono::Utc>,
    },
    /// A document claims to be issued in the future (beyond the allowed
    /// clock skew).
    #[error("{what} is issued at {issued_at}, in the future (now {now})")]
    NotYetValid {
        /// Which document.
        what: String,
        /// Its issue time.
        issued_at: chrono::DateTime<chrono::Utc>,
        /// The time of the check.
        now: chrono::DateTime<chrono::Utc>,
    },
    /// The bytes' blake3 digest is not the signed one.
    #[error("component {name}: blake3 {actual} does not match the signed {expected}")]
    DigestMismatch {
        /// The component.
        name: String,
        /// The signed digest.
        expected: Digest,
        /// The measured digest.
        actual: Digest,
    },
    /// The bytes' length is not the signed size.
    #[error("component {name}: {actual} bytes where the signed size is {expected}")]
    SizeMismatch {
        /// The component.
        name: String,
        /// The signed size.
        expected: u64,
        /// The actual size.
        actual: u64,
    },
    /// A statement names another component or version than the one expected.
    #[error("signature is for {found}, not {expected}")]
    WrongComponent {
        /// What the caller expected (`name@version`).
        expected: String,
        /// What the statement names (escaped).
        found: String,
    },
    /// The bytes are not WebAssembly at all (bad magic or version header).
    #[error("component {name} is not WebAssembly: {reason}")]
    NotWasm {
        /// The component.
        name: String,
        /// What the header holds instead.
        reason: String,
    },
    /// An older version than the highest accepted one (rollback).
    #[error("rollback refused: {what} version {found} is older than the accepted {highest}")]
    Rollback {
        /// What (trust anchor, boot manifest, component NAME).
        what: String,
        /// The presented version.
        found: String,
        /// The highest accepted version.
        highest: String,
    },
    /// The same version as an accepted one, with different content.
    #[error("{what} version {version} was already accepted with different content")]
    VersionConflict {
        /// What.
        what: String,
        /// The version.
        version: String,
    },
    /// An anchor with another id than the pinned one.
    #[error("trust anchor {found} is not the pinned anchor {pinned}")]
    AnchorMismatch {
        /// The pinned anchor id.
        pinned: uuid::Uuid,
        /// The presented anchor id.
        found: uuid::Uuid,
    },
    /// A new anchor version not signed by a threshold of the previous
    /// version's root keys.
    #[error("trust anchor rotation {from} -> {to} refused: {reason}: {source}")]
    Rotation {
        /// The pinned version.
        from: u64,
        /// The presented version.
        to: u64,
        /// Why.
        reason: String,
        /// The refusal of the pinned version's root signatures (a
        /// [`BootError`]).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// A manifest component belongs to another release than the manifest.
    #[error(
        "boot manifest for release {manifest_release} lists component {name} of release {component_release}; a manifest mixing releases is refused"
    )]
    MixedRelease {
        /// The manifest's release.
        manifest_release: String,
        /// The component.
        name: String,
        /// Its release.
        component_release: String,
    },
    /// A manifest, anchor or statement breaks a content rule (bad name,
    /// version, path, duplicate entry, limits).
    #[error("{what}: {reason}")]
    Invalid {
        /// Which document.
        what: String,
        /// The rule broken.
        reason: String,
        /// The parse error behind it (a version that is not a semantic
        /// version), if any.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    },
    /// A component version failed to start too many times in a row and is
    /// marked bad (boot assessment).
    #[error("component {name} {digest} is marked bad after {failures} failed start(s)")]
    MarkedBad {
        /// The component.
        name: String,
        /// The bad digest.
        digest: Digest,
        /// Consecutive failed starts.
        failures: u32,
    },
    /// The state directory is damaged: refused rather than silently reset
    /// (a reset would drop rollback protection).
    #[error("boot state {path} is corrupt: {reason}")]
    StateCorrupt {
        /// The damaged file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
        /// The read, JSON or verification error behind it, if any.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    },
    /// Another process holds the state directory.
    #[error("boot state {path} is in use by another process")]
    StateLocked {
        /// The lock file.
        path: PathBuf,
    },
    /// A boot by per-component signatures on a state directory that has
    /// accepted a boot manifest: it would drop the manifest's rollback
    /// protection (the pinned release and its components' versions).
    #[error(
        "state directory {state_dir} has accepted boot manifest version {version} (release {release}); a boot by per-component signatures would drop its rollback protection: boot with the manifest"
    )]
    ManifestRequired {
        /// The state directory.
        state_dir: PathBuf,
        /// The highest accepted manifest version.
        version: u64,
        /// Its release.
        release: String,
    },
    /// A boot quote is invalid or does not match what was expected.
    #[error("boot quote: {0}")]
    Quote(String),
    /// The measurement register is not the expected value.
    #[error("measurement register {found} does not match the expected {expected}")]
    RegisterMismatch {
        /// The expected register.
        expected: Digest,
        /// The register in the quote.
        found: Digest,
    },
    /// A key could not be loaded or used.
    #[error(transparent)]
    Key(#[from] crate::KeyError),
    /// The audit log refused the event: the boot stops rather than run
    /// unaudited.
    #[error("boot cannot be audited: {0}")]
    Audit(#[from] crate::audit::AuditError),
}

impl BootError {
    /// A short machine-readable name of the refusal (`digest-mismatch`,
    /// `expired`, ...), used in audit records and JSON output.
    pub fn code(&self) -> &'static str {
        match self {
            BootError::Io { .. } => "io",
            BootError::Missing { .. } => "missing",
            BootError::NotAFile { .. } => "not-a-file",
            BootError::TooLarge { .. } => "too-large",
            BootError::Changed { .. } => "changed-while-read",
            BootError::MalformedEnvelope { .. } => "malformed-envelope",
            BootError::WrongPayloadType { .. } => "wrong-payload-type",
            BootError::BadSignature { .. } => "bad-signature",
            BootError::KeyIdMismatch { .. } => "key-id-mismatch",
            BootError::Threshold { .. } => "threshold",
            BootError::MalformedDocument { .. } => "malformed-document",
            BootError::AnchorKey { .. } => "bad-key",
            BootError::DuplicateKey { .. } => "duplicate-key",
            BootError::BadThreshold { .. } => "bad-threshold",
            BootError::Expired { .. } => "expired",
            BootError::NotYetValid { .. } => "not-yet-valid",
            BootError::DigestMismatch { .. } => "digest-mismatch",
            BootError::SizeMismatch { .. } => "size-mismatch",
            BootError::WrongComponent { .. } => "wrong-component",
            BootError::NotWasm { .. } => "not-wasm",
            BootError::Rollback { .. } => "rollback",
            BootError::VersionConflict { .. } => "version-conflict",
            BootError::AnchorMismatch { .. } => "anchor-mismatch",
            BootError::Rotation { .. } => "rotation",
            BootError::MixedRelease { .. } => "mixed-release",
            BootError::Invalid { .. } => "invalid",
            BootError::MarkedBad { .. } => "marked-bad",
            BootError::StateCorrupt { .. } => "state-corrupt",
            BootError::StateLocked { .. } => "state-locked",
            BootError::ManifestRequired { .. } => "manifest-required",
            BootError::Quote(_) => "quote",
            BootError::RegisterMismatch { .. } => "register-mismatch",
            BootError::Key(_) => "key",
            BootError::Audit(_) => "audit",
        }
    }

    /// True for errors that mean "the input could not be read or used"
    /// (missing or unreadable files, a damaged or busy state directory, a
    /// key that does not load, an audit log that cannot be written) rather
    /// than "the input was checked and refused".
    pub fn is_operational(&self) -> bool {
        matches!(
            self,
            BootError::Io { .. }
                | BootError::Missing { .. }
                | BootError::NotAFile { .. }
                | BootError::Changed { .. }
                | BootError::StateCorrupt { .. }
                | BootError::StateLocked { .. }
                | BootError::Key(_)
                | BootError::Audit(_)
        )
    }
}

/// Escapes and shortens attacker-controlled text for error messages.
pub(crate) fn shown(text: &str) -> String {
    const MAX: usize = 96;
    let escaped = crate::audit::escape_untrusted(text);
    if escaped.chars().count() > MAX {
        let cut: String = escaped.chars().take(MAX).collect();
        format!("{cut}...")
    } else {
        escaped
    }
}

/// Checks an `issued_at` / `expires_at` pair against `now`.
pub(crate) fn check_validity(
    what: &str,
    issued_at: chrono::DateTime<chrono::Utc>,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), BootError> {
    if issued_at > now + chrono::Duration::seconds(MAX_CLOCK_SKEW_SECS) {
        return Err(BootError::NotYetValid {
            what: what.to_owned(),
            issued_at,
            now,
        });
    }
    if let Some(expired_at) = expires_at
        && expired_at <= now
    {
        return Err(BootError::Expired {
            what: what.to_owned(),
            expired_at,
            now,
        });
    }
    Ok(())
}

/// Names of components and releases: 1 to 64 of `[A-Za-z0-9._-]`, starting
/// with a letter or digit, so they are safe in paths, tables and logs.
pub(crate) fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Parses a semantic version (component versions are ordered for rollback
/// protection, so they must be comparable).
pub(crate) fn parse_version(what: &str, version: &str) -> Result<semver::Version, BootError> {
    semver::Version::parse(version).map_err(|e| BootError::Invalid {
        what: what.to_owned(),
        reason: format!(
            "version `{}` is not a semantic version ({e}); versions are compared for rollback protection",
            shown(version)
        ),
        source: Some(Box::new(e)),
    })
}
