//! Operating on workloads through the kernel (start, stop, pause, resume,
//! remove), and a kernel that runs many containers staying flat.

use std::time::Duration;

use forgeone::Priority;
use forgeone::SigningKey;
use forgeone::audit::{AuditConfig, AuditLog};
use forgeone::kernel::KernelError;
use forgeone::runtime::ContainerConfig;
use forgeone::runtime::ContainerStatus;

use super::{booted, component, kernel, settle, workload};
use crate::boot::World;

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_stop_pause_and_resume_go_through_the_kernel() {
    let world = World::new();
    let components = booted(&world);
    let log = AuditLog::open(
        world.path("ops.jsonl"),
        SigningKey::generate(),
        &AuditConfig::new(),
    )
    .unwrap();
    let kernel = kernel(&world, 10, &log);
    let hog = component(&components, "cpu-hog");
    let mut endless = ContainerConfig::new(hog.clone());
    endless
        .fuel(None)
        .timeout(None)
        .stop_grace(Duration::from_millis(20));
    let id = kernel
        .submit(workload("batch", Priority::Low, hog), endless)
        .unwrap();
    // Not placed yet: there is no container to act on.
    assert!(matches!(
        kernel.pause(id),
        Err(KernelError::IllegalTransition {
            action: "pause",
            ..
        })
    ));
    let report = kernel.schedule().unwrap();
    let container = report.launched[0].container;
    let status = || kernel.container(container).unwrap().status;
    until("running", || status() == ContainerStatus::Running).await;

    kernel.pause(id).unwrap();
    assert_eq!(status(), ContainerStatus::Paused);
    kernel.resume(id).unwrap();
    assert_eq!(status(), ContainerStatus::Running);
    // A running workload cannot be started again.
    assert!(matches!(
        kernel.start(id),
        Err(KernelError::IllegalTransition {
            action: "start",
            ..
        })
    ));
    kernel.stop(id).unwrap();
    settle(&kernel).await;
    assert_eq!(status(), ContainerStatus::Stopped);
    until("the placement is released", || kernel.idle()).await;
    assert_eq!(kernel.resources().memory.committed, 0);

    // Started again: placed again, same container, next run, on the
    // kernel's executor (its task is one of the kernel's).
    let launched = kernel.start(id).unwrap();
    assert_eq!(launched.container, container);
    until("running again", || status() == ContainerStatus::Running).await;
    assert_eq!(kernel.container(container).unwrap().run, 2);
    assert_eq!(kernel.live_tasks(), 1);
    assert!(kernel.resources().memory.committed > 0);

    kernel.stop(id).unwrap();
    settle(&kernel).await;
    kernel.wait().await;
    kernel.remove(id).unwrap();
    assert!(kernel.workload(id).is_none());
    assert!(kernel.container(container).is_none());
    kernel.shutdown("test over");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kernel_that_runs_many_containers_stays_flat() {
    let world = World::new();
    let components = booted(&world);
    let log = AuditLog::open(
        world.path("flat.jsonl"),
        SigningKey::generate(),
        &AuditConfig::new(),
    )
    .unwrap();
    let kernel = kernel(&world, 10, &log);
    let hello = component(&components, "hello");
    for round in 0..40 {
        let id = kernel
            .submit(
                workload(&format!("job-{round}"), Priority::Normal, hello),
                ContainerConfig::new(hello.clone()),
            )
            .unwrap();
        let report = kernel.schedule().unwrap();
        assert_eq!(report.launched.len(), 1, "{:?}", report.refused);
        settle(&kernel).await;
        until("its task ended", || kernel.live_tasks() == 0).await;
        // Forgotten once settled: nothing of it stays behind.
        kernel.remove(id).unwrap();
    }
    assert!(kernel.workloads().is_empty());
    assert_eq!(kernel.live_tasks(), 0);
    kernel.shutdown("test over");
}
