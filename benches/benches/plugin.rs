//! P9: a plugin call with trivial input (`slugify` of "Hello, World!" in
//! the `text_plugin` sample), each beside its baseline in the same run:
//!
//! - the same function compiled natively into the host (the peer a plugin
//!   competes with);
//! - bare wasmtime with the pooling allocator and copy-on-write memory
//!   images, a fresh instance per call (stub `forgeone:kernel` imports, no
//!   fuel, no audit), and the same reusing one instance;
//! - ForgeOne, a fresh instance per call, pooled and on demand: admission,
//!   a store with fuel, limits, a deadline and captured output, the call,
//!   its `container.plugin.call` record and its count;
//! - ForgeOne with warm instances (`Plugin::warm`), audited and counted the
//!   same way.
//!
//! Builds the samples into `samples/target` on first use. Run with
//! `cargo bench -p forgeone-benches --bench plugin`.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use forgeone::SigningKey;
use forgeone::audit::{AuditConfig, AuditLog};
use forgeone::boot::VerifiedComponent;
use forgeone::identity::{IdentityContext, TrustLevel, TrustVector};
use forgeone::runtime::{EngineConfig, Limits, Plugin, Runtime, RuntimeConfig, Value};
use forgeone_benches::Bare;
use wasmtime::component::{Component, Func, InstancePre, Linker, ResourceTable, Val};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::WasiCtx;

const INPUT: &str = "Hello, World!";

/// The sample's `slugify`, compiled into the host.
fn slugify(text: &str, separator: &str) -> String {
    let mut slug = String::new();
    for c in text.chars() {
        if c.is_alphanumeric() {
            slug.extend(c.to_lowercase());
        } else if !slug.is_empty() && !slug.ends_with(separator) {
            slug.push_str(separator);
        }
    }
    slug.trim_end_matches(separator).to_string()
}

/// The plugin-api `call` export of an instance.
fn call_export(store: &mut Store<Bare>, instance: &wasmtime::component::Instance) -> Func {
    let api = instance
        .get_export_index(&mut *store, None, "forgeone:kernel/plugin-api@0.1.0")
        .unwrap();
    let call = instance
        .get_export_index(&mut *store, Some(&api), "call")
        .unwrap();
    instance.get_func(&mut *store, call).unwrap()
}

async fn bare_call(store: &mut Store<Bare>, func: Func) {
    let args = [
        Val::String("slugify".into()),
        Val::Variant("text".into(), Some(Box::new(Val::String(INPUT.into())))),
    ];
    let mut results = [Val::Bool(false)];
    func.call_async(&mut *store, &args, &mut results)
        .await
        .unwrap();
    assert!(matches!(&results[0], Val::Result(Ok(Some(_)))));
}

fn bare_store(engine: &Engine) -> Store<Bare> {
    Store::new(
        engine,
        Bare {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
        },
    )
}

async fn forgeone_runtime(dir: &std::path::Path, pooling: bool) -> Runtime {
    let log = AuditLog::open(
        dir.join(format!("audit-{pooling}.jsonl")),
        SigningKey::generate(),
        &AuditConfig::new(),
    )
    .unwrap();
    let mut config = RuntimeConfig::new();
    config.allow_unsigned(true);
    if pooling {
        config.engine(EngineConfig::new().pooling(1000, 64 << 20));
    }
    Runtime::new(config, log).unwrap()
}

async fn forgeone_call(plugin: &Plugin) {
    let called = plugin.call("slugify", Value::Text(INPUT.into())).await;
    assert!(matches!(called, Ok(Ok(Value::Text(_)))));
}

fn bench(c: &mut Criterion) {
    let wasm = forgeone_benches::sample("text_plugin");
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut group = c.benchmark_group("P9 plugin call");
    group.measurement_time(Duration::from_secs(5));

    group.bench_function("native", |b| {
        b.iter(|| slugify(std::hint::black_box(INPUT), "-"))
    });

    // Bare wasmtime, pooled with copy-on-write images.
    let mut config = Config::new();
    let mut pool = wasmtime::PoolingAllocationConfig::new();
    pool.total_component_instances(1000)
        .max_memory_size(64 << 20);
    config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    let engine = Engine::new(&config).unwrap();
    let component = Component::new(&engine, &wasm).unwrap();
    let mut linker = Linker::<Bare>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
    forgeone_benches::stub_kernel(&mut linker);
    let pre: InstancePre<Bare> = linker.instantiate_pre(&component).unwrap();
    group.bench_function("bare wasmtime (pooling), fresh instance", |b| {
        b.iter(|| {
            tokio.block_on(async {
                let mut store = bare_store(&engine);
                let instance = pre.instantiate_async(&mut store).await.unwrap();
                let func = call_export(&mut store, &instance);
                bare_call(&mut store, func).await;
            })
        })
    });
    let (mut store, func) = tokio.block_on(async {
        let mut store = bare_store(&engine);
        let instance = pre.instantiate_async(&mut store).await.unwrap();
        let func = call_export(&mut store, &instance);
        (store, func)
    });
    group.bench_function("bare wasmtime (pooling), reused instance", |b| {
        b.iter(|| tokio.block_on(bare_call(&mut store, func)))
    });
    drop(store);

    let identity = IdentityContext::new("bench", "p9", TrustVector::new(TrustLevel::Medium, 0));
    let component = VerifiedComponent::unsigned("text_plugin", wasm.clone());
    for pooling in [false, true] {
        let runtime = tokio.block_on(forgeone_runtime(dir.path(), pooling));
        let plugin = tokio
            .block_on(runtime.load_plugin(&component, identity.clone(), Limits::default()))
            .unwrap();
        let name = if pooling {
            "forgeone (pooling), fresh instance"
        } else {
            "forgeone (on demand), fresh instance"
        };
        group.bench_function(name, |b| b.iter(|| tokio.block_on(forgeone_call(&plugin))));
        if pooling {
            let warm = plugin.clone().warm(1);
            group.bench_function("forgeone (pooling), warm instance", |b| {
                b.iter(|| tokio.block_on(forgeone_call(&warm)))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
