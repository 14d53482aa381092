//! How a log is written: when it fsyncs, what happens when it cannot be
//! written, how often it checkpoints, and how the writer batches.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

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

/// Called once when opening a log starts to wait for its lock.
#[derive(Clone)]
pub(crate) struct LockWaitHook(pub(crate) Arc<dyn Fn(&Path) + Send + Sync>);

impl fmt::Debug for LockWaitHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LockWaitHook(..)")
    }
}

/// Settings for an [`AuditLog`](super::AuditLog). Every setter states its default.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AuditConfig {
    pub(crate) fsync: FsyncPolicy,
    pub(crate) fail_mode: FailMode,
    pub(crate) checkpoint_every: u64,
    pub(crate) batch_delay: Duration,
    pub(crate) max_pending: usize,
    pub(crate) max_pending_bytes: u64,
    pub(crate) retry_every: Duration,
    pub(crate) lock_timeout: Duration,
    pub(crate) on_lock_wait: Option<LockWaitHook>,
    pub(crate) head_file: Option<PathBuf>,
    pub(crate) observers: crate::audit::observe::Observers,
    pub(crate) segment_bytes: u64,
}

/// The default size at which the active segment is sealed: 256 MiB.
pub const DEFAULT_SEGMENT_BYTES: u64 = 256 * 1024 * 1024;

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            fsync: FsyncPolicy::EveryBatch,
            fail_mode: FailMode::Closed,
            checkpoint_every: 1000,
            batch_delay: Duration::from_millis(2),
            max_pending: 65_536,
            max_pending_bytes: 16 * 1024 * 1024,
            retry_every: Duration::from_millis(500),
            lock_timeout: Duration::ZERO,
            on_lock_wait: None,
            head_file: None,
            observers: Default::default(),
            segment_bytes: DEFAULT_SEGMENT_BYTES,
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

    /// Bytes of records waiting for the writer (queued, or taken but not
    /// yet written) above which appenders wait. Default: 16 MiB (at least
    /// 64 KiB).
    ///
    /// Records are counted before they are serialised, by an estimate: a
    /// fixed 256 bytes per record (sequence number, time, kind, hashes),
    /// the length of its actor and subjects, and the event's own
    /// [`AuditEvent::size_hint`](crate::audit::AuditEvent::size_hint). A
    /// record larger than the limit is still taken when nothing else is
    /// waiting. Both this and [`AuditConfig::max_pending`] apply: an
    /// appender waits while either is exceeded.
    pub fn max_pending_bytes(&mut self, bytes: u64) -> &mut Self {
        self.max_pending_bytes = bytes.max(64 * 1024);
        self
    }

    /// How often a failed write is retried. Default: 500 ms.
    pub fn retry_every(&mut self, every: Duration) -> &mut Self {
        self.retry_every = every;
        self
    }

    /// How long [`AuditLog::open`](super::AuditLog::open) waits for the
    /// log's lock while another process (or another open log in this one)
    /// holds it. Default: zero, fail at once with
    /// [`AuditError::Locked`](crate::audit::AuditError::Locked). While
    /// waiting, the lock is polled with a short backoff (5 ms doubling up
    /// to 100 ms); on timeout the error names the path and the time
    /// waited. Runs that share a state directory (many one-off
    /// `forgeone run`s from a script) take turns this way; the CLI waits
    /// 30 s by default.
    pub fn lock_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.lock_timeout = timeout;
        self
    }

    /// Called once, with the log's path, when opening starts to wait for
    /// the lock (so a CLI can say that it waits); not called when the lock
    /// is free or [`AuditConfig::lock_timeout`] is zero. Default: none.
    pub fn on_lock_wait(&mut self, hook: impl Fn(&Path) + Send + Sync + 'static) -> &mut Self {
        self.on_lock_wait = Some(LockWaitHook(Arc::new(hook)));
        self
    }

    /// Keeps the log's latest signed head in `path`, outside the log: a
    /// [`SignedHead`](crate::audit::SignedHead) document, written
    /// atomically (temporary file, fsync, rename, fsync of the directory)
    /// once each checkpoint is durable, the closing one included. Opening
    /// the log refuses it with [`AuditError::Corrupt`](crate::audit::AuditError::Corrupt)
    /// when it no longer reaches that head (cut back to an earlier
    /// checkpoint, or rewritten), before anything is appended that could
    /// hide it. A head file that cannot be written makes the log
    /// unavailable, like a failed write. Default: none. The CLI keeps it
    /// beside the log ([`head_file_for`](crate::audit::head_file_for)).
    pub fn head_file(&mut self, path: impl Into<PathBuf>) -> &mut Self {
        self.head_file = Some(path.into());
        self
    }

    /// Adds an observer that sees every record as it goes on the chain,
    /// such as [`telemetry::Metrics`](crate::telemetry::Metrics). Default:
    /// none. Observers run on the writer thread: see
    /// [`AuditObserver`](crate::audit::AuditObserver).
    pub fn observer(&mut self, observer: Arc<dyn crate::audit::AuditObserver>) -> &mut Self {
        self.observers.0.push(observer);
        self
    }

    /// Seals the active segment and starts a new one once it holds at
    /// least `bytes` (checked after each batch the writer writes, so a
    /// segment may exceed it by one batch). Zero never rotates. Default:
    /// [`DEFAULT_SEGMENT_BYTES`] (256 MiB). The CLI sets it with
    /// `--audit-segment-size` (or `FORGEONE_AUDIT_SEGMENT_SIZE`).
    ///
    /// Rotation writes a checkpoint (`"reason":"rotate"`) that seals the
    /// segment, renames the file into the segments directory
    /// ([`segments_dir_for`](crate::audit::segments_dir_for)) under its
    /// first sequence number, and begins a new active file with an
    /// `audit.segment` record that signs the head of the one before, so the
    /// chain runs on across segments. Old segments are removed (or moved
    /// away) only by [`AuditLog::prune`](super::AuditLog::prune), which
    /// records what it removed.
    pub fn segment_size(&mut self, bytes: u64) -> &mut Self {
        self.segment_bytes = bytes;
        self
    }
}
