//! Warm plugin instances (`Plugin::warm`): reused between calls, discarded
//! after any failure, and still limited, audited and counted per call.

use forgeone::runtime::{Plugin, PluginCallError};

use super::*;

const MIB: u64 = 1024 * 1024;

async fn load(h: &Harness, limits: Limits) -> Plugin {
    h.runtime
        .load_plugin(&component(guests::TEXT_PLUGIN), identity(), limits)
        .await
        .unwrap()
}

fn limits(fuel: Option<u64>, max_memory: u64) -> Limits {
    let mut limits = Limits::default();
    limits.fuel = fuel;
    limits.max_memory = max_memory;
    limits
}

/// The peak memory a `slugify` call reports: what its instance holds.
async fn slugify_peak(plugin: &Plugin) -> u64 {
    let called = plugin
        .invoke("slugify", Value::Text("Hello, World!".into()))
        .await
        .unwrap();
    assert!(
        matches!(&called.value, Value::Text(s) if s == "hello-world"),
        "{:?}",
        called.value
    );
    called.stats.peak_memory
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_instance_is_reused_and_discarded_after_a_failure() {
    let h = Harness::new(|_| {});
    let fresh = load(&h, limits(Some(200_000_000), 32 * MIB)).await;
    let plugin = fresh.clone().warm(1);
    assert_eq!(plugin.warm_instances(), 0, "the describe at load is fresh");

    // A fresh instance per call: memory one call grew is gone in the next.
    let called = fresh.invoke("allocate", Value::Integer(8)).await.unwrap();
    assert!(matches!(called.value, Value::Integer(8)));
    let fresh_peak = slugify_peak(&fresh).await;
    assert!(
        fresh_peak < 8 * MIB,
        "fresh instance holds {fresh_peak} bytes"
    );
    assert_eq!(fresh.warm_instances(), 0);

    // Warm: the second call runs in the instance the first one grew (the
    // state that leaks between calls, which the mode gives up).
    let called = plugin.invoke("allocate", Value::Integer(8)).await.unwrap();
    assert!(matches!(called.value, Value::Integer(8)));
    assert_eq!(plugin.warm_instances(), 1);
    let warm_peak = slugify_peak(&plugin).await;
    assert!(
        warm_peak >= 8 * MIB,
        "warm instance holds {warm_peak} bytes"
    );
    assert_eq!(plugin.warm_instances(), 1);

    // The plugin's own error is a normal return: the instance is kept.
    let called = plugin.invoke("nope", Value::None).await;
    assert!(
        matches!(
            &called,
            Err(PluginCallError::Plugin { error: CallError::UnknownCall(n), .. }) if n == "nope"
        ),
        "{called:?}"
    );
    assert_eq!(plugin.warm_instances(), 1);

    // Out of fuel: the fuel limit holds, and the instance is discarded.
    let err = plugin.call("burn", Value::Integer(-1)).await.unwrap_err();
    assert!(
        matches!(
            &err,
            RuntimeError::PluginFailed {
                failure: Failure::OutOfFuel {
                    budget: 200_000_000
                },
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(plugin.warm_instances(), 0);
    let peak = slugify_peak(&plugin).await;
    assert!(peak < 8 * MIB, "after the failure a fresh instance: {peak}");
    assert_eq!(plugin.warm_instances(), 1);

    // The memory limit holds in a warm instance too, and discards it.
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
    assert_eq!(plugin.warm_instances(), 0);

    // Every call is audited and counted, warm or fresh: 2 fresh calls
    // (after the describe at load) and 6 warm ones.
    let ctx = h.runtime.runtime_context();
    let p = &ctx.plugins[&plugin.id()];
    assert_eq!((p.calls, p.failures), (8, 2));
    let calls = h.records_of("container.plugin.call");
    assert_eq!(calls.len(), 9, "describe at load + 8 calls: {calls:#?}");
    let results: Vec<_> = calls
        .iter()
        .map(|c| c["details"]["result"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        results,
        [
            "ok", "ok", "ok", "ok", "ok", "error", "failed", "ok", "failed"
        ],
        "{calls:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_warm_call_gets_its_full_fuel_budget() {
    let h = Harness::new(|_| {});
    let plugin = load(&h, limits(Some(200_000_000), 32 * MIB)).await;
    let n = Value::Integer(200_000);
    let one = plugin.invoke("burn", n.clone()).await.unwrap();
    let cost = one.stats.fuel_consumed;
    assert!(cost > 0);
    // A budget that holds one call and not two: were fuel carried over
    // between warm calls, the second would run out.
    let warm = plugin
        .with_limits(limits(Some(cost + cost / 2), 32 * MIB))
        .warm(1);
    for _ in 0..3 {
        let called = warm.invoke("burn", n.clone()).await.unwrap();
        assert!(called.stats.fuel_consumed <= cost + cost / 2);
        assert_eq!(warm.warm_instances(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_warm_call_discards_its_instance() {
    let h = Harness::new(|_| {});
    // No fuel cap and no deadline: only the caller's own timeout ends it.
    let mut limits = Limits::default();
    limits.fuel = None;
    limits.timeout = None;
    let plugin = load(&h, limits).await.warm(2);
    plugin
        .call("slugify", Value::Text("a b".into()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(plugin.warm_instances(), 1);
    let call = plugin.call("burn", Value::Integer(-1));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), call)
            .await
            .is_err(),
        "burn -1 never returns"
    );
    // The call took the idle instance and was dropped mid-run with it.
    assert_eq!(plugin.warm_instances(), 0);
    eventually("the cancelled call's record", || {
        h.records_of("container.plugin.call")
            .iter()
            .any(|r| r["details"]["result"] == "cancelled")
    })
    .await;
    let ctx = h.runtime.runtime_context();
    let p = &ctx.plugins[&plugin.id()];
    assert_eq!((p.calls, p.cancelled), (2, 1));
}
