//! The caller's copy of a run's stdout and stderr: every byte, exactly as
//! the guest wrote it, to the [`ByteSink`] of its stream, unbounded, with
//! back-pressure.
//!
//! # Protocol
//!
//! A guest's write is accepted into a buffer of [`BUFFER_BYTES`] per
//! stream; the host writes the buffer out to the sink in order, in one
//! `write_all` and `flush` per batch, while the guest runs or waits. When
//! the buffer is full the guest's next write waits (WASI's `check-write`
//! says 0 and its pollable becomes ready once there is room), so a sink
//! that is slow slows the guest down, and one that stops reading stops it,
//! without ever blocking a thread: the wait is a pending future. A flush by
//! the guest completes once its bytes are accepted: the run's outcome is
//! reported only after every accepted byte has been written to the sink
//! (or the sink has failed). A run that is stopped, or whose deadline
//! passes, loses what was accepted and not yet written.
//!
//! Stdout and stderr keep their relative order: a write to one stream waits
//! until what was accepted on the other has been written out.
//!
//! A sink that fails (a closed pipe, a full disk) fails the guest's next
//! write on that stream, as a failing file would: `closed` for a broken
//! pipe, `last-operation-failed` otherwise; the kept copy and the audit
//! log keep what was accepted before.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, MutexGuard};
use std::task::{Context, Poll};

use tokio::io::{AsyncWrite, AsyncWriteExt as _};
use wasmtime_wasi::p2::StreamError;

use super::super::outcome::SinkFailure;
use super::terminal::TerminalEscaper;
use super::{Capture, Stream};

/// Bytes of one stream accepted and not yet written to its sink, at most
/// (a single write may go past it once).
pub(crate) const BUFFER_BYTES: usize = 64 * 1024;

type Writer = Pin<Box<dyn AsyncWrite + Send>>;

/// Where one of a container's output streams (stdout or stderr) goes: an
/// async writer that receives every byte the guest writes, in order, with
/// back-pressure (see [`ContainerConfig::stdout`]).
///
/// The sink is shared by every run of the container (a restart writes on
/// where the last run stopped) and is never shut down by the runtime; each
/// batch is written with `write_all` and then flushed.
///
/// [`ContainerConfig::stdout`]: crate::runtime::ContainerConfig::stdout
#[derive(Clone)]
pub struct ByteSink {
    writer: Arc<tokio::sync::Mutex<Writer>>,
    terminal: bool,
}

impl ByteSink {
    /// A sink writing the guest's bytes to `writer` unchanged.
    pub fn new(writer: impl AsyncWrite + Send + 'static) -> ByteSink {
        ByteSink {
            writer: Arc::new(tokio::sync::Mutex::new(Box::pin(writer))),
            terminal: false,
        }
    }

    /// A sink for a terminal: the guest's bytes with only what could
    /// control the terminal escaped ([`TerminalEscaper`]: ESC, C1 and bidi
    /// controls, ENQ, SO and SI); tabs, backslashes, newlines, UTF-8 text
    /// and even invalid UTF-8 pass unchanged.
    pub fn terminal(writer: impl AsyncWrite + Send + 'static) -> ByteSink {
        ByteSink {
            terminal: true,
            ..ByteSink::new(writer)
        }
    }

    /// True for a sink made with [`ByteSink::terminal`].
    pub fn is_terminal(&self) -> bool {
        self.terminal
    }
}

impl fmt::Debug for ByteSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ByteSink")
            .field("terminal", &self.terminal)
            .finish_non_exhaustive()
    }
}

type WriteBatch = Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>>;

/// Why a sink stopped taking bytes (kept to fail every later write).
#[derive(Debug)]
struct SinkFailed {
    kind: std::io::ErrorKind,
    message: String,
    /// Accepted bytes it never took.
    lost: u64,
}

/// One stream's bytes on their way to its sink during one run.
pub(super) struct Delivery {
    sink: ByteSink,
    escaper: Option<TerminalEscaper>,
    /// Accepted, not yet handed to the writer.
    buffer: Vec<u8>,
    in_flight: Option<WriteBatch>,
    /// The size of the batch in flight.
    in_flight_len: usize,
    failed: Option<SinkFailed>,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("buffered", &self.buffer.len())
            .field("in_flight", &self.in_flight.is_some())
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl Delivery {
    pub(super) fn new(sink: ByteSink) -> Delivery {
        Delivery {
            escaper: sink.terminal.then(TerminalEscaper::new),
            sink,
            buffer: Vec::new(),
            in_flight: None,
            in_flight_len: 0,
            failed: None,
        }
    }

    /// How the sink failed, if it did.
    pub(super) fn failure(&self, stream: Stream) -> Option<SinkFailure> {
        self.failed.as_ref().map(|f| SinkFailure {
            stream: stream.name(),
            error: f.message.clone(),
            broken_pipe: f.kind == std::io::ErrorKind::BrokenPipe,
            lost_bytes: f.lost,
        })
    }

    /// The error the guest's next operation on this stream gets, once the
    /// sink has failed.
    pub(super) fn error(&self) -> Option<StreamError> {
        self.failed.as_ref().map(|f| {
            if f.kind == std::io::ErrorKind::BrokenPipe {
                StreamError::Closed
            } else {
                StreamError::LastOperationFailed(wasmtime::format_err!(
                    "writing the output failed: {}",
                    f.message
                ))
            }
        })
    }

    /// Bytes the guest may write now without waiting.
    pub(super) fn room(&self) -> usize {
        BUFFER_BYTES.saturating_sub(self.buffer.len())
    }

    /// True when nothing accepted is left to write (or the sink failed).
    pub(super) fn is_idle(&self) -> bool {
        self.failed.is_some() || (self.buffer.is_empty() && self.in_flight.is_none())
    }

    /// Accepts the guest's bytes (escaped for a terminal sink).
    pub(super) fn accept(&mut self, bytes: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        match &mut self.escaper {
            Some(escaper) => escaper.push(bytes, &mut self.buffer),
            None => self.buffer.extend_from_slice(bytes),
        }
    }

    /// The run ended: a character the escaper held back goes out as is.
    pub(super) fn finish(&mut self) {
        if let Some(escaper) = &mut self.escaper {
            escaper.finish(&mut self.buffer);
        }
    }

    /// Writes out what was accepted; ready once it is all written (or the
    /// sink failed), or, with `until_room`, as soon as the guest may write
    /// again.
    pub(super) fn poll_write_out(&mut self, cx: &mut Context<'_>, until_room: bool) -> Poll<()> {
        loop {
            if let Some(batch) = &mut self.in_flight {
                match batch.as_mut().poll(cx) {
                    Poll::Pending => {
                        if until_room && self.room() > 0 {
                            return Poll::Ready(());
                        }
                        return Poll::Pending;
                    }
                    Poll::Ready(result) => {
                        self.in_flight = None;
                        if let Err(e) = result {
                            // The whole batch counts as lost: how much of
                            // it a failing `write_all` wrote is unknown.
                            self.failed = Some(SinkFailed {
                                kind: e.kind(),
                                message: e.to_string(),
                                lost: (self.in_flight_len + self.buffer.len()) as u64,
                            });
                        }
                    }
                }
            }
            if self.failed.is_some() {
                self.buffer = Vec::new();
                return Poll::Ready(());
            }
            if self.buffer.is_empty() {
                return Poll::Ready(());
            }
            let batch = std::mem::take(&mut self.buffer);
            self.in_flight_len = batch.len();
            let writer = self.sink.writer.clone();
            self.in_flight = Some(Box::pin(async move {
                let mut writer = writer.lock_owned().await;
                writer.write_all(&batch).await?;
                writer.flush().await
            }));
        }
    }
}

fn index(stream: Stream) -> usize {
    if stream == Stream::Stderr { 1 } else { 0 }
}

impl Capture {
    pub(super) fn deliveries(&self) -> MutexGuard<'_, [Option<Delivery>; 2]> {
        self.0.deliveries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes the guest may write to `stream` now as far as its sink is
    /// concerned (`usize::MAX` without one; 0 while the other stream's
    /// sink is behind), or the sink's failure.
    pub(super) fn sink_room(&self, stream: Stream) -> Result<usize, StreamError> {
        let deliveries = self.deliveries();
        let i = index(stream);
        let Some(own) = &deliveries[i] else {
            return Ok(usize::MAX);
        };
        if let Some(error) = own.error() {
            return Err(error);
        }
        if deliveries[1 - i].as_ref().is_some_and(|d| !d.is_idle()) {
            return Ok(0);
        }
        Ok(own.room())
    }

    /// Hands the guest's bytes to `stream`'s sink (if it has one); the
    /// sink's failure, once it has failed.
    pub(super) fn accept(&self, stream: Stream, bytes: &[u8]) -> Result<(), StreamError> {
        match &mut self.deliveries()[index(stream)] {
            Some(delivery) => match delivery.error() {
                Some(error) => Err(error),
                None => {
                    delivery.accept(bytes);
                    Ok(())
                }
            },
            None => Ok(()),
        }
    }

    /// The sink's failure, if `stream`'s sink has failed.
    pub(super) fn sink_error(&self, stream: Stream) -> Option<StreamError> {
        self.deliveries()[index(stream)]
            .as_ref()
            .and_then(Delivery::error)
    }

    /// Ready once the guest may write to `stream` again as far as the
    /// sinks are concerned: the other stream's accepted bytes are written
    /// out, and this one's buffer has room.
    pub(super) fn poll_sink_room(&self, stream: Stream, cx: &mut Context<'_>) -> Poll<()> {
        let mut deliveries = self.deliveries();
        let i = index(stream);
        if let Some(other) = &mut deliveries[1 - i]
            && other.poll_write_out(cx, false).is_pending()
        {
            return Poll::Pending;
        }
        match &mut deliveries[i] {
            Some(own) => own.poll_write_out(cx, true),
            None => Poll::Ready(()),
        }
    }

    /// The first byte sink that failed (stdout's, if both did).
    pub(crate) fn sink_failure(&self) -> Option<SinkFailure> {
        let deliveries = self.deliveries();
        [Stream::Stdout, Stream::Stderr]
            .into_iter()
            .find_map(|stream| deliveries[index(stream)].as_ref()?.failure(stream))
    }

    /// Writes out what both streams accepted; ready once it is all written
    /// (or a sink failed).
    pub(crate) fn poll_deliver(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut deliveries = self.deliveries();
        let mut ready = true;
        for delivery in deliveries.iter_mut().flatten() {
            ready &= delivery.poll_write_out(cx, false).is_ready();
        }
        if ready {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}
