//! `text_plugin`: a ForgeOne plugin doing real text work.
//!
//! Its name has an underscore because Cargo writes a library as
//! `text_plugin.wasm` (hyphens are not allowed in library file names), and
//! `forgeone sign` names a component by its file stem: the signed name, the
//! file name and the name `describe()` returns agree.
//!
//! Calls:
//! - `word-count` (text) -> json `{"words":N,"lines":N,"chars":N,"top":[["word",n],..]}`
//! - `slugify` (text) -> text, e.g. `Hello, World!` -> `hello-world`; the
//!   separator is the `separator` configuration value when the service set
//!   one (`runtime.plugin(..).config("separator", "_")`), else `-`
//! - `sum` (json array of numbers) -> float
//! - `burn` (integer n) -> integer: n rounds of arithmetic (n < 0: forever);
//!   used to show the per-call fuel limit
//! - `allocate` (integer MiB) -> integer: allocates and touches that much
//!   memory; used to show the per-call memory limit

use std::collections::BTreeMap;

use forgeone_guest::{CallError, Guest, PluginInfo, PluginInfoExt, Value};

struct TextPlugin;

impl Guest for TextPlugin {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "text_plugin",
            env!("CARGO_PKG_VERSION"),
            ["word-count", "slugify", "sum", "burn", "allocate"],
        )
    }

    fn call(name: String, input: Value) -> Result<Value, CallError> {
        match (name.as_str(), input) {
            ("word-count", Value::Text(text)) => Ok(Value::Json(word_count(&text))),
            ("slugify", Value::Text(text)) => {
                let separator = forgeone_guest::config::get("separator");
                Ok(Value::Text(slugify(&text, separator.as_deref().unwrap_or("-"))))
            }
            ("sum", Value::Json(json)) => sum(&json).map(Value::Float),
            ("burn", Value::Integer(n)) => Ok(Value::Integer(burn(n))),
            ("allocate", Value::Integer(mib)) if mib >= 0 => {
                let mut held = Vec::new();
                for _ in 0..mib {
                    held.push(vec![1u8; 1 << 20]);
                }
                Ok(Value::Integer(held.iter().map(|c| c.len() as i64).sum::<i64>() >> 20))
            }
            (call @ ("word-count" | "slugify"), _) => {
                Err(CallError::InvalidInput(format!("`{call}` takes text")))
            }
            ("sum", _) => Err(CallError::InvalidInput(
                "`sum` takes a JSON array of numbers".into(),
            )),
            (call @ ("burn" | "allocate"), _) => Err(CallError::InvalidInput(format!(
                "`{call}` takes a non-negative integer"
            ))),
            (other, _) => Err(CallError::UnknownCall(other.to_string())),
        }
    }
}

fn word_count(text: &str) -> String {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut words = 0u64;
    for word in text
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|w| !w.is_empty())
    {
        words += 1;
        *counts.entry(word.to_lowercase()).or_default() += 1;
    }
    let mut top: Vec<(String, u64)> = counts.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    top.truncate(3);
    let top: Vec<String> = top
        .iter()
        .map(|(w, n)| format!("[\"{}\",{n}]", escape_json(w)))
        .collect();
    format!(
        "{{\"words\":{words},\"lines\":{},\"chars\":{},\"top\":[{}]}}",
        text.lines().count(),
        text.chars().count(),
        top.join(",")
    )
}

fn escape_json(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

fn slugify(text: &str, separator: &str) -> String {
    let mut slug = String::new();
    for c in text.chars() {
        if c.is_alphanumeric() {
            slug.extend(c.to_lowercase());
        } else if !slug.is_empty() && !slug.ends_with(separator) {
            slug.push_str(separator);
        }
    }
    slug.trim_end_matches(separator).to_string()
}

/// Sums a JSON array of numbers (`[1, 2.5, -3e2]`), by hand: the grammar is
/// tiny and a JSON crate would triple the plugin's size.
fn sum(json: &str) -> Result<f64, CallError> {
    let inner = json
        .trim()
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .ok_or_else(|| CallError::InvalidInput("expected a JSON array".into()))?;
    if inner.trim().is_empty() {
        return Ok(0.0);
    }
    inner.split(',').try_fold(0.0, |acc, item| {
        let item = item.trim();
        item.parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .map(|v| acc + v)
            .ok_or_else(|| CallError::InvalidInput(format!("`{item}` is not a number")))
    })
}

fn burn(rounds: i64) -> i64 {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut i: i64 = 0;
    while rounds < 0 || i < rounds {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state = std::hint::black_box(state);
        i += 1;
    }
    (state & 0xffff) as i64
}

forgeone_guest::export_plugin!(TextPlugin);

// The plugin is plain Rust natively: `cargo test -p text_plugin --target
// x86_64-unknown-linux-gnu` (or your host's triple) runs these without wasm.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugify_and_word_count() {
        assert!(matches!(
            TextPlugin::call("slugify".into(), Value::Text("Hello, World!".into())),
            Ok(Value::Text(s)) if s == "hello-world"
        ));
        let Ok(Value::Json(json)) =
            TextPlugin::call("word-count".into(), Value::Text("a b a".into()))
        else {
            panic!("word-count returns json");
        };
        assert!(json.contains(r#""words":3"#), "{json}");
        assert!(matches!(
            TextPlugin::call("nope".into(), Value::None),
            Err(CallError::UnknownCall(n)) if n == "nope"
        ));
        assert_eq!(TextPlugin::describe().name, "text_plugin");
    }
}
