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
