//! The component store: compiles each verified digest once, keeps its
//! `InstancePre`, and caches the compiled artifact on disk.
//!
//! The on-disk artifact is native code that wasmtime maps and runs without
//! validating it again, so a cached file is trusted only if it carries a MAC
//! made with this cache's secret over (component digest, engine
//! fingerprint, artifact bytes). A file that fails the check (edited,
//! truncated, swapped for another component's, written by another engine) is
//! never deserialized: it is recompiled from the verified bytes and
//! replaced, and the rejection is audited.
//!
//! File layout: `MAGIC (8) || MAC (32) || artifact`, at
//! `<dir>/<component digest>-<first 16 hex of engine fingerprint>.cwasm`.
//! The secret is `<dir>/cache.key`, 32 random bytes created with mode 0600.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use wasmtime::Engine;
use wasmtime::component::{Component, InstancePre, Linker};

use crate::audit::{Actor, AuditLog, Entry};
use crate::boot::{Digest, VerifiedComponent};

use super::RuntimeError;
use super::bindings::container::ContainerPre;
use super::engine::engine_fingerprint;
use super::error::BoxError;
use super::events::ContainerEvent;
use super::host::Host;
use super::outcome::Failure;

const MAGIC: &[u8; 8] = b"FO1CWASM";
const MAC_CONTEXT: &[u8] = b"forgeone.compiled-cache.v1\0";
const HEADER: usize = 8 + 32;

/// Counters of the component store, for tests and operators.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct CacheStats {
    /// Components compiled from their bytes.
    pub compiled: u64,
    /// Components loaded from a verified on-disk artifact.
    pub disk_hits: u64,
    /// Launches served by an already-compiled component in memory.
    pub memory_hits: u64,
    /// On-disk artifacts refused by the integrity check and rebuilt.
    pub rejected: u64,
}

/// A compiled component and its pre-instantiation.
pub(crate) struct Compiled {
    pub(crate) digest: Digest,
    pub(crate) name: String,
    /// `Err` when the component imports something the host does not provide.
    pub(crate) pre: Result<InstancePre<Host>, Failure>,
    /// The `wasi:cli/run` export, type-checked once here rather than at
    /// every container start; `Err` says why the component is not a
    /// command (plugins are not).
    pub(crate) command: Result<ContainerPre<Host>, SharedError>,
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiled")
            .field("digest", &self.digest)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

type Slot = Arc<Mutex<Option<Arc<Compiled>>>>;

/// An error shared by every launch of one compiled component.
pub(crate) type SharedError = Arc<dyn std::error::Error + Send + Sync + 'static>;

pub(crate) struct ComponentStore {
    engine: Engine,
    linker: Linker<Host>,
    cache: Option<DiskCache>,
    slots: Mutex<HashMap<Digest, Slot>>,
    audit: AuditLog,
    compiled: AtomicU64,
    disk_hits: AtomicU64,
    memory_hits: AtomicU64,
    rejected: AtomicU64,
}

impl std::fmt::Debug for ComponentStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComponentStore")
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl ComponentStore {
    pub(crate) fn new(
        engine: Engine,
        linker: Linker<Host>,
        cache_dir: Option<&Path>,
        audit: AuditLog,
    ) -> Result<ComponentStore, RuntimeError> {
        let cache = match cache_dir {
            Some(dir) => Some(DiskCache::open(dir, &engine)?),
            None => None,
        };
        Ok(ComponentStore {
            engine,
            linker,
            cache,
            slots: Mutex::new(HashMap::new()),
            audit,
            compiled: AtomicU64::new(0),
            disk_hits: AtomicU64::new(0),
            memory_hits: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        })
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    pub(crate) fn stats(&self) -> CacheStats {
        CacheStats {
            compiled: self.compiled.load(Ordering::Relaxed),
            disk_hits: self.disk_hits.load(Ordering::Relaxed),
            memory_hits: self.memory_hits.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
        }
    }

    /// The compiled form of `component`, compiling it (or loading it from
    /// the verified disk cache) the first time its digest is seen.
    pub(crate) fn get(&self, component: &VerifiedComponent) -> Result<Arc<Compiled>, RuntimeError> {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.entry(component.digest()).or_default().clone()
        };
        // One compilation per digest: concurrent launches wait here.
        let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(compiled) = slot.as_ref() {
            self.memory_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(compiled.clone());
        }
        let started = Instant::now();
        let (wasm, source) = self.load_or_compile(component)?;
        let pre = self
            .linker
            .instantiate_pre(&wasm)
            .map_err(|e| link_failure(&wasm, &self.engine, &e));
        let command = match &pre {
            Ok(pre) => {
                ContainerPre::new(pre.clone()).map_err(|e| SharedError::from(BoxError::from(e)))
            }
            Err(failure) => Err(Arc::new(failure.clone()) as SharedError),
        };
        let compiled = Arc::new(Compiled {
            digest: component.digest(),
            name: component.name().to_string(),
            pre,
            command,
        });
        self.audit_event(
            component,
            &ContainerEvent::Compiled {
                name: component.name().to_string(),
                source,
                compile_ms: started.elapsed().as_millis() as u64,
            },
        );
        *slot = Some(compiled.clone());
        Ok(compiled)
    }

    fn load_or_compile(
        &self,
        component: &VerifiedComponent,
    ) -> Result<(Component, &'static str), RuntimeError> {
        if let Some(cache) = &self.cache {
            match cache.load(component.digest()) {
                CacheRead::Hit(artifact) => {
                    // SAFETY: `Component::deserialize` trusts its input to be
                    // an artifact wasmtime produced for this engine. This one
                    // is: it carries a MAC under this cache's secret (a 0600
                    // file only this host can read) over the component digest,
                    // this engine's compatibility fingerprint and the exact
                    // bytes, and the MAC was just checked. Only
                    // `store_artifact` below writes such files, with bytes
                    // from `Component::serialize` of this engine.
                    match unsafe { Component::deserialize(&self.engine, &artifact) } {
                        Ok(wasm) => {
                            self.disk_hits.fetch_add(1, Ordering::Relaxed);
                            return Ok((wasm, "cache"));
                        }
                        Err(e) => {
                            self.reject(component, cache, format!("does not deserialize: {e}"));
                        }
                    }
                }
                CacheRead::Rejected(reason) => self.reject(component, cache, reason),
                CacheRead::Miss => {}
            }
        }
        let wasm = Component::new(&self.engine, component.bytes().as_ref()).map_err(|e| {
            RuntimeError::Compile {
                name: component.name().to_string(),
                digest: component.digest().to_hex(),
                source: e.into(),
            }
        })?;
        self.compiled.fetch_add(1, Ordering::Relaxed);
        if let Some(cache) = &self.cache {
            match wasm.serialize() {
                Ok(artifact) => {
                    if let Err(e) = cache.store(component.digest(), &artifact) {
                        tracing::warn!("compiled cache not written: {e}");
                    }
                }
                Err(e) => tracing::warn!("cannot serialize compiled component: {e}"),
            }
        }
        Ok((wasm, "compiled"))
    }

    fn reject(&self, component: &VerifiedComponent, cache: &DiskCache, reason: String) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        let path = cache.path(component.digest());
        tracing::warn!(path = %path.display(), "compiled cache artifact rejected: {reason}");
        self.audit_event(
            component,
            &ContainerEvent::CacheRejected {
                path: path.display().to_string(),
                reason,
            },
        );
    }

    fn audit_event(&self, component: &VerifiedComponent, event: &ContainerEvent) {
        let entry = Entry::new(event)
            .actor(Actor::host())
            .component(component.digest().to_hex());
        if let Err(e) = self.audit.append(entry) {
            tracing::error!("audit append failed: {e}");
        }
    }
}

/// Turns a linker error into the import it is about.
fn link_failure(component: &Component, engine: &Engine, error: &wasmtime::Error) -> Failure {
    let detail = format!("{error:#}");
    let interface = component
        .component_type()
        .imports(engine)
        .map(|(name, _)| name.to_string())
        .find(|name| detail.contains(&format!("`{name}`")))
        .unwrap_or_else(|| "(unknown import)".to_string());
    Failure::HostCallDenied { interface, detail }
}

enum CacheRead {
    Hit(Vec<u8>),
    Miss,
    Rejected(String),
}

#[derive(Debug)]
struct DiskCache {
    dir: PathBuf,
    key: [u8; 32],
    fingerprint: [u8; 32],
}

impl DiskCache {
    fn open(dir: &Path, engine: &Engine) -> Result<DiskCache, RuntimeError> {
        let io = |source| RuntimeError::Cache {
            path: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let key = load_or_create_key(dir)?;
        Ok(DiskCache {
            dir: dir.to_owned(),
            key,
            fingerprint: engine_fingerprint(engine),
        })
    }

    fn path(&self, digest: Digest) -> PathBuf {
        self.dir.join(format!(
            "{}-{}.cwasm",
            digest.to_hex(),
            hex::encode(&self.fingerprint[..8])
        ))
    }

    fn mac(&self, digest: Digest, artifact: &[u8]) -> blake3::Hash {
        let mut hasher = blake3::Hasher::new_keyed(&self.key);
        hasher.update(MAC_CONTEXT);
        hasher.update(digest.as_bytes());
        hasher.update(&self.fingerprint);
        hasher.update(&(artifact.len() as u64).to_le_bytes());
        hasher.update(artifact);
        hasher.finalize()
    }

    fn load(&self, digest: Digest) -> CacheRead {
        let path = self.path(digest);
        let mut bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return CacheRead::Miss,
            Err(e) => return CacheRead::Rejected(format!("unreadable: {e}")),
        };
        if bytes.len() < HEADER || &bytes[..8] != MAGIC {
            return CacheRead::Rejected("not a ForgeOne compiled artifact (bad header)".into());
        }
        let mut stored = [0u8; 32];
        stored.copy_from_slice(&bytes[8..HEADER]);
        // `blake3::Hash` equality is constant-time.
        if self.mac(digest, &bytes[HEADER..]) != blake3::Hash::from_bytes(stored) {
            return CacheRead::Rejected(
                "integrity check failed (MAC mismatch): edited, truncated or not written by this host"
                    .into(),
            );
        }
        bytes.drain(..HEADER);
        CacheRead::Hit(bytes)
    }

    fn store(&self, digest: Digest, artifact: &[u8]) -> std::io::Result<()> {
        let path = self.path(digest);
        let tmp = self
            .dir
            .join(format!(".{}.tmp", uuid::Uuid::new_v4().simple()));
        let result = (|| {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(MAGIC)?;
            file.write_all(self.mac(digest, artifact).as_bytes())?;
            file.write_all(artifact)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

/// Reads the cache secret `<dir>/cache.key`, creating it (mode 0600) on
/// first use. A secret its group or others may access is refused (the check
/// private keys get, [`crate::keys`]): anyone who can read it can forge
/// artifacts that this host would execute. Processes sharing the directory
/// never see a partly written secret: it is written whole to a temporary
/// file and linked into place, and whoever links first wins.
fn load_or_create_key(dir: &Path) -> Result<[u8; 32], RuntimeError> {
    use std::io::Read as _;
    let path = dir.join("cache.key");
    let io = |source| RuntimeError::Cache {
        path: path.clone(),
        source,
    };
    let invalid = |what: &str| io(std::io::Error::new(std::io::ErrorKind::InvalidData, what));
    for _ in 0..2 {
        match std::fs::metadata(&path) {
            Ok(meta) if !meta.is_file() => {
                return Err(invalid("cache secret is not a regular file"));
            }
            Ok(_) => {
                let file = std::fs::File::open(&path).map_err(io)?;
                let meta = file.metadata().map_err(io)?;
                if !meta.is_file() {
                    return Err(invalid("cache secret is not a regular file"));
                }
                crate::keys::check_private(&path, &meta, "cache secret").map_err(|e| {
                    RuntimeError::Cache {
                        path: dir.to_owned(),
                        source: std::io::Error::new(std::io::ErrorKind::PermissionDenied, e),
                    }
                })?;
                let mut bytes = Vec::with_capacity(32);
                file.take(33).read_to_end(&mut bytes).map_err(io)?;
                return bytes
                    .try_into()
                    .map_err(|_| invalid("cache secret is not 32 bytes"));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut key);
                let tmp = dir.join(format!(".cache.key.{}.tmp", uuid::Uuid::new_v4().simple()));
                let linked =
                    write_private(&tmp, &key).and_then(|()| std::fs::hard_link(&tmp, &path));
                let _ = std::fs::remove_file(&tmp);
                match linked {
                    Ok(()) => return Ok(key),
                    // Another process created it first: use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(io(e)),
                }
            }
            Err(e) => return Err(io(e)),
        }
    }
    Err(invalid(
        "cache secret appeared and vanished while it was read",
    ))
}

/// Writes a new file, mode 0600, synced.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}
