//! The executor: a work-stealing pool that runs containers (any
//! `Send + 'static` future) across all cores, sharing contended CPU by
//! priority class and, within a class, by trust.
//!
//! # Protocol
//!
//! A task is an [`async_task`] task whose metadata names its *lane*: its
//! priority class ([`Priority`]) and its identity's [`TrustLevel`], 25 lanes
//! in all. Every lane has a global injector and, on each worker, a local
//! deque whose far end other workers steal from (crossbeam-deque). A task
//! woken on a worker goes to that worker's local deque, otherwise to the
//! injector. A task pinned to a worker ([`SpawnOptions::worker`]) goes to
//! that worker's private pinned queue instead, which nobody else can see:
//! pinned tasks are never stolen.
//!
//! Guests are fuel-metered and yield to the executor at every fuel interval
//! (their future returns `Pending` after waking itself, like
//! [`yield_now`]), so each poll is one bounded *slice*. Before each slice a
//! worker picks the lane to serve with two-level stride scheduling:
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
//!   slice (one fuel interval of whatever runs there) plus queue hand-off,
//!   independent of how many background tasks are queued.
//! - **Trust.** Within a class, trust levels share by their weights the same
//!   way (High gets 3× Low's CPU when both contend).
//! - **Affinity.** A pinned task runs only on its worker, never stolen.
//! - **Shutdown.** [`Executor::shutdown`] stops the workers after their
//!   current slice, joins them, and cancels every task left (their join
//!   handles resolve to [`JoinError::Cancelled`]); it never waits for a
//!   task to finish.
//!
//! The shares are a property of the policy, not of wall-clock time: the
//! test suite checks them by counting fixed work units per class.
//!
//! Worker threads run inside a tokio runtime context (the handle given to
//! the builder, the current one, or a small runtime of the executor's own)
//! because wasmtime-wasi's host calls use tokio timers and `spawn_blocking`.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use async_task::{Runnable, Task};
use crossbeam_deque::{Injector, Steal, Stealer, Worker};

use super::ScheduleError;

use crate::identity::{Priority, TrustLevel};

const CLASSES: usize = 5;
const LEVELS: usize = 5;
const LANES: usize = CLASSES * LEVELS;

/// Class weights indexed by lane class (Critical first).
const CLASS_WEIGHT: [u64; CLASSES] = [16, 8, 4, 2, 1];
/// Trust weights indexed by level, most trusted first (System first).
const TRUST_WEIGHT: [u64; LEVELS] = [8, 6, 4, 2, 1];

fn trust_index(level: TrustLevel) -> usize {
    match level {
        TrustLevel::System => 0,
        TrustLevel::High => 1,
        TrustLevel::Medium => 2,
        TrustLevel::Low => 3,
        TrustLevel::Untrusted => 4,
    }
}

/// Per-task metadata carried in the task header.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TaskMeta {
    class: usize,
    level: usize,
    pin: Option<usize>,
}

impl TaskMeta {
    fn lane(&self) -> usize {
        self.class * LEVELS + self.level
    }
}

/// Busy time per class, shared with the [`ResourceMonitor`](super::ResourceMonitor).
#[derive(Debug)]
pub(crate) struct CpuStats {
    pub(crate) busy_ns: [AtomicU64; CLASSES],
    pub(crate) workers: usize,
}

/// How to run a spawned task. Every setter states its default.
#[derive(Debug, Clone)]
pub struct SpawnOptions {
    class: Priority,
    trust: TrustLevel,
    worker: Option<usize>,
}

impl SpawnOptions {
    /// Options for a task of `class`, trust `Medium`, on any worker.
    pub fn new(class: Priority) -> SpawnOptions {
        SpawnOptions {
            class,
            trust: TrustLevel::Medium,
            worker: None,
        }
    }

    /// The trust level the task is shared by within its class. Default
    /// `Medium`.
    pub fn trust(&mut self, level: TrustLevel) -> &mut Self {
        self.trust = level;
        self
    }

    /// Pins the task to worker `index` (0-based): it runs only there and is
    /// never stolen. Default: any worker.
    pub fn worker(&mut self, index: usize) -> &mut Self {
        self.worker = Some(index);
        self
    }
}

/// Why a task did not produce its output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    /// The task was cancelled (executor shut down, or [`JoinHandle::cancel`]).
    #[error("task cancelled")]
    Cancelled,
    /// The task panicked; the message if it was a string.
    #[error("task panicked: {0}")]
    Panicked(String),
}

/// Awaits a spawned task's output. Dropping it detaches the task (it keeps
/// running); [`JoinHandle::cancel`] stops it.
pub struct JoinHandle<T> {
    task: Option<async_task::FallibleTask<T, TaskMeta>>,
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}

impl<T> JoinHandle<T> {
    /// Whether the task has completed (or was cancelled).
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Cancels the task. Its future is dropped the next time it would run
    /// (at once if it is queued).
    pub fn cancel(mut self) {
        drop(self.task.take());
    }

    /// Blocks the calling thread until the task is done. Do not call from
    /// inside a task of the same executor.
    pub fn join(self) -> Result<T, JoinError> {
        block_on(self)
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(task) = self.task.as_mut() else {
            return Poll::Ready(Err(JoinError::Cancelled));
        };
        // With `propagate_panic`, a task's panic is re-raised here; turn it
        // into an error instead of unwinding the awaiting thread.
        let polled =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Pin::new(task).poll(cx)));
        match polled {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(Some(v))) => {
                self.task = None;
                Poll::Ready(Ok(v))
            }
            Ok(Poll::Ready(None)) => {
                self.task = None;
                Poll::Ready(Err(JoinError::Cancelled))
            }
            Err(payload) => {
                self.task = None;
                let msg = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic payload".into());
                Poll::Ready(Err(JoinError::Panicked(msg)))
            }
        }
    }
}

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.detach();
        }
    }
}

/// Blocks the current thread on `future` (a minimal park/unpark waker).
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    struct Unparker(Thread);
    impl Wake for Unparker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unparker(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(v) = future.as_mut().poll(&mut cx) {
            return v;
        }
        thread::park();
    }
}

/// Yields once to the executor: wakes itself and returns `Pending`, so
/// the worker can serve a more urgent lane before polling it again (what a
/// fuel-metered guest does at every fuel interval).
pub async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(move |cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}

/// The index of the executor worker running the current thread, if any.
pub fn current_worker() -> Option<usize> {
    LOCAL.with(|l| l.borrow().as_ref().map(|l| l.index))
}

/// Configures an [`Executor`]. Every setter states its default.
#[derive(Debug, Clone, Default)]
pub struct ExecutorBuilder {
    workers: Option<usize>,
    handle: Option<tokio::runtime::Handle>,
    thread_name: Option<String>,
}

impl ExecutorBuilder {
    /// A builder with the defaults.
    pub fn new() -> ExecutorBuilder {
        ExecutorBuilder::default()
    }

    /// Number of worker threads. Default: the machine's available
    /// parallelism (one per core).
    pub fn workers(&mut self, n: usize) -> &mut Self {
        self.workers = Some(n.max(1));
        self
    }

    /// The tokio runtime the workers enter. Default: the runtime current
    /// when [`build`](Self::build) is called, else a one-thread runtime the
    /// executor owns.
    pub fn tokio_handle(&mut self, handle: tokio::runtime::Handle) -> &mut Self {
        self.handle = Some(handle);
        self
    }

    /// Worker thread name prefix. Default `forgeone-worker`.
    pub fn thread_name(&mut self, name: impl Into<String>) -> &mut Self {
        self.thread_name = Some(name.into());
        self
    }

    /// Starts the workers.
    pub fn build(&self) -> Result<Executor, ScheduleError> {
        let workers = self
            .workers
            .unwrap_or_else(|| thread::available_parallelism().map_or(1, |n| n.get()));
        let (handle, own_runtime) = match self
            .handle
            .clone()
            .or_else(|| tokio::runtime::Handle::try_current().ok())
        {
            Some(h) => (h, None),
            None => {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("forgeone-exec-io")
                    .enable_time()
                    .build()
                    .map_err(|source| ScheduleError::Executor {
                        what: "tokio runtime".into(),
                        source,
                    })?;
                (rt.handle().clone(), Some(rt))
            }
        };
        let locals: Vec<Vec<Worker<Runnable<TaskMeta>>>> = (0..workers)
            .map(|_| (0..LANES).map(|_| Worker::new_fifo()).collect())
            .collect();
        let shared = Arc::new(Shared {
            injectors: (0..LANES).map(|_| Injector::new()).collect(),
            stealers: locals
                .iter()
                .map(|l| l.iter().map(Worker::stealer).collect())
                .collect(),
            lane_len: (0..LANES).map(|_| AtomicUsize::new(0)).collect(),
            class_len: Default::default(),
            pinned: (0..workers)
                .map(|_| Mutex::new(Pinned::default()))
                .collect(),
            pinned_len: (0..workers).map(|_| AtomicUsize::new(0)).collect(),
            class_vt: Default::default(),
            level_vt: Default::default(),
            class_floor: AtomicU64::new(0),
            level_floor: Default::default(),
            sleepers: Mutex::new(Vec::new()),
            sleeping: AtomicUsize::new(0),
            threads: OnceLock::new(),
            shutdown: AtomicBool::new(false),
            stats: Arc::new(CpuStats {
                busy_ns: Default::default(),
                workers,
            }),
            started: Instant::now(),
            avg_slice: AtomicU64::new(0),
            tasks: Mutex::new(Vec::new()),
            running_class: Default::default(),
            running_lane: (0..LANES).map(|_| AtomicUsize::new(0)).collect(),
        });
        let prefix = self
            .thread_name
            .clone()
            .unwrap_or_else(|| "forgeone-worker".into());
        let mut joins = Vec::with_capacity(workers);
        for (index, queues) in locals.into_iter().enumerate() {
            let worker_shared = shared.clone();
            let handle = handle.clone();
            let spawned = thread::Builder::new()
                .name(format!("{prefix}-{index}"))
                .spawn(move || worker_main(worker_shared, index, queues, handle));
            match spawned {
                Ok(j) => joins.push(j),
                Err(e) => {
                    shared.shutdown.store(true, Ordering::SeqCst);
                    for j in &joins {
                        j.thread().unpark();
                    }
                    for j in joins {
                        let _ = j.join();
                    }
                    return Err(ScheduleError::Executor {
                        what: format!("cannot start worker thread {index}"),
                        source: e,
                    });
                }
            }
        }
        let _ = shared
            .threads
            .set(joins.iter().map(|j| j.thread().clone()).collect());
        Ok(Executor {
            inner: Arc::new(Inner {
                shared,
                joins: Mutex::new(joins),
                own_runtime: Mutex::new(own_runtime),
            }),
        })
    }
}

/// A handle to the work-stealing executor. Cheap to clone; the workers stop
/// when [`Executor::shutdown`] is called or the last handle is dropped
/// (a task holding a handle keeps the executor alive: call `shutdown`).
#[derive(Clone)]
pub struct Executor {
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
    /// An executor with the default settings ([`ExecutorBuilder`]).
    pub fn new() -> Result<Executor, ScheduleError> {
        ExecutorBuilder::new().build()
    }

    /// A builder.
    pub fn builder() -> ExecutorBuilder {
        ExecutorBuilder::new()
    }

    /// Number of worker threads.
    pub fn workers(&self) -> usize {
        self.inner.shared.stats.workers
    }

    /// Runs `future` as a task of priority `class` (trust `Medium`, any
    /// worker). After shutdown the handle resolves to `Cancelled`.
    pub fn spawn<F>(&self, future: F, class: Priority) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.spawn_task(
            future,
            TaskMeta {
                class: class.lane(),
                level: trust_index(TrustLevel::Medium),
                pin: None,
            },
        )
    }

    /// Runs `future` with `options`. Refused when the pinned worker does not
    /// exist.
    pub fn spawn_with<F>(
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
        let weak: Weak<Shared> = Arc::downgrade(&self.inner.shared);
        let slot = self.inner.shared.register();
        let future = Tracked {
            inner: future,
            slot,
        };
        let (runnable, task): (Runnable<TaskMeta>, Task<F::Output, TaskMeta>) =
            async_task::Builder::new()
                .metadata(meta)
                .propagate_panic(true)
                .spawn(
                    move |_| future,
                    move |runnable: Runnable<TaskMeta>| match weak.upgrade() {
                        Some(shared) => shared.schedule(runnable),
                        // The executor is gone: dropping the runnable
                        // cancels the task (its future is dropped), which is
                        // all that is left to do.
                        None => drop(runnable),
                    },
                );
        runnable.schedule();
        JoinHandle {
            task: Some(task.fallible()),
        }
    }

    /// Stops the workers after their current slice, joins them and cancels
    /// the remaining tasks. Idempotent.
    pub fn shutdown(&self) {
        self.inner.shutdown();
    }

    /// Busy time per class since start and the executor's age.
    pub(crate) fn stats(&self) -> Arc<CpuStats> {
        self.inner.shared.stats.clone()
    }

    /// Cumulative busy time per class (Critical first) since the executor
    /// started.
    pub fn busy(&self) -> [Duration; 5] {
        let s = &self.inner.shared.stats;
        std::array::from_fn(|c| Duration::from_nanos(s.busy_ns[c].load(Ordering::Relaxed)))
    }

    /// Time since the executor started.
    pub fn uptime(&self) -> Duration {
        self.inner.shared.started.elapsed()
    }
}

#[derive(Default)]
struct Pinned {
    lanes: [VecDeque<Runnable<TaskMeta>>; LANES],
}

struct Shared {
    injectors: Vec<Injector<Runnable<TaskMeta>>>,
    /// `stealers[worker][lane]`.
    stealers: Vec<Vec<Stealer<Runnable<TaskMeta>>>>,
    /// Stealable tasks queued per lane (incremented before the push).
    lane_len: Vec<AtomicUsize>,
    class_len: [AtomicUsize; CLASSES],
    pinned: Vec<Mutex<Pinned>>,
    pinned_len: Vec<AtomicUsize>,
    class_vt: [AtomicU64; CLASSES],
    level_vt: [[AtomicU64; LEVELS]; CLASSES],
    class_floor: AtomicU64,
    level_floor: [AtomicU64; CLASSES],
    sleepers: Mutex<Vec<usize>>,
    sleeping: AtomicUsize,
    threads: OnceLock<Vec<Thread>>,
    shutdown: AtomicBool,
    stats: Arc<CpuStats>,
    started: Instant,
    /// Running average slice length in ns (exponential, 1/64).
    avg_slice: AtomicU64,
    /// Every live task's last waker, so shutdown can cancel idle tasks
    /// (a task waiting on an event that never comes has no runnable to drop).
    tasks: Mutex<Vec<Weak<TaskSlot>>>,
    /// Tasks being polled right now, per class and per lane.
    running_class: [AtomicUsize; CLASSES],
    running_lane: Vec<AtomicUsize>,
}

#[derive(Default)]
struct TaskSlot {
    waker: Mutex<Option<Waker>>,
}

pin_project_lite::pin_project! {
    /// A task's future, recording its waker on every poll (for shutdown).
    struct Tracked<F> {
        #[pin]
        inner: F,
        slot: Arc<TaskSlot>,
    }
}

impl<F: Future> Future for Tracked<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        {
            let mut w = this.slot.waker.lock().unwrap_or_else(|p| p.into_inner());
            match w.as_ref() {
                Some(old) if old.will_wake(cx.waker()) => {}
                _ => *w = Some(cx.waker().clone()),
            }
        }
        this.inner.poll(cx)
    }
}

struct Local {
    shared: *const Shared,
    index: usize,
    queues: Vec<Worker<Runnable<TaskMeta>>>,
}

thread_local! {
    static LOCAL: RefCell<Option<Local>> = const { RefCell::new(None) };
}

impl Shared {
    fn schedule(&self, runnable: Runnable<TaskMeta>) {
        if self.shutdown.load(Ordering::SeqCst) {
            // Shut down: cancel the task instead of queueing it.
            drop(runnable);
            return;
        }
        let meta = *runnable.metadata();
        let (class, level) = (meta.class, meta.level);
        // Idling banks no credit: a class (or level) that had nothing queued
        // or running starts no earlier than the most recently served one. A
        // task re-queued by its own yield is not idle (it is still running)
        // and keeps its place.
        let lane = meta.lane();
        if self.class_len[class].load(Ordering::SeqCst) == 0
            && self.running_class[class].load(Ordering::SeqCst) == 0
        {
            self.class_vt[class]
                .fetch_max(self.class_floor.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        if self.lane_len[lane].load(Ordering::SeqCst) == 0
            && self.running_lane[lane].load(Ordering::SeqCst) == 0
        {
            self.level_vt[class][level].fetch_max(
                self.level_floor[class].load(Ordering::Relaxed),
                Ordering::Relaxed,
            );
        }
        if let Some(w) = meta.pin {
            self.pinned[w]
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .lanes[meta.lane()]
            .push_back(runnable);
            self.pinned_len[w].fetch_add(1, Ordering::SeqCst);
            if let Some(t) = self.threads.get().and_then(|t| t.get(w)) {
                t.unpark();
            }
            return;
        }
        self.lane_len[lane].fetch_add(1, Ordering::SeqCst);
        self.class_len[class].fetch_add(1, Ordering::SeqCst);
        let runnable = LOCAL.with(|l| match l.borrow().as_ref() {
            Some(local) if std::ptr::eq(local.shared, self) => {
                local.queues[lane].push(runnable);
                None
            }
            _ => Some(runnable),
        });
        if let Some(runnable) = runnable {
            self.injectors[lane].push(runnable);
        }
        self.wake_one();
    }

    fn wake_one(&self) {
        if self.sleeping.load(Ordering::SeqCst) == 0 {
            return;
        }
        let next = self
            .sleepers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop();
        if let Some(w) = next
            && let Some(t) = self.threads.get().and_then(|t| t.get(w))
        {
            t.unpark();
        }
    }

    fn has_work(&self, me: usize) -> bool {
        self.pinned_len[me].load(Ordering::SeqCst) > 0
            || self.class_len.iter().any(|c| c.load(Ordering::SeqCst) > 0)
    }

    /// Registers a new task's waker slot (pruning dead ones now and then).
    fn register(&self) -> Arc<TaskSlot> {
        let slot = Arc::new(TaskSlot::default());
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        if tasks.len() >= 64 && tasks.len().is_power_of_two() {
            tasks.retain(|w| w.strong_count() > 0);
        }
        tasks.push(Arc::downgrade(&slot));
        slot
    }

    /// Wakes every idle task so that `schedule` cancels it, then drops
    /// every queued task (after the workers stopped).
    fn drain(&self) {
        let live: Vec<Arc<TaskSlot>> =
            std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()))
                .iter()
                .filter_map(Weak::upgrade)
                .collect();
        for slot in live {
            let waker = slot.waker.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(w) = waker {
                w.wake();
            }
        }
        for inj in &self.injectors {
            loop {
                match inj.steal() {
                    Steal::Success(r) => drop(r),
                    Steal::Retry => continue,
                    Steal::Empty => break,
                }
            }
        }
        for p in &self.pinned {
            let lanes = std::mem::take(&mut p.lock().unwrap_or_else(|p| p.into_inner()).lanes);
            drop(lanes);
        }
    }

    /// Orders candidates by virtual time (ties: lower index, i.e. more
    /// urgent or more trusted first).
    fn order<const N: usize>(vt: &[AtomicU64; N], available: [bool; N]) -> ([usize; N], usize) {
        let mut idx = [0usize; N];
        let mut n = 0;
        for (i, a) in available.iter().enumerate() {
            if *a {
                idx[n] = i;
                n += 1;
            }
        }
        let keys: [u64; N] = std::array::from_fn(|i| vt[i].load(Ordering::Relaxed));
        idx[..n].sort_unstable_by_key(|&i| (keys[i], i));
        (idx, n)
    }

    fn find_task(
        &self,
        local: &[Worker<Runnable<TaskMeta>>],
        me: usize,
        tick: u64,
    ) -> Option<Runnable<TaskMeta>> {
        // Every 16th pick looks at the shared queues before the worker's
        // own, so tasks that keep yielding into a local queue cannot starve
        // newcomers of the same lane waiting in the injector (nor a pinned
        // lane starve the shared one).
        let shared_first = tick.is_multiple_of(16);
        let mut pinned_mask = [false; LANES];
        let has_pinned = self.pinned_len[me].load(Ordering::SeqCst) > 0;
        if has_pinned {
            let p = self.pinned[me].lock().unwrap_or_else(|p| p.into_inner());
            for (lane, q) in p.lanes.iter().enumerate() {
                pinned_mask[lane] = !q.is_empty();
            }
        }
        let classes: [bool; CLASSES] = std::array::from_fn(|c| {
            self.class_len[c].load(Ordering::SeqCst) > 0
                || pinned_mask[c * LEVELS..(c + 1) * LEVELS].iter().any(|b| *b)
        });
        let (order, n) = Self::order(&self.class_vt, classes);
        for &class in &order[..n] {
            let levels: [bool; LEVELS] = std::array::from_fn(|l| {
                let lane = class * LEVELS + l;
                pinned_mask[lane] || self.lane_len[lane].load(Ordering::SeqCst) > 0
            });
            let (lorder, ln) = Self::order(&self.level_vt[class], levels);
            for &level in &lorder[..ln] {
                let lane = class * LEVELS + level;
                let pinned = |this: &Self| {
                    if pinned_mask[lane] {
                        this.pop_pinned(me, lane)
                    } else {
                        None
                    }
                };
                let found = if shared_first {
                    self.pop_lane(local, me, lane, true)
                        .or_else(|| pinned(self))
                } else {
                    pinned(self).or_else(|| self.pop_lane(local, me, lane, false))
                };
                if let Some(r) = found {
                    self.class_floor.fetch_max(
                        self.class_vt[class].load(Ordering::Relaxed),
                        Ordering::Relaxed,
                    );
                    self.level_floor[class].fetch_max(
                        self.level_vt[class][level].load(Ordering::Relaxed),
                        Ordering::Relaxed,
                    );
                    return Some(r);
                }
            }
        }
        None
    }

    fn pop_pinned(&self, me: usize, lane: usize) -> Option<Runnable<TaskMeta>> {
        let r = self.pinned[me]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .lanes[lane]
            .pop_front();
        if r.is_some() {
            self.pinned_len[me].fetch_sub(1, Ordering::SeqCst);
        }
        r
    }

    fn pop_lane(
        &self,
        local: &[Worker<Runnable<TaskMeta>>],
        me: usize,
        lane: usize,
        injector_first: bool,
    ) -> Option<Runnable<TaskMeta>> {
        if self.lane_len[lane].load(Ordering::SeqCst) == 0 {
            return None;
        }
        let from_injector = || {
            loop {
                match self.injectors[lane].steal_batch_and_pop(&local[lane]) {
                    Steal::Success(r) => return Some(r),
                    Steal::Retry => continue,
                    Steal::Empty => return None,
                }
            }
        };
        let first = if injector_first {
            from_injector().or_else(|| local[lane].pop())
        } else {
            local[lane].pop().or_else(from_injector)
        };
        let found = first.or_else(|| {
            let workers = self.stealers.len();
            for k in 1..workers {
                let victim = (me + k) % workers;
                loop {
                    match self.stealers[victim][lane].steal() {
                        Steal::Success(r) => return Some(r),
                        Steal::Retry => continue,
                        Steal::Empty => break,
                    }
                }
            }
            None
        });
        if found.is_some() {
            self.lane_len[lane].fetch_sub(1, Ordering::SeqCst);
            self.class_len[lane / LEVELS].fetch_sub(1, Ordering::SeqCst);
        }
        found
    }

    fn run(&self, runnable: Runnable<TaskMeta>) {
        let meta = *runnable.metadata();
        self.running_class[meta.class].fetch_add(1, Ordering::SeqCst);
        self.running_lane[meta.lane()].fetch_add(1, Ordering::SeqCst);
        let start = Instant::now();
        // Panics are caught by async-task (`propagate_panic`) and re-raised
        // in the join handle, so `run` does not unwind the worker.
        runnable.run();
        self.running_class[meta.class].fetch_sub(1, Ordering::SeqCst);
        self.running_lane[meta.lane()].fetch_sub(1, Ordering::SeqCst);
        let ns = u64::try_from(start.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        self.stats.busy_ns[meta.class].fetch_add(ns, Ordering::Relaxed);
        // Charge the measured time, capped at 4x the running average slice:
        // a worker thread descheduled by the OS mid-slice must not make its
        // class pay for CPU it never had.
        let avg = self.avg_slice.load(Ordering::Relaxed);
        let charge = ns.min(avg.saturating_mul(4).max(1_000));
        self.avg_slice
            .store(avg - avg / 64 + charge / 64, Ordering::Relaxed);
        self.class_vt[meta.class]
            .fetch_add(charge * 16 / CLASS_WEIGHT[meta.class], Ordering::Relaxed);
        self.level_vt[meta.class][meta.level]
            .fetch_add(charge * 8 / TRUST_WEIGHT[meta.level], Ordering::Relaxed);
    }
}

fn worker_main(
    shared: Arc<Shared>,
    index: usize,
    queues: Vec<Worker<Runnable<TaskMeta>>>,
    handle: tokio::runtime::Handle,
) {
    let _tokio = handle.enter();
    LOCAL.with(|l| {
        *l.borrow_mut() = Some(Local {
            shared: Arc::as_ptr(&shared),
            index,
            queues,
        })
    });
    let mut idle_spins = 0u32;
    let mut tick = 0u64;
    while !shared.shutdown.load(Ordering::SeqCst) {
        tick = tick.wrapping_add(1);
        let task = LOCAL.with(|l| {
            let l = l.borrow();
            let local = l.as_ref().map(|l| &l.queues[..]).unwrap_or(&[]);
            shared.find_task(local, index, tick)
        });
        match task {
            Some(r) => {
                idle_spins = 0;
                shared.run(r);
            }
            None if idle_spins < 64 => {
                idle_spins += 1;
                if idle_spins > 16 {
                    thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            }
            None => {
                shared.sleeping.fetch_add(1, Ordering::SeqCst);
                shared
                    .sleepers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(index);
                if !shared.has_work(index) && !shared.shutdown.load(Ordering::SeqCst) {
                    // A timeout as a safety net: a missed wake-up costs at
                    // most this much latency, never a hang.
                    thread::park_timeout(Duration::from_millis(20));
                }
                shared
                    .sleepers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .retain(|&w| w != index);
                shared.sleeping.fetch_sub(1, Ordering::SeqCst);
                idle_spins = 0;
            }
        }
    }
    // Cancel what is left in our local deques (nobody else pushes there).
    // Pop explicitly: the deques' buffers are shared with the stealers in
    // `Shared` and would otherwise keep the tasks alive.
    let local = LOCAL.with(|l| l.borrow_mut().take());
    if let Some(local) = local {
        for q in &local.queues {
            while let Some(r) = q.pop() {
                drop(r);
            }
        }
    }
}
