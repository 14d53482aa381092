//! Trust anchors: `TrustAnchor::from_bytes` and the checks a boot makes
//! with one (validity at a time, rotation from and to the test anchor, a
//! manifest and a component signature verified under it).
//!
//! Input: one flags byte, then the anchor envelope JSON. With bit 0 set the
//! payload is signed again by up to three test keys picked by bits 2-7 (bit
//! 1 keeps the envelope's own signatures), so that the document checks
//! behind the self-signature are reached with fuzzed documents.
#![no_main]

use forgeone::boot::{ComponentCheck, Envelope, MAX_ANCHOR_BYTES, Role, TrustAnchor};
use forgeone_fuzz::fixtures::{ANCHOR, KEYS, now};
use forgeone_fuzz::seeds::{COMPONENT, MANIFEST, STATEMENT};
use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: forgeone_fuzz::seeds::write_if_asked("anchor"),
    |data: &[u8]| {
        let Some((&flags, json)) = data.split_first() else {
            return;
        };
        let resigned;
        let bytes = if flags & 1 != 0 {
            let Ok(envelope) = Envelope::from_slice(json, MAX_ANCHOR_BYTES, "fuzz") else {
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
        let anchor = match TrustAnchor::from_bytes(bytes) {
            Ok(anchor) => anchor,
            Err(e) => {
                forgeone_fuzz::debug(|| format!("refused: {e}"));
                let _ = (e.to_string(), e.code(), e.is_operational());
                return;
            }
        };
        // What a loaded anchor promises.
        let roots = anchor.keys_of(Role::Root).count() as u64;
        let releases = anchor.keys_of(Role::Release).count() as u64;
        let t = anchor.thresholds();
        assert!((1..=roots).contains(&t.root) && (1..=releases).contains(&t.release));
        assert!(anchor.signers().len() as u64 >= t.root);
        assert!(anchor.version() >= 1 && anchor.expires_at() > anchor.issued_at());
        let _ = (anchor.id(), anchor.digest(), anchor.metadata(), anchor.document());

        let time = anchor.check_time(now());
        let successor = ANCHOR.verify_successor(&anchor);
        forgeone_fuzz::debug(|| format!("loaded v{}: time {:?}, successor {:?}", anchor.version(), time.as_ref().map_err(|e| e.to_string()), successor.as_ref().map_err(|e| e.to_string())));
        if successor.is_ok() {
            assert!(anchor.version() > ANCHOR.version());
            assert_eq!(anchor.id(), ANCHOR.id());
        }
        let _ = anchor.verify_successor(&ANCHOR);
        let _ = MANIFEST.verify(&anchor, now());
        let mut check = ComponentCheck::new(&anchor);
        check.now(now());
        let _ = check.verify(COMPONENT, &STATEMENT);
    }
);
