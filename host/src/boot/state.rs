//! The boot state directory: the pinned anchor, the highest accepted
//! versions (rollback protection), last-known-good copies and try counters.
//!
//! ```text
//! STATE/
//!   lock                      held (flock) while a BootState is open
//!   state.json                versions, copies, try counters
//!   anchor.json               the pinned trust anchor envelope
//!   objects/<blake3>.wasm     last-known-good component copies (content addressed)
//!   manifests/<blake3>.json   the signed manifests that authorised them
//! ```
//!
//! Every write is atomic (a temporary file, fsync, rename, fsync of the
//! directory), so a crash leaves the old or the new state, never a torn one.
//! A damaged `state.json` or `anchor.json` is an error naming the file,
//! never a silent reset: a reset would drop rollback protection. Copies are
//! re-verified (digest, and the signed manifest that authorised them) each
//! time they are used, so a damaged or planted object is refused.
//!
//! The state is not itself signed: an attacker who can write it can undo
//! rollback protection (as one who can replace the anchor file can), but
//! cannot make unsigned code run.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::anchor::TrustAnchor;
use super::event::{BootEvent, Emitter};
use super::manifest::BootManifest;
use super::{BootError, Digest, MAX_ANCHOR_BYTES, VerifiedComponent};
use crate::audit::{AuditLog, lock_waiting};

const FORMAT: &str = "forgeone.boot-state.v1";
const MAX_STATE_BYTES: usize = 16 * 1024 * 1024;
/// Usable (pending or good) copies kept per component, newest first.
const MAX_COPIES: usize = 4;
/// Records of bad copies kept per component.
const MAX_BAD: usize = 16;
/// Default consecutive failed starts before a new version is marked bad.
pub(crate) const DEFAULT_MAX_TRIES: u32 = 3;

/// Where a stored copy stands in boot assessment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CopyStatus {
    /// Booted verified; not yet confirmed by a successful start.
    Pending,
    /// Started successfully at least once.
    Good,
    /// Failed to start too many times in a row; never used again.
    Bad,
}

/// A last-known-good copy of a component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredCopy {
    /// blake3 of the bytes (the object's name).
    pub digest: Digest,
    /// The component version.
    pub version: String,
    /// Its size.
    pub size: u64,
    /// The release it was booted in.
    pub release: String,
    /// blake3 of the payload of the manifest that authorised it.
    pub manifest: Digest,
    /// When it last booted verified.
    pub verified_at: chrono::DateTime<chrono::Utc>,
    /// Boot assessment status.
    pub status: CopyStatus,
    /// Consecutive failed starts while pending.
    pub failures: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ComponentRecord {
    highest_version: String,
    #[serde(default)]
    copies: Vec<StoredCopy>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PinnedAnchor {
    id: uuid::Uuid,
    version: u64,
    digest: Digest,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ManifestRecord {
    pub(crate) version: u64,
    pub(crate) release: String,
    pub(crate) digest: Digest,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateDoc {
    format: String,
    #[serde(default)]
    anchor: Option<PinnedAnchor>,
    #[serde(default)]
    manifest: Option<ManifestRecord>,
    #[serde(default)]
    components: BTreeMap<String, ComponentRecord>,
}

impl StateDoc {
    fn new() -> StateDoc {
        StateDoc {
            format: FORMAT.into(),
            anchor: None,
            manifest: None,
            components: BTreeMap::new(),
        }
    }
}

/// What [`BootState::record_start`] concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StartVerdict {
    /// A pending version started: it is now good.
    Confirmed,
    /// Already good; nothing changes.
    Good,
    /// A pending version failed; it has `tries_left` more starts.
    Failed {
        /// Consecutive failures so far.
        failures: u32,
        /// Starts left before it is marked bad.
        tries_left: u32,
    },
    /// A pending version failed `failures` times in a row: marked bad, and
    /// the next boot falls back to the previous good copy.
    MarkedBad {
        /// Consecutive failures.
        failures: u32,
    },
    /// A good version failed: good versions are not re-assessed (as in
    /// systemd's boot assessment); the failure is only recorded in the audit log.
    GoodFailed,
    /// The state has no copy of this component and digest (it did not boot
    /// from this state directory).
    Untracked,
}

struct Inner {
    dir: PathBuf,
    _lock: File,
    doc: Mutex<StateDoc>,
    max_tries: AtomicU32,
    audit: Mutex<Option<AuditLog>>,
}

/// An open state directory. Clone it freely; clones share one lock and one
/// in-memory state, and every change is written through atomically.
///
/// What is public is what an operator tool or an embedder needs: opening
/// it, boot assessment ([`BootState::record_start`] with its settings) and
/// read-only views ([`BootState::copies`], [`BootState::highest_version`],
/// [`BootState::manifest_version`]). Everything that writes the pin, the
/// versions or the copies belongs to the boot and to [`ComponentCheck`].
///
/// [`ComponentCheck`]: super::ComponentCheck
#[derive(Clone)]
pub struct BootState {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for BootState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootState")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

impl BootState {
    /// Opens (creating it, mode 0700) the state directory `dir` and locks it
    /// for this process. A damaged `state.json` is
    /// [`BootError::StateCorrupt`]; a directory another process holds is
    /// [`BootError::StateLocked`].
    pub fn open(dir: impl AsRef<Path>) -> Result<BootState, BootError> {
        Self::open_waiting(dir, Duration::ZERO, |_| {})
    }

    /// Like [`BootState::open`], but while another process holds the
    /// directory it waits, up to `timeout`, for it to be let go; `on_wait`
    /// is called once, with the lock file, when the wait begins. After
    /// `timeout` it is [`BootError::StateLocked`].
    pub fn open_waiting(
        dir: impl AsRef<Path>,
        timeout: Duration,
        on_wait: impl Fn(&Path),
    ) -> Result<BootState, BootError> {
        let dir = dir.as_ref().to_owned();
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| BootError::Io { path, source }
        };
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt as _;
            builder.mode(0o700);
        }
        for sub in ["", "objects", "manifests"] {
            let path = dir.join(sub);
            builder.create(&path).map_err(io(&path))?;
        }
        let lock_path = dir.join("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        match lock_waiting(&lock, timeout, || on_wait(&lock_path)) {
            Ok(true) => {}
            Ok(false) => return Err(BootError::StateLocked { path: lock_path }),
            Err(e) => return Err(io(&lock_path)(e)),
        }
        let state_path = dir.join("state.json");
        let loaded = match std::fs::symlink_metadata(&state_path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // A fresh directory starts empty; one that already holds a
                // pinned anchor, copies or manifests lost its record, and
                // starting afresh would drop its rollback protection.
                if let Some(left) = leftover(&dir) {
                    return Err(BootError::StateCorrupt {
                        path: state_path,
                        reason: format!(
                            "state.json is missing but {} is still there; restore it from a \
                             backup, or remove the whole directory to start afresh (which drops \
                             rollback protection)",
                            left.display()
                        ),
                        source: None,
                    });
                }
                None
            }
            _ => {
                let bytes = super::read::read_small(&state_path, MAX_STATE_BYTES)
                    .map_err(|e| corrupt_by(&state_path, e))?;
                let doc: StateDoc =
                    serde_json::from_slice(&bytes).map_err(|e| corrupt_by(&state_path, e))?;
                if doc.format != FORMAT {
                    return Err(BootError::StateCorrupt {
                        path: state_path,
                        reason: format!(
                            "format `{}`, expected `{FORMAT}`",
                            super::shown(&doc.format)
                        ),
                        source: None,
                    });
                }
                Some(doc)
            }
        };
        let fresh = loaded.is_none();
        let state = BootState {
            inner: Arc::new(Inner {
                dir,
                _lock: lock,
                doc: Mutex::new(loaded.unwrap_or_else(StateDoc::new)),
                max_tries: AtomicU32::new(DEFAULT_MAX_TRIES),
                audit: Mutex::new(None),
            }),
        };
        if fresh {
            // Written first, so that a crash while the anchor is pinned
            // leaves a directory that still opens.
            state.save()?;
        }
        Ok(state)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Consecutive failed starts after which a new (pending) version is
    /// marked bad (at least 1). Default: 3.
    pub fn set_max_tries(&self, tries: u32) -> &Self {
        self.inner.max_tries.store(tries.max(1), Ordering::Relaxed);
        self
    }

    /// The current maximum of consecutive failed starts.
    pub fn max_tries(&self) -> u32 {
        self.inner.max_tries.load(Ordering::Relaxed)
    }

    /// Audit start records and bad markings to `log`. Default: none (traced only).
    pub fn set_audit(&self, log: AuditLog) -> &Self {
        *self.inner.audit.lock().unwrap_or_else(|p| p.into_inner()) = Some(log);
        self
    }

    /// Records that the runtime started (`ok`) or failed to start the copy
    /// of `name` with `digest`, systemd boot-assessment style: a pending
    /// version that starts becomes good; one that fails `max_tries` times in
    /// a row is marked bad, and the next boot uses the previous good copy
    /// instead. Written through atomically before it returns.
    pub fn record_start(
        &self,
        name: &str,
        digest: Digest,
        ok: bool,
    ) -> Result<StartVerdict, BootError> {
        let max_tries = self.max_tries();
        let mut doc = self.lock_doc();
        let Some(copy) = doc
            .components
            .get_mut(name)
            .and_then(|r| r.copies.iter_mut().find(|c| c.digest == digest))
        else {
            return Ok(StartVerdict::Untracked);
        };
        let mut newly_bad = false;
        let verdict = match (copy.status, ok) {
            (CopyStatus::Pending, true) => {
                copy.status = CopyStatus::Good;
                copy.failures = 0;
                StartVerdict::Confirmed
            }
            (CopyStatus::Good, true) => StartVerdict::Good,
            (CopyStatus::Good, false) => StartVerdict::GoodFailed,
            (CopyStatus::Bad, _) => StartVerdict::MarkedBad {
                failures: copy.failures,
            },
            (CopyStatus::Pending, false) => {
                copy.failures = copy.failures.saturating_add(1);
                if copy.failures >= max_tries {
                    copy.status = CopyStatus::Bad;
                    newly_bad = true;
                    StartVerdict::MarkedBad {
                        failures: copy.failures,
                    }
                } else {
                    StartVerdict::Failed {
                        failures: copy.failures,
                        tries_left: max_tries - copy.failures,
                    }
                }
            }
        };
        let (status, failures) = (copy.status, copy.failures);
        self.save_locked(&doc)?;
        drop(doc);
        let audit = self
            .inner
            .audit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let emitter = Emitter::new(audit.as_ref());
        emitter.emit(
            &BootEvent::StartRecorded {
                name: name.to_owned(),
                digest: digest.to_hex(),
                ok,
                failures,
                status: status_str(status),
            },
            Some(digest),
        )?;
        if newly_bad {
            emitter.emit(
                &BootEvent::MarkedBad {
                    name: name.to_owned(),
                    digest: digest.to_hex(),
                    failures,
                    max_tries,
                },
                Some(digest),
            )?;
        }
        Ok(verdict)
    }

    /// The stored copies of `name`, newest first.
    pub fn copies(&self, name: &str) -> Vec<StoredCopy> {
        let doc = self.lock_doc();
        let mut copies = doc
            .components
            .get(name)
            .map(|r| r.copies.clone())
            .unwrap_or_default();
        copies.sort_by_key(|c| std::cmp::Reverse(c.verified_at));
        copies
    }

    /// The highest accepted version of `name`.
    pub fn highest_version(&self, name: &str) -> Option<String> {
        self.lock_doc()
            .components
            .get(name)
            .map(|r| r.highest_version.clone())
    }

    /// The highest accepted manifest version.
    pub fn manifest_version(&self) -> Option<u64> {
        self.lock_doc().manifest.as_ref().map(|m| m.version)
    }

    /// The pinned trust anchor, checked again as it is read.
    pub(crate) fn pinned_anchor(&self) -> Result<Option<TrustAnchor>, BootError> {
        let pinned = self.lock_doc().anchor.clone();
        let Some(pinned) = pinned else {
            return Ok(None);
        };
        let path = self.inner.dir.join("anchor.json");
        let corrupt = |reason: String| BootError::StateCorrupt {
            path: path.clone(),
            reason,
            source: None,
        };
        let bytes =
            super::read::read_small(&path, MAX_ANCHOR_BYTES).map_err(|e| corrupt_by(&path, e))?;
        let anchor = TrustAnchor::from_bytes(&bytes).map_err(|e| corrupt_by(&path, e))?;
        if anchor.id() != pinned.id
            || anchor.version() != pinned.version
            || anchor.digest() != pinned.digest
        {
            return Err(corrupt(format!(
                "holds anchor {} v{}, but state.json pins {} v{} ({})",
                anchor.id(),
                anchor.version(),
                pinned.id,
                pinned.version,
                pinned.digest
            )));
        }
        Ok(Some(anchor))
    }

    /// Where the copy with `digest` is stored.
    pub(crate) fn object_path(&self, digest: &Digest) -> PathBuf {
        self.inner
            .dir
            .join("objects")
            .join(format!("{digest}.wasm"))
    }

    pub(crate) fn manifest_path(&self, digest: &Digest) -> PathBuf {
        self.inner
            .dir
            .join("manifests")
            .join(format!("{digest}.json"))
    }

    fn lock_doc(&self) -> MutexGuard<'_, StateDoc> {
        self.inner.doc.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Pins `anchor` (writes `anchor.json`, then the state).
    pub(crate) fn pin_anchor(&self, anchor: &TrustAnchor) -> Result<(), BootError> {
        write_atomic(
            &self.inner.dir.join("anchor.json"),
            &anchor.envelope().to_json(),
        )?;
        let mut doc = self.lock_doc();
        doc.anchor = Some(PinnedAnchor {
            id: anchor.id(),
            version: anchor.version(),
            digest: anchor.digest(),
        });
        self.save_locked(&doc)
    }

    /// Records the manifest as the highest accepted one.
    pub(crate) fn record_manifest(&self, manifest: &BootManifest) {
        self.lock_doc().manifest = Some(ManifestRecord {
            version: manifest.version(),
            release: manifest.release().to_owned(),
            digest: manifest.digest(),
        });
    }

    /// The highest manifest record.
    pub(crate) fn manifest_record(&self) -> Option<ManifestRecord> {
        self.lock_doc().manifest.clone()
    }

    /// Records `version` of `name` as accepted: it becomes the highest
    /// version when it is newer (or, with `lower`, an explicitly accepted
    /// older one). Written through before it returns.
    pub(crate) fn record_version(
        &self,
        name: &str,
        version: &str,
        lower: bool,
    ) -> Result<(), BootError> {
        let mut doc = self.lock_doc();
        match doc.components.get_mut(name) {
            None => {
                doc.components.insert(
                    name.to_owned(),
                    ComponentRecord {
                        highest_version: version.to_owned(),
                        copies: Vec::new(),
                    },
                );
            }
            Some(record)
                if record.highest_version != version
                    && (lower || is_newer(version, &record.highest_version)) =>
            {
                record.highest_version = version.to_owned();
            }
            Some(_) => return Ok(()),
        }
        self.save_locked(&doc)
    }

    /// Stores a copy of a component that booted verified (its bytes and the
    /// manifest that authorised it) and raises its highest version to the
    /// component's. The highest version is lowered only when `lower` says
    /// the operator explicitly accepted an older version.
    pub(crate) fn store_copy(
        &self,
        component: &VerifiedComponent,
        manifest: &BootManifest,
        now: chrono::DateTime<chrono::Utc>,
        lower: bool,
    ) -> Result<(), BootError> {
        let object = self.object_path(&component.digest());
        // An existing copy is kept only if it still hashes to its name.
        let size = component.bytes().len() as u64;
        let present = super::read::read_component(&object, component.name(), size, Some(size))
            .is_ok_and(|(_, digest)| digest == component.digest());
        if !present {
            write_atomic(&object, component.bytes())?;
        }
        let manifest_file = self.manifest_path(&manifest.digest());
        if !manifest_file.is_file() {
            write_atomic(&manifest_file, &manifest.envelope().to_json())?;
        }
        let mut doc = self.lock_doc();
        let record = doc
            .components
            .entry(component.name().to_owned())
            .or_insert_with(|| ComponentRecord {
                highest_version: component.version().to_owned(),
                copies: Vec::new(),
            });
        if lower || is_newer(component.version(), &record.highest_version) {
            record.highest_version = component.version().to_owned();
        }
        match record
            .copies
            .iter_mut()
            .find(|c| c.digest == component.digest())
        {
            Some(copy) => {
                copy.verified_at = now;
                copy.manifest = manifest.digest();
                copy.release = manifest.release().to_owned();
                copy.version = component.version().to_owned();
            }
            None => record.copies.push(StoredCopy {
                digest: component.digest(),
                version: component.version().to_owned(),
                size: component.bytes().len() as u64,
                release: manifest.release().to_owned(),
                manifest: manifest.digest(),
                verified_at: now,
                status: CopyStatus::Pending,
                failures: 0,
            }),
        }
        Ok(())
    }

    /// Keeps the newest [`MAX_COPIES`] usable copies and the newest
    /// [`MAX_BAD`] bad records per component (a bad version must stay
    /// refused while a manifest lists it, but its bytes are not needed),
    /// deletes unreferenced objects and manifests, and writes the state.
    pub(crate) fn prune_and_save(&self) -> Result<(), BootError> {
        let doc = {
            let mut doc = self.lock_doc();
            for record in doc.components.values_mut() {
                let (mut bad, mut usable): (Vec<StoredCopy>, Vec<StoredCopy>) = record
                    .copies
                    .drain(..)
                    .partition(|c| c.status == CopyStatus::Bad);
                usable.sort_by_key(|c| std::cmp::Reverse(c.verified_at));
                usable.truncate(MAX_COPIES);
                bad.sort_by_key(|c| std::cmp::Reverse(c.verified_at));
                bad.truncate(MAX_BAD);
                record.copies = usable;
                record.copies.extend(bad);
            }
            self.save_locked(&doc)?;
            doc.clone()
        };
        let usable = || {
            doc.components
                .values()
                .flat_map(|r| r.copies.iter().filter(|c| c.status != CopyStatus::Bad))
        };
        let objects: std::collections::BTreeSet<String> =
            usable().map(|c| format!("{}.wasm", c.digest)).collect();
        let manifests: std::collections::BTreeSet<String> =
            usable().map(|c| format!("{}.json", c.manifest)).collect();
        for (sub, keep) in [("objects", &objects), ("manifests", &manifests)] {
            let dir = self.inner.dir.join(sub);
            let entries = std::fs::read_dir(&dir).map_err(|source| BootError::Io {
                path: dir.clone(),
                source,
            })?;
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !keep.contains(&name) {
                    // Best effort: an unreferenced object is harmless.
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        Ok(())
    }

    /// Writes the state (caller holds the lock on the document).
    fn save_locked(&self, doc: &StateDoc) -> Result<(), BootError> {
        let mut bytes = serde_json::to_vec_pretty(doc).expect("the state serialises");
        bytes.push(b'\n');
        write_atomic(&self.inner.dir.join("state.json"), &bytes)
    }

    /// Writes the state.
    pub(crate) fn save(&self) -> Result<(), BootError> {
        let doc = self.lock_doc();
        self.save_locked(&doc)
    }
}

/// The state file `path` is damaged: `error` says how.
/// What a state directory without `state.json` still holds, if anything:
/// the pinned anchor, or a stored copy or manifest.
fn leftover(dir: &Path) -> Option<PathBuf> {
    let anchor = dir.join("anchor.json");
    if anchor.exists() {
        return Some(anchor);
    }
    ["objects", "manifests"].into_iter().find_map(|sub| {
        std::fs::read_dir(dir.join(sub))
            .ok()?
            .flatten()
            .map(|e| e.path())
            .next()
    })
}

fn corrupt_by(path: &Path, error: impl std::error::Error + Send + Sync + 'static) -> BootError {
    BootError::StateCorrupt {
        path: path.to_owned(),
        reason: error.to_string(),
        source: Some(Box::new(error)),
    }
}

/// True when `version` is a higher semantic version than `highest` (or
/// `highest` does not parse: it is replaced).
fn is_newer(version: &str, highest: &str) -> bool {
    match (
        semver::Version::parse(version),
        semver::Version::parse(highest),
    ) {
        (Ok(v), Ok(h)) => v > h,
        (Ok(_), Err(_)) => true,
        (Err(_), _) => false,
    }
}

fn status_str(status: CopyStatus) -> &'static str {
    match status {
        CopyStatus::Pending => "pending",
        CopyStatus::Good => "good",
        CopyStatus::Bad => "bad",
    }
}

/// Writes `bytes` to `path` atomically: a new temporary file in the same
/// directory, fsync, rename over `path`, fsync of the directory (the one
/// helper, shared with the audit log's head file).
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), BootError> {
    crate::audit::write_atomic(path, bytes).map_err(|(path, source)| BootError::Io { path, source })
}
