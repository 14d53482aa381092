//! DSSE envelopes (the in-toto / sigstore "Dead Simple Signing Envelope").
//!
//! `{"payloadType", "payload" (base64), "signatures": [{"keyid", "sig"}]}`,
//! each signature over the pre-authentication encoding
//! `PAE = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body` (LEN in ASCII
//! decimal), so the payload type is signed with the payload and a signature
//! for one kind of document cannot be replayed as another.
//!
//! Strictness beyond the DSSE specification, on purpose:
//! - unknown fields are an error; `keyid` is required; base64 is the
//!   standard alphabet with canonical padding;
//! - at most [`MAX_SIGNATURES`] signatures;
//! - a signature whose `keyid` is not the id derived from the key that made
//!   it refuses the whole envelope;
//! - a signature by a known key that does not verify refuses the whole
//!   envelope (it is evidence of tampering), while signatures by keys the
//!   verifier does not know are ignored (they may belong to another party,
//!   or to the previous trust anchor during a rotation);
//! - thresholds count distinct public keys.

use std::collections::BTreeSet;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use super::{BootError, shown};
use crate::keys::{KeyId, PublicKey, SigningKey};

/// Payload type of trust anchor documents.
pub const ANCHOR_PAYLOAD_TYPE: &str = "application/vnd.forgeone.anchor.v1+json";
/// Payload type of boot manifests.
pub const MANIFEST_PAYLOAD_TYPE: &str = "application/vnd.forgeone.manifest.v1+json";
/// Payload type of per-component statements.
pub const COMPONENT_PAYLOAD_TYPE: &str = "application/vnd.forgeone.component.v1+json";
/// Payload type of boot quotes (boot reports signed by the host key).
pub const QUOTE_PAYLOAD_TYPE: &str = "application/vnd.forgeone.boot-quote.v1+json";

/// Most signatures an envelope may carry.
pub(crate) const MAX_SIGNATURES: usize = 16;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    #[serde(rename = "payloadType")]
    payload_type: String,
    payload: String,
    signatures: Vec<WireSignature>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireSignature {
    keyid: String,
    sig: String,
}

/// One signature of an envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeSignature {
    /// The key id the signature claims (unverified text until checked).
    pub keyid: String,
    /// The 64-byte Ed25519 signature.
    pub sig: Vec<u8>,
}

/// A parsed DSSE envelope: the payload type, the exact payload bytes that
/// were signed, and the signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    payload_type: String,
    payload: Vec<u8>,
    signatures: Vec<EnvelopeSignature>,
}

impl Envelope {
    /// An unsigned envelope around `payload`.
    pub fn new(payload_type: impl Into<String>, payload: Vec<u8>) -> Envelope {
        Envelope {
            payload_type: payload_type.into(),
            payload,
            signatures: Vec::new(),
        }
    }

    /// Adds a signature by `key` over the envelope's PAE. A key that already
    /// signed is not added twice (it would count once anyway).
    pub fn sign(&mut self, key: &SigningKey) -> &mut Self {
        let id = key.id().as_str();
        if !self.signatures.iter().any(|s| s.keyid == id) {
            let sig = key.sign(&self.pae());
            self.signatures.push(EnvelopeSignature {
                keyid: id.to_owned(),
                sig: sig.to_vec(),
            });
        }
        self
    }

    /// Adds a signature exactly as given, without checking it: for tools
    /// that collect signatures made elsewhere (each is checked when the
    /// envelope is verified).
    pub fn push_signature(&mut self, signature: EnvelopeSignature) -> &mut Self {
        self.signatures.push(signature);
        self
    }

    /// Parses envelope JSON of at most `limit` bytes. `source_name` (a path
    /// or a description) goes into errors.
    pub fn from_slice(
        bytes: &[u8],
        limit: usize,
        source_name: &str,
    ) -> Result<Envelope, BootError> {
        if bytes.len() > limit {
            return Err(BootError::TooLarge {
                what: source_name.to_owned(),
                size: bytes.len() as u64,
                limit: limit as u64,
            });
        }
        let malformed = |reason: String| BootError::MalformedEnvelope {
            source_name: source_name.to_owned(),
            reason,
            source: None,
        };
        let malformed_by = |reason: String, e: Box<dyn std::error::Error + Send + Sync>| {
            BootError::MalformedEnvelope {
                source_name: source_name.to_owned(),
                reason,
                source: Some(e),
            }
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(malformed("empty".into()));
        }
        let wire: Wire = serde_json::from_slice(bytes).map_err(|e| {
            let reason = if e.is_eof() {
                format!("truncated ({e})")
            } else {
                format!("not DSSE JSON ({e})")
            };
            malformed_by(reason, Box::new(e))
        })?;
        let payload = STANDARD.decode(wire.payload.as_bytes()).map_err(|e| {
            malformed_by(format!("payload is not standard base64 ({e})"), Box::new(e))
        })?;
        if wire.signatures.len() > MAX_SIGNATURES {
            return Err(malformed(format!(
                "{} signatures, more than the {MAX_SIGNATURES} allowed",
                wire.signatures.len()
            )));
        }
        let mut signatures = Vec::with_capacity(wire.signatures.len());
        for (index, s) in wire.signatures.into_iter().enumerate() {
            let sig = STANDARD.decode(s.sig.as_bytes()).map_err(|e| {
                malformed_by(
                    format!("signature {index} is not standard base64 ({e})"),
                    Box::new(e),
                )
            })?;
            if sig.len() != 64 {
                return Err(malformed(format!(
                    "signature {index} is {} bytes; an Ed25519 signature is 64",
                    sig.len()
                )));
            }
            signatures.push(EnvelopeSignature {
                keyid: s.keyid,
                sig,
            });
        }
        Ok(Envelope {
            payload_type: wire.payload_type,
            payload,
            signatures,
        })
    }

    /// Reads and parses an envelope file of at most `limit` bytes.
    pub fn from_file(path: impl AsRef<Path>, limit: usize) -> Result<Envelope, BootError> {
        let path = path.as_ref();
        let bytes = super::read::read_small(path, limit)?;
        Envelope::from_slice(&bytes, limit, &path.display().to_string())
    }

    /// The envelope as pretty JSON with a trailing newline.
    pub fn to_json(&self) -> Vec<u8> {
        let wire = Wire {
            payload_type: self.payload_type.clone(),
            payload: STANDARD.encode(&self.payload),
            signatures: self
                .signatures
                .iter()
                .map(|s| WireSignature {
                    keyid: s.keyid.clone(),
                    sig: STANDARD.encode(&s.sig),
                })
                .collect(),
        };
        let mut out = serde_json::to_vec_pretty(&wire).expect("an envelope serialises");
        out.push(b'\n');
        out
    }

    /// The payload type.
    pub fn payload_type(&self) -> &str {
        &self.payload_type
    }

    /// The exact payload bytes that are signed.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The signatures.
    pub fn signatures(&self) -> &[EnvelopeSignature] {
        &self.signatures
    }

    /// The DSSE pre-authentication encoding of this envelope.
    pub fn pae(&self) -> Vec<u8> {
        pae(&self.payload_type, &self.payload)
    }

    /// Checks the payload type, then that at least `threshold` distinct keys
    /// of `role` among `keys` signed; returns their ids (sorted).
    pub(crate) fn verify_threshold(
        &self,
        what: &str,
        expected_type: &'static str,
        keys: &[(&PublicKey, &'static str)],
        role: &'static str,
        threshold: usize,
    ) -> Result<Vec<KeyId>, BootError> {
        if self.payload_type != expected_type {
            return Err(BootError::WrongPayloadType {
                what: what.to_owned(),
                found: shown(&self.payload_type),
                expected: expected_type,
            });
        }
        let pae = self.pae();
        let mut counted: BTreeSet<KeyId> = BTreeSet::new();
        let mut notes: Vec<String> = Vec::new();
        for (index, signature) in self.signatures.iter().enumerate() {
            let named = keys
                .iter()
                .find(|(key, _)| key.id().as_str() == signature.keyid);
            let verifies = |key: &PublicKey| key.verify(&pae, &signature.sig).is_ok();
            // A signature that verifies under a key other than the one it
            // names: the key id was chosen, not derived. Refuse the envelope.
            let mislabelled = || {
                keys.iter()
                    .find(|(key, _)| key.id().as_str() != signature.keyid && verifies(key))
                    .map(|(key, _)| BootError::KeyIdMismatch {
                        what: what.to_owned(),
                        index,
                        claimed: shown(&signature.keyid),
                        actual: key.id().clone(),
                    })
            };
            match named {
                Some((key, key_role)) => {
                    if !verifies(key) {
                        return Err(mislabelled().unwrap_or_else(|| BootError::BadSignature {
                            what: what.to_owned(),
                            index,
                            key_id: key.id().clone(),
                        }));
                    }
                    if *key_role != role {
                        notes.push(format!(
                            "key {} is a {key_role} key, not a {role} key",
                            key.id()
                        ));
                    } else if !counted.insert(key.id().clone()) {
                        notes.push(format!(
                            "key {} signed more than once (counted once)",
                            key.id()
                        ));
                    }
                }
                None => {
                    if let Some(error) = mislabelled() {
                        return Err(error);
                    }
                    notes.push(format!(
                        "signature {index} is by key `{}`, which is not a trusted key",
                        shown(&signature.keyid)
                    ));
                }
            }
        }
        if counted.len() < threshold {
            if self.signatures.is_empty() {
                notes.push("the envelope has no signatures".into());
            }
            return Err(BootError::Threshold {
                what: what.to_owned(),
                role,
                required: threshold,
                found: counted.len(),
                detail: if notes.is_empty() {
                    "no further signatures".into()
                } else {
                    notes.join("; ")
                },
            });
        }
        Ok(counted.into_iter().collect())
    }
}

/// DSSE pre-authentication encoding.
pub(crate) fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let header = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    );
    let mut out = Vec::with_capacity(header.len() + payload.len());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_matches_the_dsse_spec() {
        // The example of the DSSE protocol document.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    #[test]
    fn round_trip_and_threshold() {
        let a = SigningKey::generate();
        let b = SigningKey::generate();
        let mut env = Envelope::new(COMPONENT_PAYLOAD_TYPE, b"{}".to_vec());
        env.sign(&a).sign(&a).sign(&b);
        assert_eq!(env.signatures().len(), 2);
        let parsed = Envelope::from_slice(&env.to_json(), 4096, "test").unwrap();
        assert_eq!(parsed, env);
        let keys = [(a.public(), "release"), (b.public(), "release")];
        let ids = parsed
            .verify_threshold("t", COMPONENT_PAYLOAD_TYPE, &keys, "release", 2)
            .unwrap();
        assert_eq!(ids.len(), 2);
        assert!(matches!(
            parsed.verify_threshold("t", MANIFEST_PAYLOAD_TYPE, &keys, "release", 1),
            Err(BootError::WrongPayloadType { .. })
        ));
    }
}
