//! Trust is derived, never claimed: the kernel sets each workload's signers
//! from its verified component and its trust level from its tenant's
//! policy, whatever the caller put in the identity.

use std::time::Duration;

use forgeone::audit::{AuditConfig, AuditLog};
use forgeone::boot::VerifiedComponent;
use forgeone::kernel::{Kernel, KernelConfig, KernelError};
use forgeone::runtime::{ContainerConfig, ContainerStatus, RuntimeConfig};
use forgeone::scheduler::{ScheduleError, Workload};
use forgeone::{
    IdentityContext, PolicySet, Priority, SigningKey, TenantPolicy, TrustLevel, TrustVector,
};

use super::{booted, component, kinds, node, records, settle};
use crate::boot::World;

/// One node with room for one container; tenant `acme` is granted
/// `acme_trust`, `root` is granted `system`; preemption needs `high`.
fn one_slot_kernel(world: &World, log: &AuditLog, acme_trust: TrustLevel) -> Kernel {
    let mut policies = PolicySet::new();
    policies
        .tenant(
            "acme",
            TenantPolicy::new()
                .max_priority(Priority::Critical)
                .trust(acme_trust)
                .build(),
        )
        .tenant(
            "batch",
            TenantPolicy::new()
                .max_priority(Priority::Critical)
                .trust(TrustLevel::High)
                .build(),
        )
        .preempt_min_trust(TrustLevel::High);
    let mut runtime = RuntimeConfig::new();
    runtime.cache_dir(world.path("cache")).allow_unsigned(true);
    let mut config = KernelConfig::new(node(1), policies);
    config.runtime(runtime).workers(2);
    Kernel::new(config, log.clone()).unwrap()
}

/// A workload whose identity claims `system` trust and five signers.
fn claiming_system(name: &str, tenant: &str, priority: Priority) -> Workload {
    let identity = IdentityContext::new(tenant, name, TrustVector::new(TrustLevel::System, 5));
    let mut w = Workload::new(name, priority, identity);
    w.signers = vec!["made-up-key".into()];
    w
}

fn endless(hog: &VerifiedComponent) -> ContainerConfig {
    let mut c = ContainerConfig::new(hog.clone());
    c.fuel(None)
        .timeout(None)
        .stop_grace(Duration::from_millis(20));
    c
}

async fn running(kernel: &Kernel, container: uuid::Uuid) {
    while kernel.container(container).unwrap().status != ContainerStatus::Running {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_claiming_system_trust_in_a_medium_tenant_can_neither_preempt_nor_take_a_higher_lane()
 {
    let world = World::new();
    let components = booted(&world);
    let hog = component(&components, "cpu-hog");
    let hello = component(&components, "hello");
    let log_path = world.path("trust.jsonl");
    let log = AuditLog::open(&log_path, SigningKey::generate(), &AuditConfig::new()).unwrap();
    let kernel = one_slot_kernel(&world, &log, TrustLevel::Medium);

    // Background work of a high-trust tenant fills the node.
    let batch = kernel
        .submit(
            claiming_system("batch", "batch", Priority::Background),
            endless(hog),
        )
        .unwrap();
    let first = kernel.schedule().unwrap();
    assert_eq!(first.launched.len(), 1);
    running(&kernel, first.launched[0].container).await;

    // A critical workload of the medium tenant claims `system`: its claim
    // is replaced by what its tenant's policy grants, so it cannot preempt.
    let api = kernel
        .submit(
            claiming_system("api", "acme", Priority::Critical),
            ContainerConfig::new(hello.clone()),
        )
        .unwrap();
    let view = kernel.workload(api).unwrap();
    assert_eq!(view.trust, TrustLevel::Medium);
    let second = kernel.schedule().unwrap();
    assert!(
        second.launched.is_empty(),
        "it preempted on a claimed trust"
    );
    assert!(second.preempted.is_empty());
    match &second.refused[0].error {
        KernelError::Schedule(ScheduleError::Unschedulable { explanation, .. }) => {
            let note = explanation.note().unwrap_or_default();
            assert!(note.contains("trust"), "{note}");
        }
        other => panic!("expected unschedulable, got {other}"),
    }
    // The batch workload kept running, and its own claims were replaced
    // too: the policy's level, the component's real signers.
    let batch_view = kernel.workload(batch).unwrap();
    assert_eq!(batch_view.trust, TrustLevel::High);
    let ctx = batch_view.container.unwrap();
    assert_eq!(ctx.status, ContainerStatus::Running);
    assert_eq!(ctx.identity.trust.level, TrustLevel::High);
    assert_eq!(usize::from(ctx.identity.trust.signers), hog.signers().len());

    kernel.drain("test over", Duration::ZERO).unwrap();
    kernel.wait().await;
    kernel.shutdown("test over");
    log.close().unwrap();
    // The scheduler's own records show the derived trust, not the claim.
    let all = records(&log_path);
    let placed = kinds(&all, "schedule.placed");
    assert_eq!(placed.len(), 1);
    assert_eq!(placed[0]["actor"]["trust"], "high", "{}", placed[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_workload_in_a_high_tenant_preempts_and_runs_in_the_high_lane() {
    // The control for the test above: trust granted by policy does what
    // the claim could not.
    let world = World::new();
    let components = booted(&world);
    let hog = component(&components, "cpu-hog");
    let hello = component(&components, "hello");
    let log = AuditLog::open(
        world.path("trust-high.jsonl"),
        SigningKey::generate(),
        &AuditConfig::new(),
    )
    .unwrap();
    let kernel = one_slot_kernel(&world, &log, TrustLevel::High);
    kernel
        .submit(
            claiming_system("batch", "batch", Priority::Background),
            endless(hog),
        )
        .unwrap();
    let first = kernel.schedule().unwrap();
    running(&kernel, first.launched[0].container).await;
    let api = kernel
        .submit(
            claiming_system("api", "acme", Priority::Critical),
            ContainerConfig::new(hello.clone()),
        )
        .unwrap();
    let second = kernel.schedule().unwrap();
    assert_eq!(second.launched.len(), 1, "{:?}", second.refused);
    assert_eq!(second.preempted.len(), 1);
    settle(&kernel).await;
    let ctx = kernel.workload(api).unwrap().container.unwrap();
    assert_eq!(ctx.identity.trust.level, TrustLevel::High);
    kernel.wait().await;
    kernel.shutdown("test over");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_code_is_always_untrusted_whatever_its_tenant_grants() {
    let world = World::new();
    let log = AuditLog::open(
        world.path("unsigned.jsonl"),
        SigningKey::generate(),
        &AuditConfig::new(),
    )
    .unwrap();
    let kernel = one_slot_kernel(&world, &log, TrustLevel::High);
    let unsigned =
        VerifiedComponent::unsigned("hello", std::fs::read(crate::guests::HELLO).unwrap());
    let id = kernel
        .submit(
            claiming_system("guest", "acme", Priority::Normal),
            ContainerConfig::new(unsigned),
        )
        .unwrap();
    assert_eq!(kernel.workload(id).unwrap().trust, TrustLevel::Untrusted);
    let report = kernel.schedule().unwrap();
    assert_eq!(report.launched.len(), 1, "{:?}", report.refused);
    settle(&kernel).await;
    let ctx = kernel.workload(id).unwrap().container.unwrap();
    assert_eq!(ctx.identity.trust.level, TrustLevel::Untrusted);
    assert_eq!(ctx.identity.trust.signers, 0);
    kernel.wait().await;
    kernel.shutdown("test over");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_is_granted_by_tenant_policy_not_by_the_workload() {
    let world = World::new();
    let components = booted(&world);
    let hello = component(&components, "hello");
    let log_path = world.path("network.jsonl");
    let log = AuditLog::open(&log_path, SigningKey::generate(), &AuditConfig::new()).unwrap();
    let mut policies = PolicySet::new();
    policies
        .tenant("closed", TenantPolicy::new())
        .tenant("open", TenantPolicy::new().network(true).build());
    let mut runtime = RuntimeConfig::new();
    runtime.allow_network(true);
    let mut config = KernelConfig::new(node(10), policies);
    config.runtime(runtime).workers(1);
    let kernel = Kernel::new(config, log.clone()).unwrap();

    let mut asks = ContainerConfig::new(hello.clone());
    asks.network(true);
    let identity = |tenant: &str| IdentityContext::new(tenant, "p", TrustVector::default());
    let refused = kernel.submit(
        Workload::new("closed-net", Priority::Normal, identity("closed")),
        asks.clone(),
    );
    assert!(
        matches!(&refused, Err(KernelError::NetworkNotGranted { tenant, .. }) if tenant == "closed"),
        "{refused:?}"
    );
    kernel
        .submit(
            Workload::new("open-net", Priority::Normal, identity("open")),
            asks,
        )
        .unwrap();
    let report = kernel.schedule().unwrap();
    assert_eq!(report.launched.len(), 1, "{:?}", report.refused);
    settle(&kernel).await;
    kernel.wait().await;
    kernel.shutdown("test over");
    log.close().unwrap();
    let all = records(&log_path);
    let denied = kinds(&all, "policy.denied");
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0]["details"]["rule"], "network");
    assert_eq!(denied[0]["details"]["tenant"], "closed");
}
