//! The deployment's plain data: settings, node, tenants, workloads.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use crate::boot::BootPolicy;
use crate::identity::{Priority, TrustLevel};
use crate::policy::{Isolation, TenantPolicy};
use crate::runtime::{DirGrant, FileIo, RestartPolicy};

/// How the components are verified at boot (`boot`, required).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BootMode {
    /// Against the signed boot manifest (`boot = "manifest"`): rollback
    /// protection, the pinned anchor, last-known-good recovery. A missing
    /// manifest is an error.
    Manifest,
    /// Each workload's component against its own detached signature
    /// (`boot = "signatures"`). Refused once the state directory has
    /// accepted a boot manifest, so deleting the manifest cannot switch
    /// rollback protection off.
    Signatures,
}

impl BootMode {
    /// `manifest` or `signatures`.
    pub fn as_str(self) -> &'static str {
        match self {
            BootMode::Manifest => "manifest",
            BootMode::Signatures => "signatures",
        }
    }
}

/// The top-level settings, paths resolved against the file's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Settings {
    /// The state directory (keys, last-known-good copies, rollback state).
    pub state_dir: PathBuf,
    /// The trust anchor.
    pub trust_anchor: PathBuf,
    /// The signed boot manifest (read in [`BootMode::Manifest`] only).
    pub boot_manifest: PathBuf,
    /// The host's signing key (audit checkpoints).
    pub host_key: PathBuf,
    /// The audit log.
    pub audit_log: PathBuf,
    /// How components are verified (`boot`).
    pub boot: BootMode,
    /// What boot does with a failing component.
    pub boot_policy: BootPolicy,
    /// Whether recovery may fall back to a last-known-good copy older than
    /// the highest accepted version (`allow_recovery_downgrade`; audited,
    /// and the boot is then `downgraded`). Default false.
    pub allow_recovery_downgrade: bool,
    /// Restart backoff and crash-loop detection (`[supervision]`).
    pub supervision: Supervision,
}

/// Restart backoff and crash-loop detection for every container
/// (`[supervision]`); the defaults are Kubernetes': 10 s doubling to 5 min,
/// reset after 10 min healthy, and quarantine after 5 failed runs in a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Supervision {
    /// The first restart delay (`backoff`); it doubles with each failure.
    pub backoff: Duration,
    /// The longest restart delay (`max_backoff`).
    pub max_backoff: Duration,
    /// A run lasting this long resets the backoff (`healthy_after`).
    pub healthy_after: Duration,
    /// Failed runs in a row that quarantine a container (`quarantine_after`).
    pub quarantine_after: u32,
}

impl Default for Supervision {
    fn default() -> Self {
        Supervision {
            backoff: Duration::from_secs(10),
            max_backoff: Duration::from_secs(300),
            healthy_after: Duration::from_secs(600),
            quarantine_after: 5,
        }
    }
}

/// The local host as a node (`[node]`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeConfig {
    /// Node id. Default `local`.
    pub id: String,
    /// Region. Default `local`.
    pub region: String,
    /// Zone. Default `local`.
    pub zone: String,
    /// Trust of this node. Default `medium`.
    pub trust: TrustLevel,
    /// Hardware labels.
    pub hardware: Vec<String>,
    /// Network labels.
    pub network: Vec<String>,
    /// Custom labels.
    pub labels: BTreeMap<String, String>,
    /// CPU offered, thousandths of a core. Default: all cores.
    pub cpu_millis: Option<u64>,
    /// Memory offered to containers. Default 1 GiB.
    pub memory: Option<u64>,
    /// Storage offered. Default 0.
    pub storage: Option<u64>,
    /// Container limit. Default unlimited.
    pub containers: Option<u32>,
}

/// A tenant's policy as written (`[[tenant]]`).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TenantSpec {
    /// The tenant's name.
    pub name: String,
    /// Priority cap. Default `normal`.
    pub max_priority: Priority,
    /// Concurrent container limit.
    pub max_containers: Option<u32>,
    /// Share of the inventory's CPU (0..=1).
    pub cpu_share: Option<f64>,
    /// Allowed location patterns (empty: anywhere).
    pub allowed_locations: Vec<String>,
    /// Isolation.
    pub isolation: Isolation,
    /// Trust granted by policy. Default `medium`.
    pub trust: TrustLevel,
    /// Whether the tenant's workloads may be granted network access.
    /// Default false.
    pub network: bool,
}

impl TenantSpec {
    /// The tenant's policy.
    pub fn policy(&self) -> TenantPolicy {
        let mut policy = TenantPolicy::new();
        policy
            .max_priority(self.max_priority)
            .isolation(self.isolation)
            .trust(self.trust)
            .network(self.network);
        if let Some(n) = self.max_containers {
            policy.max_containers(n);
        }
        if let Some(share) = self.cpu_share {
            policy.cpu_share(share);
        }
        for l in &self.allowed_locations {
            policy.allow_location(l.clone());
        }
        policy.build()
    }
}

/// Resource requirements as written, in base units.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResourceSpec {
    /// Fuel per run.
    pub fuel: Option<u64>,
    /// Memory limit in bytes.
    pub memory: Option<u64>,
    /// CPU in thousandths of a core.
    pub cpu_millis: Option<u32>,
    /// Wall-clock deadline.
    pub timeout: Option<Duration>,
    /// Storage grant in bytes.
    pub storage: Option<u64>,
    /// Host handles (open files, streams, ...) held at once
    /// (1..=1,000,000); the runtime's default (1,024) when absent.
    pub open_files: Option<u32>,
}

/// What a preference constrains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PreferenceKind {
    /// A location pattern.
    Location,
    /// A hardware label.
    Hardware,
    /// A network label.
    Network,
    /// A node-label selector.
    Label,
    /// A workload to be near.
    Affinity,
    /// A workload to stay away from.
    AntiAffinity,
}

/// A soft constraint with its weight (1..=100).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Preference {
    /// What it constrains.
    pub kind: PreferenceKind,
    /// The rule's text.
    pub value: String,
    /// Its weight.
    pub weight: u32,
}

/// Placement constraints as written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConstraintSpec {
    /// Location patterns; any one may match.
    pub location: Vec<String>,
    /// Hardware labels; all required.
    pub hardware: Vec<String>,
    /// Network labels; all required.
    pub network: Vec<String>,
    /// Node-label selectors; all required.
    pub labels: Vec<String>,
    /// Affinity terms; all required.
    pub affinity: Vec<String>,
    /// Anti-affinity terms; all required.
    pub anti_affinity: Vec<String>,
    /// Preferences.
    pub preferred: Vec<Preference>,
}

/// What the workload may touch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// Preopened directories.
    pub dirs: Vec<DirGrant>,
    /// Environment variables.
    pub env: BTreeMap<String, String>,
    /// Arguments (after the program name).
    pub args: Vec<String>,
    /// A regular file the workload reads as its standard input (`stdin`,
    /// resolved against the file's directory), from its beginning on every
    /// run. Default none: stdin is empty.
    pub stdin: Option<PathBuf>,
    /// Network access. Default false; only a tenant with `network = true`
    /// may grant it.
    pub network: bool,
}

/// One `[[workload]]`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct WorkloadSpec {
    /// Unique name.
    pub name: String,
    /// The component file (resolved).
    pub component: PathBuf,
    /// Its detached signature (resolved), if given.
    pub signature: Option<PathBuf>,
    /// Priority. Default `normal`.
    pub priority: Priority,
    /// Tenant (must have a `[[tenant]]`).
    pub tenant: String,
    /// Principal. Default: the workload name.
    pub principal: String,
    /// Workload labels.
    pub labels: BTreeMap<String, String>,
    /// Resources.
    pub resources: ResourceSpec,
    /// Constraints.
    pub constraints: ConstraintSpec,
    /// Capabilities.
    pub capabilities: Capabilities,
    /// Restart policy.
    pub restart: RestartPolicy,
    /// Executor worker (0-based) the container is pinned to (`worker`):
    /// it runs only there and is never stolen. Default: any worker.
    pub worker: Option<usize>,
    /// Copies a cluster runs (`replicas`, 1..=[`MAX_REPLICAS`]), spread
    /// across zones when possible (each copy is in the spread group of the
    /// workload's `app` label, or of its name). `forgeone up` runs one
    /// copy on its single node. Default 1.
    pub replicas: u32,
    /// Where its file calls run (`file_io`: `on-thread` or `pool`).
    /// Default `on-thread`.
    pub file_io: FileIo,
}

/// The most copies of one workload a deployment may ask for.
pub const MAX_REPLICAS: u32 = 1000;

/// Labels present on at least one node, for
/// [`Deployment::check_labels`](super::Deployment::check_labels).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KnownLabels {
    /// Hardware labels.
    pub hardware: BTreeSet<String>,
    /// Network labels.
    pub network: BTreeSet<String>,
    /// Custom label keys.
    pub label_keys: BTreeSet<String>,
}
