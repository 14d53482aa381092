//! Scheduler tests: placement (every constraint type, scoring,
//! explanations) and contention (priority, trust, preemption, quotas,
//! audit). The executor is crate-private: its tests (fairness, starvation,
//! affinity, shutdown, CPU accounting) are unit tests in
//! `host/src/scheduler/executor/tests.rs` and `resources.rs`.

mod contention;
mod placement;

use std::sync::Arc;

use forgeone::Priority;
use forgeone::scheduler::{
    Allocation, Capacity, Node, ScheduleError, SchedulerContext, StaticInventory, Workload,
};
use forgeone::{IdentityContext, PolicySet, TrustLevel, TrustVector};

pub const GIB: u64 = 1 << 30;

/// 4 cores, 8 GiB, 100 containers.
pub fn cap() -> Capacity {
    Capacity {
        cpu_millis: 4000,
        memory: 8 * GIB,
        storage: 100 * GIB,
        containers: 100,
    }
}

pub fn node(id: &str, region: &str, zone: &str) -> Node {
    Node::new(id, region, zone, cap())
}

/// Four nodes: two in eu-west (zones a and b), one in eu-central, one in
/// us-east, with a few labels each.
pub fn fleet() -> Vec<Node> {
    vec![
        node("dub-a", "eu-west", "eu-west-1a")
            .hardware("avx2")
            .network("public")
            .label("disk", "ssd")
            .trust(TrustLevel::High)
            .build(),
        node("dub-b", "eu-west", "eu-west-1b")
            .hardware("avx2")
            .network("public")
            .label("disk", "nvme")
            .build(),
        node("fra", "eu-central", "eu-central-1a")
            .hardware("gpu")
            .network("private")
            .label("disk", "nvme")
            .label("spot", "true")
            .build(),
        node("iad", "us-east", "us-east-1a")
            .network("public")
            .label("disk", "hdd")
            .build(),
    ]
}

pub fn ctx_with(nodes: Vec<Node>, policies: PolicySet) -> SchedulerContext {
    let mut ctx = SchedulerContext::new(Arc::new(StaticInventory::new(nodes)), policies).unwrap();
    ctx.explain_top(usize::MAX);
    ctx
}

pub fn ctx(nodes: Vec<Node>) -> SchedulerContext {
    ctx_with(nodes, PolicySet::permissive())
}

pub fn identity(tenant: &str, level: TrustLevel) -> IdentityContext {
    IdentityContext::new(tenant, format!("{tenant}-svc"), TrustVector::new(level, 1))
}

pub fn wl(name: &str, priority: Priority) -> Workload {
    Workload::new(name, priority, identity("acme", TrustLevel::Medium))
}

/// The nodes an allocation found feasible (every scored node).
pub fn feasible(a: &Allocation) -> Vec<String> {
    let mut v: Vec<String> = a
        .explanation
        .scores()
        .iter()
        .map(|s| s.node.to_string())
        .collect();
    v.sort();
    v
}

pub fn unschedulable(
    r: Result<Allocation, ScheduleError>,
) -> Box<forgeone::scheduler::Explanation> {
    match r {
        Err(ScheduleError::Unschedulable { explanation, .. }) => explanation,
        other => panic!("expected unschedulable, got {other:?}"),
    }
}
