//! Container runtime tests: every fault of issue 4, each handled precisely
//! with the other containers unaffected; lifecycle, supervision, plugins and
//! the compiled cache.
//!
//! No timed assertions: tests wait for states (with generous bounds that
//! only turn a hang into a failure), never for durations.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use forgeone::SigningKey;
use forgeone::audit::{AuditConfig, AuditLog};
use forgeone::boot::VerifiedComponent;
use forgeone::identity::{IdentityContext, TrustLevel, TrustVector};
use forgeone::runtime::{
    BackoffConfig, CallError, ContainerConfig, ContainerContext, ContainerStatus, DirGrant,
    EngineConfig, Failure, FileIo, Limits, Outcome, OutputLine, OutputSink, RestartPolicy, RunEnd,
    Runtime, RuntimeConfig, RuntimeError, Stream, Value,
};
use serde_json::Value as Json;

use crate::guests;

mod allocation;
mod audit_failure;
mod audit_output;
mod bounds;
mod cache;
mod capabilities;
mod exceptions;
mod faults;
mod file_io;
mod handles;
mod lifecycle;
mod plugins;
mod stdio;
mod warm;

/// A runtime with its audit log in a temporary directory.
struct Harness {
    runtime: Runtime,
    log: AuditLog,
    log_path: PathBuf,
    dir: tempfile::TempDir,
}

impl Harness {
    fn new(configure: impl FnOnce(&mut RuntimeConfig)) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        Harness::in_dir(dir, configure)
    }

    fn in_dir(dir: tempfile::TempDir, configure: impl FnOnce(&mut RuntimeConfig)) -> Harness {
        let log_path = dir
            .path()
            .join(format!("audit-{}.jsonl", uuid::Uuid::new_v4()));
        let log = AuditLog::open(&log_path, SigningKey::generate(), &AuditConfig::new()).unwrap();
        let mut config = RuntimeConfig::new();
        config.allow_unsigned(true);
        configure(&mut config);
        let runtime = Runtime::new(config, log.clone()).unwrap();
        Harness {
            runtime,
            log,
            log_path,
            dir,
        }
    }

    /// Every audit record so far.
    fn records(&self) -> Vec<Json> {
        self.log.flush().unwrap();
        std::fs::read_to_string(&self.log_path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn records_of(&self, kind: &str) -> Vec<Json> {
        self.records()
            .into_iter()
            .filter(|r| r["kind"] == kind)
            .collect()
    }
}

fn component(path: &str) -> VerifiedComponent {
    let name = Path::new(path).file_stem().unwrap().to_str().unwrap();
    VerifiedComponent::unsigned(name, std::fs::read(path).unwrap())
}

fn identity() -> IdentityContext {
    IdentityContext::new("acme", "alice", TrustVector::new(TrustLevel::Medium, 0))
}

/// A sink collecting every line.
fn collector() -> (OutputSink, Arc<Mutex<Vec<OutputLine>>>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink_lines = lines.clone();
    let sink = OutputSink::new(move |line| sink_lines.lock().unwrap().push(line.clone()));
    (sink, lines)
}

fn texts(lines: &Arc<Mutex<Vec<OutputLine>>>) -> Vec<String> {
    lines
        .lock()
        .unwrap()
        .iter()
        .map(|l| l.text.clone())
        .collect()
}

/// One stream's audited output: the `text` of its `container.output`
/// chunks in order (escaped), checked to follow one another without a gap
/// and to hold at most 16 KiB each; and how many chunks there were.
fn audited_output(records: &[Json], stream: &str) -> (String, usize) {
    let mut text = String::new();
    let mut offset = 0;
    let mut chunks = 0;
    for r in records
        .iter()
        .filter(|r| r["kind"] == "container.output" && r["details"]["stream"] == stream)
    {
        let d = &r["details"];
        assert_eq!(d["offset"], offset, "a gap before {r}");
        let bytes = d["bytes"].as_u64().unwrap();
        assert!(bytes <= 16 * 1024, "{bytes} bytes in one record");
        offset += bytes;
        text.push_str(d["text"].as_str().unwrap());
        chunks += 1;
    }
    (text, chunks)
}

/// Polls `cond` every 5 ms; panics after 60 s (a hang, not a timing check).
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..12_000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("gave up waiting for: {what}");
}

fn failure(end: &RunEnd) -> &Failure {
    match end {
        RunEnd::Failed(f) => f,
        other => panic!("expected a failure, got {other:?}"),
    }
}
