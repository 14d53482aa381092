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
//! [`AuditConfig::max_pending`] records are queued, appenders wait
//! (back-pressure) instead of growing memory without bound.
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

use std::fs::File;
use std::io::{BufRead as _, BufReader, Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::AuditError;
use super::event::{Actor, AuditEvent, Entry, Severity};
use super::record::{self, GENESIS, Head, LineError, checkpoint_message};
use crate::keys::SigningKey;

/// When the flusher calls `fsync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "mode", content = "interval_ms")]
#[non_exhaustive]
pub enum FsyncPolicy {
    /// Every record is durable before `append` returns (concurrent appends
    /// share one fsync). Strongest; slowest for a single appender.
    EveryRecord,
    /// Each batch is written and fsynced by the flusher; `append` returns
    /// once the record is in the chain. A crash can lose the last batch
    /// (at most [`AuditConfig::batch_delay`] of records), never corrupt the
    /// log. The default.
    EveryBatch,
    /// Batches are written as they come and fsynced at most this often.
    #[serde(serialize_with = "ser_ms")]
    Interval(Duration),
}

fn ser_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What happens when the log cannot be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum FailMode {
    /// Refuse new work while the log is unavailable. The default.
    Closed,
    /// Keep running; records are refused and the outage is logged. The
    /// choice is recorded in the log when it is opened.
    Open,
}

/// Settings for an [`AuditLog`]. Every setter states its default.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AuditConfig {
    pub(crate) fsync: FsyncPolicy,
    pub(crate) fail_mode: FailMode,
    pub(crate) checkpoint_every: u64,
    pub(crate) batch_delay: Duration,
    pub(crate) max_pending: usize,
    pub(crate) retry_every: Duration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            fsync: FsyncPolicy::EveryBatch,
            fail_mode: FailMode::Closed,
            checkpoint_every: 1000,
            batch_delay: Duration::from_millis(2),
            max_pending: 65_536,
            retry_every: Duration::from_millis(500),
        }
    }
}

impl AuditConfig {
    /// Default settings.
    pub fn new() -> Self {
        Self::default()
    }

    /// When to fsync. Default: [`FsyncPolicy::EveryBatch`].
    pub fn fsync(&mut self, policy: FsyncPolicy) -> &mut Self {
        self.fsync = policy;
        self
    }

    /// What to do when the log cannot be written. Default: [`FailMode::Closed`].
    pub fn fail_mode(&mut self, mode: FailMode) -> &mut Self {
        self.fail_mode = mode;
        self
    }

    /// Write a signed checkpoint after every `n` records (at least 1).
    /// Default: 1000. A checkpoint is also written when the log is closed.
    pub fn checkpoint_every(&mut self, n: u64) -> &mut Self {
        self.checkpoint_every = n.max(1);
        self
    }

    /// How long the flusher waits to gather a batch. Default: 2 ms.
    pub fn batch_delay(&mut self, delay: Duration) -> &mut Self {
        self.batch_delay = delay;
        self
    }

    /// Queued records above which appenders wait for the writer.
    /// Default: 65,536.
    pub fn max_pending(&mut self, records: usize) -> &mut Self {
        self.max_pending = records.max(16);
        self
    }

    /// How often a failed write is retried. Default: 500 ms.
    pub fn retry_every(&mut self, every: Duration) -> &mut Self {
        self.retry_every = every;
        self
    }
}

/// Where the flusher writes. The file is the normal storage; embedders and
/// tests may wrap it (for example to simulate a full disk).
pub trait AuditStorage: Send + 'static {
    /// Appends `bytes` at the end.
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()>;
    /// Makes everything written so far durable.
    fn sync(&mut self) -> std::io::Result<()>;
    /// Cuts the storage back to `len` bytes (after a failed write).
    fn truncate(&mut self, len: u64) -> std::io::Result<()>;
}

impl AuditStorage for File {
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        std::io::Write::write_all(self, bytes)
    }
    fn sync(&mut self) -> std::io::Result<()> {
        self.sync_data()
    }
    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        self.set_len(len)?;
        self.seek(SeekFrom::Start(len)).map(|_| ())
    }
}

/// What [`AuditLog::open`] found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Complete records already in the file.
    pub existing_records: u64,
    /// Bytes of a torn last line that were cut off, and the offset they started at.
    pub torn_tail: Option<(u64, u64)>,
    /// True when the previous writer stopped without a closing checkpoint.
    pub unclean_shutdown: bool,
}

/// Summary returned by [`AuditLog::close`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseSummary {
    /// Sequence number of the last record (the closing checkpoint).
    pub last_seq: u64,
    /// Hash (hex) of the last record.
    pub head: String,
}

/// The log's own events (`audit.*`).
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
enum LogEvent {
    Opened {
        version: &'static str,
        host_key_id: String,
        host_public_key: String,
        fsync: FsyncPolicy,
        fail_mode: FailMode,
        checkpoint_every: u64,
        existing_records: u64,
    },
    Recovered {
        reason: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        torn_offset: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        torn_bytes: Option<u64>,
        last_seq: u64,
    },
    Resumed {
        error: String,
        outage_ms: u64,
        refused_records: u64,
    },
}

impl AuditEvent for LogEvent {
    fn kind(&self) -> &'static str {
        match self {
            LogEvent::Opened { .. } => "audit.opened",
            LogEvent::Recovered { .. } => "audit.recovered",
            LogEvent::Resumed { .. } => "audit.resumed",
        }
    }
    fn details(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("audit events serialise")
    }
    fn severity(&self) -> Severity {
        match self {
            LogEvent::Opened { .. } => Severity::Info,
            LogEvent::Recovered { .. } | LogEvent::Resumed { .. } => Severity::Warn,
        }
    }
}

/// Why a checkpoint was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum CheckpointReason {
    Periodic,
    Requested,
    Shutdown,
}

/// A record waiting for the writer, its sequence number and time fixed.
enum Queued {
    Event {
        seq: u64,
        ts: chrono::DateTime<chrono::Utc>,
        entry: Entry,
    },
    Checkpoint {
        seq: u64,
        ts: chrono::DateTime<chrono::Utc>,
        reason: CheckpointReason,
    },
}

struct State {
    next_seq: u64,
    since_checkpoint: u64,
    queue: Vec<Queued>,
    /// Hash of the last encoded record (maintained by the writer).
    head: [u8; 32],
    durable_seq: u64,
    failure: Option<Failure>,
    closing: bool,
    closed: bool,
    /// Set by `flush`: fsync at the next opportunity whatever the policy.
    sync_requested: bool,
    /// The writer is asleep waiting for work. Appenders only signal it then
    /// (or when a batch is full): while it gathers a batch, a signal per
    /// append would cut every batch down to one record.
    writer_idle: bool,
}

#[derive(Clone)]
struct Failure {
    error: String,
    since: Instant,
    refused: u64,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the writer.
    work: Condvar,
    /// Wakes appenders waiting for durability, space or a failure.
    progress: Condvar,
    config: AuditConfig,
    key: SigningKey,
    path: PathBuf,
    /// The tracing subscriber current when the log was opened.
    dispatch: tracing::Dispatch,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the state consistent before it can
        // panic (nothing in them panics on input), so a poisoned lock is
        // still usable.
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn unavailable(&self, failure: &Failure) -> AuditError {
        AuditError::Unavailable {
            path: self.path.clone(),
            cause: failure.error.clone(),
        }
    }
}

struct Handle {
    shared: Arc<Shared>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    open_report: Mutex<OpenReport>,
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
    /// The existing records are read and their chain checked. A torn last
    /// line (a crash mid-write) is cut off and reported in an
    /// `audit.recovered` record; any other damage is an
    /// [`AuditError::Corrupt`] naming the sequence number. The file is
    /// locked for exclusive use while the log is open.
    pub fn open(
        path: impl AsRef<Path>,
        key: SigningKey,
        config: &AuditConfig,
    ) -> Result<AuditLog, AuditError> {
        Self::open_with(path, key, config, |file| Box::new(file))
    }

    /// Like [`AuditLog::open`], with the storage wrapped by `wrap` (for
    /// example to mirror the log elsewhere, or to simulate faults in tests).
    pub fn open_with(
        path: impl AsRef<Path>,
        key: SigningKey,
        config: &AuditConfig,
        wrap: impl FnOnce(File) -> Box<dyn AuditStorage>,
    ) -> Result<AuditLog, AuditError> {
        let path = path.as_ref().to_owned();
        let io = |source| AuditError::Io {
            path: path.clone(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(AuditError::Locked { path }),
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        let scan = scan_existing(&mut file, &path)?;
        let mut report = OpenReport {
            existing_records: scan.records,
            torn_tail: None,
            unclean_shutdown: scan.records > 0 && !scan.closed_cleanly,
        };
        if let Some(torn_at) = scan.torn_at {
            let len = file.metadata().map_err(io)?.len();
            file.set_len(torn_at).map_err(io)?;
            file.sync_all().map_err(io)?;
            report.torn_tail = Some((torn_at, len - torn_at));
        }
        let len = file.seek(SeekFrom::End(0)).map_err(io)?;
        let storage = wrap(file);

        let log = Self::start(
            path,
            key,
            config.clone(),
            storage,
            len,
            scan.records,
            scan.head,
        );
        let opened = LogEvent::Opened {
            version: env!("CARGO_PKG_VERSION"),
            host_key_id: log.handle.shared.key.id().to_string(),
            host_public_key: log.handle.shared.key.public().to_hex(),
            fsync: config.fsync,
            fail_mode: config.fail_mode,
            checkpoint_every: config.checkpoint_every,
            existing_records: scan.records,
        };
        log.append_internal(Entry::owned(opened).actor(Actor::host()))?;
        let recovered = match report.torn_tail {
            Some((offset, bytes)) => Some(LogEvent::Recovered {
                reason: "torn last line (the writer crashed mid-write); it was cut off".into(),
                torn_offset: Some(offset),
                torn_bytes: Some(bytes),
                last_seq: scan.records,
            }),
            None if report.unclean_shutdown => Some(LogEvent::Recovered {
                reason: "the previous writer stopped without a closing checkpoint".into(),
                torn_offset: None,
                torn_bytes: None,
                last_seq: scan.records,
            }),
            None => None,
        };
        if let Some(event) = recovered {
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
        storage: Box<dyn AuditStorage>,
        storage_len: u64,
        existing: u64,
        head: [u8; 32],
    ) -> AuditLog {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                next_seq: existing + 1,
                since_checkpoint: 0,
                queue: Vec::with_capacity(1024),
                head,
                durable_seq: existing,
                failure: None,
                closing: false,
                closed: false,
                sync_requested: false,
                writer_idle: false,
            }),
            work: Condvar::new(),
            progress: Condvar::new(),
            config,
            key,
            path,
            dispatch: tracing::dispatcher::get_default(|d| d.clone()),
        });
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("forgeone-audit".into())
                .spawn(move || {
                    let mut writer = Writer {
                        shared,
                        storage,
                        good_len: storage_len,
                        head,
                        encoded: Vec::with_capacity(64 * 1024),
                        encoded_last: existing,
                        written_seq: existing,
                        last_sync: Instant::now(),
                    };
                    // Records are traced through the subscriber that was
                    // current when the log was opened.
                    let _tracing = tracing::dispatcher::set_default(&writer.shared.dispatch);
                    writer.run();
                })
                .expect("spawn the audit writer thread")
        };
        AuditLog {
            handle: Arc::new(Handle {
                shared,
                writer: Mutex::new(Some(writer)),
                open_report: Mutex::new(OpenReport::default()),
            }),
        }
    }

    /// The file this log writes.
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
    pub fn append(&self, entry: Entry) -> Result<u64, AuditError> {
        debug_assert!(
            !entry.kind.starts_with("audit."),
            "audit.* kinds are reserved for the log itself"
        );
        self.append_internal(entry)
    }

    fn append_internal(&self, entry: Entry) -> Result<u64, AuditError> {
        let shared = &self.handle.shared;
        let mut state = shared.lock();
        loop {
            if state.closed || state.closing {
                return Err(AuditError::Closed);
            }
            if let Some(failure) = &mut state.failure {
                failure.refused += 1;
                return Err(shared.unavailable(failure));
            }
            if state.queue.len() < shared.config.max_pending {
                break;
            }
            state = shared
                .progress
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
        }
        let seq = state.next_seq;
        let ts = chrono::Utc::now();
        state.next_seq += 1;
        state.queue.push(Queued::Event { seq, ts, entry });
        state.since_checkpoint += 1;
        if state.since_checkpoint >= shared.config.checkpoint_every {
            queue_checkpoint(&mut state, CheckpointReason::Periodic);
        }
        if state.writer_idle || state.queue.len() >= FULL_BATCH {
            state.writer_idle = false;
            shared.work.notify_one();
        }
        if shared.config.fsync == FsyncPolicy::EveryRecord {
            while state.durable_seq < seq {
                if let Some(failure) = &state.failure {
                    return Err(shared.unavailable(failure));
                }
                state = shared
                    .progress
                    .wait(state)
                    .unwrap_or_else(|p| p.into_inner());
            }
        }
        Ok(seq)
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

    /// Waits until every record appended so far is written and fsynced.
    pub fn flush(&self) -> Result<(), AuditError> {
        let shared = &self.handle.shared;
        let mut state = shared.lock();
        let target = state.next_seq - 1;
        state.sync_requested = true;
        state.writer_idle = false;
        shared.work.notify_one();
        while state.durable_seq < target {
            if let Some(failure) = &state.failure {
                return Err(shared.unavailable(failure));
            }
            if state.closed {
                break;
            }
            state = shared
                .progress
                .wait_timeout(state, Duration::from_millis(50))
                .unwrap_or_else(|p| p.into_inner())
                .0;
            if state.durable_seq < target {
                state.sync_requested = true;
                shared.work.notify_one();
            }
        }
        Ok(())
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
                tracing::warn!(target: "forgeone::audit", error = %failure.error, "audit log unavailable; continuing (fail-open)");
                Ok(())
            }
            (Some(failure), FailMode::Closed) => Err(shared.unavailable(failure)),
        }
    }

    /// Sequence number of the last record appended.
    pub fn last_seq(&self) -> u64 {
        self.handle.shared.lock().next_seq - 1
    }

    /// Writes the closing checkpoint, flushes, fsyncs and stops the writer.
    /// Appends after this fail with [`AuditError::Closed`].
    pub fn close(&self) -> Result<CloseSummary, AuditError> {
        close_inner(&self.handle.shared, &self.handle.writer)
    }
}

/// Queued records at which the writer stops gathering a batch.
const FULL_BATCH: usize = 4096;

/// Queues a checkpoint covering everything queued so far.
fn queue_checkpoint(state: &mut State, reason: CheckpointReason) -> u64 {
    let seq = state.next_seq;
    state.next_seq += 1;
    state.since_checkpoint = 0;
    state.queue.push(Queued::Checkpoint {
        seq,
        ts: chrono::Utc::now(),
        reason,
    });
    seq
}

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
}

impl Writer {
    fn run(&mut self) {
        let config = self.shared.config.clone();
        loop {
            let (batch, sync_requested, closing) = {
                let mut state = self.shared.lock();
                loop {
                    let interval_due = matches!(config.fsync, FsyncPolicy::Interval(every)
                        if self.written_seq > state.durable_seq && self.last_sync.elapsed() >= every);
                    // Lines kept from a failed write are work too: retry them.
                    let retry = !self.encoded.is_empty();
                    if !state.queue.is_empty()
                        || state.closing
                        || state.sync_requested
                        || interval_due
                        || retry
                    {
                        break;
                    }
                    let wait = match config.fsync {
                        FsyncPolicy::Interval(every) if self.written_seq > state.durable_seq => {
                            every
                                .saturating_sub(self.last_sync.elapsed())
                                .max(Duration::from_millis(1))
                        }
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
                // Let a batch gather (not when a writer waits for
                // durability: group commit already gathers while the
                // previous fsync runs).
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
                let batch = std::mem::take(&mut state.queue);
                let sync_requested = std::mem::take(&mut state.sync_requested);
                (batch, sync_requested, state.closing)
            };

            for queued in batch {
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
            } || sync_requested
                || closing;
            if result.is_ok() && must_sync {
                result = self.storage.sync();
                self.last_sync = Instant::now();
            }

            match result {
                Ok(()) => {
                    if wrote {
                        self.good_len += self.encoded.len() as u64;
                        self.encoded.clear();
                        self.written_seq = self.encoded_last;
                    }
                    let mut state = self.shared.lock();
                    state.head = head;
                    if must_sync {
                        state.durable_seq = self.written_seq;
                    }
                    if let Some(failure) = state.failure.take() {
                        tracing::warn!(target: "forgeone::audit", error = %failure.error, "audit log writable again");
                        // The outage goes on the record: next in the chain.
                        let seq = state.next_seq;
                        state.next_seq += 1;
                        let event = LogEvent::Resumed {
                            error: failure.error,
                            outage_ms: u64::try_from(failure.since.elapsed().as_millis())
                                .unwrap_or(u64::MAX),
                            refused_records: failure.refused,
                        };
                        state.queue.push(Queued::Event {
                            seq,
                            ts: chrono::Utc::now(),
                            entry: Entry::owned(event).actor(Actor::host()),
                        });
                        state.since_checkpoint += 1;
                    }
                    self.shared.progress.notify_all();
                    if state.closing && state.queue.is_empty() {
                        state.closed = true;
                        self.shared.progress.notify_all();
                        return;
                    }
                }
                Err(error) => {
                    // Cut off anything partially written, keep the encoded
                    // lines for the retry, refuse new records, and retry.
                    let truncated = self.storage.truncate(self.good_len).is_ok();
                    let message = if truncated {
                        error.to_string()
                    } else {
                        format!("{error} (and cutting back the partial write failed)")
                    };
                    let mut state = self.shared.lock();
                    if state.failure.is_none() {
                        tracing::error!(target: "forgeone::audit", path = %self.shared.path.display(), error = %message, "audit log write failed; refusing new records until it recovers");
                        state.failure = Some(Failure {
                            error: message,
                            since: Instant::now(),
                            refused: 0,
                        });
                    }
                    self.shared.progress.notify_all();
                    if closing {
                        // Give up: the log cannot be closed cleanly.
                        state.closed = true;
                        return;
                    }
                    let _ = self.shared.work.wait_timeout(state, config.retry_every);
                }
            }
        }
    }

    /// Serialises one queued record onto the chain and into `encoded`.
    fn encode(&mut self, queued: Queued) {
        match queued {
            Queued::Event { seq, ts, entry } => {
                let head = Head {
                    seq,
                    ts,
                    kind: entry.kind,
                    actor: entry.actor.as_deref(),
                    subjects: &entry.subjects,
                };
                let (hash, details) = record::encode(
                    &mut self.encoded,
                    &head,
                    |out| entry.event.write_details(out),
                    &self.head,
                );
                self.head = hash;
                self.encoded_last = seq;
                // `record::encode` wrote valid JSON, i.e. UTF-8.
                let details = std::str::from_utf8(&self.encoded[details]).unwrap_or("{}");
                trace_event(&entry, seq, details);
            }
            Queued::Checkpoint { seq, ts, reason } => {
                let covers = seq - 1;
                let signature = self
                    .shared
                    .key
                    .sign(&checkpoint_message(covers, &self.head));
                let details = serde_json::json!({
                    "reason": reason,
                    "covers": covers,
                    "head": hex::encode(self.head),
                    "key_id": self.shared.key.id(),
                    "signature": hex::encode(signature),
                });
                let head = Head {
                    seq,
                    ts,
                    kind: "audit.checkpoint",
                    actor: Some(&Actor::host()),
                    subjects: &Default::default(),
                };
                self.head = record::encode(
                    &mut self.encoded,
                    &head,
                    |out| {
                        let _ = serde_json::to_writer(out, &details);
                    },
                    &self.head,
                )
                .0;
                self.encoded_last = seq;
            }
        }
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

/// What reading an existing log found.
struct Scan {
    records: u64,
    head: [u8; 32],
    closed_cleanly: bool,
    /// Offset of a torn (unterminated) last line.
    torn_at: Option<u64>,
}

/// Reads and chain-checks every complete line of an existing log.
fn scan_existing(file: &mut File, path: &Path) -> Result<Scan, AuditError> {
    file.seek(SeekFrom::Start(0))
        .map_err(|source| AuditError::Io {
            path: path.to_owned(),
            source,
        })?;
    let mut reader = BufReader::with_capacity(256 * 1024, &*file);
    let mut scan = Scan {
        records: 0,
        head: GENESIS,
        closed_cleanly: true,
        torn_at: None,
    };
    let mut offset = 0u64;
    let mut line = Vec::with_capacity(1024);
    loop {
        line.clear();
        let read = reader
            .by_ref()
            .take(record::MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|source| AuditError::Io {
                path: path.to_owned(),
                source,
            })?;
        if read == 0 {
            break;
        }
        if line.last() != Some(&b'\n') {
            if line.len() > record::MAX_LINE {
                return Err(corrupt(
                    path,
                    scan.records + 1,
                    LineError::TooLong.to_string(),
                ));
            }
            // The final bytes have no newline: a write torn by a crash.
            scan.torn_at = Some(offset);
            break;
        }
        let parsed = record::parse_line(&line[..line.len() - 1])
            .map_err(|e| corrupt(path, scan.records + 1, e.to_string()))?;
        let expected = scan.records + 1;
        if parsed.record.seq != expected {
            return Err(corrupt(
                path,
                expected,
                format!(
                    "found sequence number {} where {expected} was expected",
                    parsed.record.seq
                ),
            ));
        }
        if parsed.prev != scan.head {
            return Err(corrupt(
                path,
                expected,
                "does not chain to the record before it".into(),
            ));
        }
        scan.head = parsed.hash;
        scan.records = expected;
        scan.closed_cleanly = parsed.record.kind == "audit.checkpoint"
            && parsed.record.details["reason"] == "shutdown";
        offset += read as u64;
    }
    Ok(scan)
}

fn corrupt(path: &Path, seq: u64, reason: String) -> AuditError {
    AuditError::Corrupt {
        path: path.to_owned(),
        seq,
        reason,
    }
}
