//! Launching: admission (signatures, policy), the container's record, and
//! the future that runs it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use uuid::Uuid;

use crate::audit::Entry;
use crate::boot::VerifiedComponent;
use crate::identity::{IdentityContext, TrustLevel};
use crate::runtime::RuntimeError;
use crate::runtime::caps;
use crate::runtime::config::ContainerConfig;
use crate::runtime::container::{RunSpec, guest_identity};
use crate::runtime::control::Control;
use crate::runtime::events::ContainerEvent;
use crate::runtime::outcome::{Failure, Outcome};
use crate::runtime::store::Compiled;

use super::types::{
    ContainerContext, ContainerResources, ContainerStatus, ExecutionDNA, RunTotals,
};
use super::{ContainerEntry, Runtime};

/// A container that is set up and has not started: the scheduler polls
/// [`PreparedContainer::into_future`] on its own executor, or
/// [`Runtime::launch_container`] spawns it on tokio. Until the future has
/// run to its end the container counts as supervised, so poll it to
/// completion (a stop request makes it end promptly).
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
    /// A container `id` that `future` runs.
    pub(super) fn new(
        id: Uuid,
        future: Pin<Box<dyn Future<Output = Outcome> + Send + 'static>>,
    ) -> PreparedContainer {
        PreparedContainer { id, future }
    }

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

impl Runtime {
    /// Refuses unsigned code unless allowed; audits either way. Returns the
    /// identity the code will run as.
    pub(crate) fn admit(
        &self,
        component: &VerifiedComponent,
        mut identity: IdentityContext,
        subject: Option<Uuid>,
    ) -> Result<IdentityContext, RuntimeError> {
        self.accepting()?;
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

    /// The compiled form of `component`, waiting for it as long as it
    /// takes (plugins; see [`Runtime::compiled_within`]).
    pub(crate) fn compiled(
        &self,
        component: &VerifiedComponent,
        identity: &IdentityContext,
        subject: Option<Uuid>,
    ) -> Result<Arc<Compiled>, RuntimeError> {
        Ok(self
            .compiled_within(component, identity, subject, None)?
            .expect("a wait without a deadline ends with the compile"))
    }

    /// The compiled form of `component`, waiting at most `timeout` for its
    /// compile (`Ok(None)` past it). One that is refused or cannot be
    /// compiled is refused with a `container.compile_failed` record naming
    /// it, its digest and the compiler's error (capped at 4 KiB).
    pub(crate) fn compiled_within(
        &self,
        component: &VerifiedComponent,
        identity: &IdentityContext,
        subject: Option<Uuid>,
        timeout: Option<std::time::Duration>,
    ) -> Result<Option<Arc<Compiled>>, RuntimeError> {
        self.inner
            .store
            .get_within(component, timeout)
            .inspect_err(|error| {
                let digest = component.digest().to_hex();
                let event = ContainerEvent::CompileFailed {
                    name: component.name().to_string(),
                    digest: digest.clone(),
                    error: caps::cap(error.to_string(), caps::COMPILE_ERROR),
                };
                let mut entry = Entry::owned(event).actor(identity).component(digest);
                if let Some(id) = subject {
                    entry = entry.container(id);
                }
                if let Err(e) = self.audit(entry) {
                    tracing::error!(component = component.name(), "audit append failed: {e}");
                }
            })
    }

    /// Sets up a container (compiles its component once, creates its
    /// record as `Creating`) and returns it with the future that runs it.
    ///
    /// A component over the engine's structural limits is refused before
    /// it is compiled ([`RuntimeError::TooComplex`]). The compile runs on
    /// the runtime's compile threads; this call waits for it at most the
    /// container's timeout, after which the container fails with
    /// [`Failure::Deadline`](crate::runtime::Failure::Deadline) and the
    /// compile finishes in the background for the next launch.
    pub fn prepare_container(
        &self,
        config: impl Into<ContainerConfig>,
        identity: IdentityContext,
    ) -> Result<PreparedContainer, RuntimeError> {
        let config = config.into();
        let id = Uuid::new_v4();
        let identity = self.admit(&config.component, identity, Some(id))?;
        if config.grants.network && !self.inner.config.policy.allow_network {
            let event = ContainerEvent::NetworkRefused {
                name: config.name.clone(),
            };
            self.audit(Entry::owned(event).container(id).actor(&identity))?;
            return Err(RuntimeError::NetworkRefused { name: config.name });
        }
        // The compile counts against the container's deadline: past it the
        // container fails with a timeout (the compile finishes in the
        // background, for the next launch) and what is left is the run's.
        let waited = std::time::Instant::now();
        let timeout = config.limits.timeout;
        let compiled = self
            .compiled_within(&config.component, &identity, Some(id), timeout)?
            .ok_or(Failure::Deadline {
                timeout_ms: timeout.map_or(0, |t| t.as_millis() as u64),
            });
        let who = Arc::new(guest_identity(id, &config, identity.clone()));
        let spec = match &compiled {
            Ok(compiled) if compiled.pre.is_ok() => Some(RunSpec {
                pre: compiled
                    .command
                    .clone()
                    .map_err(|source| RuntimeError::NotACommand {
                        name: config.name.clone(),
                        source,
                    })?,
                identity: who.clone(),
                config: config.clone(),
                audit: self.inner.audit.clone(),
                fuel_yield_interval: self.inner.config.engine.fuel_yield_interval,
            }),
            _ => None,
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
            totals: RunTotals::default(),
            next_restart: None,
        };
        let event = ContainerEvent::Created {
            name: config.name.clone(),
            workload: config.workload.clone(),
            signers: ctx.execution_dna.signers.clone(),
            capabilities: config.grants.clone(),
            limits: config.limits.clone(),
            restart: config.restart.as_str(),
            file_io: config.file_io,
        };
        self.audit(who.entry(event))?;
        let control = Arc::new(Control::default());
        control.charge(waited.elapsed());
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
                let failure = match compiled {
                    Ok(compiled) => compiled.pre.as_ref().err().cloned(),
                    Err(deadline) => Some(deadline),
                }
                .unwrap_or(Failure::Instantiate {
                    message: "cannot link".into(),
                });
                Box::pin(async move { runtime.link_failed(id, failure).await })
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
        config: impl Into<ContainerConfig>,
        identity: IdentityContext,
    ) -> Result<Uuid, RuntimeError> {
        let prepared = self.prepare_container(config, identity)?;
        let id = prepared.id();
        let future = prepared.into_future();
        wasmtime_wasi::runtime::with_ambient_tokio_runtime(|| tokio::spawn(future));
        Ok(id)
    }
}
