//! Host agents: verification against each host's own anchor, drains,
//! operator requests, and a server that does not answer.

use std::time::{Duration, Instant};

use forgeone::cluster::{self, Desired, HostAgent};

use super::{Lab, NatsServer, free_port, of_kind, start, until};

const EVERYWHERE: &str = r#"
[[workload]]
name = "west"
component = "hello.wasm"
tenant = "acme"
constraints.location = "eu-west"

[[workload]]
name = "east"
component = "hello.wasm"
tenant = "acme"
constraints.location = "us-east"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_refuses_a_component_its_anchor_does_not_trust_while_others_run_it() {
    let nats = NatsServer::start();
    let lab = Lab::new();
    let (west, west_log) = lab.host("eu-west-1", "eu-west", lab.anchor());
    let (east, east_log) = lab.host("us-east-1", "us-east", lab.stranger_anchor());
    let agents = start(&nats.url, vec![west, east]);
    let cluster = nats.connect().await;
    until(&cluster, Duration::from_secs(30), "two active nodes", |v| {
        v.nodes.iter().filter(|n| n.state == "active").count() == 2
    })
    .await;
    let path = lab.deployment("both", EVERYWHERE);
    lab.deploy(&cluster, &path, "both").await;
    let view = until(
        &cluster,
        Duration::from_secs(60),
        "west ran, east refused",
        |v| {
            v.replica("both", "west", 0)
                .is_some_and(|r| r.status == "exited")
                && v.replica("both", "east", 0)
                    .is_some_and(|r| r.status == "refused")
        },
    )
    .await;
    let east_replica = view.replica("both", "east", 0).unwrap();
    assert_eq!(east_replica.node.as_deref(), Some("us-east-1"));
    let reason = east_replica.reason.as_deref().unwrap();
    assert!(
        reason.contains("verification against this host's anchor failed"),
        "{reason}"
    );
    for a in agents {
        a.drain().await;
    }
    // The refusing host audited the failed verification and the refusal;
    // it started nothing.
    assert!(!of_kind(&east_log, "boot.component.refused").is_empty());
    let refused = of_kind(&east_log, "cluster.refused");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["details"]["key"], "both.east.0");
    assert!(of_kind(&east_log, "container.started").is_empty());
    assert_eq!(of_kind(&west_log, "container.started").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_object_is_refused_by_its_digest() {
    let nats = NatsServer::start();
    let lab = Lab::new();
    let cluster = nats.connect().await;
    let path = lab.deployment("tamper", EVERYWHERE);
    let report = lab.deploy(&cluster, &path, "tamper").await;
    let digest = report.components["west"].clone();
    let mut bytes = lab.world.hello.clone();
    bytes.push(0);
    cluster
        .overwrite_object("component", &digest, &bytes)
        .await
        .unwrap();
    let (west, log) = lab.host("eu-west-1", "eu-west", lab.anchor());
    let agents = start(&nats.url, vec![west]);
    let view = until(&cluster, Duration::from_secs(30), "west refused", |v| {
        v.replica("tamper", "west", 0)
            .is_some_and(|r| r.status == "refused")
    })
    .await;
    let reason = view.replica("tamper", "west", 0).unwrap().reason.clone();
    assert!(
        reason
            .as_deref()
            .unwrap()
            .contains("does not match its digest"),
        "{reason:?}"
    );
    for a in agents {
        a.drain().await;
    }
    assert_eq!(of_kind(&log, "cluster.refused").len(), 1);
    assert!(of_kind(&log, "container.started").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_hosts_work_moves_at_once() {
    let nats = NatsServer::start();
    let lab = Lab::new();
    let mut agents = Vec::new();
    for (id, region) in [("eu-west-1", "eu-west"), ("eu-central-1", "eu-central")] {
        let (mut config, _) = lab.host(id, region, lab.anchor());
        // A host is lost after three missed heartbeats (90 s here): a move
        // within the limit below can only come from the drain.
        config.heartbeat(Duration::from_secs(30));
        agents.push(HostAgent::start(&nats.url, config));
    }
    let cluster = nats.connect().await;
    until(&cluster, Duration::from_secs(30), "two active nodes", |v| {
        v.nodes.iter().filter(|n| n.state == "active").count() == 2
    })
    .await;
    let path = lab.deployment(
        "mover",
        r#"
[[workload]]
name = "svc"
component = "hello.wasm"
tenant = "acme"
constraints.location = "eu-*"
"#,
    );
    lab.deploy(&cluster, &path, "mover").await;
    let view = until(&cluster, Duration::from_secs(30), "svc ran", |v| {
        v.replica("mover", "svc", 0)
            .is_some_and(|r| r.status == "exited")
    })
    .await;
    let first = view.replica("mover", "svc", 0).unwrap().clone();
    let owner = first.node.clone().unwrap();
    let i = agents.iter().position(|a| a.id() == owner).unwrap();
    agents.remove(i).drain().await;
    let view = until(
        &cluster,
        Duration::from_secs(20),
        "svc moved and ran",
        |v| {
            v.replica("mover", "svc", 0)
                .is_some_and(|r| r.node.as_deref() != Some(owner.as_str()) && r.status == "exited")
        },
    )
    .await;
    let moved = view.replica("mover", "svc", 0).unwrap();
    assert!(moved.epoch > first.epoch);
    assert_eq!(view.node(&owner).unwrap().state, "leaving");
    for a in agents {
        a.drain().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_pause_and_resume_reach_the_owning_host() {
    let nats = NatsServer::start();
    let lab = Lab::new();
    let (a, _) = lab.host("eu-west-1", "eu-west", lab.anchor());
    let (b, _) = lab.host("us-east-1", "us-east", lab.anchor());
    let agents = start(&nats.url, vec![a, b]);
    let cluster = nats.connect().await;
    let path = lab.deployment(
        "spin",
        r#"
[[workload]]
name = "hog"
component = "cpu-hog.wasm"
tenant = "acme"
resources = { timeout = "5m" }
constraints.location = "us-east"
"#,
    );
    lab.deploy(&cluster, &path, "spin").await;
    let state = |s: &'static str| {
        move |v: &forgeone::cluster::ClusterView| {
            v.replica("spin", "hog", 0).is_some_and(|r| r.status == s)
        }
    };
    until(
        &cluster,
        Duration::from_secs(30),
        "hog running",
        state("running"),
    )
    .await;
    cluster::set_desired(&cluster, "hog", Desired::Paused)
        .await
        .unwrap();
    until(
        &cluster,
        Duration::from_secs(20),
        "hog paused",
        state("paused"),
    )
    .await;
    cluster::set_desired(&cluster, "spin/hog", Desired::Running)
        .await
        .unwrap();
    until(
        &cluster,
        Duration::from_secs(20),
        "hog resumed",
        state("running"),
    )
    .await;
    cluster::set_desired(&cluster, "hog", Desired::Stopped)
        .await
        .unwrap();
    let view = until(
        &cluster,
        Duration::from_secs(20),
        "hog stopped",
        state("stopped"),
    )
    .await;
    assert_eq!(
        view.replica("spin", "hog", 0).unwrap().node.as_deref(),
        Some("us-east-1")
    );
    let missing = cluster::set_desired(&cluster, "nope", Desired::Stopped).await;
    assert!(
        missing
            .unwrap_err()
            .to_string()
            .contains("no workload `nope`")
    );
    // Resumed, then undeployed: the owning host stops it and forgets it.
    cluster::set_desired(&cluster, "hog", Desired::Running)
        .await
        .unwrap();
    until(
        &cluster,
        Duration::from_secs(20),
        "hog restarted",
        state("running"),
    )
    .await;
    cluster::undeploy(&cluster, "spin").await.unwrap();
    let start = Instant::now();
    while !agents[1].status().replicas.is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{:?}",
            agents[1].status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for a in agents {
        a.drain().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_retried_and_named_then_joined() {
    let lab = Lab::new();
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let (config, _) = lab.host("eu-west-1", "eu-west", lab.anchor());
    let agent = HostAgent::start(&url, config);
    let start = Instant::now();
    loop {
        let s = agent.status();
        if s.failed_attempts >= 2 {
            assert!(!s.connected);
            let error = s.last_error.unwrap();
            assert!(error.contains(&url), "{error}");
            assert!(error.contains("retrying"), "{error}");
            assert!(s.replicas.is_empty());
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no retries: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The server comes up: the host joins without being restarted.
    let nats = NatsServer::start_on(port);
    let cluster = nats.connect().await;
    until(&cluster, Duration::from_secs(30), "the host joined", |v| {
        v.node("eu-west-1").is_some_and(|n| n.state == "active")
    })
    .await;
    assert!(agent.status().connected);
    agent.drain().await;
}
