//! Opening an existing log: lock it, read the active segment back from its
//! end to its last checkpoint, chain-check that tail, and cut off a torn
//! last line (a crash mid-write). Damage in the tail refuses the open.
//!
//! The cost is the tail since the last checkpoint (at most
//! [`AuditConfig::checkpoint_every`](super::AuditConfig::checkpoint_every)
//! records), whatever the size of the log: records before that checkpoint
//! are sealed by its signature and checked by
//! [`verify_file`](crate::audit::verify_file), not on every open. A crash
//! between sealing a segment and starting the next (the active file
//! missing, or holding no complete record) is recovered by starting the
//! next segment after the last sealed one.

use std::fs::File;
use std::io::{Seek as _, SeekFrom};
use std::path::Path;

use super::config::AuditConfig;
use super::events::LogEvent;
use crate::audit::head::SignedHead;
use crate::audit::lines::{Line, LineReader};
use crate::audit::record::{self, GENESIS, LineError, MAX_LINE};
use crate::audit::segments::{
    BackwardLines, complete_len, list_segments, lock_file_for, segment_file_name,
};
use crate::audit::{AuditError, Corruption, lock_waiting};

/// What [`AuditLog::open`](super::AuditLog::open) found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Complete records already in the file.
    pub existing_records: u64,
    /// Bytes of a torn last line that were cut off, and the offset they started at.
    pub torn_tail: Option<(u64, u64)>,
    /// True when the previous writer stopped without a closing checkpoint.
    pub unclean_shutdown: bool,
    /// True when the active segment was missing or held no complete record
    /// while sealed segments exist (a crash while the log rotated): a new
    /// active segment was started after the last sealed one.
    pub rotation_recovered: bool,
}

impl OpenReport {
    /// The `audit.recovered` record this open calls for: a torn tail was cut
    /// off, or the previous writer stopped without its closing checkpoint.
    pub(super) fn recovered_event(&self) -> Option<LogEvent> {
        let last_seq = self.existing_records;
        match self.torn_tail {
            Some((offset, bytes)) => Some(LogEvent::Recovered {
                reason: "torn last line (the writer crashed mid-write); it was cut off".into(),
                torn_offset: Some(offset),
                torn_bytes: Some(bytes),
                last_seq,
            }),
            None if self.rotation_recovered => Some(LogEvent::Recovered {
                reason: "the active segment was missing or empty after a rotation (the writer crashed mid-rotation); a new one was started after the last sealed segment".into(),
                torn_offset: None,
                torn_bytes: None,
                last_seq,
            }),
            None if self.unclean_shutdown => Some(LogEvent::Recovered {
                reason: "the previous writer stopped without a closing checkpoint".into(),
                torn_offset: None,
                torn_bytes: None,
                last_seq,
            }),
            None => None,
        }
    }
}

/// A log opened for appending: locked, its tail chain-checked, any torn
/// tail cut off, positioned at its end.
pub(super) struct Recovered {
    /// The active segment.
    pub(super) file: File,
    /// The lock file, locked for as long as it is open.
    pub(super) lock: File,
    /// Length of the active segment: where the next record goes.
    pub(super) len: u64,
    /// The last record's sequence number (0 for an empty log).
    pub(super) last_seq: u64,
    /// Hash of the last record ([`GENESIS`] for an empty log).
    pub(super) head: [u8; 32],
    /// Sequence number of the active segment's first record (the next
    /// record's, when it holds none).
    pub(super) first_seq: u64,
    /// Set when the active segment must begin with an `audit.segment`
    /// record: the name and first sequence number of the sealed segment
    /// before it.
    pub(super) start_segment: Option<(String, u64)>,
    pub(super) report: OpenReport,
}

/// Opens (or creates) the log at `path`: locks it (waiting for the lock as
/// `config` says), checks the tail of its active segment since the last
/// checkpoint, cuts off a torn last line, and checks that it still reaches
/// its signed head.
pub(super) fn open_file(path: &Path, config: &AuditConfig) -> Result<Recovered, AuditError> {
    let io = |source| AuditError::Io {
        path: path.to_owned(),
        source,
    };
    let lock_path = lock_file_for(path);
    let lock_file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|source| AuditError::Io {
            path: lock_path.clone(),
            source,
        })?;
    lock(&lock_file, path, config)?;
    let segments = list_segments(path)?;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(io)?;
    let head = match &config.head_file {
        Some(head_file) if head_file.exists() => {
            Some((SignedHead::from_file(head_file)?, head_file.as_path()))
        }
        _ => None,
    };
    let (complete, torn) = complete_len(&mut file).map_err(io)?;
    let mut tail = scan_tail(&file, complete, path)?;
    let mut start_segment = None;
    let mut report = OpenReport::default();
    if tail.last.is_none() {
        if let Some(last) = segments.last() {
            // The active segment holds nothing: the log rotated and the
            // writer stopped before the new segment's first record.
            let file = File::open(&last.path).map_err(|source| AuditError::Io {
                path: last.path.clone(),
                source,
            })?;
            let sealed = scan_tail(&file, file.metadata().map_err(io)?.len(), &last.path)?;
            let Some(end) = sealed.last else {
                return Err(AuditError::Segment {
                    path: last.path.clone(),
                    reason: "the last sealed segment holds no complete record".into(),
                });
            };
            start_segment = Some((segment_file_name(last.first_seq), last.first_seq));
            tail = Tail {
                last: Some(end),
                first_seq: Some(end.seq + 1),
                ..sealed
            };
            report.rotation_recovered = true;
        }
    } else if !segments.is_empty() && tail.reached_start && !tail.starts_segment {
        return Err(AuditError::Segment {
            path: path.to_owned(),
            reason: "the active segment does not begin with an `audit.segment` record, though sealed segments precede it".into(),
        });
    }
    let last = tail.last.map_or((0, GENESIS), |l| (l.seq, l.hash));
    if let Some((head, head_file)) = &head {
        check_reaches(path, &segments, &tail, head, head_file)?;
    }
    report.existing_records = last.0;
    report.unclean_shutdown = tail.last.is_some_and(|l| !l.shutdown) && last.0 > 0;
    if torn > 0 {
        if torn > MAX_LINE as u64 + 1 {
            return Err(corrupt(path, last.0 + 1, LineError::TooLong.into()));
        }
        file.set_len(complete).map_err(io)?;
        file.sync_all().map_err(io)?;
        report.torn_tail = Some((complete, torn));
    }
    let len = file.seek(SeekFrom::End(0)).map_err(io)?;
    let first_seq = match tail.first_seq {
        Some(seq) => seq,
        None => first_record_seq(path)?.unwrap_or(last.0 + 1),
    };
    Ok(Recovered {
        file,
        lock: lock_file,
        len,
        last_seq: last.0,
        head: last.1,
        first_seq,
        start_segment,
        report,
    })
}

/// Takes the exclusive lock on the log's lock file, waiting for it as
/// `config` says ([`lock_waiting`]): up to the lock timeout, telling the
/// configured hook once when it starts to wait. Errors name the log.
fn lock(file: &File, path: &Path, config: &AuditConfig) -> Result<(), AuditError> {
    let tell = || {
        if let Some(hook) = &config.on_lock_wait {
            (hook.0)(path);
        }
    };
    match lock_waiting(file, config.lock_timeout, tell) {
        Ok(true) => Ok(()),
        Ok(false) => Err(AuditError::Locked {
            path: path.to_owned(),
            waited: config.lock_timeout,
        }),
        Err(source) => Err(AuditError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// The sequence number of the first record of the file at `path`.
fn first_record_seq(path: &Path) -> Result<Option<u64>, AuditError> {
    let line = crate::audit::segments::first_line(path).map_err(|source| AuditError::Io {
        path: path.to_owned(),
        source,
    })?;
    match line {
        None => Ok(None),
        Some(line) => record::parse_line(&line)
            .map(|p| Some(p.record.seq))
            .map_err(|e| corrupt(path, 1, e.into())),
    }
}

/// Refuses a log that no longer reaches the signed head its head file
/// keeps: cut back, or rewritten from that record on.
fn check_reaches(
    path: &Path,
    segments: &[crate::audit::Segment],
    tail: &Tail,
    head: &SignedHead,
    head_file: &Path,
) -> Result<(), AuditError> {
    let last_seq = tail.last.map_or(0, |l| l.seq);
    if last_seq < head.checkpoint_seq() {
        return Err(corrupt(
            path,
            last_seq + 1,
            Corruption::EndsBeforeHead {
                last_seq,
                head_seq: head.seq(),
                head_file: head_file.to_owned(),
            },
        ));
    }
    let found = match tail.hashes.iter().find(|(seq, _)| *seq == head.seq()) {
        Some((_, hash)) => Some(*hash),
        None if tail.anchor.is_some_and(|(seq, _)| seq == head.seq() + 1) => {
            tail.anchor.map(|(_, prev)| prev)
        }
        // Rare: the head file is older than the last checkpoint (a crash
        // before it was saved, across a rotation): read back to it.
        None => hash_at(path, segments, head.seq())?,
    };
    match found {
        Some(found) if found == *head.hash_bytes() => Ok(()),
        found => Err(corrupt(
            path,
            head.seq(),
            Corruption::NotTheHead {
                found: found.map(hex::encode).unwrap_or_default(),
                expected: head.hash(),
                head_file: head_file.to_owned(),
            },
        )),
    }
}

/// The hash of record `seq`, read forwards from the file that holds it.
fn hash_at(
    path: &Path,
    segments: &[crate::audit::Segment],
    seq: u64,
) -> Result<Option<[u8; 32]>, AuditError> {
    let in_active = first_record_seq(path)?.is_some_and(|first| first <= seq);
    let file_path = match segments.iter().rev().find(|s| s.first_seq <= seq) {
        Some(segment) if !in_active => segment.path.as_path(),
        _ => path,
    };
    let io = |source| AuditError::Io {
        path: file_path.to_owned(),
        source,
    };
    let file = File::open(file_path).map_err(io)?;
    let mut reader = LineReader::new(file);
    while let Some((line, _)) = reader.next_line().map_err(io)? {
        let Line::Complete(line) = line else { break };
        let parsed = record::parse_line(line).map_err(|e| corrupt(file_path, seq, e.into()))?;
        if parsed.record.seq == seq {
            return Ok(Some(parsed.hash));
        }
    }
    Ok(None)
}

/// One record of the tail, as much as opening needs.
#[derive(Debug, Clone, Copy)]
struct TailRecord {
    seq: u64,
    hash: [u8; 32],
    /// A closing checkpoint.
    shutdown: bool,
}

/// What reading an active segment back to its last checkpoint found.
struct Tail {
    /// The last record.
    last: Option<TailRecord>,
    /// The first record read (the checkpoint, or the file's first record):
    /// its sequence number and the previous hash it names.
    anchor: Option<(u64, [u8; 32])>,
    /// Sequence numbers and hashes of the records read.
    hashes: Vec<(u64, [u8; 32])>,
    /// The file's first record was read.
    reached_start: bool,
    /// The file's first record, when read, is an `audit.segment` record.
    starts_segment: bool,
    /// The file's first sequence number, when read.
    first_seq: Option<u64>,
}

/// Reads the first `complete` bytes of `file` back from the end to the
/// last checkpoint (or segment start, or the file's beginning), then
/// checks that stretch's chain forwards.
fn scan_tail(file: &File, complete: u64, path: &Path) -> Result<Tail, AuditError> {
    let io = |source| AuditError::Io {
        path: path.to_owned(),
        source,
    };
    let mut back = BackwardLines::new(file.try_clone().map_err(io)?, complete);
    // (record, prev, offset), newest first.
    let mut read = Vec::new();
    let reached_start = loop {
        let line = match back.prev_line() {
            Ok(Some((line, _))) => line,
            Ok(None) => break true,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                let seq = read
                    .last()
                    .map_or(0, |(r, _, _): &(TailRecord, [u8; 32], bool)| r.seq - 1);
                return Err(corrupt(path, seq, LineError::TooLong.into()));
            }
            Err(e) => return Err(io(e)),
        };
        let parsed = record::parse_line(&line).map_err(|e| {
            let seq = claimed_seq(&line)
                .or(read.last().map(|(r, _, _)| r.seq - 1))
                .unwrap_or(0);
            corrupt(path, seq, e.into())
        })?;
        let kind = parsed.record.kind.as_str();
        let anchor = kind == "audit.checkpoint" || kind == "audit.segment";
        let rec = TailRecord {
            seq: parsed.record.seq,
            hash: parsed.hash,
            shutdown: kind == "audit.checkpoint" && parsed.record.details["reason"] == "shutdown",
        };
        read.push((rec, parsed.prev, kind == "audit.segment"));
        if anchor {
            // The file's first record too, when nothing precedes it.
            break back.prev_line().map_err(io)?.is_none();
        }
    };
    read.reverse();
    let mut tail = Tail {
        last: read.last().map(|(r, _, _)| *r),
        anchor: read.first().map(|(r, prev, _)| (r.seq, *prev)),
        hashes: Vec::with_capacity(read.len()),
        reached_start,
        starts_segment: reached_start && read.first().is_some_and(|(_, _, seg)| *seg),
        first_seq: reached_start
            .then(|| read.first().map(|(r, _, _)| r.seq))
            .flatten(),
    };
    if reached_start
        && let Some((first, prev, segment)) = read.first()
        && !segment
    {
        if first.seq != 1 {
            return Err(corrupt(
                path,
                1,
                Corruption::OutOfSequence {
                    found: first.seq,
                    expected: 1,
                },
            ));
        }
        if *prev != GENESIS {
            return Err(corrupt(path, 1, Corruption::BrokenLink));
        }
    }
    let mut before: Option<TailRecord> = None;
    for (rec, prev, _) in &read {
        if let Some(before) = before {
            let expected = before.seq + 1;
            if rec.seq != expected {
                return Err(corrupt(
                    path,
                    expected,
                    Corruption::OutOfSequence {
                        found: rec.seq,
                        expected,
                    },
                ));
            }
            if *prev != before.hash {
                return Err(corrupt(path, expected, Corruption::BrokenLink));
            }
        }
        tail.hashes.push((rec.seq, rec.hash));
        before = Some(*rec);
    }
    Ok(tail)
}

/// The `"seq":N` a line starts with.
fn claimed_seq(line: &[u8]) -> Option<u64> {
    let rest = line.strip_prefix(b"{\"seq\":")?;
    let digits: Vec<u8> = rest
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .copied()
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

fn corrupt(path: &Path, seq: u64, reason: Corruption) -> AuditError {
    AuditError::Corrupt {
        path: path.to_owned(),
        seq,
        reason,
    }
}
