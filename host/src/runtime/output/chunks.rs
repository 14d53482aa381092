//! The audit side of a run's output: stdout and stderr cut into
//! `container.output` chunks, and the run's budget of audit bytes.
//!
//! # Format
//!
//! One `container.output` record per stream holds at most
//! [`CHUNK_BYTES`] (16 KiB) of the guest's bytes, and is cut as soon as
//! it is full or its oldest byte is [`CHUNK_AGE`] (100 ms) old, whichever
//! comes first, so a guest printing bare newlines writes one record per
//! 16 KiB of them, not one per line. Its details:
//!
//! ```json
//! {"stream":"stdout","offset":0,"bytes":16384,"lines":16384,"text":"\\n\\n…"}
//! ```
//!
//! `offset` is the position of the chunk's first byte in its stream,
//! `bytes` its length, `lines` the newlines in it, and `text` the bytes
//! themselves (invalid UTF-8 replaced, then escaped like all guest text;
//! a chunk may end inside a line, never inside a character). The chunks
//! of a stream, in order, are its output: the offsets show any gap.
//!
//! # Budget
//!
//! Each run may put [`Limits::max_audit_bytes`](crate::runtime::Limits)
//! of guest-supplied text into the log (1 MiB by default): every output
//! chunk and every `container.log` record is charged its escaped text plus
//! [`RECORD_COST`] bytes. Once a record would go past the budget, that
//! record and all later output and log lines of the run are counted, not
//! written, and one `container.output_dropped` record at the end of the
//! run says how much was dropped. Output still streams to the caller's
//! [`OutputSink`](crate::runtime::OutputSink) and the kept last lines as
//! before: the budget bounds the log, not what the caller sees.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::audit::{Actor, Entry, Subjects, Untrusted};
use crate::runtime::events::ContainerEvent;

use super::Stream;

/// Most guest bytes in one `container.output` record.
pub(crate) const CHUNK_BYTES: usize = 16 * 1024;
/// Output is written to the log at most this long after the guest wrote it.
pub(crate) const CHUNK_AGE: Duration = Duration::from_millis(100);
/// What a record costs against the budget besides its text (an estimate
/// of its envelope: sequence number, time, kind, subjects, hashes).
pub(crate) const RECORD_COST: u64 = 512;

/// What was counted and not written.
#[derive(Debug, Default)]
struct Dropped {
    bytes: [u64; 2],
    log_lines: u64,
}

/// A run's output on its way into the audit log.
#[derive(Debug)]
pub(super) struct AuditChunks {
    subjects: Arc<Subjects>,
    budget: u64,
    spent: u64,
    over: bool,
    pending: [Vec<u8>; 2],
    /// When the oldest pending byte of each stream was written.
    since: [Option<Instant>; 2],
    /// Stream offset of each stream's first pending byte.
    offset: [u64; 2],
    dropped: Dropped,
    finished: bool,
    /// Records ready to be appended, oldest first, each with its cost.
    outbox: VecDeque<(Entry, u64)>,
    /// The costs in `outbox`, summed.
    queued: u64,
}

fn stream_of(index: usize) -> Stream {
    if index == 1 {
        Stream::Stderr
    } else {
        Stream::Stdout
    }
}

impl AuditChunks {
    pub(super) fn new(subjects: Arc<Subjects>, budget: u64) -> AuditChunks {
        AuditChunks {
            subjects,
            budget,
            spent: 0,
            over: false,
            pending: [Vec::new(), Vec::new()],
            since: [None, None],
            offset: [0, 0],
            dropped: Dropped::default(),
            finished: false,
            outbox: VecDeque::new(),
            queued: 0,
        }
    }

    /// Queues an audit record written by the host (not charged to the
    /// budget).
    pub(super) fn record(&mut self, event: ContainerEvent) {
        let entry = Entry::owned(event)
            .shared_actor(Actor::shared_host())
            .about(self.subjects.clone());
        self.queue(entry, RECORD_COST);
    }

    fn queue(&mut self, entry: Entry, cost: u64) {
        self.queued = self.queued.saturating_add(cost);
        self.outbox.push_back((entry, cost));
    }

    /// Takes the guest's kept bytes of one stream; cuts every full chunk,
    /// and the pending bytes when the oldest of them is due.
    pub(super) fn push(&mut self, index: usize, bytes: &[u8], now: Instant) {
        if bytes.is_empty() || self.finished {
            return;
        }
        if self.pending[index].is_empty() {
            self.since[index] = Some(now);
        }
        self.pending[index].extend_from_slice(bytes);
        while self.pending[index].len() >= CHUNK_BYTES {
            let mut cut = CHUNK_BYTES;
            // Never inside a UTF-8 character (at most 3 continuation bytes).
            let pending = &self.pending[index];
            while cut < pending.len() && cut > CHUNK_BYTES - 3 && (pending[cut] & 0xC0) == 0x80 {
                cut -= 1;
            }
            self.cut(index, cut, now);
        }
        self.cut_due(now);
    }

    /// When the oldest pending byte is due in the log, if any is pending.
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.since
            .iter()
            .flatten()
            .min()
            .map(|since| *since + CHUNK_AGE)
    }

    /// Cuts the pending bytes of each stream whose oldest byte is due.
    pub(super) fn cut_due(&mut self, now: Instant) {
        for index in 0..2 {
            if self.since[index].is_some_and(|since| now >= since + CHUNK_AGE) {
                let len = self.pending[index].len();
                self.cut(index, len, now);
            }
        }
    }

    /// Cuts everything pending (the run ended, or output was truncated).
    pub(super) fn cut_all(&mut self, now: Instant) {
        for index in 0..2 {
            let len = self.pending[index].len();
            self.cut(index, len, now);
        }
    }

    fn cut(&mut self, index: usize, len: usize, now: Instant) {
        if len == 0 {
            return;
        }
        let chunk: Vec<u8> = self.pending[index].drain(..len).collect();
        let offset = self.offset[index];
        self.offset[index] += len as u64;
        self.since[index] = (!self.pending[index].is_empty()).then_some(now);
        let text = Untrusted::from_bytes(&chunk);
        let Some(cost) = self.charge(text.as_str().len() as u64) else {
            self.dropped.bytes[index] += len as u64;
            return;
        };
        let entry = Entry::owned(ContainerEvent::Output {
            stream: stream_of(index).name(),
            offset,
            bytes: len as u64,
            lines: chunk.iter().filter(|b| **b == b'\n').count() as u64,
            text,
        })
        .shared_actor(Actor::shared_host())
        .about(self.subjects.clone());
        self.queue(entry, cost);
    }

    /// Charges a record of `text` escaped bytes and returns its cost, or
    /// `None` when it is over the budget (then it, and everything after
    /// it, is counted, not written).
    fn charge(&mut self, text: u64) -> Option<u64> {
        let cost = text.saturating_add(RECORD_COST);
        if self.over || self.spent.saturating_add(cost) > self.budget {
            self.over = true;
            return None;
        }
        self.spent += cost;
        Some(cost)
    }

    /// Queues a `container.log` record of `text` escaped bytes, charged to
    /// the budget; false when it is over (then it is counted instead).
    pub(super) fn log(&mut self, entry: Entry, text: u64) -> bool {
        match self.charge(text) {
            Some(cost) => {
                self.queue(entry, cost);
                true
            }
            None => {
                self.dropped.log_lines += 1;
                false
            }
        }
    }

    /// Cuts what is pending and, when anything was dropped, queues the one
    /// record saying how much. Only the first call does anything.
    pub(super) fn finish(&mut self, now: Instant) {
        if self.finished {
            return;
        }
        self.cut_all(now);
        self.finished = true;
        let Dropped { bytes, log_lines } = self.dropped;
        if bytes != [0, 0] || log_lines > 0 {
            self.record(ContainerEvent::OutputDropped {
                budget_bytes: self.budget,
                stdout_bytes: bytes[0],
                stderr_bytes: bytes[1],
                log_lines,
            });
        }
    }

    /// Takes every queued record, oldest first, and their summed cost.
    pub(super) fn take(&mut self) -> (Vec<Entry>, u64) {
        let cost = std::mem::take(&mut self.queued);
        (
            self.outbox.drain(..).map(|(entry, _)| entry).collect(),
            cost,
        )
    }

    /// The costs of the queued records, summed.
    pub(super) fn queued(&self) -> u64 {
        self.queued
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(budget: u64) -> AuditChunks {
        AuditChunks::new(Arc::new(Subjects::default()), budget)
    }

    fn kinds(c: &mut AuditChunks) -> Vec<&'static str> {
        c.take().0.into_iter().map(|e| e.kind).collect()
    }

    fn details(entry: &Entry) -> serde_json::Value {
        let mut out = Vec::new();
        entry.event.write_details(&mut out);
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn newlines_are_cut_into_full_chunks_and_the_rest_when_due() {
        let mut c = chunks(u64::MAX);
        let now = Instant::now();
        for _ in 0..64 {
            c.push(0, &[b'\n'; 1024], now);
        }
        // 64 KiB of newlines: four full records (each costing its escaped
        // text, `\n` for each newline, and the envelope), nothing pending.
        let full = 2 * CHUNK_BYTES as u64 + RECORD_COST;
        assert_eq!(c.queued(), 4 * full);
        c.push(1, b"partial", now);
        assert_eq!(c.queued(), 4 * full, "not due yet");
        assert_eq!(c.next_due(), Some(now + CHUNK_AGE));
        c.cut_due(now + CHUNK_AGE);
        assert_eq!(c.queued(), 4 * full + 7 + RECORD_COST);
        assert_eq!(c.next_due(), None);
        c.finish(now);
        assert_eq!(kinds(&mut c), vec!["container.output"; 5]);
    }

    #[test]
    fn a_chunk_never_splits_a_character() {
        let mut c = chunks(u64::MAX);
        let now = Instant::now();
        let mut bytes = vec![b'x'; CHUNK_BYTES - 1];
        bytes.extend_from_slice("é".as_bytes());
        c.push(0, &bytes, now);
        c.finish(now);
        let (entries, _) = c.take();
        let (first, second) = (details(&entries[0]), details(&entries[1]));
        assert_eq!(first["bytes"], CHUNK_BYTES as u64 - 1);
        assert_eq!(second["offset"], CHUNK_BYTES as u64 - 1);
        assert_eq!(second["text"], "é");
    }

    #[test]
    fn past_the_budget_output_and_logs_are_counted_once() {
        let budget = 2 * (CHUNK_BYTES as u64 + RECORD_COST);
        let mut c = chunks(budget);
        let now = Instant::now();
        c.push(0, &vec![b'a'; 5 * CHUNK_BYTES], now);
        let log = Entry::owned(ContainerEvent::Released);
        assert!(!c.log(log, 10), "over budget: logs are dropped too");
        c.push(1, b"late", now);
        c.finish(now);
        c.finish(now);
        let (entries, _) = c.take();
        let kinds: Vec<_> = entries.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            vec![
                "container.output",
                "container.output",
                "container.output_dropped"
            ]
        );
        let dropped = details(&entries[2]);
        assert_eq!(dropped["stdout_bytes"], 3 * CHUNK_BYTES as u64);
        assert_eq!(dropped["stderr_bytes"], 4);
        assert_eq!(dropped["log_lines"], 1);
        assert_eq!(dropped["budget_bytes"], budget);
    }
}
