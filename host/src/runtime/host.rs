//! Per-container host state: one struct in each `Store`, with WASI through
//! [`WasiView`] and the `forgeone:kernel` imports through their own small
//! view ([`KernelView`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use uuid::Uuid;
use wasmtime::component::{HasData, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::audit::{Actor, AuditLog, Entry, Subjects, Untrusted};
use crate::identity::{IdentityContext, TrustLevel};

use super::bindings::{config, identity, log};
use super::caps;
use super::events::ContainerEvent;
use super::file_io::FileIo;
use super::fs_guard::GuardView;
use super::limits::Limiter;
use super::output::Capture;

/// Who a running instance is, as the kernel established it.
#[derive(Debug, Clone)]
pub(crate) struct GuestIdentity {
    pub(crate) container: Uuid,
    pub(crate) workload: Option<String>,
    pub(crate) identity: IdentityContext,
    pub(crate) component: String,
    pub(crate) signers: Vec<String>,
    /// The audit actor and subjects of this instance's records, built once
    /// and shared by every record (see [`Entry::about`]).
    pub(crate) audit_actor: Arc<Actor>,
    pub(crate) audit_subjects: Arc<Subjects>,
}

impl GuestIdentity {
    pub(crate) fn new(
        container: Uuid,
        workload: Option<String>,
        identity: IdentityContext,
        component: &crate::boot::VerifiedComponent,
    ) -> GuestIdentity {
        let digest = component.digest().to_hex();
        GuestIdentity {
            container,
            workload: workload.clone(),
            audit_actor: Arc::new(Actor::from(&identity)),
            audit_subjects: Arc::new(Subjects {
                component: Some(digest.clone()),
                container: Some(container.to_string()),
                workload,
                node: None,
            }),
            identity,
            component: digest,
            signers: component.signers().iter().map(|k| k.to_string()).collect(),
        }
    }

    /// An audit entry for `event` about this instance, by its identity.
    pub(crate) fn entry(&self, event: ContainerEvent) -> Entry {
        Entry::owned(event)
            .shared_actor(self.audit_actor.clone())
            .about(self.audit_subjects.clone())
    }
}

/// The host side of `forgeone:kernel/log` for one instance.
#[derive(Debug)]
pub(crate) struct LogState {
    pub(crate) audit: AuditLog,
    pub(crate) capture: Option<Capture>,
    pub(crate) written: u32,
    pub(crate) limit: u32,
}

/// The state in every container's (and plugin call's) `Store`: WASI, the
/// handle table, the limiter and the kernel imports. Opaque: a service
/// meets it only as the data of the store [`Plugin::call_with`] lends it,
/// which its `bindgen!` bindings need no more of.
///
/// [`Plugin::call_with`]: crate::runtime::Plugin::call_with
pub struct Host {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: Limiter,
    pub(crate) kernel: KernelCtx,
    /// Where filesystem calls run (as the WASI context was built).
    pub(crate) file_io: FileIo,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("container", &self.kernel.identity.container)
            .finish_non_exhaustive()
    }
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl GuardView for Host {
    fn handle_refused(&mut self) {
        self.limiter.handle_refusals = self.limiter.handle_refusals.saturating_add(1);
        if self.limiter.handle_refusals == 1 {
            tracing::warn!(
                container = %self.kernel.identity.container,
                limit = self.table.max_capacity(),
                "guest refused a handle: its open-files limit is reached"
            );
        }
    }

    fn symlink_refused(&mut self, target: &str, why: &'static str) {
        tracing::warn!(
            container = %self.kernel.identity.container,
            target = %Untrusted::new(target),
            "guest refused a symbolic link: {why}"
        );
    }

    fn file_io(&self) -> FileIo {
        self.file_io
    }
}

/// What the `forgeone:kernel` imports see of the host state.
#[derive(Debug)]
pub(crate) struct KernelCtx {
    pub(crate) identity: Arc<GuestIdentity>,
    pub(crate) log: LogState,
    /// What `forgeone:kernel/config` answers (a plugin's configuration;
    /// empty for containers).
    pub(crate) config: Arc<BTreeMap<String, String>>,
}

/// Access to the `forgeone:kernel` host state, like `WasiView` for WASI.
pub(crate) trait KernelView: Send {
    fn kernel(&mut self) -> &mut KernelCtx;
}

impl KernelView for Host {
    fn kernel(&mut self) -> &mut KernelCtx {
        &mut self.kernel
    }
}

/// `HasData` marker for the kernel imports.
pub(crate) struct Kernel;

impl HasData for Kernel {
    type Data<'a> = &'a mut KernelCtx;
}

/// Adds WASI (p2, async, with ForgeOne's filesystem guards) and the kernel
/// imports to `linker`.
pub(crate) fn add_to_linker<T: GuardView + KernelView + 'static>(
    linker: &mut Linker<T>,
) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    super::fs_guard::add_to_linker(linker)?;
    identity::add_to_linker::<T, Kernel>(linker, |t| t.kernel())?;
    log::add_to_linker::<T, Kernel>(linker, |t| t.kernel())?;
    config::add_to_linker::<T, Kernel>(linker, |t| t.kernel())?;
    Ok(())
}

/// The configuration of a guest that has none (containers), shared.
pub(crate) fn no_config() -> Arc<BTreeMap<String, String>> {
    static EMPTY: std::sync::LazyLock<Arc<BTreeMap<String, String>>> =
        std::sync::LazyLock::new(Arc::default);
    EMPTY.clone()
}

impl config::Host for &mut KernelCtx {
    fn get(&mut self, key: String) -> Option<String> {
        self.config.get(&key).cloned()
    }

    fn get_all(&mut self) -> Vec<(String, String)> {
        self.config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

fn wit_trust(level: TrustLevel) -> identity::TrustLevel {
    match level {
        TrustLevel::Untrusted => identity::TrustLevel::Untrusted,
        TrustLevel::Low => identity::TrustLevel::Low,
        TrustLevel::Medium => identity::TrustLevel::Medium,
        TrustLevel::High => identity::TrustLevel::High,
        TrustLevel::System => identity::TrustLevel::System,
    }
}

impl identity::Host for &mut KernelCtx {
    fn current(&mut self) -> identity::ContainerIdentity {
        let me = &self.identity;
        identity::ContainerIdentity {
            container_id: me.container.hyphenated().to_string(),
            workload: me.workload.clone(),
            tenant: me.identity.tenant.clone(),
            principal: me.identity.principal.clone(),
            trust: wit_trust(me.identity.trust.level),
            component_digest: me.component.clone(),
            signers: me.signers.clone(),
        }
    }
}

fn level_name(level: log::Level) -> &'static str {
    match level {
        log::Level::Trace => "trace",
        log::Level::Debug => "debug",
        log::Level::Info => "info",
        log::Level::Warn => "warn",
        log::Level::Error => "error",
    }
}

/// A log line's message and fields, capped at the source (see `caps`).
fn capped(message: String, fields: Vec<log::Field>) -> (String, Vec<(String, String)>) {
    let message = caps::cap(message, caps::LOG_MESSAGE);
    let total = fields.len();
    let mut kept: Vec<(String, String)> = fields
        .into_iter()
        .take(caps::LOG_FIELDS)
        .map(|f| {
            (
                caps::cap(f.key, caps::LOG_FIELD),
                caps::cap(f.value, caps::LOG_FIELD),
            )
        })
        .collect();
    if total > caps::LOG_FIELDS {
        kept.push((
            "forgeone.truncated".to_string(),
            format!("{} more fields dropped", total - caps::LOG_FIELDS),
        ));
    }
    (message, kept)
}

impl log::Host for &mut KernelCtx {
    async fn write(&mut self, level: log::Level, message: String, fields: Vec<log::Field>) {
        let me = self.identity.clone();
        let state = &mut self.log;
        state.written = state.written.saturating_add(1);
        if state.written > state.limit {
            if state.written == state.limit + 1 {
                let event = ContainerEvent::LogDropped { limit: state.limit };
                let _ = state
                    .audit
                    .append_async(
                        Entry::owned(event)
                            .shared_actor(Actor::shared_host())
                            .about(me.audit_subjects.clone()),
                    )
                    .await;
            }
            return;
        }
        let (message, fields) = capped(message, fields);
        let escaped = Untrusted::new(&message);
        let raw_fields: String = fields.iter().map(|(k, v)| format!(" {k}={v}")).collect();
        let fields: Vec<(Untrusted, Untrusted)> = fields
            .iter()
            .map(|(k, v)| (Untrusted::new(k), Untrusted::new(v)))
            .collect();
        let rendered_fields: String = fields.iter().map(|(k, v)| format!(" {k}={v}")).collect();
        // Tagged by the host with who wrote it; the guest cannot forge this.
        let container = me.container.to_string();
        let tenant = me.identity.tenant.as_str();
        let principal = me.identity.principal.as_str();
        let trust = me.identity.trust.level.to_string();
        macro_rules! emit {
            ($lvl:expr) => {
                tracing::event!(target: "forgeone::guest", $lvl,
                    container = %container, tenant, principal, trust = %trust,
                    "{}{}", escaped, rendered_fields)
            };
        }
        match level {
            log::Level::Trace => emit!(tracing::Level::TRACE),
            log::Level::Debug => emit!(tracing::Level::DEBUG),
            log::Level::Info => emit!(tracing::Level::INFO),
            log::Level::Warn => emit!(tracing::Level::WARN),
            log::Level::Error => emit!(tracing::Level::ERROR),
        }
        let name = level_name(level);
        let text = (escaped.as_str().len() + rendered_fields.len()) as u64;
        let entry = me.entry(ContainerEvent::Log {
            level: name,
            message: escaped,
            fields,
        });
        let Some(capture) = &state.capture else {
            if let Err(e) = state.audit.append_async(entry).await {
                tracing::error!(container = %me.container, "audit append failed: {e}");
            }
            return;
        };
        capture.log_line(format!("[{name}] {message}{raw_fields}"));
        // Behind the output written before it, charged to the run's audit
        // budget (over it, counted, not written); the guest goes on once
        // less than a chunk's worth of its records is not yet durable.
        if capture.log_record(entry, text) && !capture.has_room() {
            capture.drain().await;
            capture.wait_writable().await;
        }
    }
}
