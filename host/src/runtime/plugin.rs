//! Plugins: signed components exporting `forgeone:kernel/plugin-api`, called
//! by the embedding service with typed values.
//!
//! Every call runs in a fresh instance with its own store: fresh fuel,
//! memory limit and deadline per call, and nothing left over from the
//! previous call (the Spin model: instances are cheap from an
//! `InstancePre`). A plugin gets an empty WASI context: no directories, no
//! environment, no network; its output goes to the audit log.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use uuid::Uuid;
use wasmtime::Store;
use wasmtime::component::{Instance, InstancePre};

use crate::boot::VerifiedComponent;
use crate::identity::IdentityContext;

use super::RuntimeError;
use super::bindings::plugin::PluginIndices;
use super::caps;
use super::container::{DeadlinePassed, classify, new_store};
use super::control::Control;
use super::dynamic;
use super::events::ContainerEvent;
use super::file_io::FileIo;
use super::host::{GuestIdentity, Host, KernelCtx, LogState};
use super::lifecycle::Runtime;
use super::limits::{Limiter, Limits};
use super::outcome::{Failure, RunEnd, RunStats};
use super::output::{Capture, CaptureTarget, OutputSink, Stream};
use super::registry::{CallEnd, PluginContext};
use crate::audit::Entry;

pub use super::bindings::plugin::forgeone::kernel::types::{CallError, PluginInfo, Value};

/// A loaded plugin. Clone it to call it from several tasks.
#[derive(Clone)]
pub struct Plugin {
    runtime: Runtime,
    id: Uuid,
    pre: InstancePre<Host>,
    /// Where `plugin-api` is in its instances; `None` for a plugin with its
    /// own WIT world ([`PluginLoader::own_world`]).
    api: Option<PluginIndices>,
    /// The functions a plugin with its own world exports
    /// ([`Plugin::call_dynamic`]).
    exports: Arc<Vec<dynamic::Export>>,
    identity: Arc<GuestIdentity>,
    limits: Limits,
    info: PluginInfo,
    /// Calls wait for an instance slot when the pool is full (see
    /// [`Plugin::queue`]); `None`: they are refused as busy at once.
    queue: Option<Queue>,
    /// Calls of this plugin (and its clones) now waiting for a slot.
    waiting: Arc<AtomicUsize>,
    /// What its `forgeone:kernel/config` import answers.
    config: Arc<BTreeMap<String, String>>,
    /// Where its stdout, stderr (a panic message among them) and log lines
    /// go, line by line, besides the audit log.
    output: Option<OutputSink>,
}

/// A plugin's wait queue for instance slots.
#[derive(Debug, Clone, Copy)]
struct Queue {
    max_waiting: usize,
    timeout: Duration,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("id", &self.id)
            .field("name", &self.info.name)
            .field("version", &self.info.version)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Loads a plugin: checks the policy (unsigned code is refused unless
    /// allowed), compiles it once, checks it exports `plugin-api`, and
    /// calls `describe`. A signed plugin must describe itself by the name
    /// it was signed under ([`RuntimeError::PluginNameMismatch`]). Each
    /// call then runs under `limits`. [`Runtime::plugin`] does the same
    /// with configuration for the plugin.
    pub async fn load_plugin(
        &self,
        component: &VerifiedComponent,
        identity: IdentityContext,
        limits: Limits,
    ) -> Result<Plugin, RuntimeError> {
        self.plugin(component, identity).limits(limits).load().await
    }

    /// Loads a plugin with options, as a chain:
    ///
    /// ```no_run
    /// # async fn f(runtime: forgeone::runtime::Runtime, c: forgeone::boot::VerifiedComponent, id: forgeone::IdentityContext) -> Result<(), forgeone::runtime::RuntimeError> {
    /// let plugin = runtime
    ///     .plugin(&c, id)
    ///     .limits(forgeone::runtime::Limits::default())
    ///     .config("greeting", "bonjour")
    ///     .load()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn plugin<'a>(
        &'a self,
        component: &'a VerifiedComponent,
        identity: IdentityContext,
    ) -> PluginLoader<'a> {
        PluginLoader {
            runtime: self,
            component,
            identity,
            limits: Limits::default(),
            config: BTreeMap::new(),
            output: None,
            own_world: false,
        }
    }

    async fn load(
        &self,
        component: &VerifiedComponent,
        identity: IdentityContext,
        limits: Limits,
        config: BTreeMap<String, String>,
        output: Option<OutputSink>,
        own_world: bool,
    ) -> Result<Plugin, RuntimeError> {
        let id = Uuid::new_v4();
        let identity = self.admit(component, identity, None)?;
        let compiled = self.compiled(component, &identity, None)?;
        let (pre, api) = match &compiled.pre {
            // Its exports are the service's to check, against its world.
            Ok(pre) if own_world => (pre.clone(), None),
            Ok(pre) => {
                let api = PluginIndices::new(pre).map_err(|e| RuntimeError::NotAPlugin {
                    name: component.name().to_string(),
                    source: e.into(),
                })?;
                (pre.clone(), Some(api))
            }
            Err(failure) => {
                return Err(RuntimeError::NotAPlugin {
                    name: component.name().to_string(),
                    source: Box::new(failure.clone()),
                });
            }
        };
        let guest = Arc::new(GuestIdentity::new(id, None, identity.clone(), component));
        let mut plugin = Plugin {
            runtime: self.clone(),
            id,
            exports: Arc::new(if own_world {
                dynamic::exports(pre.component(), pre.engine())
            } else {
                Vec::new()
            }),
            pre,
            api,
            identity: guest,
            limits,
            queue: None,
            waiting: Arc::default(),
            config: Arc::new(config),
            output,
            info: PluginInfo {
                name: component.name().to_string(),
                version: component.version().to_string(),
                calls: Vec::new(),
            },
        };
        if own_world {
            plugin.info.calls = plugin.exports.iter().map(dynamic::Export::path).collect();
        } else {
            plugin.info = plugin.describe().await?;
        }
        // A signed plugin is the plugin it was signed as: one that says it
        // is another would have the service talk to a plugin it did not
        // ask for (and audit its calls under the wrong name).
        if component.is_signed() && plugin.info.name != component.name() {
            let event = ContainerEvent::PluginRefused {
                plugin: id.to_string(),
                signed: component.name().to_string(),
                described: plugin.info.name.clone(),
            };
            self.inner
                .audit
                .append_async(plugin.identity.entry(event))
                .await?;
            return Err(RuntimeError::PluginNameMismatch {
                signed: component.name().to_string(),
                described: plugin.info.name.clone(),
            });
        }
        self.inner.plugins.insert(PluginContext {
            id,
            name: plugin.info.name.clone(),
            version: plugin.info.version.clone(),
            component_digest: component.digest(),
            identity: identity.clone(),
            calls: 0,
            failures: 0,
            cancelled: 0,
            busy: 0,
        });
        let event = ContainerEvent::PluginLoaded {
            plugin: id.to_string(),
            name: plugin.info.name.clone(),
            version: plugin.info.version.clone(),
            config_keys: plugin.config.keys().cloned().collect(),
        };
        self.inner
            .audit
            .append_async(plugin.identity.entry(event))
            .await?;
        Ok(plugin)
    }
}

/// A plugin about to be loaded ([`Runtime::plugin`]): set its limits and
/// configuration, then [`load`](PluginLoader::load) it.
#[derive(Debug)]
#[must_use = "a plugin is loaded by .load().await"]
pub struct PluginLoader<'a> {
    runtime: &'a Runtime,
    component: &'a VerifiedComponent,
    identity: IdentityContext,
    limits: Limits,
    config: BTreeMap<String, String>,
    output: Option<OutputSink>,
    own_world: bool,
}

impl PluginLoader<'_> {
    /// Loads a component that exports its own WIT world instead of
    /// `forgeone:kernel/plugin-api`: nothing is checked or called at load
    /// (no `describe`; its name and version are the signed ones), and the
    /// service calls it with [`Plugin::call_with`] through bindings of its
    /// world (`wasmtime::component::bindgen!`). Its imports may be WASI and
    /// `forgeone:kernel` (identity, log, config), as any plugin's.
    pub fn own_world(mut self) -> Self {
        self.own_world = true;
        self
    }

    /// Sends what the plugin writes (stdout, stderr, a panic message, its
    /// log lines) to `sink`, line by line, as a container's
    /// [`ContainerConfig::output`](super::ContainerConfig::output) does.
    /// Without one it is only in the audit log, within the call's audit
    /// budget.
    pub fn output(mut self, sink: OutputSink) -> Self {
        self.output = Some(sink);
        self
    }

    /// The limits each call runs under (default: [`Limits::default`]);
    /// [`Plugin::with_limits`] changes them later without a second load.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets the configuration value of `key`, which the plugin reads with
    /// `forgeone_guest::config::get` (the `forgeone:kernel/config` import),
    /// the same in every call. The keys are in the
    /// `container.plugin.loaded` record; the values are not (they may be
    /// secrets).
    pub fn config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.insert(key.into(), value.into());
        self
    }

    /// Sets several configuration values at once (see
    /// [`PluginLoader::config`]).
    pub fn configs<K, V>(mut self, pairs: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        self.config
            .extend(pairs.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Verifies the policy, compiles, checks and describes the plugin (see
    /// [`Runtime::load_plugin`]).
    pub async fn load(self) -> Result<Plugin, RuntimeError> {
        self.runtime
            .load(
                self.component,
                self.identity,
                self.limits,
                self.config,
                self.output,
                self.own_world,
            )
            .await
    }
}

enum Call {
    Describe,
    Call(String, Value),
}

enum Reply {
    Info(PluginInfo),
    Value(Result<Value, CallError>),
}

impl Plugin {
    /// The plugin's id.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// Lets calls wait for an instance slot when the pooling allocator is
    /// full, instead of failing at once with [`RuntimeError::Busy`]: up to
    /// `max_waiting` calls of this plugin (and its clones) wait, each at
    /// most `timeout`, and then fail with `Busy`. A waiting call takes the
    /// next slot a plugin call frees (or a container, within 10 ms); the
    /// queue is bounded, not first-come-first-served. The call's own
    /// deadline starts when it gets its slot.
    ///
    /// ```no_run
    /// # async fn f(runtime: forgeone::runtime::Runtime, c: forgeone::boot::VerifiedComponent, id: forgeone::IdentityContext) -> Result<(), forgeone::runtime::RuntimeError> {
    /// use std::time::Duration;
    /// let plugin = runtime
    ///     .load_plugin(&c, id, Default::default())
    ///     .await?
    ///     .queue(64, Duration::from_millis(250));
    /// # Ok(()) }
    /// ```
    pub fn queue(mut self, max_waiting: usize, timeout: Duration) -> Plugin {
        self.queue = Some(Queue {
            max_waiting,
            timeout,
        });
        self.waiting = Arc::default();
        self
    }

    /// The same plugin with other limits for its calls: no second load,
    /// `describe` or `container.plugin.loaded` record; calls through either
    /// are counted and audited as this plugin's.
    pub fn with_limits(&self, limits: Limits) -> Plugin {
        Plugin {
            limits,
            ..self.clone()
        }
    }

    /// The limits each call runs under.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The configuration it was loaded with ([`PluginLoader::config`]).
    pub fn config(&self) -> &BTreeMap<String, String> {
        &self.config
    }

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

    /// What the plugin said about itself when it was loaded.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// Calls `describe` (in a fresh instance). The name and version the
    /// plugin returns are capped at 256 bytes each (with a truncation
    /// marker).
    pub async fn describe(&self) -> Result<PluginInfo, RuntimeError> {
        match self.invoke_raw(Call::Describe).await?.0 {
            Reply::Info(mut info) => {
                // Guest-supplied: capped before they are kept, shown or audited.
                info.name = caps::cap(info.name, caps::PLUGIN_INFO);
                info.version = caps::cap(info.version, caps::PLUGIN_INFO);
                Ok(info)
            }
            Reply::Value(_) => unreachable!("describe returns plugin info"),
        }
    }

    /// Calls `name` with `input` in a fresh instance under the plugin's
    /// limits. `Ok(Err(..))` is the plugin's own error; `Err(..)` means the
    /// call trapped or hit a limit ([`RuntimeError::PluginFailed`]), found
    /// no free instance slot ([`RuntimeError::Busy`]: the plugin did not
    /// run), or was refused because the runtime is shutting down
    /// ([`RuntimeError::ShuttingDown`]) or the audit log cannot be written.
    ///
    /// Every call is audited as one `container.plugin.call` record with its
    /// result (`ok`, `error`, `failed`, `busy`, or `cancelled` when the
    /// caller drops the future while the guest runs) and counted in the
    /// plugin's [`PluginContext`].
    ///
    /// [`Plugin::invoke`] is the same call with one error type and the
    /// call's stats; [`Plugin::call_json`] adds serde on both ends.
    pub async fn call(
        &self,
        name: &str,
        input: Value,
    ) -> Result<Result<Value, CallError>, RuntimeError> {
        self.call_with_stats(name, input)
            .await
            .map(|(value, _)| value)
    }

    /// Calls `name` with `input`, as [`Plugin::call`] does, and returns the
    /// value with what the call cost (fuel, peak memory, wall time to the
    /// microsecond), or one [`PluginCallError`] whichever way it failed:
    /// the plugin's own error ([`PluginCallError::Plugin`], with its stats
    /// too) or the runtime's ([`PluginCallError::Runtime`]: a trap, a
    /// limit, busy, shutting down).
    ///
    /// ```no_run
    /// # async fn f(plugin: forgeone::runtime::Plugin) -> Result<(), forgeone::runtime::PluginCallError> {
    /// use forgeone::runtime::Value;
    /// let called = plugin.invoke("slugify", Value::Text("Hello, World!".into())).await?;
    /// println!("{:?} in {} µs, {} fuel", called.value, called.stats.wall_time.as_micros(), called.stats.fuel_consumed);
    /// # Ok(()) }
    /// ```
    pub async fn invoke(&self, name: &str, input: Value) -> Result<Called, PluginCallError> {
        let (value, stats) = self.call_with_stats(name, input).await?;
        match value {
            Ok(value) => Ok(Called { value, stats }),
            Err(error) => Err(PluginCallError::Plugin {
                plugin: self.info.name.clone(),
                call: name.to_string(),
                error,
                stats,
            }),
        }
    }

    /// Calls `name` with `input` serialised as JSON ([`Value::Json`]) and
    /// deserialises what it returns into `Out`. A plugin that returns a
    /// plain value (`none`, a boolean, a number, text) is read as the JSON
    /// `null`, boolean, number or string; bytes are not JSON and are an
    /// [`PluginCallError::Output`] error, as is JSON of another shape.
    ///
    /// ```no_run
    /// # async fn f(plugin: forgeone::runtime::Plugin) -> Result<(), forgeone::runtime::PluginCallError> {
    /// #[derive(serde::Deserialize)]
    /// struct Count { words: u64, lines: u64 }
    /// let count = plugin.call_json::<_, Count>("word-count", &"the cat and the hat").await?;
    /// println!("{} words on {} lines", count.value.words, count.value.lines);
    /// # Ok(()) }
    /// ```
    pub async fn call_json<In, Out>(
        &self,
        name: &str,
        input: &In,
    ) -> Result<Called<Out>, PluginCallError>
    where
        In: serde::Serialize + ?Sized,
        Out: serde::de::DeserializeOwned,
    {
        let text = serde_json::to_string(input).map_err(|source| PluginCallError::Input {
            call: name.to_string(),
            source,
        })?;
        let called = self.invoke(name, Value::Json(text)).await?;
        let output = |source: serde_json::Error| PluginCallError::Output {
            plugin: self.info.name.clone(),
            call: name.to_string(),
            reason: source.to_string(),
        };
        let value = match called.value {
            Value::Json(text) => serde_json::from_str(&text).map_err(output)?,
            Value::None => serde_json::from_value(serde_json::Value::Null).map_err(output)?,
            Value::Boolean(b) => serde_json::from_value(b.into()).map_err(output)?,
            Value::Integer(i) => serde_json::from_value(i.into()).map_err(output)?,
            Value::Float(f) => serde_json::from_value(f.into()).map_err(output)?,
            Value::Text(t) => serde_json::from_value(t.into()).map_err(output)?,
            Value::Bytes(b) => {
                return Err(PluginCallError::Output {
                    plugin: self.info.name.clone(),
                    call: name.to_string(),
                    reason: format!("it returned {} bytes, not JSON", b.len()),
                });
            }
        };
        Ok(Called {
            value,
            stats: called.stats,
        })
    }

    async fn call_with_stats(
        &self,
        name: &str,
        input: Value,
    ) -> Result<(Result<Value, CallError>, RunStats), RuntimeError> {
        match self.invoke_raw(Call::Call(name.to_string(), input)).await? {
            (Reply::Value(value), stats) => Ok((value, stats)),
            (Reply::Info(_), _) => unreachable!("call returns a value"),
        }
    }

    /// A `describe` or `call` of the built-in `plugin-api`.
    async fn invoke_raw(&self, call: Call) -> Result<(Reply, RunStats), RuntimeError> {
        let Some(indices) = self.api.clone() else {
            return Err(RuntimeError::NotAPlugin {
                name: self.info.name.clone(),
                source: "it was loaded with its own WIT world (PluginLoader::own_world): call it \
                         with Plugin::call_with"
                    .into(),
            });
        };
        let (call_name, input) = match call {
            Call::Describe => ("describe".to_string(), None),
            Call::Call(name, input) => (name, Some(input)),
        };
        let name = call_name.clone();
        self.run_call(
            call_name,
            |reply| matches!(reply, Reply::Value(Err(_))),
            move |store, instance| {
                Box::pin(async move {
                    let plugin = indices.load(&mut *store, instance)?;
                    let api = plugin.forgeone_kernel_plugin_api();
                    match input {
                        None => api.call_describe(&mut *store).await.map(Reply::Info),
                        Some(input) => api
                            .call_call(&mut *store, &name, &input)
                            .await
                            .map(Reply::Value),
                    }
                })
            },
        )
        .await
    }

    /// Runs one call in a fresh instance under the plugin's limits,
    /// waiting for an instance slot if the plugin queues, and puts it on
    /// the record however it ends. `work` gets the store and the instance;
    /// `is_error` says whether a returned value is the plugin's own error.
    async fn run_call<R, F>(
        &self,
        call_name: String,
        is_error: fn(&R) -> bool,
        work: F,
    ) -> Result<(R, RunStats), RuntimeError>
    where
        R: Send,
        F: for<'s> FnOnce(&'s mut Store<Host>, &'s Instance) -> GuestCall<'s, R> + Send,
    {
        let runtime = &self.runtime;
        // Refused once the runtime shuts down, as a load is, and while the
        // audit log cannot be written.
        runtime.accepting()?;
        let mut work = Some(work);
        // From here on the call is on the record however it ends: if the
        // caller drops this future, the guard records it as cancelled.
        let mut record = CallRecord {
            plugin: self,
            call: call_name.clone(),
            started: Instant::now(),
            control: None,
            done: false,
        };
        let mut queued: Option<Waiting> = None;
        loop {
            let (result, stats) = match self.attempt(&mut work, &mut record).await {
                Attempt::Ran { result, stats } => (result, stats),
                Attempt::Busy(reason) => match self.wait_for_slot(&mut queued, &reason).await {
                    Ok(()) => continue,
                    Err(reason) => {
                        let waited = queued
                            .as_ref()
                            .map_or(Duration::ZERO, |q| q.since.elapsed());
                        record
                            .finish(
                                CallEnd::Busy,
                                "busy",
                                None,
                                RunStats {
                                    wall_time: waited,
                                    ..RunStats::default()
                                },
                            )
                            .await?;
                        return Err(RuntimeError::Busy {
                            plugin: self.info.name.clone(),
                            call: call_name,
                            reason,
                            waited,
                        });
                    }
                },
            };
            drop(queued);
            let (reply, failure) = match result {
                Ok(reply) => (Some(reply), None),
                Err(failure) => (None, Some(failure)),
            };
            let (ended, result_name) = match &reply {
                Some(reply) if is_error(reply) => (CallEnd::Returned, "error"),
                Some(_) => (CallEnd::Returned, "ok"),
                None => (CallEnd::Failed, "failed"),
            };
            record
                .finish(ended, result_name, failure.clone(), stats.clone())
                .await?;
            return match (reply, failure) {
                (Some(reply), _) => Ok((reply, stats)),
                (None, failure) => Err(RuntimeError::PluginFailed {
                    plugin: self.info.name.clone(),
                    call: call_name,
                    failure: failure.unwrap_or(Failure::Instantiate {
                        message: "unknown".into(),
                    }),
                }),
            };
        }
    }

    /// One try at running the call in a fresh instance: busy when the
    /// instance pool has no free slot (nothing of the guest ran).
    async fn attempt<'p, R, F>(
        &'p self,
        work: &mut Option<F>,
        record: &mut CallRecord<'p>,
    ) -> Attempt<R>
    where
        F: for<'s> FnOnce(&'s mut Store<Host>, &'s Instance) -> GuestCall<'s, R>,
    {
        let runtime = &self.runtime;
        let capture = Capture::new(CaptureTarget {
            container: self.id,
            subjects: self.identity.audit_subjects.clone(),
            audit: runtime.inner.audit.clone(),
            sink: self.output.clone(),
            bytes: [None, None],
            limit: self.limits.max_output,
            max_line: self.limits.max_line.max(16),
            keep_last: 0,
            audit_budget: self.limits.max_audit_bytes,
            // A call is bounded by its own deadline; it is refused up front
            // while the log cannot be written, and not stopped halfway.
            health: None,
        });
        // An empty WASI context: no preopens, env, args or network; output
        // captured.
        let wasi = wasmtime_wasi::WasiCtxBuilder::new()
            .stdout(capture.pipe(Stream::Stdout))
            .stderr(capture.pipe(Stream::Stderr))
            .build();
        // Publishes fuel and peak memory while the call runs (at every
        // epoch tick), so a cancelled call is accounted too.
        let control = Arc::new(Control::default());
        record.control = Some(control.clone());
        let host = Host {
            wasi,
            table: super::fs_guard::table(&self.limits),
            limiter: Limiter::new(
                self.limits.max_memory,
                self.limits.max_table_elements,
                self.limits.max_instances,
                Some(control.clone()),
            ),
            kernel: KernelCtx {
                identity: self.identity.clone(),
                log: LogState {
                    audit: runtime.inner.audit.clone(),
                    // Log lines go where its output goes: the sink, if any, and the audit log within its budget.
                    capture: Some(capture.clone()),
                    written: 0,
                    limit: self.limits.max_log_lines,
                },
                config: self.config.clone(),
            },
            // No preopens, so no file calls: the builder's default.
            file_io: FileIo::BlockingPool,
        };
        let engine = runtime.inner.store.engine().clone();
        let mut store = match new_store(
            &engine,
            host,
            &self.limits,
            runtime.inner.config.engine.fuel_yield_interval,
            Some(control),
            None,
        ) {
            Ok(store) => store,
            Err(e) => {
                return Attempt::Ran {
                    result: Err(Failure::Instantiate {
                        message: e.to_string(),
                    }),
                    stats: RunStats::default(),
                };
            }
        };
        let budget = self.limits.fuel.unwrap_or(u64::MAX);
        let started = Instant::now();
        let pre = self.pre.clone();
        let work = async {
            let instance = pre.instantiate_async(&mut store).await?;
            // Taken only once an instance is there: a busy try leaves it
            // for the next.
            let work = work.take().expect("a call's work runs once");
            work(&mut store, &instance).await
        };
        // The deadline also covers time spent waiting in host calls.
        let result = match self.limits.timeout {
            Some(timeout) => {
                let timed = wasmtime_wasi::runtime::with_ambient_tokio_runtime(|| {
                    tokio::time::timeout(timeout, work)
                });
                timed
                    .await
                    .unwrap_or_else(|_| Err(wasmtime::Error::new(DeadlinePassed)))
            }
            None => work.await,
        };
        if let Err(error) = &result
            && let Some(full) = error.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
        {
            // Not a crash: the pool had no slot. The store gives nothing
            // back (it never got an instance).
            return Attempt::Busy(full.to_string());
        }
        capture.finish();
        capture.drain().await;
        let (output_bytes, output_truncated) = capture.totals();
        let stats = RunStats {
            fuel_consumed: budget.saturating_sub(store.get_fuel().unwrap_or(0)),
            peak_memory: store.data().limiter.memory_peak,
            wall_time: started.elapsed(),
            memory_refusals: store.data().limiter.memory_refusals,
            table_refusals: store.data().limiter.table_refusals,
            output_bytes,
            output_truncated,
            sink_failure: None,
        };
        let result = result.map_err(|error| {
            match classify(Err(error), store.data(), &self.limits, budget) {
                RunEnd::Failed(f) => f,
                RunEnd::Success => Failure::Exit { code: 0 },
                RunEnd::Stopped { .. } => Failure::Instantiate {
                    message: "stopped".into(),
                },
            }
        });
        // The instance slot is free once the store is gone: tell the calls
        // waiting for one.
        drop(store);
        runtime.inner.plugins.slot_freed.notify_waiters();
        Attempt::Ran { result, stats }
    }

    /// After a busy try: waits for a slot if the plugin has a wait queue
    /// with room and time left (`Ok`, try again), or says why not.
    async fn wait_for_slot(&self, queued: &mut Option<Waiting>, busy: &str) -> Result<(), String> {
        let Some(queue) = self.queue else {
            return Err(busy.to_string());
        };
        if queued.is_none() {
            *queued = Some(
                Waiting::join(&self.waiting, queue.max_waiting).ok_or_else(|| {
                    format!(
                        "{busy}; the wait queue is full ({} calls waiting)",
                        queue.max_waiting
                    )
                })?,
            );
        }
        let since = queued.as_ref().map_or_else(Instant::now, |q| q.since);
        let left = queue.timeout.saturating_sub(since.elapsed());
        if left.is_zero() {
            return Err(format!(
                "{busy}; no slot came free within the queue timeout of {} ms",
                queue.timeout.as_millis()
            ));
        }
        // Woken when a plugin call frees its slot; a slot a container
        // frees wakes nobody, so look again every 10 ms as well.
        let freed = self.runtime.inner.plugins.slot_freed.notified();
        let _ = tokio::time::timeout(left.min(Duration::from_millis(10)), freed).await;
        Ok(())
    }
}

/// How one try at a call went.
enum Attempt<R> {
    /// The guest ran (or could not be set up): its result and stats.
    Ran {
        result: Result<R, Failure>,
        stats: RunStats,
    },
    /// No instance slot was free: the pool's message.
    Busy(String),
}

/// A call's place in its plugin's wait queue; leaves it when dropped.
struct Waiting {
    count: Arc<AtomicUsize>,
    since: Instant,
}

impl Waiting {
    /// Joins the queue unless `max` calls already wait.
    fn join(count: &Arc<AtomicUsize>, max: usize) -> Option<Waiting> {
        count
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(Waiting {
            count: count.clone(),
            since: Instant::now(),
        })
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A call on its way to the record: [`CallRecord::finish`] counts and
/// audits how it ended; dropped unfinished (the caller dropped the call's
/// future: a timeout, a client that went away), it is counted and audited
/// as `cancelled`, with the fuel, peak memory and time it had used by the
/// last epoch tick.
struct CallRecord<'p> {
    plugin: &'p Plugin,
    call: String,
    started: Instant,
    /// The current try's control, which the epoch callback keeps up to
    /// date.
    control: Option<Arc<Control>>,
    done: bool,
}

impl CallRecord<'_> {
    fn entry(&self, result: &'static str, failure: Option<Failure>, stats: RunStats) -> Entry {
        self.plugin.identity.entry(ContainerEvent::PluginCall {
            call: self.call.clone(),
            result,
            failure,
            stats,
        })
    }

    async fn finish(
        &mut self,
        ended: CallEnd,
        result: &'static str,
        failure: Option<Failure>,
        stats: RunStats,
    ) -> Result<(), RuntimeError> {
        self.done = true;
        let runtime = &self.plugin.runtime;
        runtime.inner.plugins.record_call(self.plugin.id, ended);
        let entry = self.entry(result, failure, stats);
        runtime.inner.audit.append_async(entry).await?;
        Ok(())
    }
}

impl Drop for CallRecord<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let runtime = &self.plugin.runtime;
        runtime
            .inner
            .plugins
            .record_call(self.plugin.id, CallEnd::Cancelled);
        let (fuel_consumed, peak_memory) = self.control.as_ref().map_or((0, 0), |c| {
            (
                c.fuel_consumed.load(Ordering::Relaxed),
                c.peak_memory.load(Ordering::Relaxed),
            )
        });
        let stats = RunStats {
            fuel_consumed,
            peak_memory,
            wall_time: self.started.elapsed(),
            ..RunStats::default()
        };
        let entry = self.entry("cancelled", None, stats);
        let audit = runtime.inner.audit.clone();
        // Not on the dropping thread when it is an executor's: appending
        // may wait for room in the log's queue.
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    if let Err(e) = audit.append_async(entry).await {
                        tracing::error!("audit of a cancelled plugin call failed: {e}");
                    }
                });
            }
            Err(_) => {
                if let Err(e) = audit.append(entry) {
                    tracing::error!("audit of a cancelled plugin call failed: {e}");
                }
            }
        }
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
