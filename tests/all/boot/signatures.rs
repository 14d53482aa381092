//! A boot by per-component signatures: one `BootContext` like a manifest
//! boot, the state directory's rollback protection through
//! `ComponentCheck::state`, and refused once a manifest was accepted.

use std::path::{Path, PathBuf};

use forgeone::SigningKey;
use forgeone::audit::{AuditConfig, AuditLog};
use forgeone::boot::{
    BootBuilder, BootError, BootOutcome, BootPolicy, BootState, ComponentCheck, ComponentStatement,
    Envelope, IntegrityStatus, MeasurementKind, MeasurementRegister, MeasurementStatus, Provenance,
    Role, TrustAnchor,
};

use super::{
    Booted, World, assert_nothing_runs, boot_records, flip, kinds, other_bytes, record, refused,
};

/// Signs `bytes` as `name`@`version` with the world's release key.
fn signature(world: &World, name: &str, version: &str, bytes: &[u8]) -> Envelope {
    ComponentStatement::new(name, version, bytes, None).sign(&[&world.release])
}

/// `hello.wasm` signed beside it, `other.wasm` signed in `sigs/other.json`.
fn signed_files(world: &World) -> (PathBuf, PathBuf, PathBuf) {
    world.write(
        "hello.wasm.sig.json",
        &signature(world, "hello", "1.0.0", &world.hello).to_json(),
    );
    let other = world.write("other.wasm", &other_bytes());
    std::fs::create_dir_all(world.path("sigs")).unwrap();
    let other_sig = world.write(
        "sigs/other.json",
        &signature(world, "other", "1.0.0", &other_bytes()).to_json(),
    );
    (world.path("hello.wasm"), other, other_sig)
}

/// Runs a boot by signatures under `anchor` with an audit log.
fn boot(world: &World, anchor: &Path, configure: impl FnOnce(&mut BootBuilder)) -> Booted {
    let log_path = world.path(&format!("sig-audit-{}.jsonl", next_log()));
    let log = AuditLog::open(&log_path, SigningKey::generate(), &AuditConfig::new()).unwrap();
    let mut builder = BootBuilder::signatures(anchor);
    builder.audit(log.clone());
    configure(&mut builder);
    let result = builder.run();
    drop(builder);
    log.close().unwrap();
    Booted {
        result,
        records: boot_records(&log_path),
    }
}

/// A fresh number for each audit log.
fn next_log() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed).to_string()
}

#[test]
fn boot_by_signatures_yields_a_context_like_a_manifest_boot() {
    let world = World::new();
    let anchor = world.anchor();
    let (hello, other, other_sig) = signed_files(&world);
    let booted = boot(&world, &anchor, |b| {
        b.component(&hello, None)
            .component(&other, Some(other_sig.clone()))
            .component(world.path("./hello.wasm"), None);
    });
    let ctx = booted.ctx();
    assert_eq!(ctx.outcome, BootOutcome::Verified);
    assert_eq!(ctx.integrity_status, IntegrityStatus::Verified);
    let names: Vec<&str> = ctx.components.iter().map(|c| c.name()).collect();
    assert_eq!(names, ["hello", "other"], "a file added twice boots once");
    assert_eq!(ctx.components[0].provenance(), &Provenance::Signature);
    assert_eq!(&ctx.components[1].bytes()[..], &other_bytes()[..]);
    let measured: Vec<_> = ctx
        .boot_measurements
        .iter()
        .map(|m| (m.kind, m.component.as_str(), m.status))
        .collect();
    assert_eq!(
        measured,
        [
            (
                MeasurementKind::Anchor,
                "trust-anchor",
                MeasurementStatus::Valid
            ),
            (
                MeasurementKind::Component,
                "hello",
                MeasurementStatus::Valid
            ),
            (
                MeasurementKind::Component,
                "other",
                MeasurementStatus::Valid
            ),
        ]
    );
    assert_eq!(
        ctx.register,
        MeasurementRegister::replay(&ctx.boot_measurements)
    );
    assert!(ctx.manifest().is_none());
    assert_eq!((ctx.release.as_deref(), ctx.manifest_version), (None, None));
    assert_eq!(ctx.lookup(&other).unwrap().unwrap().name(), "other");
    assert!(ctx.lookup(&other_sig).is_none());

    assert_eq!(
        kinds(&booted.records),
        [
            "boot.started",
            "boot.anchor.verified",
            "boot.component.verified",
            "boot.component.verified",
            "boot.completed"
        ]
    );
    assert_eq!(
        record(&booted.records, "boot.started")["details"]["mode"],
        "signatures"
    );
}

#[test]
fn boot_by_signatures_follows_the_policy_without_recovery() {
    let world = World::new();
    let anchor = world.anchor();
    let state = world.state();
    let (hello, other, other_sig) = signed_files(&world);
    let files = |b: &mut BootBuilder| {
        b.component(&hello, None)
            .component(&other, Some(other_sig.clone()))
            .state_dir(&state);
    };
    assert_eq!(
        boot(&world, &anchor, files).ctx().outcome,
        BootOutcome::Verified
    );
    world.write("other.wasm", &flip(&other_bytes(), 30));

    // No manifest authorises a stored copy: recover fails closed like fail-closed.
    for policy in [BootPolicy::FailClosed, BootPolicy::Recover] {
        let booted = boot(&world, &anchor, |b| {
            files(b);
            b.policy(policy);
        });
        let ctx = booted.ctx();
        assert_nothing_runs(ctx);
        let refusal = ctx.lookup(&other).unwrap().unwrap_err();
        assert!(
            refusal.reason.contains("does not match the signed"),
            "{}",
            refusal.reason
        );
        assert_eq!(ctx.boot_measurements[2].status, MeasurementStatus::Invalid);
        refused(&booted.records, "digest-mismatch");
        assert!(!kinds(&booted.records).contains(&"boot.component.recovered"));
    }

    let booted = boot(&world, &anchor, |b| {
        files(b);
        b.policy(BootPolicy::Degraded);
    });
    let ctx = booted.ctx();
    assert_eq!(ctx.outcome, BootOutcome::Degraded);
    let names: Vec<&str> = ctx.components.iter().map(|c| c.name()).collect();
    assert_eq!(names, ["hello"]);
    record(&booted.records, "boot.component.left-out");
}

#[test]
fn boot_by_signatures_is_refused_once_a_manifest_was_accepted() {
    let world = World::new();
    let anchor = world.anchor();
    let state = world.state();
    let (hello, _, _) = signed_files(&world);
    // Before any manifest, the state directory takes a boot by signatures.
    let booted = boot(&world, &anchor, |b| {
        b.component(&hello, None).state_dir(&state);
    });
    assert_eq!(booted.ctx().outcome, BootOutcome::Verified);
    drop(booted);

    let manifest = world.manifest(3);
    let booted = world.boot(&anchor, &manifest, |b| {
        b.state_dir(&state);
    });
    assert_eq!(booted.ctx().outcome, BootOutcome::Verified);
    drop(booted);

    // Deleting the manifest does not drop its rollback protection.
    std::fs::remove_file(&manifest).unwrap();
    let booted = boot(&world, &anchor, |b| {
        b.component(&hello, None).state_dir(&state);
    });
    let error = booted.err();
    assert!(
        matches!(error, BootError::ManifestRequired { version: 3, release, .. } if release == "2026.1"),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        format!(
            "state directory {} has accepted boot manifest version 3 (release 2026.1); a boot by \
             per-component signatures would drop its rollback protection: boot with the manifest",
            state.display()
        )
    );
    let rec = record(&booted.records, "boot.refused");
    assert_eq!(rec["details"]["code"], "manifest-required");
    assert!(!kinds(&booted.records).contains(&"boot.component.verified"));
}

#[test]
fn boot_by_signatures_keeps_the_pin_and_the_highest_versions() {
    let world = World::new();
    let anchor = world.anchor();
    let state = world.state();
    world.write(
        "hello.wasm.sig.json",
        &signature(&world, "hello", "2.0.0", &world.hello).to_json(),
    );
    let hello = world.path("hello.wasm");
    let booted = boot(&world, &anchor, |b| {
        b.component(&hello, None).state_dir(&state);
    });
    assert_eq!(
        record(&booted.records, "boot.anchor.verified")["details"]["pin"],
        "first-use"
    );
    drop(booted);
    assert_eq!(
        BootState::open(&state)
            .unwrap()
            .highest_version("hello")
            .as_deref(),
        Some("2.0.0")
    );

    // An older, validly signed version: a rollback.
    world.write(
        "hello.wasm.sig.json",
        &signature(&world, "hello", "1.0.0", &world.hello).to_json(),
    );
    let booted = boot(&world, &anchor, |b| {
        b.component(&hello, None).state_dir(&state);
    });
    assert_nothing_runs(booted.ctx());
    refused(&booted.records, "rollback");
    record(&booted.records, "boot.rollback.refused");
    drop(booted);

    // Another anchor (its own id): refused like in a manifest boot.
    let stranger = world.anchor();
    let booted = boot(&world, &stranger, |b| {
        b.component(&hello, None).state_dir(&state);
    });
    assert!(
        matches!(booted.err(), BootError::AnchorMismatch { .. }),
        "{}",
        booted.err()
    );
}

/// Version 2 of `doc`'s anchor with its root key replaced by `new_root`,
/// signed by `signers`.
fn rotated(
    world: &World,
    v1: &forgeone::boot::AnchorDocument,
    new_root: &SigningKey,
    signers: &[&SigningKey],
) -> PathBuf {
    let mut doc = v1.clone();
    doc.version = 2;
    doc.keys.retain(|k| k.role != Role::Root);
    doc.add_key(Role::Root, new_root.public());
    world.write_anchor(&doc, signers)
}

#[test]
fn component_check_with_state_enforces_the_pin_and_the_highest_version() {
    let world = World::new();
    let doc = world.anchor_doc();
    let v1_path = world.write_anchor(&doc, &[&world.root]);
    let v1 = TrustAnchor::from_file(&v1_path).unwrap();
    let state = BootState::open(world.state()).unwrap();
    let log_path = world.path("check.jsonl");
    let log = AuditLog::open(&log_path, SigningKey::generate(), &AuditConfig::new()).unwrap();
    let check = |anchor: &TrustAnchor, version: &str, allow_downgrade: bool| {
        ComponentCheck::new(anchor)
            .state(&state)
            .allow_downgrade(allow_downgrade)
            .audit(log.clone())
            .verify(
                world.hello.clone(),
                &signature(&world, "hello", version, &world.hello),
            )
    };

    // First use pins the anchor and records the version.
    check(&v1, "2.0.0", false).unwrap();
    assert_eq!(state.highest_version("hello").as_deref(), Some("2.0.0"));
    check(&v1, "2.1.0", false).unwrap();
    assert_eq!(state.highest_version("hello").as_deref(), Some("2.1.0"));

    // Older: refused, unless a downgrade is allowed (audited, recorded).
    match check(&v1, "1.0.0", false) {
        Err(BootError::Rollback { found, highest, .. }) => {
            assert_eq!((found.as_str(), highest.as_str()), ("1.0.0", "2.1.0"))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(state.highest_version("hello").as_deref(), Some("2.1.0"));
    check(&v1, "1.0.0", true).unwrap();
    assert_eq!(state.highest_version("hello").as_deref(), Some("1.0.0"));

    // Another anchor id is refused; a rotation only when the pinned root signed it.
    let stranger = TrustAnchor::from_file(world.anchor()).unwrap();
    assert!(matches!(
        check(&stranger, "3.0.0", false),
        Err(BootError::AnchorMismatch { .. })
    ));
    let new_root = SigningKey::generate();
    let unauthorised =
        TrustAnchor::from_file(rotated(&world, &doc, &new_root, &[&new_root])).unwrap();
    assert!(matches!(
        check(&unauthorised, "3.0.0", false),
        Err(BootError::Rotation { from: 1, to: 2, .. })
    ));
    let authorised =
        TrustAnchor::from_file(rotated(&world, &doc, &new_root, &[&world.root, &new_root]))
            .unwrap();
    check(&authorised, "3.0.0", false).unwrap();
    // v2 is now the pin: v1 is a rollback.
    assert!(matches!(
        check(&v1, "3.0.0", false),
        Err(BootError::Rollback { .. })
    ));
    log.close().unwrap();

    let records = boot_records(&log_path);
    let rollback = record(&records, "boot.rollback.refused");
    assert_eq!(rollback["details"]["found"], "1.0.0");
    let downgrade = record(&records, "boot.downgrade.allowed");
    assert_eq!(
        (
            downgrade["details"]["from"].as_str(),
            downgrade["details"]["to"].as_str()
        ),
        (Some("2.1.0"), Some("1.0.0"))
    );
    record(&records, "boot.anchor.rotated");
    refused(&records, "anchor-mismatch");
    refused(&records, "rotation");

    // Without the state, none of this applies.
    ComponentCheck::new(&v1)
        .verify(
            world.hello.clone(),
            &signature(&world, "hello", "0.1.0", &world.hello),
        )
        .unwrap();
}
