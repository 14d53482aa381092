//! The plugin registry: what the runtime knows of each loaded plugin. The
//! plugin API fills it as plugins are loaded and called; the lifecycle
//! reports it in [`RuntimeContext`](super::RuntimeContext).

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Serialize;
use uuid::Uuid;

use crate::boot::Digest;
use crate::identity::IdentityContext;

/// A loaded plugin, as the runtime tracks it.
#[derive(Debug, Clone, Serialize)]
pub struct PluginContext {
    /// Plugin id.
    pub id: Uuid,
    /// Name the plugin reports.
    pub name: String,
    /// Version the plugin reports.
    pub version: String,
    /// blake3 digest of the component.
    pub component_digest: Digest,
    /// Who its calls run as.
    pub identity: IdentityContext,
    /// Calls made.
    pub calls: u64,
    /// Calls that trapped or hit a limit.
    pub failures: u64,
    /// Calls whose caller dropped them (a timeout, a client that went
    /// away) after the guest had started: counted in `calls` too.
    pub cancelled: u64,
    /// Calls refused because the instance pool was full (and, with a wait
    /// queue, stayed full until the wait ended): not in `calls`, since no
    /// guest code ran.
    pub busy: u64,
}

/// How a plugin call ended, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallEnd {
    /// The guest returned (a value or its own error).
    Returned,
    /// It trapped or hit a limit.
    Failed,
    /// The caller dropped the call while the guest ran.
    Cancelled,
    /// Refused: no instance slot was free.
    Busy,
}

/// Every loaded plugin of a runtime, by id.
#[derive(Debug, Default)]
pub(crate) struct PluginRegistry {
    plugins: Mutex<HashMap<Uuid, PluginContext>>,
    /// Woken whenever a plugin call gives its instance slot back, for
    /// calls waiting for one ([`Plugin::queue`](super::Plugin::queue)).
    pub(crate) slot_freed: tokio::sync::Notify,
}

impl PluginRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, PluginContext>> {
        self.plugins.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a loaded plugin.
    pub(crate) fn insert(&self, plugin: PluginContext) {
        self.lock().insert(plugin.id, plugin);
    }

    /// Counts one call of plugin `id` by how it ended.
    pub(crate) fn record_call(&self, id: Uuid, ended: CallEnd) {
        if let Some(plugin) = self.lock().get_mut(&id) {
            match ended {
                CallEnd::Returned => plugin.calls += 1,
                CallEnd::Failed => {
                    plugin.calls += 1;
                    plugin.failures += 1;
                }
                CallEnd::Cancelled => {
                    plugin.calls += 1;
                    plugin.cancelled += 1;
                }
                CallEnd::Busy => plugin.busy += 1,
            }
        }
    }

    /// A copy of every entry.
    pub(crate) fn snapshot(&self) -> HashMap<Uuid, PluginContext> {
        self.lock().clone()
    }
}
