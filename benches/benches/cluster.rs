//! C1: the cluster path against the single-host path, in the same run.
//!
//! - **deploy to exited**: `cluster::deploy` of 100 `hello` workloads (one
//!   signed deployment) until every replica's status on 3 in-process hosts
//!   is `exited`; baseline: the same 100 workloads run by one kernel as
//!   `forgeone up` runs them (boot in signatures mode, `Kernel::from_deployment`,
//!   until settled).
//! - **placement**: `Deployment::plan` of 1,000 workloads over 3 host
//!   nodes plus 100 simulated ones: the call the lease holder makes for
//!   each deployment when its inputs change (decisions per second are the
//!   reported throughput).
//!
//! Starts its own `nats-server` (found or installed by
//! `scripts/nats-server`) on a free loopback port. Run with
//! `cargo bench -p forgeone-benches --bench cluster`.

use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use forgeone::audit::{AuditConfig, AuditLog};
use forgeone::boot::{AnchorDocument, ComponentStatement, Role, TrustAnchor};
use forgeone::cluster::{
    self, Cluster, ClusterView, Feed, HostAgent, HostConfig, NodeRecord, StatusRecord,
};
use forgeone::kernel::Kernel;
use forgeone::scheduler::{Capacity, Node, StaticInventory};
use forgeone::{Deployment, SigningKey, TrustLevel};

const WORKLOADS: usize = 100;

struct Nats(Child);

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nats_server(store: &Path) -> (Nats, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/nats-server");
    let out = Command::new(&script).output().expect("scripts/nats-server");
    let bin = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(bin)
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(store)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    (Nats(child), format!("nats://127.0.0.1:{port}"))
}

/// A deployment of `n` hello workloads in `dir`, with an anchor, host key
/// and audit log for the single-host baseline.
fn write_deployment(dir: &Path, n: usize, release: &SigningKey) -> PathBuf {
    let hello = forgeone_benches::sample("hello");
    std::fs::write(dir.join("hello.wasm"), &hello).unwrap();
    let envelope = ComponentStatement::new("hello", "1.0.0", &hello, None).sign(&[release]);
    std::fs::write(dir.join("hello.wasm.sig.json"), envelope.to_json()).unwrap();
    let mut toml = String::from(
        "boot = \"signatures\"\ntrust_anchor = \"anchor.json\"\nhost_key = \"host.pem\"\n\
         audit_log = \"audit.jsonl\"\nstate_dir = \"state\"\n\n[node]\nmemory = \"8GiB\"\n\n\
         [[tenant]]\nname = \"acme\"\nmax_priority = \"critical\"\n",
    );
    for i in 0..n {
        write!(
            toml,
            "\n[[workload]]\nname = \"w{i}\"\ncomponent = \"hello.wasm\"\ntenant = \"acme\"\n"
        )
        .unwrap();
    }
    let path = dir.join("forgeone.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

fn anchor_with_deploy(root: &SigningKey, release: &SigningKey, deploy: &SigningKey) -> Vec<u8> {
    let mut doc = AnchorDocument::new(chrono::Utc::now() + chrono::Duration::days(30));
    doc.add_key(Role::Root, root.public())
        .add_key(Role::Release, release.public())
        .add_key(Role::Deploy, deploy.public());
    let mut envelope = doc.envelope();
    envelope.sign(root);
    envelope.to_json()
}

fn host(dir: &Path, id: &str, region: &str, anchor: &[u8]) -> HostConfig {
    let cap = Capacity {
        cpu_millis: 64_000,
        memory: 64 << 30,
        storage: 0,
        containers: 1000,
    };
    let mut node = Node::new(id, region, format!("{region}-1a"), cap);
    node.trust(TrustLevel::High);
    let state = dir.join(id);
    std::fs::create_dir_all(&state).unwrap();
    let audit = AuditLog::open(
        state.join("audit.jsonl"),
        SigningKey::generate(),
        &AuditConfig::new(),
    )
    .unwrap();
    let mut config = HostConfig::new(node, TrustAnchor::from_bytes(anchor).unwrap(), audit, state);
    config.heartbeat(Duration::from_secs(1));
    config
}

/// Waits, on a watch of the status bucket (no polling), until every
/// replica of deployment `name` has exited.
async fn all_exited(feed: &mut Feed<StatusRecord>, name: &str, n: usize) {
    let prefix = format!("{name}.");
    loop {
        let done = feed
            .records()
            .filter(|(k, s)| k.starts_with(&prefix) && s.state == "exited")
            .count();
        if feed.ready() && done == n {
            return;
        }
        feed.changed().await.unwrap();
    }
}

fn deploy_to_exited(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let (root, release, deployer) = (
        SigningKey::generate(),
        SigningKey::generate(),
        SigningKey::generate(),
    );
    let anchor = anchor_with_deploy(&root, &release, &deployer);
    std::fs::write(dir.path().join("anchor.json"), &anchor).unwrap();
    SigningKey::generate()
        .write_pair(
            &dir.path().join("host.pem"),
            &dir.path().join("host.pub.pem"),
        )
        .unwrap();
    let path = write_deployment(dir.path(), WORKLOADS, &release);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (_nats, url) = nats_server(&dir.path().join("js"));
    let agents: Vec<HostAgent> = rt.block_on(async {
        [
            ("eu-west-1", "eu-west"),
            ("eu-central-1", "eu-central"),
            ("us-east-1", "us-east"),
        ]
        .iter()
        .map(|(id, region)| HostAgent::start(&url, host(dir.path(), id, region, &anchor)))
        .collect()
    });
    let cluster = rt.block_on(async {
        let cluster = Cluster::connect(&url, Duration::from_secs(10))
            .await
            .unwrap();
        loop {
            let v = ClusterView::read(&cluster).await.unwrap();
            if v.nodes.iter().filter(|n| n.state == "active").count() == 3 {
                break cluster;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });

    let mut group = c.benchmark_group("C1 deploy 100 hello until all exited");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(30))
        .throughput(Throughput::Elements(WORKLOADS as u64));
    let mut run = 0u32;
    group.bench_function("cluster: 3 hosts on NATS JetStream", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                run += 1;
                let name = format!("run{run}");
                total += rt.block_on(async {
                    let mut feed = Feed::status(&cluster);
                    while !feed.ready() {
                        feed.changed().await.unwrap();
                    }
                    let start = Instant::now();
                    cluster::deploy(&cluster, &path, &name, &[&deployer])
                        .await
                        .unwrap();
                    all_exited(&mut feed, &name, WORKLOADS).await;
                    let took = start.elapsed();
                    cluster::undeploy(&cluster, &name).await.unwrap();
                    took
                });
            }
            total
        });
    });
    group.bench_function("baseline: one host, as forgeone up", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for i in 0..iters {
                total += rt.block_on(async {
                    let deployment = Deployment::from_file(&path).unwrap();
                    let key = SigningKey::from_file(dir.path().join("host.pem")).unwrap();
                    let log = dir.path().join(format!("up-{run}-{i}.jsonl"));
                    let start = Instant::now();
                    let audit = AuditLog::open(&log, key, &AuditConfig::new()).unwrap();
                    let boot = deployment
                        .boot_builder()
                        .audit(audit.clone())
                        .run()
                        .unwrap();
                    let (kernel, _) = Kernel::from_deployment(&deployment, boot, audit).unwrap();
                    kernel.wait_settled().await;
                    let took = start.elapsed();
                    kernel.shutdown("bench");
                    took
                });
            }
            total
        });
    });
    group.finish();
    rt.block_on(async {
        for a in agents {
            a.drain().await;
        }
    });
}

fn placement(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let release = SigningKey::generate();
    let path = write_deployment(dir.path(), 1000, &release);
    let deployment = Deployment::from_file(&path).unwrap();
    let mut nodes = Vec::new();
    for (id, region) in [
        ("eu-west-1", "eu-west"),
        ("eu-central-1", "eu-central"),
        ("us-east-1", "us-east"),
    ] {
        let cap = Capacity {
            cpu_millis: 64_000,
            memory: 64 << 30,
            storage: 0,
            containers: 1000,
        };
        nodes.push(Node::new(id, region, format!("{region}-1a"), cap));
    }
    for i in 0..100 {
        let cap = Capacity {
            cpu_millis: 16_000,
            memory: 16 << 30,
            storage: 0,
            containers: 100,
        };
        nodes.push(Node::new(
            format!("sim-{i}"),
            "ap-south",
            format!("ap-south-1{}", i % 3),
            cap,
        ));
    }
    let mut group = c.benchmark_group("C1 placement by the lease holder");
    group.sample_size(10).throughput(Throughput::Elements(1000));
    group.bench_function(
        "Deployment::plan alone: 1,000 workloads on 3 + 100 nodes",
        |b| {
            b.iter(|| {
                let inventory = Arc::new(StaticInventory::new(nodes.clone()));
                let plan = deployment.plan(inventory, 1024).unwrap();
                assert!(plan.all_placed());
                plan
            });
        },
    );
    group.finish();
}

/// The lease holder's placement rate on the real path: 3 host agents and
/// 100 simulated node records on NATS, `deploy` of 1,000 workloads until
/// the lease holder has written all 1,000 assignments (read, plan, audit,
/// compare-and-set), seen through a watch of the assignments.
fn placement_live(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let (root, release, deployer) = (
        SigningKey::generate(),
        SigningKey::generate(),
        SigningKey::generate(),
    );
    let anchor = anchor_with_deploy(&root, &release, &deployer);
    let path = write_deployment(dir.path(), 1000, &release);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (_nats, url) = nats_server(&dir.path().join("js"));
    let agents: Vec<HostAgent> = rt.block_on(async {
        [
            ("eu-west-1", "eu-west"),
            ("eu-central-1", "eu-central"),
            ("us-east-1", "us-east"),
        ]
        .iter()
        .map(|(id, region)| HostAgent::start(&url, host(dir.path(), id, region, &anchor)))
        .collect()
    });
    let cluster = rt.block_on(async {
        let cluster = Cluster::connect(&url, Duration::from_secs(10))
            .await
            .unwrap();
        for i in 0..100 {
            let cap = Capacity {
                cpu_millis: 16_000,
                memory: 16 << 30,
                storage: 0,
                containers: 100,
            };
            let node = Node::new(
                format!("sim-{i}"),
                "ap-south",
                format!("ap-south-1{}", i % 3),
                cap,
            );
            // The longest heartbeat a record may declare: live throughout.
            let record = NodeRecord::of(&node, cluster::MAX_HEARTBEAT_MS);
            cluster.put_node(&record).await.unwrap();
        }
        loop {
            let v = ClusterView::read(&cluster).await.unwrap();
            if v.nodes.iter().filter(|n| n.state == "active").count() == 103 {
                break cluster;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let mut group = c.benchmark_group("C1 placement by the lease holder");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(30))
        .throughput(Throughput::Elements(1000));
    let mut run = 0u32;
    group.bench_function(
        "deploy 1,000 workloads until assigned, 3 hosts + 100 simulated nodes on NATS",
        |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    run += 1;
                    let name = format!("place{run}");
                    total += rt.block_on(async {
                        let mut feed = Feed::assignments(&cluster);
                        while !feed.ready() {
                            feed.changed().await.unwrap();
                        }
                        let prefix = format!("{name}.");
                        let start = Instant::now();
                        cluster::deploy(&cluster, &path, &name, &[&deployer])
                            .await
                            .unwrap();
                        loop {
                            let placed = feed
                                .records()
                                .filter(|(k, a)| k.starts_with(&prefix) && a.node.is_some())
                                .count();
                            if placed == 1000 {
                                break;
                            }
                            feed.changed().await.unwrap();
                        }
                        let took = start.elapsed();
                        cluster::undeploy(&cluster, &name).await.unwrap();
                        took
                    });
                }
                total
            });
        },
    );
    group.finish();
    rt.block_on(async {
        for a in agents {
            a.drain().await;
        }
    });
}

criterion_group!(benches, deploy_to_exited, placement, placement_live);
criterion_main!(benches);
