//! Ed25519 keys: loading, saving and key ids.
//!
//! Private keys live on disk as PKCS#8 PEM (written with mode 0600), public
//! keys as SPKI PEM or as 32 raw bytes in hex inside JSON documents. As ssh
//! does, a private key file that its group or others may access is refused
//! ([`KeyError::Exposed`]) with the `chmod` that fixes it; the host's other
//! secrets (the compiled cache's MAC key) are held to the same check. A
//! [`KeyId`] is derived from the public key bytes, never chosen by hand:
//! the first 16 bytes of their blake3 digest, in hex.
//!
//! Verification is always `verify_strict`, and weak (low-order) public keys
//! are refused when a key is loaded, so a key that would accept forged
//! signatures can never enter a trust decision.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer as _};
use serde::{Deserialize, Serialize};

/// Largest key file we read: PEM-encoded Ed25519 keys are ~120 bytes.
const MAX_KEY_FILE: u64 = 16 * 1024;

/// Errors loading, parsing or using a key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not a key of the expected kind.
    #[error("{path}: not a {expected} ({reason})")]
    Format {
        /// The file.
        path: PathBuf,
        /// What was expected, e.g. "PKCS#8 PEM Ed25519 private key".
        expected: &'static str,
        /// Why parsing failed.
        reason: String,
    },
    /// A public key given as hex (or raw bytes) is malformed.
    #[error("malformed Ed25519 public key: {0}")]
    Malformed(String),
    /// The public key is a weak (small-order) point: signatures under it
    /// prove nothing, so it is refused.
    #[error("public key {0} is weak (small-order) and is refused")]
    Weak(KeyId),
    /// The file would be overwritten.
    #[error("{0} already exists (refusing to overwrite a key)")]
    Exists(PathBuf),
    /// A signature did not verify.
    #[error("signature by key {0} does not verify")]
    BadSignature(KeyId),
    /// A private key (or another secret) file is accessible to its group or
    /// to others, so it may already be known to them; it is refused, as ssh
    /// refuses such keys.
    #[error(
        "{path}: {what} is accessible to group or others (mode {mode:04o}); it must be private \
         to its owner (0600): run `chmod 600 {path}`"
    )]
    Exposed {
        /// The file.
        path: PathBuf,
        /// What it holds, e.g. "private key".
        what: &'static str,
        /// Its permission bits.
        mode: u32,
    },
}

/// A key id: the first 16 bytes of blake3(public key), as 32 hex characters.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyId(String);

impl KeyId {
    /// Derives the id of a raw 32-byte public key.
    pub fn of(public_key: &[u8; 32]) -> KeyId {
        let digest = blake3::hash(public_key);
        KeyId(hex::encode(&digest.as_bytes()[..16]))
    }

    /// The id as hex text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.0)
    }
}

/// An Ed25519 public key that is known not to be weak, with its id.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: ed25519_dalek::VerifyingKey,
    id: KeyId,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.id)
    }
}

impl PublicKey {
    /// Parses 32 raw bytes, refusing malformed and weak keys.
    pub fn from_bytes(bytes: &[u8]) -> Result<PublicKey, KeyError> {
        let raw: [u8; 32] = bytes
            .try_into()
            .map_err(|_| KeyError::Malformed(format!("expected 32 bytes, got {}", bytes.len())))?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&raw)
            .map_err(|_| KeyError::Malformed("not a point on the curve".into()))?;
        Self::checked(key)
    }

    /// Parses 64 hex characters (the 32 raw bytes).
    pub fn from_hex(text: &str) -> Result<PublicKey, KeyError> {
        let bytes =
            hex::decode(text.trim()).map_err(|e| KeyError::Malformed(format!("not hex: {e}")))?;
        Self::from_bytes(&bytes)
    }

    /// Parses an SPKI PEM document (`-----BEGIN PUBLIC KEY-----`).
    pub fn from_pem(pem: &str) -> Result<PublicKey, KeyError> {
        let key = ed25519_dalek::VerifyingKey::from_public_key_pem(pem)
            .map_err(|e| KeyError::Malformed(format!("not an SPKI PEM Ed25519 public key: {e}")))?;
        Self::checked(key)
    }

    /// Reads an SPKI PEM public key file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<PublicKey, KeyError> {
        let path = path.as_ref();
        let text = read_small(path, None)?;
        Self::from_pem(&text).map_err(|e| KeyError::Format {
            path: path.to_owned(),
            expected: "SPKI PEM Ed25519 public key",
            reason: e.to_string(),
        })
    }

    fn checked(key: ed25519_dalek::VerifyingKey) -> Result<PublicKey, KeyError> {
        let id = KeyId::of(key.as_bytes());
        if key.is_weak() {
            return Err(KeyError::Weak(id));
        }
        Ok(PublicKey { key, id })
    }

    /// The key id.
    pub fn id(&self) -> &KeyId {
        &self.id
    }

    /// The 32 raw bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The 32 raw bytes as hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.key.as_bytes())
    }

    /// The key as SPKI PEM.
    pub fn to_pem(&self) -> String {
        self.key
            .to_public_key_pem(LineEnding::LF)
            .expect("encoding an Ed25519 public key cannot fail")
    }

    /// Verifies `signature` (64 bytes) over `message` with `verify_strict`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), KeyError> {
        let signature = Signature::from_slice(signature)
            .map_err(|_| KeyError::BadSignature(self.id.clone()))?;
        self.key
            .verify_strict(message, &signature)
            .map_err(|_| KeyError::BadSignature(self.id.clone()))
    }
}

/// An Ed25519 private key with its public half.
pub struct SigningKey {
    key: ed25519_dalek::SigningKey,
    public: PublicKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.public.id)
    }
}

impl SigningKey {
    /// Generates a new key from the operating system's random source.
    pub fn generate() -> SigningKey {
        let key = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
        Self::from_dalek(key)
    }

    fn from_dalek(key: ed25519_dalek::SigningKey) -> SigningKey {
        let verifying = key.verifying_key();
        let public = PublicKey {
            id: KeyId::of(verifying.as_bytes()),
            key: verifying,
        };
        SigningKey { key, public }
    }

    /// Parses a PKCS#8 PEM document (`-----BEGIN PRIVATE KEY-----`).
    pub fn from_pem(pem: &str) -> Result<SigningKey, KeyError> {
        let key = ed25519_dalek::SigningKey::from_pkcs8_pem(pem).map_err(|e| {
            KeyError::Malformed(format!("not a PKCS#8 PEM Ed25519 private key: {e}"))
        })?;
        Ok(Self::from_dalek(key))
    }

    /// Reads a PKCS#8 PEM private key file. A file its group or others may
    /// access (any of the mode bits `0o077`) is refused with
    /// [`KeyError::Exposed`], before it is parsed.
    pub fn from_file(path: impl AsRef<Path>) -> Result<SigningKey, KeyError> {
        let path = path.as_ref();
        let text = read_small(path, Some("private key"))?;
        Self::from_pem(&text).map_err(|e| KeyError::Format {
            path: path.to_owned(),
            expected: "PKCS#8 PEM Ed25519 private key",
            reason: e.to_string(),
        })
    }

    /// The public half.
    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// The key id of the public half.
    pub fn id(&self) -> &KeyId {
        &self.public.id
    }

    /// Signs `message`, returning the 64-byte signature.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }

    /// The private key as PKCS#8 PEM.
    pub fn to_pem(&self) -> String {
        self.key
            .to_pkcs8_pem(LineEnding::LF)
            .expect("encoding an Ed25519 private key cannot fail")
            .to_string()
    }

    /// Writes the private key (PKCS#8 PEM, mode 0600) to `private` and the
    /// public key (SPKI PEM) to `public`. Refuses to overwrite either file.
    pub fn write_pair(&self, private: &Path, public: &Path) -> Result<(), KeyError> {
        for path in [private, public] {
            if path.exists() {
                return Err(KeyError::Exists(path.to_owned()));
            }
        }
        write_new(private, self.to_pem().as_bytes(), 0o600)?;
        write_new(public, self.public.to_pem().as_bytes(), 0o644)
    }
}

/// Refuses a secret file (`what`: "private key", "cache secret", ...) that
/// its group or others may access: the one check for every secret the host
/// reads, made on the metadata of the file as opened.
pub(crate) fn check_private(
    path: &Path,
    meta: &std::fs::Metadata,
    what: &'static str,
) -> Result<(), KeyError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Exposed {
                path: path.to_owned(),
                what,
                mode,
            });
        }
    }
    #[cfg(not(unix))]
    let _ = (path, meta, what);
    Ok(())
}

/// Reads a small key file: a regular file (checked before the open, so a
/// FIFO cannot block us, and again on the open handle), at most
/// [`MAX_KEY_FILE`] bytes, and private to its owner when it holds a secret
/// (`secret` names it).
fn read_small(path: &Path, secret: Option<&'static str>) -> Result<String, KeyError> {
    use std::io::Read as _;
    let io = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    let not_a_file = || io(std::io::Error::other("not a regular file"));
    if !std::fs::metadata(path).map_err(io)?.is_file() {
        return Err(not_a_file());
    }
    let file = std::fs::File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(not_a_file());
    }
    if let Some(what) = secret {
        check_private(path, &meta, what)?;
    }
    if meta.len() > MAX_KEY_FILE {
        return Err(KeyError::Format {
            path: path.to_owned(),
            expected: "key file",
            reason: format!("{} bytes is too large for a key", meta.len()),
        });
    }
    let mut text = String::new();
    file.take(MAX_KEY_FILE + 1)
        .read_to_string(&mut text)
        .map_err(io)?;
    Ok(text)
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trip_and_ids() {
        let key = SigningKey::generate();
        let again = SigningKey::from_pem(&key.to_pem()).unwrap();
        assert_eq!(key.id(), again.id());
        let public = PublicKey::from_pem(&key.public().to_pem()).unwrap();
        assert_eq!(public.id(), key.id());
        assert_eq!(public.id().as_str().len(), 32);
        let sig = key.sign(b"message");
        public.verify(b"message", &sig).unwrap();
        assert!(public.verify(b"massage", &sig).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn private_keys_open_to_group_or_others_are_refused_with_the_fix() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("host.pem");
        let public = dir.path().join("host.pub.pem");
        let key = SigningKey::generate();
        key.write_pair(&private, &public).unwrap();
        assert_eq!(SigningKey::from_file(&private).unwrap().id(), key.id());
        for mode in [0o640, 0o604, 0o644, 0o620, 0o601, 0o660] {
            std::fs::set_permissions(&private, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = SigningKey::from_file(&private).unwrap_err();
            assert!(matches!(err, KeyError::Exposed { .. }), "{mode:o}: {err}");
            let text = err.to_string();
            assert!(
                text.contains(&format!("(mode {mode:04o})"))
                    && text.contains(&format!("run `chmod 600 {}`", private.display())),
                "{text}"
            );
        }
        // Owner-only modes are fine, and public keys are meant to be read.
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o400)).unwrap();
        SigningKey::from_file(&private).unwrap();
        PublicKey::from_file(&public).unwrap();
    }

    #[test]
    fn weak_and_malformed_keys_are_refused() {
        // The identity point (a small-order point) encoded as a public key.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(matches!(
            PublicKey::from_bytes(&identity),
            Err(KeyError::Weak(_))
        ));
        assert!(matches!(
            PublicKey::from_bytes(&[0u8; 31]),
            Err(KeyError::Malformed(_))
        ));
        assert!(matches!(
            PublicKey::from_hex("zz"),
            Err(KeyError::Malformed(_))
        ));
    }
}
