//! The [`Runtime`]: launches containers and drives their lifecycle.
//!
//! ```text
//!            launch
//!              │
//!          Creating ──────────────┐ link failure
//!              │                  ▼
//!   pause  ┌─ Running ─┐ end   Failed(..) ◄─┐
//!  ┌──────►│           ├──────► Stopped     │ restart policy + backoff
//!  │       └─ Paused ◄─┘        (or back to Creating)
//!  │ resume     │ stop                      │ crash loop
//!  └────────────┴──► Stopping ──► Stopped   └──► Quarantined ── release ──► Creating
//! ```
//!
//! Pause and stop take effect while a guest is busy: guests yield to the
//! host every [`EngineConfig::fuel_yield_interval`] units of fuel, and at
//! every epoch tick when a request is pending. A paused container's future
//! is simply not polled, so it uses no CPU until resumed.

mod guard;
mod launch;
mod operations;
mod supervision;
mod types;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use crate::audit::{Actor, AuditLog, Entry};
use crate::runtime::RuntimeError;
use crate::runtime::container::RunSpec;
use crate::runtime::control::Control;
use crate::runtime::engine::{Allocation, EpochTicker};
use crate::runtime::events::ContainerEvent;
use crate::runtime::host::{GuestIdentity, Host};
use crate::runtime::outcome::Outcome;
use crate::runtime::registry::PluginRegistry;
use crate::runtime::store::ComponentStore;

pub use launch::PreparedContainer;
pub use types::{
    AuditFailure, ContainerContext, ContainerResources, ContainerStatus, ExecutionDNA, RunTotals,
    RuntimeConfig, RuntimeContext, RuntimePolicy, RuntimeResources, RuntimeStatus,
};

struct ContainerEntry {
    ctx: ContainerContext,
    /// Who the container is, with the actor and subjects of its records.
    who: Arc<GuestIdentity>,
    control: Arc<Control>,
    /// `None` when the component cannot link (it can never run).
    spec: Option<RunSpec>,
    settled: tokio::sync::watch::Sender<Option<Outcome>>,
    supervising: bool,
}

pub(crate) struct Inner {
    pub(crate) store: ComponentStore,
    pub(crate) audit: AuditLog,
    pub(crate) config: RuntimeConfig,
    containers: Mutex<HashMap<Uuid, ContainerEntry>>,
    pub(crate) plugins: PluginRegistry,
    status: Mutex<RuntimeStatus>,
    allocation: Allocation,
    _ticker: EpochTicker,
}

/// The container runtime: one wasmtime engine, a component store, and the
/// containers it runs. Clone it freely (it is a handle).
#[derive(Clone)]
pub struct Runtime {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("policy", &self.inner.config.policy)
            .finish_non_exhaustive()
    }
}

impl ContainerEntry {
    /// An audit entry for `event` about this container, by its identity.
    fn audit_entry(&self, event: ContainerEvent) -> Entry {
        self.who.entry(event)
    }
}

impl Runtime {
    /// Creates a runtime writing its events to `audit`. `config` may be a
    /// chain of setters on a temporary:
    ///
    /// ```no_run
    /// # fn f(log: forgeone::audit::AuditLog) -> Result<(), forgeone::RuntimeError> {
    /// use forgeone::runtime::{EngineConfig, Runtime, RuntimeConfig};
    /// let runtime = Runtime::new(
    ///     RuntimeConfig::new().engine(EngineConfig::new().pooling(64, 64 << 20)),
    ///     log,
    /// )?;
    /// # Ok(()) }
    /// ```
    pub fn new(config: impl Into<RuntimeConfig>, audit: AuditLog) -> Result<Runtime, RuntimeError> {
        let config = config.into();
        let (engine, allocation) = config.engine.build()?;
        let mut linker = wasmtime::component::Linker::<Host>::new(&engine);
        crate::runtime::host::add_to_linker(&mut linker)
            .map_err(|e| RuntimeError::engine("linking the host imports", e))?;
        let ticker = EpochTicker::start(&engine, config.engine.epoch_tick)?;
        let store = ComponentStore::new(
            engine,
            linker,
            config.cache_dir.as_deref(),
            config.cache_compression,
            audit.clone(),
            &config.engine,
        )?;
        Ok(Runtime {
            inner: Arc::new(Inner {
                store,
                audit,
                config,
                containers: Mutex::new(HashMap::new()),
                plugins: PluginRegistry::default(),
                status: Mutex::new(RuntimeStatus::Running),
                allocation,
                _ticker: ticker,
            }),
        })
    }

    /// The instance allocator the engine uses: the pool it was configured
    /// with, or on demand (and why, when a pool was asked for with
    /// [`EngineConfig::pooling_or_on_demand`](crate::runtime::EngineConfig::pooling_or_on_demand)
    /// and the deployment did not fit it).
    pub fn allocation(&self) -> &Allocation {
        &self.inner.allocation
    }

    fn containers(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, ContainerEntry>> {
        self.inner
            .containers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Refuses new work while the runtime shuts down, and fails closed when
    /// the audit log cannot be written (no work runs unaudited).
    pub(crate) fn accepting(&self) -> Result<(), RuntimeError> {
        if *self.inner.status.lock().unwrap_or_else(|p| p.into_inner()) != RuntimeStatus::Running {
            return Err(RuntimeError::ShuttingDown);
        }
        self.inner.audit.ensure_writable()?;
        Ok(())
    }

    pub(crate) fn audit(&self, entry: Entry) -> Result<(), RuntimeError> {
        self.inner.audit.append(entry)?;
        Ok(())
    }

    fn with_entry<R>(
        &self,
        id: Uuid,
        f: impl FnOnce(&mut ContainerEntry) -> Result<R, &'static str>,
        action: &'static str,
    ) -> Result<R, RuntimeError> {
        let mut containers = self.containers();
        let entry = containers.get_mut(&id).ok_or(RuntimeError::NotFound(id))?;
        match f(entry) {
            Ok(r) => Ok(r),
            // Refused: audited, and an error naming the current status.
            Err(_) => {
                let status = entry.ctx.status.name();
                let record = entry.audit_entry(ContainerEvent::TransitionRefused {
                    action,
                    status: status.to_string(),
                });
                drop(containers);
                if let Err(e) = self.audit(record) {
                    tracing::error!(container = %id, "audit append failed: {e}");
                }
                Err(RuntimeError::IllegalTransition { id, action, status })
            }
        }
    }

    /// An audit entry for `event` about container `id` (by the host when
    /// the container is gone).
    fn entry_for(&self, id: Uuid, event: ContainerEvent) -> Entry {
        match self.containers().get(&id) {
            Some(entry) => entry.audit_entry(event),
            None => Entry::owned(event).container(id).actor(Actor::host()),
        }
    }

    fn audit_ok(&self, id: Uuid, event: ContainerEvent) -> Result<(), RuntimeError> {
        let entry = self.entry_for(id, event);
        self.audit(entry)
    }
}

fn live_context(entry: &ContainerEntry) -> ContainerContext {
    let mut ctx = entry.ctx.clone();
    if matches!(
        ctx.status,
        ContainerStatus::Running | ContainerStatus::Paused | ContainerStatus::Stopping
    ) {
        ctx.resources.fuel_consumed = entry.control.fuel_consumed.load(Ordering::Relaxed);
        ctx.resources.peak_memory = entry.control.peak_memory.load(Ordering::Relaxed);
    }
    ctx
}
