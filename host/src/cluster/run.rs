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
use super::mirror::View;
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

/// Deployment versions a host keeps checked and parsed.
const DEPLOYMENT_CACHE: usize = 64;

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
    /// Each deployment version's signature check and parse, by a hash of
    /// its name, signature and signed statement.
    deployments: HashMap<String, Result<Arc<Deployment>, String>>,
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
            deployments: HashMap::new(),
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
    /// node and the deployments' desired states, as the mirrors hold them
    /// (both must be [`ready`](View::ready): a partial copy would stop
    /// replicas that are still assigned here).
    pub(crate) async fn reconcile(
        &mut self,
        cluster: &Cluster,
        assignments: View<'_, Assignment>,
        deployments: View<'_, DeploymentRecord>,
    ) -> Result<(), ClusterError> {
        if !assignments.ready() || !deployments.ready() {
            return Ok(());
        }
        let mine: BTreeMap<&String, &Assignment> = assignments
            .entries()
            .iter()
            .filter_map(|(k, a)| a.as_ref().ok().map(|a| (k, &a.value)))
            .filter(|(_, a)| a.node.as_deref() == Some(self.id.as_str()))
            .collect();
        let record = |name: &str| deployments.get(name).map(|v| &v.value);
        // Fencing: a replica moved elsewhere, re-decided, redeployed or
        // undeployed stops here at once.
        let stale: Vec<(String, &str)> = self
            .running
            .iter()
            .filter_map(|(key, r)| {
                let Some(a) = mine.get(key) else {
                    return Some((key.clone(), "no longer assigned to this node"));
                };
                let Some(record) = record(&a.deployment) else {
                    return Some((key.clone(), "undeployed"));
                };
                if a.epoch != r.epoch {
                    Some((key.clone(), "re-assigned at a newer epoch"))
                } else if version_of(record, &a.workload) != r.version {
                    Some((key.clone(), "redeployed"))
                } else {
                    None
                }
            })
            .collect();
        for (key, why) in stale {
            if let Some(r) = self.running.remove(&key) {
                force_stop(&r);
                self.audit_stop(&key, r.epoch, why);
            }
        }
        self.refused.retain(|k, _| mine.contains_key(k));
        let mut unreachable = None;
        let mut submitted: Vec<Arc<Kernel>> = Vec::new();
        for (key, a) in &mine {
            let Some(record) = record(&a.deployment) else {
                continue;
            };
            if self.running.contains_key(*key) {
                continue;
            }
            let version = version_of(record, &a.workload);
            if self
                .refused
                .get(*key)
                .is_some_and(|f| f.epoch == a.epoch && f.version == version)
            {
                continue;
            }
            match self.start(cluster, a, record, &version).await {
                Ok(r) => {
                    self.audit_event(ClusterEvent::ReplicaStarted {
                        key: (*key).clone(),
                        epoch: a.epoch,
                    });
                    if !submitted.iter().any(|k| Arc::ptr_eq(k, &r.kernel)) {
                        submitted.push(r.kernel.clone());
                    }
                    self.running.insert((*key).clone(), r);
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
        // One scheduling pass per kernel for everything submitted above.
        for kernel in submitted {
            if let Err(e) = kernel.schedule() {
                tracing::warn!(node = %self.id, error = %e, "cannot schedule");
            }
        }
        for (key, a) in &mine {
            if let (Some(r), Some(record)) = (self.running.get_mut(*key), record(&a.deployment)) {
                apply(r, record.desired(&a.workload));
            }
        }
        self.collect_kernels();
        unreachable.map_or(Ok(()), Err)
    }

    fn audit_event(&self, event: ClusterEvent) {
        if let Err(e) = self.audit.append(
            Entry::owned(event)
                .actor(Actor::host())
                .node(self.id.clone()),
        ) {
            tracing::error!(node = %self.id, error = %e, "cannot audit");
        }
    }

    fn audit_stop(&self, key: &str, epoch: u64, why: &str) {
        self.audit_event(ClusterEvent::ReplicaStopped {
            key: key.to_string(),
            epoch,
            why: why.to_string(),
        });
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
        let deployment = self.checked(record)?;
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
        Ok(Replica {
            kernel,
            version: version.to_string(),
            workload: id,
            epoch: a.epoch,
            held: false,
            reported: None,
        })
    }

    /// The deployment of `record`, once its signature checked and its text
    /// parsed: each once per deployment version on this host, not once per
    /// replica (a deployment of a hundred workloads is parsed once, not a
    /// hundred times). Refusals are remembered too.
    fn checked(&mut self, record: &DeploymentRecord) -> Result<Arc<Deployment>, String> {
        let mut h = blake3::Hasher::new();
        h.update(record.name.as_bytes());
        h.update(&[0]);
        h.update(record.signature.as_deref().unwrap_or_default().as_bytes());
        h.update(&[0]);
        h.update(&serde_json::to_vec(&record.statement()).unwrap_or_default());
        let id = h.finalize().to_hex().to_string();
        if let Some(done) = self.deployments.get(&id) {
            return done.clone();
        }
        let done = self.check_signed(record).and_then(|()| {
            Deployment::parse(&record.source, &virtual_path(record))
                .map(Arc::new)
                .map_err(|e| format!("the deployment does not parse: {e}"))
        });
        if self.deployments.len() >= DEPLOYMENT_CACHE {
            self.deployments.clear();
        }
        self.deployments.insert(id, done.clone());
        done
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

    /// Writes each replica's status when it changed: all the writes in
    /// flight at once, not one round trip after another.
    pub(crate) async fn report(&mut self, cluster: &Cluster) -> Result<(), ClusterError> {
        let changed: Vec<(String, StatusRecord)> = self
            .running
            .iter()
            .map(|(key, r)| (key, r, status_of(&self.id, r)))
            .filter(|(_, r, s)| !r.reported.as_ref().is_some_and(|(old, _)| same(old, s)))
            .map(|(key, _, s)| (key.clone(), s))
            .collect();
        let writes = changed.iter().map(|(key, status)| async move {
            (key, status, store::put(&cluster.status, key, status).await)
        });
        let mut first_error = None;
        for (key, status, written) in futures_util::future::join_all(writes).await {
            match written {
                Ok(revision) => {
                    if let Some(r) = self.running.get_mut(key) {
                        r.reported = Some((status.clone(), revision));
                    }
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Stops every replica at once (self-fencing), audited with `reason`;
    /// returns how many it stopped.
    pub(crate) fn fence(&mut self, reason: &str) -> usize {
        self.refused.clear();
        if self.running.is_empty() {
            return 0;
        }
        let keys: Vec<String> = self.running.keys().cloned().collect();
        tracing::warn!(node = %self.id, replicas = keys.len(), %reason, "fenced: stopping every replica");
        // Audited first: the fence is the first thing the log shows.
        self.audit_event(ClusterEvent::Fenced {
            replicas: keys.clone(),
            reason: reason.to_string(),
        });
        for r in self.running.values() {
            force_stop(r);
        }
        for (key, r) in std::mem::take(&mut self.running) {
            self.audit_stop(&key, r.epoch, "fenced");
        }
        self.collect_kernels();
        keys.len()
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
        for (key, r) in std::mem::take(&mut self.running) {
            self.audit_stop(&key, r.epoch, "host draining");
        }
        self.kernels.clear();
    }
}

/// Stops a replica now, with no grace: another host may be running it
/// already. (A second stop of a stopping container forces it at its next
/// yield point.)
fn force_stop(r: &Replica) {
    let _ = r.kernel.stop(r.workload);
    let _ = r.kernel.stop(r.workload);
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
