//! The on-disk record: one JSON object per line, hash-chained.
//!
//! A line is the record's *body* followed by its hash as the last field:
//!
//! ```text
//! {"seq":7,"ts":"...","kind":"container.started","actor":{..},"subjects":{..},"details":{..},"prev":"<hex>","hash":"<hex>"}
//! ```
//!
//! The canonical bytes of a record are the exact bytes of the line up to
//! (not including) `,"hash":"`, followed by `}`: the body object as it was
//! written. `hash = blake3(prev_hash || canonical bytes)`, where `prev_hash`
//! is the 32 raw bytes of the previous record's hash (all zeros for the first
//! record). Verification hashes the exact bytes received; nothing is
//! re-serialised, so the check cannot be fooled by a parser that normalises.
//!
//! A checkpoint record signs [`checkpoint_message`]: the writer signs it and
//! the verifier checks it, so both take it from here.

use serde::{Deserialize, Serialize};

use super::event::{Actor, Subjects};

/// Hash of "no previous record".
pub const GENESIS: [u8; 32] = [0; 32];

/// `,"hash":"` + 64 hex + `"}`: the fixed-size tail of every line.
const HASH_PREFIX: &[u8] = b",\"hash\":\"";
const HASH_SUFFIX_LEN: usize = HASH_PREFIX.len() + 64 + 2;

/// Longest line (in bytes, without its newline) a reader of the log accepts:
/// opening, verifying and exporting a log all refuse a longer one. The
/// writer never writes a longer line: a record that would be longer is
/// replaced by one holding its size and digest (see
/// [`AuditLog::append`](super::AuditLog::append)). Guest text is capped at
/// its source well below this.
pub const MAX_LINE: usize = 1024 * 1024;

/// A record as read back from a log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Sequence number, from 1, gap-free.
    pub seq: u64,
    /// UTC time the record was appended (RFC 3339, microseconds).
    pub ts: chrono::DateTime<chrono::Utc>,
    /// Event kind, e.g. `container.started`.
    pub kind: String,
    /// Who caused the event.
    pub actor: Option<Actor>,
    /// What the event is about.
    pub subjects: Subjects,
    /// The event's structured details.
    pub details: serde_json::Value,
    /// Hash (hex) of the previous record.
    pub prev: String,
    /// Hash (hex) of this record; filled in from the line's tail.
    #[serde(skip)]
    pub hash: String,
}

/// Why a line is not a well-formed record. Opening a log reports it as the
/// source of an [`AuditError::Corrupt`](super::AuditError::Corrupt) (through
/// [`Corruption::Line`](super::Corruption::Line)) with the sequence number.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LineError {
    /// The line does not end with `,"hash":"<64 hex>"}`.
    #[error("no well-formed hash field at the end of the line")]
    NoHash,
    /// The body is not the expected JSON object (unknown, missing or
    /// duplicate fields, wrong types).
    #[error("malformed record: {0}")]
    Json(#[source] serde_json::Error),
    /// The body's `prev` field is not 64 lower-case hex characters.
    #[error("malformed record: `prev` is not 64 lower-case hex characters")]
    BadPrev,
    /// The stored hash does not match the bytes.
    #[error("content does not match its hash (edited)")]
    HashMismatch,
    /// The line is longer than the longest a reader accepts (1 MiB).
    #[error("line longer than {MAX_LINE} bytes")]
    TooLong,
}

/// A parsed line with its raw hash.
#[derive(Debug, Clone)]
pub struct ParsedLine {
    /// The record.
    pub record: Record,
    /// The record's hash, raw.
    pub hash: [u8; 32],
    /// The previous hash as the record states it, raw.
    pub prev: [u8; 32],
}

/// Computes a record's hash from the previous hash and its canonical bytes.
pub fn chain_hash(prev: &[u8; 32], canonical: &[u8]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(prev);
    hasher.update(canonical);
    *hasher.finalize().as_bytes()
}

/// Parses and hash-checks one line (without its trailing newline).
///
/// Checks: size, the fixed hash tail, the body's JSON shape (unknown or
/// duplicate fields are errors), and that the stored hash is
/// `blake3(prev || canonical bytes)` for the `prev` the record names. Chain
/// continuity (seq and prev against the record before) is the caller's job.
pub fn parse_line(line: &[u8]) -> Result<ParsedLine, LineError> {
    if line.len() > MAX_LINE {
        return Err(LineError::TooLong);
    }
    if line.len() < HASH_SUFFIX_LEN + 2 || !line.ends_with(b"\"}") {
        return Err(LineError::NoHash);
    }
    let tail_start = line.len() - HASH_SUFFIX_LEN;
    let tail = &line[tail_start..];
    if !tail.starts_with(HASH_PREFIX) {
        return Err(LineError::NoHash);
    }
    let hash_hex = &tail[HASH_PREFIX.len()..HASH_PREFIX.len() + 64];
    let mut hash = [0u8; 32];
    if !hash_hex
        .iter()
        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        || hex::decode_to_slice(hash_hex, &mut hash).is_err()
    {
        return Err(LineError::NoHash);
    }

    let mut canonical = Vec::with_capacity(tail_start + 1);
    canonical.extend_from_slice(&line[..tail_start]);
    canonical.push(b'}');

    let mut record: Record = serde_json::from_slice(&canonical).map_err(LineError::Json)?;
    let mut prev = [0u8; 32];
    if record.prev.len() != 64
        || !record
            .prev
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        || hex::decode_to_slice(&record.prev, &mut prev).is_err()
    {
        return Err(LineError::BadPrev);
    }
    if chain_hash(&prev, &canonical) != hash {
        return Err(LineError::HashMismatch);
    }
    record.hash = hex::encode(hash);
    Ok(ParsedLine { record, hash, prev })
}

/// Domain separator of checkpoint signatures.
const CHECKPOINT_CONTEXT: &[u8] = b"forgeone.audit.checkpoint.v1\0";

/// The message a checkpoint signs: a domain separator, the sequence number
/// it covers (big-endian) and the chain head (the hash of that record).
pub(crate) fn checkpoint_message(covers: u64, head: &[u8; 32]) -> Vec<u8> {
    let mut message = Vec::with_capacity(CHECKPOINT_CONTEXT.len() + 40);
    message.extend_from_slice(CHECKPOINT_CONTEXT);
    message.extend_from_slice(&covers.to_be_bytes());
    message.extend_from_slice(head);
    message
}

/// The fields of a record before its details.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Head<'a> {
    pub(crate) seq: u64,
    pub(crate) ts: chrono::DateTime<chrono::Utc>,
    pub(crate) kind: &'a str,
    pub(crate) actor: Option<&'a Actor>,
    pub(crate) subjects: &'a Subjects,
}

/// Appends one record's full line (with its trailing newline) to `out` and
/// returns the record's hash and where its details object lies in `out`.
/// The writer thread calls this once per record, straight into its output
/// buffer: nothing is serialised twice.
///
/// `write_details` writes the event's details. Output that is not one JSON
/// object (a bug in an event's `write_details`) is replaced by
/// `{"invalid_details": "<the text>"}`, so a bad event can never make the
/// log unreadable.
pub(crate) fn encode(
    out: &mut Vec<u8>,
    head: &Head<'_>,
    write_details: impl FnOnce(&mut Vec<u8>),
    prev: &[u8; 32],
) -> ([u8; 32], std::ops::Range<usize>) {
    let Head {
        seq,
        ts,
        kind,
        actor,
        subjects,
    } = *head;
    // Serialising these std/serde types into a Vec cannot fail.
    let start = out.len();
    out.extend_from_slice(b"{\"seq\":");
    out.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
    out.extend_from_slice(b",\"ts\":\"");
    out.extend_from_slice(
        ts.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            .as_bytes(),
    );
    out.extend_from_slice(b"\",\"kind\":");
    let _ = serde_json::to_writer(&mut *out, kind);
    out.extend_from_slice(b",\"actor\":");
    let _ = serde_json::to_writer(&mut *out, &actor);
    out.extend_from_slice(b",\"subjects\":");
    let _ = serde_json::to_writer(&mut *out, subjects);
    out.extend_from_slice(b",\"details\":");
    let details_start = out.len();
    write_details(out);
    let details = &out[details_start..];
    let is_object = details.first() == Some(&b'{')
        && serde_json::from_slice::<serde::de::IgnoredAny>(details).is_ok();
    if !is_object {
        let text = String::from_utf8_lossy(details).into_owned();
        out.truncate(details_start);
        let _ = serde_json::to_writer(&mut *out, &serde_json::json!({ "invalid_details": text }));
    }
    let details = details_start..out.len();
    let mut hex_buf = [0u8; 64];
    out.extend_from_slice(b",\"prev\":\"");
    out.extend_from_slice(hex_into(prev, &mut hex_buf));
    out.push(b'"');
    // Canonical bytes: the body so far, closed with `}`.
    out.push(b'}');
    let hash = chain_hash(prev, &out[start..]);
    out.pop();
    out.extend_from_slice(HASH_PREFIX);
    out.extend_from_slice(hex_into(&hash, &mut hex_buf));
    out.extend_from_slice(b"\"}\n");
    (hash, details)
}

/// A record too long for [`MAX_LINE`], as [`encode_bounded`] replaced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Replaced {
    /// Length of the line that was not written (without its newline).
    pub(crate) line_bytes: usize,
    /// Length of its details object.
    pub(crate) details_bytes: usize,
}

/// Like [`encode`], but never writes a line longer than [`MAX_LINE`]: a
/// record that would be longer is written instead as a record of the same
/// kind, number, time, actor and subjects whose details are only
///
/// ```text
/// {"replaced":{"reason":"too_long","limit":1048576,"line_bytes":N,"details_bytes":M,"details_blake3":"<hex>"}}
/// ```
///
/// (the digest is blake3 over the original details object's exact bytes).
/// If even that is too long (an actor or subjects of a megabyte), the actor
/// and subjects are dropped too and `"actor_and_subjects_dropped":true`
/// says so. Returns what [`encode`] returns and, when it replaced the
/// record, what it replaced.
pub(crate) fn encode_bounded(
    out: &mut Vec<u8>,
    head: &Head<'_>,
    write_details: impl FnOnce(&mut Vec<u8>),
    prev: &[u8; 32],
) -> ([u8; 32], std::ops::Range<usize>, Option<Replaced>) {
    let start = out.len();
    let (hash, details) = encode(out, head, write_details, prev);
    // Without the newline.
    let line_bytes = out.len() - start - 1;
    if line_bytes <= MAX_LINE {
        return (hash, details, None);
    }
    let replaced = Replaced {
        line_bytes,
        details_bytes: details.len(),
    };
    let mut replacement = serde_json::json!({
        "replaced": {
            "reason": "too_long",
            "limit": MAX_LINE,
            "line_bytes": line_bytes,
            "details_bytes": details.len(),
            "details_blake3": blake3::hash(&out[details]).to_hex().as_str(),
        }
    });
    out.truncate(start);
    let (hash, details) = encode(out, head, write_json(&replacement), prev);
    if out.len() - start - 1 <= MAX_LINE {
        return (hash, details, Some(replaced));
    }
    out.truncate(start);
    replacement["replaced"]["actor_and_subjects_dropped"] = true.into();
    let bare = Head {
        actor: None,
        subjects: &Subjects::default(),
        ..*head
    };
    let (hash, details) = encode(out, &bare, write_json(&replacement), prev);
    (hash, details, Some(replaced))
}

/// Writes `value` as JSON (into a Vec, which cannot fail).
fn write_json(value: &serde_json::Value) -> impl FnOnce(&mut Vec<u8>) + '_ {
    move |out| {
        let _ = serde_json::to_writer(out, value);
    }
}

fn hex_into<'a>(bytes: &[u8; 32], buf: &'a mut [u8; 64]) -> &'a [u8] {
    hex::encode_to_slice(bytes, buf).expect("64 bytes hold 32 bytes of hex");
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line_with(seq: u64, prev: &[u8; 32], details: &str) -> (Vec<u8>, [u8; 32]) {
        let mut out = Vec::new();
        let head = Head {
            seq,
            ts: chrono::Utc::now(),
            kind: "container.started",
            actor: Some(&Actor::host()),
            subjects: &Subjects::default(),
        };
        let (hash, range) = encode(
            &mut out,
            &head,
            |out| out.extend_from_slice(details.as_bytes()),
            prev,
        );
        assert!(out[range].starts_with(b"{"));
        (out, hash)
    }

    fn line(seq: u64, prev: &[u8; 32]) -> (Vec<u8>, [u8; 32]) {
        line_with(seq, prev, r#"{"fuel":10}"#)
    }

    #[test]
    fn details_that_are_not_an_object_are_kept_as_text() {
        for bad in ["", "[1]", "{\"a\":", "{} {}", "\u{1b}[31m"] {
            let (bytes, _) = line_with(1, &GENESIS, bad);
            let parsed = parse_line(&bytes[..bytes.len() - 1]).unwrap();
            assert_eq!(parsed.record.details["invalid_details"], bad, "{bad:?}");
        }
    }

    #[test]
    fn encode_then_parse() {
        let (bytes, hash) = line(1, &GENESIS);
        assert!(bytes.ends_with(b"\n"));
        let parsed = parse_line(&bytes[..bytes.len() - 1]).unwrap();
        assert_eq!(parsed.hash, hash);
        assert_eq!(parsed.record.seq, 1);
        assert_eq!(parsed.record.details["fuel"], 10);
    }

    #[test]
    fn a_record_longer_than_a_reader_accepts_is_replaced_by_its_size_and_digest() {
        let big = format!("{{\"message\":\"{}\"}}", "x".repeat(2 * MAX_LINE));
        let subjects = Subjects {
            container: Some("c1".into()),
            ..Subjects::default()
        };
        let head = Head {
            seq: 9,
            ts: chrono::Utc::now(),
            kind: "container.log",
            actor: Some(&Actor::host()),
            subjects: &subjects,
        };
        let mut out = b"earlier line\n".to_vec();
        let (hash, _, replaced) = encode_bounded(
            &mut out,
            &head,
            |o| o.extend_from_slice(big.as_bytes()),
            &[3; 32],
        );
        let replaced = replaced.expect("replaced");
        assert_eq!(replaced.details_bytes, big.len());
        assert!(replaced.line_bytes > MAX_LINE);
        let line = &out[b"earlier line\n".len()..out.len() - 1];
        assert!(line.len() < 1024, "{}", line.len());
        let parsed = parse_line(line).unwrap();
        assert_eq!(parsed.hash, hash);
        assert_eq!(parsed.record.seq, 9);
        assert_eq!(parsed.record.kind, "container.log");
        assert_eq!(parsed.record.subjects, subjects);
        let r = &parsed.record.details["replaced"];
        assert_eq!(r["reason"], "too_long");
        assert_eq!(r["details_bytes"], big.len());
        assert_eq!(r["line_bytes"], replaced.line_bytes);
        assert_eq!(
            r["details_blake3"],
            blake3::hash(big.as_bytes()).to_hex().as_str()
        );
        assert!(r.get("actor_and_subjects_dropped").is_none());

        // Subjects too long as well: they go too, and the record says so.
        let huge = Subjects {
            workload: Some("w".repeat(2 * MAX_LINE)),
            ..Subjects::default()
        };
        let mut out = Vec::new();
        let (_, _, replaced) = encode_bounded(
            &mut out,
            &Head {
                subjects: &huge,
                ..head
            },
            |o| o.extend_from_slice(b"{}"),
            &[3; 32],
        );
        assert!(replaced.is_some());
        let parsed = parse_line(&out[..out.len() - 1]).unwrap();
        assert!(parsed.record.subjects.is_empty());
        assert_eq!(parsed.record.actor, None);
        assert_eq!(
            parsed.record.details["replaced"]["actor_and_subjects_dropped"],
            true
        );

        // A record within the limit is written as it is.
        let mut out = Vec::new();
        let (_, _, replaced) = encode_bounded(
            &mut out,
            &head,
            |o| o.extend_from_slice(b"{\"a\":1}"),
            &[3; 32],
        );
        assert_eq!(replaced, None);
    }

    #[test]
    fn any_flipped_byte_is_caught() {
        let (bytes, _) = line(3, &[7; 32]);
        let body = &bytes[..bytes.len() - 1];
        for i in 0..body.len() {
            let mut edited = body.to_vec();
            edited[i] ^= 0x01;
            assert!(
                parse_line(&edited).is_err(),
                "flip at byte {i} went unnoticed"
            );
        }
    }

    #[test]
    fn unknown_and_duplicate_fields_are_refused() {
        let prev = hex::encode(GENESIS);
        for body in [
            format!(
                "{{\"seq\":1,\"ts\":\"2026-01-01T00:00:00Z\",\"kind\":\"audit.x\",\"actor\":null,\"subjects\":{{}},\"details\":{{}},\"prev\":\"{prev}\",\"extra\":1}}"
            ),
            format!(
                "{{\"seq\":1,\"seq\":2,\"ts\":\"2026-01-01T00:00:00Z\",\"kind\":\"audit.x\",\"actor\":null,\"subjects\":{{}},\"details\":{{}},\"prev\":\"{prev}\"}}"
            ),
        ] {
            let hash = chain_hash(&GENESIS, body.as_bytes());
            let line = format!(
                "{},\"hash\":\"{}\"}}",
                &body[..body.len() - 1],
                hex::encode(hash)
            );
            let err = parse_line(line.as_bytes()).unwrap_err();
            assert!(matches!(err, LineError::Json(_)), "{line}");
            // The parser's own error is kept as the source.
            let source = std::error::Error::source(&err);
            assert!(source.is_some_and(|s| s.is::<serde_json::Error>()), "{err}");
        }
    }
}
