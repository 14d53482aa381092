//! Following a log as it grows (`forgeone audit tail`).

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};

use super::AuditError;
use super::record::{self, GENESIS, Record};

/// Reads records from a log as they are appended, checking the chain as it
/// goes. Poll it; it never blocks.
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    file: File,
    offset: u64,
    partial: Vec<u8>,
    head: [u8; 32],
    next_seq: u64,
    /// Inside a line longer than a reader accepts: its bytes are dropped
    /// up to its newline.
    skipping: bool,
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
    /// Starts at the beginning of the log at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Follower, AuditError> {
        let path = path.as_ref().to_owned();
        let file = File::open(&path).map_err(|source| AuditError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(Follower {
            path,
            file,
            offset: 0,
            partial: Vec::new(),
            head: GENESIS,
            next_seq: 1,
            skipping: false,
        })
    }

    /// Reads whatever complete lines were appended since the last poll.
    pub fn poll(&mut self) -> Result<Vec<Followed>, AuditError> {
        let io = |source| AuditError::Io {
            path: self.path.clone(),
            source,
        };
        let len = self.file.metadata().map_err(io)?.len();
        if len < self.offset {
            // Truncated under us (e.g. a torn tail cut on reopen): restart.
            self.offset = 0;
            self.partial.clear();
            self.head = GENESIS;
            self.next_seq = 1;
            self.skipping = false;
        }
        self.file.seek(SeekFrom::Start(self.offset)).map_err(io)?;
        let mut fresh = Vec::new();
        self.file
            .by_ref()
            .take(16 * 1024 * 1024)
            .read_to_end(&mut fresh)
            .map_err(io)?;
        self.offset += fresh.len() as u64;
        self.partial.extend_from_slice(&fresh);

        let mut out = Vec::new();
        let mut consumed = 0;
        while let Some(nl) = self.partial[consumed..].iter().position(|&b| b == b'\n') {
            let line = &self.partial[consumed..consumed + nl];
            consumed += nl + 1;
            let line_no = self.next_seq;
            if std::mem::take(&mut self.skipping) {
                // The rest of a line already reported as too long.
                continue;
            }
            match record::parse_line(line) {
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
        }
        self.partial.drain(..consumed);
        // No line is longer than a reader accepts: report it once, keep
        // none of it, and go on after its newline.
        if self.partial.len() > record::MAX_LINE {
            if !self.skipping {
                out.push(Followed::Broken {
                    line: self.next_seq,
                    reason: record::LineError::TooLong.to_string(),
                });
                self.next_seq += 1;
            }
            self.skipping = true;
            self.partial.clear();
        }
        Ok(out)
    }
}
