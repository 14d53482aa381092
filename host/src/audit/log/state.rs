//! What appenders and the writer thread share: the queue of records waiting
//! to be written, the chain head, how far the log is durable, and the
//! current write failure. One mutex guards it; a condition variable wakes
//! the writer (work); the appenders are woken by a condition variable
//! (blocking callers) and a `tokio::sync::Notify` (async callers) together
//! (progress). The log's health is published on a watch channel.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use serde::Serialize;

use super::config::AuditConfig;
use super::health::AuditHealth;
use crate::audit::event::{Entry, RECORD_BYTES};
use crate::audit::{AuditError, cut_back_note};
use crate::keys::SigningKey;

/// Why a checkpoint was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum CheckpointReason {
    Periodic,
    Requested,
    Shutdown,
    /// Seals the active segment before it rotates.
    Rotate,
}

/// A record waiting for the writer, its sequence number and time fixed.
pub(super) enum Queued {
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
    /// The first record of a new active segment: it signs the head of the
    /// sealed segment before it.
    SegmentStart {
        seq: u64,
        ts: chrono::DateTime<chrono::Utc>,
    },
}

/// The state behind [`Shared::lock`].
pub(super) struct State {
    pub(super) next_seq: u64,
    pub(super) since_checkpoint: u64,
    pub(super) queue: Vec<Queued>,
    /// Estimated bytes of the records in `queue`.
    pub(super) queued_bytes: u64,
    /// Estimated bytes of the records the writer took and has not written.
    pub(super) writing_bytes: u64,
    /// Hash of the last encoded record (maintained by the writer).
    pub(super) head: [u8; 32],
    pub(super) durable_seq: u64,
    pub(super) failure: Option<Failure>,
    pub(super) closing: bool,
    pub(super) closed: bool,
    /// Set by `flush`: fsync at the next opportunity whatever the policy.
    pub(super) sync_requested: bool,
    /// The writer is asleep waiting for work. Appenders only signal it then
    /// (or when a batch is full): while it gathers a batch, a signal per
    /// append would cut every batch down to one record.
    pub(super) writer_idle: bool,
    /// The checkpoint of a rotation queued and not yet carried out.
    pub(super) rotate_queued: Option<u64>,
    /// Sequence number of the active segment's first record (maintained
    /// by the writer).
    pub(super) active_first_seq: u64,
}

/// Why the log cannot be written, since when, and how many records it
/// refused meanwhile.
#[derive(Clone)]
pub(super) struct Failure {
    /// The write or fsync error.
    pub(super) error: Arc<std::io::Error>,
    /// Why cutting the partial write back off failed, when it did.
    pub(super) cut_back_failed: Option<Arc<std::io::Error>>,
    pub(super) since: Instant,
    pub(super) refused: u64,
}

/// The error as the log states it (in tracing and in `audit.resumed`).
impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.error, cut_back_note(&self.cut_back_failed))
    }
}

/// The part of a log that its handles and its writer thread share.
pub(super) struct Shared {
    state: Mutex<State>,
    /// Wakes the writer.
    pub(super) work: Condvar,
    /// Wakes blocking appenders waiting for durability, space or a
    /// failure (see [`Shared::wake_appenders`]).
    pub(super) progress: Condvar,
    /// Wakes async appenders, at the same moments.
    pub(super) progress_async: tokio::sync::Notify,
    /// The log's health, for whoever watches it.
    pub(super) health: tokio::sync::watch::Sender<AuditHealth>,
    pub(super) config: AuditConfig,
    pub(super) key: SigningKey,
    pub(super) path: PathBuf,
    /// The tracing subscriber current when the log was opened.
    pub(super) dispatch: tracing::Dispatch,
}

impl Shared {
    /// The shared state of a log whose file holds `existing` records ending
    /// in `head`. Captures the current tracing subscriber for the writer.
    pub(super) fn new(
        path: PathBuf,
        key: SigningKey,
        config: AuditConfig,
        existing: u64,
        head: [u8; 32],
    ) -> Shared {
        Shared {
            state: Mutex::new(State {
                next_seq: existing + 1,
                since_checkpoint: 0,
                queue: Vec::with_capacity(1024),
                queued_bytes: 0,
                writing_bytes: 0,
                head,
                durable_seq: existing,
                failure: None,
                closing: false,
                closed: false,
                sync_requested: false,
                writer_idle: false,
                rotate_queued: None,
                active_first_seq: existing + 1,
            }),
            work: Condvar::new(),
            progress: Condvar::new(),
            progress_async: tokio::sync::Notify::new(),
            health: tokio::sync::watch::Sender::new(AuditHealth::Writable),
            config,
            key,
            path,
            dispatch: tracing::dispatcher::get_default(|d| d.clone()),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the state consistent before it can
        // panic (nothing in them panics on input), so a poisoned lock is
        // still usable.
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Wakes every appender waiting for progress, blocking or async.
    pub(super) fn wake_appenders(&self) {
        self.progress.notify_all();
        self.progress_async.notify_waiters();
    }

    /// Publishes the log's health (watchers are woken only on a change).
    pub(super) fn set_health(&self, health: AuditHealth) {
        self.health.send_if_modified(|current| {
            let changed = *current != health;
            *current = health;
            changed
        });
    }

    /// Whether an appender may queue a record of `size` estimated bytes
    /// now: fewer than `max_pending` records queued, and the bytes waiting
    /// stay within `max_pending_bytes` (a record is always taken when
    /// nothing else waits). Refuses while the log is closed or failing.
    pub(super) fn has_room(&self, state: &mut State, size: u64) -> Result<bool, AuditError> {
        if state.closed || state.closing {
            return Err(AuditError::Closed);
        }
        if let Some(failure) = &mut state.failure {
            failure.refused += 1;
            return Err(self.unavailable(failure));
        }
        let waiting = state.queued_bytes + state.writing_bytes;
        let room = state.queue.len() < self.config.max_pending
            && (waiting == 0 || waiting.saturating_add(size) <= self.config.max_pending_bytes);
        if !room {
            // Do not let the writer gather a batch while appenders wait.
            self.work.notify_one();
        }
        Ok(room)
    }

    /// Whether record `seq` is durable yet; an error once the log failed.
    pub(super) fn is_durable(&self, state: &State, seq: u64) -> Result<bool, AuditError> {
        if state.durable_seq >= seq {
            return Ok(true);
        }
        match &state.failure {
            Some(failure) => Err(self.unavailable(failure)),
            None if state.closed => Err(AuditError::Closed),
            None => Ok(false),
        }
    }

    /// Whether everything up to `target` is durable (or the log is closed):
    /// what `flush` waits for; an error once the log failed.
    pub(super) fn is_flushed(&self, state: &State, target: u64) -> Result<bool, AuditError> {
        if let Some(failure) = &state.failure {
            return Err(self.unavailable(failure));
        }
        Ok(state.durable_seq >= target || state.closed)
    }

    pub(super) fn unavailable(&self, failure: &Failure) -> AuditError {
        AuditError::Unavailable {
            path: self.path.clone(),
            cause: copy_io(&failure.error),
            cut_back_failed: failure.cut_back_failed.as_ref().map(copy_io),
        }
    }
}

/// One caller's copy of an I/O error the log keeps: the same OS error, or
/// an error of the same kind that wraps the original.
fn copy_io(error: &Arc<std::io::Error>) -> std::io::Error {
    match error.raw_os_error() {
        Some(code) => std::io::Error::from_raw_os_error(code),
        None => std::io::Error::new(error.kind(), Arc::clone(error)),
    }
}

/// Queued records at which the writer stops gathering a batch.
pub(super) const FULL_BATCH: usize = 4096;

/// Queues a checkpoint covering everything queued so far.
pub(super) fn queue_checkpoint(state: &mut State, reason: CheckpointReason) -> u64 {
    let seq = state.next_seq;
    state.next_seq += 1;
    state.since_checkpoint = 0;
    state.queue.push(Queued::Checkpoint {
        seq,
        ts: chrono::Utc::now(),
        reason,
    });
    // A checkpoint: a record with a signature, a key id and two hashes.
    state.queued_bytes += 2 * RECORD_BYTES as u64;
    seq
}

/// Queues a rotation: the checkpoint that seals the active segment, then
/// the first record of the next. Returns the checkpoint's sequence number
/// (that of the rotation already queued, if one is).
pub(super) fn queue_rotation(state: &mut State) -> u64 {
    if let Some(seq) = state.rotate_queued {
        return seq;
    }
    let seq = queue_checkpoint(state, CheckpointReason::Rotate);
    state.rotate_queued = Some(seq);
    state.queue.push(Queued::SegmentStart {
        seq: state.next_seq,
        ts: chrono::Utc::now(),
    });
    state.next_seq += 1;
    state.queued_bytes += 2 * RECORD_BYTES as u64;
    seq
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copied_io_error_keeps_its_os_code_or_wraps_the_original() {
        let os = Arc::new(std::io::Error::from_raw_os_error(28));
        assert_eq!(copy_io(&os).raw_os_error(), Some(28));

        let custom = Arc::new(std::io::Error::other("mirror is gone"));
        let copy = copy_io(&custom);
        assert_eq!(copy.kind(), std::io::ErrorKind::Other);
        assert_eq!(copy.to_string(), "mirror is gone");
        let inner = copy
            .get_ref()
            .and_then(|e| e.downcast_ref::<Arc<std::io::Error>>());
        assert!(inner.is_some_and(|e| Arc::ptr_eq(e, &custom)));
    }
}
