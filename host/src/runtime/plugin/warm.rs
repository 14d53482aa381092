//! Warm instances ([`Plugin::warm`](super::Plugin::warm)): a plugin's
//! instances kept alive between calls, Extism style, instead of a fresh
//! instance per call.
//!
//! A call takes an idle instance (or makes one when none is idle), runs,
//! and gives it back only when the call returned normally: the guest's
//! `Ok` or its own error. A trap, running out of fuel, a memory or table
//! limit, the deadline, or a caller that drops the call's future leaves
//! the instance in an unknown state, so it is dropped, and the next call
//! gets a fresh one. Before each call the instance gets its full fuel
//! budget back, fresh per-call counters (output, audit budget, log lines,
//! refusals) and a new epoch deadline; what it keeps is its linear memory,
//! globals, tables and WASI handles: state can leak from one call to the
//! next, which is what this mode gives up.

use std::sync::{Arc, Mutex};

use wasmtime::Store;
use wasmtime::component::Instance;

use crate::runtime::control::Control;
use crate::runtime::host::Host;
use crate::runtime::output::Capture;

/// A plugin instance between calls, with what its calls share.
pub(super) struct WarmInstance {
    pub(super) store: Store<Host>,
    pub(super) instance: Instance,
    pub(super) capture: Capture,
    /// The control its store's epoch callback and limiter report to.
    pub(super) control: Arc<Control>,
}

/// The idle warm instances of a plugin and its clones.
pub(super) struct WarmPool {
    idle: Mutex<Vec<WarmInstance>>,
    /// The most idle instances kept.
    keep: usize,
}

impl std::fmt::Debug for WarmPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmPool")
            .field("idle", &self.lock().len())
            .field("keep", &self.keep)
            .finish()
    }
}

impl WarmPool {
    /// A pool keeping at most `keep` idle instances (at least 1).
    pub(super) fn new(keep: usize) -> WarmPool {
        let keep = keep.max(1);
        WarmPool {
            idle: Mutex::new(Vec::with_capacity(keep)),
            keep,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<WarmInstance>> {
        // A push or a pop cannot leave the list half-changed.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An idle instance, armed for its next call with `budget` fuel.
    pub(super) fn take(&self, budget: u64) -> Option<WarmInstance> {
        let mut warm = self.lock().pop()?;
        if warm.store.set_fuel(budget).is_err() {
            // Fuel is always on in this engine; an instance whose fuel
            // cannot be set is not reused.
            return None;
        }
        warm.store.set_epoch_deadline(1);
        let host = warm.store.data_mut();
        host.kernel.log.written = 0;
        let limiter = &mut host.limiter;
        limiter.memory_refused = None;
        limiter.memory_refusals = 0;
        limiter.table_refused = None;
        limiter.table_refusals = 0;
        limiter.handle_refusals = 0;
        warm.control
            .fuel_consumed
            .store(0, std::sync::atomic::Ordering::Relaxed);
        warm.capture.rearm();
        Some(warm)
    }

    /// Keeps `warm` for the next call, unless enough are idle already (then
    /// it is dropped, and its instance slot freed). Returns it when it was
    /// not kept.
    pub(super) fn give_back(&self, warm: WarmInstance) -> Option<WarmInstance> {
        let mut idle = self.lock();
        if idle.len() < self.keep {
            idle.push(warm);
            None
        } else {
            Some(warm)
        }
    }

    /// The most idle instances kept.
    pub(super) fn keep(&self) -> usize {
        self.keep
    }

    /// How many instances are idle now.
    pub(super) fn idle(&self) -> usize {
        self.lock().len()
    }
}
