//! Recovery never downgrades silently: a fall-back to a last-known-good copy
//! older than the highest accepted version is used only when allowed, is
//! reported and audited as a downgrade, and never lowers the recorded
//! highest version.

use std::path::{Path, PathBuf};

use forgeone::boot::{BootOutcome, BootPolicy, BootState, Digest, IntegrityStatus};

use super::{World, assert_nothing_runs, flip, kinds, other_bytes, record, refused};

/// Release 1 ships hello 1.0.0 (booted and confirmed good); release 2
/// ships hello 2.0.0 in `hello2.wasm`. Returns the anchor and the release 2
/// manifest.
fn two_releases(world: &World, state: &Path) -> (PathBuf, PathBuf) {
    let anchor = world.anchor();
    let v1 = world.manifest(1);
    let booted = world.boot(&anchor, &v1, |b| {
        b.state_dir(state);
    });
    assert_eq!(booted.ctx().outcome, BootOutcome::Verified);
    drop(booted);
    BootState::open(state)
        .unwrap()
        .record_start("hello", Digest::of(&world.hello), true)
        .unwrap();
    world.write("hello2.wasm", &other_bytes());
    let v2 = world.write_manifest(
        &world.manifest_doc(2, &[("hello", "2.0.0", "hello2.wasm")]),
        &[&world.release],
    );
    (anchor, v2)
}

fn highest(state: &Path) -> Option<String> {
    BootState::open(state).unwrap().highest_version("hello")
}

#[test]
fn recovery_to_an_older_copy_is_refused_unless_allowed() {
    let world = World::new();
    let state = world.state();
    let (anchor, v2) = two_releases(&world, &state);
    // The first boot of release 2 finds hello 2.0.0 tampered with: its only
    // copy is 1.0.0, below the 2.0.0 the verified manifest lists.
    world.write("hello2.wasm", &flip(&other_bytes(), 50));
    for policy in [BootPolicy::Recover, BootPolicy::FailClosed] {
        let booted = world.boot(&anchor, &v2, |b| {
            b.state_dir(&state).policy(policy);
        });
        let ctx = booted.ctx();
        assert_nothing_runs(ctx);
        assert!(ctx.recovered.is_empty());
        let kinds = kinds(&booted.records);
        assert!(!kinds.contains(&"boot.component.recovered"), "{kinds:?}");
        assert!(!kinds.contains(&"boot.component.downgraded"), "{kinds:?}");
        if policy == BootPolicy::Recover {
            let reason = &ctx.left_out[0].reason;
            assert!(reason.contains("does not match the signed"), "{reason}");
            assert!(
                reason.contains("1.0.0")
                    && reason.contains("2.0.0")
                    && reason.contains("downgrade"),
                "the refusal says a downgrade would have been needed: {reason}"
            );
            let copy = refused(&booted.records, "recovery-downgrade");
            assert_eq!(copy["details"]["version"], "1.0.0");
            assert_eq!(
                copy["subjects"]["component"],
                Digest::of(&world.hello).to_hex()
            );
        }
        drop(booted);
        assert_eq!(highest(&state).as_deref(), Some("1.0.0"));
    }

    // Degraded: left out, the rest runs.
    world.write("other.wasm", &world.hello);
    let mut doc = world.manifest_doc(3, &[("hello", "2.0.0", "hello2.wasm")]);
    doc.components[0].blake3 = Digest::of(&other_bytes());
    doc.add_component("extra", "1.0.0", "other.wasm", &world.hello);
    let v3 = world.write_manifest(&doc, &[&world.release]);
    let booted = world.boot(&anchor, &v3, |b| {
        b.state_dir(&state).policy(BootPolicy::Degraded);
    });
    let ctx = booted.ctx();
    assert_eq!(ctx.outcome, BootOutcome::Degraded);
    let names: Vec<&str> = ctx.components.iter().map(|c| c.name()).collect();
    assert_eq!(names, ["extra"]);
    assert!(ctx.left_out[0].reason.contains("downgrade"));
    drop(booted);
    assert_eq!(highest(&state).as_deref(), Some("1.0.0"));
}

#[test]
fn allowed_recovery_downgrade_is_reported_and_audited_as_one() {
    let world = World::new();
    let state = world.state();
    let (anchor, v2) = two_releases(&world, &state);
    // Release 2 boots, then hello 2.0.0 fails to start until it is marked bad.
    let booted = world.boot(&anchor, &v2, |b| {
        b.state_dir(&state);
    });
    assert_eq!(booted.ctx().outcome, BootOutcome::Verified);
    drop(booted);
    let opened = BootState::open(&state).unwrap();
    opened.set_max_tries(1);
    opened
        .record_start("hello", Digest::of(&other_bytes()), false)
        .unwrap();
    drop(opened);
    assert_eq!(highest(&state).as_deref(), Some("2.0.0"));

    for _ in 0..2 {
        let booted = world.boot(&anchor, &v2, |b| {
            b.state_dir(&state)
                .policy(BootPolicy::Recover)
                .allow_recovery_downgrade(true);
        });
        let ctx = booted.ctx();
        assert_eq!(ctx.outcome, BootOutcome::Downgraded);
        assert!(
            matches!(&ctx.integrity_status, IntegrityStatus::Compromised(r) if r.contains("downgraded") && r.contains("hello 2.0.0 -> 1.0.0")),
            "{:?}",
            ctx.integrity_status
        );
        let hello = ctx.component("hello").unwrap();
        assert_eq!(
            (hello.version(), hello.digest()),
            ("1.0.0", Digest::of(&world.hello))
        );
        assert_eq!(ctx.recovered[0].downgraded_from.as_deref(), Some("2.0.0"));
        assert_eq!(ctx.recovered[0].version, "1.0.0");

        refused(&booted.records, "marked-bad");
        let kinds = kinds(&booted.records);
        assert!(!kinds.contains(&"boot.component.recovered"), "{kinds:?}");
        let event = record(&booted.records, "boot.component.downgraded");
        let details = &event["details"];
        assert_eq!(details["name"], "hello");
        assert_eq!(details["from_version"], "2.0.0");
        assert_eq!(details["to_version"], "1.0.0");
        assert_eq!(details["digest"], Digest::of(&world.hello).to_hex());
        assert_eq!(details["listed_version"], "2.0.0");
        assert_eq!(
            details["listed_digest"],
            Digest::of(&other_bytes()).to_hex()
        );
        assert_eq!(
            event["subjects"]["component"],
            Digest::of(&world.hello).to_hex()
        );
        assert_eq!(
            record(&booted.records, "boot.completed")["details"]["outcome"],
            "downgraded"
        );
        drop(booted);
        // The recorded highest version is not lowered by the fall-back.
        assert_eq!(highest(&state).as_deref(), Some("2.0.0"));
    }

    // So without the allowance the same boot refuses the downgrade.
    let booted = world.boot(&anchor, &v2, |b| {
        b.state_dir(&state).policy(BootPolicy::Recover);
    });
    assert_nothing_runs(booted.ctx());
    assert!(booted.ctx().left_out[0].reason.contains("downgrade"));
}

#[test]
fn same_version_recovery_is_not_a_downgrade() {
    let world = World::new();
    let state = world.state();
    let (anchor, v2) = two_releases(&world, &state);
    assert_eq!(
        world
            .boot(&anchor, &v2, |b| {
                b.state_dir(&state);
            })
            .ctx()
            .outcome,
        BootOutcome::Verified
    );
    // hello2.wasm is damaged; its own 2.0.0 copy is preferred over 1.0.0.
    world.write("hello2.wasm", &flip(&other_bytes(), 60));
    let booted = world.boot(&anchor, &v2, |b| {
        b.state_dir(&state).policy(BootPolicy::Recover);
    });
    let ctx = booted.ctx();
    assert_eq!(ctx.outcome, BootOutcome::Recovered);
    assert_eq!(ctx.integrity_status, IntegrityStatus::Verified);
    assert_eq!(ctx.component("hello").unwrap().version(), "2.0.0");
    assert_eq!(ctx.recovered[0].downgraded_from, None);
    record(&booted.records, "boot.component.recovered");
    drop(booted);
    assert_eq!(highest(&state).as_deref(), Some("2.0.0"));
}
