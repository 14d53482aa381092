//! What a caller holds: the options a task is spawned with and the handle
//! that awaits its output.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_task::Task;

use crate::identity::{Priority, TrustLevel};

use super::lanes::TaskMeta;

/// How to run a spawned task. Every setter states its default.
#[derive(Debug, Clone)]
pub(crate) struct SpawnOptions {
    pub(super) class: Priority,
    pub(super) trust: TrustLevel,
    pub(super) worker: Option<usize>,
}

impl SpawnOptions {
    /// Options for a task of `class`, trust `Medium`, on any worker.
    pub(crate) fn new(class: Priority) -> SpawnOptions {
        SpawnOptions {
            class,
            trust: TrustLevel::Medium,
            worker: None,
        }
    }

    /// The trust level the task is shared by within its class. Default
    /// `Medium`.
    pub(crate) fn trust(&mut self, level: TrustLevel) -> &mut Self {
        self.trust = level;
        self
    }

    /// Pins the task to worker `index` (0-based): it runs only there and is
    /// never stolen. Default: any worker.
    pub(crate) fn worker(&mut self, index: usize) -> &mut Self {
        self.worker = Some(index);
        self
    }

    /// The trust level whose lane the task runs in.
    #[cfg(test)]
    pub(crate) fn trust_level(&self) -> TrustLevel {
        self.trust
    }
}

/// Why a task did not produce its output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum JoinError {
    /// The task was cancelled: the executor shut down.
    #[error("task cancelled")]
    Cancelled,
    /// The task panicked; the message if it was a string.
    #[error("task panicked: {0}")]
    Panicked(String),
}

/// Awaits a spawned task's output. Dropping it detaches the task (it keeps
/// running).
pub(crate) struct JoinHandle<T> {
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
    pub(super) fn new(task: Task<T, TaskMeta>) -> JoinHandle<T> {
        JoinHandle {
            task: Some(task.fallible()),
        }
    }

    /// Whether the task has completed (or was cancelled).
    pub(crate) fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Blocks the calling thread until the task is done. Do not call from
    /// inside a task of the same executor. (Tests only: the kernel awaits.)
    #[cfg(test)]
    pub(crate) fn join(self) -> Result<T, JoinError> {
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
#[cfg(test)]
fn block_on<F: Future>(future: F) -> F::Output {
    use std::sync::Arc;
    use std::task::{Wake, Waker};
    use std::thread::{self, Thread};

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
