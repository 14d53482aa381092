//! The cluster as `forgeone ps` shows it: nodes and replicas, merged from
//! the buckets.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::ClusterError;
use super::leader::census;
use super::mirror::Mirror;
use super::records::{Assignment, Load, NodeRecord, StatusRecord};
use super::store::{self, Cluster};
use crate::identity::{Priority, TrustLevel};

/// One node as `ps` shows it.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct NodeView {
    /// Node id.
    pub id: String,
    /// Region.
    pub region: String,
    /// Zone.
    pub zone: String,
    /// Trust.
    pub trust: Option<TrustLevel>,
    /// `active`, `leaving`, `lost` or `ignored`.
    pub state: String,
    /// Why it is ignored, when it is.
    pub reason: Option<String>,
    /// Its current load.
    pub load: Load,
    /// When it last wrote its record.
    pub heartbeat: Option<DateTime<Utc>>,
}

/// One replica as `ps` shows it.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct ReplicaView {
    /// The deployment.
    pub deployment: String,
    /// The workload.
    pub workload: String,
    /// Which copy.
    pub replica: u32,
    /// Its priority.
    pub priority: Priority,
    /// The node it is assigned to.
    pub node: Option<String>,
    /// `unplaced`, `assigned` (no status from its host yet), or the host's
    /// status (`running`, `exited`, `refused`, ...).
    pub status: String,
    /// Restarts so far.
    pub restarts: u32,
    /// Why it is not placed, refused or failed.
    pub reason: Option<String>,
    /// The assignment's epoch.
    pub epoch: u64,
}

/// The whole cluster at one moment.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct ClusterView {
    /// Every node record.
    pub nodes: Vec<NodeView>,
    /// Every replica, by deployment, workload and replica.
    pub replicas: Vec<ReplicaView>,
    /// The scheduler lease holder, if the lease is live.
    pub leader: Option<String>,
}

impl ClusterView {
    /// Reads the cluster's state now.
    pub async fn read(cluster: &Cluster) -> Result<ClusterView, ClusterError> {
        let census = census(cluster).await?;
        let mut nodes = Vec::new();
        for (key, record) in store::all::<NodeRecord>(&cluster.nodes).await? {
            let record = record.ok().map(|v| v.value);
            let (state, reason) = if let Some(r) = census.ignored.get(&key) {
                ("ignored".to_string(), Some(r.clone()))
            } else if let Some(g) = census.gone.get(&key) {
                (g.clone(), None)
            } else {
                ("active".to_string(), None)
            };
            nodes.push(NodeView {
                id: key,
                region: record
                    .as_ref()
                    .map(|r| r.region.clone())
                    .unwrap_or_default(),
                zone: record.as_ref().map(|r| r.zone.clone()).unwrap_or_default(),
                trust: record.as_ref().map(|r| r.trust),
                state,
                reason,
                load: record.as_ref().map(|r| r.load).unwrap_or_default(),
                heartbeat: record.as_ref().map(|r| r.heartbeat),
            });
        }
        let mut replicas = Vec::new();
        for (key, a) in store::all::<Assignment>(&cluster.assignments).await? {
            let Ok(a) = a else { continue };
            let a = a.value;
            let status = store::get::<StatusRecord>(&cluster.status, &key)
                .await
                .ok()
                .flatten()
                .map(|v| v.value)
                // A status about another epoch or node is stale.
                .filter(|s| s.epoch == a.epoch && Some(&s.node) == a.node.as_ref());
            let (state, restarts, reason) = match (&a.node, status) {
                (None, _) => ("unplaced".to_string(), 0, a.reason.clone()),
                // A hostile or stale writer can name any node.
                (Some(n), None) if !nodes.iter().any(|v| &v.id == n) => (
                    "assigned".to_string(),
                    0,
                    Some(format!("node `{n}` does not exist: no host will run it")),
                ),
                (Some(_), None) => ("assigned".to_string(), 0, None),
                (Some(_), Some(s)) => (s.state, s.restarts, s.reason),
            };
            replicas.push(ReplicaView {
                deployment: a.deployment,
                workload: a.workload,
                replica: a.replica,
                priority: a.priority,
                node: a.node,
                status: state,
                restarts,
                reason,
                epoch: a.epoch,
            });
        }
        let leader = store::get::<super::records::Lease>(&cluster.lease, super::leader::LEASE_KEY)
            .await
            .ok()
            .flatten()
            .map(|v| v.value)
            .filter(|l| l.expires > Utc::now())
            .map(|l| l.holder);
        Ok(ClusterView {
            nodes,
            replicas,
            leader,
        })
    }

    /// The replica of `deployment`/`workload` number `replica`.
    pub fn replica(&self, deployment: &str, workload: &str, replica: u32) -> Option<&ReplicaView> {
        self.replicas
            .iter()
            .find(|r| r.deployment == deployment && r.workload == workload && r.replica == replica)
    }

    /// The node `id`.
    pub fn node(&self, id: &str) -> Option<&NodeView> {
        self.nodes.iter().find(|n| n.id == id)
    }
}

/// One bucket's records as their writers last wrote them, kept current by
/// one watch (no polling): for callers that wait for replicas to reach a
/// state ([`Feed::status`]) or to be placed ([`Feed::assignments`]).
#[derive(Debug)]
pub struct Feed<T> {
    mirror: Mirror<T>,
}

impl Feed<StatusRecord> {
    /// Every replica's status; the feed opens on the first
    /// [`changed`](Feed::changed).
    pub fn status(cluster: &Cluster) -> Feed<StatusRecord> {
        Feed {
            mirror: Mirror::new(cluster.status.clone()),
        }
    }
}

impl Feed<Assignment> {
    /// Every assignment; the feed opens on the first
    /// [`changed`](Feed::changed).
    pub fn assignments(cluster: &Cluster) -> Feed<Assignment> {
        Feed {
            mirror: Mirror::new(cluster.assignments.clone()),
        }
    }
}

impl<T: DeserializeOwned> Feed<T> {
    /// Waits for the next change (a burst of changes is applied at once).
    /// An error means the watch ended; the next call reopens it.
    pub async fn changed(&mut self) -> Result<(), ClusterError> {
        self.mirror.changed().await
    }

    /// Whether the feed holds everything the bucket held when it opened.
    pub fn ready(&self) -> bool {
        self.mirror.ready()
    }

    /// Every record that parses, by key (`<deployment>.<workload>.<replica>`).
    pub fn records(&self) -> impl Iterator<Item = (&str, &T)> {
        self.mirror
            .entries()
            .iter()
            .filter_map(|(k, v)| v.as_ref().ok().map(|v| (k.as_str(), &v.value)))
    }
}
