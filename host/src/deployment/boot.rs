//! How a deployment's components are booted: a [`BootBuilder`] set up as
//! the file's `boot` mode says.

use std::collections::HashSet;

use crate::boot::BootBuilder;

use super::Deployment;
use super::types::BootMode;

impl Deployment {
    /// A boot of this deployment's components as its `boot` mode says,
    /// with its trust anchor, its boot policy and its state directory
    /// (`<state_dir>/boot`: the pinned anchor, the highest accepted
    /// versions, last-known-good copies and try counters):
    ///
    /// - `boot = "manifest"`: the signed boot manifest; a missing manifest
    ///   is an error ([`BootError::Missing`](crate::boot::BootError::Missing)),
    ///   never a silent switch to per-component signatures;
    /// - `boot = "signatures"`: each workload's component file against its
    ///   own signature (`signature`, default `COMPONENT.sig.json`), each
    ///   file once; refused once the state directory has accepted a
    ///   manifest.
    ///
    /// Add the audit log, the host key and a progress reporter, then
    /// [`BootBuilder::run`]. The resulting
    /// [`BootContext`](crate::boot::BootContext) answers, for each
    /// workload's component file, the component that verified or why it
    /// was refused ([`BootContext::lookup`](crate::boot::BootContext::lookup)).
    pub fn boot_builder(&self) -> BootBuilder {
        let s = &self.settings;
        let mut builder = match s.boot {
            BootMode::Manifest => BootBuilder::from_files(&s.trust_anchor, &s.boot_manifest),
            BootMode::Signatures => {
                let mut builder = BootBuilder::signatures(&s.trust_anchor);
                let mut seen = HashSet::new();
                for w in &self.workloads {
                    if seen.insert(&w.component) {
                        builder.component(w.component.clone(), w.signature.clone());
                    }
                }
                builder
            }
        };
        builder
            .state_dir(s.state_dir.join("boot"))
            .policy(s.boot_policy)
            .allow_recovery_downgrade(s.allow_recovery_downgrade);
        builder
    }
}
