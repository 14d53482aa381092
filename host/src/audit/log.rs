//! The writer: an append-only, hash-chained, checkpointed JSON Lines file.
//!
//! # Concurrency
//!
//! [`AuditLog`] is a cheap clone. `append` pre-serialises the event outside
//! any lock, then takes one short lock to assign the sequence number, stamp
//! the time, hash the record onto the chain and push the line into a
//! buffer: sequence numbers are gap-free and the chain is a total order, yet
//! no appender ever waits on disk I/O while holding the lock. A dedicated
//! flusher thread writes the buffer in batches and fsyncs according to the
//! [`FsyncPolicy`]; with [`FsyncPolicy::EveryRecord`] appenders wait for
//! their record to be durable, and concurrent appenders share one fsync
//! (group commit). When the buffer exceeds [`AuditConfig::max_pending_bytes`]
//! appenders wait (back-pressure) instead of growing memory without bound.
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

use super::event::{Actor, AuditEvent, Entry, Severity};
use super::record::{self, GENESIS, LineError, Prepared};
use super::{AuditError, CHECKPOINT_CONTEXT};
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
    pub(crate) max_pending_bytes: usize,
    pub(crate) retry_every: Duration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            fsync: FsyncPolicy::EveryBatch,
            fail_mode: FailMode::Closed,
            checkpoint_every: 1000,
            batch_delay: Duration::from_millis(2),
            max_pending_bytes: 8 * 1024 * 1024,
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

    /// Buffered bytes above which appenders wait for the flusher.
    /// Default: 8 MiB.
    pub fn max_pending_bytes(&mut self, bytes: usize) -> &mut Self {
        self.max_pending_bytes = bytes.max(4096);
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

struct State {
    next_seq: u64,
    head: [u8; 32],
    since_checkpoint: u64,
    pending: Vec<u8>,
    pending_last_seq: u64,
    durable_seq: u64,
    failure: Option<Failure>,
    closing: bool,
    closed: bool,
    /// Set by `flush`: fsync at the next opportunity whatever the policy.
    sync_requested: bool,
    /// The flusher is asleep waiting for work. Appenders only signal it then
    /// (or when a batch is full): while it gathers a batch, a signal per
    /// append would cut every batch down to one record.
    flusher_idle: bool,
}

#[derive(Clone)]
struct Failure {
    error: String,
    since: Instant,
    refused: u64,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the flusher.
    work: Condvar,
    /// Wakes appenders waiting for durability, space or a failure.
    progress: Condvar,
    config: AuditConfig,
    key: SigningKey,
    path: PathBuf,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the chain half-updated
        // (state is only written after the line is complete), so a poisoned
        // lock is still consistent.
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

struct Handle {
    shared: Arc<Shared>,
    flusher: Mutex<Option<std::thread::JoinHandle<()>>>,
    open_report: Mutex<OpenReport>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        let _ = close_inner(&self.shared, &self.flusher);
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
        log.append_internal(Entry::new(&LogEvent::Opened {
            version: env!("CARGO_PKG_VERSION"),
            host_key_id: log.handle.shared.key.id().to_string(),
            host_public_key: log.handle.shared.key.public().to_hex(),
            fsync: config.fsync,
            fail_mode: config.fail_mode,
            checkpoint_every: config.checkpoint_every,
            existing_records: scan.records,
        }))?;
        if let Some((offset, bytes)) = report.torn_tail {
            log.append_internal(Entry::new(&LogEvent::Recovered {
                reason: "torn last line (the writer crashed mid-write); it was cut off".into(),
                torn_offset: Some(offset),
                torn_bytes: Some(bytes),
                last_seq: scan.records,
            }))?;
        } else if report.unclean_shutdown {
            log.append_internal(Entry::new(&LogEvent::Recovered {
                reason: "the previous writer stopped without a closing checkpoint".into(),
                torn_offset: None,
                torn_bytes: None,
                last_seq: scan.records,
            }))?;
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
                head,
                since_checkpoint: 0,
                pending: Vec::with_capacity(64 * 1024),
                pending_last_seq: existing,
                durable_seq: existing,
                failure: None,
                closing: false,
                closed: false,
                sync_requested: false,
                flusher_idle: false,
            }),
            work: Condvar::new(),
            progress: Condvar::new(),
            config,
            key,
            path,
        });
        let flusher = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("forgeone-audit".into())
                .spawn(move || flusher(shared, storage, storage_len))
                .expect("spawn the audit flusher thread")
        };
        AuditLog {
            handle: Arc::new(Handle {
                shared,
                flusher: Mutex::new(Some(flusher)),
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
    /// Fails with [`AuditError::Unavailable`] while the log cannot be
    /// written and [`AuditError::Closed`] after [`AuditLog::close`].
    pub fn append(&self, entry: Entry) -> Result<u64, AuditError> {
        debug_assert!(
            !entry.kind.starts_with("audit."),
            "audit.* kinds are reserved for the log itself"
        );
        self.append_internal(entry)
    }

    fn append_internal(&self, entry: Entry) -> Result<u64, AuditError> {
        let shared = &self.handle.shared;
        let prepared = Prepared::new(
            entry.kind,
            entry.actor.as_ref(),
            &entry.subjects,
            &entry.details,
        );
        let seq = {
            let mut state = shared.lock();
            loop {
                if state.closed || state.closing {
                    return Err(AuditError::Closed);
                }
                if let Some(failure) = &mut state.failure {
                    failure.refused += 1;
                    return Err(AuditError::Unavailable {
                        path: shared.path.clone(),
                        cause: failure.error.clone(),
                    });
                }
                if state.pending.len() < shared.config.max_pending_bytes {
                    break;
                }
                state = shared
                    .progress
                    .wait(state)
                    .unwrap_or_else(|p| p.into_inner());
            }
            let seq = push_record(shared, &mut state, &prepared);
            state.since_checkpoint += 1;
            if state.since_checkpoint >= shared.config.checkpoint_every {
                push_checkpoint(shared, &mut state, CheckpointReason::Periodic);
            }
            if state.flusher_idle || state.pending.len() >= FULL_BATCH {
                state.flusher_idle = false;
                shared.work.notify_one();
            }
            if shared.config.fsync == FsyncPolicy::EveryRecord {
                while state.durable_seq < seq {
                    if let Some(failure) = &state.failure {
                        return Err(AuditError::Unavailable {
                            path: shared.path.clone(),
                            cause: failure.error.clone(),
                        });
                    }
                    state = shared
                        .progress
                        .wait(state)
                        .unwrap_or_else(|p| p.into_inner());
                }
            }
            seq
        };
        trace_event(&entry, seq);
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
            return Err(AuditError::Unavailable {
                path: shared.path.clone(),
                cause: failure.error.clone(),
            });
        }
        let seq = push_checkpoint(shared, &mut state, CheckpointReason::Requested);
        shared.work.notify_one();
        Ok(seq)
    }

    /// Waits until every record appended so far is written and fsynced.
    pub fn flush(&self) -> Result<(), AuditError> {
        let shared = &self.handle.shared;
        let mut state = shared.lock();
        let target = state.next_seq - 1;
        state.sync_requested = true;
        shared.work.notify_one();
        while state.durable_seq < target {
            if let Some(failure) = &state.failure {
                return Err(AuditError::Unavailable {
                    path: shared.path.clone(),
                    cause: failure.error.clone(),
                });
            }
            if state.closed {
                break;
            }
            let (next, _) = shared
                .progress
                .wait_timeout(state, Duration::from_millis(50))
                .unwrap_or_else(|p| p.into_inner());
            state = next;
            shared.work.notify_one();
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
            (Some(failure), FailMode::Closed) => Err(AuditError::Unavailable {
                path: shared.path.clone(),
                cause: failure.error.clone(),
            }),
        }
    }

    /// Sequence number of the last record appended.
    pub fn last_seq(&self) -> u64 {
        self.handle.shared.lock().next_seq - 1
    }

    /// Writes the closing checkpoint, flushes, fsyncs and stops the flusher.
    /// Appends after this fail with [`AuditError::Closed`].
    pub fn close(&self) -> Result<CloseSummary, AuditError> {
        close_inner(&self.handle.shared, &self.handle.flusher)
    }
}

/// Buffered bytes at which the flusher stops gathering and writes.
const FULL_BATCH: usize = 256 * 1024;

/// Encodes one record into the pending buffer; returns its sequence number.
fn push_record(shared: &Shared, state: &mut State, prepared: &Prepared) -> u64 {
    let _ = shared;
    let seq = state.next_seq;
    let ts = chrono::Utc::now();
    let head = state.head;
    state.head = prepared.encode(seq, ts, &head, &mut state.pending);
    state.next_seq += 1;
    state.pending_last_seq = seq;
    seq
}

/// The message a checkpoint signs: a domain separator, the sequence number
/// it covers (big-endian) and the chain head (the hash of that record).
pub(crate) fn checkpoint_message(covers: u64, head: &[u8; 32]) -> Vec<u8> {
    let mut message = Vec::with_capacity(CHECKPOINT_CONTEXT.len() + 40);
    message.extend_from_slice(CHECKPOINT_CONTEXT);
    message.extend_from_slice(&covers.to_be_bytes());
    message.extend_from_slice(head);
    message
}

/// Appends a checkpoint record signing the current head.
fn push_checkpoint(shared: &Shared, state: &mut State, reason: CheckpointReason) -> u64 {
    let covers = state.next_seq - 1;
    let head = state.head;
    let signature = shared.key.sign(&checkpoint_message(covers, &head));
    let details = serde_json::json!({
        "reason": reason,
        "covers": covers,
        "head": hex::encode(head),
        "key_id": shared.key.id(),
        "signature": hex::encode(signature),
    });
    let prepared = Prepared::new(
        "audit.checkpoint",
        Some(&Actor::host()),
        &Default::default(),
        &details,
    );
    state.since_checkpoint = 0;
    push_record(shared, state, &prepared)
}

fn trace_event(entry: &Entry, seq: u64) {
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
                details = %entry.details,
                "{}", entry.kind
            )
        };
    }
    match entry.severity {
        Severity::Info => emit!(info),
        Severity::Warn => emit!(warn),
        Severity::Error => emit!(error),
    }
}

/// The flusher thread: writes batches, fsyncs by policy, handles failure.
fn flusher(shared: Arc<Shared>, mut storage: Box<dyn AuditStorage>, mut good_len: u64) {
    let config = shared.config.clone();
    let mut written_seq = shared.lock().durable_seq;
    let mut last_sync = Instant::now();
    loop {
        let (batch, batch_last, sync_requested, closing) = {
            let mut state = shared.lock();
            loop {
                let interval_due = matches!(config.fsync, FsyncPolicy::Interval(every) if written_seq > state.durable_seq && last_sync.elapsed() >= every);
                if !state.pending.is_empty()
                    || state.closing
                    || state.sync_requested
                    || interval_due
                {
                    break;
                }
                let wait = match config.fsync {
                    FsyncPolicy::Interval(every) if written_seq > state.durable_seq => every
                        .saturating_sub(last_sync.elapsed())
                        .max(Duration::from_millis(1)),
                    _ => Duration::from_secs(3600),
                };
                state.flusher_idle = true;
                state = shared
                    .work
                    .wait_timeout(state, wait)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
                state.flusher_idle = false;
            }
            // Let a batch gather (not when a writer waits for durability:
            // group commit already gathers while the previous fsync runs).
            if config.fsync != FsyncPolicy::EveryRecord
                && !state.closing
                && !state.sync_requested
                && !config.batch_delay.is_zero()
                && state.pending.len() < FULL_BATCH
            {
                state = shared
                    .work
                    .wait_timeout(state, config.batch_delay)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            let batch = std::mem::take(&mut state.pending);
            let sync_requested = std::mem::take(&mut state.sync_requested);
            (batch, state.pending_last_seq, sync_requested, state.closing)
        };

        let mut result = Ok(());
        if !batch.is_empty() {
            result = storage.write_all(&batch);
        }
        let must_sync = match config.fsync {
            FsyncPolicy::EveryRecord | FsyncPolicy::EveryBatch => !batch.is_empty(),
            FsyncPolicy::Interval(every) => last_sync.elapsed() >= every,
        } || sync_requested
            || closing;
        if result.is_ok() && must_sync {
            result = storage.sync();
            last_sync = Instant::now();
        }

        let mut state = shared.lock();
        match result {
            Ok(()) => {
                if !batch.is_empty() {
                    written_seq = batch_last;
                    good_len += batch.len() as u64;
                }
                if must_sync {
                    state.durable_seq = written_seq;
                }
                if let Some(failure) = state.failure.take() {
                    tracing::warn!(target: "forgeone::audit", error = %failure.error, "audit log writable again");
                    // Record the outage; done outside the lock by pushing
                    // directly (the chain is ours to extend here).
                    let event = LogEvent::Resumed {
                        error: failure.error,
                        outage_ms: u64::try_from(failure.since.elapsed().as_millis())
                            .unwrap_or(u64::MAX),
                        refused_records: failure.refused,
                    };
                    let entry = Entry::new(&event).actor(Actor::host());
                    let prepared = Prepared::new(
                        entry.kind,
                        entry.actor.as_ref(),
                        &entry.subjects,
                        &entry.details,
                    );
                    push_record(&shared, &mut state, &prepared);
                    state.since_checkpoint += 1;
                }
                shared.progress.notify_all();
                if state.closing && state.pending.is_empty() {
                    state.closed = true;
                    shared.progress.notify_all();
                    return;
                }
            }
            Err(error) => {
                // Cut off anything partially written, keep the batch in front
                // of newer records, refuse new work, and retry.
                drop(state);
                let truncated = storage.truncate(good_len).is_ok();
                let mut state = shared.lock();
                if !batch.is_empty() {
                    let newer = std::mem::take(&mut state.pending);
                    state.pending = batch;
                    state.pending.extend_from_slice(&newer);
                }
                let message = if truncated {
                    error.to_string()
                } else {
                    format!("{error} (and cutting back the partial write failed)")
                };
                if state.failure.is_none() {
                    tracing::error!(target: "forgeone::audit", path = %shared.path.display(), error = %message, "audit log write failed; refusing new records until it recovers");
                    state.failure = Some(Failure {
                        error: message,
                        since: Instant::now(),
                        refused: 0,
                    });
                }
                if closing {
                    // Give up: the log cannot be closed cleanly.
                    state.closed = true;
                    shared.progress.notify_all();
                    return;
                }
                shared.progress.notify_all();
                let _ = shared.work.wait_timeout(state, config.retry_every);
            }
        }
    }
}

fn close_inner(
    shared: &Arc<Shared>,
    flusher: &Mutex<Option<std::thread::JoinHandle<()>>>,
) -> Result<CloseSummary, AuditError> {
    let Some(thread) = flusher.lock().unwrap_or_else(|p| p.into_inner()).take() else {
        return Err(AuditError::Closed);
    };
    {
        let mut state = shared.lock();
        if state.failure.is_none() {
            push_checkpoint(shared, &mut state, CheckpointReason::Shutdown);
        }
        state.closing = true;
        shared.work.notify_one();
    }
    let _ = thread.join();
    let state = shared.lock();
    if let Some(failure) = &state.failure {
        return Err(AuditError::Unavailable {
            path: shared.path.clone(),
            cause: failure.error.clone(),
        });
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
