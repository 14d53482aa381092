//! [`RuntimeError`]: what can go wrong in the runtime, with the context an
//! operator needs and the underlying error kept as its source.
//!
//! wasmtime's own `wasmtime::Error` does not implement
//! `std::error::Error`; it is kept as a boxed `std::error::Error` (its
//! conversion keeps its context chain as the chain of sources). Where a
//! message includes an underlying error, it renders that error's whole
//! chain on one line (`outer: inner: innermost`), so a one-line report
//! loses nothing; [`source`](std::error::Error::source) returns the same
//! error for callers that walk or downcast it.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use uuid::Uuid;

use super::outcome::Failure;

/// An underlying error kept as the source of a [`RuntimeError`].
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors of the runtime.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The engine could not be set up (or a store could not be configured).
    #[error("wasmtime engine: {context}: {}", Chain(&**source))]
    Engine {
        /// What was being done.
        context: &'static str,
        /// wasmtime's (or the OS's) error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
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
    #[error("component `{name}` ({digest}) does not compile: {}", Chain(&**source))]
    Compile {
        /// Component name.
        name: String,
        /// Its digest.
        digest: String,
        /// The compiler's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// The component is over one of the engine's structural limits
    /// (functions, bytes of code, the largest function, locals, core
    /// modules): refused before it was compiled. Raise the limit with the
    /// [`EngineConfig`](super::EngineConfig) setter it names.
    #[error(
        "component `{name}` ({digest}) is refused before compiling: it has {count} {what}, over \
         the limit of {limit} (EngineConfig::{setting})"
    )]
    TooComplex {
        /// Component name.
        name: String,
        /// Its digest.
        digest: String,
        /// What was counted: `functions`, `bytes of code`, `bytes in one
        /// function body`, `locals` or `core modules`.
        what: &'static str,
        /// How many it has (counting stops once over the limit).
        count: u64,
        /// The limit.
        limit: u64,
        /// The `EngineConfig` setter of the limit, e.g. `max_functions`.
        setting: &'static str,
    },
    /// The component is not a `wasi:cli/command` (no `wasi:cli/run` export).
    #[error("component `{name}` is not a wasi:cli/command: {}", Chain(&**source))]
    NotACommand {
        /// Component name.
        name: String,
        /// Why: the type check of its exports, made once per compiled
        /// component and shared by every launch.
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// The component does not export `forgeone:kernel/plugin-api`, or
    /// cannot link.
    #[error("component `{name}` is not a usable ForgeOne plugin: {}", Chain(&**source))]
    NotAPlugin {
        /// Component name.
        name: String,
        /// Why: the type check of its exports, or the link failure (a
        /// [`Failure`]).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
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
    #[error("cannot grant directory {host} as `{guest}`: {}", Chain(&**source))]
    Preopen {
        /// Host path.
        host: PathBuf,
        /// Guest path.
        guest: String,
        /// Why it could not be opened.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// The file granted as standard input could not be used.
    #[error("cannot grant {} as standard input: {reason}", path.display())]
    Stdin {
        /// The file.
        path: PathBuf,
        /// Why: the I/O error, or what the path is instead of a regular
        /// file.
        reason: String,
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
    /// A plugin call found no free instance slot in the pooling
    /// allocator (and, with [`Plugin::queue`](crate::runtime::Plugin::queue),
    /// none came free before its wait ended, or its wait queue was full).
    /// The plugin did not run: this is back-pressure, not a crash; retry
    /// later, or size the pool ([`EngineConfig::pooling`](crate::runtime::EngineConfig::pooling))
    /// for the concurrency you need.
    #[error(
        "plugin `{plugin}` call `{call}` refused: busy ({reason}){}",
        if waited.is_zero() { String::new() } else { format!(" after waiting {} ms", waited.as_millis()) }
    )]
    Busy {
        /// Plugin name.
        plugin: String,
        /// Call name.
        call: String,
        /// The pool's own words (`maximum concurrent limit of 2 for
        /// component instances reached`), or that the wait queue was full.
        reason: String,
        /// How long the call waited for a slot.
        waited: std::time::Duration,
    },
    /// A signed plugin's `describe()` gave another name than the one it
    /// was signed under: a service that asked for one plugin would be
    /// talking to another. It is not loaded (and the refusal is audited as
    /// `container.plugin.refused`).
    #[error(
        "plugin `{signed}` refused: it was signed as `{signed}` but describes itself as `{described}`"
    )]
    PluginNameMismatch {
        /// The name its signature gives it.
        signed: String,
        /// The name its `describe()` returned.
        described: String,
    },
    /// The runtime is shutting down or stopped.
    #[error("the runtime is shutting down; no new work is accepted")]
    ShuttingDown,
    /// The audit log cannot be written: no work runs unaudited.
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
}

impl RuntimeError {
    /// An [`Engine`](RuntimeError::Engine) error: `context` failed with
    /// `error` (a `wasmtime::Error`, an `io::Error`, ...).
    pub(crate) fn engine(context: &'static str, error: impl Into<BoxError>) -> RuntimeError {
        RuntimeError::Engine {
            context,
            source: error.into(),
        }
    }
}

/// An error and its sources on one line: `outer: inner: innermost`.
struct Chain<'a>(&'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(error) = source {
            write!(f, ": {error}")?;
            source = error.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wasmtime_error_keeps_its_chain_as_sources_and_in_the_message() {
        let inner = wasmtime::Error::msg("innermost").context("inner");
        let error = RuntimeError::engine("building the engine", inner.context("outer"));
        assert_eq!(
            error.to_string(),
            "wasmtime engine: building the engine: outer: inner: innermost"
        );
        let mut chain = Vec::new();
        let mut source = std::error::Error::source(&error);
        while let Some(e) = source {
            chain.push(e.to_string());
            source = e.source();
        }
        assert_eq!(chain, ["outer", "inner", "innermost"]);
    }
}
