//! Plugins: signed components exporting `forgeone:kernel/plugin-api`, called
//! by the embedding service with typed values.
//!
//! Every call runs in a fresh instance with its own store: fresh fuel,
//! memory limit and deadline per call, and nothing left over from the
//! previous call (the Spin model: instances are cheap from an
//! `InstancePre`). A plugin gets an empty WASI context: no directories, no
//! environment, no network; its output goes to the audit log.

use std::sync::Arc;
use std::time::Instant;

use uuid::Uuid;

use crate::boot::VerifiedComponent;
use crate::identity::IdentityContext;

use super::RuntimeError;
use super::bindings::plugin::PluginPre;
use super::caps;
use super::container::{DeadlinePassed, classify, new_store};
use super::events::ContainerEvent;
use super::file_io::FileIo;
use super::host::{GuestIdentity, Host, KernelCtx, LogState};
use super::lifecycle::Runtime;
use super::limits::{Limiter, Limits};
use super::outcome::{Failure, RunEnd, RunStats};
use super::output::{Capture, CaptureTarget, Stream};
use super::registry::PluginContext;

pub use super::bindings::plugin::forgeone::kernel::types::{CallError, PluginInfo, Value};

/// A loaded plugin. Clone it to call it from several tasks.
#[derive(Clone)]
pub struct Plugin {
    runtime: Runtime,
    id: Uuid,
    pre: PluginPre<Host>,
    identity: Arc<GuestIdentity>,
    limits: Limits,
    info: PluginInfo,
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
    /// calls `describe`. Each call then runs under `limits`.
    pub async fn load_plugin(
        &self,
        component: &VerifiedComponent,
        identity: IdentityContext,
        limits: Limits,
    ) -> Result<Plugin, RuntimeError> {
        let id = Uuid::new_v4();
        let identity = self.admit(component, identity, None)?;
        let compiled = self.compiled(component, &identity, None)?;
        let pre = match &compiled.pre {
            Ok(pre) => PluginPre::new(pre.clone()).map_err(|e| RuntimeError::NotAPlugin {
                name: component.name().to_string(),
                source: e.into(),
            })?,
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
            pre,
            identity: guest,
            limits,
            info: PluginInfo {
                name: component.name().to_string(),
                version: component.version().to_string(),
                calls: Vec::new(),
            },
        };
        plugin.info = plugin.describe().await?;
        self.inner.plugins.insert(PluginContext {
            id,
            name: plugin.info.name.clone(),
            version: plugin.info.version.clone(),
            component_digest: component.digest(),
            identity: identity.clone(),
            calls: 0,
            failures: 0,
        });
        let event = ContainerEvent::PluginLoaded {
            plugin: id.to_string(),
            name: plugin.info.name.clone(),
            version: plugin.info.version.clone(),
        };
        self.inner
            .audit
            .append_async(plugin.identity.entry(event))
            .await?;
        Ok(plugin)
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

    /// What the plugin said about itself when it was loaded.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// Calls `describe` (in a fresh instance). The name and version the
    /// plugin returns are capped at 256 bytes each (with a truncation
    /// marker).
    pub async fn describe(&self) -> Result<PluginInfo, RuntimeError> {
        match self.invoke(Call::Describe).await? {
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
    /// call trapped or hit a limit ([`RuntimeError::PluginFailed`]).
    pub async fn call(
        &self,
        name: &str,
        input: Value,
    ) -> Result<Result<Value, CallError>, RuntimeError> {
        match self.invoke(Call::Call(name.to_string(), input)).await? {
            Reply::Value(value) => Ok(value),
            Reply::Info(_) => unreachable!("call returns a value"),
        }
    }

    async fn invoke(&self, call: Call) -> Result<Reply, RuntimeError> {
        let runtime = &self.runtime;
        runtime.inner.audit.ensure_writable()?;
        let call_name = match &call {
            Call::Describe => "describe".to_string(),
            Call::Call(name, _) => name.clone(),
        };
        let capture = Capture::new(CaptureTarget {
            container: self.id,
            subjects: self.identity.audit_subjects.clone(),
            audit: runtime.inner.audit.clone(),
            sink: None,
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
        let host = Host {
            wasi,
            table: super::fs_guard::table(&self.limits),
            limiter: Limiter::new(
                self.limits.max_memory,
                self.limits.max_table_elements,
                self.limits.max_instances,
                None,
            ),
            kernel: KernelCtx {
                identity: self.identity.clone(),
                log: LogState {
                    audit: runtime.inner.audit.clone(),
                    // No sink and no kept lines: only the audit budget.
                    capture: Some(capture.clone()),
                    written: 0,
                    limit: self.limits.max_log_lines,
                },
            },
            // No preopens, so no file calls: the builder's default.
            file_io: FileIo::BlockingPool,
        };
        let engine = runtime.inner.store.engine().clone();
        let mut store = new_store(
            &engine,
            host,
            &self.limits,
            runtime.inner.config.engine.fuel_yield_interval,
            None,
            None,
        )?;
        let budget = self.limits.fuel.unwrap_or(u64::MAX);
        let started = Instant::now();
        let pre = self.pre.clone();
        let work = async {
            let instance = pre.instantiate_async(&mut store).await?;
            let api = instance.forgeone_kernel_plugin_api();
            match call {
                Call::Describe => api.call_describe(&mut store).await.map(Reply::Info),
                Call::Call(name, input) => api
                    .call_call(&mut store, &name, &input)
                    .await
                    .map(Reply::Value),
            }
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
        let (reply, failure) = match result {
            Ok(reply) => (Some(reply), None),
            Err(error) => {
                let end = classify(Err(error), store.data(), &self.limits, budget);
                let failure = match end {
                    RunEnd::Failed(f) => f,
                    RunEnd::Success => Failure::Exit { code: 0 },
                    RunEnd::Stopped { .. } => Failure::Instantiate {
                        message: "stopped".into(),
                    },
                };
                (None, Some(failure))
            }
        };
        let result_name = match (&reply, &failure) {
            (Some(Reply::Value(Err(_))), _) => "error",
            (Some(_), _) => "ok",
            (None, _) => "failed",
        };
        runtime
            .inner
            .plugins
            .record_call(self.id, failure.is_some());
        let event = ContainerEvent::PluginCall {
            plugin: self.id.to_string(),
            call: call_name.clone(),
            result: result_name,
            failure: failure.clone(),
            stats,
        };
        runtime
            .inner
            .audit
            .append_async(self.identity.entry(event))
            .await?;
        match (reply, failure) {
            (Some(reply), _) => Ok(reply),
            (None, failure) => Err(RuntimeError::PluginFailed {
                plugin: self.info.name.clone(),
                call: call_name,
                failure: failure.unwrap_or(Failure::Instantiate {
                    message: "unknown".into(),
                }),
            }),
        }
    }
}
