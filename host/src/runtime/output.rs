//! Bounded stdout/stderr capture, streamed line by line to the caller and
//! to the audit log (escaped).
//!
//! A guest's writes never block and never fail: past the capture limit the
//! bytes are counted and dropped, and one marker line says so (a pipe to a
//! full disk would make the guest fail in ways that hide the real problem).

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex};

use uuid::Uuid;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi_io::bytes::Bytes;

use crate::audit::{Actor, AuditLog, Entry, Subjects, Untrusted, escape_untrusted};

use super::events::ContainerEvent;

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Stream {
    /// The guest's stdout.
    Stdout,
    /// The guest's stderr.
    Stderr,
    /// A structured log line (`forgeone:kernel/log`), already tagged by the
    /// host with the level.
    Log,
    /// A line written by the host about the output itself (the truncation
    /// marker).
    Host,
}

impl Stream {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::Log => "log",
            Stream::Host => "host",
        }
    }
}

/// One line of guest output as the guest wrote it (invalid UTF-8 replaced),
/// without its newline. Use [`OutputLine::escaped`] before showing it on a
/// terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputLine {
    /// The container that wrote it.
    pub container: Uuid,
    /// The stream.
    pub stream: Stream,
    /// The text, raw.
    pub text: String,
}

impl OutputLine {
    /// The text with control characters, ANSI escapes and bidi overrides
    /// made visible (as in the audit log).
    pub fn escaped(&self) -> String {
        escape_untrusted(&self.text)
    }
}

/// Receives every output line of a container as it is written.
#[derive(Clone)]
pub struct OutputSink(pub(crate) Arc<dyn Fn(&OutputLine) + Send + Sync>);

impl OutputSink {
    /// A sink calling `f` for each line (on the thread running the guest:
    /// keep it short).
    pub fn new(f: impl Fn(&OutputLine) + Send + Sync + 'static) -> OutputSink {
        OutputSink(Arc::new(f))
    }

    /// A sink sending each line into an unbounded channel, and its receiver.
    pub fn channel() -> (OutputSink, tokio::sync::mpsc::UnboundedReceiver<OutputLine>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (
            OutputSink::new(move |line| {
                let _ = tx.send(line.clone());
            }),
            rx,
        )
    }
}

impl fmt::Debug for OutputSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OutputSink(..)")
    }
}

/// Where a run's output goes.
#[derive(Debug, Clone)]
pub(crate) struct CaptureTarget {
    pub(crate) container: Uuid,
    /// The subjects of the container's records.
    pub(crate) subjects: Arc<Subjects>,
    pub(crate) audit: AuditLog,
    pub(crate) sink: Option<OutputSink>,
    pub(crate) limit: u64,
    pub(crate) max_line: usize,
    pub(crate) keep_last: usize,
}

#[derive(Debug)]
struct CaptureState {
    target: CaptureTarget,
    partial: [Vec<u8>; 2],
    total: u64,
    kept: u64,
    truncated: bool,
    last_lines: VecDeque<String>,
}

/// The output of one container run (stdout and stderr share one budget).
#[derive(Debug, Clone)]
pub(crate) struct Capture(Arc<Mutex<CaptureState>>);

impl Capture {
    pub(crate) fn new(target: CaptureTarget) -> Capture {
        Capture(Arc::new(Mutex::new(CaptureState {
            target,
            partial: [Vec::new(), Vec::new()],
            total: 0,
            kept: 0,
            truncated: false,
            last_lines: VecDeque::new(),
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CaptureState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn pipe(&self, stream: Stream) -> CapturePipe {
        CapturePipe {
            capture: self.clone(),
            stream,
        }
    }

    fn write(&self, stream: Stream, bytes: &[u8]) {
        let mut state = self.lock();
        state.total = state.total.saturating_add(bytes.len() as u64);
        if state.truncated {
            return;
        }
        let room = state.target.limit.saturating_sub(state.kept);
        let take = (bytes.len() as u64).min(room) as usize;
        state.kept += take as u64;
        let index = if stream == Stream::Stderr { 1 } else { 0 };
        let mut rest = &bytes[..take];
        while let Some(pos) = rest.iter().position(|b| *b == b'\n') {
            let mut line = std::mem::take(&mut state.partial[index]);
            line.extend_from_slice(&rest[..pos]);
            state.emit(stream, &line);
            rest = &rest[pos + 1..];
        }
        state.partial[index].extend_from_slice(rest);
        // Over-long lines are cut into pieces of `max_line` bytes.
        while state.partial[index].len() >= state.target.max_line {
            let max = state.target.max_line;
            let piece: Vec<u8> = state.partial[index].drain(..max).collect();
            state.emit(stream, &piece);
        }
        if take < bytes.len() {
            state.truncated = true;
            for index in 0..2 {
                let line = std::mem::take(&mut state.partial[index]);
                if !line.is_empty() {
                    let stream = if index == 1 {
                        Stream::Stderr
                    } else {
                        Stream::Stdout
                    };
                    state.emit(stream, &line);
                }
            }
            let limit = state.target.limit;
            let marker = format!(
                "[forgeone: output truncated after {}; further output dropped]",
                bytesize::ByteSize::b(limit)
            );
            state.emit_raw(Stream::Host, marker);
            state.audit(ContainerEvent::OutputTruncated { limit_bytes: limit });
        }
    }

    /// Emits a structured log line to the sink and the evidence buffer (the
    /// audit record is written by the log import itself).
    pub(crate) fn log_line(&self, text: String) {
        let mut state = self.lock();
        state.remember(&text);
        if let Some(sink) = &state.target.sink {
            (sink.0)(&OutputLine {
                container: state.target.container,
                stream: Stream::Log,
                text,
            });
        }
    }

    /// Flushes partial lines at the end of a run.
    pub(crate) fn finish(&self) {
        let mut state = self.lock();
        for index in 0..2 {
            let line = std::mem::take(&mut state.partial[index]);
            if !line.is_empty() {
                let stream = if index == 1 {
                    Stream::Stderr
                } else {
                    Stream::Stdout
                };
                state.emit(stream, &line);
            }
        }
    }

    /// (bytes written, truncated)
    pub(crate) fn totals(&self) -> (u64, bool) {
        let state = self.lock();
        (state.total, state.truncated)
    }

    /// The last lines (escaped), oldest first.
    pub(crate) fn last_lines(&self) -> Vec<String> {
        self.lock().last_lines.iter().cloned().collect()
    }
}

impl CaptureState {
    fn emit(&mut self, stream: Stream, bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes).into_owned();
        self.emit_raw(stream, text);
    }

    fn emit_raw(&mut self, stream: Stream, text: String) {
        self.audit(ContainerEvent::Output {
            stream: stream.name(),
            line: Untrusted::new(&text),
        });
        self.remember(&text);
        if let Some(sink) = &self.target.sink {
            (sink.0)(&OutputLine {
                container: self.target.container,
                stream,
                text,
            });
        }
    }

    fn remember(&mut self, text: &str) {
        if self.target.keep_last == 0 {
            return;
        }
        if self.last_lines.len() == self.target.keep_last {
            self.last_lines.pop_front();
        }
        self.last_lines.push_back(escape_untrusted(text));
    }

    fn audit(&self, event: ContainerEvent) {
        let entry = Entry::owned(event)
            .shared_actor(Actor::shared_host())
            .about(self.target.subjects.clone());
        if let Err(e) = self.target.audit.append(entry) {
            tracing::error!(container = %self.target.container, "audit append failed: {e}");
        }
    }
}

/// One of a container's output streams, as WASI sees it.
#[derive(Debug, Clone)]
pub(crate) struct CapturePipe {
    capture: Capture,
    stream: Stream,
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
        // Always ready; writes past the limit are dropped, not refused.
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CapturePipe {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for CapturePipe {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.capture.write(self.stream, buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
