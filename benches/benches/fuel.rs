//! P4: a CPU-bound guest (`cpu-hog` for 20M iterations) under ForgeOne's
//! fuel metering with preemptive yields at the default interval, versus the
//! same guest on bare wasmtime with no metering, and with fuel alone (no
//! yields). Then the fuel rate of this machine: fuel consumed per second
//! of wall time, under ForgeOne and under bare wasmtime with fuel (what a
//! `--fuel` budget is worth in seconds).
//!
//! Builds the samples into `samples/target` on first use. Run with
//! `cargo bench -p forgeone-benches --bench fuel`.

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use forgeone::SigningKey;
use forgeone::audit::{AuditConfig, AuditLog};
use forgeone::boot::VerifiedComponent;
use forgeone::identity::{IdentityContext, TrustLevel, TrustVector};
use forgeone::runtime::{ContainerConfig, Runtime, RuntimeConfig};
use forgeone_benches::Bare;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi::p2::bindings::CommandPre;

const ITERATIONS: &str = "20000000";

fn bench(c: &mut Criterion) {
    let wasm = forgeone_benches::sample("cpu-hog");
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut group = c.benchmark_group("P4 cpu-bound guest");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));

    let mut bare_fuel = None;
    for fuel in [false, true] {
        let mut config = Config::new();
        config.consume_fuel(fuel);
        let engine = Engine::new(&config).unwrap();
        let component = Component::new(&engine, &wasm).unwrap();
        let mut linker = Linker::<Bare>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
        forgeone_benches::stub_kernel(&mut linker);
        let pre = CommandPre::new(linker.instantiate_pre(&component).unwrap()).unwrap();
        if fuel {
            bare_fuel = Some((engine.clone(), pre.clone()));
        }
        let name = if fuel {
            "bare wasmtime, fuel only"
        } else {
            "bare wasmtime, no metering"
        };
        group.bench_function(name, |b| {
            b.iter(|| {
                tokio.block_on(async {
                    let mut store = Store::new(
                        &engine,
                        Bare {
                            wasi: WasiCtx::builder().args(&["cpu-hog", ITERATIONS]).build(),
                            table: ResourceTable::new(),
                        },
                    );
                    if fuel {
                        store.set_fuel(u64::MAX).unwrap();
                    }
                    let command = pre.instantiate_async(&mut store).await.unwrap();
                    command
                        .wasi_cli_run()
                        .call_run(&mut store)
                        .await
                        .unwrap()
                        .unwrap()
                })
            })
        });
    }

    let log = AuditLog::open(
        dir.path().join("audit.jsonl"),
        SigningKey::generate(),
        &AuditConfig::new(),
    )
    .unwrap();
    let mut config = RuntimeConfig::new();
    config.allow_unsigned(true);
    let runtime = Runtime::new(config, log).unwrap();
    let mut container = ContainerConfig::new(VerifiedComponent::unsigned("cpu-hog", wasm.clone()));
    container.fuel(None).timeout(None).arg(ITERATIONS);
    let identity = IdentityContext::new("bench", "p4", TrustVector::new(TrustLevel::Medium, 0));
    group.bench_function("forgeone: fuel + yields + epochs", |b| {
        b.iter(|| {
            tokio.block_on(async {
                let prepared = runtime
                    .prepare_container(container.clone(), identity.clone())
                    .unwrap();
                let id = prepared.id();
                assert!(prepared.into_future().await.is_success());
                runtime.remove(id).unwrap();
            })
        })
    });
    group.finish();

    // The fuel rate, both ways, in the same run.
    const RUNS: u32 = 5;
    let (mut fuel, mut wall) = (0u64, Duration::ZERO);
    for _ in 0..RUNS {
        let prepared = runtime
            .prepare_container(container.clone(), identity.clone())
            .unwrap();
        let id = prepared.id();
        let outcome = tokio.block_on(prepared.into_future());
        assert!(outcome.is_success());
        fuel += outcome.stats.fuel_consumed;
        wall += outcome.stats.wall_time;
        runtime.remove(id).unwrap();
    }
    let forgeone = fuel as f64 / wall.as_secs_f64();
    let (engine, pre) = bare_fuel.unwrap();
    let (mut fuel, mut wall) = (0u64, Duration::ZERO);
    for _ in 0..RUNS {
        let mut store = Store::new(
            &engine,
            Bare {
                wasi: WasiCtx::builder().args(&["cpu-hog", ITERATIONS]).build(),
                table: ResourceTable::new(),
            },
        );
        store.set_fuel(u64::MAX).unwrap();
        let started = Instant::now();
        tokio.block_on(async {
            let command = pre.instantiate_async(&mut store).await.unwrap();
            command
                .wasi_cli_run()
                .call_run(&mut store)
                .await
                .unwrap()
                .unwrap()
        });
        wall += started.elapsed();
        fuel += u64::MAX - store.get_fuel().unwrap();
    }
    let bare = fuel as f64 / wall.as_secs_f64();
    println!(
        "fuel rate (cpu-hog, {ITERATIONS} iterations, {RUNS} runs): forgeone {forgeone:.3e} fuel/s \
         (1e10 fuel = {:.2} s); bare wasmtime, fuel only {bare:.3e} fuel/s (1e10 fuel = {:.2} s)",
        1e10 / forgeone,
        1e10 / bare
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
