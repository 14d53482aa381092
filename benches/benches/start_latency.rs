//! P2's distribution: the latency of each of 20,000 container starts (a
//! trivial signed command, start to exit, audited, pooled), as percentiles
//! beside bare wasmtime pooled in the same run, so that stalls (a mean far
//! above the median) show where they are: in the tail, and how far out.
//! The log is on tmpfs (`/dev/shm`) when there is one, and on the disk.
//!
//! Run with `cargo bench -p forgeone-benches --bench start_latency`.

use std::time::{Duration, Instant};

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

const TRIVIAL: &str = r#"
(component
  (core module $m (func (export "run") (result i32) (i32.const 0)))
  (core instance $i (instantiate $m))
  (func $run (result (result)) (canon lift (core func $i "run")))
  (instance $run-instance (export "run" (func $run)))
  (export "wasi:cli/run@0.2.12" (instance $run-instance)))
"#;

const STARTS: usize = 20_000;

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e6;
    let mean = samples.iter().sum::<Duration>().as_secs_f64() * 1e6 / samples.len() as f64;
    println!(
        "{name:<44} mean {mean:>8.2} µs  p50 {:>8.2}  p90 {:>8.2}  p99 {:>8.2}  p99.9 {:>9.2}  max {:>9.2}  mean/p50 {:.2}",
        at(0.5),
        at(0.9),
        at(0.99),
        at(0.999),
        at(1.0),
        mean / at(0.5)
    );
}

fn main() {
    let wasm = wat::parse_str(TRIVIAL).unwrap();
    let (root, release) = (SigningKey::generate(), SigningKey::generate());
    let anchor = forgeone_benches::anchor(&root, &release);
    let signature = ComponentStatement::new("trivial", "1.0.0", &wasm, None).sign(&[&release]);
    let verified = verify_component(wasm.clone(), &signature, &anchor).unwrap();
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("{STARTS} starts each; load average {}", load.trim());

    let mut config = Config::new();
    let mut pool = wasmtime::PoolingAllocationConfig::new();
    pool.total_component_instances(1000)
        .max_memory_size(64 << 20);
    config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    let engine = Engine::new(&config).unwrap();
    let component = Component::new(&engine, &wasm).unwrap();
    let mut linker = Linker::<Bare>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
    let pre = CommandPre::new(linker.instantiate_pre(&component).unwrap()).unwrap();
    let samples = (0..STARTS)
        .map(|_| {
            let started = Instant::now();
            tokio
                .block_on(async {
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
                .unwrap();
            started.elapsed()
        })
        .collect();
    report("bare wasmtime (pooling)", samples);

    let disk = tempfile::tempdir().unwrap();
    let shm = std::path::Path::new("/dev/shm");
    let tmpfs = shm.is_dir().then(|| tempfile::tempdir_in(shm).unwrap());
    let mut dirs = vec![("forgeone (pooling), log on disk", disk.path())];
    if let Some(tmpfs) = &tmpfs {
        dirs.insert(0, ("forgeone (pooling), log on tmpfs", tmpfs.path()));
    }
    for (name, dir) in dirs {
        let log = AuditLog::open(
            dir.join("audit.jsonl"),
            SigningKey::generate(),
            &AuditConfig::new(),
        )
        .unwrap();
        let runtime = Runtime::new(
            RuntimeConfig::new().engine(EngineConfig::new().pooling(1000, 64 << 20)),
            log,
        )
        .unwrap();
        let container = ContainerConfig::new(verified.clone());
        let identity = IdentityContext::new("bench", "p2", TrustVector::new(TrustLevel::Medium, 0));
        let samples = (0..STARTS)
            .map(|_| {
                let started = Instant::now();
                tokio.block_on(async {
                    let prepared = runtime
                        .prepare_container(container.clone(), identity.clone())
                        .unwrap();
                    let id = prepared.id();
                    assert!(prepared.into_future().await.is_success());
                    runtime.remove(id).unwrap();
                });
                started.elapsed()
            })
            .collect();
        report(name, samples);
    }
}
