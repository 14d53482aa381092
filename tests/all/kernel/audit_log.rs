//! The kernel and its audit log: compile failures are audited, and a log
//! that cannot be written stops unaudited work.

use super::*;

use forgeone::boot::Digest;
use forgeone::runtime::RuntimeError;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_component_that_does_not_compile_is_refused_and_audited() {
    let world = World::new();
    // Signed and verified like any other; only the compiler refuses it.
    let broken = b"\0asm\x0d\0\x01\0this is not a component".to_vec();
    world.write("broken.wasm", &broken);
    let doc = world.manifest_doc(1, &[("broken", "1.0.0", "broken.wasm")]);
    let manifest = world.write_manifest(&doc, &[&world.release]);
    let log_path = world.path("compile-audit.jsonl");
    let log = AuditLog::open(&log_path, SigningKey::generate(), &AuditConfig::new()).unwrap();
    let mut boot = BootBuilder::from_files(world.anchor(), manifest);
    boot.audit(log.clone());
    let ctx = boot.run().unwrap();
    let component = component(&ctx.components, "broken").clone();
    let kernel = kernel(&world, 10, &log);
    kernel
        .submit(
            workload("broken", Priority::Normal, &component),
            ContainerConfig::new(component.clone()),
        )
        .unwrap();
    let report = kernel.schedule().unwrap();
    assert!(report.launched.is_empty());
    assert!(
        matches!(
            report.refused[0].error,
            KernelError::Runtime(RuntimeError::Compile { .. })
        ),
        "{}",
        report.refused[0].error
    );
    kernel.shutdown("test over");
    log.close().unwrap();

    let all = records(&log_path);
    let digest = Digest::of(&broken).to_hex();
    // Measured against its signed digest at boot, then refused by the compiler.
    assert_eq!(kinds(&all, "boot.component.measured").len(), 1);
    let failed = kinds(&all, "container.compile_failed");
    assert_eq!(failed.len(), 1, "{all:#?}");
    let d = &failed[0]["details"];
    assert_eq!(
        (d["name"].as_str(), d["digest"].as_str()),
        (Some("broken"), Some(digest.as_str()))
    );
    let error = d["error"].as_str().unwrap();
    // The compiler's own words, not only ours.
    assert!(error.contains("does not compile"), "{error}");
    assert!(
        error.len() > "component `broken` () does not compile: ".len() + 64,
        "{error}"
    );
    assert_eq!(failed[0]["subjects"]["component"], digest);
    assert_eq!(failed[0]["actor"]["tenant"], "acme");
    // Nothing was created.
    assert!(kinds(&all, "container.created").is_empty());
}
