//! Calls through a plugin's own WIT world ([`Plugin::call_with`],
//! [`Plugin::call_dynamic`]) and the types every call returns.

use std::future::Future;
use std::pin::Pin;

use wasmtime::Store;
use wasmtime::component::{Instance, InstancePre};

use super::{CallError, Plugin, Value};
use crate::runtime::RuntimeError;
use crate::runtime::dynamic;
use crate::runtime::host::Host;
use crate::runtime::outcome::RunStats;

impl Plugin {
    /// The plugin pre-linked, to type-check it against a world once:
    /// `MyWorldPre::new(plugin.instance_pre().clone())?` fails when the
    /// component does not export what `MyWorld` needs.
    pub fn instance_pre(&self) -> &InstancePre<Host> {
        &self.pre
    }

    /// Calls the plugin through bindings of its own WIT world: `work` gets
    /// a fresh instance in its own store, under the plugin's limits (fuel,
    /// memory, deadline; the deadline covers `work` as a whole), and
    /// returns what the call returned. The call is audited as one
    /// `container.plugin.call` record named `name` and counted, as
    /// [`Plugin::call`] is, and waits for an instance slot the same way.
    /// The returned [`Called`] has the call's stats; a trap or a limit is
    /// [`RuntimeError::PluginFailed`].
    ///
    /// ```ignore
    /// wasmtime::component::bindgen!({ path: "greeter.wit", world: "greeter", exports: { default: async } });
    /// let plugin = runtime.plugin(&component, identity).own_world().load().await?;
    /// GreeterPre::new(plugin.instance_pre().clone())?; // checks its exports once
    /// let greeting = plugin
    ///     .call_with("greet", |store, instance| {
    ///         Box::pin(async move {
    ///             Greeter::new(&mut *store, instance)?.call_greet(&mut *store, "world").await
    ///         })
    ///     })
    ///     .await?;
    /// ```
    pub async fn call_with<R, F>(&self, name: &str, work: F) -> Result<Called<R>, RuntimeError>
    where
        R: Send,
        F: for<'s> FnOnce(&'s mut Store<Host>, &'s Instance) -> GuestCall<'s, R> + Send,
    {
        let (value, stats) = self.run_call(name.to_string(), |_| false, work).await?;
        Ok(Called { value, stats })
    }

    /// Calls an exported function of a plugin with its own WIT world by
    /// name, with JSON arguments, and returns its result as JSON.
    ///
    /// The mapping, both ways: `bool`, the integers, the floats and
    /// `string` are their JSON counterparts; a `char` is a one-character
    /// string; a `list` or `tuple` an array; a `record` an object by field
    /// name; an `option` `null` or the value; a `result` `{"ok": V}` or
    /// `{"err": E}`; a `variant` `{"case": V}`, or `"case"` without a
    /// payload; an `enum` its case name; `flags` an array of names.
    /// Resources, maps, futures and streams have no JSON form and are
    /// refused. `function` is `interface#function` (the full
    /// interface name or its short name, `stats#count`) or, when only one
    /// export has that name, just `count`; `input` is an array of the
    /// arguments, an object by parameter name, or, for one parameter, its
    /// value. The call is metered, limited, counted and audited as
    /// [`Plugin::call_with`]'s are. `forgeone call` uses this for plugins
    /// that do not export `plugin-api`.
    pub async fn call_dynamic(
        &self,
        function: &str,
        input: &serde_json::Value,
    ) -> Result<Called<serde_json::Value>, PluginCallError> {
        let export = dynamic::find(&self.exports, function)
            .map_err(|reason| PluginCallError::Arguments {
                plugin: self.info.name.clone(),
                call: function.to_string(),
                reason,
            })?
            .clone();
        let params =
            dynamic::arguments(&export, input).map_err(|reason| PluginCallError::Arguments {
                plugin: self.info.name.clone(),
                call: export.path(),
                reason,
            })?;
        let called = self
            .call_with(&export.path(), move |store, instance| {
                Box::pin(async move {
                    let missing = || wasmtime::Error::msg(format!("no export {}", export.path()));
                    let index = match &export.interface {
                        Some(interface) => {
                            let interface = instance
                                .get_export_index(&mut *store, None, interface)
                                .ok_or_else(missing)?;
                            instance
                                .get_export_index(&mut *store, Some(&interface), &export.function)
                                .ok_or_else(missing)?
                        }
                        None => instance
                            .get_export_index(&mut *store, None, &export.function)
                            .ok_or_else(missing)?,
                    };
                    let func = instance.get_func(&mut *store, index).ok_or_else(missing)?;
                    let mut results = dynamic::result_slots(&export);
                    func.call_async(&mut *store, &params, &mut results).await?;
                    Ok(results)
                })
            })
            .await?;
        Ok(Called {
            value: dynamic::results_json(&called.value),
            stats: called.stats,
        })
    }

    /// The functions a plugin with its own WIT world exports, with their
    /// types as WIT spells them
    /// (`example:word-stats/stats#count(text: string, top: u32) -> ...`);
    /// empty for a `plugin-api` plugin (see [`Plugin::info`]).
    pub fn functions(&self) -> Vec<String> {
        self.exports
            .iter()
            .map(dynamic::Export::signature)
            .collect()
    }
}

/// The future of one call through a plugin's own bindings
/// ([`Plugin::call_with`]): it borrows the call's store and instance.
pub type GuestCall<'s, R> = Pin<Box<dyn Future<Output = wasmtime::Result<R>> + Send + 's>>;

/// What a plugin call returned ([`Plugin::invoke`], [`Plugin::call_json`]),
/// with what it cost.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Called<T = Value> {
    /// The value the plugin returned.
    pub value: T,
    /// The call's fuel, peak memory and wall time (to the microsecond), as
    /// its `container.plugin.call` record has them.
    pub stats: RunStats,
}

/// Why a plugin call gave no value: one error for every way it can fail,
/// instead of a `Result` in a `Result`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PluginCallError {
    /// The plugin ran and returned its own error (unknown call, invalid
    /// input, failed): the plugin is healthy, the request was not.
    #[error("plugin `{plugin}` call `{call}`: {}", describe_call_error(error))]
    Plugin {
        /// Plugin name.
        plugin: String,
        /// Call name.
        call: String,
        /// The plugin's error.
        error: CallError,
        /// What the call cost.
        stats: RunStats,
    },
    /// The call did not return: it trapped or hit a limit, found the pool
    /// busy, or the runtime refused it (shutting down, audit log
    /// unwritable). See [`RuntimeError`].
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// [`Plugin::call_json`]: the input could not be serialised as JSON;
    /// the plugin did not run.
    #[error("call `{call}`: the input cannot be serialised as JSON: {source}")]
    Input {
        /// Call name.
        call: String,
        /// serde_json's reason.
        source: serde_json::Error,
    },
    /// [`Plugin::call_dynamic`]: no such function, or the input does not
    /// fit its parameters; the plugin did not run.
    #[error("plugin `{plugin}` call `{call}`: {reason}")]
    Arguments {
        /// Plugin name.
        plugin: String,
        /// The function asked for.
        call: String,
        /// What does not fit.
        reason: String,
    },
    /// [`Plugin::call_json`]: the plugin returned something that is not
    /// JSON of the expected type.
    #[error("plugin `{plugin}` call `{call}` returned an unexpected value: {reason}")]
    Output {
        /// Plugin name.
        plugin: String,
        /// Call name.
        call: String,
        /// Why it does not fit.
        reason: String,
    },
}

impl PluginCallError {
    /// The call's stats where it ran to an answer (the plugin's own
    /// error); the runtime's failures are in its audit record.
    pub fn stats(&self) -> Option<&RunStats> {
        match self {
            PluginCallError::Plugin { stats, .. } => Some(stats),
            _ => None,
        }
    }
}

fn describe_call_error(error: &CallError) -> String {
    match error {
        CallError::UnknownCall(name) => format!("no call named `{name}`"),
        CallError::InvalidInput(why) => format!("invalid input: {why}"),
        CallError::Failed(why) => format!("failed: {why}"),
    }
}
