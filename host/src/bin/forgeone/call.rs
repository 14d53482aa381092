//! `forgeone call`: verify a plugin, load it, make one call, print the
//! value and what the call cost.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use forgeone::deployment::parse_size;
use forgeone::identity::IdentityContext;
use forgeone::runtime::{Called, Limits, PluginCallError, RunStats, Runtime, RuntimeError, Value};

use crate::run::{
    Local, Timeout, failure_exit_code, parse_env, parse_timeout, stopped_before_start,
    verified_component,
};
use crate::signals;
use crate::util::{CmdResult, Failure};

/// Exit codes of `forgeone call`.
pub const CALL_EXIT_CODES: &str = "\
Exit codes of `call`:
  0    the plugin returned a value (printed on stdout)
  1    refused before the call (unverified or unsigned code, not a plugin, a
       plugin that describes itself by another name than it was signed
       under), or the plugin returned its own error (unknown call, invalid
       input, failed: printed on stderr)
  3    could not call: unreadable plugin, bad audit log or key, I/O error,
       the instance pool busy
  124  the --timeout deadline passed
  134  the plugin trapped
  135  the plugin hit the --max-memory limit
  137  the plugin ran out of --fuel";

/// The arguments of `forgeone call`.
#[derive(Debug, clap::Args)]
#[command(after_help = CALL_EXIT_CODES)]
pub struct Args {
    /// The plugin: a component exporting `forgeone:kernel/plugin-api`.
    #[arg(value_name = "PLUGIN.wasm")]
    plugin: PathBuf,
    /// The call to make, e.g. `word-count`. `--list` instead prints the
    /// plugin's name, version and calls.
    #[arg(value_name = "CALL", required_unless_present = "list")]
    call: Option<String>,
    /// The input as JSON: `null` is none, `true`/`false` a boolean, a
    /// whole number an integer, another number a float, a string text,
    /// and an array or object JSON. Default: none.
    #[arg(
        long,
        value_name = "JSON",
        conflicts_with = "text",
        allow_hyphen_values = true
    )]
    input: Option<String>,
    /// The input as text, taken as it is (no JSON quoting).
    #[arg(long, value_name = "TEXT", allow_hyphen_values = true)]
    text: Option<String>,
    /// Print the plugin's name, version and calls, and make no call.
    #[arg(long, conflicts_with_all = ["input", "text"])]
    list: bool,
    /// A configuration value `K=V` for the plugin, which it reads with
    /// `forgeone_guest::config::get` (repeatable). The keys are audited,
    /// the values are not.
    #[arg(long = "config", value_name = "K=V", value_parser = parse_env)]
    configs: Vec<(String, String)>,
    /// Verify the plugin against this trust anchor.
    #[arg(long, value_name = "ANCHOR", conflicts_with = "allow_unsigned")]
    anchor: Option<PathBuf>,
    /// The plugin's detached signature envelope (default:
    /// PLUGIN.wasm.sig.json).
    #[arg(long, value_name = "FILE", requires = "anchor")]
    sig: Option<PathBuf>,
    /// Load the plugin without verifying it. Loud and audited.
    #[arg(long)]
    allow_unsigned: bool,
    /// Fuel budget of the call (about one unit per wasm instruction).
    #[arg(long, value_name = "N", default_value_t = 1_000_000_000)]
    fuel: u64,
    /// Linear memory limit of the call, e.g. `64MiB`.
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = parse_size)]
    max_memory: u64,
    /// Wall-clock deadline of the call, e.g. `5s`, `500ms`; `none` for no
    /// deadline.
    #[arg(long, value_name = "DURATION|none", default_value = "10s", value_parser = parse_timeout)]
    timeout: Timeout,
    /// Who calls it, and where the state and audit log are.
    #[command(flatten)]
    local: Local,
    /// Print the result (value or error) and the stats as one JSON object
    /// on stdout.
    #[arg(long)]
    json: bool,
}

/// The call's input as JSON, from `--input` or `--text` (a string);
/// `null` without either.
fn input(args: &Args) -> Result<serde_json::Value, Failure> {
    if let Some(text) = &args.text {
        return Ok(serde_json::Value::String(text.clone()));
    }
    let Some(json) = &args.input else {
        return Ok(serde_json::Value::Null);
    };
    serde_json::from_str(json).map_err(|e| {
        Failure::usage(format!(
            "--input `{json}` is not JSON ({e}); text goes in quotes (--input '\"some text\"') or \
             with --text"
        ))
    })
}

/// The input as a `plugin-api` value: `null` is none, a boolean, integer,
/// float or string that value, an array or object JSON.
fn plugin_value(input: serde_json::Value) -> Value {
    match input {
        serde_json::Value::Null => Value::None,
        serde_json::Value::Bool(b) => Value::Boolean(b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(s) => Value::Text(s),
        json @ (serde_json::Value::Array(_) | serde_json::Value::Object(_)) => {
            Value::Json(json.to_string())
        }
    }
}

pub fn run(args: Args) -> CmdResult {
    let input = input(&args)?;
    let runtime = signals::Runtime::start(None)?;
    let audit = match args.local.open_audit(&runtime)? {
        Ok(audit) => audit,
        Err(signal) => return Ok(stopped_before_start(signal)),
    };
    let result = verified_component(
        &args.plugin,
        args.anchor.as_deref(),
        args.sig.as_deref(),
        args.allow_unsigned,
        &audit,
    )
    .and_then(|component| {
        let mut config = args.local.runtime_config();
        config.allow_unsigned(args.allow_unsigned);
        let host =
            Runtime::new(config, audit.clone()).map_err(|e| Failure::input(e.to_string()))?;
        let identity = args.local.identity();
        let mut limits = Limits::default();
        limits.fuel = Some(args.fuel);
        limits.max_memory = args.max_memory;
        limits.timeout = args.timeout.0;
        let mut signals = runtime.signals();
        runtime.block_on(async move {
            tokio::select! {
                result = call(&args, &host, &component, identity, limits, input) => result,
                (signal, _) = signals.next() => {
                    eprintln!("forgeone: stopping ({})", signal.name());
                    Ok(ExitCode::from(signal.exit_code()))
                }
            }
        })
    });
    if let Err(e) = audit.close() {
        eprintln!("warning: closing the audit log: {e}");
    }
    result
}

async fn call(
    args: &Args,
    runtime: &Runtime,
    component: &forgeone::boot::VerifiedComponent,
    identity: IdentityContext,
    limits: Limits,
    input: serde_json::Value,
) -> CmdResult {
    let mut loader = runtime.plugin(component, identity);
    loader.limits(limits).configs(args.configs.iter().cloned());
    // A plugin-api plugin, or else a component with its own WIT world,
    // called by function name with JSON.
    let (plugin, own_world) = match loader.load().await {
        Ok(plugin) => (Ok(plugin), false),
        Err(RuntimeError::NotAPlugin { .. }) => (loader.own_world().load().await, true),
        Err(e) => (Err(e), false),
    };
    let plugin = plugin.map_err(|e| match e {
        RuntimeError::UnsignedRefused { .. }
        | RuntimeError::NotAPlugin { .. }
        | RuntimeError::PluginNameMismatch { .. }
        | RuntimeError::TooComplex { .. } => Failure::check(e),
        other => Failure::input(other),
    })?;
    if own_world {
        return call_world(args, &plugin, input).await;
    }
    let info = plugin.info();
    if args.list {
        if args.json {
            println!(
                "{}",
                serde_json::json!({
                    "name": info.name,
                    "version": info.version,
                    "calls": info.calls,
                })
            );
        } else {
            println!("{} {}", info.name, info.version);
            for call in &info.calls {
                println!("  {call}");
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let name = args.call.as_deref().unwrap_or_default();
    let result = plugin.invoke(name, plugin_value(input)).await;
    report(args, &info.name, name, result)
}

/// `call` for a plugin with its own WIT world: `--list` prints its
/// functions with their types; a call takes `--input` as its arguments
/// (JSON: an array, an object by parameter name, or the one argument) and
/// prints its result as JSON.
async fn call_world(
    args: &Args,
    plugin: &forgeone::runtime::Plugin,
    input: serde_json::Value,
) -> CmdResult {
    let name = &plugin.info().name;
    if args.list {
        let functions = plugin.functions();
        if args.json {
            println!(
                "{}",
                serde_json::json!({"name": name, "version": plugin.info().version, "functions": functions})
            );
        } else {
            println!("{name} {} (its own WIT world)", plugin.info().version);
            for function in functions {
                println!("  {function}");
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let function = args.call.as_deref().unwrap_or_default();
    let result = plugin.call_dynamic(function, &input).await;
    let code = match &result {
        Ok(_) => 0,
        Err(PluginCallError::Arguments { .. }) => 2,
        Err(e) => exit_code(e),
    };
    match result {
        Ok(called) if args.json => {
            println!(
                "{}",
                serde_json::json!({"plugin": name, "call": function, "value": called.value, "stats": called.stats})
            );
            Ok(ExitCode::SUCCESS)
        }
        Ok(called) => {
            println!("{}", called.value);
            eprintln!(
                "forgeone: {name} {function} ok · {}",
                stats_line(&called.stats)
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if args.json => {
            println!(
                "{}",
                serde_json::json!({"plugin": name, "call": function, "error": e.to_string()})
            );
            Ok(ExitCode::from(code))
        }
        Err(e) => Err(Failure {
            code,
            message: e.to_string(),
        }),
    }
}

/// The exit code for a call that gave no value (`run`'s codes for traps
/// and limits).
fn exit_code(error: &PluginCallError) -> u8 {
    match error {
        PluginCallError::Plugin { .. } => 1,
        PluginCallError::Runtime(RuntimeError::PluginFailed { failure, .. }) => {
            failure_exit_code(failure)
        }
        _ => 3,
    }
}

/// Prints the value (stdout) and the stats (stderr), or the error.
fn report(
    args: &Args,
    plugin: &str,
    call: &str,
    result: Result<Called, PluginCallError>,
) -> CmdResult {
    let code = match &result {
        Ok(_) => 0,
        Err(e) => exit_code(e),
    };
    if args.json {
        let json = match &result {
            Ok(called) => serde_json::json!({
                "plugin": plugin,
                "call": call,
                "value": value_json(&called.value),
                "stats": called.stats,
            }),
            Err(e) => serde_json::json!({
                "plugin": plugin,
                "call": call,
                "error": e.to_string(),
                "stats": e.stats(),
            }),
        };
        println!("{json}");
        return Ok(ExitCode::from(code));
    }
    match result {
        Ok(called) => {
            print_value(&called.value).map_err(|e| Failure::input(format!("stdout: {e}")))?;
            eprintln!(
                "forgeone: {plugin} {call} ok · {}",
                stats_line(&called.stats)
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            let stats = e.stats().map(|s| format!(" · {}", stats_line(s)));
            Err(Failure {
                code,
                message: format!("{e}{}", stats.unwrap_or_default()),
            })
        }
    }
}

/// The value as a user reads it: text and JSON as they are, numbers and
/// booleans in their usual form, bytes raw, none as nothing.
fn print_value(value: &Value) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match value {
        Value::None => Ok(()),
        Value::Boolean(b) => writeln!(out, "{b}"),
        Value::Integer(i) => writeln!(out, "{i}"),
        Value::Float(f) => writeln!(out, "{f}"),
        Value::Text(t) | Value::Json(t) => writeln!(out, "{t}"),
        Value::Bytes(b) => out.write_all(b),
    }
}

/// The value in `--json` output: its type and its content.
fn value_json(value: &Value) -> serde_json::Value {
    use serde_json::json;
    match value {
        Value::None => json!({"type": "none"}),
        Value::Boolean(b) => json!({"type": "boolean", "value": b}),
        Value::Integer(i) => json!({"type": "integer", "value": i}),
        Value::Float(f) => json!({"type": "float", "value": f}),
        Value::Text(t) => json!({"type": "text", "value": t}),
        // Kept as the plugin's text when it does not parse: the host does
        // not vouch for it.
        Value::Json(t) => match serde_json::from_str::<serde_json::Value>(t) {
            Ok(v) => json!({"type": "json", "value": v}),
            Err(_) => json!({"type": "json", "text": t}),
        },
        Value::Bytes(b) => json!({"type": "bytes", "len": b.len()}),
    }
}

fn stats_line(stats: &RunStats) -> String {
    format!(
        "fuel {} · peak memory {} · wall {} µs",
        stats.fuel_consumed,
        bytesize::ByteSize::b(stats.peak_memory),
        stats.wall_time.as_micros()
    )
}
