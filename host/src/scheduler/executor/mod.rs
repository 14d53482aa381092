//! The executor: a work-stealing pool that runs containers (any
//! `Send + 'static` future) across all cores, sharing contended CPU by
//! priority class and, within a class, by trust.
//!
//! Crate-private: the [`Kernel`](crate::Kernel) is the only public path that
//! runs containers, through placement and then a lane here.
//!
//! # Protocol
//!
//! A task is an [`async_task`] task whose metadata names its *lane*: its
//! priority class ([`Priority`](crate::Priority)) and its identity's
//! [`TrustLevel`](crate::TrustLevel), 25 lanes in all. Every lane has a
//! global injector and, on each worker, a local deque whose far end other
//! workers steal from (crossbeam-deque). A task woken on a worker goes to
//! that worker's local deque, otherwise to the injector. A task pinned to a
//! worker ([`SpawnOptions::worker`]) goes to that worker's private pinned
//! queue instead, which nobody else can see: pinned tasks are never stolen.
//!
//! Guests are fuel-metered and yield to the executor at every fuel interval
//! (their future returns `Pending` after waking itself, as the tests'
//! `yield_now` does), so each poll is one bounded *slice*. Before each
//! slice a worker picks the lane to serve with two-level stride scheduling:
//!
//! 1. the runnable **class** with the smallest virtual time, where running a
//!    slice of `t` ns advances the class's virtual time by `t × 16 / w`
//!    with the class weights **Critical 16 : High 8 : Normal 4 : Low 2 :
//!    Background 1**;
//! 2. within it, the runnable **trust** level with the smallest virtual
//!    time, advanced by `t × 8 / w` with the trust weights **System 8 :
//!    High 6 : Medium 4 : Low 2 : Untrusted 1**.
//!
//! Ties go to the more urgent class and the more trusted level. A class (or
//! level) that becomes runnable after idling (nothing of it queued or
//! running) starts at the virtual time of the most recently served one, so
//! idling banks no credit; a task re-queued by its own yield keeps its
//! class's place. Every 16th pick a worker looks at the shared injector
//! before its own deque, so tasks yielding into a local deque cannot starve
//! newcomers of their lane. A slice is
//! charged its measured time capped at 4× the running average slice, so a
//! worker thread descheduled by the OS in the middle of a slice does not
//! make its class pay for CPU it never had.
//!
//! # Guarantees (and the numbers behind them)
//!
//! - **Weighted share.** While classes are continuously runnable, each gets
//!   CPU time in proportion to its weight, measured in busy nanoseconds:
//!   with all five contending, Critical ≈ 16/31 = 51.6 %, High 25.8 %,
//!   Normal 12.9 %, Low 6.5 %, Background 3.2 %; with only Critical and
//!   Background, 94.1 % and 5.9 %.
//! - **No starvation.** A runnable class is served at least once every
//!   `31` slices per worker (the weight sum over its own weight, 31 for
//!   Background), however much higher-priority work there is.
//! - **Latency.** A critical task that becomes runnable is served by the
//!   next worker to finish its current slice: its wait is bounded by one
//!   slice (one fuel interval of whatever runs there: at the default
//!   1,000,000, about 43 µs of a tight loop on the benches' 2-core VM,
//!   which burns 2.31e10 fuel a second; see
//!   [`EngineConfig::fuel_yield_interval`](crate::runtime::EngineConfig::fuel_yield_interval))
//!   plus queue hand-off, independent of how many background tasks are
//!   queued.
//! - **Trust.** Within a class, trust levels share by their weights the same
//!   way (High gets 3× Low's CPU when both contend).
//! - **Affinity.** A pinned task runs only on its worker, never stolen.
//! - **Shutdown.** [`Executor::shutdown`] stops the workers after their
//!   current slice, joins them, and cancels every task left (their join
//!   handles resolve to [`JoinError::Cancelled`](handle::JoinError::Cancelled));
//!   it never waits for a task to finish.
//!
//! The shares are a property of the policy, not of wall-clock time: the
//! unit tests (`tests.rs`) check them by counting fixed work units per
//! class.
//!
//! Worker threads run inside a tokio runtime context (the handle given to
//! the builder, the current one, or a small runtime of the executor's own)
//! because wasmtime-wasi's host calls use tokio timers and `spawn_blocking`.

mod builder;
mod handle;
mod lanes;
mod queues;
#[cfg(test)]
pub(super) mod tests;
mod worker;

use std::fmt;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread;

use super::ScheduleError;

pub(crate) use builder::ExecutorBuilder;
pub(crate) use handle::{JoinHandle, SpawnOptions};
pub(crate) use lanes::CpuStats;
use lanes::{TaskMeta, trust_index};
use queues::Shared;

/// A handle to the work-stealing executor. Cheap to clone; the workers stop
/// when [`Executor::shutdown`] is called or the last handle is dropped
/// (a task holding a handle keeps the executor alive: call `shutdown`).
#[derive(Clone)]
pub(crate) struct Executor {
    inner: Arc<Inner>,
}

impl fmt::Debug for Executor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Executor")
            .field("workers", &self.workers())
            .field(
                "shut_down",
                &self.inner.shared.shutdown.load(Ordering::Relaxed),
            )
            .finish()
    }
}

struct Inner {
    shared: Arc<Shared>,
    joins: Mutex<Vec<thread::JoinHandle<()>>>,
    own_runtime: Mutex<Option<tokio::runtime::Runtime>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Inner {
    fn shutdown(&self) {
        let shared = &self.shared;
        shared.shutdown.store(true, Ordering::SeqCst);
        if let Some(threads) = shared.threads.get() {
            for t in threads {
                t.unpark();
            }
        }
        let joins = std::mem::take(&mut *self.joins.lock().unwrap_or_else(|p| p.into_inner()));
        let me = thread::current().id();
        for j in joins {
            if j.thread().id() != me {
                let _ = j.join();
            }
        }
        shared.drain();
        if let Some(rt) = self
            .own_runtime
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            rt.shutdown_background();
        }
    }
}

impl Executor {
    /// A builder.
    pub(crate) fn builder() -> ExecutorBuilder {
        ExecutorBuilder::new()
    }

    /// Number of worker threads.
    pub(crate) fn workers(&self) -> usize {
        self.inner.shared.stats.workers
    }

    /// Runs `future` as a task of priority `class` (trust `Medium`, any
    /// worker). After shutdown the handle resolves to `Cancelled`. (Tests
    /// only: the kernel spawns with options.)
    #[cfg(test)]
    pub(crate) fn spawn<F>(&self, future: F, class: crate::Priority) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.spawn_task(
            future,
            TaskMeta {
                class: class.lane(),
                level: trust_index(crate::TrustLevel::Medium),
                pin: None,
            },
        )
    }

    /// Runs `future` with `options`. Refused when the pinned worker does not
    /// exist.
    pub(crate) fn spawn_with<F>(
        &self,
        future: F,
        options: &SpawnOptions,
    ) -> Result<JoinHandle<F::Output>, ScheduleError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        if let Some(w) = options.worker
            && w >= self.workers()
        {
            return Err(ScheduleError::NoSuchWorker {
                worker: w,
                workers: self.workers(),
            });
        }
        Ok(self.spawn_task(
            future,
            TaskMeta {
                class: options.class.lane(),
                level: trust_index(options.trust),
                pin: options.worker,
            },
        ))
    }

    fn spawn_task<F>(&self, future: F, meta: TaskMeta) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        JoinHandle::new(self.inner.shared.spawn(future, meta))
    }

    /// Stops the workers after their current slice, joins them and cancels
    /// the remaining tasks. Idempotent.
    pub(crate) fn shutdown(&self) {
        self.inner.shutdown();
    }

    /// Busy time per class since start and the executor's age.
    pub(crate) fn stats(&self) -> Arc<CpuStats> {
        self.inner.shared.stats.clone()
    }

    /// Cumulative busy time per class (Critical first) since the executor
    /// started. (Tests only: the kernel reads it through the
    /// `ResourceMonitor`.)
    #[cfg(test)]
    pub(crate) fn busy(&self) -> [std::time::Duration; 5] {
        let s = &self.inner.shared.stats;
        std::array::from_fn(|c| {
            std::time::Duration::from_nanos(s.busy_ns[c].load(Ordering::Relaxed))
        })
    }
}
