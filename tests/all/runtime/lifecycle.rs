//! Lifecycle and supervision: pause, stop, transitions, restart policies,
//! quarantine, snapshots.

use super::*;

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
    let totals = h.runtime.context(id).unwrap().totals;
    assert_eq!((totals.runs, totals.stopped, totals.failures), (1, 1, 0));
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
    assert_eq!((ctx.totals.runs, ctx.totals.successes), (2, 2));
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_restarted_many_times_keeps_a_bounded_history_and_exact_totals() {
    const RUNS: u32 = 40;
    let limit = ContainerContext::HISTORY_LIMIT;
    assert!(RUNS as usize > limit);
    let h = Harness::new(|c| {
        let mut backoff = BackoffConfig::new();
        backoff
            .initial(Duration::from_millis(1))
            .max(Duration::from_millis(1))
            .crash_loop_threshold(RUNS);
        c.backoff(backoff);
    });
    let mut config = ContainerConfig::new(component(guests::CRASHER));
    config.restart(RestartPolicy::OnFailure);
    let id = h.runtime.launch_container(config, identity()).unwrap();
    // Every run fails; the RUNS-th makes a crash loop and settles it.
    let outcome = h.runtime.wait(id).await.unwrap();
    assert_eq!(outcome.run, RUNS);

    let ctx = h.runtime.context(id).unwrap();
    // The history keeps the last `limit` runs, oldest first.
    assert_eq!(ctx.history.len(), limit);
    let runs: Vec<u32> = ctx.history.iter().map(|r| r.run).collect();
    let expected: Vec<u32> = (RUNS - limit as u32 + 1..=RUNS).collect();
    assert_eq!(runs, expected);
    // The totals still count every run, the dropped ones included.
    let totals = ctx.totals;
    assert_eq!(totals.runs, u64::from(RUNS));
    assert_eq!(totals.failures, u64::from(RUNS));
    assert_eq!((totals.successes, totals.stopped), (0, 0));
    assert_eq!(totals.fuel_consumed, ctx.resources.fuel_consumed_total);
    let kept_fuel: u64 = ctx.history.iter().map(|r| r.fuel_consumed).sum();
    assert!(
        totals.fuel_consumed > kept_fuel,
        "the dropped runs' fuel is still counted: {totals:?}, kept {kept_fuel}"
    );
    // The quarantine evidence is bounded the same way.
    let ContainerStatus::Quarantined(q) = ctx.status else {
        panic!("expected quarantine, got {}", ctx.status);
    };
    assert_eq!(q.failures, RUNS);
    assert_eq!(q.restart_history, ctx.history);
    let quarantined = h.records_of("container.quarantined");
    let evidence = quarantined[0]["details"]["restart_history"]
        .as_array()
        .unwrap();
    assert_eq!(evidence.len(), limit);
    assert_eq!(evidence[0]["run"], RUNS - limit as u32 + 1);
    // The audit log, unlike the context, keeps every run.
    assert_eq!(h.records_of("container.failed").len(), RUNS as usize);

    // Stopped for good (no new run) and removed: its last context is as
    // bounded.
    h.runtime.stop(id).unwrap();
    eventually("the quarantined container stops", || {
        h.runtime.status(id).unwrap() == ContainerStatus::Stopped
    })
    .await;
    let ctx = h.runtime.remove(id).unwrap();
    assert_eq!(ctx.totals.runs, u64::from(RUNS));
    assert_eq!(ctx.history.len(), limit);
}
