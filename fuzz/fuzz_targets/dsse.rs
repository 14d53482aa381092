//! DSSE envelopes: parsing, the JSON round trip, and verification of a
//! component signature against the test anchor's release keys.
//!
//! Input: one flags byte, then the envelope JSON. With bit 0 set the
//! envelope's payload is signed again (bit 1 keeps its own signatures too)
//! by up to three test keys picked by bits 2-7, so that the statement checks
//! behind the signature check are reached with fuzzed payloads.
#![no_main]

use forgeone::boot::{ComponentCheck, Envelope, MAX_STATEMENT_BYTES};
use forgeone_fuzz::fixtures::{ANCHOR, KEYS, now};
use forgeone_fuzz::seeds::COMPONENT;
use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: forgeone_fuzz::seeds::write_if_asked("dsse"),
    |data: &[u8]| {
        let Some((&flags, json)) = data.split_first() else {
            return;
        };
        let Ok(mut envelope) = Envelope::from_slice(json, MAX_STATEMENT_BYTES, "fuzz") else {
            return;
        };
        // What is written out reads back as the same envelope.
        let again = Envelope::from_slice(&envelope.to_json(), usize::MAX, "round trip")
            .expect("an envelope's own JSON parses");
        assert_eq!(again, envelope);
        let _ = envelope.pae();

        if flags & 1 != 0 {
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
            envelope = fresh;
        }

        let mut check = ComponentCheck::new(&ANCHOR);
        check.now(now());
        let verified = check.verify(COMPONENT, &envelope);
        forgeone_fuzz::debug(|| format!("{:?}", verified.as_ref().map(|c| c.signers().len()).map_err(|e| e.to_string())));
        if let Ok(component) = verified {
            // Only a threshold of distinct release keys makes it through.
            assert!(component.signers().len() >= 2);
            assert!(component.is_signed());
        }
    }
);
