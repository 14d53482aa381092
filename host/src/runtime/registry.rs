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
}

/// Every loaded plugin of a runtime, by id.
#[derive(Debug, Default)]
pub(crate) struct PluginRegistry(Mutex<HashMap<Uuid, PluginContext>>);

impl PluginRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, PluginContext>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a loaded plugin.
    pub(crate) fn insert(&self, plugin: PluginContext) {
        self.lock().insert(plugin.id, plugin);
    }

    /// Counts one call of plugin `id`, and whether it failed.
    pub(crate) fn record_call(&self, id: Uuid, failed: bool) {
        if let Some(plugin) = self.lock().get_mut(&id) {
            plugin.calls += 1;
            plugin.failures += u64::from(failed);
        }
    }

    /// A copy of every entry.
    pub(crate) fn snapshot(&self) -> HashMap<Uuid, PluginContext> {
        self.lock().clone()
    }
}
