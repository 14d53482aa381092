//! The compiled cache: a warm start (cache hit) from a zstd-compressed
//! artifact, the default, against the same artifact stored uncompressed,
//! both through ForgeOne's cache (read, MAC check, decompress or not,
//! deserialize, link); and bare wasmtime's `Component::deserialize_file`
//! of the same uncompressed artifact (mapped, not read, no MAC, no link). Each iteration
//! starts a fresh `Runtime`, outside the measured time, so the component
//! comes from disk, not from memory. The artifact sizes are printed.
//!
//! The component is the largest sample command (`fs-probe`), or the one named by
//! `FORGEONE_BENCH_COMPONENT` (the README's figures use CPython, made by
//! `scripts/python-demo`).
//!
//! Run with `cargo bench -p forgeone-benches --bench cache`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use forgeone::SigningKey;
use forgeone::audit::{AuditConfig, AuditLog};
use forgeone::boot::VerifiedComponent;
use forgeone::identity::{IdentityContext, TrustLevel, TrustVector};
use forgeone::runtime::{Compression, ContainerConfig, EngineConfig, Runtime, RuntimeConfig};

fn component() -> (String, Vec<u8>) {
    match std::env::var_os("FORGEONE_BENCH_COMPONENT") {
        Some(path) => {
            let path = PathBuf::from(path);
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        }
        None => ("fs-probe".into(), forgeone_benches::sample("fs-probe")),
    }
}

/// Numbers each runtime's audit log.
static LOGS: AtomicU64 = AtomicU64::new(0);

/// A runtime over `cache` that writes with `compression`.
fn runtime(dir: &Path, cache: &Path, compression: Compression) -> Runtime {
    let log = AuditLog::open(
        dir.join(format!(
            "audit-{}.jsonl",
            LOGS.fetch_add(1, Ordering::Relaxed)
        )),
        SigningKey::generate(),
        &AuditConfig::new(),
    )
    .unwrap();
    let mut config = RuntimeConfig::new();
    let mut engine = EngineConfig::new();
    // The structural limits are for untrusted uploads; CPython is over the
    // default code size.
    engine.max_code_size(256 << 20).max_functions(1_000_000);
    config
        .engine(engine)
        .allow_unsigned(true)
        .cache_dir(cache)
        .cache_compression(compression);
    Runtime::new(config, log).unwrap()
}

/// Loads `component` through `runtime`'s cache.
fn load(runtime: &Runtime, component: &VerifiedComponent) {
    let identity = IdentityContext::new("bench", "bench", TrustVector::new(TrustLevel::Low, 0));
    let mut config = ContainerConfig::new(component.clone());
    config.timeout(None);
    drop(runtime.prepare_container(config, identity).unwrap());
}

fn artifact(cache: &Path) -> PathBuf {
    std::fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .unwrap()
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let (name, bytes) = component();
    let component = VerifiedComponent::unsigned(&name, bytes);
    let mut group = c.benchmark_group(format!("cache_hit/{name}"));
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    let mut sizes = Vec::new();
    for (label, compression) in [
        ("zstd", Compression::Zstd),
        ("uncompressed", Compression::None),
    ] {
        let cache = dir.path().join(label);
        // Cold: compiled and written once.
        let rt = runtime(dir.path(), &cache, compression);
        let compiled = std::time::Instant::now();
        load(&rt, &component);
        let compile = compiled.elapsed();
        assert_eq!(rt.cache_stats().compiled, 1);
        drop(rt);
        let size = std::fs::metadata(artifact(&cache)).unwrap().len();
        sizes.push(format!(
            "{label}: {size} bytes (compiled and written in {compile:?})"
        ));
        group.bench_function(format!("forgeone_{label}"), |b| {
            b.iter_batched(
                || runtime(dir.path(), &cache, compression),
                |rt| {
                    load(&rt, &component);
                    assert_eq!(rt.cache_stats().disk_hits, 1);
                    rt
                },
                BatchSize::PerIteration,
            )
        });
    }

    // Bare wasmtime: the same uncompressed artifact (the cache file less
    // its `FO1CWASM || MAC` header), mapped from its file by an engine
    // configured as ours is.
    let mut config = wasmtime::Config::new();
    config
        .wasm_component_model(true)
        .consume_fuel(true)
        .epoch_interruption(true)
        .memory_init_cow(true)
        .max_wasm_stack(512 * 1024)
        .async_stack_size(512 * 1024 + 1024 * 1024)
        .wasm_exceptions(true)
        .wasm_gc(false)
        .collector(wasmtime::Collector::DeferredReferenceCounting);
    let engine = wasmtime::Engine::new(&config).unwrap();
    let raw = std::fs::read(artifact(&dir.path().join("uncompressed"))).unwrap();
    assert_eq!(&raw[..8], b"FO1CWASM");
    let bare = dir.path().join("bare.cwasm");
    std::fs::write(&bare, &raw[40..]).unwrap();
    group.bench_function("bare_wasmtime_deserialize_file", |b| {
        b.iter(|| {
            // SAFETY: written just above by `serialize` of this engine.
            unsafe { wasmtime::component::Component::deserialize_file(&engine, &bare) }.unwrap()
        })
    });
    group.finish();
    eprintln!("artifacts of {name}:\n  {}", sizes.join("\n  "));
}

criterion_group!(benches, bench);
criterion_main!(benches);
