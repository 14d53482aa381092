//! Audit logs built from fuzz input.
//!
//! A fuzzer cannot find a blake3 chain or an Ed25519 signature by mutation,
//! so besides raw files ([`Mode::Raw`]) an input can be a *template*
//! ([`Mode::Chained`]): every line that is a JSON object's body gets its
//! `prev` and `hash` fields appended with the right values, so the chain
//! holds whatever the bodies say, and placeholders in a body are replaced:
//!
//! - `@HEAD@`: the previous record's hash (hex), as a checkpoint's `head`;
//! - `@SIG@`: the host key's signature (hex) over the checkpoint message
//!   covering the previous record;
//! - `@KEY@` / `@KEYID@`: the host public key (hex) and its key id.
//!
//! Lines that are not `{...}` are copied as they are.

use forgeone::boot::Digest;

use crate::fixtures::KEYS;

/// How an input becomes a log file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The bytes are the file.
    Raw,
    /// The bytes are a template whose chain the builder completes.
    Chained,
}

/// Domain separator of checkpoint signatures (as in `audit/record.rs`).
const CHECKPOINT_CONTEXT: &[u8] = b"forgeone.audit.checkpoint.v1\0";

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

fn replace(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

/// blake3(prev || canonical), the record hash.
fn chain_hash(prev: &[u8; 32], canonical: &[u8]) -> [u8; 32] {
    let mut buf = Vec::with_capacity(32 + canonical.len());
    buf.extend_from_slice(prev);
    buf.extend_from_slice(canonical);
    *Digest::of(&buf).as_bytes()
}

/// The log file an input describes.
pub fn build(mode: Mode, input: &[u8]) -> Vec<u8> {
    if mode == Mode::Raw {
        return input.to_vec();
    }
    let host = &KEYS.host;
    let key_hex = host.public().to_hex();
    let key_id = host.id().to_string();
    let mut head = [0u8; 32];
    let mut records: u64 = 0;
    let mut out = Vec::with_capacity(input.len() * 2);
    let mut lines = input.split(|&b| b == b'\n').peekable();
    while let Some(line) = lines.next() {
        let last = lines.peek().is_none();
        if line.len() >= 2 && line[0] == b'{' && line[line.len() - 1] == b'}' {
            let head_hex = hex(&head);
            let mut message = CHECKPOINT_CONTEXT.to_vec();
            message.extend_from_slice(&records.to_be_bytes());
            message.extend_from_slice(&head);
            let sig_hex = hex(&host.sign(&message));
            let body = &line[..line.len() - 1];
            let body = replace(body, b"@HEAD@", head_hex.as_bytes());
            let body = replace(&body, b"@SIG@", sig_hex.as_bytes());
            let body = replace(&body, b"@KEYID@", key_id.as_bytes());
            let body = replace(&body, b"@KEY@", key_hex.as_bytes());
            let mut canonical = body;
            canonical.extend_from_slice(b",\"prev\":\"");
            canonical.extend_from_slice(head_hex.as_bytes());
            canonical.extend_from_slice(b"\"}");
            let hash = chain_hash(&head, &canonical);
            out.extend_from_slice(&canonical[..canonical.len() - 1]);
            out.extend_from_slice(b",\"hash\":\"");
            out.extend_from_slice(hex(&hash).as_bytes());
            out.extend_from_slice(b"\"}");
            head = hash;
            records += 1;
        } else {
            out.extend_from_slice(line);
        }
        if !last {
            out.push(b'\n');
        }
    }
    out
}

/// Turns a real log into a template: each line loses its `prev` and
/// `hash` fields, and a checkpoint's head, signature and key become
/// placeholders.
pub fn template_of(log: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(log);
    let mut out = String::new();
    for line in text.lines() {
        let Some(cut) = line.find(",\"prev\":\"") else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        let mut body = line[..cut].to_string();
        body.push('}');
        if let Ok(serde_json::Value::Object(record)) =
            serde_json::from_str::<serde_json::Value>(&format!("{}}}", &line[..cut]))
        {
            let details = &record["details"];
            for (field, placeholder) in [
                ("head", "@HEAD@"),
                ("signature", "@SIG@"),
                ("key_id", "@KEYID@"),
                ("host_public_key", "@KEY@"),
            ] {
                if let Some(value) = details.get(field).and_then(|v| v.as_str())
                    && !value.is_empty()
                {
                    body = body.replace(value, placeholder);
                }
            }
        }
        out.push_str(&body);
        out.push('\n');
    }
    out.into_bytes()
}
