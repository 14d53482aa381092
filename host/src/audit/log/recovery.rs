//! Opening an existing log: lock the file, read and chain-check every
//! complete record, and cut off a torn last line (a crash mid-write). Any
//! other damage refuses the open.

use std::fs::File;
use std::io::{Seek as _, SeekFrom};
use std::path::Path;

use super::config::AuditConfig;
use super::events::LogEvent;
use crate::audit::head::SignedHead;
use crate::audit::lines::{Line, LineReader};
use crate::audit::record::{self, GENESIS, LineError};
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

/// A log file opened for appending: locked, chain-checked, any torn tail
/// cut off, positioned at its end.
pub(super) struct Recovered {
    pub(super) file: File,
    /// Length of the file: where the next record goes.
    pub(super) len: u64,
    /// Hash of the last record ([`GENESIS`] for an empty log).
    pub(super) head: [u8; 32],
    pub(super) report: OpenReport,
}

/// Opens (or creates) the log file at `path`, locks it for exclusive use
/// (waiting for the lock as `config` says), checks the chain of the records
/// in it, and cuts off a torn last line.
pub(super) fn open_file(path: &Path, config: &AuditConfig) -> Result<Recovered, AuditError> {
    let io = |source| AuditError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(io)?;
    lock(&file, path, config)?;
    let head = match &config.head_file {
        Some(head_file) if head_file.exists() => {
            Some((SignedHead::from_file(head_file)?, head_file.as_path()))
        }
        _ => None,
    };
    let scan = scan_existing(&mut file, path, head.as_ref().map(|(h, _)| h.seq()))?;
    if let Some((head, head_file)) = &head {
        check_reaches(path, &scan, head, head_file)?;
    }
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
    Ok(Recovered {
        file,
        len,
        head: scan.head,
        report,
    })
}

/// Takes the exclusive lock on the log file, waiting for it as `config`
/// says ([`lock_waiting`]): up to the lock timeout, telling the configured
/// hook once when it starts to wait.
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

/// Refuses a log that no longer reaches the signed head its head file
/// keeps: cut back, or rewritten from that record on.
fn check_reaches(
    path: &Path,
    scan: &Scan,
    head: &SignedHead,
    head_file: &Path,
) -> Result<(), AuditError> {
    if scan.records < head.checkpoint_seq() {
        return Err(corrupt(
            path,
            scan.records + 1,
            Corruption::EndsBeforeHead {
                last_seq: scan.records,
                head_seq: head.seq(),
                head_file: head_file.to_owned(),
            },
        ));
    }
    match scan.hash_at_head {
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

/// What reading an existing log found.
struct Scan {
    records: u64,
    /// The hash of the record at the sequence number asked for.
    hash_at_head: Option<[u8; 32]>,
    head: [u8; 32],
    closed_cleanly: bool,
    /// Offset of a torn (unterminated) last line.
    torn_at: Option<u64>,
}

/// Reads and chain-checks every complete line of an existing log, keeping
/// the hash of record `head_seq`.
fn scan_existing(file: &mut File, path: &Path, head_seq: Option<u64>) -> Result<Scan, AuditError> {
    let io = |source| AuditError::Io {
        path: path.to_owned(),
        source,
    };
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    let mut reader = LineReader::new(&*file);
    let mut scan = Scan {
        records: 0,
        hash_at_head: None,
        head: GENESIS,
        closed_cleanly: true,
        torn_at: None,
    };
    while let Some((line, at)) = reader.next_line().map_err(io)? {
        let expected = scan.records + 1;
        let line = match line {
            Line::Complete(line) => line,
            Line::TooLong => return Err(corrupt(path, expected, LineError::TooLong.into())),
            // The final bytes have no newline: a write torn by a crash.
            Line::Torn(_) => {
                scan.torn_at = Some(at.offset);
                break;
            }
        };
        let parsed = record::parse_line(line).map_err(|e| corrupt(path, expected, e.into()))?;
        if parsed.record.seq != expected {
            return Err(corrupt(
                path,
                expected,
                Corruption::OutOfSequence {
                    found: parsed.record.seq,
                    expected,
                },
            ));
        }
        if parsed.prev != scan.head {
            return Err(corrupt(path, expected, Corruption::BrokenLink));
        }
        scan.head = parsed.hash;
        scan.records = expected;
        if head_seq == Some(expected) {
            scan.hash_at_head = Some(parsed.hash);
        }
        scan.closed_cleanly = parsed.record.kind == "audit.checkpoint"
            && parsed.record.details["reason"] == "shutdown";
    }
    Ok(scan)
}

fn corrupt(path: &Path, seq: u64, reason: Corruption) -> AuditError {
    AuditError::Corrupt {
        path: path.to_owned(),
        seq,
        reason,
    }
}
