//! The writer thread: it alone encodes, hashes, signs checkpoints, writes
//! and fsyncs. It takes the queue in batches; with
//! [`FsyncPolicy::EveryRecord`] the appenders waiting on one batch share one
//! fsync (group commit). A failed write is cut back off the storage and
//! retried until it succeeds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::config::{AuditConfig, FsyncPolicy};
use super::events::LogEvent;
use super::health::AuditHealth;
use super::state::{CheckpointReason, FULL_BATCH, Failure, Queued, Shared, State, queue_rotation};
use super::storage::AuditStorage;
use crate::audit::atomic::write_atomic;
use crate::audit::event::{Actor, Entry, RECORD_BYTES, Severity};
use crate::audit::head::SignedHead;
use crate::audit::observe::Observed;
use crate::audit::record::{self, Head, checkpoint_message};
use crate::audit::segments::{segment_file_name, segments_dir_for};

/// The writer thread's state: it alone encodes, hashes and writes.
struct Writer {
    shared: Arc<Shared>,
    storage: Box<dyn AuditStorage>,
    /// Length of the storage that holds only complete, written records.
    good_len: u64,
    /// Hash of the last encoded record.
    head: [u8; 32],
    /// Encoded lines not yet written (kept across a failed write).
    encoded: Vec<u8>,
    /// Sequence number of the last encoded record.
    encoded_last: u64,
    written_seq: u64,
    last_sync: Instant,
    /// The latest checkpoint's signed head, written but not yet durable
    /// (only with a head file).
    head_unsynced: Option<SignedHead>,
    /// A durable signed head not yet saved to the head file (kept across a
    /// failed save).
    head_unsaved: Option<SignedHead>,
    /// Makes the storage of each new segment's file.
    wrap: Wrap,
    /// Sequence number of the active segment's first record.
    first_seq: u64,
    /// The sealed segment before the active one (its file name and first
    /// sequence number), which an `audit.segment` record names.
    previous: Option<(String, u64)>,
    /// A sealed segment waiting to be moved away and replaced by a new
    /// active file (kept across a failed attempt).
    switch: Option<Switch>,
}

/// Makes the storage of a segment's file (the `wrap` of
/// [`AuditLog::open_with`](super::AuditLog::open_with)).
pub(super) type Wrap = Box<dyn FnMut(std::fs::File) -> Box<dyn AuditStorage> + Send>;

/// A rotation between sealing the active segment and starting the next.
struct Switch {
    /// The sealed file was renamed into the segments directory.
    renamed: bool,
    /// The first sequence number of the next segment.
    next_first_seq: u64,
}

/// What the writer thread starts from.
pub(super) struct Start {
    pub(super) storage: Box<dyn AuditStorage>,
    pub(super) wrap: Wrap,
    /// Length of the active segment.
    pub(super) len: u64,
    /// Records in the log.
    pub(super) existing: u64,
    /// Hash of the last record.
    pub(super) head: [u8; 32],
    /// Sequence number of the active segment's first record.
    pub(super) first_seq: u64,
    /// The sealed segment before the active one.
    pub(super) previous: Option<(String, u64)>,
    /// The locked lock file: the writer thread owns it, so the lock is
    /// released when the writer stops (at close).
    pub(super) lock: std::fs::File,
}

/// Starts the writer thread of a log.
pub(super) fn spawn(shared: Arc<Shared>, start: Start) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("forgeone-audit".into())
        .spawn(move || {
            let _lock = start.lock;
            let mut writer = Writer {
                shared,
                storage: start.storage,
                good_len: start.len,
                head: start.head,
                encoded: Vec::with_capacity(64 * 1024),
                encoded_last: start.existing,
                written_seq: start.existing,
                last_sync: Instant::now(),
                head_unsynced: None,
                head_unsaved: None,
                wrap: start.wrap,
                first_seq: start.first_seq,
                previous: start.previous,
                switch: None,
            };
            // Records are traced through the subscriber that was
            // current when the log was opened.
            let _tracing = tracing::dispatcher::set_default(&writer.shared.dispatch);
            writer.run();
        })
        .expect("spawn the audit writer thread")
}

/// What the writer took from the queue in one go.
struct Batch {
    queued: Vec<Queued>,
    /// `flush` asked for an fsync.
    sync_requested: bool,
    /// The log is closing: this is the last batch.
    closing: bool,
    /// The batch ends with the checkpoint that seals the active segment.
    rotate: bool,
}

impl Writer {
    fn run(&mut self) {
        let config = self.shared.config.clone();
        loop {
            if self.switch.is_some()
                && let Err(error) = self.switch_segment()
            {
                let closing = self.shared.lock().closing;
                if self.failed(error, closing, &config) {
                    return;
                }
                continue;
            }
            let batch = self.next_batch(&config);
            for queued in batch.queued {
                self.encode(queued);
            }
            let head = self.head;
            let wrote = !self.encoded.is_empty();
            let mut result = Ok(());
            if wrote {
                result = self.storage.write_all(&self.encoded);
            }
            let must_sync = match config.fsync {
                FsyncPolicy::EveryRecord | FsyncPolicy::EveryBatch => wrote,
                FsyncPolicy::Interval(every) => self.last_sync.elapsed() >= every,
            } || batch.sync_requested
                || batch.closing
                || batch.rotate;
            if result.is_ok() && must_sync {
                result = self.storage.sync();
                self.last_sync = Instant::now();
            }

            let stop = match result {
                Ok(()) => {
                    // A checkpoint is durable: its head goes to the head file.
                    if must_sync && let Some(signed) = self.head_unsynced.take() {
                        self.head_unsaved = Some(signed);
                    }
                    let saved = self.save_head();
                    if batch.rotate && saved.is_ok() {
                        self.switch = Some(Switch {
                            renamed: false,
                            next_first_seq: self.encoded_last + 1,
                        });
                    }
                    self.written(head, wrote, must_sync, saved.err(), &config)
                }
                Err(error) => self.failed(error, batch.closing, &config),
            };
            if stop {
                return;
            }
        }
    }

    /// Waits for work (records, a flush, a due fsync, a retry or the close)
    /// and takes the queue.
    fn next_batch(&self, config: &AuditConfig) -> Batch {
        let mut state = self.shared.lock();
        loop {
            let interval_due = matches!(config.fsync, FsyncPolicy::Interval(every)
                if self.written_seq > state.durable_seq && self.last_sync.elapsed() >= every);
            // Lines kept from a failed write are work too: retry them, and
            // a head file that could not be saved.
            let retry = !self.encoded.is_empty() || self.head_unsaved.is_some();
            if !state.queue.is_empty()
                || state.closing
                || state.sync_requested
                || interval_due
                || retry
            {
                break;
            }
            let wait = match config.fsync {
                FsyncPolicy::Interval(every) if self.written_seq > state.durable_seq => every
                    .saturating_sub(self.last_sync.elapsed())
                    .max(Duration::from_millis(1)),
                _ => Duration::from_secs(3600),
            };
            state.writer_idle = true;
            state = self
                .shared
                .work
                .wait_timeout(state, wait)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            state.writer_idle = false;
        }
        // Let a batch gather (not when a writer waits for durability: group
        // commit already gathers while the previous fsync runs).
        if config.fsync != FsyncPolicy::EveryRecord
            && !state.closing
            && !state.sync_requested
            && !config.batch_delay.is_zero()
            && state.queue.len() < FULL_BATCH
        {
            state = self
                .shared
                .work
                .wait_timeout(state, config.batch_delay)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        let taken = std::mem::take(&mut state.queued_bytes);
        state.writing_bytes += taken;
        let mut queued = std::mem::take(&mut state.queue);
        // A batch ends at the checkpoint that seals the active segment:
        // what follows goes into the next one.
        let rotate_at = queued.iter().position(|q| {
            matches!(
                q,
                Queued::Checkpoint {
                    reason: CheckpointReason::Rotate,
                    ..
                }
            )
        });
        if let Some(at) = rotate_at {
            state.queue = queued.split_off(at + 1);
        }
        Batch {
            queued,
            sync_requested: std::mem::take(&mut state.sync_requested),
            closing: state.closing && rotate_at.is_none(),
            rotate: rotate_at.is_some(),
        }
    }

    /// Saves the durable signed head to the head file, if there is one.
    fn save_head(&mut self) -> std::io::Result<()> {
        let Some(signed) = &self.head_unsaved else {
            return Ok(());
        };
        if let Some(path) = &self.shared.config.head_file {
            write_atomic(path, signed.to_json().as_bytes()).map_err(|(at, e)| {
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "saving the signed head to {}: {}: {e}",
                        path.display(),
                        at.display()
                    ),
                )
            })?;
        }
        self.head_unsaved = None;
        Ok(())
    }

    /// After a successful write (and fsync, if `synced`): publishes the new
    /// head and durable point, ends an outage with an `audit.resumed`
    /// record, and wakes the appenders. When the head file could not be
    /// saved (`head_error`), the log is unavailable instead, as after a
    /// failed write, and the save is retried. Returns true when the log is
    /// closed.
    fn written(
        &mut self,
        head: [u8; 32],
        wrote: bool,
        synced: bool,
        head_error: Option<std::io::Error>,
        config: &AuditConfig,
    ) -> bool {
        if wrote {
            self.good_len += self.encoded.len() as u64;
            self.encoded.clear();
            self.written_seq = self.encoded_last;
        }
        let mut state = self.shared.lock();
        state.head = head;
        // Everything the writer took is written: its bytes no longer count
        // against back-pressure.
        state.writing_bytes = 0;
        if synced {
            state.durable_seq = self.written_seq;
        }
        if let Some(error) = head_error {
            self.mark_failed(&mut state, error, None);
            if state.closing {
                state.closed = true;
                return true;
            }
            let _ = self.shared.work.wait_timeout(state, config.retry_every);
            return false;
        }
        if let Some(failure) = state.failure.take() {
            tracing::warn!(target: "forgeone::audit", error = %failure, "audit log writable again");
            // The outage goes on the record: next in the chain.
            let seq = state.next_seq;
            state.next_seq += 1;
            let event = LogEvent::Resumed {
                error: failure.to_string(),
                outage_ms: u64::try_from(failure.since.elapsed().as_millis()).unwrap_or(u64::MAX),
                refused_records: failure.refused,
            };
            state.queue.push(Queued::Event {
                seq,
                ts: chrono::Utc::now(),
                entry: Entry::owned(event).actor(Actor::host()),
            });
            state.queued_bytes += RECORD_BYTES as u64;
            state.since_checkpoint += 1;
            self.shared.set_health(AuditHealth::Writable);
        }
        let size = self.shared.config.segment_bytes;
        if size > 0 && self.good_len >= size && !state.closing && self.switch.is_none() {
            queue_rotation(&mut state);
        }
        let closed = state.closing && state.queue.is_empty();
        if closed {
            state.closed = true;
            self.shared.set_health(AuditHealth::Closed);
        }
        self.shared.wake_appenders();
        closed
    }

    /// After a failed write or fsync: cuts off anything partially written,
    /// keeps the encoded lines for the retry, marks the log unavailable
    /// (appends are refused) and waits before the retry. Returns true when
    /// the log was closing: it cannot be closed cleanly, the writer gives up.
    fn failed(&mut self, error: std::io::Error, closing: bool, config: &AuditConfig) -> bool {
        let cut_back_failed = self.storage.truncate(self.good_len).err().map(Arc::new);
        let mut state = self.shared.lock();
        self.mark_failed(&mut state, error, cut_back_failed);
        if closing {
            state.closed = true;
            return true;
        }
        let _ = self.shared.work.wait_timeout(state, config.retry_every);
        false
    }

    /// Marks the log unavailable (if it is not already), says so in tracing
    /// and in its health, and wakes the appenders (who then fail).
    fn mark_failed(
        &self,
        state: &mut State,
        error: std::io::Error,
        cut_back_failed: Option<Arc<std::io::Error>>,
    ) {
        if state.failure.is_none() {
            let failure = Failure {
                error: Arc::new(error),
                cut_back_failed,
                since: Instant::now(),
                refused: 0,
            };
            tracing::error!(target: "forgeone::audit", path = %self.shared.path.display(), error = %failure, "audit log write failed; refusing new records until it recovers");
            let cause = self.shared.unavailable(&failure).to_string();
            state.failure = Some(failure);
            self.shared.set_health(AuditHealth::Failing { cause });
        }
        self.shared.wake_appenders();
    }

    /// Serialises one queued record onto the chain and into `encoded`.
    fn encode(&mut self, queued: Queued) {
        match queued {
            Queued::Event { seq, ts, entry } => {
                let start = self.encoded.len();
                let head = Head {
                    seq,
                    ts,
                    kind: entry.kind,
                    actor: entry.actor.as_deref(),
                    subjects: &entry.subjects,
                };
                let (hash, details, replaced) = record::encode_bounded(
                    &mut self.encoded,
                    &head,
                    |out| entry.event.write_details(out),
                    &self.head,
                );
                self.head = hash;
                self.encoded_last = seq;
                if let Some(replaced) = replaced {
                    tracing::warn!(
                        target: "forgeone::audit",
                        seq,
                        kind = entry.kind,
                        line_bytes = replaced.line_bytes,
                        details_bytes = replaced.details_bytes,
                        limit = record::MAX_LINE,
                        "audit record too long for a reader; written as its size and digest"
                    );
                }
                // `record::encode` wrote valid JSON, i.e. UTF-8.
                let details = std::str::from_utf8(&self.encoded[details]).unwrap_or("{}");
                trace_event(&entry, seq, details);
                let observed = Observed {
                    seq,
                    ts,
                    kind: entry.kind,
                    actor: entry.actor.as_deref(),
                    subjects: &entry.subjects,
                    details,
                    line_bytes: (self.encoded.len() - start) as u64,
                    queued_for: Duration::ZERO,
                };
                self.observe(observed);
            }
            Queued::Checkpoint { seq, ts, reason } => {
                let covers = seq - 1;
                let signature = self.sign_head(covers);
                let details = serde_json::json!({
                    "reason": reason,
                    "covers": covers,
                    "head": hex::encode(self.head),
                    "key_id": self.shared.key.id(),
                    "signature": hex::encode(signature),
                });
                self.encode_host_record(seq, ts, "audit.checkpoint", &details);
            }
            Queued::SegmentStart { seq, ts } => self.encode_segment_start(seq, ts),
        }
    }

    /// Shows a record just put on the chain to the log's observers, with
    /// how long it waited since `append`.
    fn observe(&self, mut record: Observed<'_>) {
        let observers = &self.shared.config.observers;
        if observers.is_empty() {
            return;
        }
        record.queued_for = (chrono::Utc::now() - record.ts)
            .to_std()
            .unwrap_or_default();
        observers.observe(&record);
    }

    /// Encodes the first record of a new segment: `audit.segment`, signing
    /// the head of the segment before it (as a checkpoint does).
    fn encode_segment_start(&mut self, seq: u64, ts: chrono::DateTime<chrono::Utc>) {
        let covers = seq - 1;
        let signature = self.sign_head(covers);
        let key = &self.shared.key;
        let (previous, previous_first) = self.previous.clone().unwrap_or_default();
        let details = serde_json::json!({
            "previous_segment": previous,
            "previous_first_seq": previous_first,
            "covers": covers,
            "head": hex::encode(self.head),
            "key_id": key.id(),
            "public_key": key.public().to_hex(),
            "signature": hex::encode(signature),
        });
        self.encode_host_record(seq, ts, "audit.segment", &details);
    }

    /// Signs the chain head (the hash of record `covers`) with the host
    /// key, as checkpoints and segment starts do, and keeps it for the head
    /// file when the log has one.
    fn sign_head(&mut self, covers: u64) -> [u8; 64] {
        let key = &self.shared.key;
        let signature = key.sign(&checkpoint_message(covers, &self.head));
        if self.shared.config.head_file.is_some() {
            let public = key.public().clone();
            self.head_unsynced = Some(SignedHead::new(covers, self.head, public, signature));
        }
        signature
    }

    /// Encodes a record the log writes of its own (`audit.checkpoint`,
    /// `audit.segment`) onto the chain, by the host, and shows it to the
    /// observers.
    fn encode_host_record(
        &mut self,
        seq: u64,
        ts: chrono::DateTime<chrono::Utc>,
        kind: &'static str,
        details: &serde_json::Value,
    ) {
        let start = self.encoded.len();
        let head = Head {
            seq,
            ts,
            kind,
            actor: Some(&Actor::host()),
            subjects: &Default::default(),
        };
        self.head = record::encode(
            &mut self.encoded,
            &head,
            |out| {
                let _ = serde_json::to_writer(out, details);
            },
            &self.head,
        )
        .0;
        self.encoded_last = seq;
        if self.shared.config.observers.is_empty() {
            return;
        }
        let details = details.to_string();
        self.observe(Observed {
            seq,
            ts,
            kind,
            actor: None,
            subjects: &Default::default(),
            details: &details,
            line_bytes: (self.encoded.len() - start) as u64,
            queued_for: Duration::ZERO,
        });
    }

    /// Moves the sealed active segment into the segments directory (named
    /// by its first sequence number) and starts a new, empty active file.
    /// Each step is durable (directories fsynced) before the next; a
    /// failed step is retried from where it stopped.
    fn switch_segment(&mut self) -> std::io::Result<()> {
        let path = self.shared.path.clone();
        let Some(switch) = &mut self.switch else {
            return Ok(());
        };
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => std::path::PathBuf::from("."),
        };
        let name = segment_file_name(self.first_seq);
        if !switch.renamed {
            let dir = segments_dir_for(&path);
            std::fs::create_dir_all(&dir)?;
            let target = dir.join(&name);
            if target.exists() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    format!(
                        "sealing the active segment: {} already exists",
                        target.display()
                    ),
                ));
            }
            std::fs::rename(&path, &target)?;
            std::fs::File::open(&dir)?.sync_all()?;
            std::fs::File::open(&parent)?.sync_all()?;
            switch.renamed = true;
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)?;
        if file.metadata()?.len() != 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("starting a new segment: {} is not empty", path.display()),
            ));
        }
        std::fs::File::open(&parent)?.sync_all()?;
        self.previous = Some((name, self.first_seq));
        self.first_seq = switch.next_first_seq;
        self.storage = (self.wrap)(file);
        self.good_len = 0;
        self.switch = None;
        let mut state = self.shared.lock();
        state.rotate_queued = None;
        state.active_first_seq = self.first_seq;
        Ok(())
    }
}

/// Emits `entry` as a tracing event, through the writer thread's default
/// subscriber (the one current when the log was opened).
fn trace_event(entry: &Entry, seq: u64, details: &str) {
    let subjects = &entry.subjects;
    macro_rules! emit {
        ($level:ident) => {
            tracing::$level!(
                target: "forgeone::audit",
                seq,
                kind = entry.kind,
                actor = entry.actor.as_ref().map(|a| a.principal.as_str()),
                component = subjects.component.as_deref(),
                container = subjects.container.as_deref(),
                workload = subjects.workload.as_deref(),
                node = subjects.node.as_deref(),
                details,
                "{}", entry.kind
            )
        };
    }
    match entry.event.severity() {
        Severity::Info => emit!(info),
        Severity::Warn => emit!(warn),
        Severity::Error => emit!(error),
    }
}
