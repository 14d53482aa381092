//! The signed head: the latest point of a log the host has signed, kept
//! outside the log, so that cutting the log back to an earlier checkpoint is
//! detectable.
//!
//! Every checkpoint signs the chain head it covers. The writer keeps the
//! latest one, once it is durable, in a head file
//! ([`AuditConfig::head_file`](super::AuditConfig::head_file)), written
//! atomically at every checkpoint and at close; opening the log refuses a
//! log that no longer reaches it, and
//! [`VerifyOptions::head`](super::VerifyOptions::head) fails on one.
//!
//! The document is self-describing JSON, verifiable offline with nothing
//! but itself (or a pinned host key), so a remote witness can hold it:
//!
//! ```text
//! {
//!   "type": "forgeone.audit.head.v1",
//!   "seq": 1234,
//!   "hash": "<64 hex: blake3 hash of record 1234>",
//!   "key_id": "<32 hex: the host key's id>",
//!   "public_key": "<64 hex: the host's Ed25519 public key>",
//!   "signature": "<128 hex>"
//! }
//! ```
//!
//! `signature` is the checkpoint signature the log itself holds in record
//! `seq + 1` (the checkpoint that covers `seq`): Ed25519 (`verify_strict`)
//! over `"forgeone.audit.checkpoint.v1\0" || seq (u64, big-endian) || hash
//! (32 raw bytes)`. `key_id` is derived from `public_key` (first 16 bytes of
//! its blake3), never trusted as given. Unknown fields are refused. Any
//! checkpoint of a log gives a valid head, so a head proves "the log reached
//! at least here", never "the log ends here": a witness keeps the highest it
//! has seen. A local head file guards against cutting the log alone; one
//! kept elsewhere also against cutting both.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::AuditError;
use super::atomic::write_atomic;
use super::record::checkpoint_message;
use crate::keys::{KeyError, KeyId, PublicKey};

/// The longest head file read (a head document is about 400 bytes).
const MAX_HEAD_FILE: u64 = 64 * 1024;

/// The latest point of a log its host key signed: a checkpoint's sequence
/// number and chain head, with the checkpoint's signature. Only ever built
/// from a verified signature (or by the writer that signed it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHead {
    seq: u64,
    hash: [u8; 32],
    key: PublicKey,
    signature: [u8; 64],
}

/// Why a head document is refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HeadError {
    /// Not a head document: not JSON of the expected shape (unknown or
    /// missing fields, wrong types).
    #[error("not a signed head document: {0}")]
    Json(#[source] serde_json::Error),
    /// The document names another type.
    #[error("type is `{0}`, expected `{TYPE}`")]
    Type(String),
    /// A hex field is malformed.
    #[error("`{0}` is not well-formed hex of the right length")]
    Hex(&'static str),
    /// The public key is malformed or weak.
    #[error(transparent)]
    Key(KeyError),
    /// The stated key id is not the one derived from the public key.
    #[error("key id {stated} is not the id of the public key ({derived})")]
    KeyId {
        /// The id the document states.
        stated: String,
        /// The id of its public key.
        derived: KeyId,
    },
    /// The signature does not verify under the document's key.
    #[error("signature by key {0} does not verify")]
    Signature(KeyId),
}

/// The `type` of a head document.
const TYPE: &str = "forgeone.audit.head.v1";

/// The document as it is stored.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    #[serde(rename = "type")]
    kind: String,
    seq: u64,
    hash: String,
    key_id: String,
    public_key: String,
    signature: String,
}

impl SignedHead {
    /// The document type this reads and writes: `forgeone.audit.head.v1`.
    pub const TYPE: &'static str = TYPE;

    /// A head the caller just signed (the log's writer) or verified.
    pub(crate) fn new(seq: u64, hash: [u8; 32], key: PublicKey, signature: [u8; 64]) -> Self {
        SignedHead {
            seq,
            hash,
            key,
            signature,
        }
    }

    /// Parses a head document and verifies its signature under the key it
    /// names. Check [`SignedHead::key_id`] against the host key you trust
    /// ([`VerifyOptions::head`](super::VerifyOptions::head) does, with a
    /// pinned key).
    pub fn from_json(bytes: &[u8]) -> Result<SignedHead, HeadError> {
        let doc: Document = serde_json::from_slice(bytes).map_err(HeadError::Json)?;
        if doc.kind != TYPE {
            return Err(HeadError::Type(doc.kind));
        }
        let mut hash = [0u8; 32];
        decode_hex(&doc.hash, &mut hash).ok_or(HeadError::Hex("hash"))?;
        let mut signature = [0u8; 64];
        decode_hex(&doc.signature, &mut signature).ok_or(HeadError::Hex("signature"))?;
        let mut raw_key = [0u8; 32];
        decode_hex(&doc.public_key, &mut raw_key).ok_or(HeadError::Hex("public_key"))?;
        let key = PublicKey::from_bytes(&raw_key).map_err(HeadError::Key)?;
        if key.id().as_str() != doc.key_id {
            return Err(HeadError::KeyId {
                stated: doc.key_id,
                derived: key.id().clone(),
            });
        }
        key.verify(&checkpoint_message(doc.seq, &hash), &signature)
            .map_err(|_| HeadError::Signature(key.id().clone()))?;
        Ok(SignedHead::new(doc.seq, hash, key, signature))
    }

    /// Reads and verifies a head file (a regular file of at most 64 KiB),
    /// as [`SignedHead::from_json`].
    pub fn from_file(path: impl AsRef<Path>) -> Result<SignedHead, AuditError> {
        let path = path.as_ref();
        let io = |source| AuditError::Io {
            path: path.to_owned(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        if !meta.is_file() {
            return Err(io(std::io::Error::other("not a regular file")));
        }
        if meta.len() > MAX_HEAD_FILE {
            return Err(io(std::io::Error::other(format!(
                "{} bytes is too large for a signed head",
                meta.len()
            ))));
        }
        let bytes = std::fs::read(path).map_err(io)?;
        SignedHead::from_json(&bytes).map_err(|reason| AuditError::Head {
            path: path.to_owned(),
            reason,
        })
    }

    /// The document, as pretty-printed JSON with a final newline.
    pub fn to_json(&self) -> String {
        let doc = Document {
            kind: TYPE.into(),
            seq: self.seq,
            hash: hex::encode(self.hash),
            key_id: self.key.id().to_string(),
            public_key: self.key.to_hex(),
            signature: hex::encode(self.signature),
        };
        let mut text = serde_json::to_string_pretty(&doc).expect("a head document serialises");
        text.push('\n');
        text
    }

    /// Writes the document to `path` atomically (temporary file, fsync,
    /// rename, fsync of the directory).
    pub fn write_to(&self, path: impl AsRef<Path>) -> Result<(), AuditError> {
        write_atomic(path.as_ref(), self.to_json().as_bytes())
            .map_err(|(path, source)| AuditError::Io { path, source })
    }

    /// The sequence number of the signed chain head: the log has at least
    /// this record, and the checkpoint after it.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The sequence number of the checkpoint that signed the head
    /// (`seq + 1`): the log reaches at least this far.
    pub fn checkpoint_seq(&self) -> u64 {
        self.seq + 1
    }

    /// The hash (hex) of record [`SignedHead::seq`].
    pub fn hash(&self) -> String {
        hex::encode(self.hash)
    }

    pub(crate) fn hash_bytes(&self) -> &[u8; 32] {
        &self.hash
    }

    /// The id of the key that signed it.
    pub fn key_id(&self) -> &KeyId {
        self.key.id()
    }

    /// The key that signed it.
    pub fn public_key(&self) -> &PublicKey {
        &self.key
    }
}

/// Where the CLI keeps the signed head of the log at `log`: beside it, with
/// the extension `head.json` (`state/audit.jsonl` → `state/audit.head.json`).
/// Pass it to [`AuditConfig::head_file`](super::AuditConfig::head_file) to
/// keep a log the way `forgeone run` and `forgeone up` do.
pub fn head_file_for(log: impl AsRef<Path>) -> PathBuf {
    log.as_ref().with_extension("head.json")
}

/// Decodes lower-case hex of exactly `out.len()` bytes.
fn decode_hex(text: &str, out: &mut [u8]) -> Option<()> {
    let lower = text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    (lower && text.len() == 2 * out.len())
        .then(|| hex::decode_to_slice(text, out).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SigningKey;

    fn signed(seq: u64) -> (SignedHead, SigningKey) {
        let key = SigningKey::generate();
        let hash = [7u8; 32];
        let signature = key.sign(&checkpoint_message(seq, &hash));
        (
            SignedHead::new(seq, hash, key.public().clone(), signature),
            key,
        )
    }

    #[test]
    fn round_trips_and_verifies_offline() {
        let (head, key) = signed(41);
        let text = head.to_json();
        let again = SignedHead::from_json(text.as_bytes()).unwrap();
        assert_eq!(again, head);
        assert_eq!(again.checkpoint_seq(), 42);
        assert_eq!(again.key_id(), key.id());
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["type"], SignedHead::TYPE);
        assert_eq!(value["seq"], 41);
    }

    #[test]
    fn a_changed_number_hash_key_or_field_is_refused() {
        let (head, _) = signed(41);
        let value: serde_json::Value = serde_json::from_str(&head.to_json()).unwrap();
        let edit = |field: &str, to: serde_json::Value| {
            let mut v = value.clone();
            v[field] = to;
            SignedHead::from_json(v.to_string().as_bytes()).unwrap_err()
        };
        assert!(matches!(edit("seq", 40.into()), HeadError::Signature(_)));
        let other_hash = hex::encode([8u8; 32]);
        assert!(matches!(
            edit("hash", other_hash.into()),
            HeadError::Signature(_)
        ));
        let (other, _) = signed(41);
        assert!(matches!(
            edit("public_key", other.key.to_hex().into()),
            HeadError::KeyId { .. }
        ));
        assert!(matches!(
            edit("key_id", other.key_id().to_string().into()),
            HeadError::KeyId { .. }
        ));
        assert!(matches!(
            edit("type", "forgeone.audit.head.v0".into()),
            HeadError::Type(_)
        ));
        assert!(matches!(
            edit("hash", "ABCD".into()),
            HeadError::Hex("hash")
        ));
        assert!(matches!(edit("extra", 1.into()), HeadError::Json(_)));
    }
}
