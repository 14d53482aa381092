//! Embeds the ForgeOne runtime in a service and calls a plugin with typed values.
//!
//! Run with `cargo run --example embed_plugin` after building the samples
//! (`cargo build --release --target wasm32-wasip2 --manifest-path samples/Cargo.toml`),
//! or pass the plugin's path: `cargo run --example embed_plugin -- PLUGIN.wasm`.
//!
//! The plugin (`samples/text-plugin`) counts words, makes slugs and sums
//! JSON numbers; each call runs in a fresh instance under its own fuel,
//! memory and time limits, and every call is in the audit log.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use forgeone::SigningKey;
use forgeone::audit::{AuditConfig, AuditLog};
use forgeone::boot::VerifiedComponent;
use forgeone::identity::{IdentityContext, TrustLevel, TrustVector};
use forgeone::runtime::{Limits, Runtime, RuntimeConfig, Value};

/// Obtains the plugin as a `VerifiedComponent`: the one call to switch to
/// `forgeone::boot::verify_component` (signature against the trust anchor)
/// once boot lands. Until then the plugin is loaded unsigned, which the
/// runtime only accepts because `allow_unsigned` is set below (and audits).
fn verified_plugin(path: &Path) -> anyhow::Result<VerifiedComponent> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(VerifiedComponent::unsigned("text-plugin", bytes))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let path = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../samples/target/wasm32-wasip2/release/text_plugin.wasm")
        });
    let plugin_component = verified_plugin(&path).with_context(|| {
        "build the samples first: cargo build --release --target wasm32-wasip2 \
         --manifest-path samples/Cargo.toml"
    })?;

    // The service's audit log (a throwaway one here) and runtime.
    let state = std::env::temp_dir().join(format!("forgeone-embed-{}", std::process::id()));
    std::fs::create_dir_all(&state)?;
    let audit = AuditLog::open(
        state.join("audit.jsonl"),
        SigningKey::generate(),
        &AuditConfig::new(),
    )?;
    let mut config = RuntimeConfig::new();
    config.allow_unsigned(true); // goes away with `boot::verify_component`
    let runtime = Runtime::new(config, audit.clone())?;

    // Limits per call: 100M fuel, 32 MiB, 2 s.
    let mut limits = Limits::default();
    limits.fuel = Some(100_000_000);
    limits.max_memory = 32 * 1024 * 1024;
    limits.timeout = Some(Duration::from_secs(2));
    let identity = IdentityContext::new(
        "acme",
        "docs-service",
        TrustVector::new(TrustLevel::Medium, 1),
    );
    let plugin = runtime
        .load_plugin(&plugin_component, identity, limits)
        .await?;
    let info = plugin.info();
    println!(
        "loaded {} {} (calls: {})",
        info.name,
        info.version,
        info.calls.join(", ")
    );

    let text = "The quick brown fox jumps over the lazy dog.\nThe dog sleeps.";
    let counts = plugin.call("word-count", Value::Text(text.into())).await?;
    println!("word-count -> {counts:?}");
    let slug = plugin
        .call(
            "slugify",
            Value::Text("Release Notes: v0.1 (Draft)!".into()),
        )
        .await?;
    println!("slugify    -> {slug:?}");
    let sum = plugin
        .call("sum", Value::Json("[1.5, 2, 40]".into()))
        .await?;
    println!("sum        -> {sum:?}");
    // The plugin's own error is a typed value, not a failure of the call.
    let bad = plugin.call("sum", Value::Json("[1, two]".into())).await?;
    println!("sum (bad)  -> {bad:?}");
    // A runaway call ends at the fuel limit; the next call starts fresh.
    match plugin.call("burn", Value::Integer(-1)).await {
        Err(e) => println!("burn -1    -> refused by the host: {e}"),
        Ok(v) => anyhow::bail!("a runaway call returned {v:?}"),
    }
    let again = plugin
        .call("slugify", Value::Text("Still Fine".into()))
        .await?;
    println!("slugify    -> {again:?}");

    audit.close()?;
    println!("audit log: {}", state.join("audit.jsonl").display());
    Ok(())
}
