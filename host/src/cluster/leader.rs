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
use std::time::Duration;

use chrono::Utc;

use super::ClusterError;
use super::events::ClusterEvent;
use super::records::{Assignment, DeploymentRecord, Lease, NodeRecord, NodeState, replica_key};
use super::store::{self, Cluster, Versioned};
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
    let now = Utc::now();
    let mut census = Census::default();
    for (key, record) in store::all::<NodeRecord>(&cluster.nodes).await? {
        match record {
            Err(e) => {
                census.ignored.insert(key, e.to_string());
            }
            Ok(Versioned { value, .. }) => {
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
    Ok(census)
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

    /// Takes or renews the lease; false when another host holds it.
    pub(crate) async fn hold_lease(&mut self, cluster: &Cluster) -> Result<bool, ClusterError> {
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

    fn audit_event(&self, event: ClusterEvent) {
        if let Err(e) = self.audit.append(
            Entry::owned(event)
                .actor(Actor::host())
                .node(self.id.clone()),
        ) {
            tracing::error!(error = %e, "cannot audit a cluster decision");
        }
    }

    /// Plans again if the live nodes or the deployments changed, and writes
    /// the assignments that differ.
    pub(crate) async fn place(&mut self, cluster: &Cluster) -> Result<(), ClusterError> {
        let census = census(cluster).await?;
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
        let deployments = store::all::<DeploymentRecord>(&cluster.deployments).await?;
        let inputs = fingerprint(&census.live, &deployments);
        if self.inputs.as_ref() == Some(&inputs) {
            return Ok(());
        }
        let nodes: Vec<Node> = census.live.iter().map(NodeRecord::node).collect();
        let mut decisions = Vec::new();
        for (name, record) in &deployments {
            match record {
                Ok(v) => decisions.extend(plan(&v.value, &nodes)),
                Err(e) => tracing::warn!(deployment = %name, error = %e, "unreadable deployment"),
            }
        }
        self.write(cluster, decisions).await?;
        self.inputs = Some(inputs);
        Ok(())
    }

    async fn write(
        &mut self,
        cluster: &Cluster,
        decisions: Vec<Decision>,
    ) -> Result<(), ClusterError> {
        let current: BTreeMap<String, Assignment> = store::all::<Assignment>(&cluster.assignments)
            .await?
            .into_iter()
            .filter_map(|(k, v)| v.ok().map(|v| (k, v.value)))
            .collect();
        let mut keys = BTreeSet::new();
        for d in decisions {
            let key = replica_key(&d.deployment, &d.workload, d.replica);
            keys.insert(key.clone());
            let old = current.get(&key);
            if old.is_some_and(|o| o.node == d.node && o.reason == d.reason) {
                continue;
            }
            let epoch = old.map_or(1, |o| o.epoch + 1);
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
            store::put(&cluster.assignments, &key, &assignment).await?;
        }
        // Undeployed (or fewer replicas): the hosts stop them, and their
        // statuses go too.
        for key in current.keys().filter(|k| !keys.contains(*k)) {
            store::delete(&cluster.assignments, key).await?;
            store::delete(&cluster.status, key).await?;
        }
        Ok(())
    }
}

/// What placement depends on: the live nodes' descriptions (not their
/// load or heartbeat time) and every deployment's revision.
fn fingerprint(
    live: &[NodeRecord],
    deployments: &[(String, Result<Versioned<DeploymentRecord>, ClusterError>)],
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

/// Plans one deployment onto `nodes`: one decision per workload replica.
fn plan(record: &DeploymentRecord, nodes: &[Node]) -> Vec<Decision> {
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
    let inventory = Arc::new(StaticInventory::new(nodes.to_vec()));
    let plan = match deployment.plan(inventory, PLAN_WORKERS) {
        Ok(p) => p,
        Err(e) => return unplaced(e.to_string()),
    };
    plan.workloads
        .into_iter()
        .map(|w| {
            let (node, reason, explanation) = match w.result {
                Ok(a) => (Some(a.node_id.to_string()), None, a.explanation.summary()),
                Err(e) => (None, Some(e.to_string()), String::new()),
            };
            let (workload, replica) = replica_of(&w.name);
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
