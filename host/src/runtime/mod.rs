//! The container runtime: verified components run as fuel-metered,
//! memory-bounded, deadline-bounded, audited containers with a lifecycle
//! and a supervisor.
//!
//! - **Engine** ([`EngineConfig`]): one wasmtime engine per runtime, async,
//!   fuel metering, epoch interruption; on-demand allocation with a cache of
//!   idle fiber stacks, or the pooling allocator.
//! - **Component store**: each verified digest is checked against the
//!   structural limits of [`EngineConfig`] (functions, code, locals,
//!   modules), compiled once on a bounded pool of compile threads, and its
//!   `InstancePre` kept; a container waits for its compile only until its
//!   deadline. Compiled artifacts are cached on disk, zstd-compressed
//!   ([`Compression`]), under a MAC, and rebuilt when they fail the check
//!   ([`CacheStats`]). Only
//!   [`VerifiedComponent`](crate::boot::VerifiedComponent)s reach
//!   `Component::new`.
//! - **Containers** ([`ContainerConfig`], [`Limits`], [`Grants`]): one
//!   instance in its own `Store`, with fuel, memory/table/instance limits,
//!   a wall-clock deadline, an identity, a WASI context with only the
//!   granted directories ([`DirGrant`]: `HOST::GUEST[:ro|:rw]`, read-only
//!   unless `:rw`), env, args and stdin ([`StdinGrant`]); stdout and stderr
//!   in full to the embedder's [`ByteSink`]s (exact, with back-pressure,
//!   [`TerminalEscaper`] for terminals), and a kept copy, bounded, to an
//!   [`OutputSink`] and to the audit log.
//!   Filesystem calls run on the guest's thread, as under `wasmtime run`
//!   ([`FileIo`]), except what could block for good (a FIFO, a device),
//!   which uses the blocking pool.
//! - **Lifecycle** ([`Runtime`], [`ContainerStatus`], [`ContainerContext`],
//!   [`RuntimeContext`]): launch, pause, resume, stop, start, release, wait;
//!   each container keeps its last [`ContainerContext::HISTORY_LIMIT`] runs
//!   and [`RunTotals`] over all of them.
//! - **Outcomes** ([`Outcome`], [`RunEnd`], [`Failure`]): exit, out of
//!   fuel, deadline, memory or table limit, trap with backtrace, host call
//!   denied.
//! - **Supervision** ([`RestartPolicy`], [`BackoffConfig`], [`Quarantine`]).
//! - **Fail closed** ([`AuditFailure`]): a run starts only once its
//!   `container.created` and `container.started` records are durable, and
//!   while the audit log cannot be written running containers are stopped
//!   (or paused) and nothing new starts.
//! - **Plugins** ([`Plugin`], [`Value`], [`PluginContext`]): typed calls
//!   into signed plugin components, limits per call.
//! - **Errors** ([`RuntimeError`]): each with its context, and the
//!   underlying error as its source.

mod bindings;
mod cache;
mod caps;
mod compile;
mod config;
mod container;
mod control;
mod dynamic;
mod engine;
mod error;
mod events;
mod file_io;
mod fs_guard;
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

pub use cache::Compression;
pub use config::ContainerConfig;
pub use engine::{Allocation, EngineConfig};
pub use error::RuntimeError;
pub use file_io::{FileIo, FileIoError};
pub use grants::{DirGrant, DirGrantError, Grants, StdinGrant};
pub use host::Host;
pub use lifecycle::{
    AuditFailure, ContainerContext, ContainerResources, ContainerStatus, ExecutionDNA,
    PreparedContainer, RunTotals, Runtime, RuntimeConfig, RuntimeContext, RuntimePolicy,
    RuntimeResources, RuntimeStatus,
};
pub use limits::Limits;
pub use outcome::{Failure, Outcome, RunEnd, RunStats, SinkFailure};
pub use output::{ByteSink, OutputLine, OutputSink, Stream, TerminalEscaper};
pub use plugin::{
    CallError, Called, GuestCall, Plugin, PluginCallError, PluginInfo, PluginLoader, Value,
};
pub use registry::PluginContext;
pub use store::CacheStats;
pub use supervisor::{BackoffConfig, Quarantine, RestartPolicy, RestartPolicyError, RestartRecord};

/// Every config in ForgeOne has `&mut self -> &mut Self` setters (the
/// style of `wasmtime::Config`), and every method that keeps a config
/// takes `impl Into<..>`: so a chain of setters on a temporary can be
/// passed as it is, and is copied.
macro_rules! chains {
    ($($config:ty),*) => {$(
        impl From<&mut $config> for $config {
            fn from(config: &mut $config) -> $config {
                config.clone()
            }
        }
    )*};
}
chains!(EngineConfig, RuntimeConfig, ContainerConfig, Limits);
