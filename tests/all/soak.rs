//! Soak: 10,000 container start/exit cycles in one kernel. Open descriptors
//! and resident memory stay flat after warm-up, and the audit log of all of
//! it verifies.
//!
//! The cycles run in a child process of this test binary (the same test,
//! `--ignored`, with `FORGEONE_SOAK_CHILD` set), so that the descriptors and
//! memory it measures are its own, not those of the tests running beside it.

use std::time::{Duration, Instant};

use forgeone::audit::{self, AuditConfig, AuditLog, VerifyOptions};
use forgeone::kernel::{Kernel, KernelConfig};
use forgeone::runtime::ContainerConfig;
use forgeone::scheduler::{Capacity, Node, Workload};
use forgeone::{IdentityContext, PolicySet, Priority, SigningKey, TrustVector};

/// Cycles in all.
const CYCLES: usize = 10_000;
/// Cycles before the baseline is taken (caches, pools, allocator arenas).
const WARM_UP: usize = 1_000;
/// Descriptors the process may hold beyond the baseline at the end.
const FD_TOLERANCE: usize = 4;
/// Resident memory the process may have grown beyond the baseline.
const RSS_TOLERANCE: u64 = 32 << 20;

/// A `wasi:cli/command` that exits 0 at once.
const TRIVIAL: &str = r#"
(component
  (core module $m (func (export "run") (result i32) (i32.const 0)))
  (core instance $i (instantiate $m))
  (func $run (result (result)) (canon lift (core func $i "run")))
  (instance $run-instance (export "run" (func $run)))
  (export "wasi:cli/run@0.2.12" (instance $run-instance)))
"#;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

#[test]
fn ten_thousand_start_exit_cycles_stay_flat() {
    if !std::path::Path::new("/proc/self/statm").exists() {
        eprintln!("skipped: needs /proc to measure descriptors and memory");
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "soak::soak_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("FORGEONE_SOAK_CHILD", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "{stdout}\n{stderr}");
    // The figures, for the record.
    for line in stderr.lines().filter(|l| l.starts_with("soak:")) {
        eprintln!("{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by ten_thousand_start_exit_cycles_stay_flat in a process of its own"]
async fn soak_child() {
    assert!(
        std::env::var_os("FORGEONE_SOAK_CHILD").is_some(),
        "run through ten_thousand_start_exit_cycles_stay_flat"
    );
    let dir = tempfile::tempdir().unwrap();
    let host = SigningKey::generate();
    let log_path = dir.path().join("soak.jsonl");
    let log = AuditLog::open(
        &log_path,
        SigningKey::from_pem(&host.to_pem()).unwrap(),
        &AuditConfig::new(),
    )
    .unwrap();
    let cap = Capacity {
        cpu_millis: 2000,
        memory: 1 << 30,
        storage: 0,
        containers: 64,
    };
    // The trivial command is unsigned: what it runs as does not matter to
    // the soak, so the runtime allows it (audited like any unsigned run).
    let mut runtime = forgeone::RuntimeConfig::new();
    runtime.allow_unsigned(true);
    let mut config = KernelConfig::new(Node::new("local", "r", "z", cap), PolicySet::permissive());
    config.workers(2).runtime(runtime);
    let kernel = Kernel::new(config, log.clone()).unwrap();
    let component =
        forgeone::boot::VerifiedComponent::unsigned("trivial", wat::parse_str(TRIVIAL).unwrap());

    let started = Instant::now();
    let mut baseline = None;
    for n in 0..CYCLES {
        if n == WARM_UP {
            baseline = Some((open_fds(), rss_bytes()));
        }
        let identity = IdentityContext::new("soak", "p", TrustVector::default());
        let id = kernel
            .submit(
                Workload::new(format!("c{n}"), Priority::Normal, identity),
                ContainerConfig::new(component.clone()),
            )
            .unwrap();
        let report = kernel.schedule().unwrap();
        assert_eq!(report.launched.len(), 1, "cycle {n}: {:?}", report.refused);
        let outcome = tokio::time::timeout(Duration::from_secs(30), kernel.wait_for(id))
            .await
            .unwrap()
            .unwrap();
        assert!(outcome.is_success(), "cycle {n}: {outcome}");
        kernel.remove(id).unwrap();
    }
    let elapsed = started.elapsed();
    let (fds0, rss0) = baseline.unwrap();
    let (fds1, rss1) = (open_fds(), rss_bytes());
    eprintln!(
        "soak: {CYCLES} cycles in {:.1} s ({:.0}/s); after {WARM_UP} warm-up cycles: \
         descriptors {fds0} -> {fds1}, RSS {:.1} MiB -> {:.1} MiB",
        elapsed.as_secs_f64(),
        CYCLES as f64 / elapsed.as_secs_f64(),
        rss0 as f64 / (1 << 20) as f64,
        rss1 as f64 / (1 << 20) as f64,
    );
    assert!(
        fds1 <= fds0 + FD_TOLERANCE,
        "descriptors grew from {fds0} to {fds1}"
    );
    assert!(
        rss1 <= rss0 + RSS_TOLERANCE,
        "resident memory grew from {rss0} to {rss1} bytes"
    );
    assert!(kernel.workloads().is_empty());
    kernel.shutdown("soak over");
    log.close().unwrap();
    let mut options = VerifyOptions::new();
    options.key(host.public().clone());
    let report = audit::verify_file(&log_path, &options).unwrap();
    eprintln!("soak: audit log verified, {} records", report.records);
    assert!(report.records as usize >= CYCLES * 3);
}
