//! Verified boots, recovery, degraded and fail-closed boots, try counters,
//! boot quotes, per-component signatures.

use forgeone::SigningKey;
use forgeone::audit::{AuditConfig, AuditLog};
use forgeone::boot::{
    self, BootError, BootOutcome, BootPolicy, BootState, ComponentStatement, Digest, Envelope,
    IntegrityStatus, MeasurementKind, MeasurementRegister, MeasurementStatus, Provenance,
    QUOTE_PAYLOAD_TYPE, QuoteCheck, StartVerdict, TrustAnchor,
};

use super::{World, boot_records, flip, kinds, other_bytes, record, refused};

#[test]
fn verified_boot_reads_like_the_spec_and_hands_over_the_exact_bytes() -> anyhow::Result<()> {
    let world = World::new();
    let (anchor_path, manifest_path) = (world.anchor(), world.manifest(1));

    let trust_anchor = boot::TrustAnchor::from_file(&anchor_path)?;
    let manifest = boot::BootManifest::from_file(&manifest_path)?;
    let boot_context = boot::initialize(trust_anchor, &manifest)?;
    assert!(boot_context.integrity_status == boot::IntegrityStatus::Verified);
    assert_eq!(boot_context.outcome, BootOutcome::Verified);

    let kinds: Vec<_> = boot_context
        .boot_measurements
        .iter()
        .map(|m| (m.kind, m.status))
        .collect();
    assert_eq!(
        kinds,
        [
            (MeasurementKind::Anchor, MeasurementStatus::Valid),
            (MeasurementKind::Manifest, MeasurementStatus::Valid),
            (MeasurementKind::Component, MeasurementStatus::Valid),
        ]
    );
    let m = &boot_context.boot_measurements[2];
    assert_eq!(m.hash, m.expected_hash);
    assert_eq!(m.hash, Digest::of(&world.hello).to_hex());

    let hello = boot_context.component("hello").expect("hello runs");
    assert_eq!(
        &hello.bytes()[..],
        &world.hello[..],
        "exactly the bytes on disk"
    );
    assert_eq!(hello.digest(), Digest::of(&world.hello));
    assert_eq!(hello.signers(), [world.release.id().clone()]);
    assert_eq!(
        hello.provenance(),
        &Provenance::Manifest {
            release: "2026.1".into()
        }
    );

    // The register is the chain of the measurements, and a verifier can
    // compute it in advance from the signed documents alone.
    let anchor = TrustAnchor::from_file(&anchor_path)?;
    assert_eq!(
        boot_context.register,
        MeasurementRegister::replay(&boot_context.boot_measurements)
    );
    assert_eq!(
        boot_context.register,
        boot::expected_register(&anchor, &manifest)
    );

    // What was handed over is a component wasmtime compiles (the appended
    // custom section included).
    let mut config = wasmtime::Config::new();
    config.wasm_component_model(true);
    let engine = wasmtime::Engine::new(&config).expect("engine");
    wasmtime::component::Component::new(&engine, hello.bytes()).expect("hello compiles");
    Ok(())
}

#[test]
fn verified_boot_audits_every_step() {
    let world = World::new();
    let (anchor, manifest) = (world.anchor(), world.manifest(1));
    let booted = world.boot(&anchor, &manifest, |b| {
        b.state_dir(world.state()).host_key(SigningKey::generate());
    });
    let ctx = booted.ctx();
    assert_eq!(
        kinds(&booted.records),
        [
            "boot.started",
            "boot.anchor.verified",
            "boot.manifest.verified",
            "boot.component.measured",
            "boot.completed",
            "boot.quote.signed"
        ]
    );
    let measured = record(&booted.records, "boot.component.measured");
    assert_eq!(
        measured["subjects"]["component"],
        Digest::of(&world.hello).to_hex()
    );
    assert_eq!(measured["details"]["status"], "valid");
    let completed = record(&booted.records, "boot.completed");
    assert_eq!(completed["details"]["register"], ctx.register.to_hex());
    assert_eq!(completed["details"]["outcome"], "verified");
    // The copy that booted verified is kept, content addressed
    // (`objects/<blake3>.wasm`), pending its first successful start.
    let state = ctx.state().unwrap();
    let copies = state.copies("hello");
    assert_eq!(copies.len(), 1);
    let copy = &copies[0];
    assert_eq!(
        (copy.digest, copy.version.as_str(), copy.status),
        (Digest::of(&world.hello), "1.0.0", boot::CopyStatus::Pending)
    );
    let object = state
        .dir()
        .join("objects")
        .join(format!("{}.wasm", copy.digest));
    assert_eq!(std::fs::read(object).unwrap(), world.hello);
    assert_eq!(state.highest_version("hello").as_deref(), Some("1.0.0"));
    assert_eq!(state.manifest_version(), Some(1));
}

#[test]
fn tampered_component_is_refused_and_recovered_from_last_known_good() {
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
        BootOutcome::Verified
    );

    // Tamper with a byte of the custom section on disk.
    let tampered = flip(&world.hello, world.hello.len() - 10);
    world.write("hello.wasm", &tampered);
    let booted = world.boot(&anchor, &manifest, |b| {
        b.state_dir(&state).policy(BootPolicy::Recover);
    });
    let ctx = booted.ctx();
    assert_eq!(ctx.outcome, BootOutcome::Recovered);
    assert_eq!(ctx.integrity_status, IntegrityStatus::Verified);
    let hello = ctx.component("hello").unwrap();
    assert_eq!(
        &hello.bytes()[..],
        &world.hello[..],
        "the good copy, not the tampered one"
    );
    assert!(
        matches!(hello.provenance(), Provenance::Recovered { reason } if reason.contains("does not match"))
    );
    assert_eq!(ctx.recovered.len(), 1);
    assert_eq!(ctx.recovered[0].failed_digest, Some(Digest::of(&tampered)));

    let statuses: Vec<_> = ctx
        .boot_measurements
        .iter()
        .map(|m| (m.kind, m.status))
        .collect();
    assert_eq!(
        statuses[2..],
        [
            (MeasurementKind::Component, MeasurementStatus::Invalid),
            (MeasurementKind::Recovery, MeasurementStatus::Valid)
        ]
    );
    refused(&booted.records, "digest-mismatch");
    let rec = record(&booted.records, "boot.component.recovered");
    assert_eq!(
        rec["details"]["failed_digest"],
        Digest::of(&tampered).to_hex()
    );
    assert_eq!(
        rec["subjects"]["component"],
        Digest::of(&world.hello).to_hex()
    );
    assert_eq!(
        record(&booted.records, "boot.completed")["details"]["outcome"],
        "recovered"
    );
    // A recovered boot does not reach the register of a clean one.
    let clean = boot::expected_register(
        &TrustAnchor::from_file(&anchor).unwrap(),
        &boot::BootManifest::from_file(&manifest).unwrap(),
    );
    assert_ne!(ctx.register, clean);
}

#[test]
fn damaged_last_known_good_copy_is_not_used() {
    let world = World::new();
    let (anchor, manifest) = (world.anchor(), world.manifest(1));
    let state = world.state();
    drop(world.boot(&anchor, &manifest, |b| {
        b.state_dir(&state);
    }));
    world.write("hello.wasm", &flip(&world.hello, 100));
    let object = state
        .join("objects")
        .join(format!("{}.wasm", Digest::of(&world.hello)));
    std::fs::write(&object, flip(&world.hello, 200)).unwrap();

    let booted = world.boot(&anchor, &manifest, |b| {
        b.state_dir(&state).policy(BootPolicy::Recover);
    });
    super::assert_nothing_runs(booted.ctx());
    let copy = booted
        .records
        .iter()
        .find(|r| {
            r["kind"] == "boot.component.refused"
                && r["details"]["reason"]
                    .as_str()
                    .unwrap()
                    .starts_with("last-known-good copy")
        })
        .expect("the damaged copy's refusal is audited");
    assert_eq!(copy["details"]["code"], "digest-mismatch");
}

fn two_components(world: &World) -> std::path::PathBuf {
    world.write("other.wasm", &other_bytes());
    world.write_manifest(
        &world.manifest_doc(
            1,
            &[
                ("hello", "1.0.0", "hello.wasm"),
                ("other", "1.0.0", "other.wasm"),
            ],
        ),
        &[&world.release],
    )
}

#[test]
fn degraded_boot_runs_the_verified_rest() {
    let world = World::new();
    let (anchor, manifest) = (world.anchor(), two_components(&world));
    world.write("other.wasm", &flip(&other_bytes(), 40));
    let booted = world.boot(&anchor, &manifest, |b| {
        b.policy(boot::BootPolicy::Degraded);
    });
    let ctx = booted.ctx();
    assert_eq!(ctx.outcome, BootOutcome::Degraded);
    assert!(
        matches!(&ctx.integrity_status, IntegrityStatus::Compromised(r) if r.starts_with("degraded: 1 component(s) left out"))
    );
    let names: Vec<&str> = ctx.components.iter().map(|c| c.name()).collect();
    assert_eq!(names, ["hello"]);
    assert_eq!(ctx.left_out[0].name, "other");
    let rec = record(&booted.records, "boot.component.left-out");
    assert_eq!(rec["details"]["name"], "other");
    assert_eq!(
        record(&booted.records, "boot.completed")["details"]["outcome"],
        "degraded"
    );
}

#[test]
fn fail_closed_boot_runs_nothing() {
    let world = World::new();
    let (anchor, manifest) = (world.anchor(), two_components(&world));
    world.write("other.wasm", &flip(&other_bytes(), 40));
    let booted = world.boot(&anchor, &manifest, |_| {});
    let ctx = booted.ctx();
    super::assert_nothing_runs(ctx);
    // hello verified, yet nothing runs.
    assert_eq!(ctx.boot_measurements[2].status, MeasurementStatus::Valid);
    // Both are left out: other refused, hello held back.
    let left_out: Vec<&str> = ctx.left_out.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(left_out, ["other", "hello"]);
    assert!(
        ctx.left_out[1].reason.starts_with(
            "verified, but nothing runs: the boot is compromised: failed closed: other:"
        ),
        "{}",
        ctx.left_out[1].reason
    );
    refused(&booted.records, "digest-mismatch");
    assert_eq!(
        record(&booted.records, "boot.completed")["details"]["outcome"],
        "compromised"
    );
}

#[test]
fn try_counters_mark_a_failing_version_bad_and_fall_back() {
    let world = World::new();
    let state_dir = world.state();
    let anchor = world.anchor();
    let v1 = world.manifest(1);
    let good = Digest::of(&world.hello);
    let booted = world.boot(&anchor, &v1, |b| {
        b.state_dir(&state_dir).max_tries(2);
    });
    let state = booted.ctx().state().unwrap().clone();
    let log_path = world.path("starts.jsonl");
    state
        .set_audit(AuditLog::open(&log_path, SigningKey::generate(), &AuditConfig::new()).unwrap());
    assert_eq!(
        state.record_start("hello", good, true).unwrap(),
        StartVerdict::Confirmed
    );
    drop((booted, state));

    // Release 2 ships hello 2.0.0, which fails to start twice in a row.
    let new = other_bytes();
    world.write("hello2.wasm", &new);
    let v2 = world.write_manifest(
        &world.manifest_doc(2, &[("hello", "2.0.0", "hello2.wasm")]),
        &[&world.release],
    );
    let booted = world.boot(&anchor, &v2, |b| {
        b.state_dir(&state_dir).max_tries(2);
    });
    assert_eq!(booted.ctx().outcome, BootOutcome::Verified);
    let state = booted.ctx().state().unwrap().clone();
    let log = AuditLog::open(&log_path, SigningKey::generate(), &AuditConfig::new()).unwrap();
    state.set_audit(log.clone());
    assert_eq!(
        state
            .record_start("hello", Digest::of(&new), false)
            .unwrap(),
        StartVerdict::Failed {
            failures: 1,
            tries_left: 1
        }
    );
    assert_eq!(
        state
            .record_start("hello", Digest::of(&new), false)
            .unwrap(),
        StartVerdict::MarkedBad { failures: 2 }
    );
    // A good version that fails is not re-assessed.
    assert_eq!(
        state.record_start("hello", good, false).unwrap(),
        StartVerdict::GoodFailed
    );
    log.close().unwrap();
    let records = boot_records(&log_path);
    let bad = record(&records, "boot.component.marked-bad");
    assert_eq!(bad["subjects"]["component"], Digest::of(&new).to_hex());
    drop((booted, state));

    // The next boot of the same manifest may use the previous good copy:
    // it is older than the accepted 2.0.0, so only as an allowed downgrade.
    let booted = world.boot(&anchor, &v2, |b| {
        b.state_dir(&state_dir)
            .max_tries(2)
            .policy(BootPolicy::Recover)
            .allow_recovery_downgrade(true);
    });
    let ctx = booted.ctx();
    assert_eq!(ctx.outcome, BootOutcome::Downgraded);
    let hello = ctx.component("hello").unwrap();
    assert_eq!((hello.version(), hello.digest()), ("1.0.0", good));
    refused(&booted.records, "marked-bad");
    record(&booted.records, "boot.component.downgraded");

    // The state survives reopening (written through atomically).
    drop(booted);
    let reopened = BootState::open(&state_dir).unwrap();
    let copies = reopened.copies("hello");
    assert!(
        copies
            .iter()
            .any(|c| c.digest == Digest::of(&new) && c.status == boot::CopyStatus::Bad)
    );
    assert!(
        copies
            .iter()
            .any(|c| c.digest == good && c.status == boot::CopyStatus::Good)
    );
    assert!(
        std::fs::read_dir(&state_dir).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains(".tmp.")),
        "no temporary files left behind"
    );
}

#[test]
fn boot_quote_verifies_against_the_expected_register() {
    let world = World::new();
    let (anchor_path, manifest_path) = (world.anchor(), world.manifest(1));
    let host = SigningKey::generate();
    let host_pub = host.public().clone();
    let booted = world.boot(&anchor_path, &manifest_path, |b| {
        b.host_key(host).quote_nonce("challenge-1");
    });
    let ctx = booted.ctx();
    let quote = ctx
        .quote
        .as_ref()
        .expect("a host key makes a quote")
        .to_json();
    let rec = record(&booted.records, "boot.quote.signed");
    assert_eq!(rec["details"]["register"], ctx.register.to_hex());

    let anchor = TrustAnchor::from_file(&anchor_path).unwrap();
    let manifest = boot::BootManifest::from_file(&manifest_path).unwrap();
    let expected = boot::expected_register(&anchor, &manifest);
    let mut check = QuoteCheck::new();
    check
        .expected_register(expected)
        .nonce("challenge-1")
        .require_verified(true);
    let report = boot::verify_quote(&quote, &host_pub, &check).unwrap();
    assert_eq!(report.register, expected);
    assert_eq!(report.components[0].digest, Digest::of(&world.hello));

    // Another expected register, another nonce, another host key: refused.
    let mut wrong = QuoteCheck::new();
    wrong.expected_register(Digest::of(b"something else"));
    assert!(matches!(
        boot::verify_quote(&quote, &host_pub, &wrong),
        Err(BootError::RegisterMismatch { .. })
    ));
    let mut replay = QuoteCheck::new();
    replay.nonce("challenge-2");
    assert!(
        matches!(boot::verify_quote(&quote, &host_pub, &replay), Err(BootError::Quote(r)) if r.contains("nonce"))
    );
    let stranger = SigningKey::generate();
    assert!(matches!(
        boot::verify_quote(&quote, stranger.public(), &QuoteCheck::new()),
        Err(BootError::Threshold { .. })
    ));

    // An edited report keeps the host's signature but no longer verifies.
    let parsed = Envelope::from_slice(&quote, 1 << 20, "quote").unwrap();
    let edited = String::from_utf8(parsed.payload().to_vec())
        .unwrap()
        .replace("\"outcome\": \"verified\"", "\"outcome\": \"recovered\"");
    let mut forged = Envelope::new(QUOTE_PAYLOAD_TYPE, edited.into_bytes());
    forged.push_signature(parsed.signatures()[0].clone());
    assert!(matches!(
        boot::verify_quote(&forged.to_json(), &host_pub, &QuoteCheck::new()),
        Err(BootError::BadSignature { .. })
    ));

    // A report whose measurements do not extend to its register is refused
    // even when the host key signed it.
    let signer = SigningKey::generate();
    let mut report = ctx.report(Some(signer.id()), None);
    report.measurements[2].hash = Digest::of(b"other bytes").to_hex();
    let mut lying = Envelope::new(QUOTE_PAYLOAD_TYPE, serde_json::to_vec(&report).unwrap());
    lying.sign(&signer);
    assert!(matches!(
        boot::verify_quote(&lying.to_json(), signer.public(), &QuoteCheck::new()),
        Err(BootError::Quote(r)) if r.contains("is not what its 3 measurements extend to")
    ));
}

#[test]
fn per_component_signature_verifies_and_is_audited() {
    let world = World::new();
    let anchor = TrustAnchor::from_file(world.anchor()).unwrap();
    let statement = ComponentStatement::new("hello", "1.2.3", &world.hello, None);
    world.write(
        "hello.wasm.sig.json",
        &statement.sign(&[&world.release]).to_json(),
    );

    let component = boot::verify_component_file(world.path("hello.wasm"), &anchor).unwrap();
    assert_eq!((component.name(), component.version()), ("hello", "1.2.3"));
    assert_eq!(component.provenance(), &Provenance::Signature);
    assert_eq!(&component.bytes()[..], &world.hello[..]);
    assert_eq!(component.signers(), [world.release.id().clone()]);

    let log_path = world.path("verify.jsonl");
    let log = AuditLog::open(&log_path, SigningKey::generate(), &AuditConfig::new()).unwrap();
    boot::ComponentCheck::new(&anchor)
        .audit(log.clone())
        .expect_name("hello")
        .expect_version("1.2.3")
        .verify_file(world.path("hello.wasm"))
        .unwrap();
    log.close().unwrap();
    let records = boot_records(&log_path);
    let rec = record(&records, "boot.component.verified");
    assert_eq!(
        rec["subjects"]["component"],
        Digest::of(&world.hello).to_hex()
    );
    assert_eq!(rec["details"]["signers"][0], world.release.id().as_str());

    // A signature elsewhere, named explicitly.
    std::fs::rename(
        world.path("hello.wasm.sig.json"),
        world.path("elsewhere.json"),
    )
    .unwrap();
    assert!(matches!(
        boot::verify_component_file(world.path("hello.wasm"), &anchor),
        Err(BootError::Missing { .. })
    ));
    boot::ComponentCheck::new(&anchor)
        .signature_path(world.path("elsewhere.json"))
        .verify_file(world.path("hello.wasm"))
        .unwrap();
}
