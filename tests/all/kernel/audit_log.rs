//! The kernel and its audit log: compile failures are audited, and a log
//! that cannot be written stops unaudited work.

use super::*;

use forgeone::boot::Digest;
use forgeone::kernel::AuditFailure;
use forgeone::runtime::{Failure, RuntimeError};

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

/// A kernel whose audit log is on a disk that fills up when `full` is set.
fn on_a_full_disk(
    world: &World,
    name: &str,
    configure: impl FnOnce(&mut KernelConfig),
) -> (Kernel, AuditLog, Arc<AtomicBool>, std::path::PathBuf) {
    let path = world.path(name);
    let full = Arc::new(AtomicBool::new(false));
    let mut config = AuditConfig::new();
    config.retry_every(Duration::from_millis(20));
    let log = {
        let full = full.clone();
        AuditLog::open_with(&path, SigningKey::generate(), &config, move |file| {
            Box::new(FullDisk {
                file,
                full: full.clone(),
                partial_written: Arc::default(),
            })
        })
        .unwrap()
    };
    let mut runtime = RuntimeConfig::new();
    runtime.cache_dir(world.path("cache"));
    let mut kernel_config = KernelConfig::new(node(10), PolicySet::permissive());
    kernel_config.runtime(runtime).workers(2);
    configure(&mut kernel_config);
    let kernel = Kernel::new(kernel_config, log.clone()).unwrap();
    (kernel, log, full, path)
}

/// The hog, running for ever (no fuel budget, no deadline), restarted
/// always: only the audit failure policy ends it.
fn forever(hog: &VerifiedComponent) -> ContainerConfig {
    let mut config = ContainerConfig::new(hog.clone());
    config
        .fuel(None)
        .timeout(None)
        .restart(RestartPolicy::Always);
    config
}

async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..2_000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("gave up waiting for: {what}");
}

fn fill(log: &AuditLog, full: &AtomicBool) {
    full.store(true, Ordering::SeqCst);
    log.checkpoint().unwrap();
    assert!(log.flush().is_err());
}

async fn recover(log: &AuditLog, full: &AtomicBool) {
    full.store(false, Ordering::SeqCst);
    until("the log recovers", || log.ensure_writable().is_ok()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_audit_log_stops_running_containers_and_refuses_new_work() {
    let world = World::new();
    let components = booted(&world);
    let (kernel, log, full, path) = on_a_full_disk(&world, "stop.jsonl", |_| {});
    let hog = component(&components, "cpu-hog");
    let w = kernel
        .submit(workload("hog", Priority::Normal, hog), forever(hog))
        .unwrap();
    let report = kernel.schedule().unwrap();
    let container = report.launched[0].container;
    let status = || kernel.container(container).unwrap().status;
    until("the hog runs", || status() == ContainerStatus::Running).await;

    // The disk fills up while it runs. The hog never calls the host: it is
    // stopped at its next yield point, and not restarted.
    fill(&log, &full);
    let outcome = tokio::time::timeout(Duration::from_secs(20), kernel.wait_for(w))
        .await
        .expect("the hog was not stopped")
        .unwrap();
    let Some(Failure::AuditUnavailable { log: named, cause }) = outcome.failure() else {
        panic!("{outcome}");
    };
    assert_eq!(named, &path);
    assert!(cause.contains("No space left"), "{cause}");
    assert!(
        outcome.to_string().contains(&path.display().to_string()),
        "{outcome}"
    );
    assert!(matches!(
        status(),
        ContainerStatus::Failed(Failure::AuditUnavailable { .. })
    ));
    assert_eq!(kernel.container(container).unwrap().run, 1, "not restarted");
    // Nothing new is placed or started meanwhile.
    let hello = component(&components, "hello");
    kernel
        .submit(
            workload("api", Priority::Critical, hello),
            ContainerConfig::new(hello.clone()),
        )
        .unwrap();
    let report = kernel.schedule().unwrap();
    assert!(report.launched.is_empty(), "ran unaudited work");
    assert_eq!(kernel.pending(), 1);

    // Space comes back: the queued work runs; the log verifies.
    recover(&log, &full).await;
    let report = kernel.schedule().unwrap();
    assert_eq!(report.launched.len(), 1, "{:?}", report.refused);
    settle(&kernel).await;
    kernel.shutdown("test over");
    log.close().unwrap();
    audit::verify_file(&path, &VerifyOptions::new()).unwrap();
    let all = records(&path);
    assert_eq!(kinds(&all, "audit.resumed").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_pause_policy_containers_wait_for_the_log_and_resume() {
    let world = World::new();
    let components = booted(&world);
    let (kernel, log, full, path) = on_a_full_disk(&world, "pause.jsonl", |c| {
        c.on_audit_failure(AuditFailure::Pause);
    });
    let hog = component(&components, "cpu-hog");
    let w = kernel
        .submit(workload("hog", Priority::Normal, hog), forever(hog))
        .unwrap();
    let container = kernel.schedule().unwrap().launched[0].container;
    let ctx = || kernel.container(container).unwrap();
    until("the hog runs", || ctx().status == ContainerStatus::Running).await;

    fill(&log, &full);
    until("the hog is paused", || {
        ctx().status == ContainerStatus::Paused
    })
    .await;
    // Paused: once its last tick is published it burns nothing, and an
    // operator cannot resume it.
    let mut fuel = ctx().resources.fuel_consumed;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = ctx().resources.fuel_consumed;
        if std::mem::replace(&mut fuel, now) == now {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        ctx().resources.fuel_consumed,
        fuel,
        "burns fuel while paused"
    );
    assert!(kernel.resume(w).is_err(), "resumed while the log fails");

    // The log recovers: it resumes on its own, and the pause is recorded.
    recover(&log, &full).await;
    until("the hog runs again", || {
        ctx().status == ContainerStatus::Running
    })
    .await;
    until("it burns fuel again", || {
        ctx().resources.fuel_consumed > fuel
    })
    .await;
    assert_eq!(ctx().run, 1, "the same run, resumed");
    kernel.drain("test over", Duration::ZERO).unwrap();
    kernel.wait().await;
    kernel.shutdown("test over");
    log.close().unwrap();
    audit::verify_file(&path, &VerifyOptions::new()).unwrap();
    let all = records(&path);
    let paused = kinds(&all, "container.audit_paused");
    assert_eq!(paused.len(), 1, "{all:#?}");
    assert!(
        paused[0]["details"]["cause"]
            .as_str()
            .unwrap()
            .contains("No space left")
    );
    assert!(paused[0]["details"]["paused_ms"].as_u64().unwrap() >= 100);
    assert_eq!(paused[0]["subjects"]["container"], container.to_string());
}

/// An audit disk that holds the write of any batch holding a
/// `container.started` record until `release` is set.
struct SlowStart {
    file: std::fs::File,
    release: Arc<AtomicBool>,
    held: Arc<AtomicBool>,
}

impl forgeone::audit::AuditStorage for SlowStart {
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let started = bytes.windows(17).any(|w| w == b"container.started");
        while started && !self.release.load(Ordering::SeqCst) {
            self.held.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(2));
        }
        std::io::Write::write_all(&mut self.file, bytes)
    }
    fn sync(&mut self) -> std::io::Result<()> {
        self.file.sync_data()
    }
    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        forgeone::audit::AuditStorage::truncate(&mut self.file, len)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_is_not_running_until_its_start_is_on_the_record() {
    let world = World::new();
    let components = booted(&world);
    let path = world.path("slow-start.jsonl");
    let (release, held) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let log = {
        let (release, held) = (release.clone(), held.clone());
        AuditLog::open_with(
            &path,
            SigningKey::generate(),
            &AuditConfig::new(),
            move |file| {
                Box::new(SlowStart {
                    file,
                    release: release.clone(),
                    held: held.clone(),
                })
            },
        )
        .unwrap()
    };
    // Released however the test ends, so a failed assertion does not leave
    // the log's writer (joined on drop) waiting for ever.
    struct Release(Arc<AtomicBool>);
    impl Drop for Release {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let _release = Release(release.clone());
    let kernel = kernel(&world, 10, &log);
    let hog = component(&components, "cpu-hog");
    kernel
        .submit(workload("hog", Priority::Normal, hog), forever(hog))
        .unwrap();
    let container = kernel.schedule().unwrap().launched[0].container;
    let ctx = || kernel.container(container).unwrap();
    until("the start record is being written", || {
        held.load(Ordering::SeqCst)
    })
    .await;
    // Its start is not durable: it is still being created, and not one
    // instruction of it has run (a monitor, or the audit failure policy,
    // that sees `running` may rely on its start being on the record).
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(ctx().status, ContainerStatus::Creating);
    assert_eq!(ctx().resources.fuel_consumed, 0);
    release.store(true, Ordering::SeqCst);
    until("the hog runs", || ctx().status == ContainerStatus::Running).await;
    until("it burns fuel", || ctx().resources.fuel_consumed > 0).await;
    kernel.drain("test over", Duration::ZERO).unwrap();
    kernel.wait().await;
    kernel.shutdown("test over");
    log.close().unwrap();
    audit::verify_file(&path, &VerifyOptions::new()).unwrap();
}
