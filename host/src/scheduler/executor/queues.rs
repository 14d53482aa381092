//! The queues and the pick: every lane's injector, the workers' local
//! deques and their stealers, the pinned queues, the virtual times of the
//! two-level stride scheduling, and how a worker finds its next task and
//! charges the slice it ran.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll, Waker};
use std::thread::Thread;
use std::time::Instant;

use async_task::{Runnable, Task};
use crossbeam_deque::{Injector, Steal, Stealer, Worker};

use super::lanes::{CLASS_WEIGHT, CLASSES, CpuStats, LANES, LEVELS, TRUST_WEIGHT, TaskMeta};

#[derive(Default)]
struct Pinned {
    lanes: [VecDeque<Runnable<TaskMeta>>; LANES],
}

/// What every worker and every waker shares.
pub(super) struct Shared {
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
    pub(super) sleepers: Mutex<Vec<usize>>,
    pub(super) sleeping: AtomicUsize,
    pub(super) threads: OnceLock<Vec<Thread>>,
    pub(super) shutdown: AtomicBool,
    pub(super) stats: Arc<CpuStats>,
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

/// A worker thread's own state: which executor it serves (compared,
/// never dereferenced), its index (read by the tests only) and its local
/// deques.
pub(super) struct Local {
    pub(super) shared: *const Shared,
    #[cfg(test)]
    pub(super) index: usize,
    pub(super) queues: LocalQueues,
}

/// A worker's local deques, one per lane.
pub(super) type LocalQueues = Vec<Worker<Runnable<TaskMeta>>>;

thread_local! {
    pub(super) static LOCAL: RefCell<Option<Local>> = const { RefCell::new(None) };
}

impl Shared {
    /// The shared state of an executor of `workers` workers, and each
    /// worker's local deques (one per lane) to hand to its thread.
    pub(super) fn new(workers: usize) -> (Arc<Shared>, Vec<LocalQueues>) {
        let locals: Vec<LocalQueues> = (0..workers)
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
            avg_slice: AtomicU64::new(0),
            tasks: Mutex::new(Vec::new()),
            running_class: Default::default(),
            running_lane: (0..LANES).map(|_| AtomicUsize::new(0)).collect(),
        });
        (shared, locals)
    }

    /// Creates the task running `future` in the lane of `meta`, queues it,
    /// and returns its handle half. Its waker queues it here again, or
    /// cancels it once the executor is gone.
    pub(super) fn spawn<F>(self: &Arc<Self>, future: F, meta: TaskMeta) -> Task<F::Output, TaskMeta>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let weak: Weak<Shared> = Arc::downgrade(self);
        let slot = self.register();
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
        task
    }

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

    pub(super) fn wake_one(&self) {
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

    pub(super) fn has_work(&self, me: usize) -> bool {
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
    pub(super) fn drain(&self) {
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

    pub(super) fn find_task(
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

    pub(super) fn run(&self, runnable: Runnable<TaskMeta>) {
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

/// The index of the executor worker running the current thread, if any.
#[cfg(test)]
pub(crate) fn current_worker() -> Option<usize> {
    LOCAL.with(|l| l.borrow().as_ref().map(|l| l.index))
}
