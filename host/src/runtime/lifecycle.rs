//! The [`Runtime`]: launches containers and drives their lifecycle.
//!
//! ```text
//!            launch
//!              │
//!          Creating ──────────────┐ link failure
//!              │                  ▼
//!   pause  ┌─ Running ─┐ end   Failed(..) ◄─┐
//!  ┌──────►│           ├──────► Stopped     │ restart policy + backoff
//!  │       └─ Paused ◄─┘        (or back to Creating)
//!  │ resume     │ stop                      │ crash loop
//!  └────────────┴──► Stopping ──► Stopped   └──► Quarantined ── release ──► Creating
//! ```
//!
//! Pause and stop take effect while a guest is busy: guests yield to the
//! host every [`EngineConfig::fuel_yield_interval`] units of fuel, and at
//! every epoch tick when a request is pending. A paused container's future
//! is simply not polled, so it uses no CPU until resumed.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use uuid::Uuid;

use crate::audit::{Actor, AuditLog, Entry};
use crate::boot::Digest;
use crate::identity::{IdentityContext, TrustLevel};

use super::RuntimeError;
use super::container::{ContainerConfig, Grants, Limits, Run, RunSpec, guest_identity};
use super::control::Control;
use super::engine::{EngineConfig, EpochTicker};
use super::events::ContainerEvent;
use super::host::{GuestIdentity, Host};
use super::outcome::{Failure, Outcome, RunEnd, RunStats};
use super::plugin::PluginContext;
use super::store::{CacheStats, ComponentStore};
use super::supervisor::{BackoffConfig, Quarantine, RestartPolicy, RestartRecord};

/// The runtime's own policy (the lead unifies this with `policy::PolicySet`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RuntimePolicy {
    /// Run components that are not signed (loudly audited). Default: false.
    pub allow_unsigned: bool,
    /// Let containers that ask for it use the network. Default: false.
    pub allow_network: bool,
}

/// How a [`Runtime`] is set up.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct RuntimeConfig {
    pub(crate) engine: EngineConfig,
    pub(crate) policy: RuntimePolicy,
    pub(crate) cache_dir: Option<PathBuf>,
    pub(crate) backoff: BackoffConfig,
}

impl RuntimeConfig {
    /// Default engine, no unsigned code, no network, no on-disk cache,
    /// Kubernetes-like backoff.
    pub fn new() -> Self {
        RuntimeConfig::default()
    }

    /// The engine settings. By default, [`EngineConfig::new`].
    pub fn engine(&mut self, engine: EngineConfig) -> &mut Self {
        self.engine = engine;
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

    /// Restart backoff and crash-loop detection. By default,
    /// [`BackoffConfig::new`].
    pub fn backoff(&mut self, backoff: BackoffConfig) -> &mut Self {
        self.backoff = backoff;
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
    /// Fuel consumed by all runs.
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
    /// One record per finished run.
    pub history: Vec<RestartRecord>,
    /// When the next restart is due, if one is scheduled.
    pub next_restart: Option<chrono::DateTime<chrono::Utc>>,
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

struct ContainerEntry {
    ctx: ContainerContext,
    /// Who the container is, with the actor and subjects of its records.
    who: Arc<GuestIdentity>,
    control: Arc<Control>,
    /// `None` when the component cannot link (it can never run).
    spec: Option<RunSpec>,
    settled: tokio::sync::watch::Sender<Option<Outcome>>,
    supervising: bool,
}

pub(crate) struct Inner {
    pub(crate) store: ComponentStore,
    pub(crate) audit: AuditLog,
    pub(crate) config: RuntimeConfig,
    containers: Mutex<HashMap<Uuid, ContainerEntry>>,
    pub(crate) plugins: Mutex<HashMap<Uuid, PluginContext>>,
    status: Mutex<RuntimeStatus>,
    _ticker: EpochTicker,
}

/// The container runtime: one wasmtime engine, a component store, and the
/// containers it runs. Clone it freely (it is a handle).
#[derive(Clone)]
pub struct Runtime {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("policy", &self.inner.config.policy)
            .finish_non_exhaustive()
    }
}

/// A container that is set up and has not started: the scheduler polls
/// [`PreparedContainer::into_future`] on its own executor, or
/// [`Runtime::launch_container`] spawns it on tokio.
pub struct PreparedContainer {
    id: Uuid,
    future: Pin<Box<dyn Future<Output = Outcome> + Send + 'static>>,
}

impl std::fmt::Debug for PreparedContainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedContainer")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl PreparedContainer {
    /// The container's id (already listed by the runtime, as `Creating`).
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// The future that runs the container, with its restarts, until it
    /// settles (stopped, failed for good, or quarantined). It yields at
    /// every fuel interval, so an executor can interleave many; timers use
    /// the ambient tokio runtime (or wasmtime-wasi's fallback runtime).
    pub fn into_future(self) -> Pin<Box<dyn Future<Output = Outcome> + Send + 'static>> {
        self.future
    }
}

impl ContainerEntry {
    /// An audit entry for `event` about this container, by its identity.
    fn audit_entry(&self, event: ContainerEvent) -> Entry {
        self.who.entry(event)
    }
}

impl Runtime {
    /// Creates a runtime writing its events to `audit`.
    pub fn new(config: RuntimeConfig, audit: AuditLog) -> Result<Runtime, RuntimeError> {
        let engine = config.engine.build()?;
        let mut linker = wasmtime::component::Linker::<Host>::new(&engine);
        super::host::add_to_linker(&mut linker)
            .map_err(|e| RuntimeError::Engine(format!("linking host imports: {e:#}")))?;
        let ticker = EpochTicker::start(&engine, config.engine.epoch_tick)?;
        let store =
            ComponentStore::new(engine, linker, config.cache_dir.as_deref(), audit.clone())?;
        Ok(Runtime {
            inner: Arc::new(Inner {
                store,
                audit,
                config,
                containers: Mutex::new(HashMap::new()),
                plugins: Mutex::new(HashMap::new()),
                status: Mutex::new(RuntimeStatus::Running),
                _ticker: ticker,
            }),
        })
    }

    fn containers(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, ContainerEntry>> {
        self.inner
            .containers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn audit(&self, entry: Entry) -> Result<(), RuntimeError> {
        self.inner.audit.append(entry)?;
        Ok(())
    }

    /// Refuses unsigned code unless allowed; audits either way. Returns the
    /// identity the code will run as.
    pub(crate) fn admit(
        &self,
        component: &crate::boot::VerifiedComponent,
        mut identity: IdentityContext,
        subject: Option<Uuid>,
    ) -> Result<IdentityContext, RuntimeError> {
        if *self.inner.status.lock().unwrap_or_else(|p| p.into_inner()) != RuntimeStatus::Running {
            return Err(RuntimeError::ShuttingDown);
        }
        // Fail closed: no work that cannot be audited.
        self.inner.audit.ensure_writable()?;
        let digest = component.digest().to_hex();
        let entry_for = |event: &ContainerEvent| {
            let mut entry = Entry::new(event).actor(&identity).component(digest.clone());
            if let Some(id) = subject {
                entry = entry.container(id);
            }
            entry
        };
        if component.is_signed() {
            identity.trust.signers = u8::try_from(component.signers().len()).unwrap_or(u8::MAX);
            return Ok(identity);
        }
        let event_fields = (component.name().to_string(), digest.clone());
        if !self.inner.config.policy.allow_unsigned {
            let event = ContainerEvent::UnsignedRefused {
                name: event_fields.0,
                digest: event_fields.1,
            };
            self.audit(entry_for(&event))?;
            return Err(RuntimeError::UnsignedRefused {
                name: component.name().to_string(),
                digest,
            });
        }
        let event = ContainerEvent::UnsignedAllowed {
            name: event_fields.0,
            digest: event_fields.1,
        };
        // Loud: the event is a warning in the operator's logs too.
        self.audit(entry_for(&event))?;
        // Unsigned code never claims trust.
        identity.trust.level = TrustLevel::Untrusted;
        identity.trust.signers = 0;
        Ok(identity)
    }

    /// Sets up a container (compiles its component once, creates its
    /// record as `Creating`) and returns it with the future that runs it.
    pub fn prepare_container(
        &self,
        config: ContainerConfig,
        identity: IdentityContext,
    ) -> Result<PreparedContainer, RuntimeError> {
        let id = Uuid::new_v4();
        let identity = self.admit(&config.component, identity, Some(id))?;
        if config.grants.network && !self.inner.config.policy.allow_network {
            let event = ContainerEvent::NetworkRefused {
                name: config.name.clone(),
            };
            self.audit(Entry::owned(event).container(id).actor(&identity))?;
            return Err(RuntimeError::NetworkRefused { name: config.name });
        }
        let compiled = self.inner.store.get(&config.component)?;
        let who = Arc::new(guest_identity(id, &config, identity.clone()));
        let spec = match &compiled.pre {
            Ok(_) => Some(RunSpec {
                pre: compiled
                    .command
                    .clone()
                    .map_err(|message| RuntimeError::NotACommand {
                        name: config.name.clone(),
                        message,
                    })?,
                identity: who.clone(),
                config: config.clone(),
                audit: self.inner.audit.clone(),
                fuel_yield_interval: self.inner.config.engine.fuel_yield_interval,
            }),
            Err(_) => None,
        };
        let ctx = ContainerContext {
            id,
            name: config.name.clone(),
            identity: identity.clone(),
            execution_dna: ExecutionDNA {
                component_digest: config.component.digest(),
                component_name: config.component.name().to_string(),
                signers: config
                    .component
                    .signers()
                    .iter()
                    .map(|k| k.to_string())
                    .collect(),
                unsigned: !config.component.is_signed(),
                capabilities: config.grants.clone(),
                limits: config.limits.clone(),
                restart: config.restart,
            },
            resources: ContainerResources::default(),
            status: ContainerStatus::Creating,
            run: 0,
            last_outcome: None,
            history: Vec::new(),
            next_restart: None,
        };
        let event = ContainerEvent::Created {
            name: config.name.clone(),
            workload: config.workload.clone(),
            signers: ctx.execution_dna.signers.clone(),
            capabilities: config.grants.clone(),
            limits: config.limits.clone(),
            restart: config.restart.as_str(),
        };
        self.audit(who.entry(event))?;
        let control = Arc::new(Control::default());
        let (settled, _) = tokio::sync::watch::channel(None);
        self.containers().insert(
            id,
            ContainerEntry {
                ctx,
                who,
                control: control.clone(),
                spec: spec.clone(),
                settled,
                supervising: true,
            },
        );
        let runtime = self.clone();
        let future: Pin<Box<dyn Future<Output = Outcome> + Send>> = match spec {
            Some(spec) => Box::pin(async move { runtime.supervise(id, control, spec).await }),
            None => {
                let failure =
                    compiled
                        .pre
                        .as_ref()
                        .err()
                        .cloned()
                        .unwrap_or(Failure::Instantiate {
                            message: "cannot link".into(),
                        });
                Box::pin(async move { runtime.link_failed(id, failure) })
            }
        };
        Ok(PreparedContainer { id, future })
    }

    /// Launches a container on tokio (the ambient runtime, or
    /// wasmtime-wasi's fallback runtime when called outside one) and
    /// returns its id at once. See [`Runtime::prepare_container`] to drive
    /// it yourself.
    pub fn launch_container(
        &self,
        config: ContainerConfig,
        identity: IdentityContext,
    ) -> Result<Uuid, RuntimeError> {
        let prepared = self.prepare_container(config, identity)?;
        let id = prepared.id();
        let future = prepared.into_future();
        wasmtime_wasi::runtime::with_ambient_tokio_runtime(|| tokio::spawn(future));
        Ok(id)
    }

    fn link_failed(&self, id: Uuid, failure: Failure) -> Outcome {
        let outcome = Outcome {
            end: RunEnd::Failed(failure.clone()),
            stats: RunStats::default(),
            run: 1,
            last_output: Vec::new(),
        };
        self.record_run(id, &outcome);
        self.settle(id, ContainerStatus::Failed(failure), &outcome);
        outcome
    }

    fn set_status(&self, id: Uuid, status: ContainerStatus) {
        if let Some(entry) = self.containers().get_mut(&id) {
            entry.ctx.status = status;
        }
    }

    /// Marks the container settled (nothing more will run without an
    /// operator) and wakes `wait`ers.
    fn settle(&self, id: Uuid, status: ContainerStatus, outcome: &Outcome) {
        let mut containers = self.containers();
        if let Some(entry) = containers.get_mut(&id) {
            entry.ctx.status = status;
            entry.ctx.next_restart = None;
            if !matches!(entry.ctx.status, ContainerStatus::Quarantined(_)) {
                entry.supervising = false;
            }
            entry.settled.send_replace(Some(outcome.clone()));
        }
    }

    /// Audits a finished run and records it in the container's history.
    fn record_run(&self, id: Uuid, outcome: &Outcome) {
        let event = match &outcome.end {
            RunEnd::Success => ContainerEvent::Exited {
                run: outcome.run,
                code: 0,
                stats: outcome.stats.clone(),
            },
            RunEnd::Stopped { forced } => ContainerEvent::Stopped {
                run: outcome.run,
                forced: *forced,
                stats: outcome.stats.clone(),
            },
            RunEnd::Failed(failure) => ContainerEvent::Failed {
                run: outcome.run,
                failure: failure.clone(),
                stats: outcome.stats.clone(),
            },
        };
        let mut containers = self.containers();
        let Some(entry) = containers.get_mut(&id) else {
            return;
        };
        let ctx = &mut entry.ctx;
        ctx.resources.fuel_consumed = outcome.stats.fuel_consumed;
        ctx.resources.fuel_consumed_total += outcome.stats.fuel_consumed;
        ctx.resources.peak_memory = outcome.stats.peak_memory;
        ctx.last_outcome = Some(outcome.clone());
        ctx.history.push(RestartRecord {
            run: outcome.run,
            ended_at: chrono::Utc::now(),
            ended: match &outcome.end {
                RunEnd::Success => "exit 0".into(),
                RunEnd::Stopped { .. } => "stopped".into(),
                RunEnd::Failed(f) => f.kind().into(),
            },
            failure: outcome.failure().cloned(),
            fuel_consumed: outcome.stats.fuel_consumed,
            backoff: Duration::ZERO,
        });
        let entry = entry.audit_entry(event);
        drop(containers);
        if let Err(e) = self.audit(entry) {
            tracing::error!(container = %id, "audit append failed: {e}");
        }
    }

    /// Waits until `done` is true, re-checking on every lifecycle request,
    /// or until `timeout` (if any) elapses. Returns true if `done`.
    async fn wait_for(
        control: &Control,
        timeout: Option<Duration>,
        done: impl Fn(&Control) -> bool,
    ) -> bool {
        let until = timeout.map(|t| tokio::time::Instant::now() + t);
        loop {
            let notified = control.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if done(control) {
                return true;
            }
            match until {
                Some(until) => {
                    if tokio::time::Instant::now() >= until {
                        return false;
                    }
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = tokio::time::sleep_until(until) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Runs a container with its restart policy until it settles.
    async fn supervise(self, id: Uuid, control: Arc<Control>, spec: RunSpec) -> Outcome {
        let backoff = self.inner.config.backoff.clone();
        let policy = spec.config.restart;
        let mut run = self.containers().get(&id).map_or(0, |e| e.ctx.run);
        let mut consecutive_failures = 0u32;
        let mut attempt = 0u32;
        loop {
            run += 1;
            // Wait out a pause requested before the run starts.
            if control.lock().paused {
                Self::wait_for(&control, None, |c| {
                    let r = c.lock();
                    !r.paused || r.stop_at.is_some()
                })
                .await;
            }
            if control.stop_requested() {
                return self.stopped_before_run(id, &control, run);
            }
            {
                let mut containers = self.containers();
                if let Some(entry) = containers.get_mut(&id) {
                    entry.ctx.run = run;
                    entry.ctx.next_restart = None;
                    entry.ctx.status = ContainerStatus::Running;
                }
            }
            // Built from the run's identity, with its shared actor and
            // subjects: no strings are copied per record.
            let entry = spec.identity.entry(ContainerEvent::Started { run });
            if let Err(e) = self.audit(entry) {
                tracing::error!(container = %id, "audit append failed: {e}");
            }
            let outcome = match Run::prepare(&spec, control.clone(), run) {
                Ok(prepared) => prepared.into_future().await,
                Err(e) => Outcome {
                    end: RunEnd::Failed(Failure::Instantiate {
                        message: e.to_string(),
                    }),
                    stats: RunStats::default(),
                    run,
                    last_output: Vec::new(),
                },
            };
            self.record_run(id, &outcome);

            let stop_requested = control.stop_requested();
            if stop_requested || matches!(outcome.end, RunEnd::Stopped { .. }) {
                self.clear_requests(&control);
                self.settle(id, ContainerStatus::Stopped, &outcome);
                return outcome;
            }
            let failure = outcome.failure().cloned();
            if outcome.stats.wall_time >= backoff.reset_after {
                consecutive_failures = 0;
                attempt = 0;
            }
            if failure.is_some() {
                consecutive_failures += 1;
            }
            let permanent = failure.as_ref().is_some_and(Failure::is_permanent);
            let restart = !permanent
                && match policy {
                    RestartPolicy::Never => false,
                    RestartPolicy::OnFailure => failure.is_some(),
                    RestartPolicy::Always => true,
                };
            let ended_status = match &failure {
                Some(f) => ContainerStatus::Failed(f.clone()),
                None => ContainerStatus::Stopped,
            };
            if !restart {
                self.settle(id, ended_status, &outcome);
                return outcome;
            }
            if let Some(last_failure) = failure.clone()
                && backoff.crash_loop_threshold > 0
                && consecutive_failures >= backoff.crash_loop_threshold
            {
                let quarantine = self.quarantine(id, consecutive_failures, last_failure, &outcome);
                self.settle(
                    id,
                    ContainerStatus::Quarantined(Box::new(quarantine)),
                    &outcome,
                );
                Self::wait_for(&control, None, |c| {
                    let r = c.lock();
                    r.released || r.stop_at.is_some()
                })
                .await;
                if control.stop_requested() {
                    self.clear_requests(&control);
                    self.settle(id, ContainerStatus::Stopped, &outcome);
                    return outcome;
                }
                control.lock().released = false;
                consecutive_failures = 0;
                attempt = 0;
                continue;
            }
            attempt += 1;
            let delay = backoff.delay(attempt);
            {
                let mut containers = self.containers();
                if let Some(entry) = containers.get_mut(&id) {
                    entry.ctx.status = ended_status;
                    entry.ctx.next_restart = chrono::Duration::from_std(delay)
                        .ok()
                        .map(|d| chrono::Utc::now() + d);
                    if let Some(last) = entry.ctx.history.last_mut() {
                        last.backoff = delay;
                    }
                }
            }
            let event = ContainerEvent::RestartScheduled {
                run: run + 1,
                backoff_ms: delay.as_millis() as u64,
                policy: policy.as_str(),
            };
            let entry = self.entry_for(id, event);
            if let Err(e) = self.audit(entry) {
                tracing::error!(container = %id, "audit append failed: {e}");
            }
            Self::wait_for(&control, Some(delay), |c| c.stop_requested()).await;
            if control.stop_requested() {
                self.clear_requests(&control);
                self.settle(id, ContainerStatus::Stopped, &outcome);
                return outcome;
            }
            self.set_status(id, ContainerStatus::Creating);
        }
    }

    fn stopped_before_run(&self, id: Uuid, control: &Control, run: u32) -> Outcome {
        let outcome = Outcome {
            end: RunEnd::Stopped { forced: false },
            stats: RunStats::default(),
            run: run.saturating_sub(1),
            last_output: Vec::new(),
        };
        self.clear_requests(control);
        self.settle(id, ContainerStatus::Stopped, &outcome);
        outcome
    }

    fn clear_requests(&self, control: &Control) {
        let mut requests = control.lock();
        requests.stop_at = None;
        requests.paused = false;
        requests.paused_since = None;
        requests.released = false;
    }

    fn quarantine(
        &self,
        id: Uuid,
        failures: u32,
        last_failure: Failure,
        outcome: &Outcome,
    ) -> Quarantine {
        let history = self
            .containers()
            .get(&id)
            .map(|e| e.ctx.history.clone())
            .unwrap_or_default();
        let last_output = outcome.last_output.clone();
        let quarantine = Quarantine {
            failures,
            last_failure: last_failure.clone(),
            fuel_consumed: outcome.stats.fuel_consumed,
            last_output: last_output.clone(),
            restart_history: history.clone(),
        };
        let event = ContainerEvent::Quarantined {
            failures,
            last_failure,
            fuel_consumed: outcome.stats.fuel_consumed,
            // Lines are kept escaped; the event escapes them once more so
            // the record shows exactly what the evidence holds.
            last_output: last_output
                .iter()
                .map(|l| crate::audit::Untrusted::new(l))
                .collect(),
            restart_history: history
                .iter()
                .map(|h| serde_json::to_value(h).unwrap_or_default())
                .collect(),
        };
        let entry = self.entry_for(id, event);
        if let Err(e) = self.audit(entry) {
            tracing::error!(container = %id, "audit append failed: {e}");
        }
        quarantine
    }

    fn with_entry<R>(
        &self,
        id: Uuid,
        f: impl FnOnce(&mut ContainerEntry) -> Result<R, &'static str>,
        action: &'static str,
    ) -> Result<R, RuntimeError> {
        let mut containers = self.containers();
        let entry = containers.get_mut(&id).ok_or(RuntimeError::NotFound(id))?;
        match f(entry) {
            Ok(r) => Ok(r),
            // Refused: audited, and an error naming the current status.
            Err(_) => {
                let status = entry.ctx.status.name();
                let record = entry.audit_entry(ContainerEvent::TransitionRefused {
                    action,
                    status: status.to_string(),
                });
                drop(containers);
                if let Err(e) = self.audit(record) {
                    tracing::error!(container = %id, "audit append failed: {e}");
                }
                Err(RuntimeError::IllegalTransition { id, action, status })
            }
        }
    }

    /// An audit entry for `event` about container `id` (by the host when
    /// the container is gone).
    fn entry_for(&self, id: Uuid, event: ContainerEvent) -> Entry {
        match self.containers().get(&id) {
            Some(entry) => entry.audit_entry(event),
            None => Entry::owned(event).container(id).actor(Actor::host()),
        }
    }

    fn audit_ok(&self, id: Uuid, event: ContainerEvent) -> Result<(), RuntimeError> {
        let entry = self.entry_for(id, event);
        self.audit(entry)
    }

    /// Pauses a running container: it stops at its next yield point and
    /// uses no CPU until resumed (its deadline clock stops too).
    pub fn pause(&self, id: Uuid) -> Result<(), RuntimeError> {
        let control = self.with_entry(
            id,
            |entry| match entry.ctx.status {
                ContainerStatus::Running => {
                    entry.ctx.status = ContainerStatus::Paused;
                    Ok(entry.control.clone())
                }
                _ => Err("not running"),
            },
            "pause",
        )?;
        let mut requests = control.lock();
        requests.paused = true;
        requests.paused_since = Some(Instant::now());
        control.wake(requests);
        self.audit_ok(id, ContainerEvent::Paused)
    }

    /// Resumes a paused container.
    pub fn resume(&self, id: Uuid) -> Result<(), RuntimeError> {
        let control = self.with_entry(
            id,
            |entry| match entry.ctx.status {
                ContainerStatus::Paused => {
                    entry.ctx.status = ContainerStatus::Running;
                    Ok(entry.control.clone())
                }
                _ => Err("not paused"),
            },
            "resume",
        )?;
        let mut requests = control.lock();
        requests.paused = false;
        let paused_for = requests
            .paused_since
            .take()
            .map(|since| since.elapsed())
            .unwrap_or_default();
        requests.paused_total += paused_for;
        control.wake(requests);
        self.audit_ok(
            id,
            ContainerEvent::Resumed {
                paused_ms: paused_for.as_millis() as u64,
            },
        )
    }

    /// Stops a container: it may finish within its grace period
    /// ([`ContainerConfig::stop_grace`]); after that it is dropped at its
    /// next yield point. A paused container is stopped at once. Stopping a
    /// container that is already stopping forces it now.
    pub fn stop(&self, id: Uuid) -> Result<(), RuntimeError> {
        self.stop_inner(id, None)
    }

    /// Like [`Runtime::stop`] with an explicit grace period.
    pub fn stop_with_grace(&self, id: Uuid, grace: Duration) -> Result<(), RuntimeError> {
        self.stop_inner(id, Some(grace))
    }

    fn stop_inner(&self, id: Uuid, grace: Option<Duration>) -> Result<(), RuntimeError> {
        let (control, grace) = self.with_entry(
            id,
            |entry| {
                let restart_pending = entry.ctx.next_restart.is_some();
                let grace = grace.unwrap_or(
                    entry
                        .spec
                        .as_ref()
                        .map_or(Duration::ZERO, |s| s.config.stop_grace),
                );
                let grace = match entry.ctx.status {
                    ContainerStatus::Running => grace,
                    ContainerStatus::Creating
                    | ContainerStatus::Paused
                    | ContainerStatus::Quarantined(_)
                    | ContainerStatus::Stopping => Duration::ZERO,
                    ContainerStatus::Failed(_) | ContainerStatus::Stopped
                        if restart_pending && entry.supervising =>
                    {
                        Duration::ZERO
                    }
                    _ => return Err("not running"),
                };
                entry.ctx.status = ContainerStatus::Stopping;
                Ok((entry.control.clone(), grace))
            },
            "stop",
        )?;
        let mut requests = control.lock();
        let at = Instant::now() + grace;
        requests.stop_at = Some(requests.stop_at.map_or(at, |prev| prev.min(at)));
        control.wake(requests);
        self.audit_ok(
            id,
            ContainerEvent::StopRequested {
                grace_ms: grace.as_millis() as u64,
            },
        )
    }

    /// Releases a quarantined container: it restarts with a fresh backoff.
    pub fn release(&self, id: Uuid) -> Result<(), RuntimeError> {
        let control = self.with_entry(
            id,
            |entry| match entry.ctx.status {
                ContainerStatus::Quarantined(_) => {
                    entry.ctx.status = ContainerStatus::Creating;
                    entry.settled.send_replace(None);
                    Ok(entry.control.clone())
                }
                _ => Err("not quarantined"),
            },
            "release",
        )?;
        let mut requests = control.lock();
        requests.released = true;
        control.wake(requests);
        self.audit_ok(id, ContainerEvent::Released)
    }

    /// Starts a stopped or failed container again (same configuration and
    /// id, next run number). A quarantined container must be released
    /// instead.
    pub fn start(&self, id: Uuid) -> Result<(), RuntimeError> {
        let (control, spec) = self.with_entry(
            id,
            |entry| match (&entry.ctx.status, &entry.spec) {
                (ContainerStatus::Stopped | ContainerStatus::Failed(_), Some(spec))
                    if !entry.supervising =>
                {
                    entry.ctx.status = ContainerStatus::Creating;
                    entry.supervising = true;
                    entry.settled.send_replace(None);
                    Ok((entry.control.clone(), spec.clone()))
                }
                _ => Err("not startable"),
            },
            "start",
        )?;
        self.inner.audit.ensure_writable()?;
        let runtime = self.clone();
        wasmtime_wasi::runtime::with_ambient_tokio_runtime(|| {
            tokio::spawn(async move { runtime.supervise(id, control, spec).await })
        });
        Ok(())
    }

    /// Waits until the container settles (stopped, failed with no restart
    /// due, or quarantined) and returns its last run's outcome.
    pub async fn wait(&self, id: Uuid) -> Result<Outcome, RuntimeError> {
        let mut rx = self
            .containers()
            .get(&id)
            .map(|e| e.settled.subscribe())
            .ok_or(RuntimeError::NotFound(id))?;
        let outcome = rx
            .wait_for(Option::is_some)
            .await
            .map_err(|_| RuntimeError::NotFound(id))?;
        Ok(outcome.clone().expect("waited for Some"))
    }

    /// The container's status.
    pub fn status(&self, id: Uuid) -> Result<ContainerStatus, RuntimeError> {
        self.containers()
            .get(&id)
            .map(|e| e.ctx.status.clone())
            .ok_or(RuntimeError::NotFound(id))
    }

    /// A snapshot of one container (resources are live while it runs).
    pub fn context(&self, id: Uuid) -> Option<ContainerContext> {
        self.containers().get(&id).map(live_context)
    }

    /// True when a paused container's future has actually parked (it is
    /// no longer executing guest code).
    pub fn is_parked(&self, id: Uuid) -> bool {
        self.containers()
            .get(&id)
            .is_some_and(|e| e.control.parked.load(Ordering::SeqCst))
    }

    /// All containers, oldest first by run start is not guaranteed: sorted
    /// by name, then id.
    pub fn list(&self) -> Vec<ContainerContext> {
        let mut list: Vec<ContainerContext> =
            self.containers().values().map(live_context).collect();
        list.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        list
    }

    /// Forgets a settled container (stopped or failed, nothing pending) and
    /// returns its last context; long-running services call this so the
    /// runtime's table does not grow without bound. A container that is
    /// still running, restarting or quarantined is refused.
    pub fn remove(&self, id: Uuid) -> Result<ContainerContext, RuntimeError> {
        let removable = self.with_entry(
            id,
            |entry| match entry.ctx.status {
                ContainerStatus::Stopped | ContainerStatus::Failed(_) if !entry.supervising => {
                    Ok(())
                }
                _ => Err("still active"),
            },
            "remove",
        );
        removable?;
        self.containers()
            .remove(&id)
            .map(|e| e.ctx)
            .ok_or(RuntimeError::NotFound(id))
    }

    /// Compiled-component cache counters.
    pub fn cache_stats(&self) -> CacheStats {
        self.inner.store.stats()
    }

    /// A snapshot of the whole runtime.
    pub fn runtime_context(&self) -> RuntimeContext {
        let containers: HashMap<Uuid, ContainerContext> = self
            .containers()
            .iter()
            .map(|(id, e)| (*id, live_context(e)))
            .collect();
        let mut resources = RuntimeResources {
            cache: self.cache_stats(),
            ..RuntimeResources::default()
        };
        for ctx in containers.values() {
            resources.fuel_consumed += ctx.resources.fuel_consumed_total;
            if matches!(
                ctx.status,
                ContainerStatus::Running | ContainerStatus::Paused | ContainerStatus::Stopping
            ) {
                resources.active_containers += 1;
                resources.memory_reserved += ctx.execution_dna.limits.max_memory;
            }
        }
        let plugins = self
            .inner
            .plugins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        RuntimeContext {
            containers,
            plugins,
            resources,
            policies: self.inner.config.policy.clone(),
            status: self
                .inner
                .status
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    /// Stops every container at once (no grace) and refuses new work.
    pub async fn shutdown(&self) {
        *self.inner.status.lock().unwrap_or_else(|p| p.into_inner()) = RuntimeStatus::Stopping;
        let ids: Vec<Uuid> = self.containers().keys().copied().collect();
        for id in &ids {
            let _ = self.stop_with_grace(*id, Duration::ZERO);
        }
        for id in ids {
            let supervising = self.containers().get(&id).is_some_and(|e| e.supervising);
            if supervising {
                let _ = self.wait(id).await;
            }
        }
        *self.inner.status.lock().unwrap_or_else(|p| p.into_inner()) = RuntimeStatus::Stopped;
    }

    /// The runtime's state.
    pub fn runtime_status(&self) -> RuntimeStatus {
        self.inner
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

fn live_context(entry: &ContainerEntry) -> ContainerContext {
    let mut ctx = entry.ctx.clone();
    if matches!(
        ctx.status,
        ContainerStatus::Running | ContainerStatus::Paused | ContainerStatus::Stopping
    ) {
        ctx.resources.fuel_consumed = entry.control.fuel_consumed.load(Ordering::Relaxed);
        ctx.resources.peak_memory = entry.control.peak_memory.load(Ordering::Relaxed);
    }
    ctx
}
