//! The stream WASI writes a container's stdout or stderr to, and the pump
//! that appends the run's queued output records to the audit log.
//!
//! Records are appended in order with the log's async append, then
//! flushed: once [`CHUNK_BYTES`] worth of the run's records (output chunks
//! and log lines, by their cost against the budget) are on their way and
//! not yet durable, the guest's next write or log line waits, in its
//! stream's `ready` (WASI's back-pressure) or in the log import, until
//! they are. A guest therefore never gets more than about one chunk of
//! audited activity ahead of the disk: when the log fails, what it did
//! after the last durable record is at most that chunk and the output not
//! yet cut (itself at most one chunk, or 100 ms). Waiting never blocks the
//! executor thread the guest runs on.
//!
//! The append in flight lives in the capture itself, so any of its
//! pollers (the stream, the run's future, the supervisor at the end of the
//! run) may drive it, and dropping one loses nothing.

use std::task::{Context, Poll};

use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi_io::bytes::Bytes;

use super::chunks::CHUNK_BYTES;
use super::{Capture, InFlight, Stream};

impl Capture {
    /// Appends the queued records, oldest first, and flushes them (until
    /// the run has ended); ready when every record queued so far is
    /// durable (or, after the run, in the chain), or could not be written
    /// (the error is logged), or must wait because the log is failing (the
    /// audit failure policy deals with the run meanwhile).
    pub(crate) fn poll_drain(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut pump = self.0.pump.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if pump.is_none() {
                if self.failing() {
                    // Kept until the log can be written again (or the run
                    // is stopped): appending now would only lose them.
                    return Poll::Ready(());
                }
                let ((batch, cost), container, finished) = {
                    let mut state = self.lock();
                    (state.audit.take(), state.target.container, state.finished)
                };
                if batch.is_empty() {
                    return Poll::Ready(());
                }
                let audit = self.0.audit.clone();
                let append = Box::pin(async move {
                    for entry in batch {
                        if let Err(e) = audit.append_async(entry).await {
                            tracing::error!(%container, "audit append failed: {e}");
                            return;
                        }
                    }
                    // Durability gates the guest; once its run has ended
                    // nothing waits on it, and the records are in the chain.
                    if !finished && let Err(e) = audit.flush_async().await {
                        tracing::error!(%container, "audit flush failed: {e}");
                    }
                });
                *pump = Some(InFlight { append, cost });
            }
            match pump.as_mut().map(|f| f.append.as_mut().poll(cx)) {
                Some(Poll::Pending) => return Poll::Pending,
                _ => *pump = None,
            }
        }
    }

    /// Appends and flushes every queued record.
    pub(crate) async fn drain(&self) {
        std::future::poll_fn(|cx| self.poll_drain(cx)).await
    }

    /// True while the log cannot be written and the guest must wait.
    fn failing(&self) -> bool {
        self.0
            .health
            .as_ref()
            .is_some_and(|h| h.borrow().is_failing())
    }

    /// Waits while the audit log cannot be written: the guest's output or
    /// log call returns only once it can (or never: the audit failure
    /// policy stops or pauses the run meanwhile).
    pub(crate) async fn wait_writable(&self) {
        if let Some(mut health) = self.0.health.clone() {
            let _ = health.wait_for(|h| !h.is_failing()).await;
        }
    }

    /// Whether the guest may go on without waiting for the log: the log
    /// can be written, and less than a chunk's worth of its records is on
    /// the way and not yet durable.
    pub(crate) fn has_room(&self) -> bool {
        if self.failing() {
            return false;
        }
        let pump = self.0.pump.lock().unwrap_or_else(|p| p.into_inner());
        let in_flight = pump.as_ref().map_or(0, |f| f.cost);
        self.lock().audit.queued().saturating_add(in_flight) < CHUNK_BYTES as u64
    }
}

/// One of a container's output streams, as WASI sees it.
#[derive(Debug, Clone)]
pub(crate) struct CapturePipe {
    capture: Capture,
    stream: Stream,
}

impl CapturePipe {
    pub(super) fn new(capture: Capture, stream: Stream) -> CapturePipe {
        CapturePipe { capture, stream }
    }
}

impl IsTerminal for CapturePipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturePipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for CapturePipe {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        // Refused only when the stream's byte sink has failed; the kept
        // copy keeps what was accepted.
        self.capture.accept(self.stream, &bytes)?;
        self.capture.write(self.stream, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        // Accepted bytes are written out in order before the run's outcome
        // (see `deliver`): a flush has nothing more to wait for.
        match self.capture.sink_error(self.stream) {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Writes past the kept limit are counted, not refused; a guest
        // waits (in `ready`) while its sink is behind or its audit records
        // are being queued.
        let room = self.capture.sink_room(self.stream)?;
        Ok(if room > 0 && self.capture.has_room() {
            room.min(WRITE_PERMIT)
        } else {
            0
        })
    }
}

/// The most a guest may write in one `write` (WASI's `check-write`).
const WRITE_PERMIT: usize = 64 * 1024;

#[wasmtime_wasi::async_trait]
impl Pollable for CapturePipe {
    async fn ready(&mut self) {
        if !self.capture.has_room() {
            self.capture.drain().await;
            self.capture.wait_writable().await;
        }
        let stream = self.stream;
        std::future::poll_fn(|cx| self.capture.poll_sink_room(stream, cx)).await;
    }
}

impl tokio::io::AsyncWrite for CapturePipe {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if !self.capture.has_room() && self.capture.poll_drain(cx).is_pending() {
            return Poll::Pending;
        }
        let into_io = |e: wasmtime_wasi::p2::StreamError| match e {
            wasmtime_wasi::p2::StreamError::Closed => {
                std::io::Error::from(std::io::ErrorKind::BrokenPipe)
            }
            other => std::io::Error::other(other.to_string()),
        };
        let room = match self.capture.sink_room(self.stream) {
            Ok(room) => room,
            Err(e) => return Poll::Ready(Err(into_io(e))),
        };
        if room == 0 {
            if self.capture.poll_sink_room(self.stream, cx).is_pending() {
                return Poll::Pending;
            }
            // Room now (or a failure, reported on the next call).
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let take = buf.len().min(room).min(WRITE_PERMIT);
        if let Err(e) = self.capture.accept(self.stream, &buf[..take]) {
            return Poll::Ready(Err(into_io(e)));
        }
        self.capture.write(self.stream, &buf[..take]);
        Poll::Ready(Ok(take))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.capture.poll_deliver(cx).map(Ok)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.capture.poll_deliver(cx).map(Ok)
    }
}
