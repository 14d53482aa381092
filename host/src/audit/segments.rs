//! The files a log is made of: its sealed segments and its active file.
//!
//! A log at `state/audit.jsonl` is:
//!
//! - `state/audit.jsonl`: the **active segment**, the one being written (a
//!   log that never rotated is only this file, as before segments existed);
//! - `state/audit.segments/<first seq, 20 digits>.jsonl`: the **sealed
//!   segments**, oldest first, each named by the sequence number of its
//!   first record (`00000000000000000001.jsonl` holds records from 1);
//! - `state/audit.lock`: the file the writer locks (the active file is
//!   renamed when it rotates, so it cannot carry the lock);
//! - `state/audit.head.json`: the signed head, when kept
//!   ([`head_file_for`](super::head_file_for)).
//!
//! Every entry of the segments directory that does not start with `.` must
//! be a well-named segment file; anything else is refused with an error
//! naming it, so a file dropped there by mistake is noticed rather than
//! read or skipped silently.

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};

use super::AuditError;
use super::record::MAX_LINE;

/// The directory of the sealed segments of the log at `log`: beside it,
/// with the extension `segments` (`state/audit.jsonl` →
/// `state/audit.segments`).
pub fn segments_dir_for(log: impl AsRef<Path>) -> PathBuf {
    log.as_ref().with_extension("segments")
}

/// The lock file of the log at `log` (`state/audit.jsonl` →
/// `state/audit.lock`).
pub(crate) fn lock_file_for(log: &Path) -> PathBuf {
    log.with_extension("lock")
}

/// The file name of the sealed segment whose first record is `first_seq`.
pub(crate) fn segment_file_name(first_seq: u64) -> String {
    format!("{first_seq:020}.jsonl")
}

/// One sealed segment: its first sequence number (from its name) and path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// The sequence number of its first record, as its name states.
    pub first_seq: u64,
    /// The file.
    pub path: PathBuf,
}

/// The sealed segments of the log at `log`, oldest first (none when the
/// log never rotated). A name that is not `<20 digits>.jsonl` is an error
/// naming the file.
pub fn list_segments(log: impl AsRef<Path>) -> Result<Vec<Segment>, AuditError> {
    let dir = segments_dir_for(log);
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| AuditError::Io { path, source }
    };
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(&dir)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io(&dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let first_seq = parse_segment_name(&name).ok_or_else(|| AuditError::Segment {
            path: path.clone(),
            reason: "not a segment file: a segment is named by its first sequence number, 20 digits, then `.jsonl`".into(),
        })?;
        if !entry.file_type().map_err(io(&path))?.is_file() {
            return Err(AuditError::Segment {
                path,
                reason: "not a regular file".into(),
            });
        }
        out.push(Segment { first_seq, path });
    }
    out.sort_by_key(|s| s.first_seq);
    Ok(out)
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".jsonl")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&n| n > 0)
}

/// Every file of the log at `log`, in chain order: its sealed segments,
/// then the active file (when it exists).
pub(crate) fn log_files(log: &Path) -> Result<Vec<PathBuf>, AuditError> {
    let mut files: Vec<PathBuf> = list_segments(log)?.into_iter().map(|s| s.path).collect();
    if log.exists() || files.is_empty() {
        files.push(log.to_owned());
    }
    Ok(files)
}

/// The first line of `file` (without its newline), if it has a complete
/// one within [`MAX_LINE`].
pub(crate) fn first_line(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    let mut file = File::open(path)?;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 4096];
    loop {
        let n = file.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        if let Some(nl) = chunk[..n].iter().position(|&b| b == b'\n') {
            buf.extend_from_slice(&chunk[..nl]);
            return Ok(Some(buf));
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_LINE {
            return Ok(None);
        }
    }
}

/// Reads a file's complete lines backwards, from its end, in chunks: what
/// opening a log does to find its last checkpoint without reading the rest.
pub(crate) struct BackwardLines {
    file: File,
    /// Bytes of the file before `buf` not yet read.
    start: u64,
    /// Read bytes not yet returned (`buf` begins at offset `start`).
    buf: Vec<u8>,
    chunk: usize,
}

impl BackwardLines {
    /// Reads `file`, whose first `len` bytes end with a newline (or are
    /// empty).
    pub(crate) fn new(file: File, len: u64) -> Self {
        BackwardLines {
            file,
            start: len,
            buf: Vec::new(),
            chunk: 64 * 1024,
        }
    }

    /// The previous complete line and its offset, or `None` before the
    /// first. A line longer than [`MAX_LINE`] is an error of kind
    /// `InvalidData`.
    pub(crate) fn prev_line(&mut self) -> std::io::Result<Option<(Vec<u8>, u64)>> {
        // `buf` ends at the end of a line (its newline included), or is empty.
        loop {
            let body_end = self.buf.len().saturating_sub(1);
            if let Some(nl) = self.buf[..body_end].iter().rposition(|&b| b == b'\n') {
                let line = self.buf[nl + 1..body_end].to_vec();
                let offset = self.start + nl as u64 + 1;
                self.buf.truncate(nl + 1);
                return Ok(Some((line, offset)));
            }
            if self.start == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                let line = self.buf[..body_end].to_vec();
                self.buf.clear();
                return Ok(Some((line, 0)));
            }
            if self.buf.len() > MAX_LINE + 1 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("a line longer than {MAX_LINE} bytes"),
                ));
            }
            let take = self
                .chunk
                .min(usize::try_from(self.start).unwrap_or(usize::MAX));
            self.chunk = (self.chunk * 2).min(4 * 1024 * 1024);
            self.start -= take as u64;
            let mut fresh = vec![0u8; take];
            self.file.seek(SeekFrom::Start(self.start))?;
            self.file.read_exact(&mut fresh)?;
            fresh.extend_from_slice(&self.buf);
            self.buf = fresh;
        }
    }
}

/// The length of `file` up to (and including) its last newline, and the
/// length of what follows it (a torn last line).
pub(crate) fn complete_len(file: &mut File) -> std::io::Result<(u64, u64)> {
    let len = file.seek(SeekFrom::End(0))?;
    let mut pos = len;
    let mut chunk = vec![0u8; 64 * 1024];
    while pos > 0 {
        let take = chunk.len().min(usize::try_from(pos).unwrap_or(usize::MAX));
        pos -= take as u64;
        file.seek(SeekFrom::Start(pos))?;
        file.read_exact(&mut chunk[..take])?;
        if let Some(nl) = chunk[..take].iter().rposition(|&b| b == b'\n') {
            let complete = pos + nl as u64 + 1;
            return Ok((complete, len - complete));
        }
        if len - pos > MAX_LINE as u64 + 1 {
            // A torn line longer than any record: report it as torn from
            // here; the caller refuses it.
            return Ok((pos, len - pos));
        }
    }
    Ok((0, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backward_lines_and_torn_tails() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut text = Vec::new();
        for i in 0..5000 {
            text.extend_from_slice(format!("line {i}\n").as_bytes());
        }
        text.extend_from_slice(b"torn");
        std::fs::write(&path, &text).unwrap();
        let mut file = File::open(&path).unwrap();
        let (complete, torn) = complete_len(&mut file).unwrap();
        assert_eq!(torn, 4);
        let mut back = BackwardLines::new(file, complete);
        for i in (0..5000).rev() {
            let (line, offset) = back.prev_line().unwrap().unwrap();
            assert_eq!(line, format!("line {i}").as_bytes());
            assert_eq!(
                &text[offset as usize..offset as usize + line.len()],
                &line[..]
            );
        }
        assert!(back.prev_line().unwrap().is_none());
        assert_eq!(parse_segment_name("00000000000000000001.jsonl"), Some(1));
        assert_eq!(parse_segment_name("1.jsonl"), None);
        assert_eq!(parse_segment_name("00000000000000000000.jsonl"), None);
    }
}
