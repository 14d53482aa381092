//! Guest bytes made safe for a terminal, and nothing more.
//!
//! A guest's output shown on a terminal must not be able to drive it: move
//! the cursor, set the window title, answer back into the input, switch
//! character sets, or reorder what the operator reads. [`TerminalEscaper`]
//! escapes exactly the characters that can, and passes every other byte
//! through unchanged (tabs, backslashes, newlines, carriage returns, valid
//! UTF-8 of any script, even invalid UTF-8 that cannot control anything):
//!
//! | escaped                                  | as              | why |
//! |------------------------------------------|-----------------|-----|
//! | ESC (`0x1b`)                             | `\x1b`          | starts every escape sequence (CSI, OSC, DCS, ...) |
//! | ENQ (`0x05`)                             | `\x05`          | makes some terminals type their answerback into the input |
//! | SO, SI (`0x0e`, `0x0f`)                  | `\x0e`, `\x0f`  | switch the character set, garbling what follows |
//! | C1 controls U+0080–U+009F                | `\x9b`          | 8-bit CSI, OSC, DCS, ... |
//! | a stray byte 0x80–0x9F (not in UTF-8)    | `\x9b`          | the same controls for a terminal not in UTF-8 mode |
//! | bidi overrides and isolates U+202A–U+202E, U+2066–U+2069 | `\u{202e}` | reorder the text the operator reads ("Trojan Source") |
//!
//! The escaper works on a stream in pieces: a character split between two
//! writes is judged whole, so a bidi override cannot slip through in two
//! halves. The audit log escapes guest text much more strictly
//! ([`escape_untrusted`](crate::audit::escape_untrusted)); this is for a
//! person reading the output live.

use std::io::Write as _;

/// Escapes a byte stream for a terminal (see the module docs for what is
/// escaped). Feed it with [`TerminalEscaper::push`] and end the stream with
/// [`TerminalEscaper::finish`].
#[derive(Debug, Default, Clone)]
pub struct TerminalEscaper {
    /// The start of a UTF-8 character whose end has not arrived yet.
    carry: Vec<u8>,
}

/// The longest UTF-8 sequence.
const MAX_CHAR: usize = 4;

impl TerminalEscaper {
    /// A new escaper, at the start of a stream.
    pub fn new() -> TerminalEscaper {
        TerminalEscaper::default()
    }

    /// Escapes the next piece of the stream into `out`. Up to three bytes
    /// of a character that `bytes` ends inside are held back until the
    /// next call (or [`TerminalEscaper::finish`]).
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        if self.carry.is_empty() {
            self.escape(bytes, out);
            return;
        }
        // Complete the held-back character with the first bytes of this
        // piece (a character is at most four bytes).
        let take = bytes.len().min(MAX_CHAR);
        let mut head = std::mem::take(&mut self.carry);
        head.extend_from_slice(&bytes[..take]);
        self.escape(&head, out);
        if take == bytes.len() {
            // `head` ends where this piece ends: what it holds back is right.
            return;
        }
        // More follows, so anything held back lies within `bytes[..take]`
        // (the held character and four more bytes cannot all be one
        // incomplete character): take it back and go on from there.
        let back = self.carry.len();
        self.carry.clear();
        self.escape(&bytes[take - back..], out);
    }

    /// Ends the stream: a character cut off at its end is written as the
    /// bytes it had (escaped where they could be C1 controls).
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let carry = std::mem::take(&mut self.carry);
        invalid(&carry, out);
    }

    /// True when bytes are held back for the next piece.
    pub fn is_holding(&self) -> bool {
        !self.carry.is_empty()
    }

    /// Escapes `bytes`, holding back an incomplete character at its end.
    fn escape(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        let used = self.escape_prefix(bytes, out);
        debug_assert_eq!(used + self.carry.len(), bytes.len());
    }

    /// Escapes `bytes` up to an incomplete character at its very end, which
    /// goes into the carry; returns how many bytes were escaped.
    fn escape_prefix(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> usize {
        let mut rest = bytes;
        loop {
            match std::str::from_utf8(rest) {
                Ok(text) => {
                    valid(text.as_bytes(), out);
                    return bytes.len();
                }
                Err(e) => {
                    let (good, bad) = rest.split_at(e.valid_up_to());
                    valid(good, out);
                    match e.error_len() {
                        None => {
                            self.carry = bad.to_vec();
                            return bytes.len() - bad.len();
                        }
                        Some(n) => {
                            invalid(&bad[..n], out);
                            rest = &bad[n..];
                        }
                    }
                }
            }
        }
    }
}

/// Escapes valid UTF-8: only ESC, ENQ, SO, SI, C1 and bidi controls change.
fn valid(text: &[u8], out: &mut Vec<u8>) {
    let mut start = 0;
    let mut i = 0;
    while i < text.len() {
        let b = text[i];
        let len = match b {
            0x05 | 0x0e | 0x0f | 0x1b => 1,
            // U+0080..U+009F: C2 80..C2 9F.
            0xc2 if matches!(text.get(i + 1), Some(0x80..=0x9f)) => 2,
            // U+202A..U+202E: E2 80 AA..AE; U+2066..U+2069: E2 81 A6..A9.
            0xe2 if matches!(
                (text.get(i + 1), text.get(i + 2)),
                (Some(0x80), Some(0xaa..=0xae)) | (Some(0x81), Some(0xa6..=0xa9))
            ) =>
            {
                3
            }
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(&text[start..i]);
        let c = std::str::from_utf8(&text[i..i + len])
            .ok()
            .and_then(|s| s.chars().next())
            .map_or(0, |c| c as u32);
        let _ = if c < 0x100 {
            write!(out, "\\x{c:02x}")
        } else {
            write!(out, "\\u{{{c:x}}}")
        };
        i += len;
        start = i;
    }
    out.extend_from_slice(&text[start..]);
}

/// Bytes that are not UTF-8: passed through, except those that are C1
/// controls to a terminal not in UTF-8 mode.
fn invalid(bytes: &[u8], out: &mut Vec<u8>) {
    for &b in bytes {
        if (0x80..=0x9f).contains(&b) {
            let _ = write!(out, "\\x{b:02x}");
        } else {
            out.push(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(pieces: &[&[u8]]) -> Vec<u8> {
        let mut e = TerminalEscaper::new();
        let mut out = Vec::new();
        for piece in pieces {
            e.push(piece, &mut out);
        }
        e.finish(&mut out);
        out
    }

    #[test]
    fn plain_text_tabs_backslashes_and_invalid_utf8_pass_unchanged() {
        let text: &[u8] = b"caf\xe9 \\ \t tab\r\nna\xc3\xafve \xe4\xb8\xad\xff\n";
        assert_eq!(escaped(&[text]), text);
    }

    #[test]
    fn terminal_controls_are_escaped() {
        let hostile =
            "\x1b[31mred\x1b[0m \x1b]0;title\x07 \u{9b}2J \u{202e}txt.exe\u{2069} \x05\x0e\x0f";
        assert_eq!(
            String::from_utf8(escaped(&[hostile.as_bytes()])).unwrap(),
            "\\x1b[31mred\\x1b[0m \\x1b]0;title\x07 \\x9b2J \\u{202e}txt.exe\\u{2069} \\x05\\x0e\\x0f"
        );
        // A stray C1 byte (not UTF-8) too; other stray bytes pass.
        assert_eq!(escaped(&[b"a\x9bb\xa0"]), b"a\\x9bb\xa0");
    }

    #[test]
    fn a_control_split_between_writes_is_still_caught() {
        let rlo = "\u{202e}".as_bytes();
        for split in 1..rlo.len() {
            let (a, b) = rlo.split_at(split);
            assert_eq!(
                escaped(&[b"x", a, b, b"y"]),
                b"x\\u{202e}y",
                "split at {split}"
            );
            // Byte by byte, with empty pieces between.
            let out = escaped(&[&rlo[..1], b"", &rlo[1..2], &rlo[2..], b"z"]);
            assert_eq!(out, b"\\u{202e}z");
        }
        let c1 = "\u{85}".as_bytes();
        assert_eq!(escaped(&[&c1[..1], &c1[1..]]), b"\\x85");
        // A harmless character split the same way is passed unchanged.
        let e_acute = "é".as_bytes();
        assert_eq!(escaped(&[&e_acute[..1], &e_acute[1..]]), e_acute);
    }

    #[test]
    fn a_character_cut_off_at_the_end_is_written_as_its_bytes() {
        let mut e = TerminalEscaper::new();
        let mut out = Vec::new();
        e.push(b"ok\xe2\x80", &mut out);
        assert!(e.is_holding());
        assert_eq!(out, b"ok");
        e.finish(&mut out);
        assert_eq!(out, b"ok\xe2\\x80");
        assert!(!e.is_holding());
    }
}
