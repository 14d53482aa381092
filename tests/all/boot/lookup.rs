//! The context keeps the manifest that verified, and answers "what did the
//! boot make of this component file" without reading anything again.

use forgeone::boot::{BootManifest, BootOutcome, BootPolicy, Digest};

use super::{World, flip, other_bytes};

#[test]
fn context_keeps_the_manifest_that_verified() {
    let world = World::new();
    let (anchor, manifest_path) = (world.anchor(), world.manifest(4));
    let booted = world.boot(&anchor, &manifest_path, |_| {});
    let ctx = booted.ctx();
    let on_disk = BootManifest::from_file(&manifest_path).unwrap();
    let kept = ctx.manifest().expect("the manifest verified");
    assert_eq!(kept.digest(), on_disk.digest());
    assert_eq!((kept.release(), kept.version()), ("2026.1", 4));
    assert_eq!(kept.envelope().to_json(), on_disk.envelope().to_json());

    // Replacing the file afterwards changes nothing in the context.
    let other = world.manifest(5);
    std::fs::copy(&other, &manifest_path).unwrap();
    assert_eq!(ctx.manifest().unwrap().version(), 4);

    // A refused manifest is not kept.
    let unsigned = world.write_manifest(
        &world.manifest_doc(1, &[("hello", "1.0.0", "hello.wasm")]),
        &[],
    );
    let booted = world.boot(&anchor, &unsigned, |_| {});
    assert!(booted.ctx().manifest().is_none());
    assert!(booted.ctx().lookup(&world.path("hello.wasm")).is_none());
}

#[test]
fn lookup_finds_what_booted_from_a_file_or_why_it_did_not() {
    let world = World::new();
    std::fs::create_dir(world.path("lib")).unwrap();
    world.write("lib/other.wasm", &flip(&other_bytes(), 40));
    let signed_other = world.write("signed-other.wasm", &other_bytes());
    let mut doc = world.manifest_doc(
        1,
        &[
            ("hello", "1.0.0", "hello.wasm"),
            ("other", "1.0.0", "signed-other.wasm"),
        ],
    );
    doc.components[1].path = "lib/other.wasm".into();
    std::fs::remove_file(signed_other).unwrap();
    let manifest = world.write_manifest(&doc, &[&world.release]);
    let booted = world.boot(&world.anchor(), &manifest, |b| {
        b.policy(BootPolicy::Degraded);
    });
    let ctx = booted.ctx();
    assert_eq!(ctx.outcome, BootOutcome::Degraded);

    let hello = ctx.lookup(&world.path("hello.wasm")).unwrap().unwrap();
    assert_eq!(hello.name(), "hello");
    assert_eq!(hello.digest(), Digest::of(&world.hello));
    // Another spelling of the same file, and a symbolic link to it.
    let spelled = world.path("lib/../lib/./../hello.wasm");
    assert_eq!(
        ctx.lookup(&spelled).unwrap().unwrap().digest(),
        hello.digest()
    );
    #[cfg(unix)]
    {
        let link = world.path("link.wasm");
        std::os::unix::fs::symlink(world.path("hello.wasm"), &link).unwrap();
        assert_eq!(ctx.lookup(&link).unwrap().unwrap().name(), "hello");
    }

    let other = ctx
        .lookup(&world.path("lib/other.wasm"))
        .unwrap()
        .unwrap_err();
    assert_eq!(
        (other.name.as_str(), other.version.as_str()),
        ("other", "1.0.0")
    );
    assert_eq!(other.path, world.path("lib/other.wasm"));
    assert!(
        other.reason.contains("does not match the signed"),
        "{}",
        other.reason
    );

    // A file no entry names.
    assert!(ctx.lookup(&world.path("other.wasm")).is_none());
    assert!(ctx.lookup(&world.path("lib")).is_none());

    // Deleted since the boot: still found, and the bytes are those verified.
    std::fs::remove_file(world.path("hello.wasm")).unwrap();
    let hello = ctx.lookup(&world.path("hello.wasm")).unwrap().unwrap();
    assert_eq!(&hello.bytes()[..], &world.hello[..]);
    assert!(ctx.lookup(&world.path("lib/../hello.wasm")).is_some());
}

#[test]
fn lookup_follows_recovery_and_a_boot_that_runs_nothing() {
    let world = World::new();
    let (anchor, manifest) = (world.anchor(), world.manifest(1));
    let state = world.state();
    drop(world.boot(&anchor, &manifest, |b| {
        b.state_dir(&state);
    }));
    let tampered = flip(&world.hello, 100);
    world.write("hello.wasm", &tampered);

    // Recovered: the file leads to the good copy.
    let booted = world.boot(&anchor, &manifest, |b| {
        b.state_dir(&state).policy(BootPolicy::Recover);
    });
    let ctx = booted.ctx();
    assert_eq!(ctx.outcome, BootOutcome::Recovered);
    let hello = ctx.lookup(&world.path("hello.wasm")).unwrap().unwrap();
    assert_eq!(hello.digest(), Digest::of(&world.hello));
    assert_eq!(ctx.recovered[0].path, world.path("hello.wasm"));
    drop(booted);

    // Failed closed: nothing runs, so nothing is handed out, even what verified.
    world.write("other.wasm", &other_bytes());
    world.write("hello.wasm", &world.hello);
    let two = world.write_manifest(
        &world.manifest_doc(
            2,
            &[
                ("other", "1.0.0", "other.wasm"),
                ("hello", "1.0.0", "hello.wasm"),
            ],
        ),
        &[&world.release],
    );
    world.write("hello.wasm", &tampered);
    let booted = world.boot(&anchor, &two, |_| {});
    let ctx = booted.ctx();
    assert_eq!(ctx.outcome, BootOutcome::Compromised);
    let other = ctx.lookup(&world.path("other.wasm")).unwrap().unwrap_err();
    assert!(
        other.reason.starts_with("verified, but nothing runs"),
        "{}",
        other.reason
    );
    let hello = ctx.lookup(&world.path("hello.wasm")).unwrap().unwrap_err();
    assert!(hello.reason.contains("does not match"), "{}", hello.reason);
}
