//! Boot manifests: `BootManifest::from_bytes`, then `verify` against the
//! test anchor at a fixed time.
//!
//! Input: one flags byte, then the manifest envelope JSON. With bit 0 set
//! the payload is signed again by up to three test keys picked by bits 2-7
//! (bit 1 keeps the envelope's own signatures), so that the content rules
//! behind the signature check are reached with fuzzed documents.
#![no_main]

use std::path::{Component, Path};

use forgeone::boot::{BootManifest, Envelope, MAX_MANIFEST_BYTES};
use forgeone_fuzz::fixtures::{ANCHOR, KEYS, now};
use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: forgeone_fuzz::seeds::write_if_asked("manifest"),
    |data: &[u8]| {
        let Some((&flags, json)) = data.split_first() else {
            return;
        };
        let resigned;
        let bytes = if flags & 1 != 0 {
            let Ok(envelope) = Envelope::from_slice(json, MAX_MANIFEST_BYTES, "fuzz") else {
                return;
            };
            let mut fresh = Envelope::new(envelope.payload_type(), envelope.payload().to_vec());
            if flags & 2 != 0 {
                for signature in envelope.signatures() {
                    fresh.push_signature(signature.clone());
                }
            }
            for i in 0..3 {
                if flags & (4 << i) != 0 {
                    fresh.sign(KEYS.pick(i + usize::from(flags >> 5)));
                }
            }
            resigned = fresh.to_json();
            &resigned[..]
        } else {
            json
        };
        let base = Path::new("/fuzz/release");
        let manifest = match BootManifest::from_bytes(bytes, base) {
            Ok(manifest) => manifest,
            Err(e) => {
                let _ = (e.to_string(), e.code());
                return;
            }
        };
        let _ = (manifest.release(), manifest.version(), manifest.digest());
        let verified = manifest.verify(&ANCHOR, now());
        forgeone_fuzz::debug(|| format!("{:?}", verified.as_ref().map_err(|e| e.to_string())));
        match verified {
            Ok(signers) => {
                assert!(signers.len() >= 2, "a threshold of 2 release keys");
                assert!(!manifest.components().is_empty());
                // A verified manifest never points outside its directory.
                for c in manifest.components() {
                    let path = manifest.path_of(c);
                    let inside = path.strip_prefix(base).expect("under the base directory");
                    assert!(
                        inside
                            .components()
                            .all(|part| matches!(part, Component::Normal(_) | Component::CurDir)),
                        "component {} escapes to {}",
                        c.name,
                        path.display()
                    );
                }
            }
            Err(e) => {
                let _ = (e.to_string(), e.code());
            }
        }
    }
);
