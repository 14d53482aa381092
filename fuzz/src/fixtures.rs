//! Deterministic test keys, a test trust anchor and a fixed clock.
//!
//! The keys are derived from public labels (`blake3("forgeone-fuzz/<label>")`
//! as the Ed25519 seed): they are test fixtures anyone can recompute, never
//! credentials, and they are the same in every process so that committed
//! seeds with valid signatures keep verifying.

use std::sync::LazyLock;

use chrono::{DateTime, TimeZone as _, Utc};
use forgeone::SigningKey;
use forgeone::boot::{AnchorDocument, Digest, Role, Thresholds, TrustAnchor};

/// The clock every verification runs at: 2030-01-01T00:00:00Z.
pub fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap()
}

/// A test key derived from `label`.
pub fn key(label: &str) -> SigningKey {
    let seed = Digest::of(format!("forgeone-fuzz/{label}").as_bytes());
    // PKCS#8 v1 for Ed25519: the fixed prefix, then the 32-byte seed.
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(seed.as_bytes());
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        base64(&der)
    );
    SigningKey::from_pem(&pem).expect("a derived PKCS#8 key parses")
}

/// The test keys: two root keys, three release keys, and one key the
/// anchor does not list.
pub struct Keys {
    /// Root keys (threshold 1).
    pub root: [SigningKey; 2],
    /// Release keys (threshold 2).
    pub release: [SigningKey; 3],
    /// A key no anchor lists.
    pub stranger: SigningKey,
    /// The host key that signs audit checkpoints.
    pub host: SigningKey,
}

/// The test keys, derived once.
pub static KEYS: LazyLock<Keys> = LazyLock::new(|| Keys {
    root: [key("root-1"), key("root-2")],
    release: [key("release-1"), key("release-2"), key("release-3")],
    stranger: key("stranger"),
    host: key("host"),
});

impl Keys {
    /// The key with index `i` of all of them (roots, releases, stranger),
    /// for inputs that pick signers by number.
    pub fn pick(&self, i: usize) -> &SigningKey {
        match i % 6 {
            0 => &self.release[0],
            1 => &self.release[1],
            2 => &self.release[2],
            3 => &self.root[0],
            4 => &self.root[1],
            _ => &self.stranger,
        }
    }
}

/// The test anchor's document: id and times fixed, both root keys (root
/// threshold 1) and the three release keys (release threshold 2), valid
/// from 2029 to 2100.
pub fn anchor_document(version: u64) -> AnchorDocument {
    let keys = &*KEYS;
    let mut doc = AnchorDocument::new(Utc.with_ymd_and_hms(2100, 1, 1, 0, 0, 0).unwrap());
    doc.id = uuid::Uuid::from_u128(0x0f0e_0d0c_0b0a_0908_0706_0504_0302_0100);
    doc.version = version;
    doc.issued_at = Utc.with_ymd_and_hms(2029, 1, 1, 0, 0, 0).unwrap();
    for k in &keys.root {
        doc.add_key(Role::Root, k.public());
    }
    for k in &keys.release {
        doc.add_key(Role::Release, k.public());
    }
    doc.thresholds = Thresholds {
        root: 1,
        release: 2,
        deploy: 1,
    };
    doc.metadata
        .insert("owner".into(), "forgeone fuzzing".into());
    doc
}

/// The test anchor's envelope bytes, signed by the first root key.
pub fn anchor_bytes() -> Vec<u8> {
    let mut envelope = anchor_document(1).envelope();
    envelope.sign(&KEYS.root[0]);
    envelope.to_json()
}

/// The test anchor every signature is verified against.
pub static ANCHOR: LazyLock<TrustAnchor> = LazyLock::new(|| {
    let anchor = TrustAnchor::from_bytes(&anchor_bytes()).expect("the test anchor verifies");
    anchor
        .check_time(now())
        .expect("the test anchor is valid now");
    anchor
});

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
