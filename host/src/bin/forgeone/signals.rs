//! SIGINT (Ctrl-C) and SIGTERM for `run` and `up`.
//!
//! The handlers are installed first, before anything slow (waiting for a
//! lock, boot, compiling, placing), and stay installed until the process
//! exits, so a signal at any moment is seen and never lost: one that
//! arrives while the command is busy is waiting for it at its next check.
//! Once they are installed, neither signal ends the process by itself: the
//! command stops its work, seals the audit log and exits 130 (SIGINT) or
//! 143 (SIGTERM), the codes a shell reports for a process either signal
//! ended.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;

use crate::util::Failure;

/// The tokio runtime of `run` and `up`, with the signal handlers installed
/// on it ([`Runtime::start`] is the first thing either command does).
#[derive(Debug)]
pub struct Runtime {
    tokio: Option<tokio::runtime::Runtime>,
    signals: Signals,
}

impl Runtime {
    /// Starts the runtime (`workers` threads; default one per core) and
    /// installs the handlers on it.
    pub fn start(workers: Option<usize>) -> Result<Runtime, Failure> {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        if let Some(n) = workers {
            builder.worker_threads(n);
        }
        let tokio = builder
            .enable_all()
            .build()
            .map_err(|e| Failure::input(format!("cannot start the async runtime: {e}")))?;
        let signals = Signals::install(&tokio)
            .map_err(|e| Failure::input(format!("cannot handle signals: {e}")))?;
        Ok(Runtime {
            tokio: Some(tokio),
            signals,
        })
    }

    /// The signals, for a caller that waits for them.
    pub fn signals(&self) -> Signals {
        self.signals.clone()
    }

    /// The first signal received, if any has been.
    pub fn received(&self) -> Option<Signal> {
        self.signals.received()
    }

    fn tokio(&self) -> &tokio::runtime::Runtime {
        self.tokio.as_ref().expect("the runtime runs until dropped")
    }

    /// Runs `future` to completion on this thread.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.tokio().block_on(future)
    }

    /// Runs blocking `work` (waiting for a lock, a boot) on another thread
    /// and returns what it returns, or the signal that arrives first: the
    /// work is then left to finish on its own and what it returns is
    /// dropped (an audit log it opened is closed, and so sealed, that way).
    pub fn unless_signalled<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Signal> {
        if let Some(signal) = self.received() {
            return Err(signal);
        }
        let mut signals = self.signals();
        self.block_on(async move {
            let work = tokio::task::spawn_blocking(work);
            tokio::select! {
                done = work => Ok(done.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))),
                (signal, _) = signals.next() => Err(signal),
            }
        })
    }
}

impl Drop for Runtime {
    /// Waits a moment, not for ever, for work a signal cut short: a lock
    /// wait may have most of its timeout to go.
    fn drop(&mut self) {
        if let Some(tokio) = self.tokio.take() {
            tokio.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

/// A signal that asks the command to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT: Ctrl-C at the terminal.
    Interrupt,
    /// SIGTERM: a service manager, `kill`, a container runtime.
    Terminate,
}

impl Signal {
    /// The exit code after stopping for this signal: 128 + its number.
    pub fn exit_code(self) -> u8 {
        match self {
            Signal::Interrupt => 130,
            Signal::Terminate => 143,
        }
    }

    /// How messages name it.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Interrupt => "Ctrl-C",
            Signal::Terminate => "SIGTERM",
        }
    }
}

/// What has been received so far.
#[derive(Debug, Clone, Copy, Default)]
struct Received {
    count: u32,
    first: Option<Signal>,
    last: Option<Signal>,
}

/// The signals received since [`Signals::install`]. Each clone keeps its
/// own place: [`Signals::next`] returns each signal to it once.
#[derive(Debug, Clone)]
pub struct Signals {
    rx: watch::Receiver<Received>,
    seen: u32,
}

impl Signals {
    /// Installs the handlers on `runtime` (which must have its I/O driver
    /// enabled); a task on the runtime's workers records every delivery,
    /// whatever the calling thread is doing.
    fn install(runtime: &tokio::runtime::Runtime) -> std::io::Result<Signals> {
        let _context = runtime.enter();
        let (tx, rx) = watch::channel(Received::default());
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let mut interrupt = signal(SignalKind::interrupt())?;
            let mut terminate = signal(SignalKind::terminate())?;
            runtime.spawn(async move {
                loop {
                    let signal = tokio::select! {
                        Some(()) = interrupt.recv() => Signal::Interrupt,
                        Some(()) = terminate.recv() => Signal::Terminate,
                        else => break,
                    };
                    record(&tx, signal);
                }
            });
        }
        #[cfg(not(unix))]
        runtime.spawn(async move {
            while tokio::signal::ctrl_c().await.is_ok() {
                record(&tx, Signal::Interrupt);
            }
        });
        Ok(Signals { rx, seen: 0 })
    }

    /// The first signal received, if any has been.
    pub fn received(&self) -> Option<Signal> {
        self.rx.borrow().first
    }

    /// Waits for a signal this handle has not returned yet (at once if one
    /// arrived before the call) and returns it with how many have arrived
    /// in all.
    pub async fn next(&mut self) -> (Signal, u32) {
        loop {
            let received = *self.rx.borrow_and_update();
            if received.count > self.seen
                && let Some(signal) = received.last
            {
                self.seen = received.count;
                return (signal, received.count);
            }
            if self.rx.changed().await.is_err() {
                // The runtime is shutting down: no more signals.
                std::future::pending::<()>().await;
            }
        }
    }
}

fn record(tx: &watch::Sender<Received>, signal: Signal) {
    tx.send_modify(|r| {
        r.count += 1;
        r.first.get_or_insert(signal);
        r.last = Some(signal);
    });
}
