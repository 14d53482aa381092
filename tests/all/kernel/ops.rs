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
    // Stopped, waited for, started again at once: placed again, same
    // container, next run, on the kernel's executor (its task is one of the
    // kernel's). Over and over, with nothing leaking.
    for run in 2..=6 {
        kernel.stop(id).unwrap();
        kernel.wait_for(id).await.unwrap();
        assert_eq!(status(), ContainerStatus::Stopped);
        assert_eq!(kernel.resources().memory.committed, 0);
        let launched = kernel.start(id).unwrap();
        assert_eq!(launched.container, container);
        until("running again", || status() == ContainerStatus::Running).await;
        assert_eq!(kernel.container(container).unwrap().run, run);
        assert_eq!(kernel.live_tasks(), 1);
        assert!(kernel.resources().memory.committed > 0);
        assert!(kernel.workload(id).unwrap().not_run.is_none());
    }

    kernel.stop(id).unwrap();
    kernel.wait_for(id).await.unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_evicted_by_start_is_queued_again_not_lost() {
    let world = World::new();
    let components = booted(&world);
    let log = AuditLog::open(
        world.path("evict.jsonl"),
        SigningKey::generate(),
        &AuditConfig::new(),
    )
    .unwrap();
    // Room for one container.
    let kernel = kernel(&world, 1, &log);
    let hog = component(&components, "cpu-hog");
    let hello = component(&components, "hello");
    let api = kernel
        .submit(
            workload("api", Priority::Critical, hello),
            ContainerConfig::new(hello.clone()),
        )
        .unwrap();
    kernel.schedule().unwrap();
    kernel.wait_for(api).await.unwrap();
    let mut endless = ContainerConfig::new(hog.clone());
    endless.fuel(None).timeout(None).stop_grace(Duration::ZERO);
    let batch = kernel
        .submit(workload("batch", Priority::Background, hog), endless)
        .unwrap();
    let placed = kernel.schedule().unwrap();
    assert_eq!(placed.launched.len(), 1, "{:?}", placed.refused);

    // Starting api again needs batch's room: batch is evicted, stopped and
    // queued again, never dropped.
    kernel.start(api).unwrap();
    kernel.wait_for(batch).await.unwrap();
    assert_eq!(
        kernel.pending(),
        1,
        "the evicted workload waits in the queue"
    );
    let view = kernel.workload(batch).unwrap();
    let evicted_at = view.container.as_ref().unwrap().run;
    assert!(view.not_run.is_none(), "{:?}", view.not_run);

    // Once api is done, batch is placed again: same container, next run.
    kernel.wait_for(api).await.unwrap();
    let again = kernel.schedule().unwrap();
    assert_eq!(again.launched.len(), 1, "{:?}", again.refused);
    assert_eq!(again.launched[0].name, "batch");
    // (It may have been evicted before its first run began.)
    until("batch runs again", || {
        kernel
            .workload(batch)
            .and_then(|v| v.container)
            .is_some_and(|c| c.status == ContainerStatus::Running && c.run == evicted_at + 1)
    })
    .await;
    kernel.drain("test over", Duration::ZERO).unwrap();
    kernel.wait().await;
    kernel.shutdown("test over");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_wait_loses_no_container() {
    let world = World::new();
    let components = booted(&world);
    let log_path = world.path("cancelled-wait.jsonl");
    let log = AuditLog::open(&log_path, SigningKey::generate(), &AuditConfig::new()).unwrap();
    let kernel = kernel(&world, 10, &log);
    let hog = component(&components, "cpu-hog");
    let mut endless = ContainerConfig::new(hog.clone());
    endless.fuel(None).timeout(None);
    kernel
        .submit(workload("batch", Priority::Low, hog), endless)
        .unwrap();
    kernel.schedule().unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(50), kernel.wait())
            .await
            .is_err()
    );
    // Still known to be running, so shutting down drains it, audited.
    assert!(!kernel.idle());
    assert_eq!(kernel.live_tasks(), 1);
    kernel.shutdown("test over");
    log.close().unwrap();
    let all = super::records(&log_path);
    assert_eq!(super::kinds(&all, "schedule.drain").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shut_down_kernel_takes_no_new_work() {
    let world = World::new();
    let components = booted(&world);
    let log = AuditLog::open(
        world.path("after-shutdown.jsonl"),
        SigningKey::generate(),
        &AuditConfig::new(),
    )
    .unwrap();
    let kernel = kernel(&world, 10, &log);
    kernel.shutdown("done");
    let hello = component(&components, "hello");
    assert!(matches!(
        kernel.submit(
            workload("late", Priority::Normal, hello),
            ContainerConfig::new(hello.clone())
        ),
        Err(KernelError::ShuttingDown)
    ));
    assert!(matches!(kernel.schedule(), Err(KernelError::ShuttingDown)));
}
