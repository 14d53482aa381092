//! What the lifecycle reports and is configured with: the runtime's
//! configuration and policy, container and runtime status, and the
//! snapshots ([`ContainerContext`], [`RuntimeContext`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use uuid::Uuid;

use crate::boot::Digest;
use crate::identity::IdentityContext;
use crate::runtime::cache::Compression;
use crate::runtime::engine::EngineConfig;
use crate::runtime::grants::Grants;
use crate::runtime::limits::Limits;
use crate::runtime::outcome::{Failure, Outcome, RunEnd};
use crate::runtime::registry::PluginContext;
use crate::runtime::store::CacheStats;
use crate::runtime::supervisor::{BackoffConfig, Quarantine, RestartPolicy, RestartRecord};

/// The runtime's own policy (the lead unifies this with `policy::PolicySet`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RuntimePolicy {
    /// Run components that are not signed (loudly audited). Default: false.
    pub allow_unsigned: bool,
    /// Let containers that ask for it use the network. Default: false.
    pub allow_network: bool,
}

/// What happens to running containers when the audit log cannot be
/// written (with [`FailMode::Closed`](crate::audit::FailMode::Closed), the
/// default; with `FailMode::Open` they run on). Either way nothing new
/// starts until the log can be written again, and no guest output or log
/// line returns to the guest while it cannot: the guest waits in the host
/// call until the policy has acted. Like auditd's `disk_full_action`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum AuditFailure {
    /// Stop every running container at once (no grace period: at its next
    /// yield point, or in the host call it waits in). Its run ends with
    /// [`Failure::AuditUnavailable`], which no restart policy restarts.
    /// The default.
    #[default]
    Stop,
    /// Pause every running container (it keeps its memory and uses no
    /// CPU) and resume it when the log can be written again, which is then
    /// recorded as `container.audit_paused` with the cause and the time
    /// paused. Operators cannot resume it before that.
    Pause,
}

/// How a [`Runtime`](super::Runtime) is set up.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct RuntimeConfig {
    pub(crate) engine: EngineConfig,
    pub(crate) policy: RuntimePolicy,
    pub(crate) cache_dir: Option<PathBuf>,
    pub(crate) cache_compression: Compression,
    pub(crate) backoff: BackoffConfig,
    pub(crate) on_audit_failure: AuditFailure,
}

impl RuntimeConfig {
    /// Default engine, no unsigned code, no network, no on-disk cache,
    /// Kubernetes-like backoff.
    pub fn new() -> Self {
        RuntimeConfig::default()
    }

    /// The engine settings. By default, [`EngineConfig::new`]. Takes a
    /// chain too: `.engine(EngineConfig::new().pooling(..))`.
    pub fn engine(&mut self, engine: impl Into<EngineConfig>) -> &mut Self {
        self.engine = engine.into();
        self
    }

    /// Allows unsigned components (each launch is audited as
    /// `policy.unsigned_allowed`). By default, refused.
    pub fn allow_unsigned(&mut self, allow: bool) -> &mut Self {
        self.policy.allow_unsigned = allow;
        self
    }

    /// Allows containers that are granted network to use it. By default,
    /// refused.
    pub fn allow_network(&mut self, allow: bool) -> &mut Self {
        self.policy.allow_network = allow;
        self
    }

    /// Caches compiled components in `dir` (integrity-checked). By default,
    /// no on-disk cache: each process compiles each component once.
    pub fn cache_dir(&mut self, dir: impl Into<PathBuf>) -> &mut Self {
        self.cache_dir = Some(dir.into());
        self
    }

    /// How the on-disk cache ([`cache_dir`](Self::cache_dir)) writes
    /// compiled artifacts; it reads either. By default,
    /// [`Compression::None`] (a compressed hit is slower; see
    /// [`Compression::Zstd`]).
    pub fn cache_compression(&mut self, compression: Compression) -> &mut Self {
        self.cache_compression = compression;
        self
    }

    /// Restart backoff and crash-loop detection. By default,
    /// [`BackoffConfig::new`].
    pub fn backoff(&mut self, backoff: BackoffConfig) -> &mut Self {
        self.backoff = backoff;
        self
    }

    /// What happens to running containers when the audit log cannot be
    /// written. By default, [`AuditFailure::Stop`].
    pub fn on_audit_failure(&mut self, action: AuditFailure) -> &mut Self {
        self.on_audit_failure = action;
        self
    }
}

/// The state of the runtime as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub enum RuntimeStatus {
    /// Being set up.
    Starting,
    /// Accepting and running containers.
    Running,
    /// Running, but something is wrong (the text says what).
    Degraded(String),
    /// Stopping all containers.
    Stopping,
    /// Stopped; accepts nothing.
    Stopped,
}

/// Where a container is in its lifecycle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub enum ContainerStatus {
    /// Created; instantiating, or waiting to (re)start.
    Creating,
    /// Running.
    Running,
    /// Paused: not scheduled, consuming no CPU.
    Paused,
    /// Held after a crash loop until an operator releases it.
    Quarantined(Box<Quarantine>),
    /// A stop was requested; it ends within the grace period or is dropped
    /// at its next yield point.
    Stopping,
    /// Ended: exited 0 or was stopped.
    Stopped,
    /// Ended by a failure (a restart may be scheduled; see
    /// [`ContainerContext::next_restart`]).
    Failed(Failure),
}

impl ContainerStatus {
    /// A short name: `creating`, `running`, `paused`, `quarantined`,
    /// `stopping`, `stopped`, `failed`.
    pub fn name(&self) -> &'static str {
        match self {
            ContainerStatus::Creating => "creating",
            ContainerStatus::Running => "running",
            ContainerStatus::Paused => "paused",
            ContainerStatus::Quarantined(_) => "quarantined",
            ContainerStatus::Stopping => "stopping",
            ContainerStatus::Stopped => "stopped",
            ContainerStatus::Failed(_) => "failed",
        }
    }
}

impl std::fmt::Display for ContainerStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ContainerStatus::Failed(failure) => write!(f, "failed ({failure})"),
            ContainerStatus::Quarantined(q) => write!(f, "quarantined ({q})"),
            other => f.write_str(other.name()),
        }
    }
}

/// What a container is: the component, who signed it, what it was granted
/// and its limits. Fixed at launch.
#[derive(Debug, Clone, Serialize)]
#[allow(clippy::upper_case_acronyms)]
pub struct ExecutionDNA {
    /// blake3 digest of the component's exact bytes.
    pub component_digest: Digest,
    /// The component's name.
    pub component_name: String,
    /// Key ids of the anchor keys that signed it (empty when unsigned).
    pub signers: Vec<String>,
    /// True when it runs unsigned under `allow_unsigned`.
    pub unsigned: bool,
    /// Granted capabilities.
    pub capabilities: Grants,
    /// Limits per run.
    pub limits: Limits,
    /// Restart policy.
    pub restart: RestartPolicy,
}

/// What a container uses (the current or last run).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ContainerResources {
    /// Fuel consumed by the current or last run (updated at every epoch
    /// tick while running).
    pub fuel_consumed: u64,
    /// Fuel consumed by all finished runs (the same figure as
    /// [`RunTotals::fuel_consumed`]).
    pub fuel_consumed_total: u64,
    /// Peak linear memory of the current or last run.
    pub peak_memory: u64,
}

/// A container, as the runtime tracks it.
#[derive(Debug, Clone, Serialize)]
pub struct ContainerContext {
    /// Container id.
    pub id: Uuid,
    /// Display name.
    pub name: String,
    /// Who it runs as (unsigned code always runs as `untrusted`).
    pub identity: IdentityContext,
    /// What it is.
    pub execution_dna: ExecutionDNA,
    /// What it uses.
    pub resources: ContainerResources,
    /// Where it is in its lifecycle.
    pub status: ContainerStatus,
    /// The current or last run number (0 before the first).
    pub run: u32,
    /// Outcome of the last finished run.
    pub last_outcome: Option<Outcome>,
    /// One record per finished run, oldest first: the last
    /// [`ContainerContext::HISTORY_LIMIT`] runs (older records are dropped;
    /// [`totals`](ContainerContext::totals) still counts them).
    pub history: Vec<RestartRecord>,
    /// Totals over every finished run, including those no longer in
    /// [`history`](ContainerContext::history).
    pub totals: RunTotals,
    /// When the next restart is due, if one is scheduled.
    pub next_restart: Option<chrono::DateTime<chrono::Utc>>,
}

impl ContainerContext {
    /// How many run records [`history`](ContainerContext::history) keeps
    /// (the most recent ones), so that a container restarting for days
    /// takes constant memory.
    pub const HISTORY_LIMIT: usize = 32;

    /// Records a finished run: its figures become the current resources,
    /// it is counted in the totals and appended to the history, whose
    /// oldest record is dropped past [`HISTORY_LIMIT`](Self::HISTORY_LIMIT).
    pub(crate) fn record_run(&mut self, outcome: &Outcome) {
        let fuel = outcome.stats.fuel_consumed;
        self.resources.fuel_consumed = fuel;
        self.resources.fuel_consumed_total =
            self.resources.fuel_consumed_total.saturating_add(fuel);
        self.resources.peak_memory = outcome.stats.peak_memory;
        self.totals.runs += 1;
        self.totals.fuel_consumed = self.totals.fuel_consumed.saturating_add(fuel);
        let ended = match &outcome.end {
            RunEnd::Success => {
                self.totals.successes += 1;
                "exit 0"
            }
            RunEnd::Stopped { .. } => {
                self.totals.stopped += 1;
                "stopped"
            }
            RunEnd::Failed(failure) => {
                self.totals.failures += 1;
                failure.kind()
            }
        };
        if self.history.len() >= Self::HISTORY_LIMIT {
            let excess = self.history.len() + 1 - Self::HISTORY_LIMIT;
            self.history.drain(..excess);
        }
        self.history.push(RestartRecord {
            run: outcome.run,
            ended_at: chrono::Utc::now(),
            ended: ended.into(),
            failure: outcome.failure().cloned(),
            fuel_consumed: fuel,
            backoff: Duration::ZERO,
        });
        self.last_outcome = Some(outcome.clone());
    }
}

/// Counts over every finished run of a container, kept while its
/// [`history`](ContainerContext::history) holds only the most recent runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RunTotals {
    /// Finished runs.
    pub runs: u64,
    /// Runs that exited 0.
    pub successes: u64,
    /// Runs that failed (any [`Failure`]).
    pub failures: u64,
    /// Runs an operator stopped.
    pub stopped: u64,
    /// Fuel consumed by all finished runs.
    pub fuel_consumed: u64,
}

/// Totals over all containers.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RuntimeResources {
    /// Containers currently running or paused.
    pub active_containers: usize,
    /// Memory limits of the active containers, summed.
    pub memory_reserved: u64,
    /// Fuel consumed by all runs so far.
    pub fuel_consumed: u64,
    /// Compiled component cache counters.
    pub cache: CacheStats,
}

/// A snapshot of the runtime.
#[derive(Debug, Clone, Serialize)]
pub struct RuntimeContext {
    /// All containers.
    pub containers: HashMap<Uuid, ContainerContext>,
    /// All loaded plugins.
    pub plugins: HashMap<Uuid, PluginContext>,
    /// Totals.
    pub resources: RuntimeResources,
    /// The runtime's policy.
    pub policies: RuntimePolicy,
    /// The runtime's state.
    pub status: RuntimeStatus,
}
