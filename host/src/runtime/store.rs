//! The component store: compiles each verified digest once, keeps its
//! `InstancePre`, and caches the compiled artifact on disk
//! ([`super::cache`]: integrity-checked, compressed by default).

use std::collections::HashMap;
use std::collections::hash_map::Entry as Vacancy;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use wasmtime::Engine;
use wasmtime::component::{Component, InstancePre, Linker};

use crate::audit::{Actor, AuditLog, Entry};
use crate::boot::{Digest, VerifiedComponent};

use super::RuntimeError;
use super::bindings::container::ContainerPre;
use super::cache::{CacheRead, Compression, DiskCache};
use super::compile::{self, CompileLimits, StructureError};
use super::engine::EngineConfig;
use super::error::BoxError;
use super::events::ContainerEvent;
use super::host::Host;
use super::outcome::Failure;

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

/// An error shared by every launch of one compiled component.
pub(crate) type SharedError = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// Where one digest's compile is.
#[derive(Clone)]
enum SlotState {
    /// On the compile pool (or queued for it).
    Compiling,
    Ready(Arc<Compiled>),
    /// The compiler's error; the slot is gone from the map, so the next
    /// launch tries again.
    Failed(SharedError),
}

/// One digest's compile, which every launch of it waits for.
struct Slot {
    state: Mutex<SlotState>,
    done: Condvar,
}

impl Slot {
    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn finish(&self, state: SlotState) {
        *self.lock() = state;
        self.done.notify_all();
    }

    /// The state once it is no longer `Compiling`, or `None` at `deadline`.
    fn wait(&self, deadline: Option<Instant>) -> Option<SlotState> {
        let mut state = self.lock();
        loop {
            if !matches!(*state, SlotState::Compiling) {
                return Some(state.clone());
            }
            state = match deadline {
                None => self.done.wait(state).unwrap_or_else(|p| p.into_inner()),
                Some(deadline) => {
                    let left = deadline.checked_duration_since(Instant::now())?;
                    self.done
                        .wait_timeout(state, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }
}

/// What a compile job needs, shared with the pool.
struct Shared {
    engine: Engine,
    linker: Linker<Host>,
    cache: Option<DiskCache>,
    slots: Mutex<HashMap<Digest, Arc<Slot>>>,
    audit: AuditLog,
    compiled: AtomicU64,
    disk_hits: AtomicU64,
    memory_hits: AtomicU64,
    rejected: AtomicU64,
}

pub(crate) struct ComponentStore {
    shared: Arc<Shared>,
    limits: CompileLimits,
    /// The compile threads (see [`super::compile`]).
    pool: rayon::ThreadPool,
}

impl std::fmt::Debug for ComponentStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComponentStore")
            .field("cache", &self.shared.cache)
            .field("limits", &self.limits)
            .field("compile_threads", &self.pool.current_num_threads())
            .finish_non_exhaustive()
    }
}

impl ComponentStore {
    pub(crate) fn new(
        engine: Engine,
        linker: Linker<Host>,
        cache_dir: Option<&Path>,
        compression: Compression,
        audit: AuditLog,
        config: &EngineConfig,
    ) -> Result<ComponentStore, RuntimeError> {
        let cache = match cache_dir {
            Some(dir) => Some(DiskCache::open(dir, &engine, compression)?),
            None => None,
        };
        let pool = compile::pool(config.compile_threads)
            .map_err(|e| RuntimeError::engine("starting the compile threads", e))?;
        Ok(ComponentStore {
            shared: Arc::new(Shared {
                engine,
                linker,
                cache,
                slots: Mutex::new(HashMap::new()),
                audit,
                compiled: AtomicU64::new(0),
                disk_hits: AtomicU64::new(0),
                memory_hits: AtomicU64::new(0),
                rejected: AtomicU64::new(0),
            }),
            limits: config.compile_limits,
            pool,
        })
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.shared.engine
    }

    pub(crate) fn stats(&self) -> CacheStats {
        let s = &self.shared;
        CacheStats {
            compiled: s.compiled.load(Ordering::Relaxed),
            disk_hits: s.disk_hits.load(Ordering::Relaxed),
            memory_hits: s.memory_hits.load(Ordering::Relaxed),
            rejected: s.rejected.load(Ordering::Relaxed),
        }
    }

    /// The compiled form of `component`. The first time its digest is seen
    /// it is checked against the structural limits (refused with the
    /// number over the limit), then compiled (or loaded from the verified
    /// disk cache) on the compile pool; every launch of the digest waits
    /// for that one compile, each at most `timeout`. `Ok(None)` when the
    /// timeout passed first: the compile goes on, and its result is kept
    /// for the next launch.
    pub(crate) fn get_within(
        &self,
        component: &VerifiedComponent,
        timeout: Option<Duration>,
    ) -> Result<Option<Arc<Compiled>>, RuntimeError> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let digest = component.digest();
        let existing = self.slots().get(&digest).cloned();
        let (slot, mine) = match existing {
            Some(slot) => (slot, false),
            None => {
                self.check(component)?;
                match self.slots().entry(digest) {
                    Vacancy::Occupied(e) => (e.get().clone(), false),
                    Vacancy::Vacant(e) => (
                        e.insert(Arc::new(Slot {
                            state: Mutex::new(SlotState::Compiling),
                            done: Condvar::new(),
                        }))
                        .clone(),
                        true,
                    ),
                }
            }
        };
        if mine {
            let shared = self.shared.clone();
            let job = (component.clone(), slot.clone());
            self.pool.spawn(move || shared.compile(&job.0, &job.1));
        }
        match slot.wait(deadline) {
            None => Ok(None),
            Some(SlotState::Ready(compiled)) => {
                if !mine {
                    self.shared.memory_hits.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Some(compiled))
            }
            Some(SlotState::Failed(error)) => Err(RuntimeError::Compile {
                name: component.name().to_string(),
                digest: digest.to_hex(),
                source: Box::new(error),
            }),
            Some(SlotState::Compiling) => unreachable!("`wait` returns a finished state"),
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, Arc<Slot>>> {
        self.shared.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The structural check, before anything is compiled.
    fn check(&self, component: &VerifiedComponent) -> Result<(), RuntimeError> {
        let name = || component.name().to_string();
        let digest = || component.digest().to_hex();
        match compile::check_structure(component.bytes(), &self.limits) {
            Ok(()) => Ok(()),
            Err(StructureError::Exceeded(e)) => Err(RuntimeError::TooComplex {
                name: name(),
                digest: digest(),
                what: e.what,
                count: e.count,
                limit: e.limit,
                setting: e.setting,
            }),
            Err(malformed @ StructureError::Malformed(_)) => Err(RuntimeError::Compile {
                name: name(),
                digest: digest(),
                source: Box::new(malformed),
            }),
        }
    }
}

impl Shared {
    /// The compile job (on the pool): settles `slot` whatever happens,
    /// a compiler panic included, so no launch waits for nothing.
    fn compile(&self, component: &VerifiedComponent, slot: &Slot) {
        let started = Instant::now();
        let built =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.build(component)))
                .unwrap_or_else(|_| {
                    Err(SharedError::from(BoxError::from("the compiler panicked")))
                });
        match built {
            Ok((compiled, source)) => {
                self.audit_event(
                    component,
                    &ContainerEvent::Compiled {
                        name: component.name().to_string(),
                        source,
                        compile_ms: started.elapsed().as_millis() as u64,
                    },
                );
                slot.finish(SlotState::Ready(compiled));
            }
            Err(error) => {
                // Not kept: the next launch compiles again (as a launch did
                // before compiles were shared).
                let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
                if slots
                    .get(&component.digest())
                    .is_some_and(|s| std::ptr::eq(Arc::as_ptr(s), slot))
                {
                    slots.remove(&component.digest());
                }
                drop(slots);
                slot.finish(SlotState::Failed(error));
            }
        }
    }

    fn build(
        &self,
        component: &VerifiedComponent,
    ) -> Result<(Arc<Compiled>, &'static str), SharedError> {
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
        Ok((compiled, source))
    }

    fn load_or_compile(
        &self,
        component: &VerifiedComponent,
    ) -> Result<(Component, &'static str), SharedError> {
        if let Some(cache) = &self.cache {
            match cache.load(component.digest()) {
                CacheRead::Hit(artifact) => {
                    // SAFETY: `Component::deserialize` trusts its input to be
                    // an artifact wasmtime produced for this engine. This one
                    // is: its file carries a MAC under this cache's secret (a
                    // 0600 file only this host can read) over the component
                    // digest, this engine's compatibility fingerprint and the
                    // exact bytes stored, the MAC was checked before they were
                    // decompressed, and the artifact is what they decompress
                    // to. Only `DiskCache::store` writes such files, with
                    // bytes from `Component::serialize` of this engine.
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
        let wasm = Component::new(&self.engine, component.bytes().as_ref())
            .map_err(|e| SharedError::from(BoxError::from(e)))?;
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
