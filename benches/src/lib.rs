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
