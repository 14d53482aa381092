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
//! - [`keys`]: Ed25519 keys and key ids.
//! - [`audit`]: the hash-chained, checkpointed audit log.
//! - [`identity`]: who a container runs as, how far it is trusted and how
//!   urgent its work is (the shared vocabulary).
//! - [`policy`]: who may run what, where, how urgently and how much.
//! - [`boot`]: trust anchor, signatures, boot manifest, measurements, recovery.
//! - [`runtime`]: containers: fuel-metered sandboxes with a lifecycle, supervision and plugins.
//! - [`scheduler`]: placement (nodes, constraints, scores, preemption); its
//!   work-stealing executor is the kernel's own.
//! - [`deployment`]: the `forgeone.toml` and `nodes.toml` formats, and their
//!   conversion into the other modules' inputs.
//! - [`kernel`]: all of the above wired together, as `forgeone up` runs it.
//! - [`telemetry`]: metrics (a projection of the audit log, and gauges
//!   read from a kernel) and the Prometheus endpoint.
//! - [`cluster`]: many hosts on NATS JetStream, each running its
//!   assignments through a kernel.
//!
//! Each module uses only those listed before it (the kernel uses them all);
//! `tests/all/layering.rs` checks this on the source.
#![deny(missing_docs)]

pub mod audit;
pub mod boot;
pub mod cluster;
pub mod deployment;
pub mod identity;
pub mod kernel;
pub mod keys;
pub mod policy;
pub mod runtime;
pub mod scheduler;
pub mod telemetry;

pub use deployment::{Deployment, DeploymentError};
pub use identity::{IdentityContext, Priority, TrustLevel, TrustVector};
pub use kernel::{Kernel, KernelConfig, KernelError};
pub use keys::{KeyError, KeyId, PublicKey, SigningKey};
pub use policy::{Isolation, PolicySet, TenantPolicy};
pub use runtime::{
    ContainerConfig, ContainerContext, ContainerStatus, Outcome, Runtime, RuntimeConfig,
    RuntimeContext, RuntimeError, RuntimeStatus,
};
pub use scheduler::{Allocation, ScheduleError, SchedulerContext, Workload};
