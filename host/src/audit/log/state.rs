//! What appenders and the writer thread share: the queue of records waiting
//! to be written, the chain head, how far the log is durable, and the
//! current write failure. One mutex guards it; two condition variables wake
//! the writer (work) and the appenders (progress).

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use serde::Serialize;

use super::config::AuditConfig;
use crate::audit::event::Entry;
use crate::audit::{AuditError, cut_back_note};
use crate::keys::SigningKey;

/// Why a checkpoint was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum CheckpointReason {
    Periodic,
    Requested,
    Shutdown,
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
}

/// The state behind [`Shared::lock`].
pub(super) struct State {
    pub(super) next_seq: u64,
    pub(super) since_checkpoint: u64,
    pub(super) queue: Vec<Queued>,
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
    /// Wakes appenders waiting for durability, space or a failure.
    pub(super) progress: Condvar,
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
