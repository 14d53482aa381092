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

use tokio::sync::watch;

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
    pub fn install(runtime: &tokio::runtime::Runtime) -> std::io::Result<Signals> {
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
