//! A service calling a plugin through **its own WIT world** with typed
//! values, bound on the host with `wasmtime::component::bindgen!`, while
//! ForgeOne verifies the component and meters, limits and audits each call.
//!
//! ```text
//! embed_world [WORD_STATS.wasm --anchor ANCHOR.json] [TEXT]
//! ```
//!
//! Without arguments it runs the `word_stats` sample (build the samples
//! first: `cargo build --release --target wasm32-wasip2 --manifest-path
//! samples/Cargo.toml`), signed with a throwaway development anchor. Its
//! world is `samples/word_stats/wit/world.wit`:
//!
//! ```wit
//! interface stats {
//!     record counts { words: u32, lines: u32, top: list<tuple<string, u32>> }
//!     variant refusal { empty, too-long(u64) }
//!     count: func(text: string, top: u32) -> result<counts, refusal>;
//!     spin: func(rounds: u64) -> u64;
//! }
//! world word-stats { export stats; }
//! ```
//!
//! The built-in interface (`call(name, value)`) is in `embed_plugin.rs`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use forgeone::SigningKey;
use forgeone::audit::{AuditConfig, AuditLog};
use forgeone::boot::{ComponentCheck, TrustAnchor};
use forgeone::identity::{IdentityContext, TrustLevel, TrustVector};
use forgeone::runtime::{Limits, Runtime, RuntimeConfig};

#[path = "support/dev_sign.rs"]
mod dev_sign;

// The host side of the plugin's world: typed functions and Rust types for
// its records and variants.
wasmtime::component::bindgen!({
    path: "../samples/word_stats/wit",
    world: "word-stats",
    exports: { default: async },
});

use exports::example::word_stats::stats::{Counts, Refusal};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let mut plugin: Option<PathBuf> = None;
    let mut anchor: Option<PathBuf> = None;
    let mut text = None;
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--anchor") => anchor = Some(args.next().context("--anchor needs a file")?.into()),
            Some("-h" | "--help") => {
                println!("usage: embed_world [WORD_STATS.wasm --anchor ANCHOR.json] [TEXT]");
                return Ok(());
            }
            _ if plugin.is_none() && Path::new(&arg).extension().is_some_and(|e| e == "wasm") => {
                plugin = Some(arg.into())
            }
            _ => text = Some(arg.to_string_lossy().into_owned()),
        }
    }

    let state = std::env::temp_dir().join(format!("forgeone-world-{}", std::process::id()));
    std::fs::create_dir_all(&state)?;
    let (plugin_path, anchor_path) = match (plugin, anchor) {
        (Some(plugin), Some(anchor)) => (plugin, anchor),
        (None, None) => {
            let sample = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../samples/target/wasm32-wasip2/release/word_stats.wasm");
            let signed = dev_sign::sign_for_development(&sample, &state).with_context(|| {
                "build the samples first: cargo build --release --target wasm32-wasip2 \
                 --manifest-path samples/Cargo.toml"
            })?;
            println!("signed {} with a development anchor", sample.display());
            signed
        }
        _ => anyhow::bail!("give both WORD_STATS.wasm and --anchor, or neither"),
    };
    let audit = AuditLog::open(
        state.join("audit.jsonl"),
        SigningKey::generate(),
        &AuditConfig::new(),
    )?;
    // Verified before a byte reaches the compiler; unsigned code is refused.
    let anchor = TrustAnchor::from_file(&anchor_path)?;
    let component = ComponentCheck::new(&anchor)
        .audit(audit.clone())
        .verify_file(&plugin_path)
        .with_context(|| format!("verifying {}", plugin_path.display()))?;
    println!(
        "verified {}@{} {}",
        component.name(),
        component.version(),
        component.digest().short()
    );
    let runtime = Runtime::new(RuntimeConfig::new(), audit.clone())?;
    let identity = IdentityContext::new(
        "acme",
        "docs-service",
        TrustVector::new(TrustLevel::Medium, 1),
    );
    let plugin = runtime
        .plugin(&component, identity)
        .limits(
            Limits::new()
                .fuel(Some(100_000_000))
                .max_memory(32 << 20)
                .timeout(Some(Duration::from_secs(2))),
        )
        .own_world()
        .load()
        .await?;
    // Check once that it exports what the world says.
    WordStatsPre::new(plugin.instance_pre().clone()).map_err(|e| {
        anyhow::anyhow!("the component does not export example:word-stats/stats: {e}")
    })?;

    let text = text.unwrap_or_else(|| {
        "The quick brown fox jumps over the lazy dog.\nThe dog sleeps.".to_string()
    });
    // A string and a number in, a record (or the plugin's own refusal) out.
    let called = plugin
        .call_with("count", |store, instance| {
            Box::pin(async move {
                WordStats::new(&mut *store, instance)?
                    .example_word_stats_stats()
                    .call_count(&mut *store, &text, 3)
                    .await
            })
        })
        .await?;
    match called.value {
        Ok(Counts { words, lines, top }) => {
            println!("count -> {words} words on {lines} lines; most frequent: {top:?}")
        }
        Err(Refusal::Empty) => println!("count -> refused: no words"),
        Err(Refusal::TooLong(n)) => println!("count -> refused: {n} bytes is too long"),
    }
    println!(
        "        {} fuel, {} KiB peak memory, {} µs",
        called.stats.fuel_consumed,
        called.stats.peak_memory / 1024,
        called.stats.wall_time.as_micros()
    );
    // A runaway call ends at the fuel limit, as any plugin call does.
    let runaway = plugin
        .call_with("spin", |store, instance| {
            Box::pin(async move {
                WordStats::new(&mut *store, instance)?
                    .example_word_stats_stats()
                    .call_spin(&mut *store, 0)
                    .await
            })
        })
        .await;
    match runaway {
        Err(e) => println!("spin 0 -> refused by the host: {e}"),
        Ok(v) => anyhow::bail!("a runaway call returned {:?}", v.value),
    }

    audit.close()?;
    println!("audit log: {}", state.join("audit.jsonl").display());
    Ok(())
}
