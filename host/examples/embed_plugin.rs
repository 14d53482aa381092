//! Embeds the ForgeOne runtime in a service and calls a signed plugin with
//! typed values.
//!
//! ```text
//! embed_plugin [PLUGIN.wasm] [--anchor ANCHOR.json] [--call NAME [--input VALUE]]...
//! ```
//!
//! - With no argument it runs the sample (`samples/text_plugin`, build the
//!   samples first: `cargo build --release --target wasm32-wasip2
//!   --manifest-path samples/Cargo.toml`) and shows its calls, its own
//!   errors as typed values, and a runaway call ended by the fuel limit.
//! - With `PLUGIN.wasm` it works for any plugin: it verifies it (the
//!   signature is read from `PLUGIN.wasm.sig.json`) against `--anchor`, or,
//!   without one, signs it first with a throwaway development anchor under
//!   the name its `describe()` will be checked against (the file stem, as
//!   `forgeone sign` names it); then it lists the plugin's calls and makes
//!   each `--call`. A `--input` that parses as JSON is passed as a number
//!   (integer or float) or as JSON text; anything else as text.
//!
//! Each call runs in a fresh instance under its own fuel, memory and time
//! limits, and every call is in the audit log. Nothing unverified reaches
//! the runtime.

use std::path::{Path, PathBuf};
use std::time::Duration;

#[path = "support/dev_sign.rs"]
mod dev_sign;
use dev_sign::sign_for_development;

use anyhow::Context as _;
use forgeone::SigningKey;
use forgeone::audit::{AuditConfig, AuditLog};
use forgeone::boot::{ComponentCheck, TrustAnchor, VerifiedComponent};
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
        .audit(audit.clone())
        .verify_file(path)
        .with_context(|| format!("verifying {}", path.display()))
}

/// What the command line asked for.
#[derive(Default)]
struct Args {
    plugin: Option<PathBuf>,
    anchor: Option<PathBuf>,
    calls: Vec<(String, Value)>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args::default();
    let mut it = std::env::args_os().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .with_context(|| format!("{flag} needs a value"))
                .map(PathBuf::from)
        };
        match arg.to_str() {
            Some("--anchor") => args.anchor = Some(value("--anchor")?),
            Some("--call") => {
                let name = value("--call")?.to_string_lossy().into_owned();
                args.calls.push((name, Value::None));
            }
            Some("--input") => {
                let input = value("--input")?.to_string_lossy().into_owned();
                let last = args
                    .calls
                    .last_mut()
                    .context("--input goes after the --call it is for")?;
                last.1 = input_value(input);
            }
            Some("-h" | "--help") => {
                println!(
                    "usage: embed_plugin [PLUGIN.wasm] [--anchor ANCHOR.json] [--call NAME [--input VALUE]]..."
                );
                std::process::exit(0);
            }
            Some(flag) if flag.starts_with('-') => anyhow::bail!("unknown option {flag}"),
            _ if args.plugin.is_none() => args.plugin = Some(PathBuf::from(arg)),
            _ => anyhow::bail!("one plugin at a time: {}", Path::new(&arg).display()),
        }
    }
    Ok(args)
}

/// A command-line input as a plugin value: a JSON number as an integer or
/// a float, other JSON as JSON text, anything else as text.
fn input_value(input: String) -> Value {
    match serde_json::from_str::<serde_json::Value>(&input) {
        Ok(serde_json::Value::Number(n)) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Ok(_) => Value::Json(input),
        Err(_) => Value::Text(input),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let sample = args.plugin.is_none();

    // The service's state: a throwaway directory here.
    let state = std::env::temp_dir().join(format!("forgeone-embed-{}", std::process::id()));
    std::fs::create_dir_all(&state)?;
    let (plugin_path, anchor_path) = match (args.plugin, args.anchor) {
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
        (None, Some(_)) => anyhow::bail!("--anchor needs a PLUGIN.wasm to verify"),
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

    if sample {
        text_plugin_tour(&plugin).await?;
    }
    for (name, input) in args.calls {
        // `Ok(Err(..))` is the plugin's own error, a typed value; `Err` is
        // a trap, a limit, a busy pool or a refusal by the host.
        match plugin.call(&name, input).await {
            Ok(value) => println!("{name} -> {value:?}"),
            Err(e) => println!("{name} -> refused by the host: {e}"),
        }
    }

    audit.close()?;
    println!("audit log: {}", state.join("audit.jsonl").display());
    Ok(())
}

/// The sample's calls: real work, its own errors as values, and a runaway
/// call ended by the fuel limit (the next call starts fresh).
async fn text_plugin_tour(plugin: &forgeone::runtime::Plugin) -> anyhow::Result<()> {
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

    Ok(())
}
