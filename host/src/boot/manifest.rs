//! The boot manifest: the signed list of components that make up a release.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::anchor::{Role, TrustAnchor};
use super::dsse::{Envelope, MANIFEST_PAYLOAD_TYPE};
use super::{
    BootError, Digest, MAX_MANIFEST_BYTES, check_validity, parse_version, shown, valid_name,
};
use crate::keys::{KeyId, SigningKey};

/// Most components a manifest may list.
pub(crate) const MAX_MANIFEST_COMPONENTS: usize = 256;

/// One component of a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestComponent {
    /// Unique within the manifest; 1-64 of `[A-Za-z0-9._-]`.
    pub name: String,
    /// Semantic version (compared for rollback protection).
    pub version: String,
    /// The release it belongs to; must be the manifest's.
    pub release: String,
    /// Path relative to the manifest file's directory (no `..`, not absolute).
    pub path: String,
    /// blake3 over every byte.
    pub blake3: Digest,
    /// Size in bytes.
    pub size: u64,
}

/// The payload of a boot manifest envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestDocument {
    /// The release this manifest describes (1-64 of `[A-Za-z0-9._-]`).
    pub release: String,
    /// Increases with every manifest; an older one is refused (rollback).
    pub version: u64,
    /// When it was made.
    pub issued_at: chrono::DateTime<chrono::Utc>,
    /// After this it is refused (freeze protection).
    pub expires_at: chrono::DateTime<chrono::Utc>,
    /// The components, in boot order.
    pub components: Vec<ManifestComponent>,
}

impl ManifestDocument {
    /// An empty manifest for `release`, issued now.
    pub fn new(
        release: impl Into<String>,
        version: u64,
        expires_at: chrono::DateTime<chrono::Utc>,
    ) -> ManifestDocument {
        ManifestDocument {
            release: release.into(),
            version,
            issued_at: chrono::Utc::now(),
            expires_at,
            components: Vec::new(),
        }
    }

    /// Lists `bytes` as `name`@`version` at `path` (relative to the
    /// manifest's directory), in this manifest's release.
    pub fn add_component(
        &mut self,
        name: impl Into<String>,
        version: impl Into<String>,
        path: impl Into<String>,
        bytes: &[u8],
    ) -> &mut Self {
        self.components.push(ManifestComponent {
            name: name.into(),
            version: version.into(),
            release: self.release.clone(),
            path: path.into(),
            blake3: Digest::of(bytes),
            size: bytes.len() as u64,
        });
        self
    }

    /// The document as JSON: the bytes that get signed.
    pub fn to_payload(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a manifest serialises")
    }

    /// The document in an envelope signed by `keys` (none: unsigned).
    pub fn sign(&self, keys: &[&SigningKey]) -> Envelope {
        let mut envelope = Envelope::new(MANIFEST_PAYLOAD_TYPE, self.to_payload());
        for key in keys {
            envelope.sign(key);
        }
        envelope
    }

    /// Checks the content rules the boot applies to a manifest: names,
    /// semantic versions, paths, one release, limits, and an expiry after
    /// the issue time. Check before signing: [`ManifestDocument::sign`]
    /// signs whatever it is given, and a manifest that breaks a rule is
    /// refused at boot.
    pub fn validate(&self) -> Result<(), BootError> {
        let what = format!("boot manifest {} v{}", shown(&self.release), self.version);
        let invalid = |reason: String| BootError::Invalid {
            what: what.clone(),
            reason,
            source: None,
        };
        if !valid_name(&self.release) {
            return Err(invalid(format!(
                "release `{}` is not 1-64 of [A-Za-z0-9._-]",
                shown(&self.release)
            )));
        }
        if self.version == 0 {
            return Err(invalid("version must be at least 1".into()));
        }
        if self.expires_at <= self.issued_at {
            return Err(invalid(format!(
                "expires at {} before it is issued at {}",
                self.expires_at, self.issued_at
            )));
        }
        if self.components.is_empty() || self.components.len() > MAX_MANIFEST_COMPONENTS {
            return Err(invalid(format!(
                "lists {} components; a manifest lists 1 to {MAX_MANIFEST_COMPONENTS}",
                self.components.len()
            )));
        }
        let mut names = BTreeSet::new();
        for c in &self.components {
            if !valid_name(&c.name) {
                return Err(invalid(format!(
                    "component name `{}` is not 1-64 of [A-Za-z0-9._-]",
                    shown(&c.name)
                )));
            }
            if !names.insert(c.name.as_str()) {
                return Err(invalid(format!("component {} is listed twice", c.name)));
            }
            if c.release != self.release {
                return Err(BootError::MixedRelease {
                    manifest_release: self.release.clone(),
                    name: c.name.clone(),
                    component_release: shown(&c.release),
                });
            }
            parse_version(&format!("{what}, component {}", c.name), &c.version)?;
            check_relative_path(&c.path).map_err(|reason| {
                invalid(format!(
                    "component {} path `{}` {reason}",
                    c.name,
                    shown(&c.path)
                ))
            })?;
        }
        Ok(())
    }
}

/// A path inside the manifest's directory: relative, no `..`, no control
/// characters.
fn check_relative_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() || path.len() > 4096 {
        return Err("must be 1 to 4096 bytes");
    }
    if path.chars().any(char::is_control) {
        return Err("contains control characters");
    }
    for part in Path::new(path).components() {
        match part {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => return Err("leaves the manifest's directory (`..`)"),
            Component::RootDir | Component::Prefix(_) => {
                return Err("is absolute; paths are relative to the manifest");
            }
        }
    }
    Ok(())
}

/// A boot manifest as read: the envelope, its parsed payload and the
/// directory component paths are relative to. Signatures, content rules and
/// validity are checked against an anchor by the boot
/// ([`BootManifest::verify`]).
#[derive(Debug, Clone)]
pub struct BootManifest {
    envelope: Envelope,
    doc: ManifestDocument,
    base_dir: PathBuf,
    payload_digest: Digest,
}

impl BootManifest {
    /// Reads a manifest file (at most [`MAX_MANIFEST_BYTES`]); component
    /// paths are relative to its directory.
    pub fn from_file(path: impl AsRef<Path>) -> Result<BootManifest, BootError> {
        let path = path.as_ref();
        let bytes = super::read::read_small(path, MAX_MANIFEST_BYTES)?;
        let base = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        };
        Self::parse(&bytes, base, &path.display().to_string())
    }

    /// Parses manifest envelope bytes; component paths are relative to `base_dir`.
    pub fn from_bytes(
        bytes: &[u8],
        base_dir: impl Into<PathBuf>,
    ) -> Result<BootManifest, BootError> {
        Self::parse(bytes, base_dir.into(), "boot manifest")
    }

    fn parse(
        bytes: &[u8],
        base_dir: PathBuf,
        source_name: &str,
    ) -> Result<BootManifest, BootError> {
        let envelope = Envelope::from_slice(bytes, MAX_MANIFEST_BYTES, source_name)?;
        if envelope.payload_type() != MANIFEST_PAYLOAD_TYPE {
            return Err(BootError::WrongPayloadType {
                what: source_name.to_owned(),
                found: shown(envelope.payload_type()),
                expected: MANIFEST_PAYLOAD_TYPE,
            });
        }
        let doc: ManifestDocument = serde_json::from_slice(envelope.payload()).map_err(|e| {
            BootError::MalformedDocument {
                what: format!("{source_name} (boot manifest)"),
                source: Box::new(e),
            }
        })?;
        Ok(BootManifest {
            payload_digest: Digest::of(envelope.payload()),
            envelope,
            doc,
            base_dir,
        })
    }

    /// Checks, in order: a threshold of `anchor`'s release keys signed this
    /// exact payload as a boot manifest; the content rules (names, semantic
    /// versions, relative paths, one release); validity at `now`. Returns
    /// the release keys that signed.
    pub fn verify(
        &self,
        anchor: &TrustAnchor,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<KeyId>, BootError> {
        let what = format!(
            "boot manifest {} v{}",
            shown(&self.doc.release),
            self.doc.version
        );
        let signers = self.envelope.verify_threshold(
            &what,
            MANIFEST_PAYLOAD_TYPE,
            &anchor.key_pairs(),
            Role::Release.as_str(),
            anchor.thresholds().release as usize,
        )?;
        self.doc.validate()?;
        check_validity(&what, self.doc.issued_at, Some(self.doc.expires_at), now)?;
        Ok(signers)
    }

    /// The parsed payload (verified only once [`BootManifest::verify`] passed).
    pub fn document(&self) -> &ManifestDocument {
        &self.doc
    }

    /// The release.
    pub fn release(&self) -> &str {
        &self.doc.release
    }

    /// The manifest version.
    pub fn version(&self) -> u64 {
        self.doc.version
    }

    /// The components.
    pub fn components(&self) -> &[ManifestComponent] {
        &self.doc.components
    }

    /// The envelope as read.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// The directory component paths are relative to.
    pub fn base_dir(&self) -> &Path {
        &self.base_dir
    }

    /// Where `component` is read from.
    pub fn path_of(&self, component: &ManifestComponent) -> PathBuf {
        self.base_dir.join(&component.path)
    }

    /// blake3 of the signed payload: what the boot measures and records.
    pub fn digest(&self) -> Digest {
        self.payload_digest
    }
}
