//! The one capped line reader every reader of a log uses (opening a log,
//! [`verify_file`](super::verify_file), [`export`](super::export)): it
//! never holds more than [`MAX_LINE`] bytes of a line, so a hostile or
//! damaged file cannot make a reader allocate without bound, and a line
//! that is too long is skipped whole, so line numbers stay right.
//!
//! The writer keeps every line within the same limit (see
//! [`record::encode_bounded`](super::record::encode_bounded)), so a log the
//! writer produced is always readable.

use std::io::{BufRead, BufReader, Read};

use super::record::MAX_LINE;

/// One line of a log, as read by [`LineReader::next_line`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line<'a> {
    /// A complete line, without its newline.
    Complete(&'a [u8]),
    /// The final bytes of the file, with no newline: a write torn by a
    /// crash (at most [`MAX_LINE`] bytes).
    Torn(&'a [u8]),
    /// A line longer than [`MAX_LINE`] bytes (its newline not counted). Its
    /// bytes were skipped, not kept.
    TooLong,
}

/// Where a line stands in its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct At {
    /// Byte offset of the line's first byte.
    pub(crate) offset: u64,
    /// 1-based line number.
    pub(crate) line_no: u64,
}

/// Reads a log line by line, each capped at [`MAX_LINE`] bytes.
pub(crate) struct LineReader<R> {
    reader: BufReader<R>,
    line: Vec<u8>,
    /// Offset of the next line.
    next_offset: u64,
    /// 1-based number of the line returned last.
    line_no: u64,
}

impl<R: Read> LineReader<R> {
    /// Reads lines from `inner`, from where it stands.
    pub(crate) fn new(inner: R) -> Self {
        LineReader {
            reader: BufReader::with_capacity(256 * 1024, inner),
            line: Vec::with_capacity(1024),
            next_offset: 0,
            line_no: 0,
        }
    }

    /// The next line and where it stands, or `None` at the end of the file.
    pub(crate) fn next_line(&mut self) -> std::io::Result<Option<(Line<'_>, At)>> {
        self.line.clear();
        let offset = self.next_offset;
        // A line of MAX_LINE bytes plus its newline is the longest accepted.
        let read = self
            .reader
            .by_ref()
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut self.line)?;
        if read == 0 {
            return Ok(None);
        }
        self.line_no += 1;
        self.next_offset += read as u64;
        let at = At {
            offset,
            line_no: self.line_no,
        };
        if self.line.last() == Some(&b'\n') {
            self.line.pop();
            return Ok(Some((Line::Complete(&self.line), at)));
        }
        if self.line.len() <= MAX_LINE {
            return Ok(Some((Line::Torn(&self.line), at)));
        }
        // Too long: skip the rest of it without keeping it.
        self.line.clear();
        loop {
            let buf = self.reader.fill_buf()?;
            if buf.is_empty() {
                break;
            }
            match buf.iter().position(|&b| b == b'\n') {
                Some(nl) => {
                    self.reader.consume(nl + 1);
                    self.next_offset += nl as u64 + 1;
                    break;
                }
                None => {
                    let len = buf.len();
                    self.reader.consume(len);
                    self.next_offset += len as u64;
                }
            }
        }
        Ok(Some((Line::TooLong, at)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_torn_tails_and_too_long_lines() {
        let mut text = b"one\n".to_vec();
        text.extend(std::iter::repeat_n(b'x', MAX_LINE));
        text.push(b'\n');
        text.extend(std::iter::repeat_n(b'y', 3 * MAX_LINE));
        text.extend_from_slice(b"\nafter\ntorn");
        let mut reader = LineReader::new(text.as_slice());
        let mut next = || {
            reader.next_line().unwrap().map(|(line, at)| {
                let line = match line {
                    Line::Complete(l) => Line::Complete(if l.len() > 8 { &b"long"[..] } else { l }),
                    other => other,
                };
                (format!("{line:?}"), at.offset, at.line_no)
            })
        };
        let expect = |line: Line<'_>, offset: usize, line_no| {
            Some((format!("{line:?}"), offset as u64, line_no))
        };
        assert_eq!(next(), expect(Line::Complete(b"one"), 0, 1));
        // Exactly the limit is still a line.
        assert_eq!(next(), expect(Line::Complete(b"long"), 4, 2));
        assert_eq!(next(), expect(Line::TooLong, 5 + MAX_LINE, 3));
        let after = 6 + 4 * MAX_LINE;
        assert_eq!(next(), expect(Line::Complete(b"after"), after, 4));
        assert_eq!(next(), expect(Line::Torn(b"torn"), after + 6, 5));
        assert_eq!(next(), None);
    }
}
