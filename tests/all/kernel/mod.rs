//! The kernel end to end: real signed components booted from a manifest,
//! placed on the local node, run on the work-stealing executor under
//! supervision, and every step in a verified audit log.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use forgeone::Priority;
use forgeone::audit::{self, AuditConfig, AuditLog, VerifyOptions};
use forgeone::boot::{BootBuilder, VerifiedComponent};
use forgeone::kernel::{Kernel, KernelConfig, KernelError};
use forgeone::runtime::{
    BackoffConfig, ContainerConfig, ContainerStatus, RestartPolicy, RuntimeConfig,
};
use forgeone::scheduler::{Capacity, Constraint, Node, ScheduleError, Workload};
use forgeone::{IdentityContext, PolicySet, SigningKey, TrustLevel, TrustVector};
use serde_json::Value;

use crate::audit::FullDisk;
use crate::boot::World;
use crate::guests;

mod audit_log;
mod deploy;
mod ops;
mod trust;

/// hello, crasher and cpu-hog, signed in one boot manifest and booted.
pub(crate) fn booted(world: &World) -> Vec<VerifiedComponent> {
    for (name, path) in [
        ("hello.wasm", guests::HELLO),
        ("crasher.wasm", guests::CRASHER),
        ("cpu-hog.wasm", guests::CPU_HOG),
    ] {
        world.write(name, &std::fs::read(path).unwrap());
    }
    let doc = world.manifest_doc(
        1,
        &[
            ("hello", "1.0.0", "hello.wasm"),
            ("crasher", "1.0.0", "crasher.wasm"),
            ("cpu-hog", "1.0.0", "cpu-hog.wasm"),
        ],
    );
    let manifest = world.write_manifest(&doc, &[&world.release]);
    let ctx = BootBuilder::from_files(world.anchor(), manifest)
        .run()
        .unwrap();
    assert_eq!(ctx.components.len(), 3);
    ctx.components
}

pub(crate) fn component<'a>(
    components: &'a [VerifiedComponent],
    name: &str,
) -> &'a VerifiedComponent {
    components.iter().find(|c| c.name() == name).unwrap()
}

pub(crate) fn node(containers: u32) -> Node {
    let cap = Capacity {
        cpu_millis: 2000,
        memory: 1 << 30,
        storage: 0,
        containers,
    };
    Node::new("local", "eu-west", "eu-west-1a", cap)
}

pub(crate) fn workload(name: &str, priority: Priority, c: &VerifiedComponent) -> Workload {
    let signers = u8::try_from(c.signers().len()).unwrap();
    let identity = IdentityContext::new("acme", name, TrustVector::new(TrustLevel::High, signers));
    let mut w = Workload::new(name, priority, identity);
    w.signers = c.signers().iter().map(ToString::to_string).collect();
    w
}

pub(crate) fn kernel(world: &World, containers: u32, log: &AuditLog) -> Kernel {
    let mut backoff = BackoffConfig::new();
    backoff
        .initial(Duration::from_millis(5))
        .max(Duration::from_millis(20))
        .crash_loop_threshold(3);
    let mut runtime = RuntimeConfig::new();
    runtime.backoff(backoff).cache_dir(world.path("cache"));
    let mut config = KernelConfig::new(node(containers), PolicySet::permissive());
    config.runtime(runtime).workers(2);
    Kernel::new(config, log.clone()).unwrap()
}

pub(crate) fn records(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub(crate) fn kinds(records: &[Value], kind: &str) -> Vec<Value> {
    records
        .iter()
        .filter(|r| r["kind"] == kind)
        .cloned()
        .collect()
}

pub(crate) async fn settle(kernel: &Kernel) {
    tokio::time::timeout(Duration::from_secs(60), kernel.wait_settled())
        .await
        .expect("containers did not settle within 60 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_places_runs_supervises_and_releases_every_workload_audited() {
    let world = World::new();
    let components = booted(&world);
    let host = SigningKey::generate();
    let log_path = world.path("kernel-audit.jsonl");
    let log = AuditLog::open(
        &log_path,
        SigningKey::from_pem(&host.to_pem()).unwrap(),
        &AuditConfig::new(),
    )
    .unwrap();
    let kernel = kernel(&world, 10, &log);

    let hello = component(&components, "hello");
    let crasher = component(&components, "crasher");
    kernel
        .submit(
            workload("api", Priority::Critical, hello),
            ContainerConfig::new(hello.clone()),
        )
        .unwrap();
    let mut flaky = ContainerConfig::new(crasher.clone());
    flaky.restart(RestartPolicy::OnFailure);
    kernel
        .submit(workload("flaky", Priority::Normal, crasher), flaky)
        .unwrap();
    let mut us = workload("us-only", Priority::High, hello);
    us.constraint(Constraint::location("us-*"));
    kernel
        .submit(us, ContainerConfig::new(hello.clone()))
        .unwrap();

    let report = kernel.schedule().unwrap();
    // Placed in priority order; the US-only workload fits nowhere, with
    // the reason.
    let launched: Vec<&str> = report.launched.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(launched, ["api", "flaky"]);
    assert_eq!(report.refused.len(), 1);
    match &report.refused[0].error {
        KernelError::Schedule(ScheduleError::Unschedulable { explanation, .. }) => {
            let reasons: Vec<String> = explanation
                .rejected()
                .iter()
                .map(|g| g.reason.to_string())
                .collect();
            assert!(reasons.iter().any(|r| r.contains("us-*")), "{reasons:?}");
        }
        other => panic!("expected unschedulable, got {other}"),
    }

    settle(&kernel).await;
    assert!(kernel.settled());
    let views = kernel.workloads();
    let api = views.iter().find(|v| v.name == "api").unwrap();
    let api_ctx = api.container.as_ref().unwrap();
    assert_eq!(api_ctx.status, ContainerStatus::Stopped);
    assert!(api_ctx.last_outcome.as_ref().unwrap().is_success());
    // The identity the guest ran as carries the verified signers.
    assert_eq!(api_ctx.identity.trust.signers, 1);
    let flaky = views.iter().find(|v| v.name == "flaky").unwrap();
    let flaky_ctx = flaky.container.as_ref().unwrap();
    assert!(
        matches!(flaky_ctx.status, ContainerStatus::Quarantined(_)),
        "{:?}",
        flaky_ctx.status
    );
    assert_eq!(flaky_ctx.run, 3);

    // A quarantined container waits for an operator: drain it, then wait.
    kernel
        .drain("test over", Duration::from_millis(100))
        .unwrap();
    tokio::time::timeout(Duration::from_secs(30), kernel.wait())
        .await
        .unwrap();
    assert!(kernel.idle());
    // No new work once draining.
    assert!(matches!(kernel.schedule(), Err(KernelError::ShuttingDown)));
    // Resources were given back when the containers ended.
    assert_eq!(kernel.resources().memory.committed, 0);
    kernel.shutdown("test over");
    log.close().unwrap();

    let mut options = VerifyOptions::new();
    options.key(host.public().clone());
    audit::verify_file(&log_path, &options).unwrap();
    let all = records(&log_path);
    assert_eq!(kinds(&all, "schedule.placed").len(), 2);
    assert_eq!(kinds(&all, "schedule.unschedulable").len(), 1);
    assert_eq!(kinds(&all, "container.created").len(), 2);
    assert_eq!(kinds(&all, "container.quarantined").len(), 1);
    assert_eq!(kinds(&all, "schedule.released").len(), 2);
    let drain = kinds(&all, "schedule.drain");
    assert_eq!(drain.len(), 1);
    assert_eq!(drain[0]["details"]["reason"], "test over");
    // Placement comes before the container it created.
    let seq_of = |kind: &str, name: &str| {
        all.iter()
            .find(|r| r["kind"] == kind && r.to_string().contains(name))
            .map(|r| r["seq"].as_u64().unwrap())
            .unwrap()
    };
    assert!(seq_of("schedule.placed", "\"api\"") < seq_of("container.created", "\"api\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_critical_workload_preempts_background_work_and_its_container_is_stopped() {
    let world = World::new();
    let components = booted(&world);
    let log_path = world.path("preempt-audit.jsonl");
    let log = AuditLog::open(&log_path, SigningKey::generate(), &AuditConfig::new()).unwrap();
    // Room for one container only.
    let kernel = kernel(&world, 1, &log);
    let hog = component(&components, "cpu-hog");
    let hello = component(&components, "hello");

    let mut forever = ContainerConfig::new(hog.clone());
    forever
        .fuel(None)
        .timeout(None)
        .stop_grace(Duration::from_millis(50));
    kernel
        .submit(workload("batch", Priority::Background, hog), forever)
        .unwrap();
    let first = kernel.schedule().unwrap();
    assert_eq!(first.launched.len(), 1);
    let hog_container = first.launched[0].container;
    // Let it spin.
    while kernel.container(hog_container).unwrap().status != ContainerStatus::Running {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    kernel
        .submit(
            workload("api", Priority::Critical, hello),
            ContainerConfig::new(hello.clone()),
        )
        .unwrap();
    let second = kernel.schedule().unwrap();
    assert_eq!(second.launched.len(), 1, "{:?}", second.refused);
    assert_eq!(second.launched[0].name, "api");
    assert_eq!(second.preempted.len(), 1);
    assert_eq!(second.preempted[0].name, "batch");
    assert_eq!(second.preempted[0].container, Some(hog_container));
    assert_eq!(second.preempted[0].by, "api");

    settle(&kernel).await;
    // The hog was stopped (at a yield point: it never calls the host).
    assert_eq!(
        kernel.container(hog_container).unwrap().status,
        ContainerStatus::Stopped
    );
    kernel.wait().await;
    kernel.shutdown("test over");
    log.close().unwrap();
    let all = records(&log_path);
    let preempted = kinds(&all, "schedule.preempted");
    assert_eq!(preempted.len(), 1);
    assert_eq!(preempted[0]["details"]["victim"]["name"], "batch");
    assert_eq!(preempted[0]["details"]["preemptor"]["name"], "api");
    assert_eq!(kinds(&all, "container.stop_requested").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kernel_refuses_new_work_while_the_audit_log_cannot_be_written() {
    let world = World::new();
    let components = booted(&world);
    let path = world.path("full-audit.jsonl");
    let full = Arc::new(AtomicBool::new(false));
    let partial = Arc::new(AtomicBool::new(false));
    let mut config = AuditConfig::new();
    config.retry_every(Duration::from_millis(20));
    let log = {
        let full = full.clone();
        AuditLog::open_with(&path, SigningKey::generate(), &config, move |file| {
            Box::new(FullDisk {
                file,
                full: full.clone(),
                partial_written: partial.clone(),
            })
        })
        .unwrap()
    };
    let kernel = kernel(&world, 10, &log);
    let hello = component(&components, "hello");

    // The disk fills up; the next write fails.
    full.store(true, Ordering::SeqCst);
    log.checkpoint().unwrap();
    assert!(log.flush().is_err());
    kernel
        .submit(
            workload("api", Priority::Critical, hello),
            ContainerConfig::new(hello.clone()),
        )
        .unwrap();
    let report = kernel.schedule().unwrap();
    assert!(report.launched.is_empty(), "ran unaudited work");
    assert_eq!(report.refused.len(), 1);
    assert!(
        matches!(
            report.refused[0].error,
            KernelError::Schedule(ScheduleError::Audit(_))
        ),
        "{}",
        report.refused[0].error
    );
    // Nothing was created, and nothing was lost: the workload waits.
    assert!(kernel.workloads().iter().all(|v| v.container.is_none()));
    assert_eq!(kernel.pending(), 1);

    // Space comes back: the same workload is placed and runs.
    full.store(false, Ordering::SeqCst);
    let mut tries = 0;
    while log.ensure_writable().is_err() {
        tries += 1;
        assert!(tries < 500, "the log never recovered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let report = kernel.schedule().unwrap();
    assert_eq!(report.launched.len(), 1, "{:?}", report.refused);
    assert_eq!(report.launched[0].name, "api");
    settle(&kernel).await;
    kernel.wait().await;
    kernel.shutdown("test over");
    log.close().unwrap();
}
