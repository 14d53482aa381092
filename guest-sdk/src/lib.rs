//! The ForgeOne guest SDK: what a WebAssembly guest links to talk to the
//! ForgeOne kernel through the `forgeone:kernel` imports.
//!
//! A container guest is an ordinary Rust program built for `wasm32-wasip2`:
//!
//! ```no_run
//! // src/main.rs of a guest built with `cargo build --target wasm32-wasip2`
//! let me = forgeone_guest::identity();
//! println!("hello from {} (tenant {})", me.container_id, me.tenant);
//! forgeone_guest::log::info!("started with {} signer(s)", me.signers.len());
//! ```
//!
//! A plugin enables the `plugin` feature, implements its `Guest` trait and
//! exports it with `export_plugin!` (both exist with the feature only):
//!
//! ```ignore
//! use forgeone_guest::{CallError, Guest, PluginInfo, PluginInfoExt, Value};
//!
//! struct Upper;
//! impl Guest for Upper {
//!     fn describe() -> PluginInfo {
//!         PluginInfo::new("upper", "1.0.0", ["upper"])
//!     }
//!     fn call(name: String, input: Value) -> Result<Value, CallError> {
//!         match (name.as_str(), input) {
//!             ("upper", Value::Text(t)) => Ok(Value::Text(t.to_uppercase())),
//!             ("upper", _) => Err(CallError::InvalidInput("expected text".into())),
//!             (other, _) => Err(CallError::UnknownCall(other.into())),
//!         }
//!     }
//! }
//! forgeone_guest::export_plugin!(Upper);
//! ```
//!
//! Outside a ForgeOne host (for example in a native `cargo test` of the
//! guest's own logic) the imports are unavailable: calling [`identity`] or
//! logging panics there.
#![deny(missing_docs)]

// The `plugin` bindings name their runtime as `forgeone_guest::...` so the
// export macro works in dependents; this makes that path resolve here too.
#[cfg(feature = "plugin")]
extern crate self as forgeone_guest;

#[cfg(not(feature = "plugin"))]
mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "forgeone:kernel/guest",
        generate_all,
    });
}

#[cfg(feature = "plugin")]
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "forgeone:kernel/plugin",
        generate_all,
        pub_export_macro: true,
        export_macro_name: "__export_plugin_world",
        default_bindings_module: "forgeone_guest::bindings",
        runtime_path: "forgeone_guest::bindings::__rt_wit_bindgen",
    });

    #[doc(hidden)]
    pub use wit_bindgen::rt as __rt_wit_bindgen;
}

use bindings::forgeone::kernel::identity as wit_identity;

/// How far the kernel trusts this container.
pub use bindings::forgeone::kernel::identity::TrustLevel;

impl std::fmt::Display for TrustLevel {
    /// The level's WIT name: `untrusted`, `low`, `medium`, `high`, `system`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TrustLevel::Untrusted => "untrusted",
            TrustLevel::Low => "low",
            TrustLevel::Medium => "medium",
            TrustLevel::High => "high",
            TrustLevel::System => "system",
        })
    }
}

/// The identity of the running container, as the kernel established it.
///
/// It is fixed for the container's lifetime; the guest cannot change it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The container's id (a hyphenated UUID).
    pub container_id: String,
    /// The deployment workload this container runs for, if any.
    pub workload: Option<String>,
    /// The tenant owning the workload.
    pub tenant: String,
    /// The principal acting for the tenant.
    pub principal: String,
    /// The trust level the kernel granted.
    pub trust: TrustLevel,
    /// blake3 digest (hex) of the component's exact bytes.
    pub component_digest: String,
    /// Ids of the keys whose signatures verified the component.
    pub signers: Vec<String>,
}

/// Returns the identity of the calling container.
pub fn identity() -> Identity {
    let wit_identity::ContainerIdentity {
        container_id,
        workload,
        tenant,
        principal,
        trust,
        component_digest,
        signers,
    } = wit_identity::current();
    Identity {
        container_id,
        workload,
        tenant,
        principal,
        trust,
        component_digest,
        signers,
    }
}

/// Structured logs, tagged by the host with the container's identity.
///
/// Use the macros (`info!`, `warn!`, ...) for formatted messages, or
/// [`log::write`] for a message with key/value fields.
pub mod log {
    use crate::bindings::forgeone::kernel::log as wit_log;

    /// Severity of a log line.
    pub use wit_log::Level;

    /// Writes one log line with structured fields.
    ///
    /// ```no_run
    /// use forgeone_guest::log::{self, Level};
    /// log::write(Level::Info, "request served", &[("status", "200"), ("ms", "4")]);
    /// ```
    pub fn write(level: Level, message: &str, fields: &[(&str, &str)]) {
        let fields: Vec<wit_log::Field> = fields
            .iter()
            .map(|(key, value)| wit_log::Field {
                key: (*key).to_owned(),
                value: (*value).to_owned(),
            })
            .collect();
        wit_log::write(level, message, &fields);
    }

    #[doc(hidden)]
    pub fn __write_fmt(level: Level, args: std::fmt::Arguments<'_>) {
        match args.as_str() {
            Some(message) => write(level, message, &[]),
            None => write(level, &args.to_string(), &[]),
        }
    }

    /// Logs a formatted message at `trace` level.
    #[macro_export]
    macro_rules! __forgeone_trace {
        ($($arg:tt)+) => { $crate::log::__write_fmt($crate::log::Level::Trace, format_args!($($arg)+)) };
    }
    /// Logs a formatted message at `debug` level.
    #[macro_export]
    macro_rules! __forgeone_debug {
        ($($arg:tt)+) => { $crate::log::__write_fmt($crate::log::Level::Debug, format_args!($($arg)+)) };
    }
    /// Logs a formatted message at `info` level.
    #[macro_export]
    macro_rules! __forgeone_info {
        ($($arg:tt)+) => { $crate::log::__write_fmt($crate::log::Level::Info, format_args!($($arg)+)) };
    }
    /// Logs a formatted message at `warn` level.
    #[macro_export]
    macro_rules! __forgeone_warn {
        ($($arg:tt)+) => { $crate::log::__write_fmt($crate::log::Level::Warn, format_args!($($arg)+)) };
    }
    /// Logs a formatted message at `error` level.
    #[macro_export]
    macro_rules! __forgeone_error {
        ($($arg:tt)+) => { $crate::log::__write_fmt($crate::log::Level::Error, format_args!($($arg)+)) };
    }

    pub use crate::__forgeone_debug as debug;
    pub use crate::__forgeone_error as error;
    pub use crate::__forgeone_info as info;
    pub use crate::__forgeone_trace as trace;
    pub use crate::__forgeone_warn as warn;
}

#[cfg(feature = "plugin")]
pub use plugin::*;

/// Without the `plugin` feature there is nothing to export: say so, and how
/// to turn it on, instead of an error about a macro or trait that is not
/// there.
#[cfg(not(feature = "plugin"))]
#[doc(hidden)]
#[macro_export]
macro_rules! export_plugin {
    ($($any:tt)*) => {
        compile_error!(
            "export_plugin! needs the `plugin` feature of forgeone-guest: in Cargo.toml, \
             forgeone-guest = { ..., features = [\"plugin\"] } (and crate-type = [\"cdylib\"] \
             under [lib], or Cargo writes no .wasm)"
        );
    };
}

/// The configuration the service passed to this plugin when it loaded it
/// (`runtime.plugin(..).config("key", "value")` on the host): read-only
/// key-value pairs, the same in every call. Plugins only (the `plugin`
/// feature); a container gets its settings as environment variables.
///
/// Natively (a plugin crate's own `cargo test`) there is no host and no
/// configuration: [`get`](config::get) returns `None` and
/// [`all`](config::all) nothing, so the plugin's defaults are what its unit
/// tests see.
#[cfg(feature = "plugin")]
pub mod config {
    #[cfg(target_family = "wasm")]
    use crate::bindings::forgeone::kernel::config as wit_config;

    /// The value of `key`, or `None` if the service did not set it.
    pub fn get(key: &str) -> Option<String> {
        #[cfg(target_family = "wasm")]
        return wit_config::get(key);
        #[cfg(not(target_family = "wasm"))]
        {
            let _ = key;
            None
        }
    }

    /// Every key and value the service set, sorted by key.
    pub fn all() -> Vec<(String, String)> {
        #[cfg(target_family = "wasm")]
        return wit_config::get_all();
        #[cfg(not(target_family = "wasm"))]
        Vec::new()
    }
}

#[cfg(feature = "plugin")]
mod plugin {
    use crate::bindings::exports::forgeone::kernel::plugin_api::Guest as PluginApi;
    use crate::bindings::forgeone::kernel::types;

    /// A value passed into or returned from a plugin call.
    pub use types::Value;

    /// Why a plugin call failed.
    pub use types::CallError;

    /// What a plugin says about itself.
    pub use types::PluginInfo;

    /// Helpers for building a [`PluginInfo`].
    pub trait PluginInfoExt {
        /// A plugin named `name` at `version` accepting `calls`.
        fn new<I, S>(name: &str, version: &str, calls: I) -> PluginInfo
        where
            I: IntoIterator<Item = S>,
            S: Into<String>;
    }

    impl PluginInfoExt for PluginInfo {
        fn new<I, S>(name: &str, version: &str, calls: I) -> PluginInfo
        where
            I: IntoIterator<Item = S>,
            S: Into<String>,
        {
            PluginInfo {
                name: name.to_owned(),
                version: version.to_owned(),
                calls: calls.into_iter().map(Into::into).collect(),
            }
        }
    }

    /// The guest side of a plugin: implement this and export it with
    /// [`export_plugin!`](crate::export_plugin).
    ///
    /// The name follows wit-bindgen's convention for the trait an export
    /// implements. It differs from the host's `forgeone::runtime::Plugin`,
    /// which is a service's handle to a loaded plugin. [`Value`],
    /// [`CallError`] and [`PluginInfo`] keep their names on both sides:
    /// they are generated from the same WIT types and have the same shape.
    pub trait Guest {
        /// Describes the plugin (name, version, calls).
        fn describe() -> PluginInfo;
        /// Runs the call `name` on `input`.
        fn call(name: String, input: Value) -> Result<Value, CallError>;
    }

    #[doc(hidden)]
    pub struct __Adapter<T>(std::marker::PhantomData<T>);

    impl<T> std::fmt::Debug for __Adapter<T> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("__Adapter")
        }
    }

    impl<T: Guest> PluginApi for __Adapter<T> {
        fn describe() -> PluginInfo {
            T::describe()
        }
        fn call(name: String, input: Value) -> Result<Value, CallError> {
            T::call(name, input)
        }
    }

    /// Exports a type implementing [`Guest`] as this component's
    /// `forgeone:kernel/plugin-api` interface. Use once per component.
    ///
    /// The export exists only when building for wasm: natively (`cargo
    /// test` of a plugin crate, or any native build of its `cdylib`) the
    /// plugin is a plain Rust type its unit tests call directly, and no
    /// component-model symbol (whose names a native linker refuses) is
    /// emitted.
    #[macro_export]
    macro_rules! export_plugin {
        ($ty:ty) => {
            // The generated export macro takes a plain identifier.
            #[cfg(target_family = "wasm")]
            type __ForgeonePluginAdapter = $crate::__Adapter<$ty>;
            #[cfg(target_family = "wasm")]
            $crate::bindings::__export_plugin_world!(__ForgeonePluginAdapter);
            // Natively, still check that the type is a plugin.
            #[cfg(not(target_family = "wasm"))]
            const _: fn() = || {
                fn is_a_plugin<T: $crate::Guest>() {}
                is_a_plugin::<$ty>();
            };
        };
    }
}
