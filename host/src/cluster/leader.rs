//! The scheduler lease and the placement it guards.
//!
//! One host at a time holds the lease: the key `scheduler` in the lease
//! bucket, taken with a create (absent) or an update at the revision read
//! (expired), renewed by its holder with an update at its own revision.
//! A renewal that loses the race means another host took it: this one
//! stops placing at once.
//!
//! The holder places by running the existing planner,
//! [`Deployment::plan`] (the [`SchedulerContext`](crate::scheduler::SchedulerContext)
//! `forgeone plan` runs, with every constraint it honours), over a
//! [`StaticInventory`] of the live node records. It plans again only when
//! its inputs change: the live nodes' descriptions, or a deployment. A
//! decision that differs from the stored assignment is written with the
//! next epoch and audited; one that does not is left alone, so hosts see
//! no churn.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;

use super::ClusterError;
use super::events::ClusterEvent;
use super::mirror::{Mirror, Mirrored};
use super::records::{Assignment, DeploymentRecord, Lease, NodeRecord, NodeState, replica_key};
use super::store::{self, Cluster};
use crate::audit::{Actor, AuditLog, Entry};
use crate::deployment::Deployment;
use crate::identity::Priority;
use crate::scheduler::{Node, StaticInventory};

/// The key of the lease.
pub(crate) const LEASE_KEY: &str = "scheduler";

/// Executor workers assumed when planning: a pin beyond a host's own
/// workers is refused by that host, not by placement.
const PLAN_WORKERS: usize = 1024;

/// The nodes placement may use now, and those it leaves out with why.
#[derive(Debug, Default)]
pub(crate) struct Census {
    pub(crate) live: Vec<NodeRecord>,
    pub(crate) ignored: BTreeMap<String, String>,
    pub(crate) gone: BTreeMap<String, String>,
}

/// Reads every node record and sorts them into live, gone (leaving, or
/// three heartbeats missed) and ignored (unreadable or absurd).
pub(crate) async fn census(cluster: &Cluster) -> Result<Census, ClusterError> {
    let records = store::all::<NodeRecord>(&cluster.nodes).await?;
    Ok(census_of(records.into_iter().map(|(k, r)| {
        (k, r.map(|v| v.value).map_err(|e| e.to_string()))
    })))
}

/// Sorts node records (by key; a record that does not parse as its
/// error) into live, gone and ignored, as of now.
pub(crate) fn census_of(
    records: impl IntoIterator<Item = (String, Result<NodeRecord, String>)>,
) -> Census {
    let now = Utc::now();
    let mut census = Census::default();
    for (key, record) in records {
        match record {
            Err(e) => {
                census.ignored.insert(key, e);
            }
            Ok(value) => {
                if let Some(problem) = value.problem(&key) {
                    census.ignored.insert(key, problem);
                } else if value.state == NodeState::Leaving {
                    census.gone.insert(key, "leaving".into());
                } else if value.lost(now) {
                    census.gone.insert(key, "lost".into());
                } else {
                    census.live.push(value);
                }
            }
        }
    }
    census
}

/// The buckets placement reads, as this host mirrors them.
pub(crate) struct Inputs {
    pub(crate) nodes: Mirror<NodeRecord>,
    pub(crate) deployments: Mirror<DeploymentRecord>,
    pub(crate) assignments: Mirror<Assignment>,
}

impl Inputs {
    pub(crate) fn new(cluster: &Cluster) -> Inputs {
        Inputs {
            nodes: Mirror::new(cluster.nodes.clone()),
            deployments: Mirror::new(cluster.deployments.clone()),
            assignments: Mirror::new(cluster.assignments.clone()),
        }
    }

    fn ready(&self) -> bool {
        self.nodes.ready() && self.deployments.ready() && self.assignments.ready()
    }

    /// Waits for a change in any of them.
    pub(crate) async fn changed(&mut self) -> Result<(), ClusterError> {
        tokio::select! {
            r = self.nodes.changed() => r,
            r = self.deployments.changed() => r,
            r = self.assignments.changed() => r,
        }
    }
}

/// One replica's decision, before it is compared with the stored one.
struct Decision {
    deployment: String,
    workload: String,
    replica: u32,
    priority: Priority,
    node: Option<String>,
    reason: Option<String>,
    explanation: String,
}

/// The lease and placement state of one host.
#[derive(Debug)]
pub(crate) struct Leader {
    id: String,
    ttl: Duration,
    audit: AuditLog,
    /// The lease's revision and term while this host holds it.
    held: Option<(u64, u64)>,
    /// What the last placement was computed from.
    inputs: Option<String>,
    /// Node records already audited as ignored or gone (no repeats).
    reported: BTreeMap<String, String>,
    /// When the lease was last taken or renewed (before the request).
    renewed: Option<Instant>,
}

impl Leader {
    pub(crate) fn new(id: String, ttl: Duration, audit: AuditLog) -> Leader {
        Leader {
            id,
            ttl,
            audit,
            held: None,
            inputs: None,
            reported: BTreeMap::new(),
            renewed: None,
        }
    }

    /// Whether this host holds the lease.
    pub(crate) fn holds(&self) -> bool {
        self.held.is_some()
    }

    fn lease(&self, term: u64) -> Lease {
        let ttl = chrono::Duration::from_std(self.ttl).unwrap_or(chrono::Duration::seconds(6));
        Lease {
            holder: self.id.clone(),
            expires: Utc::now() + ttl,
            term,
        }
    }

    /// Takes or renews the lease; false when another host holds it. A
    /// lease renewed less than a sixth of its TTL ago is not renewed again
    /// (placement wakes on every change it watches).
    pub(crate) async fn hold_lease(&mut self, cluster: &Cluster) -> Result<bool, ClusterError> {
        if self.held.is_some() && self.renewed.is_some_and(|t| t.elapsed() < self.ttl / 6) {
            return Ok(true);
        }
        let started = Instant::now();
        let entry = cluster
            .lease
            .entry(LEASE_KEY)
            .await
            .map_err(|e| ClusterError::Nats {
                what: "read the lease".into(),
                reason: e.to_string(),
            })?;
        let current = entry
            .filter(|e| e.operation == async_nats::jetstream::kv::Operation::Put)
            .map(|e| (e.revision, serde_json::from_slice::<Lease>(&e.value).ok()));
        let (revision, term) = match current {
            None => (None, 1),
            Some((rev, Some(lease))) if lease.holder == self.id => (Some(rev), lease.term),
            Some((rev, Some(lease))) if lease.expires < Utc::now() => (Some(rev), lease.term + 1),
            // Unreadable: whoever wrote it holds nothing.
            Some((rev, None)) => (Some(rev), 1),
            Some(_) => {
                self.lose();
                return Ok(false);
            }
        };
        let lease = self.lease(term);
        match store::compare_and_set(&cluster.lease, LEASE_KEY, &lease, revision).await? {
            Some(new_revision) => {
                if self.held.is_none_or(|(_, t)| t != term) {
                    self.audit_event(ClusterEvent::LeaseTaken { term });
                    tracing::info!(node = %self.id, term, "took the scheduler lease");
                }
                self.held = Some((new_revision, term));
                self.renewed = Some(started);
                Ok(true)
            }
            None => {
                self.lose();
                Ok(false)
            }
        }
    }

    fn lose(&mut self) {
        self.held = None;
        self.inputs = None;
    }

    /// Gives the lease up (a draining host), so another takes it at once.
    pub(crate) async fn release(&mut self, cluster: &Cluster) {
        if let Some((revision, _)) = self.held.take() {
            let _ = cluster
                .lease
                .delete_expect_revision(LEASE_KEY, Some(revision))
                .await;
        }
        self.inputs = None;
    }

    pub(crate) fn audit_event(&self, event: ClusterEvent) {
        if let Err(e) = self.audit.append(
            Entry::owned(event)
                .actor(Actor::host())
                .node(self.id.clone()),
        ) {
            tracing::error!(error = %e, "cannot audit a cluster decision");
        }
    }

    /// Plans again if the live nodes or the deployments changed, and writes
    /// the assignments that differ. Does nothing until every mirror has
    /// caught up with its bucket.
    pub(crate) async fn place(
        &mut self,
        cluster: &Cluster,
        inputs: &mut Inputs,
    ) -> Result<(), ClusterError> {
        if !inputs.ready() {
            return Ok(());
        }
        let census = census_of(
            inputs
                .nodes
                .entries()
                .iter()
                .map(|(k, r)| (k.clone(), r.clone().map(|v| v.value))),
        );
        for (node, reason) in census.ignored.iter().chain(census.gone.iter()) {
            if self.reported.get(node) != Some(reason) {
                self.reported.insert(node.clone(), reason.clone());
                let event = if census.ignored.contains_key(node) {
                    tracing::warn!(%node, %reason, "node record ignored");
                    ClusterEvent::NodeIgnored {
                        node: node.clone(),
                        reason: reason.clone(),
                    }
                } else {
                    ClusterEvent::NodeGone {
                        node: node.clone(),
                        why: reason.clone(),
                    }
                };
                self.audit_event(event);
            }
        }
        self.reported
            .retain(|n, _| census.ignored.contains_key(n) || census.gone.contains_key(n));
        let deployments = inputs.deployments.entries();
        let fingerprint = fingerprint(&census.live, deployments);
        if self.inputs.as_ref() == Some(&fingerprint) {
            return Ok(());
        }
        let nodes: Vec<Node> = census.live.iter().map(NodeRecord::node).collect();
        let mut decisions = Vec::new();
        for (name, record) in deployments {
            match record {
                Ok(v) => decisions.extend(plan(&v.value, &nodes, &inputs.assignments)),
                Err(e) => tracing::warn!(deployment = %name, error = %e, "unreadable deployment"),
            }
        }
        if self
            .write(cluster, &mut inputs.assignments, decisions)
            .await?
        {
            self.inputs = Some(fingerprint);
        }
        Ok(())
    }

    /// Writes each decision that differs from the stored assignment, each
    /// by compare-and-set at the revision this host last saw (all in
    /// flight at once). False when another writer came first somewhere:
    /// placement runs again once the mirror has its write.
    async fn write(
        &mut self,
        cluster: &Cluster,
        current: &mut Mirror<Assignment>,
        decisions: Vec<Decision>,
    ) -> Result<bool, ClusterError> {
        let mut keys = BTreeSet::new();
        let mut writes = Vec::new();
        for d in decisions {
            let key = replica_key(&d.deployment, &d.workload, d.replica);
            keys.insert(key.clone());
            let old = current.get(&key);
            if old.is_some_and(|o| o.value.node == d.node && o.value.reason == d.reason) {
                continue;
            }
            let epoch = old.map_or(1, |o| o.value.epoch + 1);
            let revision = match current.entries().get(&key) {
                Some(Ok(v)) => Some(v.revision),
                // Unreadable: replaced at whatever revision it is.
                Some(Err(_)) => store::revision(&cluster.assignments, &key).await?,
                None => None,
            };
            let event = match &d.node {
                Some(node) => ClusterEvent::Assigned {
                    key: key.clone(),
                    node: node.clone(),
                    epoch,
                    explanation: d.explanation.clone(),
                },
                None => ClusterEvent::Unplaced {
                    key: key.clone(),
                    reason: d.reason.clone().unwrap_or_default(),
                    epoch,
                },
            };
            let assignment = Assignment {
                deployment: d.deployment,
                workload: d.workload,
                replica: d.replica,
                priority: d.priority,
                node: d.node,
                reason: d.reason,
                explanation: d.explanation,
                epoch,
                leader: self.id.clone(),
                at: Utc::now(),
            };
            // Audited before it is written: a decision no log holds is
            // never acted on.
            self.audit_event(event);
            writes.push((key, assignment, revision));
        }
        // Durable before any is written: a decision a killed lease holder
        // made is in its log, not only in the bucket.
        if !writes.is_empty()
            && let Err(e) = self.audit.flush_async().await
        {
            return Err(ClusterError::Invalid(format!(
                "cannot make the placement decisions durable in the audit log: {e}"
            )));
        }
        let results = futures_util::future::join_all(
            writes
                .iter()
                .map(|(key, a, rev)| store::compare_and_set(&cluster.assignments, key, a, *rev)),
        )
        .await;
        let mut all_written = true;
        for ((key, assignment, _), result) in writes.into_iter().zip(results) {
            match result? {
                Some(revision) => current.wrote(&key, assignment, revision),
                None => {
                    tracing::warn!(%key, "another writer changed the assignment first; placing again");
                    all_written = false;
                }
            }
        }
        // Undeployed (or fewer replicas): the hosts stop them, and their
        // statuses go too.
        let gone: Vec<String> = current
            .entries()
            .keys()
            .filter(|k| !keys.contains(*k))
            .cloned()
            .collect();
        let deletes = futures_util::future::join_all(gone.iter().map(|key| async move {
            store::delete(&cluster.assignments, key).await?;
            store::delete(&cluster.status, key).await
        }))
        .await;
        for (key, deleted) in gone.iter().zip(deletes) {
            deleted?;
            current.removed(key);
        }
        Ok(all_written)
    }
}

/// What placement depends on: the live nodes' descriptions (not their
/// load or heartbeat time) and every deployment's revision.
fn fingerprint(
    live: &[NodeRecord],
    deployments: &BTreeMap<String, Mirrored<DeploymentRecord>>,
) -> String {
    let mut hasher = blake3::Hasher::new();
    for n in live {
        let mut n = n.clone();
        n.load = Default::default();
        n.heartbeat = chrono::DateTime::<Utc>::UNIX_EPOCH;
        hasher.update(&serde_json::to_vec(&n).unwrap_or_default());
    }
    for (name, d) in deployments {
        hasher.update(name.as_bytes());
        if let Ok(v) = d {
            hasher.update(&v.revision.to_le_bytes());
        }
    }
    hasher.finalize().to_hex().to_string()
}

/// The file a stored deployment is parsed as (its relative paths resolve
/// under it; a host reads components from the object store, not paths).
pub(crate) fn virtual_path(record: &DeploymentRecord) -> PathBuf {
    PathBuf::from(format!("/cluster/{}/{}", record.name, record.file))
}

/// The node label placement pins a replica to its current node with.
const PIN_LABEL: &str = "forgeone-node";

/// Plans one deployment onto `nodes`: one decision per workload replica.
///
/// Placement is sticky: a replica already assigned to a live node is
/// pinned there (a required label constraint on the node's id), so a node
/// joining or leaving moves only what must move. A pinned replica that no
/// longer fits its node (the deployment changed, or a higher priority
/// preempted it) is planned again unpinned.
fn plan(record: &DeploymentRecord, nodes: &[Node], current: &Mirror<Assignment>) -> Vec<Decision> {
    let unplaced = |reason: String| -> Vec<Decision> {
        record
            .components
            .keys()
            .map(|w| Decision {
                deployment: record.name.clone(),
                workload: w.clone(),
                replica: 0,
                priority: Priority::Normal,
                node: None,
                reason: Some(reason.clone()),
                explanation: String::new(),
            })
            .collect()
    };
    let deployment = match Deployment::parse(&record.source, &virtual_path(record)) {
        Ok(d) => with_replicas(d),
        Err(e) => return unplaced(format!("the deployment does not parse: {e}")),
    };
    let nodes: Vec<Node> = nodes
        .iter()
        .map(|n| {
            let mut n = n.clone();
            n.labels.insert(PIN_LABEL.into(), n.id.to_string());
            n
        })
        .collect();
    let live: BTreeSet<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
    let mut pins: BTreeMap<String, String> = BTreeMap::new();
    for spec in &deployment.workloads {
        let (workload, replica) = replica_of(&spec.name);
        let key = replica_key(&record.name, &workload, replica);
        if let Some(node) = current.get(&key).and_then(|a| a.value.node.clone())
            && live.contains(node.as_str())
        {
            pins.insert(spec.name.clone(), node);
        }
    }
    let inventory = Arc::new(StaticInventory::new(nodes));
    let mut planned = match pinned(&deployment, &pins).plan(inventory.clone(), PLAN_WORKERS) {
        Ok(p) => p,
        Err(e) => return unplaced(e.to_string()),
    };
    let lost_pins: Vec<String> = planned
        .workloads
        .iter()
        .filter(|w| w.result.is_err() && pins.contains_key(&w.name))
        .map(|w| w.name.clone())
        .collect();
    if !lost_pins.is_empty() {
        for name in &lost_pins {
            pins.remove(name);
        }
        planned = match pinned(&deployment, &pins).plan(inventory, PLAN_WORKERS) {
            Ok(p) => p,
            Err(e) => return unplaced(e.to_string()),
        };
    }
    planned
        .workloads
        .into_iter()
        .map(|w| {
            let (node, reason, explanation) = match w.result {
                Ok(a) => (Some(a.node_id.to_string()), None, a.explanation.summary()),
                Err(e) => (None, Some(e.to_string()), String::new()),
            };
            let (workload, replica) = replica_of(&w.name);
            let explanation = if pins.contains_key(&w.name) {
                format!("kept on its node; {explanation}")
            } else {
                explanation
            };
            Decision {
                deployment: record.name.clone(),
                workload,
                replica,
                priority: w.priority,
                node,
                reason,
                explanation,
            }
        })
        .collect()
}

/// The deployment with each workload in `pins` constrained to its node.
fn pinned(deployment: &Deployment, pins: &BTreeMap<String, String>) -> Deployment {
    let mut d = deployment.clone();
    for spec in &mut d.workloads {
        if let Some(node) = pins.get(&spec.name) {
            spec.constraints.labels.push(format!("{PIN_LABEL}={node}"));
        }
    }
    d
}

/// The deployment with each workload of `replicas = N > 1` as N workloads
/// named `<name>#<i>`, each in the spread group of its `app` label (set to
/// the workload's name when it has none), so the scheduler's spread score
/// puts them in different zones when it can.
fn with_replicas(mut deployment: Deployment) -> Deployment {
    let mut expanded = Vec::new();
    for spec in deployment.workloads.drain(..) {
        if spec.replicas <= 1 {
            expanded.push(spec);
            continue;
        }
        for i in 0..spec.replicas {
            let mut copy = spec.clone();
            copy.name = format!("{}#{i}", spec.name);
            copy.labels
                .entry("app".into())
                .or_insert_with(|| spec.name.clone());
            expanded.push(copy);
        }
    }
    deployment.workloads = expanded;
    deployment
}

/// `(workload, replica)` of a planned name (`api`, or `api#2` for a
/// replica; workload names never hold `#`).
fn replica_of(name: &str) -> (String, u32) {
    match name.rsplit_once('#') {
        Some((w, i)) => (w.to_string(), i.parse().unwrap_or(0)),
        None => (name.to_string(), 0),
    }
}
