//! The shared control block between a container's drive future and the
//! runtime's lifecycle calls (pause, resume, stop), plus the figures the
//! running guest publishes while it runs.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Waker;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Requests from the lifecycle API, read by the drive future at every poll.
#[derive(Debug, Default)]
pub(crate) struct Requests {
    pub(crate) paused: bool,
    /// When a pause began (for deadline accounting).
    pub(crate) paused_since: Option<Instant>,
    /// Time spent paused during the current run.
    pub(crate) paused_total: Duration,
    /// A stop was requested; force it at this instant.
    pub(crate) stop_at: Option<Instant>,
    /// Released from quarantine.
    pub(crate) released: bool,
    /// The drive future's waker, woken on every request.
    pub(crate) waker: Option<Waker>,
}

#[derive(Debug, Default)]
pub(crate) struct Control {
    pub(crate) requests: Mutex<Requests>,
    /// Woken on every request (for the supervisor's waits).
    pub(crate) notify: Notify,
    /// True while the drive future is parked because of a pause.
    pub(crate) parked: AtomicBool,
    /// Fuel consumed by the current run, published at every epoch tick.
    pub(crate) fuel_consumed: AtomicU64,
    /// Peak linear memory of the current run.
    pub(crate) peak_memory: AtomicU64,
    /// The current run's deadline, if any, before pause shifts.
    pub(crate) deadline: Mutex<Option<Instant>>,
    /// Time already spent against the next run's deadline (waiting for
    /// the component to compile), taken off it when the run starts.
    pub(crate) charged: Mutex<Duration>,
}

impl Control {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Requests> {
        self.requests.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes the drive future and any supervisor wait.
    pub(crate) fn wake(&self, mut requests: std::sync::MutexGuard<'_, Requests>) {
        let waker = requests.waker.take();
        drop(requests);
        if let Some(waker) = waker {
            waker.wake();
        }
        self.notify.notify_waiters();
    }

    pub(crate) fn stop_requested(&self) -> bool {
        self.lock().stop_at.is_some()
    }

    /// The effective deadline: the run's deadline shifted by time paused.
    pub(crate) fn effective_deadline(&self) -> Option<Instant> {
        let base = (*self.deadline.lock().unwrap_or_else(|p| p.into_inner()))?;
        let requests = self.lock();
        let mut paused = requests.paused_total;
        if let Some(since) = requests.paused_since {
            paused += since.elapsed();
        }
        Some(base + paused)
    }

    /// Counts `spent` against the next run's deadline.
    pub(crate) fn charge(&self, spent: Duration) {
        *self.charged.lock().unwrap_or_else(|p| p.into_inner()) += spent;
    }

    pub(crate) fn reset_for_run(&self, deadline: Option<Instant>) {
        let charged = std::mem::take(&mut *self.charged.lock().unwrap_or_else(|p| p.into_inner()));
        let deadline = deadline.map(|d| d.checked_sub(charged).unwrap_or(d));
        *self.deadline.lock().unwrap_or_else(|p| p.into_inner()) = deadline;
        self.fuel_consumed.store(0, Ordering::Relaxed);
        self.peak_memory.store(0, Ordering::Relaxed);
        let mut requests = self.lock();
        requests.paused_total = Duration::ZERO;
        if requests.paused {
            requests.paused_since = Some(Instant::now());
        }
    }
}
