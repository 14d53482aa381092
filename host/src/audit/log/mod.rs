//! The writer: an append-only, hash-chained, checkpointed JSON Lines file.
//!
//! # Concurrency
//!
//! [`AuditLog`] is a cheap clone. `append` takes one short lock to assign
//! the sequence number, stamp the time and queue the (still unserialised)
//! event: sequence numbers are gap-free and the queue order is the chain
//! order, and an appender never serialises, hashes or waits on disk I/O. A
//! dedicated writer thread takes the queue in batches, serialises each
//! record, hashes it onto the chain, signs checkpoints, writes, and fsyncs
//! according to the [`FsyncPolicy`]; with [`FsyncPolicy::EveryRecord`]
//! appenders wait for their record to be durable, and concurrent appenders
//! share one fsync (group commit). When more than
//! [`AuditConfig::max_pending`] records, or more than
//! [`AuditConfig::max_pending_bytes`] (by estimate), wait for the writer,
//! appenders wait (back-pressure) instead of growing memory without bound.
//!
//! Async code appends with [`AuditLog::append_async`] and flushes with
//! [`AuditLog::flush_async`]: they wait for room or durability as futures
//! (woken by a `tokio::sync::Notify` alongside the condition variable the
//! blocking calls use), so a container that writes a lot never blocks the
//! executor thread it shares with others.
//!
//! No line is longer than a reader accepts ([`MAX_LINE`](crate::audit::MAX_LINE)):
//! a longer record is written as its size and digest.
//!
//! Each record is also emitted as a `tracing` event (target
//! `forgeone::audit`) by the writer, through the subscriber that was current
//! when the log was opened.
//!
//! # Failure
//!
//! A write or fsync error marks the log unavailable: the flusher truncates
//! the file back to its last good length (so a partial write never leaves a
//! torn line in the middle), keeps the unwritten batch, and retries. While
//! unavailable, `append` refuses new records and
//! [`AuditLog::ensure_writable`] fails, which the kernel uses to refuse new
//! work instead of running unaudited ([`FailMode::Closed`], the default).
//! With [`FailMode::Open`] the kernel keeps running and only logs the
//! outage; that choice is recorded in the log's `audit.opened` record. When a
//! retry succeeds, an `audit.resumed` record states the outage.
//! [`AuditLog::health`] publishes the outage as it starts and ends, for the
//! kernel to stop or pause what runs meanwhile.
//!
//! # Files
//!
//! - `config`: [`AuditConfig`], [`FsyncPolicy`], [`FailMode`];
//! - `health`: [`AuditHealth`];
//! - `storage`: the [`AuditStorage`] seam and its file implementation;
//! - `recovery`: opening an existing log (lock, the tail since the last
//!   checkpoint, torn tail, a crash mid-rotation);
//! - `state`: what the handles and the writer thread share;
//! - `writer`: the writer thread (batching, group commit, retry, rotation);
//! - `prune`: [`AuditLog::prune`];
//! - `events`: the log's own `audit.*` events;
//! - this file: the [`AuditLog`] handle.

mod config;
mod events;
mod health;
mod prune;
mod recovery;
mod state;
mod storage;
mod writer;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use config::{AuditConfig, DEFAULT_SEGMENT_BYTES, FailMode, FsyncPolicy};
pub use health::AuditHealth;
pub use recovery::OpenReport;
pub use storage::AuditStorage;

use events::LogEvent;
use state::{
    CheckpointReason, FULL_BATCH, Queued, Shared, State, queue_checkpoint, queue_rotation,
};

use super::AuditError;
use super::event::{Actor, Entry};
use crate::keys::SigningKey;

// The async methods' futures can be spawned on a multi-threaded runtime.
const _: () = {
    fn assert_send<T: Send>(_: &T) {}
    #[allow(dead_code)]
    fn futures_are_send(log: &AuditLog, entry: Entry) {
        assert_send(&log.append_async(entry));
        assert_send(&log.flush_async());
    }
};

/// Summary returned by [`AuditLog::close`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseSummary {
    /// Sequence number of the last record (the closing checkpoint).
    pub last_seq: u64,
    /// Hash (hex) of the last record.
    pub head: String,
}

struct Handle {
    shared: Arc<Shared>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    open_report: Mutex<OpenReport>,
    /// One prune at a time.
    pruning: Mutex<()>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        let _ = close_inner(&self.shared, &self.writer);
    }
}

/// A tamper-evident audit log. Clone it freely; every clone appends to the
/// same chain. Dropping the last clone closes the log (as [`AuditLog::close`]).
#[derive(Clone)]
pub struct AuditLog {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.handle.shared.path)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens (or creates) the log at `path`, signing checkpoints with `key`.
    ///
    /// The active segment is read back from its end to its last checkpoint
    /// and that tail's chain checked: the cost does not grow with the log
    /// (earlier records are sealed by the checkpoint's signature, and
    /// checked by [`verify_file`](crate::audit::verify_file)). A torn last
    /// line (a crash mid-write) is cut off and reported in an
    /// `audit.recovered` record, as is an active segment lost to a crash
    /// mid-rotation (a new one is started after the last sealed segment);
    /// damage in the tail is an [`AuditError::Corrupt`] naming the sequence
    /// number. The log is locked (through its lock file,
    /// `audit.jsonl` → `audit.lock`) for exclusive use while it is open;
    /// when another process holds the lock, opening waits for it up to
    /// [`AuditConfig::lock_timeout`] (default: not at all) and then fails
    /// with [`AuditError::Locked`].
    pub fn open(
        path: impl AsRef<Path>,
        key: SigningKey,
        config: &AuditConfig,
    ) -> Result<AuditLog, AuditError> {
        Self::open_with(path, key, config, |file| Box::new(file))
    }

    /// Like [`AuditLog::open`], with the storage wrapped by `wrap` (for
    /// example to mirror the log elsewhere, or to simulate faults in tests).
    /// `wrap` is called for the active segment's file, and again for each
    /// new segment's when the log rotates.
    pub fn open_with(
        path: impl AsRef<Path>,
        key: SigningKey,
        config: &AuditConfig,
        mut wrap: impl FnMut(File) -> Box<dyn AuditStorage> + Send + 'static,
    ) -> Result<AuditLog, AuditError> {
        let path = path.as_ref().to_owned();
        let recovered = recovery::open_file(&path, config)?;
        let report = recovered.report.clone();
        let existing = recovered.last_seq;
        let start = writer::Start {
            storage: wrap(recovered.file),
            wrap: Box::new(wrap),
            len: recovered.len,
            existing,
            head: recovered.head,
            first_seq: recovered.first_seq,
            previous: recovered.start_segment.clone(),
            lock: recovered.lock,
        };
        let log = Self::start(path, key, config.clone(), start);
        if recovered.start_segment.is_some() {
            // The active segment begins with the record that signs the
            // head of the sealed one before it.
            let mut state = log.handle.shared.lock();
            let seq = state.next_seq;
            state.next_seq += 1;
            state.queue.push(Queued::SegmentStart {
                seq,
                ts: chrono::Utc::now(),
            });
            state.active_first_seq = seq;
        }
        let opened = LogEvent::Opened {
            version: env!("CARGO_PKG_VERSION"),
            host_key_id: log.handle.shared.key.id().to_string(),
            host_public_key: log.handle.shared.key.public().to_hex(),
            fsync: config.fsync,
            fail_mode: config.fail_mode,
            checkpoint_every: config.checkpoint_every,
            existing_records: existing,
        };
        log.append_internal(Entry::owned(opened).actor(Actor::host()))?;
        if let Some(event) = report.recovered_event() {
            log.append_internal(Entry::owned(event).actor(Actor::host()))?;
        }
        *log.handle
            .open_report
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = report;
        Ok(log)
    }

    /// What opening found in the existing file (records, torn tail, unclean
    /// shutdown).
    pub fn open_report(&self) -> OpenReport {
        self.handle
            .open_report
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn start(
        path: PathBuf,
        key: SigningKey,
        config: AuditConfig,
        start: writer::Start,
    ) -> AuditLog {
        let shared = Arc::new(Shared::new(path, key, config, start.existing, start.head));
        shared.lock().active_first_seq = start.first_seq;
        let writer = writer::spawn(shared.clone(), start);
        AuditLog {
            handle: Arc::new(Handle {
                shared,
                writer: Mutex::new(Some(writer)),
                open_report: Mutex::new(OpenReport::default()),
                pruning: Mutex::new(()),
            }),
        }
    }

    /// The file this log writes: its active segment (sealed segments are
    /// in [`segments_dir_for`](crate::audit::segments_dir_for) of it).
    pub fn path(&self) -> &Path {
        &self.handle.shared.path
    }

    /// The id of the key that signs checkpoints.
    pub fn host_key_id(&self) -> &crate::keys::KeyId {
        self.handle.shared.key.id()
    }

    /// Appends an event; returns its sequence number.
    ///
    /// The record is in the chain when this returns (its number and time
    /// are fixed); it is written by the log's writer thread, durably before
    /// returning only with [`FsyncPolicy::EveryRecord`]. Fails with
    /// [`AuditError::Unavailable`] while the log cannot be written and
    /// [`AuditError::Closed`] after [`AuditLog::close`].
    ///
    /// A record whose line would be longer than a reader accepts
    /// ([`MAX_LINE`](crate::audit::MAX_LINE)) is written as a record of the
    /// same kind, number, actor and subjects whose details are only
    /// `{"replaced":{"reason":"too_long","limit":..,"line_bytes":..,"details_bytes":..,"details_blake3":".."}}`
    /// (blake3 over the original details' exact JSON bytes), so no event
    /// can make the log unreadable.
    pub fn append(&self, entry: Entry) -> Result<u64, AuditError> {
        debug_assert!(
            !entry.kind.starts_with("audit."),
            "audit.* kinds are reserved for the log itself"
        );
        self.append_internal(entry)
    }

    /// Like [`AuditLog::append`], without blocking the thread: waits for
    /// room in the queue (back-pressure) and, with
    /// [`FsyncPolicy::EveryRecord`], for the record to be durable, as a
    /// future. Use it from async code (a container's task), so a chatty
    /// guest never stalls the other tasks on its executor worker. Cancelling
    /// the future before it resolves may or may not have queued the record
    /// (once queued, it is written).
    pub async fn append_async(&self, entry: Entry) -> Result<u64, AuditError> {
        debug_assert!(
            !entry.kind.starts_with("audit."),
            "audit.* kinds are reserved for the log itself"
        );
        let shared = &self.handle.shared;
        let size = entry.estimated_bytes();
        let seq = loop {
            // Registered before the state is checked, so no wake-up is lost.
            let mut notified = std::pin::pin!(shared.progress_async.notified());
            notified.as_mut().enable();
            {
                let mut state = shared.lock();
                if shared.has_room(&mut state, size)? {
                    break self.enqueue(&mut state, entry, size);
                }
            }
            notified.await;
        };
        if shared.config.fsync == FsyncPolicy::EveryRecord {
            loop {
                let mut notified = std::pin::pin!(shared.progress_async.notified());
                notified.as_mut().enable();
                if shared.is_durable(&shared.lock(), seq)? {
                    break;
                }
                notified.await;
            }
        }
        Ok(seq)
    }

    fn append_internal(&self, entry: Entry) -> Result<u64, AuditError> {
        let shared = &self.handle.shared;
        let size = entry.estimated_bytes();
        let mut state = shared.lock();
        while !shared.has_room(&mut state, size)? {
            state = shared
                .progress
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
        }
        let seq = self.enqueue(&mut state, entry, size);
        if shared.config.fsync == FsyncPolicy::EveryRecord {
            while !shared.is_durable(&state, seq)? {
                state = shared
                    .progress
                    .wait(state)
                    .unwrap_or_else(|p| p.into_inner());
            }
        }
        Ok(seq)
    }

    /// Queues `entry` (of `size` estimated bytes), fixing its number and
    /// time; queues a checkpoint when one is due; wakes the writer.
    fn enqueue(&self, state: &mut State, entry: Entry, size: u64) -> u64 {
        let shared = &self.handle.shared;
        let seq = state.next_seq;
        let ts = chrono::Utc::now();
        state.next_seq += 1;
        state.queue.push(Queued::Event { seq, ts, entry });
        state.queued_bytes += size;
        state.since_checkpoint += 1;
        if state.since_checkpoint >= shared.config.checkpoint_every {
            queue_checkpoint(state, CheckpointReason::Periodic);
        }
        if state.writer_idle || state.queue.len() >= FULL_BATCH {
            state.writer_idle = false;
            shared.work.notify_one();
        }
        seq
    }

    /// Writes a signed checkpoint now; returns its sequence number.
    pub fn checkpoint(&self) -> Result<u64, AuditError> {
        let shared = &self.handle.shared;
        let mut state = shared.lock();
        if state.closed || state.closing {
            return Err(AuditError::Closed);
        }
        if let Some(failure) = &state.failure {
            return Err(shared.unavailable(failure));
        }
        let seq = queue_checkpoint(&mut state, CheckpointReason::Requested);
        state.writer_idle = false;
        shared.work.notify_one();
        Ok(seq)
    }

    /// Seals the active segment now and starts a new one (as reaching
    /// [`AuditConfig::segment_size`] does); returns the sequence number of
    /// the sealing checkpoint. The new segment's first record follows it.
    /// Returns once the rotation is queued; [`AuditLog::flush`] waits for
    /// it. A rotation asked for while one is queued and not yet carried
    /// out is that same rotation (its checkpoint's number is returned).
    pub fn rotate(&self) -> Result<u64, AuditError> {
        let shared = &self.handle.shared;
        let mut state = shared.lock();
        if state.closed || state.closing {
            return Err(AuditError::Closed);
        }
        if let Some(failure) = &state.failure {
            return Err(shared.unavailable(failure));
        }
        let seq = queue_rotation(&mut state);
        state.writer_idle = false;
        shared.work.notify_one();
        Ok(seq)
    }

    /// Waits until every record appended so far is written and fsynced.
    /// Blocks the thread; from async code use [`AuditLog::flush_async`].
    pub fn flush(&self) -> Result<(), AuditError> {
        let shared = &self.handle.shared;
        let mut state = shared.lock();
        let target = request_sync(shared, &mut state);
        while !shared.is_flushed(&state, target)? {
            state = shared
                .progress
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
        }
        Ok(())
    }

    /// Like [`AuditLog::flush`], without blocking the thread: resolves once
    /// every record appended before the call is written and fsynced
    /// (durable), whatever the [`FsyncPolicy`]. Fails with
    /// [`AuditError::Unavailable`] if the log fails before that.
    pub async fn flush_async(&self) -> Result<(), AuditError> {
        let shared = &self.handle.shared;
        let target = request_sync(shared, &mut shared.lock());
        loop {
            let mut notified = std::pin::pin!(shared.progress_async.notified());
            notified.as_mut().enable();
            if shared.is_flushed(&shared.lock(), target)? {
                return Ok(());
            }
            notified.await;
        }
    }

    /// The log's health, as a watch: [`AuditHealth::Failing`] from the
    /// moment a write, fsync or head-file write fails until a retry
    /// succeeds, [`AuditHealth::Closed`] after a clean close. The kernel
    /// watches it to stop or pause running containers while the log cannot
    /// be written (see [`AuditHealth`]). The receiver starts at the current
    /// state; `changed().await` waits for the next.
    pub fn health(&self) -> tokio::sync::watch::Receiver<AuditHealth> {
        self.handle.shared.health.subscribe()
    }

    /// What this log was opened to do when it cannot be written.
    pub fn fail_mode(&self) -> FailMode {
        self.handle.shared.config.fail_mode
    }

    /// Fails when new work must be refused because the log cannot be
    /// written ([`FailMode::Closed`]). With [`FailMode::Open`] it only warns.
    pub fn ensure_writable(&self) -> Result<(), AuditError> {
        let shared = &self.handle.shared;
        let state = shared.lock();
        if state.closed || state.closing {
            return Err(AuditError::Closed);
        }
        match (&state.failure, shared.config.fail_mode) {
            (None, _) => Ok(()),
            (Some(failure), FailMode::Open) => {
                tracing::warn!(target: "forgeone::audit", error = %failure, "audit log unavailable; continuing (fail-open)");
                Ok(())
            }
            (Some(failure), FailMode::Closed) => Err(shared.unavailable(failure)),
        }
    }

    /// Sequence number of the last record appended.
    pub fn last_seq(&self) -> u64 {
        self.handle.shared.lock().next_seq - 1
    }

    /// What waits for the writer now: records appended and not yet
    /// durable, and the estimated bytes of those not yet written (what
    /// [`AuditConfig::max_pending_bytes`] bounds). For metrics.
    pub fn backlog(&self) -> (u64, u64) {
        let state = self.handle.shared.lock();
        let records = (state.next_seq - 1).saturating_sub(state.durable_seq);
        (records, state.queued_bytes + state.writing_bytes)
    }

    /// Writes the closing checkpoint, flushes, fsyncs and stops the writer.
    /// Appends after this fail with [`AuditError::Closed`].
    pub fn close(&self) -> Result<CloseSummary, AuditError> {
        close_inner(&self.handle.shared, &self.handle.writer)
    }
}

/// Asks the writer to fsync everything queued so far; returns the sequence
/// number that must become durable.
fn request_sync(shared: &Shared, state: &mut State) -> u64 {
    state.sync_requested = true;
    state.writer_idle = false;
    shared.work.notify_one();
    state.next_seq - 1
}

fn close_inner(
    shared: &Arc<Shared>,
    writer: &Mutex<Option<std::thread::JoinHandle<()>>>,
) -> Result<CloseSummary, AuditError> {
    let Some(thread) = writer.lock().unwrap_or_else(|p| p.into_inner()).take() else {
        return Err(AuditError::Closed);
    };
    {
        let mut state = shared.lock();
        if state.failure.is_none() {
            queue_checkpoint(&mut state, CheckpointReason::Shutdown);
        }
        state.closing = true;
        state.writer_idle = false;
        shared.work.notify_one();
    }
    let _ = thread.join();
    let state = shared.lock();
    if let Some(failure) = &state.failure {
        return Err(shared.unavailable(failure));
    }
    Ok(CloseSummary {
        last_seq: state.next_seq - 1,
        head: hex::encode(state.head),
    })
}
