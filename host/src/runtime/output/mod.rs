//! A run's stdout and stderr: every byte to the caller's [`ByteSink`]s
//! (unbounded, exact, with back-pressure), and a kept copy, bounded by
//! [`Limits::max_output`](super::Limits::max_output): line by line to the
//! [`OutputSink`] and the evidence kept for the operator, and in chunks to
//! the audit log (escaped).
//!
//! The kept copy never fails a write: past its limit the bytes are counted
//! and not kept, and one marker line says so. A guest's write waits while
//! its stream's sink is behind (see `deliver`) and while the run's finished
//! audit chunks are queued into the log; neither wait blocks a thread.
//!
//! - `deliver`: the bytes on their way to the [`ByteSink`]s;
//! - `terminal`: [`TerminalEscaper`], for sinks that are terminals;
//! - `chunks`: the `container.output` chunks and the run's audit budget
//!   (the format is documented there);
//! - `pipe`: the stream WASI writes to, and the pump that appends the
//!   queued records.

mod chunks;
mod deliver;
mod pipe;
mod terminal;

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::watch;
use uuid::Uuid;

use crate::audit::{AuditHealth, AuditLog, Entry, Subjects, escape_untrusted};

use super::events::ContainerEvent;

use chunks::AuditChunks;
pub use deliver::ByteSink;
use deliver::Delivery;
pub(crate) use pipe::CapturePipe;
pub use terminal::TerminalEscaper;

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

/// Receives every output line of a container as it is written, up to the
/// kept limit ([`Limits::max_output`](super::Limits::max_output)): the
/// line view of the kept copy. For every byte exactly as written, give the
/// container a [`ByteSink`] per stream.
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
    /// Where every byte of stdout and of stderr goes, if anywhere.
    pub(crate) bytes: [Option<ByteSink>; 2],
    pub(crate) limit: u64,
    pub(crate) max_line: usize,
    pub(crate) keep_last: usize,
    /// Audit bytes the run may write (see `chunks`).
    pub(crate) audit_budget: u64,
    /// The log's health, when the guest must wait while it fails (a
    /// container's run, with `FailMode::Closed`).
    pub(crate) health: Option<watch::Receiver<AuditHealth>>,
}

#[derive(Debug)]
struct CaptureState {
    target: CaptureTarget,
    partial: [Vec<u8>; 2],
    total: u64,
    kept: u64,
    truncated: bool,
    finished: bool,
    last_lines: VecDeque<String>,
    audit: AuditChunks,
}

type Append = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Records on their way into the log: appended, then flushed.
struct InFlight {
    append: Append,
    /// Their costs, summed.
    cost: u64,
}

struct Shared {
    state: Mutex<CaptureState>,
    /// The append in flight, kept here (not in whoever polls it) so that a
    /// poller dropped mid-append loses no record.
    pump: Mutex<Option<InFlight>>,
    /// Stdout and stderr on their way to their byte sinks.
    deliveries: Mutex<[Option<Delivery>; 2]>,
    audit: AuditLog,
    health: Option<watch::Receiver<AuditHealth>>,
}

/// The output of one container run (stdout and stderr share one budget).
#[derive(Clone)]
pub(crate) struct Capture(Arc<Shared>);

impl fmt::Debug for Capture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Capture").finish_non_exhaustive()
    }
}

impl Capture {
    pub(crate) fn new(target: CaptureTarget) -> Capture {
        let audit = target.audit.clone();
        let health = target.health.clone();
        let chunks = AuditChunks::new(target.subjects.clone(), target.audit_budget);
        let deliveries = target.bytes.clone().map(|sink| sink.map(Delivery::new));
        Capture(Arc::new(Shared {
            state: Mutex::new(CaptureState {
                target,
                partial: [Vec::new(), Vec::new()],
                total: 0,
                kept: 0,
                truncated: false,
                finished: false,
                last_lines: VecDeque::new(),
                audit: chunks,
            }),
            pump: Mutex::new(None),
            deliveries: Mutex::new(deliveries),
            audit,
            health,
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CaptureState> {
        self.0.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn pipe(&self, stream: Stream) -> CapturePipe {
        CapturePipe::new(self.clone(), stream)
    }

    fn write(&self, stream: Stream, bytes: &[u8]) {
        let mut state = self.lock();
        state.total = state.total.saturating_add(bytes.len() as u64);
        if state.truncated || state.finished {
            return;
        }
        let room = state.target.limit.saturating_sub(state.kept);
        let take = (bytes.len() as u64).min(room) as usize;
        state.kept += take as u64;
        let index = if stream == Stream::Stderr { 1 } else { 0 };
        let now = Instant::now();
        state.audit.push(index, &bytes[..take], now);
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
            state.flush_partial_lines();
            let limit = state.target.limit;
            let marker = format!(
                "[forgeone: output truncated after {}; further output dropped]",
                bytesize::ByteSize::b(limit)
            );
            state.emit_raw(Stream::Host, marker);
            state.audit.cut_all(now);
            state
                .audit
                .record(ContainerEvent::OutputTruncated { limit_bytes: limit });
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

    /// Queues a `container.log` record of `text` escaped bytes behind the
    /// output written before it, charged to the run's audit budget; false
    /// when it is over (it is counted instead).
    pub(crate) fn log_record(&self, entry: Entry, text: u64) -> bool {
        self.lock().audit.log(entry, text)
    }

    /// Ends the run's output: partial lines go out, pending output is cut
    /// into records, and what the budget dropped is recorded. Only the first
    /// call does anything; [`Capture::drain`] then appends the records.
    pub(crate) fn finish(&self) {
        let mut state = self.lock();
        if std::mem::replace(&mut state.finished, true) {
            return;
        }
        state.flush_partial_lines();
        state.audit.finish(Instant::now());
        drop(state);
        for delivery in self.deliveries().iter_mut().flatten() {
            delivery.finish();
        }
    }

    /// Opens a finished and drained capture again for the next call of a
    /// warm plugin instance, whose WASI streams keep writing here: counts,
    /// the kept copy's limit and the audit budget start over, as for a
    /// fresh capture. Only for captures without byte sinks (plugins have
    /// none: their deliveries, once finished, stay finished).
    pub(crate) fn rearm(&self) {
        let mut state = self.lock();
        debug_assert!(state.target.bytes.iter().all(Option::is_none));
        state.partial = [Vec::new(), Vec::new()];
        state.total = 0;
        state.kept = 0;
        state.truncated = false;
        state.finished = false;
        state.last_lines.clear();
        state.audit = AuditChunks::new(state.target.subjects.clone(), state.target.audit_budget);
    }

    /// When pending output is next due in the log, if any is pending.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.lock().audit.next_due()
    }

    /// Cuts the pending output that is due.
    pub(crate) fn cut_due(&self) {
        self.lock().audit.cut_due(Instant::now());
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
    fn flush_partial_lines(&mut self) {
        for index in 0..2 {
            let line = std::mem::take(&mut self.partial[index]);
            if !line.is_empty() {
                let stream = if index == 1 {
                    Stream::Stderr
                } else {
                    Stream::Stdout
                };
                self.emit(stream, &line);
            }
        }
    }

    fn emit(&mut self, stream: Stream, bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes).into_owned();
        self.emit_raw(stream, text);
    }

    /// A line for the caller and the evidence (the audit log gets chunks).
    fn emit_raw(&mut self, stream: Stream, text: String) {
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
}
