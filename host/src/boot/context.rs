//! The result of a boot: what was measured, how it ended and what may run.

use std::path::{Component, Path, PathBuf};

use serde::Serialize;

use super::anchor::TrustAnchor;
use super::manifest::BootManifest;
use super::measure::Measurement;
use super::quote::{BootQuote, BootReport, REPORT_FORMAT, ReportAnchor, ReportComponent};
use super::state::BootState;
use super::status::{BootOutcome, IntegrityStatus};
use super::{Digest, Provenance, VerifiedComponent};
use crate::keys::{KeyId, SigningKey};

/// A component that was refused and replaced by a last-known-good copy (of
/// the same or a newer version, or, when allowed, an older one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Recovery {
    /// The component.
    pub name: String,
    /// The component file that was refused.
    pub path: PathBuf,
    /// The digest of the refused bytes, when they could be measured.
    pub failed_digest: Option<Digest>,
    /// Why they were refused.
    pub reason: String,
    /// The digest of the copy used instead.
    pub digest: Digest,
    /// Its version (as the signed manifest that authorised it lists it).
    pub version: String,
    /// When the copy is older than the highest accepted version of the
    /// component, that version: the recovery is a downgrade (allowed
    /// explicitly, and the boot is [`BootOutcome::Downgraded`]).
    pub downgraded_from: Option<String>,
}

/// A component that does not run: it was refused and no copy could replace
/// it, or (in a compromised boot, where nothing runs) it verified but the
/// boot failed closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct LeftOut {
    /// The component (in a boot by signatures, a file whose signature did
    /// not verify is named by its path).
    pub name: String,
    /// The version the manifest listed (empty in a boot by signatures when
    /// the file's signature did not verify).
    pub version: String,
    /// The component file.
    pub path: PathBuf,
    /// Why it does not run (and why no copy could replace it).
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
    /// The components allowed to run, in boot order (the manifest's, or the
    /// order they were added to a boot by signatures).
    pub components: Vec<VerifiedComponent>,
    /// Components replaced by a last-known-good copy (downgrades included).
    pub recovered: Vec<Recovery>,
    /// Components that do not run, in boot order: those refused without a
    /// copy to replace them, then (when nothing runs) those that verified.
    pub left_out: Vec<LeftOut>,
    /// The final measurement register.
    pub register: Digest,
    /// The manifest's release, when the manifest verified (none in a boot
    /// by signatures).
    pub release: Option<String>,
    /// The manifest's version, when the manifest verified (none in a boot
    /// by signatures).
    pub manifest_version: Option<u64>,
    /// The boot quote, when the boot was given a host key.
    pub quote: Option<BootQuote>,
    pub(crate) state: Option<BootState>,
    pub(crate) manifest: Option<BootManifest>,
    pub(crate) files: Vec<BootFile>,
}

/// Where one boot entry's component file led: to a component that runs
/// (an index into [`BootContext::components`]) or to one that does not
/// (into [`BootContext::left_out`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    Runs(usize),
    LeftOut(usize),
}

/// One boot entry's component file, as [`BootContext::lookup`] matches it.
#[derive(Debug, Clone)]
pub(crate) struct BootFile {
    /// The path as the boot read it.
    pub(crate) path: PathBuf,
    pub(crate) key: FileKey,
    pub(crate) slot: Slot,
}

/// A file's identity for lookups: its canonical path when it exists, and
/// its absolute, lexically normalised path in any case (for files deleted
/// since, or never there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileKey {
    canonical: Option<PathBuf>,
    lexical: PathBuf,
}

impl FileKey {
    pub(crate) fn of(path: &Path) -> FileKey {
        FileKey {
            canonical: std::fs::canonicalize(path).ok(),
            lexical: lexical(path),
        }
    }

    pub(crate) fn matches(&self, other: &FileKey) -> bool {
        match (&self.canonical, &other.canonical) {
            (Some(a), Some(b)) if a == b => true,
            _ => self.lexical == other.lexical,
        }
    }
}

/// `path` made absolute (against the current directory) with `.` and `..`
/// folded lexically.
fn lexical(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let mut out = PathBuf::new();
    for part in absolute.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => match out.components().next_back() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir | Component::Prefix(_)) => {}
                _ => out.push(part),
            },
            other => out.push(other),
        }
    }
    out
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

    /// The boot manifest exactly as it verified (signatures, content rules,
    /// validity, rollback), so that nothing reads `boot-manifest.json` a
    /// second time. `None` when the manifest was refused, or in a boot by
    /// per-component signatures.
    pub fn manifest(&self) -> Option<&BootManifest> {
        self.manifest.as_ref()
    }

    /// What the boot made of the component file at `path`: the component it
    /// verified (or recovered) from it, or why it does not run. `None` when
    /// no boot entry names that file (or the manifest was refused).
    ///
    /// Paths are compared after canonicalisation (symbolic links, `.` and
    /// `..` resolved), falling back to the absolute, lexically normalised
    /// path when a file does not exist (deleted since the boot, say). In a
    /// manifest boot an entry's file is
    /// [`BootManifest::path_of`]; when two entries name one file, the first
    /// wins. The bytes handed out are those the boot verified, never the
    /// file's current content.
    pub fn lookup(&self, path: &Path) -> Option<Result<&VerifiedComponent, &LeftOut>> {
        let key = FileKey::of(path);
        let file = self.files.iter().find(|f| f.key.matches(&key))?;
        Some(match file.slot {
            Slot::Runs(i) => Ok(&self.components[i]),
            Slot::LeftOut(i) => Err(&self.left_out[i]),
        })
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
