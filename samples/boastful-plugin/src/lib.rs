//! `boastful-plugin`: a plugin whose `describe()` returns a name and a
//! version of 1,000 bytes each; the host caps both before keeping them.

use forgeone_guest::{CallError, Guest, PluginInfo, PluginInfoExt, Value};

struct Boastful;

impl Guest for Boastful {
    fn describe() -> PluginInfo {
        PluginInfo::new(&"b".repeat(1_000), &format!("1.0.0-{}", "v".repeat(994)), ["echo"])
    }

    fn call(name: String, input: Value) -> Result<Value, CallError> {
        match name.as_str() {
            "echo" => Ok(input),
            other => Err(CallError::UnknownCall(other.to_string())),
        }
    }
}

forgeone_guest::export_plugin!(Boastful);
