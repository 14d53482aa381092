//! Errors keep their cause as `source()`, and their message still names it.

use std::error::Error as _;

use forgeone::SigningKey;
use forgeone::boot::{BootError, BootManifest, BootState, Envelope, Role, TrustAnchor};

use super::World;

/// The source of `error`, which must be a `T`.
fn source_as<T: std::error::Error + 'static>(error: &BootError) -> &T {
    error
        .source()
        .unwrap_or_else(|| panic!("{error:?} has no source"))
        .downcast_ref::<T>()
        .unwrap_or_else(|| {
            panic!(
                "the source of {error:?} is not a {}",
                std::any::type_name::<T>()
            )
        })
}

#[test]
fn malformed_envelopes_and_documents_keep_the_json_error() {
    let error = Envelope::from_slice(b"{\"payloadType\": \"x\"", 1024, "sig.json").unwrap_err();
    let json = source_as::<serde_json::Error>(&error);
    assert!(json.is_eof());
    assert!(error.to_string().contains(&json.to_string()), "{error}");

    let error = Envelope::from_slice(
        b"{\"payloadType\": \"x\", \"payload\": \"*\", \"signatures\": []}",
        1024,
        "sig.json",
    )
    .unwrap_err();
    assert!(
        error
            .source()
            .is_some_and(|s| error.to_string().contains(&s.to_string())),
        "{error:?}"
    );

    // A manifest envelope whose payload is not a manifest.
    let mut envelope = Envelope::new(
        forgeone::boot::MANIFEST_PAYLOAD_TYPE,
        b"{\"release\": 7}".to_vec(),
    );
    envelope.sign(&SigningKey::generate());
    let error = BootManifest::from_bytes(&envelope.to_json(), ".").unwrap_err();
    assert!(
        matches!(error, BootError::MalformedDocument { .. }),
        "{error:?}"
    );
    let json = source_as::<serde_json::Error>(&error);
    assert!(error.to_string().ends_with(&json.to_string()), "{error}");
}

#[test]
fn state_damage_keeps_what_was_wrong() {
    let world = World::new();
    let state = world.state();
    drop(BootState::open(&state).unwrap());
    std::fs::write(state.join("state.json"), b"{\"format\": ").unwrap();
    let error = BootState::open(&state).unwrap_err();
    assert!(matches!(error, BootError::StateCorrupt { .. }), "{error:?}");
    let json = source_as::<serde_json::Error>(&error);
    assert!(error.to_string().contains(&json.to_string()), "{error}");
}

#[test]
fn refused_rotation_keeps_the_signature_refusal() {
    let world = World::new();
    let doc = world.anchor_doc();
    let v1 = TrustAnchor::from_file(world.write_anchor(&doc, &[&world.root])).unwrap();
    let new_root = SigningKey::generate();
    let mut next = doc.clone();
    next.version = 2;
    next.keys.retain(|k| k.role != Role::Root);
    next.add_key(Role::Root, new_root.public());
    let v2 = TrustAnchor::from_file(world.write_anchor(&next, &[&new_root])).unwrap();
    let error = v1.verify_successor(&v2).unwrap_err();
    let cause = source_as::<BootError>(&error);
    assert!(
        matches!(cause, BootError::Threshold { role: "root", .. }),
        "{cause:?}"
    );
    assert!(error.to_string().ends_with(&cause.to_string()), "{error}");
}

#[test]
fn a_version_that_is_not_semantic_keeps_the_parse_error() {
    let world = World::new();
    let mut doc = world.manifest_doc(1, &[("hello", "1.0.0", "hello.wasm")]);
    doc.components[0].version = "1.0".into();
    let manifest = BootManifest::from_file(world.write_manifest(&doc, &[&world.release])).unwrap();
    let anchor = TrustAnchor::from_file(world.anchor()).unwrap();
    let error = manifest.verify(&anchor, chrono::Utc::now()).unwrap_err();
    assert!(matches!(error, BootError::Invalid { .. }), "{error:?}");
    let cause = error.source().expect("the semver error");
    assert!(error.to_string().contains(&cause.to_string()), "{error}");
}
