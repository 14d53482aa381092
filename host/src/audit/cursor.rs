//! Reading a log's complete lines as they land, across its segments: what
//! [`Follower`](super::Follower) (`forgeone audit tail`) and the cluster's
//! audit publisher read.
//!
//! The cursor starts at the oldest file (the first sealed segment, or the
//! active file), reads each to its end, and goes on to the next. When the
//! active file it reads is rotated (renamed into the segments directory:
//! the log's path then names another file), it reads the renamed file to
//! its end first, so no record is skipped.

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};

use super::AuditError;
use super::segments::list_segments;

/// Most bytes read per poll.
const MAX_POLL: u64 = 16 * 1024 * 1024;

/// A position in a log, across its segments; see the module docs.
#[derive(Debug)]
pub(crate) struct LogCursor {
    path: PathBuf,
    /// The file being read, what it is, and the offset after its last
    /// complete line read.
    file: Option<Open>,
    /// Set when the file being read shrank below what was read (a torn
    /// tail cut off on reopen, or tampering): reading restarted from the
    /// oldest file.
    restarted: bool,
}

#[derive(Debug)]
struct Open {
    file: File,
    /// The path it was opened at.
    at: PathBuf,
    /// Opened as the active file.
    active: bool,
    offset: u64,
    /// The first record's sequence number, once read.
    first_seq: Option<u64>,
}

impl LogCursor {
    /// A cursor at the start of the log at `path`.
    pub(crate) fn new(path: impl AsRef<Path>) -> LogCursor {
        LogCursor {
            path: path.as_ref().to_owned(),
            file: None,
            restarted: false,
        }
    }

    /// Whether the last [`LogCursor::poll`] restarted from the oldest file.
    pub(crate) fn restarted(&self) -> bool {
        self.restarted
    }

    /// The complete lines (without their newlines) appended since the last
    /// poll, oldest first, up to about 16 MiB.
    pub(crate) fn poll(&mut self) -> Result<Vec<Vec<u8>>, AuditError> {
        self.restarted = false;
        let mut out = Vec::new();
        let mut budget = MAX_POLL;
        loop {
            if self.file.is_none() {
                match self.open_after(None)? {
                    Some(open) => self.file = Some(open),
                    None => return Ok(out),
                }
            }
            let Some(open) = self.file.as_mut() else {
                return Ok(out);
            };
            let at = open.at.clone();
            let io = |source| AuditError::Io {
                path: at.clone(),
                source,
            };
            let len = open.file.metadata().map_err(io)?.len();
            if len < open.offset {
                self.file = None;
                self.restarted = true;
                out.clear();
                continue;
            }
            let read = read_lines(open, budget, &mut out).map_err(io)?;
            budget = budget.saturating_sub(read);
            if budget == 0 {
                return Ok(out);
            }
            // At the end of this file: go on if a newer one follows it.
            let at_end = open.offset == open.file.metadata().map_err(io)?.len();
            let sealed = !open.active || self.rotated()?;
            if !(at_end && sealed) {
                if sealed && !at_end {
                    // Rotated while read: read the rest of it next time round.
                    continue;
                }
                return Ok(out);
            }
            let first = self.file.as_ref().and_then(|o| o.first_seq);
            match self.open_after(first)? {
                Some(next) => self.file = Some(next),
                None => return Ok(out),
            }
        }
    }

    /// Whether the active file being read was renamed away (the log's path
    /// now names another file, or none).
    fn rotated(&self) -> Result<bool, AuditError> {
        let Some(open) = &self.file else {
            return Ok(false);
        };
        let ours = open.file.metadata().map_err(|source| AuditError::Io {
            path: open.at.clone(),
            source,
        })?;
        Ok(match std::fs::metadata(&self.path) {
            Ok(now) => !same_file(&ours, &now),
            Err(_) => true,
        })
    }

    /// Opens the file after the one whose first record is `after` (the
    /// oldest file when `None`); none when there is none yet.
    fn open_after(&self, after: Option<u64>) -> Result<Option<Open>, AuditError> {
        let segments = list_segments(&self.path)?;
        let next = segments
            .iter()
            .find(|s| after.is_none_or(|after| s.first_seq > after));
        let (at, active) = match next {
            Some(segment) => (segment.path.clone(), false),
            None => (self.path.clone(), true),
        };
        match File::open(&at) {
            Ok(file) => Ok(Some(Open {
                file,
                at,
                active,
                offset: 0,
                first_seq: None,
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && active => Ok(None),
            Err(source) => Err(AuditError::Io { path: at, source }),
        }
    }
}

/// Reads `open`'s complete lines from its offset (at most `budget` bytes)
/// into `out`; returns the bytes consumed.
fn read_lines(open: &mut Open, budget: u64, out: &mut Vec<Vec<u8>>) -> std::io::Result<u64> {
    open.file.seek(SeekFrom::Start(open.offset))?;
    let mut bytes = Vec::new();
    (&open.file).take(budget).read_to_end(&mut bytes)?;
    let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let lines = bytes[..complete].strip_suffix(b"\n").unwrap_or_default();
    for line in lines.split(|b| *b == b'\n').filter(|_| complete > 0) {
        if open.first_seq.is_none() {
            open.first_seq = claimed_seq(line);
        }
        out.push(line.to_vec());
    }
    open.offset += complete as u64;
    Ok(complete as u64)
}

/// The `"seq":N` a line starts with.
fn claimed_seq(line: &[u8]) -> Option<u64> {
    let rest = line.strip_prefix(b"{\"seq\":")?;
    let end = rest.iter().position(|b| !b.is_ascii_digit())?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

#[cfg(unix)]
fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(not(unix))]
fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    // No inode to compare: a rotated file is seen as a shorter one.
    a.len() <= b.len()
}
