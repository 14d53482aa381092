//! The cluster under failure, with real processes: `nats-server` and
//! `forgeone host` agents on loopback, each failure injected with a signal
//! (SIGKILL, SIGSTOP/SIGCONT, SIGTERM), then checked from `forgeone ps
//! --json` and from the audit stream: every replica ends where the rules
//! say, no replica ran on two hosts at once, every host's chain verifies.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::procs::{HostProc, ps_until, replica, stream_records, verify_from_stream};
use super::{Lab, NatsServer};

/// Three long-running replicas: `central` fits only eu-central, `eu`
/// prefers eu-central but fits any `eu-*` node, `east` fits only us-east.
const THREE: &str = r#"
[[workload]]
name = "central"
component = "sleeper.wasm"
tenant = "acme"
constraints.location = "eu-central"

[[workload]]
name = "eu"
component = "sleeper.wasm"
tenant = "acme"
constraints.location = "eu-*"
constraints.preferred = [{ location = "eu-central", weight = 100 }]

[[workload]]
name = "east"
component = "sleeper.wasm"
tenant = "acme"
constraints.location = "us-east"
"#;

const HOSTS: [(&str, &str); 3] = [
    ("eu-west-1", "eu-west"),
    ("eu-central-1", "eu-central"),
    ("us-east-1", "us-east"),
];

fn running_on(view: &Value, workload: &str, node: &str) -> bool {
    let r = replica(view, workload, 0);
    r["status"] == "running" && r["node"] == node
}

fn active_nodes(view: &Value) -> usize {
    view["nodes"]
        .as_array()
        .map_or(0, |n| n.iter().filter(|n| n["state"] == "active").count())
}

/// Starts the three hosts (heartbeat 1 s) and waits until all are active.
fn three_hosts(lab: &Lab, nats: &NatsServer) -> BTreeMap<String, HostProc> {
    let hosts: BTreeMap<String, HostProc> = HOSTS
        .iter()
        .map(|(id, region)| {
            (
                id.to_string(),
                HostProc::start(lab, &nats.url, id, region, "1s"),
            )
        })
        .collect();
    ps_until(
        &nats.url,
        Duration::from_secs(60),
        "three active nodes",
        |v| active_nodes(v) == 3,
    );
    hosts
}

/// When a host was not running: killed at a time (and never came back),
/// or stopped between two times.
#[derive(Debug, Clone, Copy)]
pub enum Outage {
    Killed(DateTime<Utc>),
    Frozen(DateTime<Utc>, DateTime<Utc>),
}

/// One host's hold of a replica, from the audit stream.
#[derive(Debug, Clone)]
struct Hold {
    node: String,
    epoch: u64,
    from: DateTime<Utc>,
    until: Option<DateTime<Utc>>,
    why: String,
}

fn ts(record: &Value) -> DateTime<Utc> {
    record["ts"].as_str().unwrap().parse().unwrap()
}

/// Every replica's holds, from the `cluster.replica.started` and
/// `cluster.replica.stopped` records of the stream. A killed host's open
/// hold ends when it was killed. A frozen host ran nothing while frozen:
/// its hold is cut in two around the freeze, unless the host fenced it on
/// waking (the tests check that the fence was the first thing it did, and
/// their replicas block in a host call, so they run no guest code between
/// the wake and the fence): then it ends at the freeze.
fn holds(
    records: &[(String, Value)],
    outages: &BTreeMap<String, Outage>,
) -> BTreeMap<String, Vec<Hold>> {
    let mut out: BTreeMap<String, Vec<Hold>> = BTreeMap::new();
    for (node, r) in records {
        let key = r["details"]["key"].as_str().unwrap_or_default().to_string();
        let epoch = r["details"]["epoch"].as_u64().unwrap_or_default();
        match r["kind"].as_str() {
            Some("cluster.replica.started") => out.entry(key).or_default().push(Hold {
                node: node.clone(),
                epoch,
                from: ts(r),
                until: None,
                why: String::new(),
            }),
            Some("cluster.replica.stopped") => {
                let open = out
                    .entry(key.clone())
                    .or_default()
                    .iter_mut()
                    .rev()
                    .find(|h| &h.node == node && h.epoch == epoch && h.until.is_none());
                let open = open.unwrap_or_else(|| panic!("{node} stopped {key} it never started"));
                open.until = Some(ts(r));
                open.why = r["details"]["why"].as_str().unwrap_or_default().into();
            }
            _ => {}
        }
    }
    for list in out.values_mut() {
        let mut split = Vec::new();
        for h in list.iter_mut() {
            match outages.get(&h.node) {
                Some(Outage::Killed(at)) if h.until.is_none() && h.from < *at => {
                    h.until = Some(*at);
                }
                Some(Outage::Frozen(from, to))
                    if h.from < *from && h.why == "fenced" && h.until.is_some_and(|u| u > *to) =>
                {
                    h.until = Some(*from);
                }
                Some(Outage::Frozen(from, to))
                    if h.from < *from && h.until.is_none_or(|u| u > *from) =>
                {
                    let mut after = h.clone();
                    after.from = *to;
                    h.until = Some(*from);
                    split.push(after);
                }
                _ => {}
            }
        }
        list.extend(split);
    }
    out
}

/// No replica was held by two hosts at once, from the audit stream.
fn no_replica_ran_twice(records: &[(String, Value)], outages: &BTreeMap<String, Outage>) {
    for (key, list) in holds(records, outages) {
        for (i, a) in list.iter().enumerate() {
            for b in &list[i + 1..] {
                if a.node == b.node {
                    continue;
                }
                let overlap = a.from < b.until.unwrap_or(DateTime::<Utc>::MAX_UTC)
                    && b.from < a.until.unwrap_or(DateTime::<Utc>::MAX_UTC);
                assert!(!overlap, "{key} ran on two hosts at once: {a:?} and {b:?}");
            }
        }
    }
}

/// Drains the hosts still alive (SIGTERM), then checks every host's chain
/// from the stream (a killed host's copy ends where its publishing did).
fn drain_and_verify(url: &str, hosts: &mut BTreeMap<String, HostProc>, dead: &[&str]) {
    for (id, host) in hosts.iter_mut() {
        if dead.contains(&id.as_str()) {
            continue;
        }
        host.signal("TERM");
        assert!(
            host.wait_exit(Duration::from_secs(30)).is_some(),
            "{id} did not drain"
        );
    }
    for host in hosts.values() {
        verify_from_stream(url, host);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_hosts_work_is_re_placed_and_what_fits_nowhere_else_is_unschedulable() {
    let nats = NatsServer::start();
    let lab = Lab::new();
    let mut hosts = three_hosts(&lab, &nats);
    let cluster = nats.connect().await;
    let path = lab.deployment("kill", THREE);
    lab.deploy(&cluster, &path, "kill").await;
    ps_until(
        &nats.url,
        Duration::from_secs(60),
        "placed and running",
        |v| {
            running_on(v, "central", "eu-central-1")
                && running_on(v, "eu", "eu-central-1")
                && running_on(v, "east", "us-east-1")
        },
    );
    let killed_at = Utc::now();
    let clock = Instant::now();
    hosts.get_mut("eu-central-1").unwrap().kill();
    let view = ps_until(&nats.url, Duration::from_secs(30), "re-placed", |v| {
        running_on(v, "eu", "eu-west-1") && replica(v, "central", 0)["status"] == "unplaced"
    });
    eprintln!(
        "kill to re-placed and running (heartbeat 1 s): {:?}",
        clock.elapsed()
    );
    let node = view["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "eu-central-1")
        .unwrap();
    assert_eq!(node["state"], "lost", "{view:#}");
    let reason = replica(&view, "central", 0)["reason"].as_str().unwrap();
    assert!(reason.contains("location `eu-central`"), "{reason}");
    // Sticky: what ran on a live node did not move.
    assert_eq!(replica(&view, "east", 0)["epoch"], 1, "{view:#}");
    assert_eq!(replica(&view, "east", 0)["node"], "us-east-1");

    drain_and_verify(&nats.url, &mut hosts, &["eu-central-1"]);
    let records = stream_records(&cluster).await;
    let lost: Vec<_> = records
        .iter()
        .filter(|(_, r)| r["kind"] == "cluster.node.gone" && r["details"]["node"] == "eu-central-1")
        .collect();
    // The lease holder audited the loss (a later holder, after the drain
    // below, audits it once more in its own log).
    assert!(!lost.is_empty(), "the loss is audited");
    assert_eq!(lost[0].1["details"]["why"], "lost");
    let outages = BTreeMap::from([("eu-central-1".to_string(), Outage::Killed(killed_at))]);
    no_replica_ran_twice(&records, &outages);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_stopped_past_the_lost_interval_fences_itself_first_when_it_wakes() {
    let nats = NatsServer::start();
    let lab = Lab::new();
    let mut hosts = three_hosts(&lab, &nats);
    let cluster = nats.connect().await;
    let path = lab.deployment("pause", THREE);
    lab.deploy(&cluster, &path, "pause").await;
    ps_until(
        &nats.url,
        Duration::from_secs(60),
        "placed and running",
        |v| running_on(v, "eu", "eu-central-1") && running_on(v, "east", "us-east-1"),
    );
    let frozen = Utc::now();
    hosts["eu-central-1"].signal("STOP");
    // Meanwhile its work runs elsewhere (or is reported unschedulable).
    ps_until(
        &nats.url,
        Duration::from_secs(30),
        "moved while stopped",
        |v| running_on(v, "eu", "eu-west-1") && replica(v, "central", 0)["status"] == "unplaced",
    );
    let woke = Utc::now();
    hosts["eu-central-1"].signal("CONT");
    // It rejoins: `eu` stays where it moved (placement is sticky), and
    // `central` fits it again.
    ps_until(&nats.url, Duration::from_secs(30), "rejoined", |v| {
        running_on(v, "central", "eu-central-1") && running_on(v, "eu", "eu-west-1")
    });
    drain_and_verify(&nats.url, &mut hosts, &[]);
    let records = stream_records(&cluster).await;
    // The first thing the woken host did was to fence: stop both copies.
    let after: Vec<&Value> = records
        .iter()
        .filter(|(n, r)| n == "eu-central-1" && ts(r) > woke)
        .map(|(_, r)| r)
        .collect();
    assert_eq!(after[0]["kind"], "cluster.fenced", "{after:#?}");
    let fenced: Vec<&str> = after[0]["details"]["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert_eq!(fenced, ["pause.central.0", "pause.eu.0"]);
    let outages = BTreeMap::from([("eu-central-1".to_string(), Outage::Frozen(frozen, woke))]);
    no_replica_ran_twice(&records, &outages);
}

/// `n` long-running replicas of one workload, with no constraint.
fn many(n: u32) -> String {
    format!(
        "[[workload]]\nname = \"many\"\ncomponent = \"sleeper.wasm\"\ntenant = \"acme\"\nreplicas = {n}\n"
    )
}

fn all_running(view: &Value, n: usize, except: &str) -> bool {
    let replicas = view["replicas"].as_array().unwrap();
    replicas.len() == n
        && replicas
            .iter()
            .all(|r| r["status"] == "running" && r["node"] != except)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_lease_holder_dies_mid_batch_another_places_everything_once() {
    let nats = NatsServer::start();
    let lab = Lab::new();
    let mut hosts = three_hosts(&lab, &nats);
    let view = ps_until(&nats.url, Duration::from_secs(30), "a lease holder", |v| {
        v["leader"].is_string()
    });
    let leader = view["leader"].as_str().unwrap().to_string();
    let cluster = nats.connect().await;
    let path = lab.deployment("batch", &many(24));
    lab.deploy(&cluster, &path, "batch").await;
    // Killed as soon as it has written a part of the batch.
    let mut feed = forgeone::cluster::Feed::assignments(&cluster);
    while feed.records().next().is_none() {
        feed.changed().await.unwrap();
    }
    let killed_at = Utc::now();
    hosts.get_mut(&leader).unwrap().kill();
    let view = ps_until(&nats.url, Duration::from_secs(45), "all placed", |v| {
        v["leader"].is_string() && v["leader"] != leader.as_str() && all_running(v, 24, &leader)
    });
    let successor = view["leader"].as_str().unwrap().to_string();
    let drained_at = Utc::now();
    drain_and_verify(&nats.url, &mut hosts, &[&leader]);
    let records = stream_records(&cluster).await;
    // Every decision is audited once: per replica, the epochs the two
    // lease holders wrote are 1, 2, ... with none written twice. The
    // killed holder's last records may not have reached the stream (it
    // publishes within a step), so its decisions come from its own log.
    let mut decisions: Vec<(String, Value)> = records
        .iter()
        .filter(|(n, _)| n != &leader)
        .cloned()
        .collect();
    let dead_log = hosts[&leader].log();
    decisions.extend(
        super::records(&dead_log)
            .into_iter()
            .map(|r| (leader.clone(), r)),
    );
    decisions.sort_by_key(|(_, r)| ts(r));
    let mut epochs: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (node, r) in &decisions {
        if r["kind"] == "cluster.assigned" {
            // The successor, or after the drain below, the last host.
            let _ = node;
            let key = r["details"]["key"].as_str().unwrap().to_string();
            epochs
                .entry(key)
                .or_default()
                .push(r["details"]["epoch"].as_u64().unwrap());
        }
    }
    assert_eq!(epochs.len(), 24, "{epochs:?}");
    for (key, list) in &epochs {
        let expected: Vec<u64> = (1..=list.len() as u64).collect();
        assert_eq!(list, &expected, "{key}: decisions lost or written twice");
    }
    let took = records
        .iter()
        .filter(|(n, r)| n == &successor && r["kind"] == "cluster.lease.taken")
        .count();
    assert!(took >= 1, "{successor} took the lease");
    let outages = BTreeMap::from([(leader.clone(), Outage::Killed(killed_at))]);
    // Up to the drain only: a draining host marks itself leaving before it
    // stops its containers, so its replacement can start before it has
    // stopped (seen here: ~120 ms). A known gap of drains, not of this
    // failure; see the README.
    let before_drain: Vec<(String, Value)> = decisions
        .into_iter()
        .filter(|(_, r)| ts(r) < drained_at)
        .collect();
    no_replica_ran_twice(&before_drain, &outages);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_keeps_containers_running_and_loses_no_audit_record() {
    let mut nats = NatsServer::start();
    let lab = Lab::new();
    // An 8 s heartbeat: the lost-node interval (24 s) outlasts the outage
    // below (a renewal fails after at most a heartbeat and the client's
    // 5 s request timeout; the client reconnects within its 4 s backoff).
    let mut hosts: BTreeMap<String, HostProc> = HOSTS[..2]
        .iter()
        .map(|(id, region)| {
            (
                id.to_string(),
                HostProc::start(&lab, &nats.url, id, region, "8s"),
            )
        })
        .collect();
    ps_until(
        &nats.url,
        Duration::from_secs(60),
        "two active nodes",
        |v| active_nodes(v) == 2,
    );
    let cluster = nats.connect().await;
    let path = lab.deployment("restart", &many(4));
    lab.deploy(&cluster, &path, "restart").await;
    ps_until(&nats.url, Duration::from_secs(60), "running", |v| {
        all_running(v, 4, "")
    });
    drop(cluster);
    nats.terminate();
    // Down for one heartbeat: each host fails to renew its record.
    for host in hosts.values() {
        let log = host.log();
        let start = Instant::now();
        while super::of_kind(&log, "cluster.renewal.failed").is_empty() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{} never noticed",
                host.id
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    nats.restart();
    let cluster = nats.connect().await;
    for host in hosts.values() {
        let log = host.log();
        let start = Instant::now();
        while super::of_kind(&log, "cluster.renewal.restored").is_empty() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{} never reconnected",
                host.id
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let view = ps_until(&nats.url, Duration::from_secs(30), "still running", |v| {
        active_nodes(v) == 2 && all_running(v, 4, "")
    });
    for r in view["replicas"].as_array().unwrap() {
        assert_eq!(r["epoch"], 1, "nothing was placed twice: {view:#}");
        assert_eq!(r["restarts"], 0, "{view:#}");
    }
    drain_and_verify(&nats.url, &mut hosts, &[]);
    let records = stream_records(&cluster).await;
    for host in hosts.values() {
        // Kept running throughout: stopped only by the drain.
        let local = super::records(&host.log());
        for r in &local {
            if r["kind"] == "cluster.replica.stopped" {
                assert_eq!(r["details"]["why"], "host draining", "{r}");
            }
        }
        assert!(super::of_kind(&host.log(), "cluster.fenced").is_empty());
        // The records written while the server was down reached the
        // stream once it was back: the stream holds the local log's seq
        // 1..=n, each once, in order (the local log holds one more: the
        // checkpoint sealing it on close).
        let seqs: Vec<u64> = records
            .iter()
            .filter(|(n, _)| n == &host.id)
            .map(|(_, r)| r["seq"].as_u64().unwrap())
            .collect();
        let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
        assert_eq!(seqs, expected, "{}: a gap or a duplicate", host.id);
        assert!(
            seqs.len() + 1 >= local.len(),
            "{}: records missing",
            host.id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_cannot_reach_nats_stops_its_containers_on_its_own() {
    let nats = NatsServer::start();
    let lab = Lab::new();
    let host = HostProc::start(&lab, &nats.url, "eu-west-1", "eu-west", "1s");
    let cluster = nats.connect().await;
    let path = lab.deployment("alone", &many(2));
    lab.deploy(&cluster, &path, "alone").await;
    ps_until(&nats.url, Duration::from_secs(60), "running", |v| {
        all_running(v, 2, "")
    });
    // The server stops answering (frozen, not closed: no error, no
    // reconnect, just silence), for longer than the lost-node interval.
    super::procs::signal(nats.pid(), "STOP");
    let log = host.log();
    let start = Instant::now();
    while super::of_kind(&log, "cluster.fenced").is_empty() {
        assert!(start.elapsed() < Duration::from_secs(30), "never fenced");
        std::thread::sleep(Duration::from_millis(100));
    }
    let fenced = super::of_kind(&log, "cluster.fenced");
    let keys = &fenced[0]["details"]["replicas"];
    assert_eq!(keys.as_array().unwrap().len(), 2, "{fenced:?}");
    super::procs::signal(nats.pid(), "CONT");
    // Back: it renews, reads the assignments afresh and runs them again.
    let start = Instant::now();
    while super::of_kind(&log, "cluster.replica.started").len() < 4 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "never ran them again"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let stopped = super::of_kind(&log, "cluster.replica.stopped");
    assert!(stopped.iter().all(|r| r["details"]["why"] == "fenced"));
    assert_eq!(stopped.len(), 2);
    drop(host);
}
