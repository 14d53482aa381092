//! Plugins: signed components exporting `forgeone:kernel/plugin-api`, called
//! by the embedding service with typed values.
//!
//! Every call runs in a fresh instance with its own store: fresh fuel,
//! memory limit and deadline per call, and nothing left over from the
//! previous call (the Spin model: instances are cheap from an
//! `InstancePre`, and cheaper still with the pooling allocator's
//! copy-on-write memory images). [`Plugin::warm`] opts into reusing
//! instances between calls instead (the Extism model, `warm`), which gives
//! up that isolation between calls. A plugin gets an empty WASI context: no directories, no
//! environment, no network; its output goes to the audit log. A plugin may
//! also export its own WIT world instead (`typed`); `run` is one call's
//! instance, limits, slot and record.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use uuid::Uuid;
use wasmtime::component::InstancePre;

use crate::boot::VerifiedComponent;
use crate::identity::IdentityContext;

use super::RuntimeError;
use super::bindings::plugin::PluginIndices;
use super::caps;
use super::dynamic;
use super::events::ContainerEvent;
use super::host::{GuestIdentity, Host};
use super::lifecycle::Runtime;
use super::limits::Limits;
use super::outcome::RunStats;
use super::output::OutputSink;
use super::registry::PluginContext;

pub use super::bindings::plugin::forgeone::kernel::types::{CallError, PluginInfo, Value};
pub use typed::{Called, GuestCall, PluginCallError};

mod run;
mod typed;
mod warm;

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
    /// Idle instances kept between calls ([`Plugin::warm`]); `None`: a
    /// fresh instance per call.
    warm: Option<Arc<warm::WarmPool>>,
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
        limits: impl Into<Limits>,
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
            warm: None,
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
    pub fn own_world(&mut self) -> &mut Self {
        self.own_world = true;
        self
    }

    /// Sends what the plugin writes (stdout, stderr, a panic message, its
    /// log lines) to `sink`, line by line, as a container's
    /// [`ContainerConfig::output`](super::ContainerConfig::output) does.
    /// Without one it is only in the audit log, within the call's audit
    /// budget.
    pub fn output(&mut self, sink: OutputSink) -> &mut Self {
        self.output = Some(sink);
        self
    }

    /// The limits each call runs under (default: [`Limits::default`]);
    /// [`Plugin::with_limits`] changes them later without a second load.
    pub fn limits(&mut self, limits: impl Into<Limits>) -> &mut Self {
        self.limits = limits.into();
        self
    }

    /// Sets the configuration value of `key`, which the plugin reads with
    /// `forgeone_guest::config::get` (the `forgeone:kernel/config` import),
    /// the same in every call. The keys are in the
    /// `container.plugin.loaded` record; the values are not (they may be
    /// secrets).
    pub fn config(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.config.insert(key.into(), value.into());
        self
    }

    /// Sets several configuration values at once (see
    /// [`PluginLoader::config`]).
    pub fn configs<K, V>(&mut self, pairs: impl IntoIterator<Item = (K, V)>) -> &mut Self
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
    pub async fn load(&self) -> Result<Plugin, RuntimeError> {
        self.runtime
            .load(
                self.component,
                self.identity.clone(),
                self.limits.clone(),
                self.config.clone(),
                self.output.clone(),
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
    ///     .load_plugin(&c, id, forgeone::runtime::Limits::default())
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

    /// Reuses instances between calls instead of a fresh instance per
    /// call, in the style of Extism: a call takes an idle instance (or
    /// makes one), and gives it back when it returns normally, its own
    /// error included; up to `keep` idle instances (at least 1) stay alive
    /// for this plugin and its clones, each holding its memory (and, with
    /// the pooling allocator, its instance slot).
    ///
    /// **What this gives up: isolation between calls.** A warm instance
    /// keeps its linear memory, globals, tables and WASI handles from one
    /// call to the next, so state (a cache, a counter, a secret of a
    /// previous caller's input) can leak from one call into the next. Use
    /// it only for plugins every caller may share, and only when the call
    /// itself is short enough that a fresh instance's few microseconds
    /// matter.
    ///
    /// What stays the same: every call is audited
    /// (`container.plugin.call`) and counted in the plugin's
    /// [`PluginContext`] as before; each call gets the full fuel budget,
    /// its own deadline, output limit, audit budget and log-line count;
    /// the memory limit still holds (over all calls: memory a warm
    /// instance grew stays counted). A call that traps, runs out of fuel,
    /// hits a limit or the deadline, or is cancelled discards its instance,
    /// and the next call gets a fresh one.
    ///
    /// ```no_run
    /// # async fn f(runtime: forgeone::runtime::Runtime, c: forgeone::boot::VerifiedComponent, id: forgeone::IdentityContext) -> Result<(), forgeone::runtime::RuntimeError> {
    /// use forgeone::runtime::{Limits, Value};
    /// let plugin = runtime.load_plugin(&c, id, Limits::default()).await?.warm(4);
    /// let slug = plugin.call("slugify", Value::Text("Hello, World!".into())).await?;
    /// # Ok(()) }
    /// ```
    pub fn warm(mut self, keep: usize) -> Plugin {
        self.warm = Some(Arc::new(warm::WarmPool::new(keep)));
        self
    }

    /// How many warm instances are idle now (0 unless [`Plugin::warm`]).
    pub fn warm_instances(&self) -> usize {
        self.warm.as_ref().map_or(0, |pool| pool.idle())
    }

    /// The same plugin with other limits for its calls: no second load,
    /// `describe` or `container.plugin.loaded` record; calls through either
    /// are counted and audited as this plugin's. A [`warm`](Plugin::warm)
    /// plugin's copy keeps warm instances of its own.
    pub fn with_limits(&self, limits: impl Into<Limits>) -> Plugin {
        Plugin {
            limits: limits.into(),
            // Warm instances are set up under the limits they were made
            // with: the other limits keep their own.
            warm: self
                .warm
                .as_ref()
                .map(|pool| Arc::new(warm::WarmPool::new(pool.keep()))),
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
}
