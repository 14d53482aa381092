//! Metrics: the Prometheus endpoint, scraped with a real HTTP client while
//! containers run, moves as the audit log and the kernel say it should.
//!
//! The endpoint installs the process-wide recorder, so it is started once
//! for this test binary; each test uses workload and plugin names of its
//! own and waits (with a bound) for the values it expects.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use forgeone::audit::{AuditConfig, AuditLog};
use forgeone::boot::VerifiedComponent;
use forgeone::runtime::{
    ContainerConfig, ContainerStatus, Limits, RestartPolicy, Runtime, RuntimeConfig, Value,
};
use forgeone::scheduler::Constraint;
use forgeone::telemetry::{Metrics, serve_prometheus, spawn_sampler};
use forgeone::{IdentityContext, Priority, SigningKey, TrustLevel, TrustVector};

use crate::boot::World;
use crate::guests;
use crate::kernel::{booted, component, kernel, workload};

/// The endpoint of this test binary, started on first use.
fn endpoint() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        // Outside any test's tokio runtime, so the listener gets a thread
        // of its own and outlives the test that started it.
        std::thread::spawn(move || serve_prometheus(addr))
            .join()
            .unwrap()
            .unwrap();
        addr
    })
}

/// The metrics page, fetched over HTTP.
fn scrape() -> String {
    let url = format!("http://{}/metrics", endpoint());
    ureq::get(&url)
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap()
}

/// The value of the sample `name` whose labels include every pair of
/// `labels`, summed over the samples that match.
fn value(page: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in page.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, number)) = line.rsplit_once(' ') else {
            continue;
        };
        let (metric, label_text) = series.split_once('{').unwrap_or((series, ""));
        if metric != name {
            continue;
        }
        if labels
            .iter()
            .all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")))
        {
            *found.get_or_insert(0.0) += number.parse::<f64>().unwrap();
        }
    }
    found
}

/// Scrapes until `check` holds for the page, for up to 30 s.
async fn until(what: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let page = tokio::task::spawn_blocking(scrape).await.unwrap();
        if check(&page) {
            return page;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never showed {what}; last page:\n{page}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn metered_log(world: &World, name: &str) -> AuditLog {
    endpoint();
    let mut config = AuditConfig::new();
    config.observer(Arc::new(Metrics::new()));
    AuditLog::open(world.path(name), SigningKey::generate(), &config).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_follows_containers_as_they_start_run_fail_and_stop() {
    let world = World::new();
    let components = booted(&world);
    let log = metered_log(&world, "metrics-audit.jsonl");
    let kernel = Arc::new(kernel(&world, 10, &log));
    let sampler = spawn_sampler(&kernel, Duration::from_millis(20));
    let hello = component(&components, "hello");
    let crasher = component(&components, "crasher");
    let hog = component(&components, "cpu-hog");

    // A container that runs until it is stopped.
    let mut forever = ContainerConfig::new(hog.clone());
    forever
        .fuel(None)
        .timeout(None)
        .stop_grace(Duration::from_millis(50));
    kernel
        .submit(workload("m-hog", Priority::Background, hog), forever)
        .unwrap();
    kernel
        .submit(
            workload("m-api", Priority::Critical, hello),
            ContainerConfig::new(hello.clone()),
        )
        .unwrap();
    let mut flaky = ContainerConfig::new(crasher.clone());
    flaky.restart(RestartPolicy::OnFailure);
    kernel
        .submit(workload("m-flaky", Priority::Normal, crasher), flaky)
        .unwrap();
    let mut us = workload("m-us-only", Priority::High, hello);
    us.constraint(Constraint::location("us-*"));
    kernel
        .submit(us, ContainerConfig::new(hello.clone()))
        .unwrap();
    let report = kernel.schedule().unwrap();
    assert_eq!(report.launched.len(), 3);
    let hog = report.launched.iter().find(|l| l.name == "m-hog").unwrap();
    let (hog_id, hog_workload) = (hog.container, hog.workload);

    // While the hog runs: one running container, and the others' ends.
    let page = until(
        "m-api's exit, m-flaky's quarantine and a running m-hog",
        |p| {
            value(
                p,
                "forgeone_container_exits_total",
                &[("workload", "m-api")],
            ) == Some(1.0)
                && value(
                    p,
                    "forgeone_container_quarantines_total",
                    &[("workload", "m-flaky")],
                ) == Some(1.0)
                && value(p, "forgeone_containers", &[("status", "running")]) == Some(1.0)
                && value(p, "forgeone_containers", &[("status", "quarantined")]) == Some(1.0)
        },
    )
    .await;
    let m = |name: &str, labels: &[(&str, &str)]| value(&page, name, labels);
    assert_eq!(
        m(
            "forgeone_container_exits_total",
            &[
                ("workload", "m-api"),
                ("tenant", "acme"),
                ("outcome", "exit")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        m("forgeone_container_starts_total", &[("workload", "m-hog")]),
        Some(1.0)
    );
    // Three runs of the crasher: three starts, two restarts, three
    // failures (none of them a clean exit), then quarantine.
    assert_eq!(
        m(
            "forgeone_container_starts_total",
            &[("workload", "m-flaky")]
        ),
        Some(3.0)
    );
    assert_eq!(
        m(
            "forgeone_container_restarts_total",
            &[("workload", "m-flaky")]
        ),
        Some(2.0)
    );
    assert_eq!(
        m("forgeone_container_exits_total", &[("workload", "m-flaky")]),
        Some(3.0)
    );
    assert_eq!(
        m(
            "forgeone_container_exits_total",
            &[("workload", "m-flaky"), ("outcome", "exit")]
        ),
        None
    );
    assert!(
        m(
            "forgeone_fuel_consumed_total",
            &[("workload", "m-api"), ("tenant", "acme")]
        )
        .unwrap()
            > 0.0
    );
    assert!(
        m(
            "forgeone_container_peak_memory_bytes",
            &[("workload", "m-api")]
        )
        .unwrap()
            > 0.0
    );
    // The scheduler: three placed, one not, because of its location.
    assert!(
        m(
            "forgeone_schedule_decisions_total",
            &[("decision", "placed")]
        )
        .unwrap()
            >= 3.0
    );
    assert!(m("forgeone_unschedulable_total", &[("reason", "location")]).unwrap() >= 1.0);
    assert!(m("forgeone_workloads_not_run", &[("why", "unschedulable")]).unwrap() >= 1.0);
    // Start latency and the log's own figures.
    assert!(m("forgeone_container_start_seconds_count", &[]).unwrap() >= 5.0);
    assert!(m("forgeone_audit_append_seconds_count", &[]).unwrap() > 0.0);
    assert!(m("forgeone_audit_records_total", &[("category", "container")]).unwrap() > 0.0);
    assert!(m("forgeone_audit_bytes_total", &[]).unwrap() > 0.0);
    assert_eq!(m("forgeone_audit_writable", &[]), Some(1.0));
    assert!(m("forgeone_audit_backlog_records", &[]).is_some());
    assert!(m("forgeone_executor_workers", &[]).unwrap() >= 1.0);
    // No container id is ever a label value.
    let hog_text = hog_id.to_string();
    assert!(!page.contains(&hog_text), "a container id in a label");

    // Stop the hog: nothing runs any more, and it ended as stopped.
    kernel.stop(hog_workload).unwrap();
    until("m-hog stopped and nothing running", |p| {
        value(
            p,
            "forgeone_container_exits_total",
            &[("workload", "m-hog"), ("outcome", "stopped")],
        ) == Some(1.0)
            && value(p, "forgeone_containers", &[("status", "running")]) == Some(0.0)
    })
    .await;
    assert!(matches!(
        kernel.container(hog_id).unwrap().status,
        ContainerStatus::Stopped
    ));
    sampler.abort();
    kernel.drain("test over", Duration::ZERO).unwrap();
    tokio::time::timeout(Duration::from_secs(30), kernel.wait())
        .await
        .unwrap();
    kernel.shutdown("test over");
    log.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_calls_are_counted_and_timed_by_plugin_call_and_result() {
    let world = World::new();
    let log = metered_log(&world, "metrics-plugin.jsonl");
    let mut config = RuntimeConfig::new();
    config.allow_unsigned(true);
    let runtime = Runtime::new(config, log.clone()).unwrap();
    let name = Path::new(guests::TEXT_PLUGIN).file_stem().unwrap();
    let plugin_component = VerifiedComponent::unsigned(
        name.to_str().unwrap(),
        std::fs::read(guests::TEXT_PLUGIN).unwrap(),
    );
    let mut limits = Limits::default();
    limits.fuel = Some(50_000_000);
    let identity =
        IdentityContext::new("m-tenant", "alice", TrustVector::new(TrustLevel::Medium, 0));
    let plugin = runtime
        .load_plugin(&plugin_component, identity, limits)
        .await
        .unwrap();
    let before = value(
        &scrape(),
        "forgeone_plugin_calls_total",
        &[
            ("plugin", "text_plugin"),
            ("call", "slugify"),
            ("result", "ok"),
        ],
    )
    .unwrap_or(0.0);
    for _ in 0..3 {
        plugin
            .call("slugify", Value::Text("Hello, World!".into()))
            .await
            .unwrap()
            .unwrap();
    }
    // Out of fuel: a failed call, with its reason.
    plugin.call("burn", Value::Integer(-1)).await.unwrap_err();
    let page = until("three ok slugify calls and a failed burn", |p| {
        value(
            p,
            "forgeone_plugin_calls_total",
            &[
                ("plugin", "text_plugin"),
                ("call", "slugify"),
                ("result", "ok"),
            ],
        ) == Some(before + 3.0)
            && value(
                p,
                "forgeone_plugin_calls_total",
                &[("plugin", "text_plugin"), ("call", "burn")],
            )
            .is_some()
    })
    .await;
    let failed = page
        .lines()
        .find(|l| l.starts_with("forgeone_plugin_calls_total") && l.contains("call=\"burn\""))
        .unwrap();
    assert!(failed.contains("result=\"failed:out-of-fuel\""), "{failed}");
    assert!(
        value(
            &page,
            "forgeone_plugin_call_seconds_count",
            &[("plugin", "text_plugin"), ("call", "slugify")]
        )
        .unwrap()
            >= 3.0
    );
    assert!(
        value(
            &page,
            "forgeone_fuel_consumed_total",
            &[("tenant", "m-tenant")]
        )
        .unwrap()
            > 0.0
    );
    runtime.shutdown().await;
    log.close().unwrap();
}
