//! Following a log as it grows (`forgeone audit tail`), across its
//! segments.

use std::path::Path;

use super::AuditError;
use super::cursor::LogCursor;
use super::record::{self, GENESIS, Record};
use super::segments::list_segments;

/// Reads records from a log as they are appended, across its segments
/// (from the oldest), checking the chain as it goes. Poll it; it never
/// blocks.
#[derive(Debug)]
pub struct Follower {
    cursor: LogCursor,
    head: [u8; 32],
    next_seq: u64,
    /// Nothing read yet: the first record sets the chain's start (a log
    /// whose oldest segments were pruned starts after seq 1).
    fresh: bool,
}

/// One item read by a [`Follower`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Followed {
    /// A record that chains onto the one before it.
    Record(Box<Record>),
    /// A line that does not verify; the message says why. Following goes
    /// on from the next line.
    Broken {
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        reason: String,
    },
}

impl Follower {
    /// Starts at the beginning of the log at `path` (its oldest segment).
    pub fn open(path: impl AsRef<Path>) -> Result<Follower, AuditError> {
        let path = path.as_ref().to_owned();
        if !path.exists() && list_segments(&path)?.is_empty() {
            return Err(AuditError::Io {
                path,
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
        Ok(Follower {
            cursor: LogCursor::new(path),
            head: GENESIS,
            next_seq: 1,
            fresh: true,
        })
    }

    /// Reads whatever complete lines were appended since the last poll.
    pub fn poll(&mut self) -> Result<Vec<Followed>, AuditError> {
        let lines = self.cursor.poll()?;
        if self.cursor.restarted() {
            // Truncated under us (e.g. a torn tail cut on reopen): restart.
            self.head = GENESIS;
            self.next_seq = 1;
            self.fresh = true;
        }
        let mut out = Vec::new();
        for line in lines {
            let line_no = self.next_seq;
            match record::parse_line(&line) {
                Ok(parsed)
                    if std::mem::take(&mut self.fresh)
                        && parsed.record.seq > 1
                        && parsed.record.kind == "audit.segment" =>
                {
                    self.head = parsed.hash;
                    self.next_seq = parsed.record.seq + 1;
                    out.push(Followed::Record(Box::new(parsed.record)));
                }
                Ok(parsed) if parsed.record.seq == self.next_seq && parsed.prev == self.head => {
                    self.head = parsed.hash;
                    self.next_seq += 1;
                    out.push(Followed::Record(Box::new(parsed.record)));
                }
                Ok(parsed) => {
                    out.push(Followed::Broken {
                        line: line_no,
                        reason: format!(
                            "seq {} does not follow seq {} in the chain",
                            parsed.record.seq,
                            self.next_seq - 1
                        ),
                    });
                    self.head = parsed.hash;
                    self.next_seq = parsed.record.seq + 1;
                    out.push(Followed::Record(Box::new(parsed.record)));
                }
                Err(e) => {
                    out.push(Followed::Broken {
                        line: line_no,
                        reason: e.to_string(),
                    });
                    self.next_seq += 1;
                }
            }
            self.fresh = false;
        }
        Ok(out)
    }
}
