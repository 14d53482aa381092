//! The bad-input list, one test per item: each asserts the precise
//! reason, an audit record, and that nothing reaches the runtime.

use chrono::{Duration, Utc};
use forgeone::SigningKey;
use forgeone::boot::{
    BootError, COMPONENT_PAYLOAD_TYPE, ComponentStatement, Envelope, EnvelopeSignature,
    MANIFEST_PAYLOAD_TYPE, MeasurementStatus, TrustAnchor, verify_component,
};

use super::{World, assert_nothing_runs, flip, other_bytes, record, refused};

/// A statement for the world's hello bytes, signed by the release key.
fn hello_signature(world: &World) -> Envelope {
    ComponentStatement::new("hello", "1.0.0", &world.hello, None).sign(&[&world.release])
}

fn anchor_of(world: &World) -> TrustAnchor {
    TrustAnchor::from_file(world.anchor()).unwrap()
}

// ---- Flipped, appended, prepended bytes -------------------------------------

#[test]
fn flipped_byte_anywhere_is_refused_at_boot() {
    let len = hello_bytes_len();
    // The magic, a byte in the middle of the code, and the last byte, which
    // lies in the appended custom section.
    for at in [0, len / 2, len - 1] {
        let world = World::new();
        let (anchor, manifest) = (world.anchor(), world.manifest(1));
        world.write("hello.wasm", &flip(&world.hello, at));
        let booted = world.boot(&anchor, &manifest, |_| {});
        let ctx = booted.ctx();
        assert_nothing_runs(ctx);
        let m = &ctx.boot_measurements[2];
        assert_eq!(
            (m.component.as_str(), m.status),
            ("hello", MeasurementStatus::Invalid)
        );
        assert!(
            m.reason
                .as_deref()
                .unwrap()
                .contains("does not match the signed"),
            "byte {at}: {m:?}"
        );
        let rec = refused(&booted.records, "digest-mismatch");
        assert_eq!(
            rec["subjects"]["component"],
            blake3::hash(&flip(&world.hello, at)).to_hex().as_str(),
            "the refused digest is the audit subject"
        );
        assert_eq!(
            record(&booted.records, "boot.completed")["details"]["outcome"],
            "compromised"
        );
    }
}

fn hello_bytes_len() -> usize {
    super::hello_bytes().len()
}

#[test]
fn flipped_byte_in_custom_section_is_refused_by_signature() {
    let world = World::new();
    let anchor = anchor_of(&world);
    let envelope = hello_signature(&world);
    let tampered = flip(&world.hello, world.hello.len() - 100);
    let (result, records) = world.check(&anchor, tampered, &envelope, |_| {});
    assert!(
        matches!(result, Err(BootError::DigestMismatch { ref name, .. }) if name == "hello"),
        "{result:?}"
    );
    refused(&records, "digest-mismatch");
}

#[test]
fn appended_bytes_are_refused() {
    let world = World::new();
    let (anchor, manifest) = (world.anchor(), world.manifest(1));
    let mut longer = world.hello.clone();
    longer.push(0);
    world.write("hello.wasm", &longer);
    let booted = world.boot(&anchor, &manifest, |_| {});
    assert_nothing_runs(booted.ctx());
    let rec = refused(&booted.records, "size-mismatch");
    assert!(
        rec["details"]["reason"]
            .as_str()
            .unwrap()
            .contains(&format!(
                "{} bytes where the signed size is {}",
                longer.len(),
                world.hello.len()
            ))
    );

    // The same with a per-component signature.
    let (result, records) =
        world.check(&anchor_of(&world), longer, &hello_signature(&world), |_| {});
    assert!(
        matches!(result, Err(BootError::SizeMismatch { .. })),
        "{result:?}"
    );
    refused(&records, "size-mismatch");
}

#[test]
fn prepended_bytes_are_refused() {
    let world = World::new();
    let (anchor, manifest) = (world.anchor(), world.manifest(1));
    let mut longer = vec![0u8];
    longer.extend_from_slice(&world.hello);
    world.write("hello.wasm", &longer);
    let booted = world.boot(&anchor, &manifest, |_| {});
    assert_nothing_runs(booted.ctx());
    refused(&booted.records, "size-mismatch");

    // Prepended and the last byte dropped: same size, so the digest catches it.
    let mut shifted = vec![0u8];
    shifted.extend_from_slice(&world.hello[..world.hello.len() - 1]);
    let (result, records) = world.check(
        &anchor_of(&world),
        shifted,
        &hello_signature(&world),
        |_| {},
    );
    assert!(
        matches!(result, Err(BootError::DigestMismatch { .. })),
        "{result:?}"
    );
    refused(&records, "digest-mismatch");
}

// ---- Who signed, and what ----------------------------------------------------

#[test]
fn signature_by_unknown_key_is_refused() {
    let world = World::new();
    let stranger = SigningKey::generate();
    let envelope = ComponentStatement::new("hello", "1.0.0", &world.hello, None).sign(&[&stranger]);
    let (result, records) = world.check(&anchor_of(&world), world.hello.clone(), &envelope, |_| {});
    match &result {
        Err(BootError::Threshold {
            required: 1,
            found: 0,
            detail,
            ..
        }) => assert!(
            detail.contains(stranger.id().as_str()) && detail.contains("not a trusted key"),
            "{detail}"
        ),
        other => panic!("{other:?}"),
    }
    refused(&records, "threshold");

    // A manifest signed by an unknown key: the whole boot is refused.
    let anchor = world.anchor();
    let doc = world.manifest_doc(1, &[("hello", "1.0.0", "hello.wasm")]);
    let manifest = world.write_manifest(&doc, &[&stranger]);
    let booted = world.boot(&anchor, &manifest, |_| {});
    assert_nothing_runs(booted.ctx());
    let rec = record(&booted.records, "boot.manifest.refused");
    assert_eq!(rec["details"]["code"], "threshold");
    assert!(
        rec["details"]["reason"]
            .as_str()
            .unwrap()
            .contains(stranger.id().as_str())
    );
}

#[test]
fn signature_by_a_root_key_does_not_count_as_release() {
    let world = World::new();
    let envelope =
        ComponentStatement::new("hello", "1.0.0", &world.hello, None).sign(&[&world.root]);
    let (result, records) = world.check(&anchor_of(&world), world.hello.clone(), &envelope, |_| {});
    match &result {
        Err(BootError::Threshold {
            role: "release",
            found: 0,
            detail,
            ..
        }) => {
            assert!(
                detail.contains("is a root key, not a release key"),
                "{detail}"
            )
        }
        other => panic!("{other:?}"),
    }
    refused(&records, "threshold");
}

#[test]
fn key_id_that_is_not_derived_is_refused() {
    let world = World::new();
    // Signed by the release key, but labelled with the root key's id.
    let mut envelope = Envelope::new(
        COMPONENT_PAYLOAD_TYPE,
        ComponentStatement::new("hello", "1.0.0", &world.hello, None).to_payload(),
    );
    let sig = world.release.sign(&envelope.pae()).to_vec();
    envelope.push_signature(EnvelopeSignature {
        keyid: world.root.id().to_string(),
        sig,
    });
    let (result, records) = world.check(&anchor_of(&world), world.hello.clone(), &envelope, |_| {});
    match &result {
        Err(BootError::KeyIdMismatch {
            claimed, actual, ..
        }) => {
            assert_eq!(claimed, world.root.id().as_str());
            assert_eq!(actual, world.release.id());
        }
        other => panic!("{other:?}"),
    }
    refused(&records, "key-id-mismatch");
}

#[test]
fn signature_for_another_component_is_refused() {
    let world = World::new();
    let anchor = anchor_of(&world);
    // A valid signature of another component of the same size.
    let other = other_bytes();
    assert_eq!(other.len(), world.hello.len());
    let envelope = ComponentStatement::new("hello", "1.0.0", &other, None).sign(&[&world.release]);
    let (result, records) = world.check(&anchor, world.hello.clone(), &envelope, |_| {});
    assert!(
        matches!(result, Err(BootError::DigestMismatch { .. })),
        "{result:?}"
    );
    refused(&records, "digest-mismatch");

    // A valid signature of a component named otherwise, where `hello` is expected.
    let envelope =
        ComponentStatement::new("other", "1.0.0", &world.hello, None).sign(&[&world.release]);
    let (result, records) = world.check(&anchor, world.hello.clone(), &envelope, |c| {
        c.expect_name("hello");
    });
    match &result {
        Err(BootError::WrongComponent { expected, found }) => {
            assert_eq!(
                (expected.as_str(), found.as_str()),
                ("hello@1.0.0", "other@1.0.0")
            )
        }
        other => panic!("{other:?}"),
    }
    refused(&records, "wrong-component");
}

#[test]
fn signature_of_another_payload_type_is_refused() {
    let world = World::new();
    let anchor = anchor_of(&world);
    let statement = ComponentStatement::new("hello", "1.0.0", &world.hello, None).to_payload();

    // The statement's bytes signed as a boot manifest, replayed as a component signature.
    let mut as_manifest = Envelope::new(MANIFEST_PAYLOAD_TYPE, statement.clone());
    as_manifest.sign(&world.release);
    let (result, records) = world.check(&anchor, world.hello.clone(), &as_manifest, |_| {});
    match &result {
        Err(BootError::WrongPayloadType {
            found, expected, ..
        }) => {
            assert_eq!(
                (found.as_str(), *expected),
                (MANIFEST_PAYLOAD_TYPE, COMPONENT_PAYLOAD_TYPE)
            )
        }
        other => panic!("{other:?}"),
    }
    refused(&records, "wrong-payload-type");

    // The same envelope with its payloadType rewritten: the signature covers the type.
    let json = String::from_utf8(as_manifest.to_json())
        .unwrap()
        .replace(MANIFEST_PAYLOAD_TYPE, COMPONENT_PAYLOAD_TYPE);
    let retyped = Envelope::from_slice(json.as_bytes(), 65536, "retyped").unwrap();
    let (result, records) = world.check(&anchor, world.hello.clone(), &retyped, |_| {});
    assert!(
        matches!(result, Err(BootError::BadSignature { ref key_id, .. }) if key_id == world.release.id()),
        "{result:?}"
    );
    refused(&records, "bad-signature");

    // A boot manifest envelope handed to the boot as its anchor.
    let manifest = world.manifest(1);
    let booted = world.boot(&manifest, &manifest, |_| {});
    assert!(
        matches!(booted.err(), BootError::WrongPayloadType { .. }),
        "{}",
        booted.err()
    );
    assert_eq!(
        record(&booted.records, "boot.anchor.refused")["details"]["code"],
        "wrong-payload-type"
    );
}

#[test]
fn signature_over_a_different_name_or_version_is_refused() {
    let world = World::new();
    let anchor = anchor_of(&world);
    let envelope = hello_signature(&world);
    let json = String::from_utf8(envelope.to_json()).unwrap();
    let payload = String::from_utf8(envelope.payload().to_vec()).unwrap();
    for (from, to) in [("\"hello\"", "\"hellO\""), ("\"1.0.0\"", "\"1.0.1\"")] {
        // Re-encode the payload with the name (then the version) changed,
        // keeping the signature made over the original.
        let edited = payload.replacen(from, to, 1);
        assert_ne!(edited, payload);
        let b64 = |s: &str| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(s)
        };
        let forged = json.replace(&b64(&payload), &b64(&edited));
        let forged = Envelope::from_slice(forged.as_bytes(), 65536, "forged").unwrap();
        assert_eq!(forged.payload(), edited.as_bytes());
        let (result, records) = world.check(&anchor, world.hello.clone(), &forged, |_| {});
        assert!(
            matches!(result, Err(BootError::BadSignature { .. })),
            "{to}: {result:?}"
        );
        refused(&records, "bad-signature");
    }

    // A valid signature of version 1.0.0 where 2.0.0 is expected.
    let (result, records) = world.check(&anchor, world.hello.clone(), &envelope, |c| {
        c.expect_version("2.0.0");
    });
    assert!(
        matches!(result, Err(BootError::WrongComponent { .. })),
        "{result:?}"
    );
    refused(&records, "wrong-component");
}

// ---- Malformed envelopes ---------------------------------------------------

fn sig_file_refusal(world: &World, contents: &[u8]) -> (BootError, Vec<serde_json::Value>) {
    let anchor = anchor_of(world);
    let sig = world.write("hello.wasm.sig.json", contents);
    let log_path = world.path("sig-audit.jsonl");
    let _ = std::fs::remove_file(&log_path);
    let log = forgeone::audit::AuditLog::open(
        &log_path,
        SigningKey::generate(),
        &forgeone::audit::AuditConfig::new(),
    )
    .unwrap();
    let result = forgeone::boot::ComponentCheck::new(&anchor)
        .audit(log.clone())
        .verify_file(world.path("hello.wasm"));
    log.close().unwrap();
    assert_eq!(sig, world.path("hello.wasm.sig.json"));
    match result {
        Ok(c) => panic!("verified {c:?}"),
        Err(e) => (e, super::boot_records(&log_path)),
    }
}

#[test]
fn truncated_envelope_is_refused() {
    let world = World::new();
    let full = hello_signature(&world).to_json();
    let (error, records) = sig_file_refusal(&world, &full[..full.len() / 2]);
    match &error {
        BootError::MalformedEnvelope {
            source_name,
            reason,
            ..
        } => {
            assert!(
                source_name.ends_with("hello.wasm.sig.json"),
                "{source_name}"
            );
            assert!(reason.starts_with("truncated"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    refused(&records, "malformed-envelope");
}

#[test]
fn empty_envelope_is_refused() {
    let world = World::new();
    let (error, records) = sig_file_refusal(&world, b"");
    assert!(
        matches!(&error, BootError::MalformedEnvelope { reason, .. } if reason == "empty"),
        "{error:?}"
    );
    refused(&records, "malformed-envelope");
}

#[test]
fn non_json_envelope_is_refused() {
    let world = World::new();
    let (error, records) = sig_file_refusal(&world, b"-----BEGIN SIGNATURE-----\nnot json\n");
    assert!(
        matches!(&error, BootError::MalformedEnvelope { reason, .. } if reason.starts_with("not DSSE JSON")),
        "{error:?}"
    );
    refused(&records, "malformed-envelope");

    // JSON, but with a field DSSE does not have.
    let json = String::from_utf8(hello_signature(&world).to_json())
        .unwrap()
        .replacen('{', "{\"extra\": 1, ", 1);
    let (error, _) = sig_file_refusal(&world, json.as_bytes());
    assert!(
        matches!(&error, BootError::MalformedEnvelope { reason, .. } if reason.contains("unknown field `extra`")),
        "{error:?}"
    );
}

#[test]
fn oversized_envelope_is_refused_before_parsing() {
    let world = World::new();
    // A valid envelope padded with whitespace past the 64 KiB limit: it
    // would verify if the limit were not enforced.
    let mut padded = hello_signature(&world).to_json();
    padded.extend(std::iter::repeat_n(
        b' ',
        forgeone::boot::MAX_STATEMENT_BYTES,
    ));
    let (error, records) = sig_file_refusal(&world, &padded);
    match &error {
        BootError::TooLarge { size, limit, .. } => {
            assert_eq!(
                (*size, *limit),
                (
                    padded.len() as u64,
                    forgeone::boot::MAX_STATEMENT_BYTES as u64
                )
            )
        }
        other => panic!("{other:?}"),
    }
    refused(&records, "too-large");
}

// ---- Thresholds and keys in the anchor ----------------------------------------

#[test]
fn duplicate_signatures_by_one_key_count_once() {
    let world = World::new();
    let second = SigningKey::generate();
    let mut doc = world.anchor_doc();
    doc.add_key(forgeone::boot::Role::Release, second.public());
    doc.thresholds.release = 2;
    let anchor = world.write_anchor(&doc, &[&world.root]);

    // The manifest carries two signatures, both by the first release key.
    let manifest_doc = world.manifest_doc(1, &[("hello", "1.0.0", "hello.wasm")]);
    let mut envelope = manifest_doc.sign(&[&world.release]);
    let again = envelope.signatures()[0].clone();
    envelope.push_signature(again);
    assert_eq!(envelope.signatures().len(), 2);
    let manifest = world.write("dup-manifest.json", &envelope.to_json());
    let booted = world.boot(&anchor, &manifest, |_| {});
    assert_nothing_runs(booted.ctx());
    let rec = record(&booted.records, "boot.manifest.refused");
    assert_eq!(rec["details"]["code"], "threshold");
    let reason = rec["details"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("needs signatures by 2 distinct release key(s), found 1"),
        "{reason}"
    );
    assert!(
        reason.contains("signed more than once (counted once)"),
        "{reason}"
    );

    // Signed by both keys, the same manifest boots.
    let mut both = manifest_doc.sign(&[&world.release]);
    both.sign(&second);
    let manifest = world.write("both-manifest.json", &both.to_json());
    let booted = world.boot(&anchor, &manifest, |_| {});
    assert_eq!(booted.ctx().outcome, forgeone::boot::BootOutcome::Verified);
}

#[test]
fn same_key_listed_twice_is_refused() {
    let world = World::new();
    // Once as root, again as release: it would count in both roles.
    let mut doc = world.anchor_doc();
    doc.add_key(forgeone::boot::Role::Release, world.root.public());
    let anchor = world.write_anchor(&doc, &[&world.root]);
    let booted = world.boot(&anchor, &world.manifest(1), |_| {});
    match booted.err() {
        BootError::DuplicateKey {
            key_id,
            first,
            second,
        } => {
            assert_eq!((key_id, *first, *second), (world.root.id(), 0, 2))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        record(&booted.records, "boot.anchor.refused")["details"]["code"],
        "duplicate-key"
    );
}

#[test]
fn same_key_under_two_ids_is_refused() {
    let world = World::new();
    let mut doc = world.anchor_doc();
    let mut entry =
        forgeone::boot::AnchorKeyEntry::new(forgeone::boot::Role::Release, world.release.public());
    entry.keyid = "00112233445566778899aabbccddeeff".into();
    doc.keys.push(entry);
    let anchor = world.write_anchor(&doc, &[&world.root]);
    let booted = world.boot(&anchor, &world.manifest(1), |_| {});
    assert!(
        matches!(booted.err(), BootError::DuplicateKey { key_id, .. } if key_id == world.release.id()),
        "{}",
        booted.err()
    );
    assert_eq!(
        record(&booted.records, "boot.anchor.refused")["details"]["code"],
        "duplicate-key"
    );
}

#[test]
fn threshold_zero_is_refused() {
    let world = World::new();
    let mut doc = world.anchor_doc();
    doc.thresholds.root = 0;
    // Unsigned: with a threshold of 0 it would need no signature at all.
    let anchor = world.write_anchor(&doc, &[]);
    let booted = world.boot(&anchor, &world.manifest(1), |_| {});
    assert!(
        matches!(
            booted.err(),
            BootError::BadThreshold {
                role: "root",
                threshold: 0,
                keys: 1
            }
        ),
        "{}",
        booted.err()
    );
    assert_eq!(
        record(&booted.records, "boot.anchor.refused")["details"]["code"],
        "bad-threshold"
    );
}

#[test]
fn threshold_above_key_count_is_refused() {
    let world = World::new();
    let mut doc = world.anchor_doc();
    doc.thresholds.release = 2;
    let anchor = world.write_anchor(&doc, &[&world.root]);
    let booted = world.boot(&anchor, &world.manifest(1), |_| {});
    assert!(
        matches!(
            booted.err(),
            BootError::BadThreshold {
                role: "release",
                threshold: 2,
                keys: 1
            }
        ),
        "{}",
        booted.err()
    );
    assert_eq!(
        record(&booted.records, "boot.anchor.refused")["details"]["code"],
        "bad-threshold"
    );
}

#[test]
fn low_order_public_key_is_refused() {
    let world = World::new();
    let mut doc = world.anchor_doc();
    // The identity point: a small-order key under which forged signatures verify.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    doc.keys.push(forgeone::boot::AnchorKeyEntry {
        keyid: forgeone::KeyId::of(&identity).to_string(),
        role: forgeone::boot::Role::Release,
        public_key: hex_of(&identity),
    });
    let anchor = world.write_anchor(&doc, &[&world.root]);
    let booted = world.boot(&anchor, &world.manifest(1), |_| {});
    match booted.err() {
        BootError::AnchorKey {
            index: 2,
            role: "release",
            source,
        } => {
            assert!(matches!(source, forgeone::KeyError::Weak(_)), "{source}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        record(&booted.records, "boot.anchor.refused")["details"]["code"],
        "bad-key"
    );
}

#[test]
fn malformed_public_key_is_refused() {
    for (public_key, expect) in [
        ("00".repeat(31), "expected 32 bytes, got 31"),
        ("zz".repeat(32), "not hex"),
    ] {
        let world = World::new();
        let mut doc = world.anchor_doc();
        doc.keys[1].public_key = public_key;
        let anchor = world.write_anchor(&doc, &[&world.root]);
        let booted = world.boot(&anchor, &world.manifest(1), |_| {});
        match booted.err() {
            BootError::AnchorKey {
                index: 1,
                source: forgeone::KeyError::Malformed(m),
                ..
            } => {
                assert!(m.contains(expect), "{m}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            record(&booted.records, "boot.anchor.refused")["details"]["code"],
            "bad-key"
        );
    }
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---- Expiry ------------------------------------------------------------------

#[test]
fn expired_anchor_is_refused() {
    let world = World::new();
    let mut doc = world.anchor_doc();
    doc.expires_at = Utc::now() + Duration::hours(1);
    let anchor = world.write_anchor(&doc, &[&world.root]);
    let manifest = world.manifest(1);
    let later = Utc::now() + Duration::hours(2);
    let booted = world.boot(&anchor, &manifest, |b| {
        b.now(later);
    });
    assert!(
        matches!(booted.err(), BootError::Expired { what, .. } if what.starts_with("trust anchor")),
        "{}",
        booted.err()
    );
    assert_eq!(
        record(&booted.records, "boot.anchor.refused")["details"]["code"],
        "expired"
    );
    // Before the expiry it boots.
    let booted = world.boot(&anchor, &manifest, |_| {});
    assert_eq!(booted.ctx().outcome, forgeone::boot::BootOutcome::Verified);
}

#[test]
fn expired_manifest_is_refused() {
    let world = World::new();
    let anchor = world.anchor();
    let mut doc = world.manifest_doc(1, &[("hello", "1.0.0", "hello.wasm")]);
    doc.expires_at = Utc::now() + Duration::hours(1);
    let manifest = world.write_manifest(&doc, &[&world.release]);
    let booted = world.boot(&anchor, &manifest, |b| {
        b.now(Utc::now() + Duration::hours(2));
    });
    let ctx = booted.ctx();
    assert_nothing_runs(ctx);
    assert_eq!(ctx.boot_measurements[1].status, MeasurementStatus::Invalid);
    let rec = record(&booted.records, "boot.manifest.refused");
    assert_eq!(rec["details"]["code"], "expired");
    assert!(
        rec["details"]["reason"]
            .as_str()
            .unwrap()
            .contains("boot manifest 2026.1 v1 expired at")
    );
}

#[test]
fn expired_statement_is_refused() {
    let world = World::new();
    let anchor = anchor_of(&world);
    let envelope = ComponentStatement::new(
        "hello",
        "1.0.0",
        &world.hello,
        Some(Utc::now() + Duration::hours(1)),
    )
    .sign(&[&world.release]);
    let (result, records) = world.check(&anchor, world.hello.clone(), &envelope, |c| {
        c.now(Utc::now() + Duration::hours(2));
    });
    assert!(
        matches!(&result, Err(BootError::Expired { what, .. }) if what == "signature of hello@1.0.0"),
        "{result:?}"
    );
    refused(&records, "expired");
    // Within its validity it verifies.
    assert!(verify_component(world.hello.clone(), &envelope, &anchor).is_ok());
}

#[test]
fn statement_issued_in_the_future_is_refused() {
    let world = World::new();
    let anchor = anchor_of(&world);
    let mut statement = ComponentStatement::new("hello", "1.0.0", &world.hello, None);
    statement.predicate.issued_at = Utc::now() + Duration::hours(1);
    let envelope = statement.sign(&[&world.release]);
    let (result, records) = world.check(&anchor, world.hello.clone(), &envelope, |_| {});
    assert!(
        matches!(result, Err(BootError::NotYetValid { .. })),
        "{result:?}"
    );
    refused(&records, "not-yet-valid");
}

// ---- Mixed releases, not Wasm, paths, sizes ------------------------------------

#[test]
fn manifest_mixing_releases_is_refused() {
    let world = World::new();
    world.write("other.wasm", &other_bytes());
    let anchor = world.anchor();
    let mut doc = world.manifest_doc(
        1,
        &[
            ("hello", "1.0.0", "hello.wasm"),
            ("other", "1.0.0", "other.wasm"),
        ],
    );
    doc.components[1].release = "2025.4".into();
    let manifest = world.write_manifest(&doc, &[&world.release]);
    let booted = world.boot(&anchor, &manifest, |_| {});
    assert_nothing_runs(booted.ctx());
    let rec = record(&booted.records, "boot.manifest.refused");
    assert_eq!(rec["details"]["code"], "mixed-release");
    assert!(
        rec["details"]["reason"]
            .as_str()
            .unwrap()
            .contains("lists component other of release 2025.4")
    );
}

#[test]
fn component_that_is_not_wasm_is_refused() {
    let world = World::new();
    let elf = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0not a component".to_vec();
    world.write("tool.wasm", &elf);
    let anchor = world.anchor();
    let manifest = world.write_manifest(
        &world.manifest_doc(1, &[("tool", "1.0.0", "tool.wasm")]),
        &[&world.release],
    );
    let booted = world.boot(&anchor, &manifest, |_| {});
    assert_nothing_runs(booted.ctx());
    let rec = refused(&booted.records, "not-wasm");
    assert!(
        rec["details"]["reason"]
            .as_str()
            .unwrap()
            .contains("bad magic 7f454c46"),
        "{rec}"
    );

    // Signed on its own, it is refused the same way.
    let envelope = ComponentStatement::new("tool", "1.0.0", &elf, None).sign(&[&world.release]);
    let (result, records) = world.check(&anchor_of(&world), elf, &envelope, |_| {});
    assert!(
        matches!(result, Err(BootError::NotWasm { .. })),
        "{result:?}"
    );
    refused(&records, "not-wasm");
}

#[test]
fn missing_component_path_is_refused() {
    let world = World::new();
    let anchor = world.anchor();
    let mut doc = world.manifest_doc(1, &[("hello", "1.0.0", "hello.wasm")]);
    doc.components[0].path = "gone.wasm".into();
    let manifest = world.write_manifest(&doc, &[&world.release]);
    let booted = world.boot(&anchor, &manifest, |_| {});
    let ctx = booted.ctx();
    assert_nothing_runs(ctx);
    assert_eq!(
        ctx.boot_measurements[2].status,
        MeasurementStatus::NotMeasured
    );
    let rec = refused(&booted.records, "missing");
    assert!(
        rec["details"]["reason"]
            .as_str()
            .unwrap()
            .ends_with("gone.wasm: no such file")
    );

    let (error, records) = {
        let anchor = anchor_of(&world);
        let log_path = world.path("missing-audit.jsonl");
        let log = forgeone::audit::AuditLog::open(
            &log_path,
            SigningKey::generate(),
            &forgeone::audit::AuditConfig::new(),
        )
        .unwrap();
        std::fs::write(
            world.path("gone.wasm.sig.json"),
            hello_signature(&world).to_json(),
        )
        .unwrap();
        let result = forgeone::boot::ComponentCheck::new(&anchor)
            .audit(log.clone())
            .verify_file(world.path("gone.wasm"));
        log.close().unwrap();
        (result.unwrap_err(), super::boot_records(&log_path))
    };
    assert!(
        matches!(&error, BootError::Missing { path } if path.ends_with("gone.wasm")),
        "{error:?}"
    );
    refused(&records, "missing");
}

#[test]
fn directory_component_path_is_refused() {
    let world = World::new();
    std::fs::create_dir(world.path("plugins")).unwrap();
    let anchor = world.anchor();
    let mut doc = world.manifest_doc(1, &[("hello", "1.0.0", "hello.wasm")]);
    doc.components[0].path = "plugins".into();
    let manifest = world.write_manifest(&doc, &[&world.release]);
    let booted = world.boot(&anchor, &manifest, |_| {});
    assert_nothing_runs(booted.ctx());
    let rec = refused(&booted.records, "not-a-file");
    assert!(
        rec["details"]["reason"]
            .as_str()
            .unwrap()
            .ends_with("plugins: is a directory, not a regular file")
    );
}

#[test]
fn oversized_component_is_refused_before_reading() {
    let world = World::new();
    let (anchor, manifest) = (world.anchor(), world.manifest(1));
    let booted = world.boot(&anchor, &manifest, |b| {
        b.max_component_size(64 * 1024);
    });
    assert_nothing_runs(booted.ctx());
    let rec = refused(&booted.records, "too-large");
    assert!(
        rec["details"]["reason"]
            .as_str()
            .unwrap()
            .contains(&format!(
                "hello.wasm is {} bytes, over the limit of 65536 bytes",
                world.hello.len()
            )),
        "{rec}"
    );
}

#[test]
fn manifest_path_leaving_its_directory_is_refused() {
    let world = World::new();
    let anchor = world.anchor();
    let mut doc = world.manifest_doc(1, &[("hello", "1.0.0", "hello.wasm")]);
    doc.components[0].path = "../hello.wasm".into();
    let manifest = world.write_manifest(&doc, &[&world.release]);
    let booted = world.boot(&anchor, &manifest, |_| {});
    assert_nothing_runs(booted.ctx());
    let rec = record(&booted.records, "boot.manifest.refused");
    assert!(
        rec["details"]["reason"]
            .as_str()
            .unwrap()
            .contains("leaves the manifest's directory")
    );
}

#[test]
fn state_file_damage_is_a_precise_error() {
    let world = World::new();
    let (anchor, manifest) = (world.anchor(), world.manifest(1));
    let state = world.state();
    assert_eq!(
        world
            .boot(&anchor, &manifest, |b| {
                b.state_dir(&state);
            })
            .ctx()
            .outcome,
        forgeone::boot::BootOutcome::Verified
    );
    std::fs::write(
        state.join("state.json"),
        b"{\"format\": \"forgeone.boot-state.v1\", \"anchor\": 7}",
    )
    .unwrap();
    let booted = world.boot(&anchor, &manifest, |b| {
        b.state_dir(&state);
    });
    match booted.err() {
        BootError::StateCorrupt { path, reason, .. } => {
            assert_eq!(path, &state.join("state.json"));
            assert!(reason.contains("invalid type"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // Not silently reset: the damaged file is still there.
    assert!(
        std::fs::read_to_string(state.join("state.json"))
            .unwrap()
            .contains("\"anchor\": 7")
    );
}

#[test]
fn state_directory_in_use_is_refused() {
    let world = World::new();
    let held = forgeone::boot::BootState::open(world.state()).unwrap();
    let booted = world.boot(&world.anchor(), &world.manifest(1), |b| {
        b.state_dir(world.state());
    });
    assert!(
        matches!(booted.err(), BootError::StateLocked { .. }),
        "{}",
        booted.err()
    );
    drop(held);
}

/// A boot waits for a state directory another process holds, up to its
/// lock timeout, saying so once; then it is refused as before.
#[test]
fn a_state_directory_in_use_is_waited_for_up_to_the_lock_timeout() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};
    let world = World::new();
    let held = forgeone::boot::BootState::open(world.state()).unwrap();
    let waits = Arc::new(AtomicUsize::new(0));
    let counting = |b: &mut forgeone::boot::BootBuilder, timeout: Duration| {
        let waits = waits.clone();
        b.state_dir(world.state())
            .lock_timeout(timeout)
            .on_lock_wait(move |lock| {
                assert!(lock.ends_with("lock"), "{}", lock.display());
                waits.fetch_add(1, Ordering::SeqCst);
            });
    };

    let start = Instant::now();
    let booted = world.boot(&world.anchor(), &world.manifest(1), |b| {
        counting(b, Duration::from_millis(300))
    });
    assert!(
        matches!(booted.err(), BootError::StateLocked { .. }),
        "{}",
        booted.err()
    );
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert_eq!(waits.load(Ordering::SeqCst), 1);

    // Let go while the boot waits: it goes on.
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        drop(held);
    });
    let booted = world.boot(&world.anchor(), &world.manifest(1), |b| {
        counting(b, Duration::from_secs(30))
    });
    release.join().unwrap();
    assert_eq!(booted.ctx().components.len(), 1);
    assert_eq!(waits.load(Ordering::SeqCst), 2);
}

#[test]
fn missing_manifest_file_is_an_input_error() {
    let world = World::new();
    let booted = world.boot(&world.anchor(), &world.path("no-manifest.json"), |_| {});
    assert!(
        matches!(booted.err(), BootError::Missing { path } if path.ends_with("no-manifest.json")),
        "{}",
        booted.err()
    );
    assert_eq!(
        record(&booted.records, "boot.manifest.refused")["details"]["code"],
        "missing"
    );
}
