//! Placement by the lease holder across three regions, and node records it
//! must not trust.

use std::time::Duration;

use forgeone::cluster::NodeRecord;
use forgeone::scheduler::{Capacity, Node};

use super::{Lab, NatsServer, of_kind, start, until};

const REGIONS: [(&str, &str); 3] = [
    ("eu-west-1", "eu-west"),
    ("eu-central-1", "eu-central"),
    ("us-east-1", "us-east"),
];

const SHOP: &str = r#"
[[workload]]
name = "api"
component = "hello.wasm"
tenant = "acme"
labels = { app = "api" }
constraints.location = "eu-*"

[[workload]]
name = "web"
component = "hello.wasm"
tenant = "acme"
constraints.location = "eu-*"
constraints.anti_affinity = ["app=api"]

[[workload]]
name = "ledger"
component = "hello.wasm"
tenant = "acme"
constraints.location = "us-*"

[[workload]]
name = "tokyo"
component = "hello.wasm"
tenant = "acme"
constraints.location = "ap-*"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_across_three_regions_honours_location_and_anti_affinity() {
    let nats = NatsServer::start();
    let lab = Lab::new();
    let mut configs = Vec::new();
    let mut logs = Vec::new();
    for (id, region) in REGIONS {
        let (config, log) = lab.host(id, region, lab.anchor());
        configs.push(config);
        logs.push((id, log));
    }
    let agents = start(&nats.url, configs);
    let cluster = nats.connect().await;
    until(
        &cluster,
        Duration::from_secs(30),
        "three active nodes",
        |v| v.nodes.iter().filter(|n| n.state == "active").count() == 3,
    )
    .await;

    let path = lab.deployment("shop", SHOP);
    let report = lab.deploy(&cluster, &path, "shop").await;
    assert_eq!(report.components.len(), 4);
    // The same bytes under one digest: four workloads, one component.
    let digests: std::collections::BTreeSet<&String> = report.components.values().collect();
    assert_eq!(digests.len(), 1);

    let view = until(
        &cluster,
        Duration::from_secs(60),
        "the placed workloads ran to exit 0 and tokyo is unplaced",
        |v| {
            ["api", "web", "ledger"].iter().all(|w| {
                v.replica("shop", w, 0)
                    .is_some_and(|r| r.status == "exited")
            }) && v
                .replica("shop", "tokyo", 0)
                .is_some_and(|r| r.status == "unplaced")
        },
    )
    .await;
    let node = |w: &str| view.replica("shop", w, 0).unwrap().node.clone().unwrap();
    assert!(node("api").starts_with("eu-"), "{view:#?}");
    assert!(node("web").starts_with("eu-"), "{view:#?}");
    assert_ne!(
        node("api"),
        node("web"),
        "anti-affinity keeps web off api's node"
    );
    assert_eq!(node("ledger"), "us-east-1");
    let tokyo = view.replica("shop", "tokyo", 0).unwrap();
    let reason = tokyo.reason.as_deref().unwrap();
    assert!(reason.contains("location `ap-*`"), "{reason}");

    // Whichever host held the lease audited every decision it wrote, the
    // unplaced one too.
    for a in agents {
        a.drain().await;
    }
    let all = |kind: &str| -> Vec<String> {
        logs.iter()
            .flat_map(|(_, log)| of_kind(log, kind))
            .map(|r| r["details"]["key"].as_str().unwrap().to_string())
            .collect()
    };
    let assigned = all("cluster.assigned");
    for key in ["shop.api.0", "shop.web.0", "shop.ledger.0"] {
        assert!(assigned.iter().any(|k| k == key), "{key} in {assigned:?}");
    }
    assert!(all("cluster.unplaced").iter().any(|k| k == "shop.tokyo.0"));
    // Each host verified what it ran against its own anchor, and ran it.
    for (id, log) in &logs {
        let verified = of_kind(log, "boot.component.verified");
        let started = of_kind(log, "container.started");
        assert!(
            !verified.is_empty() && !started.is_empty(),
            "{id} ran nothing"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_record_with_absurd_capacity_is_ignored_with_the_reason() {
    let nats = NatsServer::start();
    let lab = Lab::new();
    let (config, log) = lab.host("eu-west-1", "eu-west", lab.anchor());
    let agents = start(&nats.url, vec![config]);
    let cluster = nats.connect().await;
    // A peer claims a million cores in the only `ap-*` region.
    let cap = Capacity {
        cpu_millis: 1_000_000_000,
        memory: 1 << 30,
        storage: 0,
        containers: 10,
    };
    let mut record = NodeRecord::of(&Node::new("ap-1", "ap-south", "ap-south-1a", cap), 250);
    record.heartbeat = chrono::Utc::now() + chrono::Duration::days(1);
    cluster.put_node(&record).await.unwrap();
    let path = lab.deployment(
        "greedy",
        r#"
[[workload]]
name = "lure"
component = "hello.wasm"
tenant = "acme"
constraints.location = "ap-*"
"#,
    );
    lab.deploy(&cluster, &path, "greedy").await;
    let view = until(
        &cluster,
        Duration::from_secs(30),
        "ap-1 ignored, lure unplaced",
        |v| {
            v.node("ap-1").is_some_and(|n| n.state == "ignored")
                && v.replica("greedy", "lure", 0)
                    .is_some_and(|r| r.status == "unplaced")
        },
    )
    .await;
    let ap = view.node("ap-1").unwrap();
    assert!(
        ap.reason.as_deref().unwrap().contains("absurd capacity"),
        "{ap:?}"
    );
    for a in agents {
        a.drain().await;
    }
    let ignored = of_kind(&log, "cluster.node.ignored");
    assert_eq!(ignored.len(), 1, "audited once: {ignored:?}");
    assert_eq!(ignored[0]["details"]["node"], "ap-1");
    assert!(
        ignored[0]["details"]["reason"]
            .as_str()
            .unwrap()
            .contains("cpu 1000000 cores")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_run_as_many_copies_spread_across_zones() {
    let nats = NatsServer::start();
    let lab = Lab::new();
    let mut configs = Vec::new();
    for (id, region) in REGIONS {
        configs.push(lab.host(id, region, lab.anchor()).0);
    }
    let agents = start(&nats.url, configs);
    let cluster = nats.connect().await;
    until(
        &cluster,
        Duration::from_secs(30),
        "three active nodes",
        |v| v.nodes.iter().filter(|n| n.state == "active").count() == 3,
    )
    .await;
    let path = lab.deployment(
        "fleet",
        r#"
[[workload]]
name = "edge"
component = "hello.wasm"
tenant = "acme"
replicas = 3
"#,
    );
    lab.deploy(&cluster, &path, "fleet").await;
    let view = until(&cluster, Duration::from_secs(60), "three copies ran", |v| {
        (0..3).all(|i| {
            v.replica("fleet", "edge", i)
                .is_some_and(|r| r.status == "exited")
        })
    })
    .await;
    let nodes: std::collections::BTreeSet<String> = (0..3)
        .map(|i| {
            view.replica("fleet", "edge", i)
                .unwrap()
                .node
                .clone()
                .unwrap()
        })
        .collect();
    assert_eq!(nodes.len(), 3, "one copy per zone: {view:#?}");
    assert!(view.replica("fleet", "edge", 3).is_none());

    // Undeployed: the assignments and statuses go.
    forgeone::cluster::undeploy(&cluster, "fleet")
        .await
        .unwrap();
    until(&cluster, Duration::from_secs(30), "fleet gone", |v| {
        v.replicas.is_empty()
    })
    .await;
    let again = forgeone::cluster::undeploy(&cluster, "fleet").await;
    assert!(
        again
            .unwrap_err()
            .to_string()
            .contains("no deployment `fleet`")
    );
    for a in agents {
        a.drain().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assignment_naming_a_node_that_does_not_exist_is_shown_with_the_reason() {
    let nats = NatsServer::start();
    let cluster = nats.connect().await;
    let assignment = forgeone::cluster::Assignment {
        deployment: "shop".into(),
        workload: "api".into(),
        replica: 0,
        priority: forgeone::Priority::Normal,
        node: Some("ghost-1".into()),
        reason: None,
        explanation: String::new(),
        epoch: 7,
        leader: "nobody".into(),
        at: chrono::Utc::now(),
    };
    cluster.put_assignment(&assignment).await.unwrap();
    let view = forgeone::cluster::ClusterView::read(&cluster)
        .await
        .unwrap();
    let r = view.replica("shop", "api", 0).unwrap();
    assert_eq!(r.status, "assigned");
    assert_eq!(
        r.reason.as_deref(),
        Some("node `ghost-1` does not exist: no host will run it")
    );
}
