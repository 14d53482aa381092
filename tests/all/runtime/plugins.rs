//! Plugins: typed calls, limits per call.

use super::*;

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
    assert_eq!(plugin.info().name, "text_plugin");
    // The name it gives itself is the one `forgeone sign` gives it by
    // default: the stem of the file Cargo writes (`text_plugin.wasm`).
    assert_eq!(
        plugin.info().name,
        component(guests::TEXT_PLUGIN).name(),
        "{}",
        guests::TEXT_PLUGIN
    );
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
    // Wall time in microseconds: a call of well under a millisecond is
    // not 0.
    assert!(
        calls
            .iter()
            .all(|c| c["details"]["stats"]["wall_time_us"].as_u64().unwrap() > 0),
        "{calls:#?}"
    );

    // Other limits without a second load: no describe, no loaded record,
    // the same plugin's counters.
    let mut tight = Limits::default();
    tight.fuel = Some(1_000_000);
    let tight = plugin.with_limits(tight);
    let err = tight
        .call("burn", Value::Integer(100_000_000))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            RuntimeError::PluginFailed {
                failure: Failure::OutOfFuel { budget: 1_000_000 },
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(tight.id(), plugin.id());
    assert_eq!(h.records_of("container.plugin.loaded").len(), 1);
    assert_eq!(h.records_of("container.plugin.call").len(), 11);
    let ctx = h.runtime.runtime_context();
    assert_eq!(ctx.plugins[&plugin.id()].failures, 3);
}

/// A harness whose engine pools `instances` component instances.
fn pooled(instances: u32) -> Harness {
    Harness::new(|c| {
        let mut engine = EngineConfig::new();
        engine.pooling(instances, 64 * 1024 * 1024);
        c.engine(engine);
    })
}

fn plugin_calls(h: &Harness) -> Vec<Json> {
    h.records_of("container.plugin.call")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_call_is_audited_and_counted() {
    let h = Harness::new(|_| {});
    // No fuel cap and no deadline: only the caller's own timeout ends it.
    let mut limits = Limits::default();
    limits.fuel = None;
    limits.timeout = None;
    let plugin = h
        .runtime
        .load_plugin(&component(guests::TEXT_PLUGIN), identity(), limits)
        .await
        .unwrap();
    let call = plugin.call("burn", Value::Integer(-1));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), call)
            .await
            .is_err(),
        "burn -1 never returns"
    );
    // The record is written off the dropping thread: wait for it.
    let mut cancelled = Vec::new();
    for _ in 0..500 {
        cancelled = plugin_calls(&h)
            .into_iter()
            .filter(|r| r["details"]["result"] == "cancelled")
            .collect();
        if !cancelled.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(cancelled.len(), 1, "{:#?}", plugin_calls(&h));
    let d = &cancelled[0]["details"];
    assert_eq!(d["call"], "burn");
    // The guest ran: its fuel (as of the last epoch tick) and time are
    // on the record.
    assert!(d["stats"]["fuel_consumed"].as_u64().unwrap() > 0, "{d}");
    let ctx = h.runtime.runtime_context();
    let p = &ctx.plugins[&plugin.id()];
    // The describe at load time is not counted: the plugin is registered
    // after it.
    assert_eq!((p.calls, p.cancelled, p.failures), (1, 1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pool_is_busy_not_a_crash_and_calls_can_queue_for_a_slot() {
    let h = pooled(1);
    let mut limits = Limits::default();
    limits.fuel = None;
    limits.timeout = Some(Duration::from_secs(3));
    let plugin = h
        .runtime
        .load_plugin(&component(guests::TEXT_PLUGIN), identity(), limits)
        .await
        .unwrap();
    // One call holds the only slot until its deadline. (It queues, so a
    // probe below that happens to hold the slot when it starts does not
    // turn it away.)
    let holder = {
        let plugin = plugin.clone().queue(1, Duration::from_secs(10));
        tokio::spawn(async move { plugin.call("burn", Value::Integer(-1)).await })
    };
    let mut busy = None;
    for _ in 0..500 {
        match plugin.call("slugify", Value::Text("A B".into())).await {
            Err(e @ RuntimeError::Busy { .. }) => {
                busy = Some(e);
                break;
            }
            // The holder has not taken its slot yet.
            Ok(_) => tokio::time::sleep(Duration::from_millis(2)).await,
            Err(e) => panic!("{e}"),
        }
    }
    let busy = busy.expect("the second call found the pool full");
    let message = busy.to_string();
    assert!(message.contains("busy"), "{message}");
    assert!(message.contains("maximum concurrent limit"), "{message}");
    // The same while it holds the slot, with a queue that has no room.
    let no_room = plugin.clone().queue(0, Duration::from_secs(10));
    let err = no_room
        .call("slugify", Value::Text("A B".into()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("wait queue is full"), "{err}");
    // With a queue, the call waits for the slot and then runs.
    let queued = plugin.clone().queue(8, Duration::from_secs(20));
    assert!(matches!(
        queued.call("slugify", Value::Text("A B".into())).await.unwrap(),
        Ok(Value::Text(s)) if s == "a-b"
    ));
    let held = holder.await.unwrap().unwrap_err();
    assert!(
        matches!(
            &held,
            RuntimeError::PluginFailed {
                failure: Failure::Deadline { .. },
                ..
            }
        ),
        "{held}"
    );
    // Busy refusals are on the record and counted apart from calls.
    let records = plugin_calls(&h);
    let refused = records
        .iter()
        .filter(|r| r["details"]["result"] == "busy")
        .count();
    assert!(refused >= 2, "{records:#?}");
    let ctx = h.runtime.runtime_context();
    let p = &ctx.plugins[&plugin.id()];
    assert_eq!(p.busy, refused as u64);
    assert_eq!(p.failures, 1, "only the holder's deadline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_after_shutdown_is_refused() {
    let h = Harness::new(|_| {});
    let plugin = h
        .runtime
        .load_plugin(
            &component(guests::TEXT_PLUGIN),
            identity(),
            Limits::default(),
        )
        .await
        .unwrap();
    h.runtime.shutdown().await;
    let err = plugin
        .call("slugify", Value::Text("x".into()))
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::ShuttingDown), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoke_and_call_json_give_one_error_type_and_the_calls_stats() {
    use forgeone::runtime::PluginCallError;
    let h = Harness::new(|_| {});
    let plugin = h
        .runtime
        .load_plugin(
            &component(guests::TEXT_PLUGIN),
            identity(),
            Limits::default(),
        )
        .await
        .unwrap();

    // A value and what it cost, the same figures as its audit record.
    let called = plugin
        .invoke("slugify", Value::Text("Hello, World!".into()))
        .await
        .unwrap();
    assert!(matches!(&called.value, Value::Text(s) if s == "hello-world"));
    assert!(called.stats.fuel_consumed > 0);
    assert!(called.stats.peak_memory > 0);
    assert!(called.stats.wall_time > Duration::ZERO);
    let records = plugin_calls(&h);
    let record = records.last().unwrap();
    assert_eq!(record["details"]["call"], "slugify");
    assert_eq!(
        record["details"]["stats"]["fuel_consumed"],
        called.stats.fuel_consumed
    );
    assert_eq!(
        record["details"]["stats"]["wall_time_us"],
        called.stats.wall_time.as_micros() as u64
    );
    // Compact: the plugin is the record's container subject, and counters
    // that are zero (refusals, output) are left out. Under load each call
    // is one such line (about 550 bytes, the README's figure).
    assert_eq!(record["subjects"]["container"], plugin.id().to_string());
    assert!(record["details"].get("plugin").is_none(), "{record}");
    let stats = record["details"]["stats"].as_object().unwrap();
    assert_eq!(
        stats.keys().map(String::as_str).collect::<Vec<_>>(),
        ["fuel_consumed", "peak_memory", "wall_time_us"],
        "{record}"
    );
    assert!(record.to_string().len() < 600, "{record}");

    // Serde on both ends: the input goes as `json`, and a plain value that
    // comes back is read as JSON too (`sum` returns a float).
    let sum = plugin
        .call_json::<_, f64>("sum", &[1.0, 2.5, -0.5])
        .await
        .unwrap();
    assert_eq!(sum.value, 3.0);

    // The plugin's own error: one error type, with the stats.
    match plugin.invoke("nope", Value::None).await {
        Err(PluginCallError::Plugin {
            error: CallError::UnknownCall(name),
            stats,
            ..
        }) => {
            assert_eq!(name, "nope");
            assert!(stats.fuel_consumed > 0);
        }
        other => panic!("expected the plugin's error, got {other:?}"),
    }
    // `word-count` takes text, not JSON: the plugin says so, as a value.
    assert!(matches!(
        plugin
            .call_json::<_, Json>("word-count", "some words")
            .await,
        Err(PluginCallError::Plugin {
            error: CallError::InvalidInput(_),
            ..
        })
    ));
    // JSON of another shape names the call.
    match plugin.call_json::<_, Vec<u64>>("sum", &[1, 2]).await {
        Err(e @ PluginCallError::Output { .. }) => {
            assert!(e.to_string().contains("call `sum`"), "{e}")
        }
        other => panic!("expected an output error, got {other:?}"),
    }
    // A trap is the runtime's error, in the same type.
    let mut limits = Limits::default();
    limits.fuel = Some(1_000_000);
    let err = plugin
        .with_limits(limits)
        .invoke("burn", Value::Integer(-1))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            PluginCallError::Runtime(RuntimeError::PluginFailed {
                failure: Failure::OutOfFuel { .. },
                ..
            })
        ),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_plugin_that_describes_itself_as_another_is_refused() {
    use crate::boot::World;
    let world = World::new();
    let bytes = std::fs::read(guests::TEXT_PLUGIN).unwrap();
    world.write("text_plugin.wasm", &bytes);
    world.write("impostor.wasm", &bytes);
    let doc = world.manifest_doc(
        1,
        &[
            ("text_plugin", "1.0.0", "text_plugin.wasm"),
            ("impostor", "1.0.0", "impostor.wasm"),
        ],
    );
    let manifest = world.write_manifest(&doc, &[&world.release]);
    let ctx = forgeone::boot::BootBuilder::from_files(world.anchor(), manifest)
        .run()
        .unwrap();
    let signed = |name: &str| {
        ctx.components
            .iter()
            .find(|c| c.name() == name)
            .unwrap()
            .clone()
    };
    let h = Harness::new(|c| {
        c.allow_unsigned(false);
    });

    // Signed as `impostor`, describes itself as `text_plugin`: refused, audited.
    let err = h
        .runtime
        .load_plugin(&signed("impostor"), identity(), Limits::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RuntimeError::PluginNameMismatch { signed, described }
            if signed == "impostor" && described == "text_plugin"),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("describes itself as `text_plugin`")
    );
    let refused = h.records_of("container.plugin.refused");
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["details"]["signed"], "impostor");
    assert_eq!(refused[0]["details"]["described"], "text_plugin");
    assert!(h.records_of("container.plugin.loaded").is_empty());

    // Signed under its own name: loaded.
    let plugin = h
        .runtime
        .load_plugin(&signed("text_plugin"), identity(), Limits::default())
        .await
        .unwrap();
    assert_eq!(plugin.info().name, "text_plugin");
    assert_eq!(h.records_of("container.plugin.loaded").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_reads_the_configuration_it_was_loaded_with() {
    let h = Harness::new(|_| {});
    let c = component(guests::TEXT_PLUGIN);
    let underscored = h
        .runtime
        .plugin(&c, identity())
        .limits(Limits::default())
        .config("separator", "_")
        .config("api-token", "s3cr3t")
        .load()
        .await
        .unwrap();
    assert_eq!(underscored.config()["separator"], "_");
    let slug = |plugin: forgeone::runtime::Plugin| async move {
        match plugin
            .call("slugify", Value::Text("Hello, World!".into()))
            .await
            .unwrap()
        {
            Ok(Value::Text(s)) => s,
            other => panic!("slugify returns text, got {other:?}"),
        }
    };
    assert_eq!(slug(underscored.clone()).await, "hello_world");
    // The same in every call, and through other limits.
    assert_eq!(
        slug(underscored.with_limits(Limits::default())).await,
        "hello_world"
    );
    // Loaded without it, the plugin's default.
    let plain = h
        .runtime
        .load_plugin(&c, identity(), Limits::default())
        .await
        .unwrap();
    assert!(plain.config().is_empty());
    assert_eq!(slug(plain).await, "hello-world");
    // The keys are on the record, the values (secrets, maybe) are not.
    let loaded = h.records_of("container.plugin.loaded");
    assert_eq!(
        loaded[0]["details"]["config_keys"],
        serde_json::json!(["api-token", "separator"])
    );
    assert!(loaded[1]["details"].get("config_keys").is_none());
    assert!(
        !std::fs::read_to_string(&h.log_path)
            .unwrap()
            .contains("s3cr3t")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugins_output_and_panic_message_reach_the_sink_the_service_chose() {
    let h = Harness::new(|_| {});
    let (sink, lines) = collector();
    let mut limits = Limits::default();
    limits.max_memory = 16 * 1024 * 1024;
    let plugin = h
        .runtime
        .plugin(&component(guests::TEXT_PLUGIN), identity())
        .limits(limits)
        .output(sink)
        .load()
        .await
        .unwrap();
    // 64 MiB under a 16 MiB limit: the allocator fails and says so on
    // stderr before the plugin aborts.
    let err = plugin
        .call("allocate", Value::Integer(64))
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::PluginFailed { .. }), "{err:?}");
    let lines = lines.lock().unwrap();
    let panic = lines
        .iter()
        .find(|l| l.stream == Stream::Stderr)
        .unwrap_or_else(|| panic!("no stderr line in {lines:?}"));
    assert!(
        panic.text.contains("memory allocation of"),
        "{}",
        panic.text
    );
    assert_eq!(panic.container, plugin.id());
}

/// Host bindings of the `word_stats` sample's own world.
mod word_stats {
    wasmtime::component::bindgen!({
        path: "../samples/word_stats/wit",
        world: "word-stats",
        exports: { default: async },
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_with_its_own_world_is_called_through_bindgen_metered_and_audited() {
    use word_stats::exports::example::word_stats::stats::Refusal;
    use word_stats::{WordStats, WordStatsPre};
    let h = Harness::new(|_| {});
    let mut limits = Limits::default();
    limits.fuel = Some(50_000_000);
    let plugin = h
        .runtime
        .plugin(&component(guests::WORD_STATS), identity())
        .limits(limits)
        .own_world()
        .load()
        .await
        .unwrap();
    // Its name and version are the ones it was loaded under (no describe).
    assert_eq!(plugin.info().name, "word_stats");
    // The service checks the exports against its world once...
    WordStatsPre::new(plugin.instance_pre().clone()).unwrap();
    // ...and a component that is not of that world fails the check.
    let other = h
        .runtime
        .plugin(&component(guests::TEXT_PLUGIN), identity())
        .own_world()
        .load()
        .await
        .unwrap();
    assert!(WordStatsPre::new(other.instance_pre().clone()).is_err());

    // Typed values in and out: a string and a number in, a record out.
    let called = plugin
        .call_with("count", |store, instance| {
            Box::pin(async move {
                WordStats::new(&mut *store, instance)?
                    .example_word_stats_stats()
                    .call_count(&mut *store, "the cat and the hat\nthe end", 2)
                    .await
            })
        })
        .await
        .unwrap();
    let counts = called.value.unwrap();
    assert_eq!((counts.words, counts.lines), (7, 2));
    assert_eq!(counts.top, [("the".to_string(), 3), ("and".to_string(), 1)]);
    assert!(called.stats.fuel_consumed > 0);
    // The world's own errors are its values.
    let empty = plugin
        .call_with("count", |store, instance| {
            Box::pin(async move {
                WordStats::new(&mut *store, instance)?
                    .example_word_stats_stats()
                    .call_count(&mut *store, " ... ", 3)
                    .await
            })
        })
        .await
        .unwrap();
    assert!(matches!(empty.value, Err(Refusal::Empty)));

    // ForgeOne's limits hold: a runaway call ends at its fuel budget.
    let err = plugin
        .call_with("spin", |store, instance| {
            Box::pin(async move {
                WordStats::new(&mut *store, instance)?
                    .example_word_stats_stats()
                    .call_spin(&mut *store, 0)
                    .await
            })
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            RuntimeError::PluginFailed {
                failure: Failure::OutOfFuel { .. },
                ..
            }
        ),
        "{err:?}"
    );
    // The built-in interface is not there, and says so.
    let err = plugin.call("count", Value::None).await.unwrap_err();
    assert!(err.to_string().contains("call_with"), "{err}");

    // Every call is on the record, with its result and stats.
    let calls: Vec<Json> = plugin_calls(&h)
        .into_iter()
        .filter(|r| r["subjects"]["container"] == plugin.id().to_string())
        .collect();
    let summary: Vec<(&str, &str)> = calls
        .iter()
        .map(|r| {
            (
                r["details"]["call"].as_str().unwrap(),
                r["details"]["result"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [("count", "ok"), ("count", "ok"), ("spin", "failed")],
        "{calls:#?}"
    );
    assert_eq!(
        calls[0]["details"]["stats"]["fuel_consumed"],
        called.stats.fuel_consumed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugins_own_world_is_callable_by_name_with_json() {
    use forgeone::runtime::PluginCallError;
    use serde_json::json;
    let h = Harness::new(|_| {});
    let mut limits = Limits::default();
    limits.fuel = Some(10_000_000);
    let plugin = h
        .runtime
        .plugin(&component(guests::WORD_STATS), identity())
        .limits(limits)
        .own_world()
        .load()
        .await
        .unwrap();
    // Its functions, with their types as WIT spells them.
    assert_eq!(
        plugin.info().calls,
        [
            "example:word-stats/stats@0.1.0#count",
            "example:word-stats/stats@0.1.0#spin"
        ]
    );
    assert!(
        plugin.functions()[0].ends_with(
            "#count(text: string, top: u32) -> result<record { words: u32, lines: u32, top: \
             list<tuple<string, u32>> }, variant { empty, too-long(u64) }>"
        ),
        "{:?}",
        plugin.functions()
    );

    // By position, by parameter name; the short and the full name.
    let by_position = plugin
        .call_dynamic("count", &json!(["the cat and the hat", 1]))
        .await
        .unwrap();
    assert_eq!(
        by_position.value,
        json!({"ok": {"words": 5, "lines": 1, "top": [["the", 2]]}})
    );
    assert!(by_position.stats.fuel_consumed > 0);
    let by_name = plugin
        .call_dynamic(
            "example:word-stats/stats@0.1.0#count",
            &json!({"text": "a b a", "top": 5}),
        )
        .await
        .unwrap();
    assert_eq!(by_name.value["ok"]["top"], json!([["a", 2], ["b", 1]]));
    // A variant case without a payload is its name.
    let empty = plugin
        .call_dynamic("stats#count", &json!({"text": "", "top": 1}))
        .await
        .unwrap();
    assert_eq!(empty.value, json!({"err": "empty"}));
    // One parameter: the value itself.
    let spun = plugin.call_dynamic("spin", &json!(3)).await.unwrap();
    assert!(spun.value.is_u64());

    // Input that does not fit is named, and the plugin does not run.
    for (call, input, says) in [
        ("nope", json!(null), "exports no function `nope`"),
        (
            "count",
            json!(["x"]),
            "takes 2 argument(s), the input has 1",
        ),
        ("count", json!(["x", -1]), "argument `top`: -1 is not a u32"),
        (
            "count",
            json!({"text": "x", "top": 1, "extra": 2}),
            "no argument `extra`",
        ),
        (
            "spin",
            json!("many"),
            "argument `rounds`: \"many\" is not a u64",
        ),
    ] {
        match plugin.call_dynamic(call, &input).await {
            Err(e @ PluginCallError::Arguments { .. }) => {
                assert!(e.to_string().contains(says), "{call} {input}: {e}")
            }
            other => panic!("{call} {input}: expected an argument error, got {other:?}"),
        }
    }
    // Limits hold.
    assert!(matches!(
        plugin.call_dynamic("spin", &json!(0)).await,
        Err(PluginCallError::Runtime(RuntimeError::PluginFailed {
            failure: Failure::OutOfFuel { .. },
            ..
        }))
    ));
    // Audited by the function's full name: 4 that ran + the runaway.
    let calls = plugin_calls(&h);
    assert_eq!(calls.len(), 5, "{calls:#?}");
    assert_eq!(
        calls[0]["details"]["call"],
        "example:word-stats/stats@0.1.0#count"
    );
    assert_eq!(calls[4]["details"]["result"], "failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configs_chain_on_temporaries_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(
        dir.path().join("audit.jsonl"),
        SigningKey::generate(),
        &AuditConfig::new(),
    )
    .unwrap();
    // One style: `&mut self -> &mut Self` setters, and what keeps a config
    // takes the chain as it is.
    let runtime = Runtime::new(
        RuntimeConfig::new()
            .engine(EngineConfig::new().pooling(4, 64 << 20))
            .allow_unsigned(true),
        log,
    )
    .unwrap();
    let plugin = runtime
        .plugin(&component(guests::TEXT_PLUGIN), identity())
        .limits(Limits::new().fuel(Some(1_000_000)).max_memory(16 << 20))
        .config("separator", "+")
        .load()
        .await
        .unwrap();
    assert_eq!(plugin.limits().fuel, Some(1_000_000));
    assert_eq!(plugin.limits().max_memory, 16 << 20);
    let other = plugin.with_limits(Limits::new().timeout(Some(Duration::from_secs(1))));
    assert_eq!(other.limits().timeout, Some(Duration::from_secs(1)));
    let id = runtime
        .launch_container(
            ContainerConfig::new(component(guests::HELLO)).max_memory(32 << 20),
            identity(),
        )
        .unwrap();
    assert!(matches!(
        runtime.wait(id).await.unwrap().end,
        RunEnd::Success
    ));
}
