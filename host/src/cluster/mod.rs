//! Many hosts on NATS JetStream: node registry, desired state, placement
//! under a lease, and host agents that verify and run what they are
//! assigned (`../shared/design/CLUSTER.md`).
//!
//! We write no protocol of our own: JetStream gives storage, replication,
//! compare-and-set and watches. One host alone needs none of this
//! (`forgeone up`); a host joins a cluster with [`HostAgent`].
//!
//! # What is stored where
//!
//! Every record is JSON (strict: unknown fields refused), checked when it
//! is read. Names that become keys are `[A-Za-z0-9_-]{1,64}`.
//!
//! | bucket | key | value | written by |
//! |---|---|---|---|
//! | KV `forgeone-nodes` | node id | [`NodeRecord`]: region, zone, labels, trust, capacity, load (from the kernels' `ResourceState`), `active`/`leaving`, heartbeat time and interval | the host, every heartbeat (default 2 s) |
//! | KV `forgeone-deployments` | deployment name | [`DeploymentRecord`]: the `forgeone.toml` text as deployed, each workload's component and envelope digest, the deploy keys' DSSE envelope over them, the operator's stop/pause requests (not signed) | `forgeone deploy`, `stop`, `pause`, `resume`, `undeploy` |
//! | KV `forgeone-assignments` | `<deployment>.<workload>.<replica>` | [`Assignment`]: node (or none, with the reason), the scheduler's explanation, epoch, deciding host | the lease holder |
//! | KV `forgeone-status` | as assignments | [`StatusRecord`]: state, restarts, exit code, reason (refusals too), epoch | the host assigned |
//! | KV `forgeone-lease` | `scheduler` | [`Lease`]: holder, expiry, term | taken and renewed by compare-and-set |
//! | stream `FORGEONE_AUDIT` | subject `audit.<node>`, message id `<node>:<seq>` | each record of the node's audit log, byte for byte (de-duplicated by the id) | the host, following its own log |
//! | object store `forgeone-components` | `component.<blake3>`, `envelope.<blake3>` | the exact bytes of a component and of its DSSE signature envelope | `forgeone deploy` (the same bytes stored once) |
//!
//! # How a deployment runs
//!
//! 1. `forgeone deploy` ([`deploy`]) uploads the components and envelopes,
//!    then writes the deployment record.
//! 2. Every host tries to take or renew the lease. The holder sorts the
//!    node records into live, gone (leaving, or three heartbeats missed)
//!    and ignored (unreadable, or absurd capacity: see
//!    [`NodeRecord::problem`]), each gone or ignored node audited once. When
//!    the live nodes' descriptions or a deployment changed, it plans every
//!    deployment with [`Deployment::plan`](crate::Deployment::plan) (the
//!    scheduler `forgeone plan` runs, with every constraint) over the live
//!    nodes. Placement is sticky: a replica assigned to a live node is
//!    pinned there, so a node joining or leaving moves only what must move
//!    (a pinned replica that no longer fits is planned again unpinned). It
//!    writes each decision that changed, with the next epoch, audited
//!    (`cluster.assigned`, `cluster.unplaced`) before it is written, by
//!    compare-and-set at the revision it last saw (a lease holder that lost
//!    a race re-plans; all the writes of a batch are in flight at once).
//!    It reads the buckets it plans from through watches (`mirror`), one
//!    per bucket, so placement wakes as soon as a deployment or a node
//!    changes and reads nothing key by key.
//! 3. Each host follows the assignments and deployments through one watch
//!    each, and acts on those for its own id. For a new one it
//!    first checks the deployment's signature: a threshold of the deploy
//!    keys **its own anchor** lists must have signed a
//!    [`DeploymentStatement`] naming this deployment, the blake3 of its
//!    text and its components (an unsigned deployment, or one signed by
//!    keys it does not trust, is refused). It then fetches the component and envelope by digest (bytes that do not hash
//!    to their name are refused), **verifies them against its own trust
//!    anchor** ([`ComponentCheck`](crate::boot::ComponentCheck), audited),
//!    and runs the workload through a [`Kernel`](crate::Kernel) of the
//!    deployment ([`KernelConfig::for_node`](crate::KernelConfig::for_node)),
//!    the same kernel `forgeone up` uses. A refusal is audited
//!    (`cluster.refused`) and written as the replica's status. A replica
//!    whose assignment moved, changed epoch or was removed stops at once
//!    (`cluster.replica.started` and `cluster.replica.stopped` record each
//!    start and stop, with the epoch). A deployment version's signature
//!    check and parse are done once per host, not once per replica.
//! 4. Hosts write each replica's status when it changes; `forgeone ps`
//!    ([`ClusterView`]) merges assignments and statuses, ignoring a status
//!    about another epoch or node.
//! 5. A draining host ([`HostAgent::drain`], Ctrl-C or SIGTERM for
//!    `forgeone host`) marks its record `leaving` first, so the lease
//!    holder re-places its work at once, gives up the lease if it holds it,
//!    then stops its containers gracefully.
//!
//! Each host also publishes its audit records (the lease holder's
//! placement decisions among them) to the audit stream, so `forgeone audit
//! verify --nats URL --node ID` checks a host's chain from the stream
//! alone, and a local log cut back behind the stream is reported.
//!
//! A host whose NATS server does not answer retries with backoff (100 ms
//! doubling to 5 s), logging the URL each time; it runs nothing meanwhile.
//!
//! # Failures
//!
//! - **Self-fencing.** A host that could not renew its node record for the
//!   lost-node interval (three heartbeats, counted from before the last
//!   record it wrote, so no later than the lease holder may count it lost)
//!   stops every replica at once on its own, whether NATS is gone or the
//!   process was stopped (`cluster.fenced`). A timer wakes it for this
//!   even while a step waits on NATS. After such a lapse it reads the
//!   assignments afresh before it starts anything, so a host woken from a
//!   SIGSTOP first stops its copies, then sees that they moved to a newer
//!   epoch.
//! - **Renewals.** A failed renewal is audited once per outage
//!   (`cluster.renewal.failed`), and so is the first renewal after it
//!   (`cluster.renewal.restored`); the client reconnects by itself, and
//!   records written while NATS was away are published once it is back
//!   (the stream de-duplicates by (node, seq)).

mod agent;
mod audit;
mod events;
mod leader;
mod mirror;
mod ops;
mod records;
mod run;
mod store;
mod view;

use std::path::PathBuf;

use crate::deployment::DeploymentError;

pub use agent::{AgentStatus, HostAgent, HostConfig};
pub use audit::{StreamRecord, audit_subject};
pub use events::ClusterEvent;
pub use ops::{DeployReport, default_name, deploy, set_desired, undeploy};
pub use records::{
    Assignment, ComponentRef, DEPLOYMENT_PAYLOAD_TYPE, DeploymentRecord, DeploymentStatement,
    Desired, Lease, Load, MAX_HEARTBEAT_MS, MAX_NODE_CONTAINERS, MAX_NODE_CPU_MILLIS,
    MAX_NODE_MEMORY, MAX_NODE_STORAGE, NodeRecord, NodeState, Resources, StatusRecord, replica_key,
    valid_name,
};
pub use store::{
    ASSIGNMENTS, Cluster, DEPLOYMENTS, LEASE, MAX_OBJECT_BYTES, NODES, OBJECTS, STATUS,
};
pub use view::{ClusterView, Feed, NodeView, ReplicaView};

/// Errors of the cluster backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The NATS server did not answer or refused the connection.
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect {
        /// The server's URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// A JetStream request failed.
    #[error("NATS: {what}: {reason}")]
    Nats {
        /// What was being done.
        what: String,
        /// The server's or client's error.
        reason: String,
    },
    /// A stored record does not parse.
    #[error("record `{key}` is malformed: {reason}")]
    BadRecord {
        /// Its key.
        key: String,
        /// Why.
        reason: String,
    },
    /// An object's bytes do not match the digest it is stored under.
    #[error("object `{name}` does not match its digest: {reason}")]
    ObjectMismatch {
        /// The object's name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The deployment file is invalid.
    #[error(transparent)]
    Deployment(#[from] DeploymentError),
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A request the cluster cannot carry out as given.
    #[error("{0}")]
    Invalid(String),
    /// Nothing by that name.
    #[error("no {0}")]
    NotFound(String),
}
