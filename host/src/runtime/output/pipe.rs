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
        self.capture.write(self.stream, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Writes past the limit are dropped, not refused; a guest waits
        // (in `ready`) only while its audit records are being queued.
        Ok(if self.capture.has_room() {
            64 * 1024
        } else {
            0
        })
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CapturePipe {
    async fn ready(&mut self) {
        if !self.capture.has_room() {
            self.capture.drain().await;
            self.capture.wait_writable().await;
        }
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
        self.capture.write(self.stream, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
