//! A deployment file run through the library as `forgeone up` runs it:
//! boot as the file says, `Kernel::from_deployment`, boot assessment, and
//! the boot modes' rollback protection.

use std::path::PathBuf;
use std::time::Duration;

use forgeone::audit::{AuditConfig, AuditLog};
use forgeone::boot::{BootError, CopyStatus};
use forgeone::kernel::{Kernel, NotRun};
use forgeone::runtime::{Allocation, ContainerStatus};
use forgeone::{Deployment, SigningKey, TrustLevel};
use serde_json::Value;

use super::settle;
use crate::boot::World;
use crate::guests;

/// A world with hello, crasher and a `billing` copy of hello signed into a
/// manifest (billing then tampered with), a host key, and a deployment
/// running them plus a workload whose component is not in the manifest.
fn deployment_world(boot_line: &str) -> (World, PathBuf) {
    let world = World::new();
    world.write("crasher.wasm", &std::fs::read(guests::CRASHER).unwrap());
    world.write("billing.wasm", &world.hello);
    world.write("stray.wasm", &world.hello);
    let doc = world.manifest_doc(
        1,
        &[
            ("hello", "1.0.0", "hello.wasm"),
            ("crasher", "1.0.0", "crasher.wasm"),
            ("billing", "1.0.0", "billing.wasm"),
        ],
    );
    let manifest = world.write_manifest(&doc, &[&world.release]);
    let mut tampered = world.hello.clone();
    tampered.push(0);
    world.write("billing.wasm", &tampered);
    let anchor = world.anchor();
    // Written as keygen writes it: a private key others can read is refused.
    SigningKey::generate()
        .write_pair(&world.path("host.pem"), &world.path("host.pub.pem"))
        .unwrap();
    let toml = format!(
        r#"
{boot_line}
trust_anchor = "{anchor}"
boot_manifest = "{manifest}"
host_key = "host.pem"
audit_log = "audit.jsonl"
state_dir = "state"
boot_policy = "degraded"

[supervision]
backoff = "5ms"
max_backoff = "20ms"
quarantine_after = 2

[node]
region = "eu-west"
zone = "eu-west-1a"

[[tenant]]
name = "acme"
max_priority = "critical"
trust = "high"

[[workload]]
name = "api"
component = "hello.wasm"
priority = "critical"
tenant = "acme"

[[workload]]
name = "flaky"
component = "crasher.wasm"
tenant = "acme"
restart = "on-failure"
file_io = "pool"

[[workload]]
name = "billing"
component = "billing.wasm"
tenant = "acme"

[[workload]]
name = "stray"
component = "stray.wasm"
tenant = "acme"
"#,
        anchor = anchor.file_name().unwrap().to_string_lossy(),
        manifest = manifest.file_name().unwrap().to_string_lossy(),
    );
    let path = world.write("forgeone.toml", toml.as_bytes());
    (world, path)
}

fn audit_for(deployment: &Deployment) -> AuditLog {
    let key = SigningKey::from_file(&deployment.settings.host_key).unwrap();
    AuditLog::open(&deployment.settings.audit_log, key, &AuditConfig::new()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_runs_from_the_library_with_a_handful_of_calls() {
    let (_world, path) = deployment_world(r#"boot = "manifest""#);
    let deployment = Deployment::from_file(&path).unwrap();
    let audit = audit_for(&deployment);
    let boot = deployment
        .boot_builder()
        .audit(audit.clone())
        .run()
        .unwrap();
    let (kernel, report) = Kernel::from_deployment(&deployment, boot, audit.clone()).unwrap();
    // Pooled by default, sized from the file: its 4 workloads and 16
    // more, memories of up to the default limit.
    assert_eq!(forgeone::kernel::pool_size(&deployment), (20, 64 << 20));
    assert_eq!(
        kernel.allocation(),
        &Allocation::Pooling {
            instances: 20,
            memories: 60,
            max_memory: 64 << 20
        }
    );
    let placed: Vec<&str> = report.launched.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(placed, ["api", "flaky"]);
    settle(&kernel).await;

    let views = kernel.workloads();
    let names: Vec<&str> = views.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["api", "flaky", "billing", "stray"], "file order");
    let api = &views[0];
    // Trust from the tenant's policy, signers from the manifest.
    assert_eq!(api.trust, TrustLevel::High);
    let api_ctx = api.container.as_ref().unwrap();
    assert_eq!(api_ctx.status, ContainerStatus::Stopped);
    assert!(api_ctx.last_outcome.as_ref().unwrap().is_success());
    assert_eq!(api_ctx.identity.trust.signers, 1);
    assert!(matches!(
        views[1].container.as_ref().unwrap().status,
        ContainerStatus::Quarantined(_)
    ));
    match &views[2].not_run {
        Some(NotRun::Boot { reason }) => {
            assert!(reason.contains("where the signed size is"), "{reason}")
        }
        other => panic!("billing: {other:?}"),
    }
    // Matched by the file it names, never by a similar name: stray.wasm
    // has hello's bytes but is not listed.
    match &views[3].not_run {
        Some(NotRun::Boot { reason }) => {
            assert!(reason.contains("not part of the boot"), "{reason}")
        }
        other => panic!("stray: {other:?}"),
    }

    kernel.drain("test over", Duration::ZERO).unwrap();
    kernel.wait().await;
    // Boot assessment, done by the library: hello ran healthily and is now
    // last-known-good; the crasher counted a failed start. Each verdict is
    // recorded by its container's task, so it is in once the tasks ended.
    let state = kernel.boot().unwrap().state().unwrap();
    let hello = state.copies("hello");
    assert_eq!(hello[0].status, CopyStatus::Good, "{hello:?}");
    let crasher = state.copies("crasher");
    assert_eq!(crasher[0].status, CopyStatus::Pending, "{crasher:?}");
    assert_eq!(crasher[0].failures, 1, "{crasher:?}");

    kernel.shutdown("test over");
    audit.close().unwrap();
    let records = super::records(&deployment.settings.audit_log);
    let starts = super::kinds(&records, "boot.component.start-recorded");
    assert_eq!(starts.len(), 2, "{starts:?}");
    // Each workload's `file_io` reached its containers (every run's).
    let created = super::kinds(&records, "container.created");
    for (workload, file_io) in [("api", "on-thread"), ("flaky", "pool")] {
        let modes: Vec<&Value> = created
            .iter()
            .filter(|r| r["details"]["workload"] == workload)
            .map(|r| &r["details"]["file_io"])
            .collect();
        assert!(!modes.is_empty(), "no container.created for {workload}");
        assert!(modes.iter().all(|m| *m == file_io), "{workload}: {modes:?}");
    }
}

#[test]
fn a_missing_manifest_in_manifest_mode_is_an_error_not_a_switch_to_signatures() {
    let (world, path) = deployment_world(r#"boot = "manifest""#);
    let deployment = Deployment::from_file(&path).unwrap();
    std::fs::remove_file(&deployment.settings.boot_manifest).unwrap();
    let audit = audit_for(&deployment);
    let err = deployment
        .boot_builder()
        .audit(audit.clone())
        .run()
        .unwrap_err();
    assert!(matches!(err, BootError::Missing { .. }), "{err}");
    drop(world);
}

#[test]
fn signatures_mode_is_refused_once_the_state_has_accepted_a_manifest() {
    let (world, path) = deployment_world(r#"boot = "manifest""#);
    let deployment = Deployment::from_file(&path).unwrap();
    let audit = audit_for(&deployment);
    deployment
        .boot_builder()
        .audit(audit.clone())
        .run()
        .unwrap();
    audit.close().unwrap();

    // The operator (or an attacker) deletes the manifest and switches the
    // file to per-component signatures, which would drop the anchor pin
    // and the highest-version check.
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(r#"boot = "manifest""#, r#"boot = "signatures""#)
        .lines()
        .filter(|l| !l.starts_with("boot_manifest"))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&path, text).unwrap();
    let deployment = Deployment::from_file(&path).unwrap();
    let audit = audit_for(&deployment);
    let err = deployment
        .boot_builder()
        .audit(audit.clone())
        .run()
        .unwrap_err();
    assert!(
        matches!(err, BootError::ManifestRequired { version: 1, .. }),
        "{err}"
    );
    drop(world);
}

#[test]
fn deleting_the_state_record_does_not_switch_rollback_protection_off() {
    let (world, path) = deployment_world(r#"boot = "manifest""#);
    let deployment = Deployment::from_file(&path).unwrap();
    let audit = audit_for(&deployment);
    deployment
        .boot_builder()
        .audit(audit.clone())
        .run()
        .unwrap();
    audit.close().unwrap();
    // The record of the accepted manifest and versions goes; the pinned
    // anchor and the copies stay. Starting afresh would forget them all.
    let state = deployment.settings.state_dir.join("boot");
    std::fs::remove_file(state.join("state.json")).unwrap();
    let audit = audit_for(&deployment);
    let err = deployment
        .boot_builder()
        .audit(audit.clone())
        .run()
        .unwrap_err();
    assert!(matches!(err, BootError::StateCorrupt { .. }), "{err}");
    assert!(err.to_string().contains("state.json is missing"), "{err}");
    drop(world);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_keeps_running_for_healthy_after_becomes_last_known_good() {
    use forgeone::boot::BootBuilder;
    use forgeone::kernel::KernelConfig;
    use forgeone::runtime::ContainerConfig;
    use forgeone::scheduler::Workload;
    use forgeone::{IdentityContext, PolicySet, Priority, TrustVector};

    let world = World::new();
    world.write("cpu-hog.wasm", &std::fs::read(guests::CPU_HOG).unwrap());
    let doc = world.manifest_doc(1, &[("cpu-hog", "1.0.0", "cpu-hog.wasm")]);
    let manifest = world.write_manifest(&doc, &[&world.release]);
    let log = AuditLog::open(
        world.path("healthy.jsonl"),
        SigningKey::generate(),
        &AuditConfig::new(),
    )
    .unwrap();
    let boot = BootBuilder::from_files(world.anchor(), manifest)
        .state_dir(world.state())
        .audit(log.clone())
        .run()
        .unwrap();
    let hog = boot.components[0].clone();
    let mut config = KernelConfig::new(super::node(4), PolicySet::permissive());
    config
        .boot(boot)
        .healthy_after(Duration::from_millis(200))
        .workers(1);
    let kernel = Kernel::new(config, log.clone()).unwrap();
    let mut service = ContainerConfig::new(hog);
    service.fuel(None).timeout(None).stop_grace(Duration::ZERO);
    let identity = IdentityContext::new("acme", "svc", TrustVector::default());
    kernel
        .submit(Workload::new("svc", Priority::Normal, identity), service)
        .unwrap();
    kernel.schedule().unwrap();
    let state = kernel.boot().unwrap().state().unwrap();
    let pending = state.copies("cpu-hog");
    assert_eq!(pending[0].status, CopyStatus::Pending);
    // Still running, never exited: confirmed once it has run long enough.
    let mut waited = 0;
    while state.copies("cpu-hog")[0].status != CopyStatus::Good {
        waited += 1;
        assert!(waited < 1000, "never confirmed while running");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let running = kernel.workloads()[0].container.clone().unwrap();
    assert_eq!(running.status, ContainerStatus::Running);
    kernel.drain("test over", Duration::ZERO).unwrap();
    kernel.wait().await;
    kernel.shutdown("test over");
}
