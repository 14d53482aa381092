//! The tamper-evident audit log every boot, runtime and scheduling event is
//! written to.
//!
//! - **Events** ([`AuditEvent`], [`Entry`]): each part of the kernel owns a
//!   typed enum of its events; the log sees their kind (`boot.*`,
//!   `container.*`, `schedule.*`, `policy.*`, `audit.*`), details, actor and
//!   subjects. Guest-supplied text is escaped ([`Untrusted`]) before it enters
//!   a record.
//! - **Records** ([`Record`]): one JSON object per line with a gap-free
//!   sequence number, a UTC timestamp, the previous record's hash and its own
//!   (`blake3(prev || exact bytes)`).
//! - **Checkpoints**: every N records and at close, a record signing the chain
//!   head with the host's Ed25519 key, so truncation and rewriting are
//!   detectable against the last signature.
//! - **Writer** ([`AuditLog`]): concurrent appends without a global stall,
//!   batched writes with a configurable [`FsyncPolicy`], torn-tail recovery
//!   on open, and fail-closed behaviour when the log cannot be written.
//! - **Signed head** ([`SignedHead`]): the latest checkpoint, kept outside
//!   the log (and by a witness), so that cutting the log back to an earlier
//!   checkpoint is detected.
//! - **Segments**: the log rotates at a size
//!   ([`AuditConfig::segment_size`]); old segments are removed or moved
//!   away, on the record, by [`AuditLog::prune`]. See the format below.
//! - **Reading**: [`verify_file`], [`export`], [`Follower`], across
//!   segments.
//! - **Observers** ([`AuditObserver`]): see every record as it goes on the
//!   chain (the metrics are a projection of the log this way).
//! - **Tracing**: every appended event is also a `tracing` event with target
//!   `forgeone::audit`.
//!
//! # Format: a log in segments
//!
//! A record is one JSON line (see `record`'s docs: `blake3(prev || exact
//! bytes)` chains each to the one before; checkpoints sign the head). The
//! log at `state/audit.jsonl` is a sequence of files, one chain across
//! them:
//!
//! ```text
//! state/audit.segments/00000000000000000001.jsonl   records 1..=5210, sealed
//! state/audit.segments/00000000000000005211.jsonl   records 5211..=10502, sealed
//! state/audit.jsonl                                 records 10503.. (active)
//! state/audit.lock                                  the writer's lock
//! state/audit.head.json                             the signed head (optional)
//! ```
//!
//! - **Rotation.** When the active file reaches the segment size, the
//!   writer appends a checkpoint with `"reason":"rotate"` (it signs the
//!   head, as every checkpoint does), makes it durable, renames the file to
//!   `audit.segments/<first seq, 20 digits>.jsonl`, and starts a new active
//!   file whose first record is `audit.segment`:
//!
//!   ```text
//!   {"seq":10503,...,"kind":"audit.segment","details":{"previous_segment":"00000000000000005211.jsonl",
//!    "previous_first_seq":5211,"covers":10502,"head":"<hash of 10502>","key_id":"..","public_key":"..",
//!    "signature":"<Ed25519 over the checkpoint message of (10502, head)>"},"prev":"<hash of 10502>","hash":".."}
//!   ```
//!
//!   It is the signed head of the segment before: it verifies like a
//!   checkpoint (same message, same key) and its `prev` is that head, so
//!   the chain runs on and a range of segments can be verified on its own,
//!   anchored by a signature. Sequence numbers never restart.
//! - **Pruning.** [`AuditLog::prune`] (`forgeone audit prune`) removes the
//!   oldest sealed segments after an `audit.pruned` record, sealed by a
//!   checkpoint, states what goes: each segment's name, first and last
//!   sequence numbers, and the hash of the last removed record (see
//!   [`PruneRule`]). [`verify_file`] accepts a log that starts after seq 1
//!   only when such a record accounts for the gap; a removed middle segment
//!   is a gap in the sequence, reported as removed records.
//! - **Opening** reads the active file back from its end to its last
//!   checkpoint (or `audit.segment` record) and checks that tail: its cost
//!   is the records since the last checkpoint, not the size of the log. A
//!   crash mid-rotation (the active file missing, or holding only a torn
//!   line) is recovered by starting the next segment after the last sealed
//!   one, and recorded (`audit.recovered`).
//! - **Migration.** A log written before segments existed is one file with
//!   no segments directory: it is opened, verified and exported as it is,
//!   and becomes the first segment (`00000000000000000001.jsonl`) when it
//!   first rotates. Its lock moves from the file itself to `audit.lock`.
//! - **Strictness.** Every name in the segments directory not starting
//!   with `.` must be a segment file; each segment must begin with the
//!   record its name states and (but for the log's first) with
//!   `audit.segment`; anything else is an error naming the file.

mod atomic;
mod cursor;
mod event;
mod export;
mod follow;
mod head;
mod lines;
mod lock;
mod log;
mod observe;
mod prune;
mod record;
mod segments;
mod verify;

use std::path::PathBuf;

pub(crate) use atomic::write_atomic;
pub(crate) use cursor::LogCursor;
pub use event::{
    Actor, AuditEvent, CATEGORIES, Entry, Severity, Subjects, Untrusted, escape_untrusted,
    is_valid_kind,
};
pub use export::{ExportFilter, ExportFormat, ExportSummary, export, kind_matches};
pub use follow::{Followed, Follower};
pub use head::{HeadError, SignedHead, head_file_for};
pub(crate) use lock::lock_waiting;
pub use log::{
    AuditConfig, AuditHealth, AuditLog, AuditStorage, CloseSummary, DEFAULT_SEGMENT_BYTES,
    FailMode, FsyncPolicy, OpenReport,
};
pub use observe::{AuditObserver, Observed};
pub use prune::{PruneRule, PruneSummary, PrunedSegment};
pub use record::{LineError, MAX_LINE, Record};
pub use segments::{Segment, list_segments, segments_dir_for};
pub use verify::{Damage, VerifyFailure, VerifyOptions, VerifyReport, verify_file};

/// Errors of the audit log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The log file could not be read or written.
    #[error("audit log {path}: {source}")]
    Io {
        /// The log file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Another process (or another open log) has the log open for
    /// writing, and it was not released within
    /// [`AuditConfig::lock_timeout`].
    #[error("{}", locked_message(.path, .waited))]
    Locked {
        /// The log file.
        path: PathBuf,
        /// How long opening waited for the lock (the lock timeout; zero
        /// when it did not wait).
        waited: std::time::Duration,
    },
    /// The existing log is damaged somewhere other than a torn last line.
    #[error("audit log {path} is corrupt at seq {seq}: {reason}")]
    Corrupt {
        /// The log file.
        path: PathBuf,
        /// The first bad sequence number.
        seq: u64,
        /// What is wrong.
        #[source]
        reason: Corruption,
    },
    /// The log cannot be written right now; new work must be refused.
    #[error(
        "audit log {path} cannot be written ({cause}{}); refusing to run unaudited",
        cut_back_note(.cut_back_failed)
    )]
    Unavailable {
        /// The log file.
        path: PathBuf,
        /// The write or fsync error that started the outage (every call
        /// refused during it gets its own copy: the same OS error, or the
        /// same kind wrapping the original).
        #[source]
        cause: std::io::Error,
        /// Why cutting the partial write back off failed, when it did (the
        /// file may then hold part of a record after its last good one).
        cut_back_failed: Option<std::io::Error>,
    },
    /// A signed head file is not a valid head document.
    #[error("signed head {path}: {reason}")]
    Head {
        /// The head file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        reason: HeadError,
    },
    /// A file of a segmented log is not what its place says it must be
    /// (a stray or misnamed file among the segments, a segment that does
    /// not start where its name says, a prune that cannot be carried out).
    #[error("audit log segment {path}: {reason}")]
    Segment {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The log was closed.
    #[error("audit log is closed")]
    Closed,
    /// Verification found damage.
    #[error("verification failed at {0}")]
    Verify(VerifyFailure),
    /// Writing an export's output failed (the log itself is fine).
    #[error("writing the export: {0}")]
    Output(#[source] std::io::Error),
}

/// The message of [`AuditError::Locked`]: whether opening waited, and how
/// long.
fn locked_message(path: &std::path::Path, waited: &std::time::Duration) -> String {
    if waited.is_zero() {
        format!("audit log {} is in use by another process", path.display())
    } else {
        format!(
            "audit log {} is still in use by another process after waiting {} for it (the lock timeout)",
            path.display(),
            humantime::format_duration(*waited)
        )
    }
}

/// What [`AuditError::Unavailable`] adds to its message when the partial
/// write could not be cut back off.
fn cut_back_note<E>(cut_back_failed: &Option<E>) -> &'static str {
    match cut_back_failed {
        Some(_) => " (and cutting back the partial write failed)",
        None => "",
    }
}

/// What is wrong with an existing log that refuses to open
/// ([`AuditError::Corrupt`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Corruption {
    /// The line is not a well-formed record, or its bytes do not match its
    /// hash.
    #[error(transparent)]
    Line(#[from] LineError),
    /// The record's sequence number is not the next one.
    #[error("found sequence number {found} where {expected} was expected")]
    OutOfSequence {
        /// The sequence number the record states.
        found: u64,
        /// The sequence number that belongs there.
        expected: u64,
    },
    /// The record does not chain to the record before it.
    #[error("does not chain to the record before it")]
    BrokenLink,
    /// The log ends before the signed head kept in its head file: it was
    /// cut back (or replaced) after that head was signed.
    #[error(
        "the log ends at seq {last_seq}, before its signed head at seq {head_seq} (in {}, sealed by the checkpoint at seq {}): it was cut back or replaced; check it with `forgeone audit verify --head`, and move the head file away only to start a new log on purpose",
        head_file.display(), head_seq + 1
    )]
    EndsBeforeHead {
        /// The last record in the file.
        last_seq: u64,
        /// The sequence number of the signed head.
        head_seq: u64,
        /// The head file.
        head_file: PathBuf,
    },
    /// The record at the signed head's sequence number has another hash:
    /// the log was rewritten from there, or is another log.
    #[error(
        "the record has hash {found}, not {expected} as the signed head in {} states: the log was rewritten or replaced",
        head_file.display()
    )]
    NotTheHead {
        /// The record's hash (hex).
        found: String,
        /// The signed head's hash (hex).
        expected: String,
        /// The head file.
        head_file: PathBuf,
    },
}

#[cfg(test)]
mod tests {
    use super::AuditError;

    #[test]
    fn unavailable_names_its_cause_and_a_failed_cut_back() {
        let error = |cut_back_failed| AuditError::Unavailable {
            path: "audit.jsonl".into(),
            cause: std::io::Error::other("disk full"),
            cut_back_failed,
        };
        assert_eq!(
            error(None).to_string(),
            "audit log audit.jsonl cannot be written (disk full); refusing to run unaudited"
        );
        assert_eq!(
            error(Some(std::io::Error::other("read-only"))).to_string(),
            "audit log audit.jsonl cannot be written (disk full (and cutting back the partial write failed)); refusing to run unaudited"
        );
        let source = std::error::Error::source(&error(None)).map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("disk full"));
    }
}
