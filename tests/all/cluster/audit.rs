//! The replicated audit: each host's records in the stream `audit.<node>`,
//! byte for byte; a host's chain verifies from the stream alone, and a
//! local log cut back behind the stream is caught.

use std::time::{Duration, Instant};

use forgeone::audit::{self, VerifyOptions};
use forgeone::cluster::HostAgent;

use super::{Lab, NatsServer, start, until};

const TWO: &str = r#"
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
async fn the_audit_stream_holds_each_hosts_chain_and_catches_a_log_cut_back() {
    let nats = NatsServer::start();
    let lab = Lab::new();
    let (west, west_log) = lab.host("eu-west-1", "eu-west", lab.anchor());
    let (east, east_log) = lab.host("us-east-1", "us-east", lab.anchor());
    let agents = start(&nats.url, vec![west, east]);
    let cluster = nats.connect().await;
    until(&cluster, Duration::from_secs(30), "two active nodes", |v| {
        v.nodes.iter().filter(|n| n.state == "active").count() == 2
    })
    .await;
    let path = lab.deployment("both", TWO);
    lab.deploy(&cluster, &path, "both").await;
    until(&cluster, Duration::from_secs(60), "both ran", |v| {
        ["west", "east"].iter().all(|w| {
            v.replica("both", w, 0)
                .is_some_and(|r| r.status == "exited")
        })
    })
    .await;
    for a in agents {
        a.drain().await;
    }

    for (node, log) in [("eu-west-1", &west_log), ("us-east-1", &east_log)] {
        let records = cluster.audit_records(Some(node)).await.unwrap();
        let local = std::fs::read_to_string(log).unwrap();
        let local: Vec<&str> = local.lines().collect();
        // Every record the host had written when it left, in order, byte
        // for byte (closing the log may seal it with one more checkpoint).
        assert!(records.len() >= 5, "{node}: {} records", records.len());
        assert!(local.len() >= records.len());
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.node, node);
            assert_eq!(r.seq, i as u64 + 1);
            assert_eq!(r.line, local[i].as_bytes(), "{node} record {i}");
        }
        // The chain verifies from the stream alone.
        let copy = lab.world.path(&format!("{node}-from-stream.jsonl"));
        let mut bytes = Vec::new();
        for r in &records {
            bytes.extend_from_slice(&r.line);
            bytes.push(b'\n');
        }
        std::fs::write(&copy, bytes).unwrap();
        let mut options = VerifyOptions::new();
        options.allow_open_tail(true);
        let report = audit::verify_file(&copy, &options).unwrap();
        assert_eq!(report.records, records.len() as u64);
    }
    // The lease holder's placement decisions are in the stream too.
    let all = cluster.audit_records(None).await.unwrap();
    let kinds: Vec<String> = all
        .iter()
        .filter_map(|r| serde_json::from_slice::<serde_json::Value>(&r.line).ok())
        .map(|v| v["kind"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(kinds.iter().any(|k| k == "cluster.assigned"), "{kinds:?}");

    // eu-west-1's log is cut back by three records, and the host started
    // again on it: the stream shows what is missing.
    let text = std::fs::read_to_string(&west_log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let kept = lines[..lines.len() - 3].join("\n") + "\n";
    std::fs::write(&west_log, kept).unwrap();
    let (west, _) = lab.host("eu-west-1", "eu-west", lab.anchor());
    let agent = HostAgent::start(&nats.url, west);
    let start = Instant::now();
    let why = loop {
        if let Some(why) = agent.status().audit_cut_back {
            break why;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{:?}",
            agent.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(why.contains("the local log was cut back"), "{why}");
    agent.drain().await;
}
