//! `forgeone host` agents as real processes, for the failure tests: each
//! with its own node description, state directory and host key, sharing
//! the lab's anchor; failures are injected with signals.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use forgeone::cluster::Cluster;
use serde_json::Value;

use super::Lab;

/// The `forgeone` binary, built once per test process (the tests of this
/// binary live in another package, so Cargo does not hand its path over
/// as `CARGO_BIN_EXE_forgeone`): `cargo build -p forgeone --bin forgeone`
/// in the same target directory and profile, which is a no-op when
/// `cargo test --workspace` built it already.
pub fn forgeone_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "-p",
                "forgeone",
                "--bin",
                "forgeone",
                "--message-format=json",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stderr(Stdio::inherit())
            .output()
            .expect("cargo build -p forgeone");
        assert!(out.status.success(), "cargo build -p forgeone failed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "forgeone")
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .expect("cargo reported no forgeone executable")
    })
}

/// Sends `signal` (`KILL`, `STOP`, `CONT`, `TERM`) to process `pid`.
pub fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pid}");
}

/// One `forgeone host` process; killed (SIGKILL) on drop if still alive.
pub struct HostProc {
    pub id: String,
    pub dir: PathBuf,
    child: Child,
}

impl HostProc {
    /// Starts `forgeone host` for node `id` in `region` (zone
    /// `<region>-1a`), heartbeating every `heartbeat`, at `url`.
    pub fn start(lab: &Lab, url: &str, id: &str, region: &str, heartbeat: &str) -> HostProc {
        let dir = lab.world.path(&format!("proc-{id}"));
        std::fs::create_dir_all(&dir).unwrap();
        let node = dir.join("node.toml");
        std::fs::write(
            &node,
            format!(
                "[[node]]\nid = \"{id}\"\nregion = \"{region}\"\nzone = \"{region}-1a\"\n\
                 trust = \"high\"\ncapacity = {{ cpu = 2, memory = \"1GiB\", containers = 20 }}\n"
            ),
        )
        .unwrap();
        let anchor = dir.join("anchor.json");
        if !anchor.exists() {
            std::fs::copy(lab.anchor_path(), &anchor).unwrap();
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("host.log"))
            .unwrap();
        let child = Command::new(forgeone_bin())
            .args(["host", "--nats", url, "--heartbeat", heartbeat])
            .args(["--stop-grace", "200ms", "--workers", "1"])
            .arg("--node")
            .arg(&node)
            .arg("--state-dir")
            .arg(&dir)
            .arg("--anchor")
            .arg(&anchor)
            .env("RUST_LOG", "forgeone=info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        HostProc {
            id: id.to_string(),
            dir,
            child,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, sig: &str) {
        signal(self.pid(), sig);
    }

    /// Kills it with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits (at most `limit`) for it to exit; its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if start.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its local audit log.
    pub fn log(&self) -> PathBuf {
        self.dir.join("audit.jsonl")
    }

    /// Its host public key.
    pub fn public_key(&self) -> PathBuf {
        self.dir.join("host.pub.pem")
    }
}

impl Drop for HostProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `forgeone ps --json` at `url`.
pub fn ps(url: &str) -> Value {
    let out = Command::new(forgeone_bin())
        .args(["ps", "--json", "--nats", url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "forgeone ps: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Polls `forgeone ps --json` every 200 ms until `check` holds, for at
/// most `limit`; panics with the last output otherwise.
pub fn ps_until(url: &str, limit: Duration, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let view = ps(url);
        if check(&view) {
            return view;
        }
        assert!(
            start.elapsed() < limit,
            "{what}: not within {limit:?}; last `ps --json`: {view:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The replica `workload`#`replica` in a `ps --json` view.
pub fn replica<'a>(view: &'a Value, workload: &str, replica: u64) -> &'a Value {
    view["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["workload"] == workload && r["replica"] == replica)
        .unwrap_or(&Value::Null)
}

/// `forgeone audit verify --nats URL --node ID --key KEY LOG`: the host's
/// chain from the stream, and its local log reaching as far; the output.
pub fn verify_from_stream(url: &str, host: &HostProc) -> String {
    let out = Command::new(forgeone_bin())
        .args([
            "audit", "verify", "--nats", url, "--node", &host.id, "--key",
        ])
        .arg(host.public_key())
        .arg(host.log())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "the chain of {} does not verify from the stream: {text}",
        host.id
    );
    text
}

/// Every record of the audit stream, as JSON, with the publishing node.
pub async fn stream_records(cluster: &Cluster) -> Vec<(String, Value)> {
    cluster
        .audit_records(None)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.node.clone(), serde_json::from_slice(&r.line).unwrap()))
        .collect()
}
