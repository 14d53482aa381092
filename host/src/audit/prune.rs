//! Removing old segments, on the record: what [`AuditLog::prune`]
//! (and `forgeone audit prune`) takes and reports.
//!
//! Pruning removes (or moves away) the oldest sealed segments, never the
//! active one, and never a segment in the middle. Before any file is
//! touched it appends an `audit.pruned` record, sealed at once by a
//! checkpoint, that states what goes:
//!
//! ```text
//! {"removed":[{"segment":"00000000000000000001.jsonl","first_seq":1,"last_seq":5210}],
//!  "first_seq":1,"last_seq":5210,"head":"<hash of record 5210>","moved_to":null}
//! ```
//!
//! `head` is the hash of the last removed record: the `prev` of the first
//! record that remains, which is an `audit.segment` record signing that
//! same head. So [`verify_file`](super::verify_file) can start at the first
//! remaining record and still prove the log is whole: the records before
//! it were removed on the record, ending in exactly that hash. Without a
//! matching `audit.pruned` record, missing oldest segments are reported as
//! removed records.
//!
//! [`AuditLog::prune`]: super::AuditLog::prune

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

/// Which sealed segments [`AuditLog::prune`](super::AuditLog::prune)
/// removes (always the oldest ones, never the active segment).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PruneRule {
    /// Keep the newest `n` sealed segments; remove the older ones.
    KeepSegments(usize),
    /// Remove the segments whose every record is before sequence number
    /// `seq`.
    Before(u64),
    /// Remove the segments sealed longer ago than this (the time of the
    /// first record of the segment after each).
    OlderThan(Duration),
}

/// One removed segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PrunedSegment {
    /// Its file name (`<first seq, 20 digits>.jsonl`).
    pub segment: String,
    /// Its first record.
    pub first_seq: u64,
    /// Its last record.
    pub last_seq: u64,
}

/// What [`AuditLog::prune`](super::AuditLog::prune) removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PruneSummary {
    /// The segments removed, oldest first (empty when nothing matched; no
    /// record is then written).
    pub removed: Vec<PrunedSegment>,
    /// Sequence number of the `audit.pruned` record (0 when nothing was
    /// removed).
    pub record_seq: u64,
    /// Hash (hex) of the last removed record.
    pub head: String,
    /// Where the segments were moved, when they were moved rather than
    /// deleted.
    pub moved_to: Option<PathBuf>,
}
