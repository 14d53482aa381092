//! Filters, scores and explanations.

use forgeone::Priority;
use forgeone::scheduler::{
    Capacity, Constraint, ConstraintType, Reason, ResourceRequirements, ScheduleError,
};
use forgeone::{Isolation, PolicySet, TenantPolicy, TrustLevel, Workload};

use super::*;

fn place(ctx: &mut SchedulerContext, c: Constraint) -> Result<Allocation, ScheduleError> {
    let mut w = wl("w", Priority::Normal);
    w.constraint(c);
    ctx.schedule_workload(w)
}

#[test]
fn location_patterns_match_regions_and_zones_with_wildcards() {
    let mut c = ctx(fleet());
    let a = place(&mut c, Constraint::location("eu-*")).unwrap();
    assert_eq!(feasible(&a), ["dub-a", "dub-b", "fra"]);
    assert_eq!(a.explanation.rejected_by("location"), 1);
    let group = a
        .explanation
        .rejected()
        .iter()
        .position(|g| g.reason == Reason::Location("eu-*".into()))
        .unwrap();
    let nodes: Vec<String> = a
        .explanation
        .rejected_nodes(group)
        .map(|n| n.to_string())
        .collect();
    assert_eq!(nodes, ["iad"]);

    let mut c = ctx(fleet());
    assert_eq!(
        feasible(&place(&mut c, Constraint::location("eu-west")).unwrap()),
        ["dub-a", "dub-b"]
    );
    let mut c = ctx(fleet());
    let a = place(&mut c, Constraint::location("eu-west-1b")).unwrap();
    assert_eq!(a.node_id, "dub-b");
    assert_eq!(a.zone, "eu-west-1b");
    let mut c = ctx(fleet());
    assert_eq!(
        feasible(&place(&mut c, Constraint::location("*-1a")).unwrap()),
        ["dub-a", "fra", "iad"]
    );
    let mut c = ctx(fleet());
    assert_eq!(
        feasible(&place(&mut c, Constraint::location("eu-central-*,us-east-1a")).unwrap()),
        ["fra", "iad"]
    );
    let mut c = ctx(fleet());
    let e = unschedulable(place(&mut c, Constraint::location("ap-*")));
    assert_eq!(e.feasible(), 0);
    assert_eq!(e.rejected_by("location"), 4);
}

#[test]
fn hardware_and_network_labels_are_required() {
    let mut c = ctx(fleet());
    let a = place(&mut c, Constraint::hardware("gpu")).unwrap();
    assert_eq!(a.node_id, "fra");
    assert_eq!(a.explanation.rejected_by("hardware"), 3);
    let mut c = ctx(fleet());
    assert_eq!(
        feasible(&place(&mut c, Constraint::network("public")).unwrap()),
        ["dub-a", "dub-b", "iad"]
    );
    let mut c = ctx(fleet());
    let e = unschedulable(place(&mut c, Constraint::hardware("tpu")));
    assert_eq!(e.rejected_by("hardware"), 4);
    // Two requirements are both required.
    let mut c = ctx(fleet());
    let mut w = wl("w", Priority::Normal);
    w.constraint(Constraint::hardware("avx2"))
        .constraint(Constraint::network("public"))
        .constraint(Constraint::location("eu-west-1a"));
    assert_eq!(c.schedule_workload(w).unwrap().node_id, "dub-a");
}

#[test]
fn label_selectors_support_in_notin_exists_and_does_not_exist() {
    let cases: [(&str, &[&str]); 7] = [
        ("disk=nvme", &["dub-b", "fra"]),
        ("disk in (ssd, hdd)", &["dub-a", "iad"]),
        ("disk!=nvme", &["dub-a", "iad"]),
        ("disk notin (ssd, nvme)", &["iad"]),
        ("spot", &["fra"]),
        ("!spot", &["dub-a", "dub-b", "iad"]),
        // NotIn also matches nodes without the label at all.
        ("spot notin (true)", &["dub-a", "dub-b", "iad"]),
    ];
    for (selector, expected) in cases {
        let mut c = ctx(fleet());
        let a = place(&mut c, Constraint::label(selector)).unwrap();
        assert_eq!(feasible(&a), expected, "selector {selector}");
        if expected.len() < 4 {
            assert_eq!(
                a.explanation.rejected()[0].reason,
                Reason::Label(selector.into())
            );
        }
    }
    let mut c = ctx(fleet());
    let err = place(&mut c, Constraint::label("disk in ssd")).unwrap_err();
    assert!(
        matches!(err, ScheduleError::InvalidConstraint { .. }),
        "{err}"
    );
    let mut c = ctx(fleet());
    let err = place(
        &mut c,
        Constraint::new(ConstraintType::Custom("colour".into()), "red"),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("unknown custom constraint kind `colour`"),
        "{err}"
    );
}

#[test]
fn affinity_follows_named_and_labelled_workloads() {
    let mut c = ctx(fleet());
    let mut db = wl("db", Priority::Normal);
    db.constraint(Constraint::location("eu-central-1a"))
        .label("app", "db");
    assert_eq!(c.schedule_workload(db).unwrap().node_id, "fra");

    let mut by_name = wl("cache", Priority::Normal);
    by_name.constraint(Constraint::affinity("db"));
    let a = c.schedule_workload(by_name).unwrap();
    assert_eq!(a.node_id, "fra");
    assert_eq!(a.explanation.rejected_by("affinity"), 3);

    let mut by_label = wl("sidecar", Priority::Normal);
    by_label.constraint(Constraint::affinity("app in (db, web)"));
    assert_eq!(c.schedule_workload(by_label).unwrap().node_id, "fra");

    // Affinity to something that runs nowhere is unschedulable...
    let mut lonely = wl("lonely", Priority::Normal);
    lonely.constraint(Constraint::affinity("ghost"));
    let e = unschedulable(c.schedule_workload(lonely));
    assert_eq!(e.rejected_by("affinity"), 4);
    // ...unless the term matches the workload itself (the first of a group).
    let mut first = wl("web-1", Priority::Normal);
    first
        .label("app", "web")
        .constraint(Constraint::affinity("app=web"));
    let a = c.schedule_workload(first).unwrap();
    let mut second = wl("web-2", Priority::Normal);
    second
        .label("app", "web")
        .constraint(Constraint::affinity("app=web"));
    assert_eq!(c.schedule_workload(second).unwrap().node_id, a.node_id);
}

#[test]
fn anti_affinity_keeps_apart_in_both_directions() {
    let mut c = ctx(fleet());
    let mut seen = Vec::new();
    for i in 0..4 {
        let mut w = wl(&format!("api-{i}"), Priority::Normal);
        w.label("app", "api")
            .constraint(Constraint::anti_affinity("app=api"));
        seen.push(c.schedule_workload(w).unwrap().node_id.to_string());
    }
    seen.sort();
    assert_eq!(seen, ["dub-a", "dub-b", "fra", "iad"]);
    let mut fifth = wl("api-4", Priority::Normal);
    fifth
        .label("app", "api")
        .constraint(Constraint::anti_affinity("app=api"));
    let e = unschedulable(c.schedule_workload(fifth));
    assert_eq!(e.rejected_by("anti_affinity"), 4);

    // Symmetric: a placed workload's anti-affinity repels newcomers that
    // match it, even if the newcomer says nothing.
    let mut c = ctx(fleet());
    let mut loner = wl("loner", Priority::Normal);
    loner
        .constraint(Constraint::location("eu-west-1a"))
        .constraint(Constraint::anti_affinity("noisy"));
    assert_eq!(c.schedule_workload(loner).unwrap().node_id, "dub-a");
    let mut noisy = wl("noisy", Priority::Normal);
    noisy.constraint(Constraint::location("eu-west-1a"));
    let e = unschedulable(c.schedule_workload(noisy));
    assert_eq!(e.rejected()[1].reason, Reason::Repelled("noisy".into()));
}

#[test]
fn capacity_filters_cpu_memory_and_container_count() {
    let small = Capacity {
        cpu_millis: 1000,
        memory: GIB,
        storage: 0,
        containers: 2,
    };
    let nodes = vec![
        Node::new("n1", "r", "z", small),
        Node::new("n2", "r", "z", small),
    ];
    let mut c = ctx(nodes.clone());
    let mut big_cpu = wl("cpu", Priority::Normal);
    big_cpu.requirements(ResourceRequirements::new(1500, 1 << 20));
    let e = unschedulable(c.schedule_workload(big_cpu));
    assert_eq!(e.rejected_by("cpu"), 2);
    let mut big_mem = wl("mem", Priority::Normal);
    big_mem.requirements(ResourceRequirements::new(100, 2 * GIB));
    assert_eq!(
        unschedulable(c.schedule_workload(big_mem)).rejected_by("memory"),
        2
    );
    let mut storage = wl("disk", Priority::Normal);
    let mut req = ResourceRequirements::new(100, 1 << 20);
    req.storage(1);
    storage.requirements(req);
    assert_eq!(
        unschedulable(c.schedule_workload(storage)).rejected_by("storage"),
        2
    );

    // Reservations add up: four 500m workloads fill both nodes.
    for i in 0..4 {
        let mut w = wl(&format!("half-{i}"), Priority::Normal);
        w.requirements(ResourceRequirements::new(500, 1 << 20));
        c.schedule_workload(w).unwrap();
    }
    let mut one_more = wl("one-more", Priority::Normal);
    one_more.requirements(ResourceRequirements::new(0, 1 << 20));
    // CPU is not exhausted for a 0m workload, but the container limit is.
    assert_eq!(
        unschedulable(c.schedule_workload(one_more)).rejected_by("containers"),
        2
    );

    // Load committed outside this scheduler counts.
    let mut busy = Node::new("busy", "r", "z", small);
    busy.used(Capacity {
        cpu_millis: 900,
        memory: 0,
        storage: 0,
        containers: 0,
    });
    let mut c = ctx(vec![busy]);
    let mut w = wl("w", Priority::Normal);
    w.requirements(ResourceRequirements::new(200, 1 << 20));
    assert_eq!(unschedulable(c.schedule_workload(w)).rejected_by("cpu"), 1);
}

#[test]
fn tenant_policy_restricts_locations() {
    let mut policies = PolicySet::new();
    policies.tenant(
        "acme",
        TenantPolicy::new().allow_location("eu-west").build(),
    );
    let mut c = ctx_with(fleet(), policies);
    let a = c.schedule_workload(wl("w", Priority::Normal)).unwrap();
    assert_eq!(feasible(&a), ["dub-a", "dub-b"]);
    assert_eq!(
        a.explanation.rejected()[0].reason,
        Reason::TenantLocation("eu-west".into())
    );
    assert_eq!(a.explanation.rejected()[0].count, 2);
    let mut w = wl("us", Priority::Normal);
    w.constraint(Constraint::location("us-*"));
    let e = unschedulable(c.schedule_workload(w));
    assert_eq!(e.rejected_by("policy_location"), 2);
    assert_eq!(e.rejected_by("location"), 2);
}

fn two_nodes() -> Vec<Node> {
    vec![node("n1", "r", "z1"), node("n2", "r", "z2")]
}

#[test]
fn tenant_isolation_keeps_other_tenants_off_the_node() {
    let mut policies = PolicySet::permissive();
    policies.tenant(
        "secret",
        TenantPolicy::new().isolation(Isolation::Tenant).build(),
    );
    let mut c = ctx_with(two_nodes(), policies);
    let pin = |w: &mut Workload, n: &str| {
        w.constraint(Constraint::location(if n == "n1" { "z1" } else { "z2" }));
    };
    let mut other = Workload::new(
        "other",
        Priority::Normal,
        identity("acme", TrustLevel::Medium),
    );
    pin(&mut other, "n1");
    c.schedule_workload(other).unwrap();
    // The isolated tenant refuses the shared node...
    let s1 = Workload::new(
        "s1",
        Priority::Normal,
        identity("secret", TrustLevel::Medium),
    );
    let a = c.schedule_workload(s1).unwrap();
    assert_eq!(a.node_id, "n2");
    assert_eq!(a.explanation.rejected()[0].reason, Reason::TenantIsolation);
    // ...shares with itself...
    let mut s2 = Workload::new(
        "s2",
        Priority::Normal,
        identity("secret", TrustLevel::Medium),
    );
    pin(&mut s2, "n2");
    assert_eq!(c.schedule_workload(s2).unwrap().node_id, "n2");
    // ...and keeps newcomers of other tenants away.
    let mut intruder = Workload::new(
        "intruder",
        Priority::Normal,
        identity("acme", TrustLevel::Medium),
    );
    pin(&mut intruder, "n2");
    let e = unschedulable(c.schedule_workload(intruder));
    assert_eq!(e.rejected_by("tenant_isolation"), 1);
}

#[test]
fn signer_isolation_groups_by_signer_set() {
    let mut policies = PolicySet::permissive();
    policies.tenant(
        "signed",
        TenantPolicy::new().isolation(Isolation::Signer).build(),
    );
    let mut c = ctx_with(vec![node("only", "r", "z")], policies);
    let mut a = Workload::new(
        "a",
        Priority::Normal,
        identity("signed", TrustLevel::Medium),
    );
    a.signers(["key-b", "key-a"]);
    c.schedule_workload(a).unwrap();
    let mut same = Workload::new(
        "same",
        Priority::Normal,
        identity("acme", TrustLevel::Medium),
    );
    same.signers(["key-a", "key-b"]);
    c.schedule_workload(same).unwrap();
    let mut other = Workload::new(
        "other",
        Priority::Normal,
        identity("acme", TrustLevel::Medium),
    );
    other.signers(["key-c"]);
    let e = unschedulable(c.schedule_workload(other));
    assert_eq!(e.rejected_by("signer_isolation"), 1);
}

#[test]
fn scores_prefer_less_loaded_spread_preferred_and_trusted_nodes() {
    // Least loaded: identical nodes, one already busy.
    let mut busy = node("busy", "r", "z");
    busy.used(Capacity {
        cpu_millis: 3000,
        memory: 6 * GIB,
        storage: 0,
        containers: 0,
    });
    let mut c = ctx(vec![busy, node("idle", "r", "z")]);
    let a = c.schedule_workload(wl("w", Priority::Normal)).unwrap();
    assert_eq!(a.node_id, "idle");
    assert!(a.explanation.scores()[0].parts.load > a.explanation.scores()[1].parts.load);

    // Spread: replicas of one app land in different zones first.
    let nodes = vec![
        node("a1", "r", "za"),
        node("a2", "r", "za"),
        node("b1", "r", "zb"),
        node("c1", "r", "zc"),
    ];
    let mut c = ctx(nodes);
    let mut zones = Vec::new();
    for i in 0..3 {
        let mut w = wl(&format!("web-{i}"), Priority::Normal);
        w.label("app", "web");
        zones.push(c.schedule_workload(w).unwrap().zone);
    }
    zones.sort();
    assert_eq!(zones, ["za", "zb", "zc"]);

    // Preferred constraints tip the balance.
    let mut c = ctx(fleet());
    let mut w = wl("w", Priority::Normal);
    w.constraint(Constraint::location("eu-central-1a").prefer(50));
    let a = c.schedule_workload(w).unwrap();
    assert_eq!(a.node_id, "fra");
    assert_eq!(a.explanation.scores()[0].parts.preferred, 100);
    assert_eq!(a.explanation.feasible(), 4, "a preference filters nothing");

    // Trust: otherwise equal nodes, the more trusted wins.
    let mut c = ctx(vec![
        node("medium", "r", "z"),
        node("high", "r", "z").trust(TrustLevel::High).build(),
    ]);
    assert_eq!(
        c.schedule_workload(wl("w", Priority::Normal))
            .unwrap()
            .node_id,
        "high"
    );
}

#[test]
fn explanations_count_every_rejection_and_rank_the_rest() {
    let mut c = ctx(fleet());
    let mut w = wl("w", Priority::Normal);
    w.constraint(Constraint::location("eu-*"))
        .constraint(Constraint::label("!spot"))
        .constraint(Constraint::network("public"));
    let a = c.schedule_workload(w).unwrap();
    let e = &a.explanation;
    assert_eq!(e.considered(), 4);
    assert_eq!(e.feasible(), 2);
    let groups: Vec<(String, u32)> = e
        .rejected()
        .iter()
        .map(|g| (g.reason.to_string(), g.count))
        .collect();
    // Each node is counted once, under the first filter that removed it.
    assert_eq!(
        groups,
        [
            ("location `eu-*`".to_string(), 1),
            ("label `!spot`".to_string(), 1)
        ]
    );
    let scores = e.scores();
    assert_eq!(scores.len(), 2);
    assert!(scores[0].score >= scores[1].score);
    assert_eq!(scores[0].node, a.node_id);
    let summary = e.summary();
    assert!(
        summary.starts_with("2 of 4 nodes fit; rejected: 1 by location `eu-*`, 1 by label `!spot`"),
        "{summary}"
    );
    let json = serde_json::to_value(e).unwrap();
    assert_eq!(json["rejected"][0]["nodes"], serde_json::json!(["iad"]));
    assert_eq!(json["rejected"][1]["reason"]["kind"], "label");

    // The unschedulable error carries the same explanation.
    let mut w = wl("nowhere", Priority::Normal);
    w.constraint(Constraint::hardware("gpu"))
        .constraint(Constraint::network("public"));
    let err = c.schedule_workload(w).unwrap_err();
    assert_eq!(
        err.to_string(),
        "workload `nowhere` is unschedulable: 0 of 4 nodes fit; rejected: 3 by hardware `gpu`, 1 by network `public`"
    );
}

#[test]
fn release_gives_capacity_back() {
    let small = Capacity {
        cpu_millis: 1000,
        memory: GIB,
        storage: 0,
        containers: 1,
    };
    let mut c = ctx(vec![Node::new("n", "r", "z", small)]);
    let first = wl("first", Priority::Normal);
    let id = first.id;
    c.schedule_workload(first).unwrap();
    unschedulable(c.schedule_workload(wl("second", Priority::Normal)));
    assert_eq!(c.release(id).unwrap().name, "first");
    assert!(c.schedule_workload(wl("third", Priority::Normal)).is_ok());
    assert!(matches!(
        c.release(id),
        Err(ScheduleError::UnknownWorkload(_))
    ));
}
