//! Faults: each one handled precisely, the other containers unaffected.

use super::*;

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
    // Compiled first (a compile counts against the deadline too), so that
    // the whole deadline is the loop's.
    let mut warm = ContainerConfig::new(component(guests::CPU_HOG));
    warm.fuel(Some(1_000));
    let id = h.runtime.launch_container(warm, identity()).unwrap();
    h.runtime.wait(id).await.unwrap();
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

/// The error and its chain of sources, outermost first.
fn sources(error: &dyn std::error::Error) -> Vec<String> {
    let mut chain = Vec::new();
    let mut source = error.source();
    while let Some(e) = source {
        chain.push(e.to_string());
        source = e.source();
    }
    chain
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_keep_their_source_and_name_it() {
    let h = Harness::new(|_| {});
    // Not a component: the compiler's error is the source.
    let junk = VerifiedComponent::unsigned("junk", b"\0asm\x0d\0\x01\0junk".to_vec());
    let err = h
        .runtime
        .launch_container(ContainerConfig::new(junk), identity())
        .unwrap_err();
    assert!(
        matches!(&err, RuntimeError::Compile { name, .. } if name == "junk"),
        "{err}"
    );
    let chain = sources(&err);
    assert!(!chain.is_empty(), "{err:?}");
    let message = err.to_string();
    assert!(message.starts_with("component `junk` ("), "{message}");
    assert!(
        message.ends_with(&format!("does not compile: {}", chain.join(": "))),
        "{message} / {chain:?}"
    );

    // A plugin is not a command: the export type check is the source.
    let err = h
        .runtime
        .launch_container(
            ContainerConfig::new(component(guests::TEXT_PLUGIN)),
            identity(),
        )
        .unwrap_err();
    assert!(matches!(&err, RuntimeError::NotACommand { .. }), "{err}");
    let chain = sources(&err);
    assert!(!chain.is_empty(), "{err:?}");
    assert!(err.to_string().contains(&chain[0]), "{err}");

    // A command is not a plugin: likewise.
    let err = h
        .runtime
        .load_plugin(&component(guests::HELLO), identity(), Limits::default())
        .await
        .unwrap_err();
    assert!(matches!(&err, RuntimeError::NotAPlugin { .. }), "{err}");
    let chain = sources(&err);
    assert!(!chain.is_empty(), "{err:?}");
    assert!(err.to_string().contains(&chain[0]), "{err}");
}
