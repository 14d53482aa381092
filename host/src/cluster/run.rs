//! The replicas one host runs: fetched by digest, verified against the
//! host's own anchor, run through a [`Kernel`] per deployment, reported.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use uuid::Uuid;

use super::ClusterError;
use super::events::ClusterEvent;
use super::leader::virtual_path;
use super::records::{
    Assignment, DEPLOYMENT_PAYLOAD_TYPE, DeploymentRecord, DeploymentStatement, Desired, Load,
    StatusRecord,
};
use super::store::{self, Cluster};
use crate::audit::{Actor, AuditLog, Entry};
use crate::boot::{
    ComponentCheck, Envelope, MAX_STATEMENT_BYTES, Role, TrustAnchor, VerifiedComponent,
};
use crate::deployment::Deployment;
use crate::kernel::{Kernel, KernelConfig};
use crate::runtime::ContainerStatus;
use crate::scheduler::Node;

/// One replica this host runs.
struct Replica {
    /// The kernel of its deployment version.
    kernel: Arc<Kernel>,
    /// Which deployment version (blake3 of its source).
    version: String,
    workload: Uuid,
    epoch: u64,
    /// Stopped because the operator asked.
    held: bool,
    /// The status last written, and its revision.
    reported: Option<(StatusRecord, u64)>,
}

/// Objects a host keeps in memory, by name (components and envelopes).
const OBJECT_CACHE: usize = 64;

/// Why a replica did not start.
enum StartError {
    /// Refused for good (for this epoch and deployment version).
    Refuse(String),
    /// NATS could not be read: tried again next step.
    Retry(ClusterError),
}

impl From<String> for StartError {
    fn from(reason: String) -> StartError {
        StartError::Refuse(reason)
    }
}

/// A replica this host refused, so it is not tried again for that epoch.
struct Refusal {
    epoch: u64,
    version: String,
}

/// The replicas of one host.
pub(crate) struct Replicas {
    id: String,
    node: Node,
    anchor: TrustAnchor,
    audit: AuditLog,
    state_dir: PathBuf,
    workers: usize,
    kernels: HashMap<String, Arc<Kernel>>,
    running: BTreeMap<String, Replica>,
    refused: BTreeMap<String, Refusal>,
    objects: HashMap<String, Arc<[u8]>>,
}

fn version_of(record: &DeploymentRecord, workload: &str) -> String {
    let mut h = blake3::Hasher::new();
    h.update(record.source.as_bytes());
    if let Some(c) = record.components.get(workload) {
        h.update(c.component.as_bytes());
        h.update(c.envelope.as_bytes());
    }
    h.finalize().to_hex().to_string()
}

impl Replicas {
    pub(crate) fn new(
        id: String,
        node: Node,
        anchor: TrustAnchor,
        audit: AuditLog,
        state_dir: PathBuf,
        workers: usize,
    ) -> Replicas {
        Replicas {
            id,
            node,
            anchor,
            audit,
            state_dir,
            workers,
            kernels: HashMap::new(),
            running: BTreeMap::new(),
            refused: BTreeMap::new(),
            objects: HashMap::new(),
        }
    }

    /// Each replica's state, by key.
    pub(crate) fn states(&self) -> BTreeMap<String, String> {
        let mut out: BTreeMap<String, String> = self
            .running
            .iter()
            .map(|(k, r)| {
                let state = r
                    .reported
                    .as_ref()
                    .map_or("starting".to_string(), |(s, _)| s.state.clone());
                (k.clone(), state)
            })
            .collect();
        for k in self.refused.keys() {
            out.insert(k.clone(), "refused".into());
        }
        out
    }

    /// What this host's kernels have in use.
    pub(crate) fn load(&self) -> Load {
        let mut load = Load::default();
        for k in self.kernels.values() {
            load.add(&k.resources());
        }
        load.containers = self
            .running
            .values()
            .filter(|r| {
                r.reported
                    .as_ref()
                    .is_some_and(|(s, _)| s.state == "running" || s.state == "paused")
            })
            .count() as u32;
        load
    }

    /// Brings the local replicas in line with the assignments for this
    /// node and the deployments' desired states.
    pub(crate) async fn reconcile(&mut self, cluster: &Cluster) -> Result<(), ClusterError> {
        let mut mine: BTreeMap<String, Assignment> = BTreeMap::new();
        for (key, a) in store::all::<Assignment>(&cluster.assignments).await? {
            if let Ok(a) = a
                && a.value.node.as_deref() == Some(self.id.as_str())
            {
                mine.insert(key, a.value);
            }
        }
        let mut records: BTreeMap<String, Option<DeploymentRecord>> = BTreeMap::new();
        for a in mine.values() {
            if !records.contains_key(&a.deployment) {
                let r = store::get::<DeploymentRecord>(&cluster.deployments, &a.deployment)
                    .await
                    .ok()
                    .flatten()
                    .map(|v| v.value);
                records.insert(a.deployment.clone(), r);
            }
        }
        // Fencing: a replica moved elsewhere, re-decided, redeployed or
        // undeployed stops here at once.
        let stale: Vec<String> = self
            .running
            .iter()
            .filter(|(key, r)| {
                let Some(a) = mine.get(*key) else { return true };
                let Some(Some(record)) = records.get(&a.deployment) else {
                    return true;
                };
                a.epoch != r.epoch || version_of(record, &a.workload) != r.version
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in stale {
            if let Some(r) = self.running.remove(&key) {
                let _ = r.kernel.stop(r.workload);
            }
        }
        self.refused.retain(|k, _| mine.contains_key(k));
        let mut unreachable = None;
        for (key, a) in &mine {
            let Some(Some(record)) = records.get(&a.deployment) else {
                continue;
            };
            let desired = record.desired(&a.workload);
            if let Some(r) = self.running.get_mut(key) {
                apply(r, desired);
                continue;
            }
            let version = version_of(record, &a.workload);
            if self
                .refused
                .get(key)
                .is_some_and(|f| f.epoch == a.epoch && f.version == version)
            {
                continue;
            }
            match self.start(cluster, a, record, &version).await {
                Ok(mut r) => {
                    apply(&mut r, desired);
                    self.running.insert(key.clone(), r);
                }
                Err(StartError::Refuse(reason)) => {
                    self.refuse(cluster, key, a, version, reason).await?;
                }
                Err(StartError::Retry(e)) => {
                    tracing::warn!(node = %self.id, %key, error = %e, "cannot start yet; trying again");
                    unreachable = Some(e);
                }
            }
        }
        self.collect_kernels();
        unreachable.map_or(Ok(()), Err)
    }

    async fn refuse(
        &mut self,
        cluster: &Cluster,
        key: &str,
        a: &Assignment,
        version: String,
        reason: String,
    ) -> Result<(), ClusterError> {
        tracing::warn!(node = %self.id, %key, %reason, "refused an assignment");
        let _ = self.audit.append(
            Entry::owned(ClusterEvent::Refused {
                key: key.to_string(),
                reason: reason.clone(),
            })
            .actor(Actor::host())
            .node(self.id.clone()),
        );
        let status = StatusRecord {
            node: self.id.clone(),
            epoch: a.epoch,
            state: "refused".into(),
            restarts: 0,
            exit_code: None,
            reason: Some(reason),
            at: Utc::now(),
        };
        store::put(&cluster.status, key, &status).await?;
        self.refused.insert(
            key.to_string(),
            Refusal {
                epoch: a.epoch,
                version,
            },
        );
        Ok(())
    }

    /// Fetches, verifies and starts one replica; the error is the reason
    /// it is refused, or a failure to reach NATS (tried again next step).
    async fn start(
        &mut self,
        cluster: &Cluster,
        a: &Assignment,
        record: &DeploymentRecord,
        version: &str,
    ) -> Result<Replica, StartError> {
        self.check_signed(record)?;
        let deployment = Deployment::parse(&record.source, &virtual_path(record))
            .map_err(|e| format!("the deployment does not parse: {e}"))?;
        let spec = deployment.workload(&a.workload).ok_or_else(|| {
            format!(
                "deployment `{}` has no workload `{}`",
                a.deployment, a.workload
            )
        })?;
        if !spec.capabilities.dirs.is_empty() || spec.capabilities.stdin.is_some() {
            return Err(StartError::Refuse(format!(
                "workload `{}` asks for host directories or a stdin file, which a cluster host does not grant",
                a.workload
            )));
        }
        let refs = record.components.get(&a.workload).ok_or_else(|| {
            format!(
                "deployment `{}` stores no component for `{}`",
                a.deployment, a.workload
            )
        })?;
        let component = self
            .verified(cluster, &refs.component.clone(), &refs.envelope.clone())
            .await?;
        let kernel = self.kernel(&deployment, record, version)?;
        let mut spec = spec.clone();
        if spec.replicas > 1 {
            spec.name = format!("{}#{}", spec.name, a.replica);
        }
        let workload = spec.workload();
        let container = spec.container(component);
        let submitted = match spec.worker {
            None => kernel.submit(workload, container),
            Some(w) => kernel.submit_pinned(workload, container, w),
        };
        let id = submitted.map_err(|e| e.to_string())?;
        kernel.schedule().map_err(|e| e.to_string())?;
        Ok(Replica {
            kernel,
            version: version.to_string(),
            workload: id,
            epoch: a.epoch,
            held: false,
            reported: None,
        })
    }

    /// Checks that a threshold of this host's anchor's deploy keys signed
    /// the deployment, and that what they signed is this record.
    fn check_signed(&self, record: &DeploymentRecord) -> Result<(), String> {
        let untrusted = |why: String| {
            format!(
                "deployment `{}` is not signed by a deploy key this host trusts: {why}",
                record.name
            )
        };
        let text = record
            .signature
            .as_deref()
            .ok_or_else(|| untrusted("it is unsigned".into()))?;
        if self.anchor.keys_of(Role::Deploy).next().is_none() {
            return Err(untrusted("this host's anchor lists no deploy key".into()));
        }
        let envelope =
            Envelope::from_slice(text.as_bytes(), MAX_STATEMENT_BYTES, "deployment signature")
                .map_err(|e| untrusted(e.to_string()))?;
        envelope
            .verify_threshold(
                "deployment signature",
                DEPLOYMENT_PAYLOAD_TYPE,
                &self.anchor.key_pairs(),
                Role::Deploy.as_str(),
                self.anchor.thresholds().deploy as usize,
            )
            .map_err(|e| untrusted(e.to_string()))?;
        // Parsed only now: what is parsed is exactly the payload that verified.
        let signed: DeploymentStatement = serde_json::from_slice(envelope.payload())
            .map_err(|e| untrusted(format!("its statement does not parse: {e}")))?;
        if signed != record.statement() {
            return Err(untrusted(
                "the signed statement is not this deployment (name, file or components differ)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The component and its envelope from the object store, each checked
    /// against its digest, then verified against this host's anchor
    /// (audited either way).
    async fn verified(
        &mut self,
        cluster: &Cluster,
        component: &str,
        envelope: &str,
    ) -> Result<VerifiedComponent, StartError> {
        let bytes = self.object(cluster, "component", component).await?;
        let envelope_bytes = self.object(cluster, "envelope", envelope).await?;
        let envelope = Envelope::from_slice(&envelope_bytes, MAX_STATEMENT_BYTES, "envelope")
            .map_err(|e| e.to_string())?;
        let mut check = ComponentCheck::new(&self.anchor);
        check.audit(self.audit.clone());
        Ok(check
            .verify(bytes, &envelope)
            .map_err(|e| format!("verification against this host's anchor failed: {e}"))?)
    }

    /// Object `<kind>.<hex>`, from this host's cache or the object store
    /// (whose reads cost the server a consumer each: a deployment of a
    /// hundred copies of one component reads it once). Only bytes that
    /// hashed to their name are cached; they are verified on every use.
    async fn object(
        &mut self,
        cluster: &Cluster,
        kind: &str,
        hex: &str,
    ) -> Result<Arc<[u8]>, StartError> {
        let name = format!("{kind}.{hex}");
        if let Some(bytes) = self.objects.get(&name) {
            return Ok(bytes.clone());
        }
        let bytes: Arc<[u8]> = match cluster.get_object(kind, hex).await {
            Ok(b) => b.into(),
            Err(e @ ClusterError::ObjectMismatch { .. }) => {
                return Err(StartError::Refuse(e.to_string()));
            }
            Err(e) => return Err(StartError::Retry(e)),
        };
        if self.objects.len() >= OBJECT_CACHE {
            self.objects.clear();
        }
        self.objects.insert(name, bytes.clone());
        Ok(bytes)
    }

    fn kernel(
        &mut self,
        deployment: &Deployment,
        record: &DeploymentRecord,
        version: &str,
    ) -> Result<Arc<Kernel>, String> {
        let key = format!("{}:{version}", record.name);
        if let Some(k) = self.kernels.get(&key) {
            return Ok(k.clone());
        }
        let mut config = KernelConfig::for_node(deployment, self.node.clone(), &self.state_dir);
        config.workers(self.workers);
        let kernel = Arc::new(Kernel::new(config, self.audit.clone()).map_err(|e| e.to_string())?);
        self.kernels.insert(key, kernel.clone());
        Ok(kernel)
    }

    /// Shuts down the kernels no replica uses any more.
    fn collect_kernels(&mut self) {
        let running = &self.running;
        self.kernels.retain(|_, k| {
            let used = running.values().any(|r| Arc::ptr_eq(&r.kernel, k));
            if !used {
                k.shutdown("no replica of this deployment version runs here");
            }
            used
        });
    }

    /// Writes each replica's status when it changed.
    pub(crate) async fn report(&mut self, cluster: &Cluster) -> Result<(), ClusterError> {
        for (key, r) in self.running.iter_mut() {
            let status = status_of(&self.id, r);
            if r.reported.as_ref().is_some_and(|(s, _)| same(s, &status)) {
                continue;
            }
            let revision = store::put(&cluster.status, key, &status).await?;
            r.reported = Some((status, revision));
        }
        Ok(())
    }

    /// Stops every replica, gracefully for `grace`.
    pub(crate) async fn drain(&mut self, grace: Duration) {
        for k in self.kernels.values() {
            let _ = k.drain("host draining", grace);
        }
        for k in self.kernels.values() {
            let _ = tokio::time::timeout(grace + Duration::from_secs(1), k.wait()).await;
            k.shutdown("host draining");
        }
        self.running.clear();
        self.kernels.clear();
    }
}

fn same(a: &StatusRecord, b: &StatusRecord) -> bool {
    a.state == b.state
        && a.restarts == b.restarts
        && a.exit_code == b.exit_code
        && a.reason == b.reason
        && a.epoch == b.epoch
}

/// Carries the operator's desired state out on a replica.
fn apply(r: &mut Replica, desired: Desired) {
    let status = r
        .kernel
        .workload(r.workload)
        .and_then(|v| v.container.map(|c| c.status));
    match (desired, status) {
        (Desired::Stopped, Some(ContainerStatus::Running | ContainerStatus::Paused)) => {
            r.held = r.kernel.stop(r.workload).is_ok() || r.held;
        }
        (Desired::Paused, Some(ContainerStatus::Running)) => {
            let _ = r.kernel.pause(r.workload);
        }
        (Desired::Running, Some(ContainerStatus::Paused)) => {
            let _ = r.kernel.resume(r.workload);
        }
        (Desired::Running, Some(ContainerStatus::Stopped))
            if r.held && r.kernel.start(r.workload).is_ok() =>
        {
            r.held = false;
        }
        _ => {}
    }
}

fn status_of(node: &str, r: &Replica) -> StatusRecord {
    let mut s = StatusRecord {
        node: node.to_string(),
        epoch: r.epoch,
        state: "starting".into(),
        restarts: 0,
        exit_code: None,
        reason: None,
        at: Utc::now(),
    };
    let Some(view) = r.kernel.workload(r.workload) else {
        return s;
    };
    if let Some(not_run) = &view.not_run {
        s.state = "refused".into();
        s.reason = Some(not_run.to_string());
        return s;
    }
    let Some(c) = view.container else { return s };
    s.restarts = c.run.saturating_sub(1);
    s.exit_code = c.last_outcome.as_ref().and_then(|o| o.exit_code());
    s.state = match &c.status {
        ContainerStatus::Creating => "starting".into(),
        ContainerStatus::Stopped if r.held => {
            s.reason = Some("stopped by the operator".into());
            "stopped".into()
        }
        ContainerStatus::Stopped if s.exit_code.is_some() => "exited".into(),
        ContainerStatus::Failed(f) => {
            s.reason = Some(f.to_string());
            "failed".into()
        }
        other => other.name().into(),
    };
    s
}
