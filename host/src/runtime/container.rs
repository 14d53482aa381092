//! A container: one instance of a verified component in its own `Store`,
//! and the future that runs it to its outcome.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Instant;

use uuid::Uuid;
use wasmtime::{Store, Trap, UpdateDeadline, WasmBacktrace};
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

use tokio::sync::watch;

use crate::audit::{AuditHealth, AuditLog, FailMode};

use super::RuntimeError;

use super::bindings::container::ContainerPre;
use super::caps;
use super::config::ContainerConfig;
use super::control::Control;
use super::file_io::FileIo;
use super::host::{GuestIdentity, Host, KernelCtx, LogState};
use super::limits::{Limiter, Limits};
use super::outcome::{Failure, Outcome, RunEnd, RunStats};
use super::output::{Capture, CaptureTarget, Stream};

/// Everything one run needs, cheap to clone per restart.
#[derive(Clone)]
pub(crate) struct RunSpec {
    pub(crate) pre: ContainerPre<Host>,
    pub(crate) config: ContainerConfig,
    pub(crate) identity: Arc<GuestIdentity>,
    pub(crate) audit: AuditLog,
    pub(crate) fuel_yield_interval: Option<u64>,
}

/// A prepared run: the store and WASI context are built; awaiting it
/// instantiates and runs the guest.
pub(crate) struct Run {
    store: Store<Host>,
    pre: ContainerPre<Host>,
    capture: Capture,
    control: Arc<Control>,
    limits: Limits,
    run: u32,
}

/// Builds the WASI context of a run: only what was granted.
fn wasi_ctx(
    config: &ContainerConfig,
    capture: &Capture,
) -> Result<wasmtime_wasi::WasiCtx, RuntimeError> {
    let mut builder = WasiCtxBuilder::new();
    config.grants.stdin.apply(&mut builder)?;
    builder
        .stdout(capture.pipe(Stream::Stdout))
        .stderr(capture.pipe(Stream::Stderr))
        .arg(&config.name)
        .args(&config.grants.args)
        .envs(&config.grants.env)
        .allow_tcp(config.grants.network)
        .allow_udp(config.grants.network)
        .allow_ip_name_lookup(config.grants.network);
    if config.grants.network {
        builder.inherit_network();
    }
    // File calls on the guest's thread unless asked otherwise (file_io.rs).
    builder.allow_blocking_current_thread(config.file_io == FileIo::OnThread);
    for dir in &config.grants.dirs {
        let perms = if dir.read_only {
            FsPerms::ReadOnly
        } else {
            FsPerms::ReadWrite
        };
        builder
            .preopened_dir(&dir.host, &dir.guest, perms)
            .map_err(|e| RuntimeError::Preopen {
                host: dir.host.clone(),
                guest: dir.guest.clone(),
                source: e.into(),
            })?;
    }
    Ok(builder.build())
}

impl Run {
    /// Creates the store of run number `run`.
    pub(crate) fn prepare(
        spec: &RunSpec,
        control: Arc<Control>,
        run: u32,
    ) -> Result<Run, RuntimeError> {
        let config = &spec.config;
        let limits = config.limits.clone();
        // Watched only when a failing log must stop the guest.
        let health = (spec.audit.fail_mode() == FailMode::Closed).then(|| spec.audit.health());
        let capture = Capture::new(CaptureTarget {
            container: spec.identity.container,
            subjects: spec.identity.audit_subjects.clone(),
            audit: spec.audit.clone(),
            sink: config.output.clone(),
            bytes: [config.stdout.clone(), config.stderr.clone()],
            limit: limits.max_output,
            max_line: limits.max_line.max(16),
            keep_last: config.keep_last_lines,
            audit_budget: limits.max_audit_bytes,
            health: health.clone(),
        });
        let wasi = wasi_ctx(config, &capture)?;
        let host = Host {
            wasi,
            table: super::fs_guard::table(&limits),
            limiter: Limiter::new(
                limits.max_memory,
                limits.max_table_elements,
                limits.max_instances,
                Some(control.clone()),
            ),
            kernel: KernelCtx {
                identity: spec.identity.clone(),
                log: LogState {
                    audit: spec.audit.clone(),
                    capture: Some(capture.clone()),
                    written: 0,
                    limit: limits.max_log_lines,
                },
                config: super::host::no_config(),
            },
            file_io: config.file_io,
        };
        let engine = spec.pre.instance_pre().component().engine().clone();
        let store = new_store(
            &engine,
            host,
            &limits,
            spec.fuel_yield_interval,
            Some(control.clone()),
            health,
        )?;
        Ok(Run {
            store,
            pre: spec.pre.clone(),
            capture,
            control,
            limits,
            run,
        })
    }

    /// The run's output (finish and drain it once the run has ended).
    pub(crate) fn capture(&self) -> Capture {
        self.capture.clone()
    }

    /// The future that runs the guest to its outcome.
    pub(crate) fn into_future(self) -> RunFuture {
        let Run {
            mut store,
            pre,
            capture,
            control,
            limits,
            run,
        } = self;
        let started = Instant::now();
        control.reset_for_run(limits.timeout.map(|t| started + t));
        let budget = limits.fuel.unwrap_or(u64::MAX);
        let guest_capture = capture.clone();
        let inner = Box::pin(async move {
            let result = async {
                let instance = pre.instantiate_async(&mut store).await?;
                instance.wasi_cli_run().call_run(&mut store).await
            }
            .await;
            guest_capture.finish();
            let fuel_left = store.get_fuel().unwrap_or(0);
            (result, store.into_data(), fuel_left)
        });
        RunFuture {
            inner: Some(inner),
            ended: None,
            control,
            capture,
            limits,
            budget,
            run,
            started,
            deadline_timer: None,
            stop_timer: None,
            output_timer: None,
        }
    }
}

/// Creates a store with fuel, yields, epoch deadline handling and limits.
pub(crate) fn new_store(
    engine: &wasmtime::Engine,
    host: Host,
    limits: &Limits,
    fuel_yield_interval: Option<u64>,
    control: Option<Arc<Control>>,
    audit_health: Option<watch::Receiver<AuditHealth>>,
) -> Result<Store<Host>, RuntimeError> {
    let mut store = Store::new(engine, host);
    let budget = limits.fuel.unwrap_or(u64::MAX);
    let internal = |e: wasmtime::Error| RuntimeError::engine("configuring a store", e);
    store.set_fuel(budget).map_err(internal)?;
    store
        .fuel_async_yield_interval(fuel_yield_interval)
        .map_err(internal)?;
    store.limiter(|host| &mut host.limiter);
    store.set_epoch_deadline(1);
    let deadline = limits.timeout.map(|t| Instant::now() + t);
    store.epoch_deadline_callback(move |ctx| {
        // Runs at every epoch tick while wasm executes.
        match &control {
            Some(control) => {
                let fuel_left = ctx.get_fuel().unwrap_or(0);
                control
                    .fuel_consumed
                    .store(budget.saturating_sub(fuel_left), Ordering::Relaxed);
                if control
                    .effective_deadline()
                    .is_some_and(|d| Instant::now() >= d)
                {
                    return Err(wasmtime::Error::new(DeadlinePassed));
                }
                let failing = audit_health
                    .as_ref()
                    .is_some_and(|h| h.borrow().is_failing());
                let requests = control.lock();
                // A failing audit log, too: the supervisor applies the
                // audit failure policy as soon as the guest yields.
                if requests.paused || requests.stop_at.is_some() || failing {
                    // Hand control back to the drive future now rather than
                    // at the next fuel yield.
                    return Ok(UpdateDeadline::Yield(1));
                }
                Ok(UpdateDeadline::Continue(1))
            }
            None => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(wasmtime::Error::new(DeadlinePassed));
                }
                Ok(UpdateDeadline::Continue(1))
            }
        }
    });
    Ok(store)
}

/// Raised from the epoch callback when the deadline has passed.
#[derive(Debug)]
pub(crate) struct DeadlinePassed;

impl std::fmt::Display for DeadlinePassed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("wall-clock deadline passed")
    }
}

impl std::error::Error for DeadlinePassed {}

/// How the guest's `run` returned, its host state and the fuel it had left.
type GuestEnd = (wasmtime::Result<Result<(), ()>>, Host, u64);

type GuestFuture = Pin<Box<dyn Future<Output = GuestEnd> + Send>>;

/// Drives one run. Polling it runs the guest; not polling it (while
/// paused) costs nothing; dropping it drops the guest at its current yield
/// point.
pub(crate) struct RunFuture {
    inner: Option<GuestFuture>,
    /// The guest has ended; its output is still being written out to the
    /// byte sinks (the deadline and stop requests still apply).
    ended: Option<GuestEnd>,
    control: Arc<Control>,
    capture: Capture,
    limits: Limits,
    budget: u64,
    run: u32,
    started: Instant,
    deadline_timer: Option<Pin<Box<tokio::time::Sleep>>>,
    stop_timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// When the oldest output not yet in a record is due in the log.
    output_timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

fn sleep_until(at: Instant) -> Pin<Box<tokio::time::Sleep>> {
    // Timers bind to the ambient tokio runtime, or wasmtime-wasi's own when
    // the future is polled by another executor.
    wasmtime_wasi::runtime::with_ambient_tokio_runtime(|| {
        Box::pin(tokio::time::sleep_until(at.into()))
    })
}

/// Polls `timer` (created or moved to `at`); true when it has fired.
fn poll_timer(
    timer: &mut Option<Pin<Box<tokio::time::Sleep>>>,
    at: Instant,
    cx: &mut Context<'_>,
) -> bool {
    let sleep = timer.get_or_insert_with(|| sleep_until(at));
    if sleep.deadline() != at.into() {
        sleep.as_mut().reset(at.into());
    }
    sleep.as_mut().poll(cx).is_ready()
}

impl RunFuture {
    fn stats(&self, host: Option<&Host>, fuel_left: Option<u64>) -> RunStats {
        let (output_bytes, output_truncated) = self.capture.totals();
        let fuel_consumed = match fuel_left {
            Some(left) => self.budget.saturating_sub(left),
            None => self.control.fuel_consumed.load(Ordering::Relaxed),
        };
        let (peak_memory, memory_refusals, table_refusals) = match host {
            Some(host) => (
                host.limiter.memory_peak,
                host.limiter.memory_refusals,
                host.limiter.table_refusals,
            ),
            None => (self.control.peak_memory.load(Ordering::Relaxed), 0, 0),
        };
        self.control
            .fuel_consumed
            .store(fuel_consumed, Ordering::Relaxed);
        RunStats {
            fuel_consumed,
            peak_memory,
            wall_time: self.started.elapsed(),
            memory_refusals,
            table_refusals,
            output_bytes,
            output_truncated,
            sink_failure: self.capture.sink_failure(),
        }
    }

    /// Cuts the output that is due into records and appends what is
    /// queued, and writes accepted output out to the byte sinks, also while
    /// the guest is silent or paused.
    fn pump_output(&mut self, cx: &mut Context<'_>) {
        if let Some(due) = self.capture.next_due()
            && poll_timer(&mut self.output_timer, due, cx)
        {
            self.capture.cut_due();
        }
        let _ = self.capture.poll_drain(cx);
        let _ = self.capture.poll_deliver(cx);
    }

    fn end_without_guest(&mut self, end: RunEnd) -> Outcome {
        // Dropping the guest future drops the store: the instance is gone.
        self.inner = None;
        self.capture.finish();
        let stats = match self.ended.take() {
            Some((_, host, fuel_left)) => self.stats(Some(&host), Some(fuel_left)),
            None => self.stats(None, None),
        };
        Outcome {
            end,
            stats,
            run: self.run,
            last_output: self.capture.last_lines(),
        }
    }
}

impl Future for RunFuture {
    type Output = Outcome;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        let this = &mut *self;
        // 1. Lifecycle requests.
        let (paused, stop_at) = {
            let mut requests = this.control.lock();
            requests.waker = Some(cx.waker().clone());
            (requests.paused, requests.stop_at)
        };
        if let Some(at) = stop_at
            && poll_timer(&mut this.stop_timer, at, cx)
        {
            return Poll::Ready(this.end_without_guest(RunEnd::Stopped { forced: true }));
        }
        this.pump_output(cx);
        if paused {
            // Not polling the guest: it consumes nothing until resumed.
            this.control.parked.store(true, Ordering::SeqCst);
            return Poll::Pending;
        }
        this.control.parked.store(false, Ordering::SeqCst);
        // 2. The wall-clock deadline, even while the guest waits in a host call.
        if let Some(deadline) = this.control.effective_deadline()
            && poll_timer(&mut this.deadline_timer, deadline, cx)
        {
            let timeout_ms = this.limits.timeout.map_or(0, |t| t.as_millis() as u64);
            return Poll::Ready(
                this.end_without_guest(RunEnd::Failed(Failure::Deadline { timeout_ms })),
            );
        }
        // 3. The guest itself, up to its next yield point.
        if this.ended.is_none() {
            let Some(inner) = this.inner.as_mut() else {
                return Poll::Pending;
            };
            match inner.as_mut().poll(cx) {
                Poll::Pending => {
                    // What the guest just wrote goes on its way to the log
                    // and the sinks.
                    this.pump_output(cx);
                    return Poll::Pending;
                }
                Poll::Ready(done) => {
                    this.inner = None;
                    this.ended = Some(done);
                }
            }
        }
        // 4. Its output, all of it written out to the byte sinks before the
        // outcome is reported.
        if this.capture.poll_deliver(cx).is_pending() {
            return Poll::Pending;
        }
        let Some((result, host, fuel_left)) = this.ended.take() else {
            return Poll::Pending;
        };
        let stats = this.stats(Some(&host), Some(fuel_left));
        let end = classify(result, &host, &this.limits, this.budget);
        let end = match (end, stop_at) {
            // Ended on its own during the grace period: a graceful stop.
            (RunEnd::Success, Some(_)) => RunEnd::Stopped { forced: false },
            (end, _) => end,
        };
        Poll::Ready(Outcome {
            end,
            stats,
            run: this.run,
            last_output: this.capture.last_lines(),
        })
    }
}

/// Maps the result of `run` to a typed end.
pub(crate) fn classify(
    result: wasmtime::Result<Result<(), ()>>,
    host: &Host,
    limits: &Limits,
    budget: u64,
) -> RunEnd {
    let error = match result {
        Ok(Ok(())) => return RunEnd::Success,
        Ok(Err(())) => return with_limits(Failure::Exit { code: 1 }, host, limits),
        Err(error) => error,
    };
    if let Some(exit) = error.downcast_ref::<I32Exit>() {
        return match exit.0 {
            0 => RunEnd::Success,
            code => with_limits(Failure::Exit { code }, host, limits),
        };
    }
    if error.downcast_ref::<DeadlinePassed>().is_some() {
        return RunEnd::Failed(Failure::Deadline {
            timeout_ms: limits.timeout.map_or(0, |t| t.as_millis() as u64),
        });
    }
    if let Some(Trap::OutOfFuel) = error.downcast_ref::<Trap>() {
        return RunEnd::Failed(Failure::OutOfFuel { budget });
    }
    if super::fs_guard::is_table_full(&error) {
        return RunEnd::Failed(Failure::OpenFilesLimit {
            limit: limits.max_open_files as u64,
            refused: host.limiter.handle_refusals.saturating_add(1),
            detail: "trapped: the resource table is full".into(),
        });
    }
    with_limits(trap_failure(&error), host, limits)
}

/// A trap, with its wasm backtrace.
pub(crate) fn trap_failure(error: &wasmtime::Error) -> Failure {
    let trap = match error.downcast_ref::<Trap>() {
        Some(trap) => trap.to_string(),
        // A wasm exception no wasm handler caught: the exception itself
        // stays on the store, which is dropped with the run.
        None if error.downcast_ref::<wasmtime::ThrownException>().is_some() => {
            "uncaught wasm exception".to_string()
        }
        None => format!("{error:#}")
            .lines()
            .next()
            .unwrap_or_default()
            .to_string(),
    };
    // The backtrace's own rendering demangles Rust (v0 and legacy) names.
    let backtrace = error
        .downcast_ref::<WasmBacktrace>()
        .map(|bt| {
            bt.to_string()
                .lines()
                .map(str::trim)
                .filter(|line| line.starts_with(|c: char| c.is_ascii_digit()))
                .take(32)
                .map(|line| match line.split_once(" - ") {
                    Some((_, frame)) => frame.to_string(),
                    None => line.to_string(),
                })
                // Function names come from the guest's own name section.
                .map(|frame| caps::cap(frame, caps::FRAME))
                .collect()
        })
        .unwrap_or_default();
    Failure::Trap { trap, backtrace }
}

/// A failure after a refused memory or table growth is reported as hitting
/// that limit.
fn with_limits(failure: Failure, host: &Host, limits: &Limits) -> RunEnd {
    let detail = failure.to_string();
    if let Some(requested) = host.limiter.memory_refused {
        return RunEnd::Failed(Failure::MemoryLimit {
            limit: limits.max_memory,
            requested,
            detail,
        });
    }
    if let Some(requested) = host.limiter.table_refused {
        return RunEnd::Failed(Failure::TableLimit {
            limit: limits.max_table_elements,
            requested,
            detail,
        });
    }
    if host.limiter.handle_refusals > 0 {
        return RunEnd::Failed(Failure::OpenFilesLimit {
            limit: limits.max_open_files as u64,
            refused: host.limiter.handle_refusals,
            detail,
        });
    }
    RunEnd::Failed(failure)
}

/// The identity and the container id of a new container.
pub(crate) fn guest_identity(
    container: Uuid,
    config: &ContainerConfig,
    identity: crate::identity::IdentityContext,
) -> GuestIdentity {
    GuestIdentity::new(
        container,
        config.workload.clone(),
        identity,
        &config.component,
    )
}
