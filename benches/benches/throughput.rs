//! P3: start-to-exit throughput of the `hello` sample on all cores: 256
//! containers launched at once and awaited, versus a bare wasmtime loop
//! doing the same (instantiate from `InstancePre`, run, with stub identity
//! and log imports and output discarded), on the same multi-thread runtime.
//! Both use wasmtime's pooling allocator with copy-on-write memory images
//! (bare wasmtime's best configuration, and what `forgeone up` uses).
//!
//! Builds the samples into `samples/target` on first use. Run with
//! `cargo bench -p forgeone-benches --bench throughput`.

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use forgeone::SigningKey;
use forgeone::audit::{AuditConfig, AuditLog};
use forgeone::boot::VerifiedComponent;
use forgeone::identity::{IdentityContext, TrustLevel, TrustVector};
use forgeone::runtime::{ContainerConfig, EngineConfig, Runtime, RuntimeConfig};
use forgeone_benches::Bare;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi::p2::bindings::CommandPre;

const BATCH: usize = 256;

fn bench(c: &mut Criterion) {
    let wasm = forgeone_benches::sample("hello");
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut group = c.benchmark_group("P3 hello start-to-exit");
    group
        .throughput(Throughput::Elements(BATCH as u64))
        .sample_size(20)
        .measurement_time(Duration::from_secs(10));

    let mut config = Config::new();
    let mut pool = wasmtime::PoolingAllocationConfig::new();
    // Sized as ForgeOne's `pooling(1000, ..)` is: 256 instances at once,
    // each with several core instances.
    pool.total_component_instances(1000)
        .total_core_instances(8000)
        .total_memories(3000)
        .total_tables(2000)
        .max_memory_size(64 << 20);
    config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    let engine = Engine::new(&config).unwrap();
    let component = Component::new(&engine, &wasm).unwrap();
    let mut linker = Linker::<Bare>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
    forgeone_benches::stub_kernel(&mut linker);
    let pre = Arc::new(CommandPre::new(linker.instantiate_pre(&component).unwrap()).unwrap());
    group.bench_function("bare wasmtime (pooling)", |b| {
        b.iter(|| {
            tokio.block_on(async {
                let tasks: Vec<_> = (0..BATCH)
                    .map(|_| {
                        let pre = pre.clone();
                        let engine = engine.clone();
                        tokio::spawn(async move {
                            let mut store = Store::new(
                                &engine,
                                Bare {
                                    wasi: WasiCtx::builder().build(),
                                    table: ResourceTable::new(),
                                },
                            );
                            let command = pre.instantiate_async(&mut store).await.unwrap();
                            command.wasi_cli_run().call_run(&mut store).await.unwrap()
                        })
                    })
                    .collect();
                for task in tasks {
                    task.await.unwrap().unwrap();
                }
            })
        })
    });

    let log = AuditLog::open(
        dir.path().join("audit.jsonl"),
        SigningKey::generate(),
        &AuditConfig::new(),
    )
    .unwrap();
    let mut config = RuntimeConfig::new();
    config
        .allow_unsigned(true)
        .engine(EngineConfig::new().pooling(1000, 64 << 20));
    let runtime = Runtime::new(config, log).unwrap();
    let container = ContainerConfig::new(VerifiedComponent::unsigned("hello", wasm.clone()));
    let identity = IdentityContext::new("bench", "p3", TrustVector::new(TrustLevel::Medium, 0));
    group.bench_function("forgeone containers (pooling)", |b| {
        b.iter(|| {
            tokio.block_on(async {
                let ids: Vec<_> = (0..BATCH)
                    .map(|_| {
                        runtime
                            .launch_container(container.clone(), identity.clone())
                            .unwrap()
                    })
                    .collect();
                for id in ids {
                    assert!(runtime.wait(id).await.unwrap().is_success());
                    runtime.remove(id).unwrap();
                }
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
