//! The one boot policy: fail-closed never falls back, recover falls back or
//! fails closed, degraded falls back or leaves the component out.

use forgeone::boot::{BootOutcome, BootPolicy, IntegrityStatus};

use super::{World, assert_nothing_runs, flip, kinds, other_bytes, record};

#[test]
fn boot_policy_names_parse_and_print() {
    for (text, policy) in [
        ("fail-closed", BootPolicy::FailClosed),
        ("strict", BootPolicy::FailClosed),
        ("recover", BootPolicy::Recover),
        ("degraded", BootPolicy::Degraded),
    ] {
        assert_eq!(text.parse::<BootPolicy>().unwrap(), policy, "{text}");
        let json: BootPolicy = serde_json::from_str(&format!("\"{text}\"")).unwrap();
        assert_eq!(json, policy, "{text} as JSON");
    }
    for policy in [
        BootPolicy::FailClosed,
        BootPolicy::Recover,
        BootPolicy::Degraded,
    ] {
        assert_eq!(policy.to_string(), policy.as_str());
        assert_eq!(policy.as_str().parse::<BootPolicy>().unwrap(), policy);
    }
    assert_eq!(BootPolicy::default(), BootPolicy::FailClosed);
    assert_eq!(BootPolicy::FailClosed.as_str(), "fail-closed");

    let error = "lenient".parse::<BootPolicy>().unwrap_err().to_string();
    for expected in ["`lenient`", "fail-closed", "strict", "recover", "degraded"] {
        assert!(error.contains(expected), "{error}");
    }
}

/// A manifest of `hello` and `other`, booted once with `state` so that both
/// have a last-known-good copy (when `state` is given), then `other`
/// tampered with on disk.
fn two_components_then_tamper(
    world: &World,
    anchor: &std::path::Path,
    state: Option<&std::path::Path>,
) -> std::path::PathBuf {
    world.write("other.wasm", &other_bytes());
    let manifest = world.write_manifest(
        &world.manifest_doc(
            1,
            &[
                ("hello", "1.0.0", "hello.wasm"),
                ("other", "1.0.0", "other.wasm"),
            ],
        ),
        &[&world.release],
    );
    if let Some(state) = state {
        let first = world.boot(anchor, &manifest, |b| {
            b.state_dir(state);
        });
        assert_eq!(first.ctx().outcome, BootOutcome::Verified);
    }
    world.write("other.wasm", &flip(&other_bytes(), 40));
    manifest
}

#[test]
fn fail_closed_never_uses_a_last_known_good_copy() {
    let world = World::new();
    let anchor = world.anchor();
    let state = world.state();
    let manifest = two_components_then_tamper(&world, &anchor, Some(&state));
    // The state holds a good copy of `other` that still verifies ...
    let copies = forgeone::boot::BootState::open(&state)
        .unwrap()
        .copies("other");
    assert_eq!(copies.len(), 1);

    // ... but fail-closed (the default, and `strict`) does not use it.
    for policy in [None, Some("strict".parse().unwrap())] {
        let booted = world.boot(&anchor, &manifest, |b| {
            b.state_dir(&state);
            if let Some(policy) = policy {
                b.policy(policy);
            }
        });
        let ctx = booted.ctx();
        assert_nothing_runs(ctx);
        assert!(ctx.recovered.is_empty(), "{:?}", ctx.recovered);
        assert!(
            matches!(&ctx.integrity_status, IntegrityStatus::Compromised(r) if r.starts_with("failed closed: other:")),
            "{:?}",
            ctx.integrity_status
        );
        let kinds = kinds(&booted.records);
        assert!(!kinds.contains(&"boot.component.recovered"), "{kinds:?}");
        assert_eq!(
            record(&booted.records, "boot.started")["details"]["policy"],
            "fail-closed"
        );
    }
}

#[test]
fn recover_falls_back_and_otherwise_fails_closed() {
    let world = World::new();
    let anchor = world.anchor();
    let state = world.state();
    let manifest = two_components_then_tamper(&world, &anchor, Some(&state));
    let booted = world.boot(&anchor, &manifest, |b| {
        b.state_dir(&state).policy(BootPolicy::Recover);
    });
    let ctx = booted.ctx();
    assert_eq!(ctx.outcome, BootOutcome::Recovered);
    assert_eq!(ctx.integrity_status, IntegrityStatus::Verified);
    let names: Vec<&str> = ctx.components.iter().map(|c| c.name()).collect();
    assert_eq!(names, ["hello", "other"]);
    assert_eq!(ctx.recovered[0].name, "other");
    record(&booted.records, "boot.component.recovered");
    drop(booted);

    // No copy to fall back on: recover fails closed, it never degrades.
    let world = World::new();
    let anchor = world.anchor();
    let manifest = two_components_then_tamper(&world, &anchor, None);
    let booted = world.boot(&anchor, &manifest, |b| {
        b.state_dir(world.state()).policy(BootPolicy::Recover);
    });
    let ctx = booted.ctx();
    assert_nothing_runs(ctx);
    assert_eq!(ctx.left_out[0].name, "other");
    assert!(!kinds(&booted.records).contains(&"boot.component.left-out"));
}

#[test]
fn degraded_falls_back_before_it_leaves_a_component_out() {
    let world = World::new();
    let anchor = world.anchor();
    let state = world.state();
    let manifest = two_components_then_tamper(&world, &anchor, Some(&state));
    let booted = world.boot(&anchor, &manifest, |b| {
        b.state_dir(&state).policy(BootPolicy::Degraded);
    });
    let ctx = booted.ctx();
    assert_eq!(ctx.outcome, BootOutcome::Recovered);
    assert_eq!(ctx.components.len(), 2);
    assert!(ctx.left_out.is_empty());
    drop(booted);

    let world = World::new();
    let anchor = world.anchor();
    let manifest = two_components_then_tamper(&world, &anchor, None);
    let booted = world.boot(&anchor, &manifest, |b| {
        b.state_dir(world.state()).policy(BootPolicy::Degraded);
    });
    let ctx = booted.ctx();
    assert_eq!(ctx.outcome, BootOutcome::Degraded);
    let names: Vec<&str> = ctx.components.iter().map(|c| c.name()).collect();
    assert_eq!(names, ["hello"]);
    assert_eq!(
        record(&booted.records, "boot.component.left-out")["details"]["policy"],
        "degraded"
    );
}
