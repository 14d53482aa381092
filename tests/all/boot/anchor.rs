//! Pinning, rotation and rollback of the anchor, the manifest and components.

use forgeone::SigningKey;
use forgeone::boot::{
    AnchorDocument, BootError, BootOutcome, BootPolicy, Digest, Provenance, Role, TrustAnchor,
};

use super::{World, assert_nothing_runs, other_bytes, record, refused};

/// Version 2 of the world's anchor with the root key replaced by `new_root`.
fn rotated(world: &World, new_root: &SigningKey) -> AnchorDocument {
    let mut doc = world.anchor_doc();
    doc.version = 2;
    doc.keys.retain(|k| k.role != Role::Root);
    doc.add_key(Role::Root, new_root.public());
    doc
}

#[test]
fn rotation_signed_by_old_and_new_roots_is_accepted() {
    let world = World::new();
    let state = world.state();
    let doc = world.anchor_doc();
    let v1 = world.write_anchor(&doc, &[&world.root]);
    let manifest = world.manifest(1);
    let first = world.boot(&v1, &manifest, |b| {
        b.state_dir(&state);
    });
    assert_eq!(
        record(&first.records, "boot.anchor.verified")["details"]["pin"],
        "first-use"
    );
    drop(first);

    let new_root = SigningKey::generate();
    let mut next = rotated(&world, &new_root);
    next.id = doc.id;
    let v2 = world.write_anchor(&next, &[&world.root, &new_root]);
    let booted = world.boot(&v2, &manifest, |b| {
        b.state_dir(&state);
    });
    let ctx = booted.ctx();
    assert_eq!(ctx.outcome, BootOutcome::Verified);
    assert_eq!(ctx.trust_anchor.version(), 2);
    let rec = record(&booted.records, "boot.anchor.rotated");
    assert_eq!(rec["details"]["from_version"], 1);
    assert_eq!(rec["details"]["to_version"], 2);
    assert_eq!(
        rec["details"]["signed_by_previous"][0],
        world.root.id().as_str()
    );
    assert_eq!(rec["details"]["signed_by_new"][0], new_root.id().as_str());
    assert_eq!(
        record(&booted.records, "boot.anchor.verified")["details"]["pin"],
        "rotated"
    );
    drop(booted);

    // v2 is now the pin: it boots as such.
    let again = world.boot(&v2, &manifest, |b| {
        b.state_dir(&state);
    });
    assert_eq!(
        record(&again.records, "boot.anchor.verified")["details"]["pin"],
        "pinned"
    );
}

#[test]
fn rotation_signed_only_by_new_keys_is_refused() {
    let world = World::new();
    let state = world.state();
    let doc = world.anchor_doc();
    let v1 = world.write_anchor(&doc, &[&world.root]);
    let manifest = world.manifest(1);
    drop(world.boot(&v1, &manifest, |b| {
        b.state_dir(&state);
    }));

    let new_root = SigningKey::generate();
    let mut next = rotated(&world, &new_root);
    next.id = doc.id;
    let v2 = world.write_anchor(&next, &[&new_root]);
    // On its own the new version is well-formed and self-signed...
    let loaded = TrustAnchor::from_file(&v2).unwrap();
    // ...but the pinned version never authorised it.
    let old = TrustAnchor::from_file(&v1).unwrap();
    assert!(matches!(
        old.verify_successor(&loaded),
        Err(BootError::Rotation { from: 1, to: 2, .. })
    ));

    let booted = world.boot(&v2, &manifest, |b| {
        b.state_dir(&state);
    });
    match booted.err() {
        BootError::Rotation {
            from: 1,
            to: 2,
            reason,
            ..
        } => {
            assert!(
                reason.contains("not signed by a threshold of v1's root keys"),
                "{reason}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        record(&booted.records, "boot.anchor.refused")["details"]["code"],
        "rotation"
    );
    assert!(!super::kinds(&booted.records).contains(&"boot.component.measured"));
    drop(booted);

    // The pin did not move: v1 still boots.
    let booted = world.boot(&v1, &manifest, |b| {
        b.state_dir(&state);
    });
    assert_eq!(booted.ctx().trust_anchor.version(), 1);
}

#[test]
fn rotation_signed_only_by_old_keys_is_refused() {
    let world = World::new();
    let new_root = SigningKey::generate();
    let next = rotated(&world, &new_root);
    // Its own root key did not sign it: refused on load, before any pin check.
    let v2 = world.write_anchor(&next, &[&world.root]);
    let booted = world.boot(&v2, &world.manifest(1), |_| {});
    assert!(
        matches!(
            booted.err(),
            BootError::Threshold {
                role: "root",
                found: 0,
                ..
            }
        ),
        "{}",
        booted.err()
    );
    assert_eq!(
        record(&booted.records, "boot.anchor.refused")["details"]["code"],
        "threshold"
    );
}

#[test]
fn anchor_rollback_is_refused_unless_downgrade_is_allowed() {
    let world = World::new();
    let state = world.state();
    let doc = world.anchor_doc();
    let v1 = world.write_anchor(&doc, &[&world.root]);
    let manifest = world.manifest(1);
    let new_root = SigningKey::generate();
    let mut next = rotated(&world, &new_root);
    next.id = doc.id;
    let v2 = world.write_anchor(&next, &[&world.root, &new_root]);
    for anchor in [&v1, &v2] {
        assert!(
            world
                .boot(anchor, &manifest, |b| {
                    b.state_dir(&state);
                })
                .result
                .is_ok()
        );
    }

    let booted = world.boot(&v1, &manifest, |b| {
        b.state_dir(&state);
    });
    match booted.err() {
        BootError::Rollback { found, highest, .. } => {
            assert_eq!((found.as_str(), highest.as_str()), ("1", "2"))
        }
        other => panic!("{other:?}"),
    }
    let rec = record(&booted.records, "boot.rollback.refused");
    assert_eq!(
        (
            rec["details"]["found"].as_str(),
            rec["details"]["highest"].as_str()
        ),
        (Some("1"), Some("2"))
    );
    assert_eq!(
        record(&booted.records, "boot.anchor.refused")["details"]["code"],
        "rollback"
    );
    drop(booted);

    let booted = world.boot(&v1, &manifest, |b| {
        b.state_dir(&state).allow_downgrade(true);
    });
    assert_eq!(booted.ctx().trust_anchor.version(), 1);
    let rec = record(&booted.records, "boot.downgrade.allowed");
    assert_eq!(
        (
            rec["details"]["from"].as_str(),
            rec["details"]["to"].as_str()
        ),
        (Some("2"), Some("1"))
    );
}

#[test]
fn another_anchor_is_refused_once_one_is_pinned() {
    let world = World::new();
    let state = world.state();
    let manifest = world.manifest(1);
    drop(world.boot(&world.anchor(), &manifest, |b| {
        b.state_dir(&state);
    }));
    // Same keys, new id: a different trust domain.
    let stranger = world.anchor();
    let booted = world.boot(&stranger, &manifest, |b| {
        b.state_dir(&state);
    });
    assert!(
        matches!(booted.err(), BootError::AnchorMismatch { .. }),
        "{}",
        booted.err()
    );
    assert_eq!(
        record(&booted.records, "boot.anchor.refused")["details"]["code"],
        "anchor-mismatch"
    );
}

#[test]
fn manifest_rollback_is_refused_unless_downgrade_is_allowed() {
    let world = World::new();
    let state = world.state();
    let anchor = world.anchor();
    let (v1, v2) = (world.manifest(1), world.manifest(2));
    assert_eq!(
        world
            .boot(&anchor, &v2, |b| {
                b.state_dir(&state);
            })
            .ctx()
            .outcome,
        BootOutcome::Verified
    );
    let booted = world.boot(&anchor, &v1, |b| {
        b.state_dir(&state);
    });
    assert_nothing_runs(booted.ctx());
    let rec = record(&booted.records, "boot.rollback.refused");
    assert_eq!(rec["details"]["what"], "boot manifest");
    let rec = record(&booted.records, "boot.manifest.refused");
    assert_eq!(rec["details"]["code"], "rollback");
    assert!(
        rec["details"]["reason"]
            .as_str()
            .unwrap()
            .contains("version 1 is older than the accepted 2")
    );
    drop(booted);

    let booted = world.boot(&anchor, &v1, |b| {
        b.state_dir(&state).allow_downgrade(true);
    });
    assert_eq!(booted.ctx().outcome, BootOutcome::Verified);
    record(&booted.records, "boot.downgrade.allowed");
}

#[test]
fn same_manifest_version_with_other_content_is_refused() {
    let world = World::new();
    let state = world.state();
    let anchor = world.anchor();
    let first = world.manifest(3);
    drop(world.boot(&anchor, &first, |b| {
        b.state_dir(&state);
    }));
    let mut doc = world.manifest_doc(3, &[("hello", "1.0.0", "hello.wasm")]);
    doc.expires_at += chrono::Duration::days(1);
    let second = world.write_manifest(&doc, &[&world.release]);
    let booted = world.boot(&anchor, &second, |b| {
        b.state_dir(&state);
    });
    assert_nothing_runs(booted.ctx());
    assert_eq!(
        record(&booted.records, "boot.manifest.refused")["details"]["code"],
        "version-conflict"
    );
}

#[test]
fn component_rollback_is_refused_and_the_newer_copy_recovered() {
    let world = World::new();
    let state = world.state();
    let anchor = world.anchor();
    let old = other_bytes();
    world.write("old.wasm", &old);
    // Release v1 ships hello 2.0.0; a later manifest tries to ship 1.0.0.
    let m1 = world.write_manifest(
        &world.manifest_doc(1, &[("hello", "2.0.0", "hello.wasm")]),
        &[&world.release],
    );
    let m2 = world.write_manifest(
        &world.manifest_doc(2, &[("hello", "1.0.0", "old.wasm")]),
        &[&world.release],
    );
    assert_eq!(
        world
            .boot(&anchor, &m1, |b| {
                b.state_dir(&state);
            })
            .ctx()
            .outcome,
        BootOutcome::Verified
    );

    let booted = world.boot(&anchor, &m2, |b| {
        b.state_dir(&state).policy(BootPolicy::Recover);
    });
    let ctx = booted.ctx();
    assert_eq!(ctx.outcome, BootOutcome::Recovered);
    let hello = ctx.component("hello").unwrap();
    assert_eq!(hello.version(), "2.0.0");
    assert_eq!(hello.digest(), Digest::of(&world.hello));
    assert_ne!(
        hello.digest(),
        Digest::of(&old),
        "the rolled-back bytes never reach the runtime"
    );
    assert!(matches!(hello.provenance(), Provenance::Recovered { .. }));
    let rec = record(&booted.records, "boot.rollback.refused");
    assert_eq!(
        (
            rec["details"]["found"].as_str(),
            rec["details"]["highest"].as_str()
        ),
        (Some("1.0.0"), Some("2.0.0"))
    );
    refused(&booted.records, "rollback");
    record(&booted.records, "boot.component.recovered");
    drop(booted);

    // Without a copy to fall back on (fresh state), the same rollback fails closed.
    let fresh = world.path("fresh-state");
    drop(world.boot(&anchor, &m1, |b| {
        b.state_dir(&fresh);
    }));
    std::fs::remove_dir_all(fresh.join("objects")).unwrap();
    std::fs::create_dir(fresh.join("objects")).unwrap();
    let booted = world.boot(&anchor, &m2, |b| {
        b.state_dir(&fresh).policy(BootPolicy::Recover);
    });
    assert_nothing_runs(booted.ctx());
    refused(&booted.records, "rollback");
}
