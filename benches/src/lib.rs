//! Benchmarks live in `benches/`; this library holds what they share.

use std::path::Path;

use forgeone::SigningKey;
use forgeone::boot::{AnchorDocument, Role, TrustAnchor};

/// A trust anchor valid for a year that trusts `root` as its root key and
/// `release` as its release key, self-signed by `root`.
pub fn anchor(root: &SigningKey, release: &SigningKey) -> TrustAnchor {
    let mut doc = AnchorDocument::new(chrono::Utc::now() + chrono::Duration::days(365));
    doc.add_key(Role::Root, root.public())
        .add_key(Role::Release, release.public());
    let mut envelope = doc.envelope();
    envelope.sign(root);
    TrustAnchor::from_bytes(&envelope.to_json()).expect("a freshly signed anchor verifies")
}

/// The sample guest `name` (e.g. `"hello"`), built for `wasm32-wasip2` into
/// `samples/target` first if it is not there yet, so every bench runs on a
/// fresh clone.
///
/// # Panics
///
/// When cargo cannot build the samples or the file cannot be read: a bench
/// without its guest has nothing to measure.
pub fn sample(name: &str) -> Vec<u8> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("benches/ has a parent");
    let target = root.join("samples/target");
    let wasm = target.join(format!("wasm32-wasip2/release/{name}.wasm"));
    if !wasm.exists() {
        eprintln!("building the samples for wasm32-wasip2 (first run only)");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "--manifest-path",
            ])
            .arg(root.join("samples/Cargo.toml"))
            .arg("--target-dir")
            .arg(&target)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_TARGET_DIR")
            .status()
            .expect("run cargo to build the samples");
        assert!(status.success(), "building the samples failed");
    }
    std::fs::read(&wasm).unwrap_or_else(|e| panic!("{}: {e}", wasm.display()))
}

/// The host state of the bare-wasmtime baselines: a WASI context and its
/// resource table, nothing of ForgeOne's.
pub struct Bare {
    /// The guest's WASI context.
    pub wasi: wasmtime_wasi::WasiCtx,
    /// Its resource table.
    pub table: wasmtime::component::ResourceTable,
}

impl std::fmt::Debug for Bare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bare").finish_non_exhaustive()
    }
}

impl wasmtime_wasi::WasiView for Bare {
    fn ctx(&mut self) -> wasmtime_wasi::WasiCtxView<'_> {
        wasmtime_wasi::WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The `p` quantile (0.0 to 1.0) of `sorted`, nearest rank.
///
/// # Panics
///
/// When `sorted` is empty.
pub fn percentile(sorted: &[std::time::Duration], p: f64) -> std::time::Duration {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank]
}

/// Stub `forgeone:kernel` imports for the bare baseline: no configuration,
/// logs dropped, a fixed identity (one copy for every bench).
pub fn stub_kernel(linker: &mut wasmtime::component::Linker<Bare>) {
    let mut config = linker.instance("forgeone:kernel/config@0.1.0").unwrap();
    config
        .func_new("get", |_, _, _, results| {
            results[0] = wasmtime::component::Val::Option(None);
            Ok(())
        })
        .unwrap();
    config
        .func_new("get-all", |_, _, _, results| {
            results[0] = wasmtime::component::Val::List(Vec::new());
            Ok(())
        })
        .unwrap();
    let mut log = linker.instance("forgeone:kernel/log@0.1.0").unwrap();
    log.func_new("write", |_, _, _, _| Ok(())).unwrap();
    let mut identity = linker.instance("forgeone:kernel/identity@0.1.0").unwrap();
    identity
        .func_new("current", |_, _, _, results| {
            results[0] = wasmtime::component::Val::Record(vec![
                (
                    "container-id".into(),
                    wasmtime::component::Val::String("bare".into()),
                ),
                ("workload".into(), wasmtime::component::Val::Option(None)),
                (
                    "tenant".into(),
                    wasmtime::component::Val::String("bench".into()),
                ),
                (
                    "principal".into(),
                    wasmtime::component::Val::String("bench".into()),
                ),
                (
                    "trust".into(),
                    wasmtime::component::Val::Enum("medium".into()),
                ),
                (
                    "component-digest".into(),
                    wasmtime::component::Val::String("-".into()),
                ),
                ("signers".into(), wasmtime::component::Val::List(Vec::new())),
            ]);
            Ok(())
        })
        .unwrap();
}
