//! The container runtime: verified components run as fuel-metered,
//! memory-bounded, deadline-bounded, audited containers with a lifecycle
//! and a supervisor.
//!
//! - **Engine** ([`EngineConfig`]): one wasmtime engine per runtime, async,
//!   fuel metering, epoch interruption; on-demand allocation with a cache of
//!   idle fiber stacks, or the pooling allocator.
//! - **Component store**: each verified digest is compiled once and its
//!   `InstancePre` kept; compiled artifacts are cached on disk under a MAC
//!   and rebuilt when they fail the check ([`CacheStats`]). Only
//!   [`VerifiedComponent`](crate::boot::VerifiedComponent)s reach
//!   `Component::new`.
//! - **Containers** ([`ContainerConfig`], [`Limits`], [`Grants`]): one
//!   instance in its own `Store`, with fuel, memory/table/instance limits,
//!   a wall-clock deadline, an identity, a WASI context with only the
//!   granted directories, env and args, and bounded output capture streamed
//!   to an [`OutputSink`] and to the audit log.
//! - **Lifecycle** ([`Runtime`], [`ContainerStatus`], [`ContainerContext`],
//!   [`RuntimeContext`]): launch, pause, resume, stop, start, release, wait.
//! - **Outcomes** ([`Outcome`], [`RunEnd`], [`Failure`]): exit, out of
//!   fuel, deadline, memory or table limit, trap with backtrace, host call
//!   denied.
//! - **Supervision** ([`RestartPolicy`], [`BackoffConfig`], [`Quarantine`]).
//! - **Plugins** ([`Plugin`], [`Value`]): typed calls into signed plugin
//!   components, limits per call.

mod bindings;
mod config;
mod container;
mod control;
mod engine;
mod events;
mod grants;
mod host;
mod lifecycle;
mod limits;
mod outcome;
mod output;
mod plugin;
mod registry;
#[cfg(unix)]
mod stacks;
mod store;
mod supervisor;

use std::path::PathBuf;

use uuid::Uuid;

pub use config::ContainerConfig;
pub use engine::EngineConfig;
pub use grants::{DirGrant, DirGrantError, Grants};
pub use lifecycle::{
    ContainerContext, ContainerResources, ContainerStatus, ExecutionDNA, PreparedContainer,
    RunTotals, Runtime, RuntimeConfig, RuntimeContext, RuntimePolicy, RuntimeResources,
    RuntimeStatus,
};
pub use limits::Limits;
pub use outcome::{Failure, Outcome, RunEnd, RunStats};
pub use output::{OutputLine, OutputSink, Stream};
pub use plugin::{CallError, Plugin, PluginInfo, Value};
pub use registry::PluginContext;
pub use store::CacheStats;
pub use supervisor::{BackoffConfig, Quarantine, RestartPolicy, RestartRecord};

/// Errors of the runtime.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The engine could not be set up (or a store could not be configured).
    #[error("wasmtime engine: {0}")]
    Engine(String),
    /// Unsigned code, and the policy does not allow it.
    #[error(
        "component `{name}` ({digest}) is not signed and this runtime does not allow unsigned code"
    )]
    UnsignedRefused {
        /// Component name.
        name: String,
        /// Its digest.
        digest: String,
    },
    /// Network was requested, and the policy does not allow it.
    #[error("container `{name}` asks for network access, which the runtime policy does not allow")]
    NetworkRefused {
        /// Container name.
        name: String,
    },
    /// The bytes are not a valid component.
    #[error("component `{name}` ({digest}) does not compile: {message}")]
    Compile {
        /// Component name.
        name: String,
        /// Its digest.
        digest: String,
        /// The compiler's error.
        message: String,
    },
    /// The component is not a `wasi:cli/command` (no `wasi:cli/run` export).
    #[error("component `{name}` is not a wasi:cli/command: {message}")]
    NotACommand {
        /// Component name.
        name: String,
        /// Why.
        message: String,
    },
    /// The component does not export `forgeone:kernel/plugin-api`, or
    /// cannot link.
    #[error("component `{name}` is not a usable ForgeOne plugin: {message}")]
    NotAPlugin {
        /// Component name.
        name: String,
        /// Why.
        message: String,
    },
    /// The compiled-component cache directory or its secret is unusable.
    #[error("compiled cache {path}: {source}")]
    Cache {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A granted directory could not be opened.
    #[error("cannot grant directory {host} as `{guest}`: {message}")]
    Preopen {
        /// Host path.
        host: PathBuf,
        /// Guest path.
        guest: String,
        /// Why.
        message: String,
    },
    /// No such container.
    #[error("no container {0}")]
    NotFound(Uuid),
    /// The lifecycle request does not apply in the container's state (the
    /// refusal is audited as `container.transition_refused`).
    #[error("cannot {action} container {id}: it is {status}")]
    IllegalTransition {
        /// Container id.
        id: Uuid,
        /// The request (`pause`, `resume`, `stop`, `start`, `release`).
        action: &'static str,
        /// The state it is in.
        status: &'static str,
    },
    /// A plugin call trapped or hit a limit.
    #[error("plugin `{plugin}` call `{call}` failed: {failure}")]
    PluginFailed {
        /// Plugin name.
        plugin: String,
        /// Call name.
        call: String,
        /// What happened.
        failure: Failure,
    },
    /// The runtime is shutting down or stopped.
    #[error("the runtime is shutting down; no new work is accepted")]
    ShuttingDown,
    /// The audit log cannot be written: no work runs unaudited.
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
}
