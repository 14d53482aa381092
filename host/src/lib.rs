//! ForgeOne: a WebAssembly microkernel whose containers are components.
//!
//! The host boots from a trust anchor and verifies every component before a
//! byte of it reaches the compiler, runs each one as a fuel-metered sandbox
//! with a lifecycle under a supervisor, places and schedules work by
//! priority, identity, trust, load and constraints, and writes every event to
//! a tamper-evident audit log.
//!
//! This crate is the host library and the `forgeone` CLI. The modules:
//!
//! - [`audit`]: the hash-chained, checkpointed audit log.
//! - [`boot`]: trust anchor, signatures, boot manifest, measurements, recovery.
//! - [`keys`]: Ed25519 keys and key ids.
//! - [`identity`]: who a container runs as, and how far it is trusted.
//! - [`runtime`]: containers: fuel-metered sandboxes with a lifecycle, supervision and plugins.
//! - [`scheduler`]: placement (nodes, constraints, scores, preemption) and
//!   the work-stealing executor.
//! - [`policy`]: who may run what, where, how urgently and how much.
//! - [`deployment`]: the `forgeone.toml` format.
//! - [`kernel`]: all of the above wired together, as `forgeone up` runs it.
#![deny(missing_docs)]

pub mod audit;
pub mod boot;
pub mod deployment;
pub mod identity;
pub mod kernel;
pub mod keys;
pub mod policy;
pub mod runtime;
pub mod scheduler;

pub use deployment::{Deployment, DeploymentError};
pub use identity::Priority;
pub use identity::{IdentityContext, TrustLevel, TrustVector};
pub use kernel::{Kernel, KernelConfig, KernelError};
pub use keys::{KeyError, KeyId, PublicKey, SigningKey};
pub use policy::{Isolation, PolicySet, TenantPolicy};
pub use runtime::{
    ContainerConfig, ContainerContext, ContainerStatus, Outcome, Runtime, RuntimeConfig,
    RuntimeContext, RuntimeError, RuntimeStatus,
};
pub use scheduler::{Allocation, ScheduleError, SchedulerContext, Workload};
