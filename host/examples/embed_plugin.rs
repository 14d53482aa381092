//! Embeds the ForgeOne runtime in a service and calls a plugin with typed values.
//!
//! Run with `cargo run --example embed_plugin` after building the samples
//! (`cargo build --release --target wasm32-wasip2 --manifest-path samples/Cargo.toml`),
//! or with your own signed plugin:
//! `cargo run --example embed_plugin -- PLUGIN.wasm ANCHOR.json` (the
//! signature is read from `PLUGIN.wasm.sig.json`).
//!
//! The plugin (`samples/text-plugin`) counts words, makes slugs and sums
//! JSON numbers. It is loaded only after its signature verifies against the
//! trust anchor; each call runs in a fresh instance under its own fuel,
//! memory and time limits, and every call is in the audit log. Without an
//! anchor argument the example plays the release pipeline first: it makes a
//! throwaway development anchor and release key in a temporary directory and
//! signs the plugin with them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use forgeone::SigningKey;
use forgeone::audit::{AuditConfig, AuditLog};
use forgeone::boot::{
    AnchorDocument, ComponentCheck, ComponentStatement, Role, TrustAnchor, VerifiedComponent,
};
use forgeone::identity::{IdentityContext, TrustLevel, TrustVector};
use forgeone::runtime::{Limits, Runtime, RuntimeConfig, Value};

/// The plugin, verified against `anchor` with its detached signature; the
/// outcome is audited. Nothing unverified reaches the runtime.
fn verified_plugin(
    path: &Path,
    anchor: &TrustAnchor,
    audit: &AuditLog,
) -> anyhow::Result<VerifiedComponent> {
    ComponentCheck::new(anchor)
        .expect_name("text-plugin")
        .audit(audit.clone())
        .verify_file(path)
        .with_context(|| format!("verifying {}", path.display()))
}

/// What a release pipeline does, for a self-contained run: a development
/// root and release key, an anchor trusting them, and the plugin's signature
/// in `dir` (temporary; no key outlives the example).
fn sign_for_development(plugin: &Path, dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let root = SigningKey::generate();
    let release = SigningKey::generate();
    let mut document = AnchorDocument::new(chrono::Utc::now() + chrono::Duration::days(1));
    document
        .add_key(Role::Root, root.public())
        .add_key(Role::Release, release.public());
    let mut envelope = document.envelope();
    envelope.sign(&root);
    let anchor_path = dir.join("trust_anchor.json");
    std::fs::write(&anchor_path, envelope.to_json())?;
    let bytes = std::fs::read(plugin).with_context(|| format!("reading {}", plugin.display()))?;
    let copy = dir.join("text_plugin.wasm");
    std::fs::write(&copy, &bytes)?;
    let statement = ComponentStatement::new("text-plugin", "0.1.0", &bytes, None);
    std::fs::write(
        dir.join("text_plugin.wasm.sig.json"),
        statement.sign(&[&release]).to_json(),
    )?;
    Ok((copy, anchor_path))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let plugin_arg = args.next();
    let anchor_arg = args.next();

    // The service's state: a throwaway directory here.
    let state = std::env::temp_dir().join(format!("forgeone-embed-{}", std::process::id()));
    std::fs::create_dir_all(&state)?;
    let (plugin_path, anchor_path) = match (plugin_arg, anchor_arg) {
        (Some(plugin), Some(anchor)) => (plugin, anchor),
        (plugin, None) => {
            let plugin = plugin.unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../samples/target/wasm32-wasip2/release/text_plugin.wasm")
            });
            let signed = sign_for_development(&plugin, &state).with_context(|| {
                "build the samples first: cargo build --release --target wasm32-wasip2 \
                 --manifest-path samples/Cargo.toml"
            })?;
            println!(
                "signed {} with a development anchor in {}",
                plugin.display(),
                state.display()
            );
            signed
        }
        (None, Some(_)) => unreachable!("the anchor is the second argument"),
    };

    let audit = AuditLog::open(
        state.join("audit.jsonl"),
        SigningKey::generate(),
        &AuditConfig::new(),
    )?;
    let anchor = TrustAnchor::from_file(&anchor_path)?;
    let plugin_component = verified_plugin(&plugin_path, &anchor, &audit)?;
    println!(
        "verified {}@{} {} by {}",
        plugin_component.name(),
        plugin_component.version(),
        plugin_component.digest().short(),
        plugin_component
            .signers()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    // Unsigned code stays refused (the default).
    let runtime = Runtime::new(RuntimeConfig::new(), audit.clone())?;

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
