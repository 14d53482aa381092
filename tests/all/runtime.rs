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
    BackoffConfig, CallError, ContainerConfig, ContainerStatus, EngineConfig, Failure, Limits,
    OutputLine, OutputSink, RestartPolicy, RunEnd, Runtime, RuntimeConfig, RuntimeError, Stream,
    Value,
};
use serde_json::Value as Json;

use crate::guests;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_runs_with_its_identity_and_logs_tagged() {
    let h = Harness::new(|_| {});
    let (sink, lines) = collector();
    let mut config = ContainerConfig::new(component(guests::HELLO));
    config.workload("greeter").output(sink);
    let id = h.runtime.launch_container(config, identity()).unwrap();
    let outcome = h.runtime.wait(id).await.unwrap();
    assert_eq!(outcome.end, RunEnd::Success, "{outcome:?}");
    assert!(outcome.stats.fuel_consumed > 0);
    assert!(outcome.stats.peak_memory > 0);
    let out = texts(&lines);
    let digest = component(guests::HELLO).digest().to_hex();
    assert!(
        out.contains(&format!("hello from container {id}")),
        "{out:#?}"
    );
    assert!(out.contains(&"  tenant    acme".to_string()), "{out:#?}");
    assert!(out.contains(&"  principal alice".to_string()), "{out:#?}");
    // Unsigned code never runs with the trust it was launched with.
    assert!(
        out.contains(&"  trust     untrusted".to_string()),
        "{out:#?}"
    );
    assert!(out.contains(&"  workload  greeter".to_string()), "{out:#?}");
    assert!(out.contains(&format!("  component {digest}")), "{out:#?}");
    assert!(out.contains(&"  signed by -".to_string()), "{out:#?}");
    assert!(
        out.contains(&"[info] hello sample greeted 1 args".to_string()),
        "{out:#?}"
    );
    assert_eq!(h.runtime.status(id).unwrap(), ContainerStatus::Stopped);

    // The log line is audited with the container's identity, escaped.
    let logs = h.records_of("container.log");
    assert_eq!(logs.len(), 1, "{logs:#?}");
    assert_eq!(logs[0]["subjects"]["container"], id.to_string());
    assert_eq!(logs[0]["subjects"]["workload"], "greeter");
    assert_eq!(logs[0]["actor"]["tenant"], "acme");
    assert_eq!(logs[0]["actor"]["principal"], "alice");
    assert_eq!(logs[0]["actor"]["trust"], "untrusted");
    assert_eq!(logs[0]["details"]["message"], "hello sample greeted 1 args");
    // Running unsigned code is loud.
    let allowed = h.records_of("policy.unsigned_allowed");
    assert_eq!(allowed.len(), 1);
    assert_eq!(allowed[0]["details"]["name"], "hello");
    let exited = h.records_of("container.exited");
    assert_eq!(exited[0]["details"]["code"], 0);
    assert_eq!(h.records_of("container.output").len(), out.len() - 1);
    // Every lifecycle record names the container, its component and its
    // workload, and is by the container's identity.
    for kind in ["container.created", "container.started", "container.exited"] {
        let records = h.records_of(kind);
        assert_eq!(records.len(), 1, "{kind}: {records:#?}");
        let subjects = &records[0]["subjects"];
        assert_eq!(subjects["container"], id.to_string(), "{kind}");
        assert_eq!(subjects["component"], digest, "{kind}");
        assert_eq!(subjects["workload"], "greeter", "{kind}");
        assert_eq!(records[0]["actor"]["principal"], "alice", "{kind}");
        assert_eq!(records[0]["actor"]["trust"], "untrusted", "{kind}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_code_is_refused_unless_allowed() {
    let h = Harness::new(|c| {
        c.allow_unsigned(false);
    });
    let err = h
        .runtime
        .launch_container(ContainerConfig::new(component(guests::HELLO)), identity())
        .unwrap_err();
    assert!(
        matches!(err, RuntimeError::UnsignedRefused { ref name, .. } if name == "hello"),
        "{err}"
    );
    assert_eq!(h.records_of("policy.unsigned_refused").len(), 1);
    assert!(h.runtime.list().is_empty());
    assert_eq!(
        h.runtime.cache_stats().compiled,
        0,
        "refused before compiling"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_loop_runs_out_of_fuel() {
    let h = Harness::new(|_| {});
    let mut config = ContainerConfig::new(component(guests::CPU_HOG));
    config.fuel(Some(50_000_000)).timeout(None);
    let id = h.runtime.launch_container(config, identity()).unwrap();
    let outcome = h.runtime.wait(id).await.unwrap();
    assert_eq!(
        failure(&outcome.end),
        &Failure::OutOfFuel { budget: 50_000_000 }
    );
    assert_eq!(outcome.stats.fuel_consumed, 50_000_000);
    let failed = h.records_of("container.failed");
    assert_eq!(failed[0]["details"]["reason"], "out-of-fuel");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_loop_hits_the_deadline() {
    let h = Harness::new(|_| {});
    let mut config = ContainerConfig::new(component(guests::CPU_HOG));
    config.fuel(None).timeout(Some(Duration::from_millis(300)));
    let id = h.runtime.launch_container(config, identity()).unwrap();
    let outcome = h.runtime.wait(id).await.unwrap();
    assert_eq!(
        failure(&outcome.end),
        &Failure::Deadline { timeout_ms: 300 }
    );
    assert!(outcome.stats.fuel_consumed > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_stuck_in_a_host_call_still_hits_the_deadline() {
    let h = Harness::new(|_| {});
    let mut config = ContainerConfig::new(component(guests::STUCK_HOST_CALL));
    config.timeout(Some(Duration::from_millis(200)));
    let id = h.runtime.launch_container(config, identity()).unwrap();
    let outcome = h.runtime.wait(id).await.unwrap();
    assert_eq!(
        failure(&outcome.end),
        &Failure::Deadline { timeout_ms: 200 }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_bomb_is_refused_inside_the_guest() {
    let h = Harness::new(|_| {});
    let (sink, lines) = collector();
    let mut config = ContainerConfig::new(component(guests::MEMORY_BOMB));
    config.max_memory(16 * 1024 * 1024).output(sink);
    let id = h.runtime.launch_container(config, identity()).unwrap();
    let outcome = h.runtime.wait(id).await.unwrap();
    let Failure::MemoryLimit {
        limit, requested, ..
    } = failure(&outcome.end)
    else {
        panic!("expected memory limit, got {outcome:?}");
    };
    assert_eq!(*limit, 16 * 1024 * 1024);
    assert!(*requested > *limit);
    assert!(outcome.stats.peak_memory <= 16 * 1024 * 1024);
    assert!(outcome.stats.memory_refusals >= 1);
    // The guest saw the refusal itself and reported how far it got.
    let report = texts(&lines)
        .into_iter()
        .find(|l| l.starts_with("memory-bomb: the host refused more memory after"))
        .expect("memory-bomb reports the refusal");
    let mib: u64 = report.split_whitespace().nth(7).unwrap().parse().unwrap();
    assert!((8..16).contains(&mib), "{report}");
    let failed = h.records_of("container.failed");
    assert_eq!(failed[0]["details"]["reason"], "memory-limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_grow_bomb_hits_the_table_limit() {
    let h = Harness::new(|_| {});
    let mut config = ContainerConfig::new(component(guests::TABLE_BOMB));
    let mut limits = Limits::default();
    limits.max_table_elements = 50_000;
    config.limits(limits);
    let id = h.runtime.launch_container(config, identity()).unwrap();
    let outcome = h.runtime.wait(id).await.unwrap();
    let Failure::TableLimit {
        limit, requested, ..
    } = failure(&outcome.end)
    else {
        panic!("expected table limit, got {outcome:?}");
    };
    assert_eq!((*limit, *requested), (50_000, 50_001));
    assert_eq!(outcome.stats.table_refusals, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_recursion_is_a_clean_stack_overflow_trap() {
    let h = Harness::new(|_| {});
    let id = h
        .runtime
        .launch_container(
            ContainerConfig::new(component(guests::DEEP_RECURSION)),
            identity(),
        )
        .unwrap();
    let outcome = h.runtime.wait(id).await.unwrap();
    let Failure::Trap { trap, backtrace } = failure(&outcome.end) else {
        panic!("expected a trap, got {outcome:?}");
    };
    assert!(trap.contains("call stack exhausted"), "{trap}");
    assert!(!backtrace.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_flood_is_bounded_and_marked() {
    let h = Harness::new(|_| {});
    let (sink, lines) = collector();
    let mut config = ContainerConfig::new(component(guests::STDOUT_FLOOD));
    config.max_output(64 * 1024).output(sink);
    let id = h.runtime.launch_container(config, identity()).unwrap();
    let outcome = h.runtime.wait(id).await.unwrap();
    // The guest itself is unaffected: all its writes succeeded.
    assert_eq!(outcome.end, RunEnd::Success, "{outcome:?}");
    assert_eq!(outcome.stats.output_bytes, 64 * 1024 * 1024);
    assert!(outcome.stats.output_truncated);
    let lines = lines.lock().unwrap();
    let kept: usize = lines
        .iter()
        .filter(|l| l.stream == Stream::Stdout)
        .map(|l| l.text.len() + 1)
        .sum();
    assert_eq!(kept, 64 * 1024);
    let marker = lines.last().unwrap();
    assert_eq!(marker.stream, Stream::Host);
    assert!(marker.text.contains("output truncated"), "{}", marker.text);
    assert_eq!(h.records_of("container.output_truncated").len(), 1);
    assert_eq!(h.records_of("container.output").len(), 1024 + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ansi_escapes_are_escaped_for_terminals_and_the_audit_log() {
    let h = Harness::new(|_| {});
    let (sink, lines) = collector();
    let mut config = ContainerConfig::new(component(guests::ANSI_OUTPUT));
    config.output(sink);
    let id = h.runtime.launch_container(config, identity()).unwrap();
    assert!(h.runtime.wait(id).await.unwrap().is_success());
    let lines = lines.lock().unwrap();
    // The caller gets the raw text, and an escaped form for terminals.
    assert_eq!(lines[0].text, "\x1b[31mred alert\x1b[0m");
    assert_eq!(lines[0].escaped(), "\\x1b[31mred alert\\x1b[0m");
    assert!(lines[1].escaped().contains("\\x1b]0;pwned-title\\x07"));
    assert!(
        lines[3].escaped().contains("\\u{202e}"),
        "{}",
        lines[3].escaped()
    );
    drop(lines);
    let raw = std::fs::read_to_string(&h.log_path).unwrap();
    assert!(!raw.contains('\u{1b}'), "raw ESC reached the audit log");
    assert!(
        !raw.contains('\u{202e}'),
        "raw bidi override reached the audit log"
    );
    let output = h.records_of("container.output");
    assert_eq!(output[0]["details"]["line"], "\\x1b[31mred alert\\x1b[0m");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_the_host_does_not_provide_is_a_link_failure_naming_it() {
    let h = Harness::new(|c| {
        c.backoff({
            let mut b = BackoffConfig::new();
            b.initial(Duration::from_millis(1));
            b
        });
    });
    let mut config = ContainerConfig::new(component(guests::MISSING_IMPORT));
    // Restarting cannot fix a missing import: no restart happens.
    config.restart(RestartPolicy::Always);
    let id = h.runtime.launch_container(config, identity()).unwrap();
    let outcome = h.runtime.wait(id).await.unwrap();
    let Failure::HostCallDenied { interface, detail } = failure(&outcome.end) else {
        panic!("expected a denied host call, got {outcome:?}");
    };
    assert_eq!(interface, "forgeone:kernel/secrets@0.1.0");
    assert!(detail.contains("forgeone:kernel/secrets@0.1.0"), "{detail}");
    let ctx = h.runtime.context(id).unwrap();
    assert_eq!(ctx.history.len(), 1);
    assert!(matches!(
        ctx.status,
        ContainerStatus::Failed(Failure::HostCallDenied { .. })
    ));
    let failed = h.records_of("container.failed");
    assert_eq!(failed[0]["details"]["reason"], "host-call-denied");
    assert_eq!(
        failed[0]["details"]["interface"],
        "forgeone:kernel/secrets@0.1.0"
    );
}

/// A directory with `data/inside.txt`, `outside.txt` next to `data`, and
/// `data/escape-link` pointing at it.
fn probe_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("inside.txt"), "hello from inside\n").unwrap();
    std::fs::write(dir.path().join("outside.txt"), "secret outside\n").unwrap();
    std::os::unix::fs::symlink("../outside.txt", data.join("escape-link")).unwrap();
    dir
}

async fn run_fs_probe(
    h: &Harness,
    dir: &Path,
    read_only: bool,
    configure: impl FnOnce(&mut ContainerConfig),
) -> Vec<String> {
    let (sink, lines) = collector();
    let mut config = ContainerConfig::new(component(guests::FS_PROBE));
    config
        .dir(dir.join("data"), "/data", read_only)
        .arg("/data")
        .output(sink);
    configure(&mut config);
    let id = h.runtime.launch_container(config, identity()).unwrap();
    let outcome = h.runtime.wait(id).await.unwrap();
    assert!(outcome.is_success(), "{outcome:?}");
    texts(&lines)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_probe_cannot_escape_its_preopen() {
    let h = Harness::new(|_| {});
    let dir = probe_dir();
    let out = run_fs_probe(&h, dir.path(), true, |_| {}).await;
    let has = |prefix: &str| out.iter().any(|l| l.starts_with(prefix));
    assert!(has("ok read inside.txt: hello from inside"), "{out:#?}");
    assert!(has("denied read ../outside.txt"), "{out:#?}");
    assert!(has("denied read /etc/passwd"), "{out:#?}");
    assert!(has("denied read escape-link"), "{out:#?}");
    assert!(has("denied write written.txt"), "{out:#?}");
    assert!(has("denied list .."), "{out:#?}");
    assert!(!out.iter().any(|l| l.contains("secret outside")));
    assert!(!dir.path().join("data/written.txt").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_write_grant_allows_writes_inside_only() {
    let h = Harness::new(|_| {});
    let dir = probe_dir();
    let out = run_fs_probe(&h, dir.path(), false, |_| {}).await;
    assert!(out.iter().any(|l| l == "ok write written.txt"), "{out:#?}");
    assert!(out.iter().any(|l| l.starts_with("denied read escape-link")));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("data/written.txt")).unwrap(),
        "written by fs-probe\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_and_args_are_only_what_was_granted() {
    // SAFETY: nothing else in this test binary reads this variable.
    unsafe { std::env::set_var("FORGEONE_HOST_SECRET", "do-not-leak") };
    let h = Harness::new(|_| {});
    let dir = probe_dir();
    let out = run_fs_probe(&h, dir.path(), true, |c| {
        c.env("GREETING", "hi").arg("extra");
    })
    .await;
    let env: Vec<&String> = out.iter().filter(|l| l.starts_with("env ")).collect();
    assert_eq!(env, ["env GREETING=hi"]);
    let args: Vec<&String> = out.iter().filter(|l| l.starts_with("arg ")).collect();
    assert_eq!(args, ["arg fs-probe", "arg /data", "arg extra"]);
    // No directory but the granted one: `/etc/passwd` is not reachable.
    assert!(out.iter().any(|l| l.starts_with("denied read /etc/passwd")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_needs_the_policy() {
    let h = Harness::new(|_| {});
    let mut config = ContainerConfig::new(component(guests::HELLO));
    config.network(true);
    let err = h.runtime.launch_container(config, identity()).unwrap_err();
    assert!(matches!(err, RuntimeError::NetworkRefused { .. }), "{err}");
    assert_eq!(h.records_of("policy.network_refused").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_in_one_of_100_containers_leaves_the_others_unaffected() {
    let h = Harness::new(|_| {});
    let hello = component(guests::HELLO);
    let crasher = component(guests::CRASHER);
    let mut ids = Vec::new();
    for i in 0..100 {
        let config = if i == 37 {
            ContainerConfig::new(crasher.clone())
        } else {
            ContainerConfig::new(hello.clone())
        };
        ids.push(h.runtime.launch_container(config, identity()).unwrap());
    }
    for (i, id) in ids.iter().enumerate() {
        let outcome = h.runtime.wait(*id).await.unwrap();
        if i == 37 {
            let Failure::Trap { trap, backtrace } = failure(&outcome.end) else {
                panic!("crasher should trap: {outcome:?}");
            };
            assert!(trap.contains("unreachable"), "{trap}");
            assert!(
                backtrace.iter().any(|f| f.contains("panic")),
                "{backtrace:#?}"
            );
            assert!(
                outcome
                    .last_output
                    .iter()
                    .any(|l| l.contains("crasher: crashing on purpose")),
                "{:#?}",
                outcome.last_output
            );
        } else {
            assert_eq!(outcome.end, RunEnd::Success, "container {i}: {outcome:?}");
        }
    }
    let stats = h.runtime.cache_stats();
    assert_eq!(stats.compiled, 2, "each digest compiles once");
    assert_eq!(stats.memory_hits, 98);
    assert_eq!(h.records_of("container.exited").len(), 99);
    assert_eq!(h.records_of("container.failed").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pausing_a_busy_guest_stops_its_fuel_consumption_until_resumed() {
    let h = Harness::new(|_| {});
    let mut config = ContainerConfig::new(component(guests::CPU_HOG));
    config.fuel(None).timeout(None);
    let id = h.runtime.launch_container(config, identity()).unwrap();
    let fuel = |rt: &Runtime| rt.context(id).unwrap().resources.fuel_consumed;
    eventually("cpu-hog burns fuel", || fuel(&h.runtime) > 0).await;
    h.runtime.pause(id).unwrap();
    assert_eq!(h.runtime.status(id).unwrap(), ContainerStatus::Paused);
    eventually("the paused guest parks", || h.runtime.is_parked(id)).await;
    let at_pause = fuel(&h.runtime);
    // Give a running guest every chance to move the counter.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fuel(&h.runtime), at_pause, "a paused guest consumed fuel");
    h.runtime.resume(id).unwrap();
    eventually("the resumed guest burns fuel again", || {
        fuel(&h.runtime) > at_pause
    })
    .await;
    h.runtime.stop_with_grace(id, Duration::ZERO).unwrap();
    let outcome = h.runtime.wait(id).await.unwrap();
    assert_eq!(outcome.end, RunEnd::Stopped { forced: true });
    assert_eq!(h.records_of("container.paused").len(), 1);
    assert_eq!(h.records_of("container.resumed").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_a_busy_guest_drops_it_at_its_next_yield_point() {
    let h = Harness::new(|_| {});
    let mut config = ContainerConfig::new(component(guests::CPU_HOG));
    config
        .fuel(None)
        .timeout(None)
        .stop_grace(Duration::from_millis(50));
    let id = h.runtime.launch_container(config, identity()).unwrap();
    eventually("cpu-hog runs", || {
        h.runtime.context(id).unwrap().resources.fuel_consumed > 0
    })
    .await;
    h.runtime.stop(id).unwrap();
    assert_eq!(h.runtime.status(id).unwrap(), ContainerStatus::Stopping);
    let outcome = h.runtime.wait(id).await.unwrap();
    assert_eq!(outcome.end, RunEnd::Stopped { forced: true });
    assert_eq!(h.runtime.status(id).unwrap(), ContainerStatus::Stopped);
    let requested = h.records_of("container.stop_requested");
    assert_eq!(requested[0]["details"]["grace_ms"], 50);
    let stopped = h.records_of("container.stopped");
    assert_eq!(stopped[0]["details"]["forced"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn illegal_transitions_are_refused_and_audited() {
    let h = Harness::new(|_| {});
    let id = h
        .runtime
        .launch_container(ContainerConfig::new(component(guests::HELLO)), identity())
        .unwrap();
    h.runtime.wait(id).await.unwrap();
    for (action, result) in [
        ("resume", h.runtime.resume(id)),
        ("pause", h.runtime.pause(id)),
        ("stop", h.runtime.stop(id)),
        ("release", h.runtime.release(id)),
    ] {
        match result {
            Err(RuntimeError::IllegalTransition {
                action: a, status, ..
            }) => {
                assert_eq!(a, action);
                assert_eq!(status, "stopped");
            }
            other => panic!("{action} of a stopped container: {other:?}"),
        }
    }
    let refused = h.records_of("container.transition_refused");
    assert_eq!(refused.len(), 4);
    assert_eq!(refused[0]["details"]["action"], "resume");
    assert_eq!(refused[0]["subjects"]["container"], id.to_string());
    // `start` of a stopped container is legal: it runs again.
    h.runtime.start(id).unwrap();
    let outcome = h.runtime.wait(id).await.unwrap();
    assert_eq!((outcome.run, outcome.end), (2, RunEnd::Success));
    let ctx = h.runtime.remove(id).unwrap();
    assert_eq!(ctx.history.len(), 2);
    assert!(h.runtime.context(id).is_none());
    let missing = uuid::Uuid::new_v4();
    assert!(matches!(
        h.runtime.pause(missing),
        Err(RuntimeError::NotFound(m)) if m == missing
    ));
}

fn fast_backoff(threshold: u32) -> BackoffConfig {
    let mut backoff = BackoffConfig::new();
    backoff
        .initial(Duration::from_millis(10))
        .max(Duration::from_millis(40))
        .crash_loop_threshold(threshold);
    backoff
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loop_is_quarantined_with_evidence_until_released() {
    let h = Harness::new(|c| {
        c.backoff(fast_backoff(4));
    });
    let mut config = ContainerConfig::new(component(guests::CRASHER));
    config.restart(RestartPolicy::OnFailure);
    let id = h.runtime.launch_container(config, identity()).unwrap();
    let outcome = h.runtime.wait(id).await.unwrap();
    assert_eq!(outcome.run, 4);
    let ContainerStatus::Quarantined(q) = h.runtime.status(id).unwrap() else {
        panic!("expected quarantine");
    };
    assert_eq!(q.failures, 4);
    assert!(matches!(q.last_failure, Failure::Trap { .. }));
    assert!(q.fuel_consumed > 0);
    assert!(
        q.last_output
            .iter()
            .any(|l| l.starts_with("crasher: starting in container")),
        "{:#?}",
        q.last_output
    );
    let backoffs: Vec<u128> = q
        .restart_history
        .iter()
        .map(|r| r.backoff.as_millis())
        .collect();
    // Exponential: 10, 20, 40 (capped), and no restart after the 4th.
    assert_eq!(backoffs, [10, 20, 40, 0]);
    let scheduled = h.records_of("container.restart_scheduled");
    assert_eq!(scheduled.len(), 3);
    let quarantined = h.records_of("container.quarantined");
    assert_eq!(quarantined.len(), 1);
    assert_eq!(quarantined[0]["details"]["failures"], 4);

    // A quarantined container cannot be started, only released.
    assert!(matches!(
        h.runtime.start(id),
        Err(RuntimeError::IllegalTransition {
            action: "start",
            status: "quarantined",
            ..
        })
    ));
    h.runtime.release(id).unwrap();
    assert_eq!(h.records_of("container.released").len(), 1);
    // Released, it runs again (fresh backoff) and, still crashing, comes back.
    let outcome = h.runtime.wait(id).await.unwrap();
    assert_eq!(outcome.run, 8);
    assert!(matches!(
        h.runtime.status(id).unwrap(),
        ContainerStatus::Quarantined(_)
    ));
    // An operator can stop it for good.
    h.runtime.stop(id).unwrap();
    eventually("quarantined container stops", || {
        h.runtime.status(id).unwrap() == ContainerStatus::Stopped
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_policies_never_on_failure_always() {
    let h = Harness::new(|c| {
        c.backoff(fast_backoff(0));
    });
    // never: one run, even when it fails.
    let mut config = ContainerConfig::new(component(guests::CRASHER));
    config.restart(RestartPolicy::Never);
    let id = h.runtime.launch_container(config, identity()).unwrap();
    assert_eq!(h.runtime.wait(id).await.unwrap().run, 1);
    // on-failure: a success is not restarted.
    let mut config = ContainerConfig::new(component(guests::HELLO));
    config.restart(RestartPolicy::OnFailure);
    let id = h.runtime.launch_container(config, identity()).unwrap();
    let outcome = h.runtime.wait(id).await.unwrap();
    assert_eq!((outcome.run, outcome.end), (1, RunEnd::Success));
    // always: a success is restarted too, until stopped.
    let mut config = ContainerConfig::new(component(guests::HELLO));
    config.restart(RestartPolicy::Always);
    let id = h.runtime.launch_container(config, identity()).unwrap();
    eventually("three runs", || h.runtime.context(id).unwrap().run >= 3).await;
    h.runtime.stop(id).unwrap();
    let outcome = h.runtime.wait(id).await.unwrap();
    assert!(outcome.run >= 3);
    assert_eq!(h.runtime.status(id).unwrap(), ContainerStatus::Stopped);
    // with quarantine disabled (threshold 0), on-failure keeps retrying.
    let mut config = ContainerConfig::new(component(guests::CRASHER));
    config.restart(RestartPolicy::OnFailure);
    let id = h.runtime.launch_container(config, identity()).unwrap();
    eventually("five failed runs", || {
        h.runtime.context(id).unwrap().history.len() >= 5
    })
    .await;
    assert!(!matches!(
        h.runtime.status(id).unwrap(),
        ContainerStatus::Quarantined(_)
    ));
    h.runtime.stop(id).unwrap();
    h.runtime.wait(id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_are_called_with_typed_values_and_limits_per_call() {
    let h = Harness::new(|_| {});
    let mut limits = Limits::default();
    limits.fuel = Some(200_000_000);
    limits.max_memory = 16 * 1024 * 1024;
    let plugin = h
        .runtime
        .load_plugin(&component(guests::TEXT_PLUGIN), identity(), limits)
        .await
        .unwrap();
    assert_eq!(plugin.info().name, "text-plugin");
    assert!(plugin.info().calls.iter().any(|c| c == "word-count"));

    let Ok(Value::Json(json)) = plugin
        .call(
            "word-count",
            Value::Text("the cat and the hat\nthe end".into()),
        )
        .await
        .unwrap()
    else {
        panic!("word-count returns json");
    };
    let json: Json = serde_json::from_str(&json).unwrap();
    assert_eq!(json["words"], 7);
    assert_eq!(json["lines"], 2);
    assert_eq!(json["top"][0], serde_json::json!(["the", 3]));
    assert!(matches!(
        plugin.call("slugify", Value::Text("Hello, World!".into())).await.unwrap(),
        Ok(Value::Text(s)) if s == "hello-world"
    ));
    assert!(matches!(
        plugin.call("sum", Value::Json("[1, 2.5, -0.5]".into())).await.unwrap(),
        Ok(Value::Float(f)) if f == 3.0
    ));
    // The plugin's own errors are values.
    assert!(matches!(
        plugin.call("sum", Value::Json("[1, x]".into())).await.unwrap(),
        Err(CallError::InvalidInput(m)) if m.contains("`x`")
    ));
    assert!(matches!(
        plugin.call("nope", Value::None).await.unwrap(),
        Err(CallError::UnknownCall(n)) if n == "nope"
    ));
    // Limits apply per call, and each call starts fresh.
    let err = plugin.call("burn", Value::Integer(-1)).await.unwrap_err();
    assert!(
        matches!(&err, RuntimeError::PluginFailed { call, failure: Failure::OutOfFuel { budget: 200_000_000 }, .. } if call == "burn"),
        "{err}"
    );
    assert!(matches!(
        plugin.call("burn", Value::Integer(1000)).await.unwrap(),
        Ok(Value::Integer(_))
    ));
    let err = plugin
        .call("allocate", Value::Integer(64))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            RuntimeError::PluginFailed {
                failure: Failure::MemoryLimit { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(matches!(
        plugin.call("allocate", Value::Integer(4)).await.unwrap(),
        Ok(Value::Integer(4))
    ));
    let ctx = h.runtime.runtime_context();
    let p = &ctx.plugins[&plugin.id()];
    assert_eq!((p.calls, p.failures), (9, 2));
    let calls = h.records_of("container.plugin.call");
    assert_eq!(calls.len(), 10, "describe at load + 9 calls");
    assert!(
        calls
            .iter()
            .any(|c| c["details"]["failure"]["reason"] == "out-of-fuel")
    );
    // Plugin records name the plugin and its component, by the caller's
    // identity, like its output records.
    let digest = component(guests::TEXT_PLUGIN).digest().to_hex();
    for record in calls.iter().chain(&h.records_of("container.plugin.loaded")) {
        assert_eq!(record["subjects"]["container"], plugin.id().to_string());
        assert_eq!(record["subjects"]["component"], digest);
        assert_eq!(record["actor"]["principal"], "alice");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiled_cache_hits_and_a_tampered_artifact_is_rebuilt() {
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_owned();
    let run_hello = |h: &Harness| {
        let rt = h.runtime.clone();
        async move {
            let id = rt
                .launch_container(ContainerConfig::new(component(guests::HELLO)), identity())
                .unwrap();
            rt.wait(id).await.unwrap()
        }
    };
    let with_cache = |c: &mut RuntimeConfig| {
        c.cache_dir(&cache_dir);
    };
    // 1. Cold: compiled and written.
    let h1 = Harness::new(with_cache);
    assert!(run_hello(&h1).await.is_success());
    assert!(run_hello(&h1).await.is_success());
    let s = h1.runtime.cache_stats();
    assert_eq!((s.compiled, s.disk_hits, s.memory_hits), (1, 0, 1));
    let artifact = std::fs::read_dir(&cache_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .expect("a compiled artifact was written");
    let key = cache_dir.join("cache.key");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // 2. Warm: loaded from disk after the integrity check.
    let h2 = Harness::new(with_cache);
    assert!(run_hello(&h2).await.is_success());
    let s = h2.runtime.cache_stats();
    assert_eq!((s.compiled, s.disk_hits, s.rejected), (0, 1, 0));

    // 3. Tampered: one byte of code flipped. Refused before deserializing,
    //    rebuilt from the verified bytes, audited.
    let mut bytes = std::fs::read(&artifact).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&artifact, &bytes).unwrap();
    let h3 = Harness::new(with_cache);
    assert!(run_hello(&h3).await.is_success());
    let s = h3.runtime.cache_stats();
    assert_eq!((s.compiled, s.disk_hits, s.rejected), (1, 0, 1));
    let rejected = h3.records_of("container.cache_rejected");
    assert_eq!(rejected.len(), 1);
    assert!(
        rejected[0]["details"]["reason"]
            .as_str()
            .unwrap()
            .contains("MAC mismatch")
    );
    assert_ne!(
        std::fs::read(&artifact).unwrap(),
        bytes,
        "artifact rewritten"
    );

    // 4. A secret readable by others is refused outright.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let log = AuditLog::open(
        h3.dir.path().join("other.jsonl"),
        SigningKey::generate(),
        &AuditConfig::new(),
    )
    .unwrap();
    let mut config = RuntimeConfig::new();
    config.cache_dir(&cache_dir);
    let err = Runtime::new(config, log).unwrap_err();
    assert!(matches!(err, RuntimeError::Cache { .. }), "{err}");
    assert!(err.to_string().contains("0600"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_context_reports_containers_and_policies() {
    let h = Harness::new(|c| {
        c.engine({
            let mut e = EngineConfig::new();
            e.fuel_yield_interval(Some(10_000));
            e
        });
    });
    let mut config = ContainerConfig::new(component(guests::CPU_HOG));
    config.fuel(None).timeout(None).arg("200000");
    let id = h.runtime.launch_container(config, identity()).unwrap();
    let outcome = h.runtime.wait(id).await.unwrap();
    assert!(outcome.is_success(), "{outcome:?}");
    let ctx = h.runtime.runtime_context();
    assert!(ctx.policies.allow_unsigned);
    assert!(!ctx.policies.allow_network);
    let c = &ctx.containers[&id];
    assert!(c.execution_dna.unsigned);
    assert_eq!(c.execution_dna.capabilities.args, ["200000"]);
    assert_eq!(c.resources.fuel_consumed, outcome.stats.fuel_consumed);
    assert_eq!(ctx.resources.active_containers, 0);
    assert_eq!(ctx.resources.fuel_consumed, outcome.stats.fuel_consumed);
    h.runtime.shutdown().await;
    assert!(matches!(
        h.runtime
            .launch_container(ContainerConfig::new(component(guests::HELLO)), identity()),
        Err(RuntimeError::ShuttingDown)
    ));
}
