//! Priority, trust and age ordering; preemption; caps and quotas; audit.

use forgeone::Priority;
use forgeone::SigningKey;
use forgeone::audit::{AuditConfig, AuditLog};
use forgeone::scheduler::{
    Capacity, Commitment, Constraint, LocalNode, Node, ResourceMonitor, ResourceRequirements,
    ScheduleError, ScheduleEvent,
};
use forgeone::{PolicySet, TenantPolicy, TrustLevel, Workload};

use super::*;

/// One node with room for exactly `slots` workloads of 1 core.
fn one_node(slots: u64) -> Vec<Node> {
    vec![Node::new(
        "n",
        "r",
        "z",
        Capacity {
            cpu_millis: slots * 1000,
            memory: 64 * GIB,
            storage: 0,
            containers: 100,
        },
    )]
}

fn sized(name: &str, priority: Priority, tenant: &str, trust: TrustLevel, cpu: u32) -> Workload {
    let mut w = Workload::new(name, priority, identity(tenant, trust));
    w.requirements(ResourceRequirements::new(cpu, 1 << 20));
    w
}

fn placed_names(outcomes: &[forgeone::scheduler::Scheduled]) -> Vec<String> {
    outcomes
        .iter()
        .filter(|o| o.result.is_ok())
        .map(|o| o.name.clone())
        .collect()
}

#[test]
fn pending_work_is_ordered_by_priority_then_trust_then_age() {
    let mut c = ctx(one_node(3));
    // Submitted in the worst order; only three fit.
    c.submit(sized(
        "bg",
        Priority::Background,
        "acme",
        TrustLevel::System,
        1000,
    ));
    c.submit(sized(
        "normal-old-low-trust",
        Priority::Normal,
        "acme",
        TrustLevel::Low,
        1000,
    ));
    c.submit(sized(
        "normal-high-trust",
        Priority::Normal,
        "acme",
        TrustLevel::High,
        1000,
    ));
    c.submit(sized(
        "normal-young-low-trust",
        Priority::Normal,
        "acme",
        TrustLevel::Low,
        1000,
    ));
    c.submit(sized(
        "critical",
        Priority::Critical,
        "acme",
        TrustLevel::Low,
        1000,
    ));
    let outcomes = c.schedule_pending().unwrap();
    let order: Vec<&str> = outcomes.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(
        order,
        [
            "critical",
            "normal-high-trust",
            "normal-old-low-trust",
            "normal-young-low-trust",
            "bg"
        ]
    );
    assert_eq!(
        placed_names(&outcomes),
        ["critical", "normal-high-trust", "normal-old-low-trust"]
    );
}

/// Fills a 4-core node with background (1 core), low (2 cores) and
/// normal (1 core) work.
fn full_node() -> SchedulerContext {
    let mut c = ctx(one_node(4));
    for (name, p, cpu) in [
        ("bg", Priority::Background, 1000),
        ("low", Priority::Low, 2000),
        ("normal", Priority::Normal, 1000),
    ] {
        c.schedule_workload(sized(name, p, "acme", TrustLevel::Medium, cpu))
            .unwrap();
    }
    c
}

#[test]
fn preemption_evicts_the_smallest_set_of_lower_priority_victims() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&log_path, SigningKey::generate(), &AuditConfig::new()).unwrap();
    let mut c = full_node();
    c.audit(log.clone());
    // Needs 2 cores: evicting `low` alone makes room; `bg` is spared (the
    // reprieve pass) and `normal` is never needed.
    let a = c
        .schedule_workload(sized(
            "crit",
            Priority::Critical,
            "acme",
            TrustLevel::High,
            2000,
        ))
        .unwrap();
    let victims: Vec<&str> = a.preempted.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(victims, ["low"]);
    assert!(
        a.explanation
            .note()
            .unwrap()
            .contains("preempted 1 on n: low")
    );
    let mut running: Vec<&str> = c.workloads().map(|w| w.name.as_str()).collect();
    running.sort();
    assert_eq!(running, ["bg", "crit", "normal"]);
    assert_eq!(c.metrics().preemptions, 1);

    log.close().unwrap();
    let text = std::fs::read_to_string(&log_path).unwrap();
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let preempted: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["kind"] == "schedule.preempted")
        .collect();
    assert_eq!(preempted.len(), 1);
    let d = &preempted[0]["details"];
    assert_eq!(d["victim"]["name"], "low");
    assert_eq!(d["victim"]["priority"], "low");
    assert_eq!(d["preemptor"]["name"], "crit");
    assert_eq!(d["preemptor"]["trust"], "high");
    assert_eq!(d["node"], "n");
    let placed = records
        .iter()
        .find(|r| r["kind"] == "schedule.placed" && r["details"]["name"] == "crit")
        .unwrap();
    assert_eq!(placed["details"]["preempted"], serde_json::json!(["low"]));
    assert_eq!(placed["subjects"]["node"], "n");
}

#[test]
fn preemption_prefers_fewer_and_lower_victims() {
    // Needing 3 cores, evicting `low` (2) + `bg` (1) is the only way that
    // spares `normal`.
    let mut c = full_node();
    let a = c
        .schedule_workload(sized(
            "crit",
            Priority::Critical,
            "acme",
            TrustLevel::Medium,
            3000,
        ))
        .unwrap();
    let mut victims: Vec<&str> = a.preempted.iter().map(|w| w.name.as_str()).collect();
    victims.sort();
    assert_eq!(victims, ["bg", "low"]);

    // Never an equal or higher priority: a `normal` workload can evict only
    // `bg` and `low`, and 4 cores would also need `normal` itself.
    let mut c = full_node();
    let e = unschedulable(c.schedule_workload(sized(
        "big-normal",
        Priority::Normal,
        "acme",
        TrustLevel::High,
        4000,
    )));
    assert!(e.note().unwrap().contains("no lower-priority work"), "{e}");
    assert_eq!(c.workloads().count(), 3, "nothing was evicted");

    // Among nodes, the one whose victims are least important wins.
    let nodes = vec![
        Node::new("a", "r", "z", one_node(1)[0].capacity),
        Node::new("b", "r", "z", one_node(1)[0].capacity),
    ];
    let mut c = ctx(nodes);
    let mut on_a = sized("low-on-a", Priority::Low, "acme", TrustLevel::Medium, 1000);
    on_a.constraint(Constraint::location("z"));
    c.schedule_workload(on_a).unwrap();
    c.schedule_workload(sized(
        "bg-on-b",
        Priority::Background,
        "acme",
        TrustLevel::Medium,
        1000,
    ))
    .unwrap();
    let a = c
        .schedule_workload(sized(
            "crit",
            Priority::Critical,
            "acme",
            TrustLevel::Medium,
            1000,
        ))
        .unwrap();
    assert_eq!(a.preempted[0].name, "bg-on-b");
    assert_eq!(a.node_id, "b");
}

#[test]
fn low_trust_cannot_preempt() {
    let mut c = full_node();
    c.record_events(true);
    let e = unschedulable(c.schedule_workload(sized(
        "pushy",
        Priority::Critical,
        "acme",
        TrustLevel::Low,
        2000,
    )));
    assert_eq!(
        e.note(),
        Some("preemption refused: trust `low` is below `medium`")
    );
    assert_eq!(c.workloads().count(), 3);
    let events = c.take_events();
    assert!(
        matches!(&events[..], [ScheduleEvent::Unschedulable { name, note: Some(_), .. }] if name == "pushy")
    );

    // The threshold is policy.
    let mut policies = PolicySet::permissive();
    policies.preempt_min_trust(TrustLevel::Low);
    let mut c = ctx_with(one_node(1), policies);
    c.schedule_workload(sized(
        "bg",
        Priority::Background,
        "acme",
        TrustLevel::Low,
        1000,
    ))
    .unwrap();
    let a = c
        .schedule_workload(sized(
            "crit",
            Priority::Critical,
            "acme",
            TrustLevel::Low,
            1000,
        ))
        .unwrap();
    assert_eq!(a.preempted.len(), 1);
}

#[test]
fn evicted_work_is_requeued_and_placed_elsewhere() {
    let mut nodes = one_node(1);
    nodes.push(Node::new("spare", "r", "z2", nodes[0].capacity));
    let mut c = ctx(nodes);
    let mut bg = sized("bg", Priority::Background, "acme", TrustLevel::Medium, 1000);
    bg.constraint(Constraint::location("z"));
    c.schedule_workload(bg).unwrap();
    // Both critical workloads must be on `n`... only the first fits there.
    let mut crit = sized("crit", Priority::Critical, "acme", TrustLevel::Medium, 1000);
    crit.constraint(Constraint::location("z"));
    c.submit(crit);
    let outcomes = c.schedule_pending().unwrap();
    // The evicted `bg` is queued again; its location constraint keeps it
    // off `spare`, so it ends unschedulable with its own outcome.
    assert_eq!(outcomes.len(), 2);
    assert_eq!(outcomes[0].name, "crit");
    assert_eq!(outcomes[1].name, "bg");
    assert!(outcomes[1].result.is_err());
}

#[test]
fn affinity_targets_are_placed_first_whatever_the_priority() {
    let mut c = ctx(fleet());
    let mut cache = wl("cache", Priority::High);
    cache.constraint(Constraint::affinity("api"));
    c.submit(cache);
    let mut api = wl("api", Priority::Low);
    api.constraint(Constraint::location("us-*"));
    c.submit(api);
    let outcomes = c.schedule_pending().unwrap();
    assert_eq!(placed_names(&outcomes), ["api", "cache"]);
    assert!(
        outcomes
            .iter()
            .all(|o| o.result.as_ref().unwrap().node_id == "iad")
    );
}

#[test]
fn priority_above_the_tenant_cap_is_refused_and_audited() {
    let mut policies = PolicySet::new();
    policies.tenant(
        "acme",
        TenantPolicy::new().max_priority(Priority::High).build(),
    );
    let mut c = ctx_with(fleet(), policies);
    c.record_events(true);
    let err = c
        .schedule_workload(wl("greedy", Priority::Critical))
        .unwrap_err();
    assert!(matches!(
        err,
        ScheduleError::PriorityAboveCap {
            requested: Priority::Critical,
            cap: Priority::High,
            ..
        }
    ));
    assert_eq!(
        err.to_string(),
        "workload `greedy`: priority `critical` is above tenant `acme`'s cap `high`"
    );
    let events = c.take_events();
    match &events[..] {
        [ScheduleEvent::PolicyDenied { rule, name, .. }] => {
            assert_eq!(*rule, "priority_cap");
            assert_eq!(name, "greedy");
        }
        other => panic!("{other:?}"),
    }
    assert!(c.schedule_workload(wl("ok", Priority::High)).is_ok());
    assert_eq!(c.metrics().denied, 1);

    // Unknown tenants are refused too.
    let stranger = Workload::new(
        "stranger",
        Priority::Low,
        identity("nobody", TrustLevel::High),
    );
    assert!(matches!(
        c.schedule_workload(stranger),
        Err(ScheduleError::UnknownTenant { .. })
    ));
}

#[test]
fn tenant_quotas_bound_containers_and_cpu_share() {
    let mut policies = PolicySet::permissive();
    policies.tenant("small", TenantPolicy::new().max_containers(2).build());
    // 25% of the fleet's 16 cores = 4 cores.
    policies.tenant("thin", TenantPolicy::new().cpu_share(0.25).build());
    let mut c = ctx_with(fleet(), policies);
    let mut ids = Vec::new();
    for i in 0..2 {
        let w = Workload::new(
            format!("s{i}"),
            Priority::Normal,
            identity("small", TrustLevel::Medium),
        );
        ids.push(w.id);
        c.schedule_workload(w).unwrap();
    }
    let third = Workload::new(
        "s2",
        Priority::Normal,
        identity("small", TrustLevel::Medium),
    );
    let err = c.schedule_workload(third.clone()).unwrap_err();
    assert!(
        matches!(
            err,
            ScheduleError::QuotaExceeded {
                quota: "max_containers",
                ..
            }
        ),
        "{err}"
    );
    // Quota follows releases.
    c.release(ids[0]).unwrap();
    c.schedule_workload(third).unwrap();

    for i in 0..2 {
        c.schedule_workload(sized(
            &format!("t{i}"),
            Priority::Normal,
            "thin",
            TrustLevel::Medium,
            2000,
        ))
        .unwrap();
    }
    let err = c
        .schedule_workload(sized(
            "t2",
            Priority::Normal,
            "thin",
            TrustLevel::Medium,
            100,
        ))
        .unwrap_err();
    assert!(
        matches!(
            err,
            ScheduleError::QuotaExceeded {
                quota: "cpu_share",
                ..
            }
        ),
        "{err}"
    );
    // Other tenants are unaffected.
    assert!(c.schedule_workload(wl("free", Priority::Normal)).is_ok());
}

#[test]
fn local_node_load_comes_from_the_resource_monitor() {
    let monitor = ResourceMonitor::new(GIB, 0);
    let node = Node::new(
        "local",
        "r",
        "z",
        Capacity {
            cpu_millis: 2000,
            memory: GIB,
            storage: 0,
            containers: 10,
        },
    );
    let local = std::sync::Arc::new(LocalNode::new(node, monitor.clone()));
    let mut c = SchedulerContext::new(local, PolicySet::permissive()).unwrap();
    // The runtime commits 900 MiB to a container the scheduler did not
    // place (the hook it calls when a container starts).
    let guard = monitor.commit(Commitment {
        memory: 900 << 20,
        cpu_millis: 500,
        storage: 0,
        network: true,
    });
    let state = monitor.snapshot();
    assert_eq!(state.memory.committed, 900 << 20);
    assert_eq!(state.network.granted, 1);
    assert_eq!(state.cpu.committed_millis, 500);
    c.refresh().unwrap();
    let mut w = wl("w", Priority::Normal);
    w.requirements(ResourceRequirements::new(100, 200 << 20));
    assert_eq!(
        unschedulable(c.schedule_workload(w.clone())).rejected_by("memory"),
        1
    );
    drop(guard);
    assert_eq!(monitor.snapshot().memory.committed, 0);
    c.refresh().unwrap();
    assert_eq!(c.schedule_workload(w).unwrap().node_id, "local");
}
