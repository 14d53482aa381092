//! P2: container start. Instantiating a trivial `wasi:cli/command` as a
//! ForgeOne container (registry record, fresh `Store`, WASI context with
//! capture, limits, fuel, yields, identity, the `container.created`,
//! `container.started` and `container.exited` audit records, supervision
//! future, removal) versus bare wasmtime instantiating the same component
//! from an `InstancePre` with a minimal WASI context, both running its empty
//! `run`. The ForgeOne side runs the component the way a deployment does:
//! signed by a release key and verified against a trust anchor (once, before
//! the loop, as at boot).
//!
//! Run with `cargo bench -p forgeone-benches --bench container_start`;
//! `scripts/bench-summary` prints each figure's mean and median.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use forgeone::SigningKey;
use forgeone::audit::{AuditConfig, AuditLog};
use forgeone::boot::{ComponentStatement, verify_component};
use forgeone::identity::{IdentityContext, TrustLevel, TrustVector};
use forgeone::runtime::{ContainerConfig, EngineConfig, Runtime, RuntimeConfig};
use forgeone_benches::Bare;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi::p2::bindings::CommandPre;

/// A command whose `run` returns success at once: the cost measured is the
/// start, not the guest.
const TRIVIAL: &str = r#"
(component
  (core module $m (func (export "run") (result i32) (i32.const 0)))
  (core instance $i (instantiate $m))
  (func $run (result (result)) (canon lift (core func $i "run")))
  (instance $run-instance (export "run" (func $run)))
  (export "wasi:cli/run@0.2.12" (instance $run-instance)))
"#;

fn bench(c: &mut Criterion) {
    let wasm = wat::parse_str(TRIVIAL).unwrap();
    let (root, release) = (SigningKey::generate(), SigningKey::generate());
    let anchor = forgeone_benches::anchor(&root, &release);
    let signature = ComponentStatement::new("trivial", "1.0.0", &wasm, None).sign(&[&release]);
    let verified = verify_component(wasm.clone(), &signature, &anchor).unwrap();
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut group = c.benchmark_group("P2 container start");
    group.measurement_time(Duration::from_secs(5));

    // Bare wasmtime: one engine, InstancePre, a fresh store with a minimal
    // WASI context per instance.
    for pooling in [false, true] {
        let mut config = Config::new();
        if pooling {
            let mut pool = wasmtime::PoolingAllocationConfig::new();
            pool.total_component_instances(1000)
                .max_memory_size(64 << 20);
            config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = Engine::new(&config).unwrap();
        let component = Component::new(&engine, &wasm).unwrap();
        let mut linker = Linker::<Bare>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
        let pre = CommandPre::new(linker.instantiate_pre(&component).unwrap()).unwrap();
        let name = if pooling {
            "bare wasmtime (pooling)"
        } else {
            "bare wasmtime"
        };
        group.bench_function(name, |b| {
            b.iter(|| {
                tokio.block_on(async {
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
        });
    }

    // ForgeOne: the full container start, audited, its start durable
    // first: with the pooling allocator (as `forgeone up` runs), with the
    // log on the disk and on tmpfs (the fsync then costs next to nothing,
    // which leaves ForgeOne's own work); on demand with and without the
    // fiber-stack cache, for reference.
    let shm = std::path::Path::new("/dev/shm");
    let tmpfs = shm.is_dir().then(|| tempfile::tempdir_in(shm).unwrap());
    let mut variants = vec![("forgeone container (pooling)", true, 16, dir.path())];
    if let Some(tmpfs) = &tmpfs {
        variants.extend([
            (
                "forgeone container (pooling, log on tmpfs)",
                true,
                16,
                tmpfs.path(),
            ),
            ("forgeone container (log on tmpfs)", false, 16, tmpfs.path()),
            (
                "forgeone container (no stack cache, log on tmpfs)",
                false,
                0,
                tmpfs.path(),
            ),
        ]);
    }
    for (name, pooling, stacks, log_dir) in variants {
        let log = AuditLog::open(
            log_dir.join(format!("audit-{}.jsonl", name.len())),
            SigningKey::generate(),
            &AuditConfig::new(),
        )
        .unwrap();
        let mut engine = EngineConfig::new();
        engine.stack_cache(stacks);
        if pooling {
            engine.pooling(1000, 64 << 20);
        }
        let mut config = RuntimeConfig::new();
        config.engine(engine);
        let runtime = Runtime::new(config, log).unwrap();
        let container = ContainerConfig::new(verified.clone());
        let identity = IdentityContext::new("bench", "p2", TrustVector::new(TrustLevel::Medium, 0));
        group.bench_function(name, |b| {
            b.iter(|| {
                tokio.block_on(async {
                    let prepared = runtime
                        .prepare_container(container.clone(), identity.clone())
                        .unwrap();
                    let id = prepared.id();
                    let outcome = prepared.into_future().await;
                    assert!(outcome.is_success());
                    runtime.remove(id).unwrap();
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
