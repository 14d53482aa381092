//! Configuring and starting an [`Executor`].

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread;

use super::super::ScheduleError;
use super::queues::Shared;
use super::worker::worker_main;
use super::{Executor, Inner};

/// Configures an [`Executor`]. Every setter states its default.
#[derive(Debug, Clone, Default)]
pub(crate) struct ExecutorBuilder {
    workers: Option<usize>,
    handle: Option<tokio::runtime::Handle>,
}

impl ExecutorBuilder {
    /// A builder with the defaults.
    pub(crate) fn new() -> ExecutorBuilder {
        ExecutorBuilder::default()
    }

    /// Number of worker threads. Default: the machine's available
    /// parallelism (one per core).
    pub(crate) fn workers(&mut self, n: usize) -> &mut Self {
        self.workers = Some(n.max(1));
        self
    }

    /// The tokio runtime the workers enter. Default: the runtime current
    /// when [`build`](Self::build) is called, else a one-thread runtime the
    /// executor owns. (Only the tests choose; the kernel takes the default.)
    #[cfg(test)]
    pub(crate) fn tokio_handle(&mut self, handle: tokio::runtime::Handle) -> &mut Self {
        self.handle = Some(handle);
        self
    }

    /// Starts the workers, named `forgeone-worker-{index}`.
    pub(crate) fn build(&self) -> Result<Executor, ScheduleError> {
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
        let (shared, locals) = Shared::new(workers);
        let mut joins = Vec::with_capacity(workers);
        for (index, queues) in locals.into_iter().enumerate() {
            let worker_shared = shared.clone();
            let handle = handle.clone();
            let spawned = thread::Builder::new()
                .name(format!("forgeone-worker-{index}"))
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
