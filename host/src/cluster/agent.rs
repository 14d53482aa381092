//! The host agent: one per machine. It keeps its node record fresh, takes
//! part in the scheduler lease, runs what is assigned to it through a
//! [`Kernel`] after verifying it against its own anchor, and reports each
//! replica's status.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::ClusterError;
use super::audit::AuditPublisher;
use super::events::ClusterEvent;
use super::leader::{Inputs, Leader};
use super::mirror::{Mirror, View};
use super::records::{Assignment, DeploymentRecord, Load, NodeRecord, NodeState};
use super::run::Replicas;
use super::store::{self, Cluster};
use crate::audit::{Actor, AuditLog, Entry};
use crate::boot::TrustAnchor;
use crate::scheduler::Node;

/// How to run a host agent. Every setter states its default.
#[derive(Debug)]
#[non_exhaustive]
pub struct HostConfig {
    pub(crate) node: Node,
    pub(crate) anchor: TrustAnchor,
    pub(crate) audit: AuditLog,
    pub(crate) state_dir: PathBuf,
    pub(crate) heartbeat: Duration,
    pub(crate) workers: usize,
    pub(crate) grace: Duration,
}

impl HostConfig {
    /// A host that is `node`, verifies everything it runs against
    /// `anchor`, audits to `audit` and keeps its compiled cache under
    /// `state_dir`.
    pub fn new(
        node: Node,
        anchor: TrustAnchor,
        audit: AuditLog,
        state_dir: impl Into<PathBuf>,
    ) -> HostConfig {
        HostConfig {
            node,
            anchor,
            audit,
            state_dir: state_dir.into(),
            heartbeat: Duration::from_secs(2),
            workers: 2,
            grace: Duration::from_secs(5),
        }
    }

    /// How often the node record is written. A node that misses three is
    /// lost; the scheduler lease lasts three too. Default 2 s.
    pub fn heartbeat(&mut self, every: Duration) -> &mut Self {
        self.heartbeat = every.max(Duration::from_millis(20));
        self
    }

    /// Executor workers of each deployment's kernel on this host. Default 2.
    pub fn workers(&mut self, n: usize) -> &mut Self {
        self.workers = n.max(1);
        self
    }

    /// How long a drain lets containers stop gracefully. Default 5 s.
    pub fn grace(&mut self, grace: Duration) -> &mut Self {
        self.grace = grace;
        self
    }
}

/// What an agent is doing, for callers and tests.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct AgentStatus {
    /// Whether it is connected to NATS.
    pub connected: bool,
    /// Connection attempts that failed so far.
    pub failed_attempts: u32,
    /// The last error (it names the URL when connecting failed).
    pub last_error: Option<String>,
    /// Whether it holds the scheduler lease.
    pub leader: bool,
    /// Replicas it runs, by assignment key, with their state.
    pub replicas: BTreeMap<String, String>,
    /// Whether it has drained and stopped.
    pub stopped: bool,
    /// Set when its local audit log ends before what the cluster's audit
    /// stream holds of it: the log was cut back.
    pub audit_cut_back: Option<String>,
}

/// A running host agent (see the module docs). Dropping it aborts it
/// without a drain, as a killed process would; call
/// [`HostAgent::drain`] to leave cleanly.
#[derive(Debug)]
pub struct HostAgent {
    id: String,
    status: Arc<Mutex<AgentStatus>>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl HostAgent {
    /// Starts the agent on the current tokio runtime. It connects to `url`,
    /// retrying with backoff (each failure logged with the URL and kept in
    /// [`AgentStatus::last_error`]) until it answers; nothing runs before.
    pub fn start(url: &str, config: HostConfig) -> HostAgent {
        let id = config.node.id.to_string();
        let status = Arc::new(Mutex::new(AgentStatus::default()));
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(url.to_string(), config, status.clone(), stopped));
        HostAgent {
            id,
            status,
            stop,
            task: Some(task),
        }
    }

    /// The node id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// What it is doing now.
    pub fn status(&self) -> AgentStatus {
        lock(&self.status).clone()
    }

    /// Drains: marks the node leaving (so its work is re-placed at once),
    /// gives up the lease, stops its containers gracefully, and returns
    /// when it has stopped.
    pub async fn drain(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for HostAgent {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Connects with backoff (100 ms doubling to 5 s) until it succeeds or the
/// agent is stopped.
async fn connect(
    url: &str,
    status: &Mutex<AgentStatus>,
    stop: &mut watch::Receiver<bool>,
) -> Option<Cluster> {
    let mut delay = Duration::from_millis(100);
    loop {
        match Cluster::connect(url, Duration::from_secs(2)).await {
            Ok(c) => {
                let mut s = lock(status);
                s.connected = true;
                return Some(c);
            }
            Err(e) => {
                tracing::warn!(%url, error = %e, retry_in = ?delay, "NATS does not answer; retrying");
                {
                    let mut s = lock(status);
                    s.failed_attempts += 1;
                    s.last_error = Some(format!("{e}; retrying in {delay:?}"));
                }
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.changed() => return None,
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn run(
    url: String,
    config: HostConfig,
    status: Arc<Mutex<AgentStatus>>,
    mut stop: watch::Receiver<bool>,
) {
    let Some(cluster) = connect(&url, &status, &mut stop).await else {
        lock(&status).stopped = true;
        return;
    };
    let id = config.node.id.to_string();
    let load = Arc::new(Mutex::new(Load::default()));
    let renewal = Renewal::default();
    // Steps run at least every 500 ms whatever the heartbeat, so a drain
    // or a new deployment is acted on at once, not a heartbeat later.
    let tick_every =
        (config.heartbeat / 4).clamp(Duration::from_millis(20), Duration::from_millis(500));
    // Heartbeat, lease and placement run on their own task, so a slow
    // start (compiling a component) never delays a renewal.
    let control = Control {
        id: id.clone(),
        cluster: cluster.clone(),
        node: config.node.clone(),
        heartbeat: config.heartbeat,
        leader: Leader::new(id.clone(), config.heartbeat * 3, config.audit.clone()),
        load: load.clone(),
        last_beat: None,
        inputs: Inputs::new(&cluster),
        renewal: renewal.clone(),
        failing_since: None,
    };
    let control_task = spawn_control(control, status.clone(), stop.clone(), tick_every);
    let mut replicas = Replicas::new(
        id.clone(),
        config.node.clone(),
        config.anchor,
        config.audit.clone(),
        config.state_dir,
        config.workers,
    );
    let mut publisher = AuditPublisher::new(id.clone(), config.audit.path().to_path_buf());
    // The assignments and deployments as one watch each delivers them: a
    // step reads them locally, and a burst of writes wakes it once.
    let mut assignments = Mirror::<Assignment>::new(cluster.assignments.clone());
    let mut deployments = Mirror::<DeploymentRecord>::new(cluster.deployments.clone());
    let mut tick = tokio::time::interval(tick_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let lost_after = config.heartbeat * 3;
    let mut fenced = false;
    loop {
        let deadline = if fenced {
            None
        } else {
            renewal.deadline(lost_after)
        };
        let watched = tokio::select! {
            _ = stop.changed() => break,
            _ = tick.tick() => Ok(()),
            r = assignments.changed() => r,
            r = deployments.changed() => r,
            _ = sleep_until(deadline) => Ok(()),
        };
        if *stop.borrow() {
            break;
        }
        // Before anything else: a host that could not renew its record for
        // the lost-node interval may have been replaced; it stops its
        // replicas on its own, and after such a lapse it reads the
        // assignments afresh before it starts anything again.
        match renewal.check(lost_after) {
            Renewed::Never => {
                if watched.is_err() {
                    tokio::time::sleep(tick_every).await;
                }
                continue;
            }
            Renewed::Fresh => fenced = false,
            Renewed::Lapsed(reason) => {
                if !fenced {
                    replicas.fence(&reason);
                    fenced = true;
                }
                assignments.reset();
                deployments.reset();
                *lock(&load) = replicas.load();
                lock(&status).replicas = replicas.states();
                if watched.is_err() {
                    tokio::time::sleep(tick_every).await;
                }
                continue;
            }
        }
        if let Err(e) = watched {
            tracing::warn!(node = %id, error = %e, "watch failed; reopening");
            lock(&status).last_error = Some(e.to_string());
            tokio::time::sleep(tick_every).await;
            continue;
        }
        // The work of a step is abandoned when the renewal lapses meanwhile
        // (NATS stopped answering mid-step): the loop fences first.
        let result = tokio::select! {
            r = step(&cluster, &mut replicas, &mut publisher, assignments.view(), deployments.view()) => r,
            _ = sleep_until(renewal.deadline(lost_after)) => continue,
        };
        *lock(&load) = replicas.load();
        let mut s = lock(&status);
        s.replicas = replicas.states();
        s.audit_cut_back.clone_from(&publisher.behind);
        match result {
            Ok(()) => s.last_error = None,
            Err(e) => {
                tracing::warn!(node = %id, error = %e, "running assignments failed");
                s.last_error = Some(e.to_string());
            }
        }
    }
    tracing::info!(node = %id, "draining");
    if let Ok(mut control) = control_task.await {
        control.leave().await;
    }
    replicas.drain(config.grace).await;
    let _ = config.audit.append(
        Entry::owned(ClusterEvent::NodeGone {
            node: id.clone(),
            why: "leaving".into(),
        })
        .actor(Actor::host())
        .node(id.clone()),
    );
    // A signed checkpoint, so the stream's copy ends sealed by the host key.
    let _ = config.audit.checkpoint();
    let _ = config.audit.flush();
    if let Err(e) = publisher.publish(&cluster).await {
        tracing::warn!(node = %id, error = %e, "could not publish the last audit records");
    }
    let mut s = lock(&status);
    s.leader = false;
    s.replicas.clear();
    s.stopped = true;
}

/// Runs the heartbeat, the lease and placement on their own task, so a
/// slow start (compiling a component) never delays a renewal.
fn spawn_control(
    mut control: Control,
    control_status: Arc<Mutex<AgentStatus>>,
    mut control_stop: watch::Receiver<bool>,
    tick_every: Duration,
) -> JoinHandle<Control> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(tick_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // A new deployment or node is placed as soon as the watch
            // delivers it; the tick keeps the heartbeat and the lease.
            let watched = tokio::select! {
                _ = control_stop.changed() => break,
                _ = tick.tick() => Ok(()),
                r = control.inputs.changed() => r,
            };
            if *control_stop.borrow() {
                break;
            }
            if let Err(e) = watched {
                tracing::warn!(node = %control.id, error = %e, "watch failed; reopening");
                tokio::time::sleep(tick_every).await;
            }
            let result = control.step().await;
            let mut s = lock(&control_status);
            s.leader = control.leader.holds();
            if let Err(e) = result {
                tracing::warn!(node = %control.id, error = %e, "heartbeat or placement failed");
                s.last_error = Some(e.to_string());
            }
        }
        control
    })
}

/// Runs the assignments, reports statuses and publishes the audit log.
async fn step(
    cluster: &Cluster,
    replicas: &mut Replicas,
    publisher: &mut AuditPublisher,
    assignments: View<'_, Assignment>,
    deployments: View<'_, DeploymentRecord>,
) -> Result<(), ClusterError> {
    let result = match replicas.reconcile(cluster, assignments, deployments).await {
        Ok(()) => replicas.report(cluster).await,
        Err(e) => Err(e),
    };
    match (result, publisher.publish(cluster).await) {
        (Err(e), _) | (Ok(()), Err(e)) => Err(e),
        (Ok(()), Ok(_)) => Ok(()),
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// When this host last renewed its node record, shared by the heartbeat
/// task (which renews it) with the loop that runs replicas (which fences
/// when it lapses).
#[derive(Debug, Clone, Default)]
struct Renewal(Arc<Mutex<RenewalState>>);

#[derive(Debug, Default)]
struct RenewalState {
    /// The instant taken before the last record that was written: the
    /// lease holder counts the lost-node interval from no earlier.
    last: Option<Instant>,
    /// Set when a renewal came after a lapse (the process was stopped or
    /// cut off), until the replica loop has fenced.
    lapsed: Option<Duration>,
}

impl Renewal {
    /// Records a renewal whose record was made at `began`.
    fn renewed(&self, began: Instant, lost_after: Duration) {
        let mut s = lock(&self.0);
        if let Some(last) = s.last
            && began.duration_since(last) >= lost_after
        {
            s.lapsed = Some(began.duration_since(last));
        }
        s.last = Some(began);
    }

    /// When the current renewal lapses (none before the first).
    fn deadline(&self, lost_after: Duration) -> Option<Instant> {
        lock(&self.0).last.map(|t| t + lost_after)
    }

    /// Whether this host may run replicas now: its renewal has lapsed, or
    /// lapsed and was renewed since (reported once), or it never renewed.
    fn check(&self, lost_after: Duration) -> Renewed {
        let mut s = lock(&self.0);
        if let Some(gap) = s.lapsed.take() {
            return Renewed::Lapsed(format!(
                "the node record was not renewed for {} ms (the lost-node interval is {} ms): this host was stopped or cut off, and its replicas may run elsewhere",
                gap.as_millis(),
                lost_after.as_millis()
            ));
        }
        match s.last {
            None => Renewed::Never,
            Some(t) if t.elapsed() >= lost_after => Renewed::Lapsed(format!(
                "the node record could not be renewed for {} ms (the lost-node interval is {} ms)",
                t.elapsed().as_millis(),
                lost_after.as_millis()
            )),
            Some(_) => Renewed::Fresh,
        }
    }
}

/// What [`Renewal::check`] found.
enum Renewed {
    /// Not yet renewed once: nothing may start.
    Never,
    /// Renewed within the lost-node interval.
    Fresh,
    /// Lapsed (why): fence.
    Lapsed(String),
}

/// The heartbeat and the lease of one host.
struct Control {
    id: String,
    cluster: Cluster,
    node: Node,
    heartbeat: Duration,
    leader: Leader,
    load: Arc<Mutex<Load>>,
    last_beat: Option<Instant>,
    inputs: Inputs,
    renewal: Renewal,
    /// Since when the node record could not be renewed.
    failing_since: Option<Instant>,
}

impl Control {
    fn record(&self, state: NodeState) -> NodeRecord {
        let mut record = NodeRecord::of(&self.node, self.heartbeat.as_millis() as u64);
        record.state = state;
        record.load = *lock(&self.load);
        record
    }

    async fn step(&mut self) -> Result<(), ClusterError> {
        if self.last_beat.is_none_or(|t| t.elapsed() >= self.heartbeat) {
            let began = Instant::now();
            let record = self.record(NodeState::Active);
            if let Err(e) = store::put(&self.cluster.nodes, &self.id, &record).await {
                if self.failing_since.is_none() {
                    self.failing_since = Some(began);
                    self.leader.audit_event(ClusterEvent::RenewalFailed {
                        error: e.to_string(),
                    });
                }
                return Err(e);
            }
            if let Some(since) = self.failing_since.take() {
                self.leader.audit_event(ClusterEvent::RenewalRestored {
                    after_ms: since.elapsed().as_millis() as u64,
                });
            }
            self.last_beat = Some(began);
            self.renewal.renewed(began, self.heartbeat * 3);
        }
        if self.leader.hold_lease(&self.cluster).await? {
            self.leader.place(&self.cluster, &mut self.inputs).await?;
        }
        Ok(())
    }

    /// Marks the node leaving first, so the lease holder re-places its
    /// work at once, then gives up the lease if this host holds it.
    async fn leave(&mut self) {
        let record = self.record(NodeState::Leaving);
        if let Err(e) = store::put(&self.cluster.nodes, &self.id, &record).await {
            tracing::warn!(node = %self.id, error = %e, "could not mark the node leaving");
        }
        self.leader.release(&self.cluster).await;
    }
}
