//! Running one call: a fresh instance under the plugin's limits, waiting
//! for an instance slot when the plugin queues, and the call's record
//! however it ends (returned, failed, busy or cancelled).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use wasmtime::Store;
use wasmtime::component::Instance;

use super::warm::WarmInstance;
use super::{GuestCall, Plugin};
use crate::audit::Entry;
use crate::runtime::RuntimeError;
use crate::runtime::container::{DeadlinePassed, classify, new_store};
use crate::runtime::control::Control;
use crate::runtime::events::ContainerEvent;
use crate::runtime::file_io::FileIo;
use crate::runtime::host::{Host, KernelCtx, LogState};
use crate::runtime::limits::Limiter;
use crate::runtime::outcome::{Failure, RunEnd, RunStats};
use crate::runtime::output::{Capture, CaptureTarget, Stream};
use crate::runtime::registry::CallEnd;

impl Plugin {
    /// Runs one call in a fresh instance under the plugin's limits,
    /// waiting for an instance slot if the plugin queues, and puts it on
    /// the record however it ends. `work` gets the store and the instance;
    /// `is_error` says whether a returned value is the plugin's own error.
    pub(super) async fn run_call<R, F>(
        &self,
        call_name: String,
        is_error: fn(&R) -> bool,
        work: F,
    ) -> Result<(R, RunStats), RuntimeError>
    where
        R: Send,
        F: for<'s> FnOnce(&'s mut Store<Host>, &'s Instance) -> GuestCall<'s, R> + Send,
    {
        let runtime = &self.runtime;
        // Refused once the runtime shuts down, as a load is, and while the
        // audit log cannot be written.
        runtime.accepting()?;
        let mut work = Some(work);
        // From here on the call is on the record however it ends: if the
        // caller drops this future, the guard records it as cancelled.
        let mut record = CallRecord {
            plugin: self,
            call: call_name.clone(),
            started: Instant::now(),
            control: None,
            done: false,
        };
        let mut queued: Option<Waiting> = None;
        loop {
            let (result, stats) = match self.attempt(&mut work, &mut record).await {
                Attempt::Ran { result, stats } => (result, stats),
                Attempt::Busy(reason) => match self.wait_for_slot(&mut queued, &reason).await {
                    Ok(()) => continue,
                    Err(reason) => {
                        let waited = queued
                            .as_ref()
                            .map_or(Duration::ZERO, |q| q.since.elapsed());
                        record
                            .finish(
                                CallEnd::Busy,
                                "busy",
                                None,
                                RunStats {
                                    wall_time: waited,
                                    ..RunStats::default()
                                },
                            )
                            .await?;
                        return Err(RuntimeError::Busy {
                            plugin: self.info.name.clone(),
                            call: call_name,
                            reason,
                            waited,
                        });
                    }
                },
            };
            drop(queued);
            let (reply, failure) = match result {
                Ok(reply) => (Some(reply), None),
                Err(failure) => (None, Some(failure)),
            };
            let (ended, result_name) = match &reply {
                Some(reply) if is_error(reply) => (CallEnd::Returned, "error"),
                Some(_) => (CallEnd::Returned, "ok"),
                None => (CallEnd::Failed, "failed"),
            };
            record
                .finish(ended, result_name, failure.clone(), stats.clone())
                .await?;
            return match (reply, failure) {
                (Some(reply), _) => Ok((reply, stats)),
                (None, failure) => Err(RuntimeError::PluginFailed {
                    plugin: self.info.name.clone(),
                    call: call_name,
                    failure: failure.unwrap_or(Failure::Instantiate {
                        message: "unknown".into(),
                    }),
                }),
            };
        }
    }

    /// A fresh store for one call (or for a warm instance's first call):
    /// an empty WASI context with its output captured, the plugin's limits
    /// and configuration, and the control its epoch callback reports to.
    fn fresh_store(&self) -> Result<(Store<Host>, Capture, Arc<Control>), Failure> {
        let runtime = &self.runtime;
        let capture = Capture::new(CaptureTarget {
            container: self.id,
            subjects: self.identity.audit_subjects.clone(),
            audit: runtime.inner.audit.clone(),
            sink: self.output.clone(),
            bytes: [None, None],
            limit: self.limits.max_output,
            max_line: self.limits.max_line.max(16),
            keep_last: 0,
            audit_budget: self.limits.max_audit_bytes,
            // A call is bounded by its own deadline; it is refused up front
            // while the log cannot be written, and not stopped halfway.
            health: None,
        });
        // An empty WASI context: no preopens, env, args or network; output
        // captured.
        let wasi = wasmtime_wasi::WasiCtxBuilder::new()
            .stdout(capture.pipe(Stream::Stdout))
            .stderr(capture.pipe(Stream::Stderr))
            .build();
        // Publishes fuel and peak memory while the call runs (at every
        // epoch tick), so a cancelled call is accounted too.
        let control = Arc::new(Control::default());
        let host = Host {
            wasi,
            table: crate::runtime::fs_guard::table(&self.limits),
            limiter: Limiter::new(
                self.limits.max_memory,
                self.limits.max_table_elements,
                self.limits.max_instances,
                Some(control.clone()),
            ),
            kernel: KernelCtx {
                identity: self.identity.clone(),
                log: LogState {
                    audit: runtime.inner.audit.clone(),
                    // Log lines go where its output goes: the sink, if any, and the audit log within its budget.
                    capture: Some(capture.clone()),
                    written: 0,
                    limit: self.limits.max_log_lines,
                },
                config: self.config.clone(),
            },
            // No preopens, so no file calls: the builder's default.
            file_io: FileIo::BlockingPool,
        };
        let store = new_store(
            runtime.inner.store.engine(),
            host,
            &self.limits,
            runtime.inner.config.engine.fuel_yield_interval,
            Some(control.clone()),
            None,
        )
        .map_err(|e| Failure::Instantiate {
            message: e.to_string(),
        })?;
        Ok((store, capture, control))
    }

    /// One try at running the call, in a warm instance if the plugin keeps
    /// them and one is idle, or else in a fresh one: busy when the
    /// instance pool has no free slot (nothing of the guest ran).
    async fn attempt<'p, R, F>(
        &'p self,
        work: &mut Option<F>,
        record: &mut CallRecord<'p>,
    ) -> Attempt<R>
    where
        F: for<'s> FnOnce(&'s mut Store<Host>, &'s Instance) -> GuestCall<'s, R>,
    {
        let runtime = &self.runtime;
        let budget = self.limits.fuel.unwrap_or(u64::MAX);
        let warm = self.warm.as_ref().and_then(|pool| pool.take(budget));
        let (mut store, instance, capture, control) = match warm {
            Some(w) => (w.store, Some(w.instance), w.capture, w.control),
            None => match self.fresh_store() {
                Ok((store, capture, control)) => (store, None, capture, control),
                Err(failure) => {
                    return Attempt::Ran {
                        result: Err(failure),
                        stats: RunStats::default(),
                    };
                }
            },
        };
        record.control = Some(control.clone());
        let started = Instant::now();
        let pre = self.pre.clone();
        let work = async {
            let instance = match instance {
                Some(instance) => instance,
                None => pre.instantiate_async(&mut store).await?,
            };
            // Taken only once an instance is there: a busy try leaves it
            // for the next.
            let work = work.take().expect("a call's work runs once");
            let reply = work(&mut store, &instance).await?;
            Ok((reply, instance))
        };
        // The deadline also covers time spent waiting in host calls.
        let result: wasmtime::Result<(R, Instance)> = match self.limits.timeout {
            Some(timeout) => {
                let timed = wasmtime_wasi::runtime::with_ambient_tokio_runtime(|| {
                    tokio::time::timeout(timeout, work)
                });
                timed
                    .await
                    .unwrap_or_else(|_| Err(wasmtime::Error::new(DeadlinePassed)))
            }
            None => work.await,
        };
        if let Err(error) = &result
            && let Some(full) = error.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
        {
            // Not a crash: the pool had no slot. The store gives nothing
            // back (it never got an instance).
            return Attempt::Busy(full.to_string());
        }
        capture.finish();
        capture.drain().await;
        let (output_bytes, output_truncated) = capture.totals();
        let stats = RunStats {
            fuel_consumed: budget.saturating_sub(store.get_fuel().unwrap_or(0)),
            peak_memory: store.data().limiter.memory_peak,
            wall_time: started.elapsed(),
            memory_refusals: store.data().limiter.memory_refusals,
            table_refusals: store.data().limiter.table_refusals,
            output_bytes,
            output_truncated,
            sink_failure: None,
        };
        let result = match result {
            Ok((reply, instance)) => {
                // Returned normally: a warm plugin keeps the instance for
                // the next call (or drops it when enough are idle).
                if let Some(pool) = &self.warm {
                    let warm = WarmInstance {
                        store,
                        instance,
                        capture,
                        control,
                    };
                    if let Some(extra) = pool.give_back(warm) {
                        drop(extra);
                        runtime.inner.plugins.slot_freed.notify_waiters();
                    }
                    return Attempt::Ran {
                        result: Ok(reply),
                        stats,
                    };
                }
                Ok(reply)
            }
            Err(error) => Err(
                match classify(Err(error), store.data(), &self.limits, budget) {
                    RunEnd::Failed(f) => f,
                    RunEnd::Success => Failure::Exit { code: 0 },
                    RunEnd::Stopped { .. } => Failure::Instantiate {
                        message: "stopped".into(),
                    },
                },
            ),
        };
        // The instance slot is free once the store is gone (after a
        // failure a warm instance is discarded too): tell the calls
        // waiting for one.
        drop(store);
        runtime.inner.plugins.slot_freed.notify_waiters();
        Attempt::Ran { result, stats }
    }

    /// After a busy try: waits for a slot if the plugin has a wait queue
    /// with room and time left (`Ok`, try again), or says why not.
    async fn wait_for_slot(&self, queued: &mut Option<Waiting>, busy: &str) -> Result<(), String> {
        let Some(queue) = self.queue else {
            return Err(busy.to_string());
        };
        if queued.is_none() {
            *queued = Some(
                Waiting::join(&self.waiting, queue.max_waiting).ok_or_else(|| {
                    format!(
                        "{busy}; the wait queue is full ({} calls waiting)",
                        queue.max_waiting
                    )
                })?,
            );
        }
        let since = queued.as_ref().map_or_else(Instant::now, |q| q.since);
        let left = queue.timeout.saturating_sub(since.elapsed());
        if left.is_zero() {
            return Err(format!(
                "{busy}; no slot came free within the queue timeout of {} ms",
                queue.timeout.as_millis()
            ));
        }
        // Woken when a plugin call frees its slot; a slot a container
        // frees wakes nobody, so look again every 10 ms as well.
        let freed = self.runtime.inner.plugins.slot_freed.notified();
        let _ = tokio::time::timeout(left.min(Duration::from_millis(10)), freed).await;
        Ok(())
    }
}

/// How one try at a call went.
enum Attempt<R> {
    /// The guest ran (or could not be set up): its result and stats.
    Ran {
        result: Result<R, Failure>,
        stats: RunStats,
    },
    /// No instance slot was free: the pool's message.
    Busy(String),
}

/// A call's place in its plugin's wait queue; leaves it when dropped.
struct Waiting {
    count: Arc<AtomicUsize>,
    since: Instant,
}

impl Waiting {
    /// Joins the queue unless `max` calls already wait.
    fn join(count: &Arc<AtomicUsize>, max: usize) -> Option<Waiting> {
        count
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(Waiting {
            count: count.clone(),
            since: Instant::now(),
        })
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A call on its way to the record: [`CallRecord::finish`] counts and
/// audits how it ended; dropped unfinished (the caller dropped the call's
/// future: a timeout, a client that went away), it is counted and audited
/// as `cancelled`, with the fuel, peak memory and time it had used by the
/// last epoch tick.
struct CallRecord<'p> {
    plugin: &'p Plugin,
    call: String,
    started: Instant,
    /// The current try's control, which the epoch callback keeps up to
    /// date.
    control: Option<Arc<Control>>,
    done: bool,
}

impl CallRecord<'_> {
    fn entry(&self, result: &'static str, failure: Option<Failure>, stats: RunStats) -> Entry {
        self.plugin.identity.entry(ContainerEvent::PluginCall {
            call: self.call.clone(),
            result,
            failure,
            stats,
        })
    }

    async fn finish(
        &mut self,
        ended: CallEnd,
        result: &'static str,
        failure: Option<Failure>,
        stats: RunStats,
    ) -> Result<(), RuntimeError> {
        self.done = true;
        let runtime = &self.plugin.runtime;
        runtime.inner.plugins.record_call(self.plugin.id, ended);
        let entry = self.entry(result, failure, stats);
        runtime.inner.audit.append_async(entry).await?;
        Ok(())
    }
}

impl Drop for CallRecord<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let runtime = &self.plugin.runtime;
        runtime
            .inner
            .plugins
            .record_call(self.plugin.id, CallEnd::Cancelled);
        let (fuel_consumed, peak_memory) = self.control.as_ref().map_or((0, 0), |c| {
            (
                c.fuel_consumed.load(Ordering::Relaxed),
                c.peak_memory.load(Ordering::Relaxed),
            )
        });
        let stats = RunStats {
            fuel_consumed,
            peak_memory,
            wall_time: self.started.elapsed(),
            ..RunStats::default()
        };
        let entry = self.entry("cancelled", None, stats);
        let audit = runtime.inner.audit.clone();
        // Not on the dropping thread when it is an executor's: appending
        // may wait for room in the log's queue.
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    if let Err(e) = audit.append_async(entry).await {
                        tracing::error!("audit of a cancelled plugin call failed: {e}");
                    }
                });
            }
            Err(_) => {
                if let Err(e) = audit.append(entry) {
                    tracing::error!("audit of a cancelled plugin call failed: {e}");
                }
            }
        }
    }
}
