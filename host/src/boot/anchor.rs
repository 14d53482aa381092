//! The trust anchor: which keys are trusted, for what, and until when.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::dsse::{ANCHOR_PAYLOAD_TYPE, Envelope, EnvelopeSignature};
use super::{BootError, Digest, MAX_ANCHOR_BYTES, check_validity, shown};
use crate::keys::{KeyId, PublicKey};

/// Most keys an anchor may list.
pub(crate) const MAX_ANCHOR_KEYS: usize = 32;

/// What a trusted key may sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Role {
    /// Signs trust anchors (its own and, on rotation, the next version).
    Root,
    /// Signs boot manifests and component statements.
    Release,
    /// Signs cluster deployments (`forgeone deploy`): a cluster host runs
    /// a deployment only when a threshold of its anchor's deploy keys
    /// signed it.
    Deploy,
}

impl Role {
    /// `root` or `release`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Root => "root",
            Role::Release => "release",
            Role::Deploy => "deploy",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A key as listed in an [`AnchorDocument`]: its derived id, role and the
/// 32 raw public key bytes in hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnchorKeyEntry {
    /// The key id; must be the id derived from `public_key`.
    pub keyid: String,
    /// What the key may sign.
    pub role: Role,
    /// 64 hex characters.
    pub public_key: String,
}

impl AnchorKeyEntry {
    /// The entry for `key` in `role`.
    pub fn new(role: Role, key: &PublicKey) -> AnchorKeyEntry {
        AnchorKeyEntry {
            keyid: key.id().to_string(),
            role,
            public_key: key.to_hex(),
        }
    }
}

/// Distinct keys of each role that must sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Root keys that must sign the anchor (and, on rotation, its successor).
    pub root: u64,
    /// Release keys that must sign a manifest or a component statement.
    pub release: u64,
    /// Deploy keys that must sign a cluster deployment. Default 1; left
    /// out of the document when 1, so anchors without deploy keys read
    /// and hash as before.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub deploy: u64,
}

fn one() -> u64 {
    1
}

fn is_one(n: &u64) -> bool {
    *n == 1
}

/// The payload of a trust anchor envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnchorDocument {
    /// The anchor's identity; kept across rotations.
    pub id: Uuid,
    /// Increases by rotation; never goes back.
    pub version: u64,
    /// When this version was made.
    pub issued_at: chrono::DateTime<chrono::Utc>,
    /// After this, the anchor (and everything it vouches for) is refused.
    pub expires_at: chrono::DateTime<chrono::Utc>,
    /// The trusted keys. Each public key appears once, with one role.
    pub keys: Vec<AnchorKeyEntry>,
    /// Signatures required per role.
    pub thresholds: Thresholds,
    /// Free-form text (owner, contact, purpose).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

impl AnchorDocument {
    /// A version-1 anchor with a new id, issued now, with no keys and
    /// thresholds of 1.
    pub fn new(expires_at: chrono::DateTime<chrono::Utc>) -> AnchorDocument {
        AnchorDocument {
            id: Uuid::new_v4(),
            version: 1,
            issued_at: chrono::Utc::now(),
            expires_at,
            keys: Vec::new(),
            thresholds: Thresholds {
                root: 1,
                release: 1,
                deploy: 1,
            },
            metadata: BTreeMap::new(),
        }
    }

    /// Adds `key` in `role`.
    pub fn add_key(&mut self, role: Role, key: &PublicKey) -> &mut Self {
        self.keys.push(AnchorKeyEntry::new(role, key));
        self
    }

    /// The document as pretty JSON: the bytes that get signed.
    pub fn to_payload(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("an anchor document serialises")
    }

    /// An unsigned envelope around this document; sign it with a threshold
    /// of root keys (and, for a rotation, of the previous version's).
    pub fn envelope(&self) -> Envelope {
        Envelope::new(ANCHOR_PAYLOAD_TYPE, self.to_payload())
    }
}

/// A trusted key of an anchor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnchorKey {
    role: Role,
    key: PublicKey,
}

impl AnchorKey {
    /// The key id.
    pub fn id(&self) -> &KeyId {
        self.key.id()
    }

    /// What it may sign.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.key
    }
}

/// A trust anchor whose structure and self-signature were checked: every key
/// is a sound Ed25519 key listed once, the thresholds are satisfiable, and a
/// threshold of its own root keys signed it.
///
/// Its fields follow the core spec's `TrustAnchor` (id, public keys,
/// signatures, metadata) plus version, expiry and thresholds; they are
/// read-only, so a `TrustAnchor` always is what its signers signed. Expiry
/// is checked against the boot's clock ([`TrustAnchor::check_time`]), and
/// pinning, rotation and rollback against the state directory, by the boot.
#[derive(Debug, Clone)]
pub struct TrustAnchor {
    doc: AnchorDocument,
    keys: Vec<AnchorKey>,
    envelope: Envelope,
    payload_digest: Digest,
    signers: Vec<KeyId>,
}

impl TrustAnchor {
    /// Reads and checks an anchor file (at most [`MAX_ANCHOR_BYTES`]).
    pub fn from_file(path: impl AsRef<Path>) -> Result<TrustAnchor, BootError> {
        let path = path.as_ref();
        let bytes = super::read::read_small(path, MAX_ANCHOR_BYTES)?;
        Self::parse(&bytes, &path.display().to_string())
    }

    /// Checks an anchor from its envelope bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<TrustAnchor, BootError> {
        Self::parse(bytes, "trust anchor")
    }

    fn parse(bytes: &[u8], source_name: &str) -> Result<TrustAnchor, BootError> {
        let envelope = Envelope::from_slice(bytes, MAX_ANCHOR_BYTES, source_name)?;
        if envelope.payload_type() != ANCHOR_PAYLOAD_TYPE {
            return Err(BootError::WrongPayloadType {
                what: source_name.to_owned(),
                found: shown(envelope.payload_type()),
                expected: ANCHOR_PAYLOAD_TYPE,
            });
        }
        let doc: AnchorDocument = serde_json::from_slice(envelope.payload()).map_err(|e| {
            BootError::MalformedDocument {
                what: format!("{source_name} (trust anchor)"),
                source: Box::new(e),
            }
        })?;
        let keys = validate(&doc)?;
        let what = format!("trust anchor {} v{}", doc.id, doc.version);
        let pairs: Vec<(&PublicKey, &'static str)> =
            keys.iter().map(|k| (&k.key, k.role.as_str())).collect();
        let signers = envelope.verify_threshold(
            &what,
            ANCHOR_PAYLOAD_TYPE,
            &pairs,
            Role::Root.as_str(),
            doc.thresholds.root as usize,
        )?;
        Ok(TrustAnchor {
            payload_digest: Digest::of(envelope.payload()),
            doc,
            keys,
            envelope,
            signers,
        })
    }

    /// The anchor id (kept across rotations).
    pub fn id(&self) -> Uuid {
        self.doc.id
    }

    /// The version.
    pub fn version(&self) -> u64 {
        self.doc.version
    }

    /// When this version was issued.
    pub fn issued_at(&self) -> chrono::DateTime<chrono::Utc> {
        self.doc.issued_at
    }

    /// When it expires.
    pub fn expires_at(&self) -> chrono::DateTime<chrono::Utc> {
        self.doc.expires_at
    }

    /// The trusted public keys with their roles.
    pub fn public_keys(&self) -> &[AnchorKey] {
        &self.keys
    }

    /// The keys of one role.
    pub fn keys_of(&self, role: Role) -> impl Iterator<Item = &AnchorKey> {
        self.keys.iter().filter(move |k| k.role == role)
    }

    /// The thresholds.
    pub fn thresholds(&self) -> Thresholds {
        self.doc.thresholds
    }

    /// The envelope's signatures (as found; see [`TrustAnchor::signers`] for
    /// the root keys whose signatures verified).
    pub fn signatures(&self) -> &[EnvelopeSignature] {
        self.envelope.signatures()
    }

    /// The distinct root keys of this anchor whose signatures verified.
    pub fn signers(&self) -> &[KeyId] {
        &self.signers
    }

    /// Free-form metadata.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.doc.metadata
    }

    /// The signed document.
    pub fn document(&self) -> &AnchorDocument {
        &self.doc
    }

    /// The envelope as read.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// blake3 of the signed payload: what the boot measures and pins.
    pub fn digest(&self) -> Digest {
        self.payload_digest
    }

    /// Refuses the anchor when it is expired (or issued in the future) at `now`.
    pub fn check_time(&self, now: chrono::DateTime<chrono::Utc>) -> Result<(), BootError> {
        check_validity(
            &format!("trust anchor {} v{}", self.doc.id, self.doc.version),
            self.doc.issued_at,
            Some(self.doc.expires_at),
            now,
        )
    }

    /// Checks that `next` may replace this anchor: the same id, a higher
    /// version, and signed by a threshold of *this* anchor's root keys (its
    /// own root keys' threshold was checked when it was loaded). Returns the
    /// ids of this anchor's root keys that signed it.
    pub fn verify_successor(&self, next: &TrustAnchor) -> Result<Vec<KeyId>, BootError> {
        if next.id() != self.id() {
            return Err(BootError::AnchorMismatch {
                pinned: self.id(),
                found: next.id(),
            });
        }
        if next.version() <= self.version() {
            return Err(BootError::Rollback {
                what: format!("trust anchor {}", self.id()),
                found: next.version().to_string(),
                highest: self.version().to_string(),
            });
        }
        next.envelope
            .verify_threshold(
                &format!("trust anchor {} v{}", next.id(), next.version()),
                ANCHOR_PAYLOAD_TYPE,
                &self.key_pairs(),
                Role::Root.as_str(),
                self.doc.thresholds.root as usize,
            )
            .map_err(|e| BootError::Rotation {
                from: self.version(),
                to: next.version(),
                reason: format!(
                    "not signed by a threshold of v{}'s root keys",
                    self.version()
                ),
                source: Box::new(e),
            })
    }

    /// Keys with their role names, for threshold checks.
    pub(crate) fn key_pairs(&self) -> Vec<(&PublicKey, &'static str)> {
        self.keys
            .iter()
            .map(|k| (&k.key, k.role.as_str()))
            .collect()
    }
}

/// Structural checks of an anchor document; returns its keys.
fn validate(doc: &AnchorDocument) -> Result<Vec<AnchorKey>, BootError> {
    let what = format!("trust anchor {} v{}", doc.id, doc.version);
    let invalid = |reason: String| BootError::Invalid {
        what: what.clone(),
        reason,
        source: None,
    };
    if doc.version == 0 {
        return Err(invalid("version must be at least 1".into()));
    }
    if doc.expires_at <= doc.issued_at {
        return Err(invalid(format!(
            "expires at {} before it is issued at {}",
            doc.expires_at, doc.issued_at
        )));
    }
    if doc.keys.is_empty() || doc.keys.len() > MAX_ANCHOR_KEYS {
        return Err(invalid(format!(
            "lists {} keys; an anchor lists 1 to {MAX_ANCHOR_KEYS}",
            doc.keys.len()
        )));
    }
    let mut keys: Vec<AnchorKey> = Vec::with_capacity(doc.keys.len());
    for (index, entry) in doc.keys.iter().enumerate() {
        let key =
            PublicKey::from_hex(&entry.public_key).map_err(|source| BootError::AnchorKey {
                index,
                role: entry.role.as_str(),
                source,
            })?;
        // One public key, one entry: listed twice (under two ids or two
        // roles) it could count twice toward a threshold.
        if let Some(first) = keys.iter().position(|k| k.key == key) {
            return Err(BootError::DuplicateKey {
                key_id: key.id().clone(),
                first,
                second: index,
            });
        }
        keys.push(AnchorKey {
            role: entry.role,
            key,
        });
    }
    for (index, (entry, key)) in doc.keys.iter().zip(&keys).enumerate() {
        if entry.keyid != key.id().as_str() {
            return Err(BootError::KeyIdMismatch {
                what: what.clone(),
                index,
                claimed: shown(&entry.keyid),
                actual: key.id().clone(),
            });
        }
    }
    for (role, threshold) in [
        (Role::Root, doc.thresholds.root),
        (Role::Release, doc.thresholds.release),
        (Role::Deploy, doc.thresholds.deploy),
    ] {
        let count = keys.iter().filter(|k| k.role == role).count();
        // Deploy keys are optional: without any, a cluster host refuses
        // every deployment.
        if count == 0 && role == Role::Deploy {
            continue;
        }
        if count == 0 {
            return Err(invalid(format!("lists no {role} key")));
        }
        if threshold == 0 || threshold > count as u64 {
            return Err(BootError::BadThreshold {
                role: role.as_str(),
                threshold,
                keys: count,
            });
        }
    }
    Ok(keys)
}
