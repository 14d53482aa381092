//! The hand-off from boot to the runtime: bytes that passed verification.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::keys::KeyId;

/// A blake3 digest (32 bytes), shown as lower-case hex.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest([u8; 32]);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(*blake3::hash(bytes).as_bytes())
    }

    /// Wraps raw digest bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Digest {
        Digest(bytes)
    }

    /// Parses 64 lower-case hex characters.
    pub fn from_hex(text: &str) -> Option<Digest> {
        if text.len() != 64 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let mut raw = [0u8; 32];
        hex::decode_to_slice(text, &mut raw).ok()?;
        Some(Digest(raw))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        // Into a stack buffer, then one allocation: `hex::encode` builds the
        // string a char at a time, and digests are rendered on hot paths
        // (every audited container event names its component).
        let mut buf = [0u8; 64];
        hex::encode_to_slice(self.0, &mut buf).expect("64 bytes hold 32 bytes of hex");
        String::from_utf8(buf.to_vec()).expect("hex is ASCII")
    }

    /// The first 12 hex characters, for tables.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..6])
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Digest::from_hex(&text).ok_or_else(|| {
            serde::de::Error::custom("expected a blake3 digest: 64 lower-case hex characters")
        })
    }
}

/// How a component came to be trusted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "via")]
#[non_exhaustive]
pub enum Provenance {
    /// Listed in a boot manifest signed by a threshold of release keys, and
    /// its bytes matched the manifest's digest.
    Manifest {
        /// The manifest's release (version) string.
        release: String,
    },
    /// Carried its own signature envelope (a plugin or `forgeone run`).
    Signature,
    /// Booted from the last-known-good copy after the current one failed.
    Recovered {
        /// Why the current copy was refused.
        reason: String,
    },
    /// Not verified: the operator explicitly allowed unsigned code.
    Unsigned,
}

/// Component bytes that passed verification: the only thing the runtime
/// compiles. Only `boot` creates signed ones; [`VerifiedComponent::unsigned_file`]
/// (and [`VerifiedComponent::unsigned`] for bytes already in memory) exist
/// for the explicit `--allow-unsigned` path, which the runtime refuses
/// unless its policy allows unsigned code (and audits when it does).
#[derive(Clone)]
pub struct VerifiedComponent {
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) digest: Digest,
    pub(crate) bytes: Arc<[u8]>,
    pub(crate) signers: Vec<KeyId>,
    pub(crate) provenance: Provenance,
}

impl fmt::Debug for VerifiedComponent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedComponent")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("digest", &self.digest)
            .field("len", &self.bytes.len())
            .field("signers", &self.signers)
            .field("provenance", &self.provenance)
            .finish()
    }
}

impl VerifiedComponent {
    /// Wraps bytes that were verified by `boot`.
    pub(crate) fn verified(
        name: String,
        version: String,
        digest: Digest,
        bytes: Arc<[u8]>,
        signers: Vec<KeyId>,
        provenance: Provenance,
    ) -> Self {
        debug_assert_eq!(Digest::of(&bytes), digest);
        VerifiedComponent {
            name,
            version,
            digest,
            bytes,
            signers,
            provenance,
        }
    }

    /// Wraps bytes that were *not* verified. The runtime refuses these unless
    /// unsigned code was explicitly allowed, and audits every such launch.
    pub fn unsigned(name: impl Into<String>, bytes: impl Into<Arc<[u8]>>) -> Self {
        let bytes = bytes.into();
        VerifiedComponent {
            name: name.into(),
            version: "unsigned".into(),
            digest: Digest::of(&bytes),
            bytes,
            signers: Vec::new(),
            provenance: Provenance::Unsigned,
        }
    }

    /// Reads an unsigned component from `path` with the reader signed
    /// components go through: a regular file only (a directory, FIFO or
    /// device is refused without being opened for reading), its size
    /// checked against `max_size` before a byte is read, read and hashed
    /// once. Named after the file's stem. The runtime refuses the result
    /// unless unsigned code was explicitly allowed, as with
    /// [`VerifiedComponent::unsigned`].
    ///
    /// `max_size` is usually [`DEFAULT_MAX_COMPONENT_SIZE`](crate::boot::DEFAULT_MAX_COMPONENT_SIZE)
    /// (256 MiB); a larger file is refused with
    /// [`BootError::TooLarge`](super::BootError::TooLarge).
    pub fn unsigned_file(
        path: impl AsRef<std::path::Path>,
        max_size: u64,
    ) -> Result<Self, super::BootError> {
        let path = path.as_ref();
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "component".into());
        let (bytes, digest) = super::read::read_component(path, &name, max_size, None)?;
        Ok(VerifiedComponent {
            name,
            version: "unsigned".into(),
            digest,
            bytes,
            signers: Vec::new(),
            provenance: Provenance::Unsigned,
        })
    }

    /// The component's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The component's version.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// blake3 over every byte.
    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// The exact bytes that were verified.
    pub fn bytes(&self) -> &Arc<[u8]> {
        &self.bytes
    }

    /// Ids of the distinct anchor keys whose signatures verified it.
    pub fn signers(&self) -> &[KeyId] {
        &self.signers
    }

    /// How it came to be trusted.
    pub fn provenance(&self) -> &Provenance {
        &self.provenance
    }

    /// True unless it is [`Provenance::Unsigned`].
    pub fn is_signed(&self) -> bool {
        self.provenance != Provenance::Unsigned
    }
}
