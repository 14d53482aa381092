//! Planning a deployment onto an inventory without running anything
//! (`forgeone plan`), and the conversions from the deployment's plain data.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Serialize;
use serde::ser::SerializeStruct;

use super::ScheduleError;
use super::context::SchedulerContext;
use super::inventory::{Capacity, Node, NodeInventory};
use super::placement::Allocation;
use super::types::{Constraint, ConstraintType, ResourceRequirements, SchedulerMetrics, Workload};
use crate::deployment::{Deployment, KnownLabels, NodeConfig, PreferenceKind, WorkloadSpec};
use crate::identity::{IdentityContext, Priority, TrustVector};

/// The scheduler's [`Workload`] for a deployment entry, with `trust` (which
/// boot verification and policy decide; the deployment cannot claim it).
///
/// Location alternatives become one location constraint (any may match);
/// every other entry is its own constraint; preferences keep their weight.
pub fn workload_from_spec(spec: &WorkloadSpec, trust: TrustVector) -> Workload {
    let identity = IdentityContext::new(spec.tenant.clone(), spec.principal.clone(), trust);
    let mut w = Workload::new(spec.name.clone(), spec.priority, identity);
    let r = &spec.resources;
    let defaults = ResourceRequirements::default();
    let mut req = ResourceRequirements::new(
        r.cpu_millis.unwrap_or(defaults.cpu_millis),
        r.memory.unwrap_or(defaults.memory),
    );
    req.storage(r.storage.unwrap_or(0))
        .network(spec.capabilities.network);
    if let Some(f) = r.fuel {
        req.fuel(f);
    }
    if let Some(t) = r.timeout {
        req.timeout(t);
    }
    w.requirements(req);
    let c = &spec.constraints;
    if !c.location.is_empty() {
        w.constraint(Constraint::location(c.location.join(",")));
    }
    for h in &c.hardware {
        w.constraint(Constraint::hardware(h.clone()));
    }
    for n in &c.network {
        w.constraint(Constraint::network(n.clone()));
    }
    for l in &c.labels {
        w.constraint(Constraint::label(l.clone()));
    }
    for a in &c.affinity {
        w.constraint(Constraint::affinity(a.clone()));
    }
    for a in &c.anti_affinity {
        w.constraint(Constraint::anti_affinity(a.clone()));
    }
    for p in &c.preferred {
        let t = match p.kind {
            PreferenceKind::Location => ConstraintType::Location,
            PreferenceKind::Hardware => ConstraintType::Hardware,
            PreferenceKind::Network => ConstraintType::Network,
            PreferenceKind::Label => ConstraintType::Custom("label".into()),
            PreferenceKind::Affinity => ConstraintType::Affinity,
            PreferenceKind::AntiAffinity => ConstraintType::AntiAffinity,
        };
        w.constraint(Constraint::new(t, p.value.clone()).prefer(p.weight));
    }
    w.labels = spec.labels.clone();
    w
}

/// The local node described by a deployment's `[node]`: CPU defaults to
/// `cores` cores, memory to 1 GiB, storage to 0, containers to unlimited.
pub fn node_from_config(cfg: &NodeConfig, cores: usize) -> Node {
    let capacity = Capacity {
        cpu_millis: cfg.cpu_millis.unwrap_or(cores as u64 * 1000),
        memory: cfg.memory.unwrap_or(1 << 30),
        storage: cfg.storage.unwrap_or(0),
        containers: cfg.containers.unwrap_or(u32::MAX),
    };
    let mut node = Node::new(
        cfg.id.as_str(),
        cfg.region.clone(),
        cfg.zone.clone(),
        capacity,
    );
    node.trust(cfg.trust);
    for h in &cfg.hardware {
        node.hardware(h.clone());
    }
    for n in &cfg.network {
        node.network(n.clone());
    }
    for (k, v) in &cfg.labels {
        node.label(k.clone(), v.clone());
    }
    node
}

/// The labels present on `nodes`, for [`Deployment::check_labels`](crate::deployment::Deployment::check_labels).
pub fn known_labels(nodes: &[Node]) -> KnownLabels {
    let mut k = KnownLabels::default();
    for n in nodes {
        k.hardware.extend(n.hardware.iter().cloned());
        k.network.extend(n.network.iter().cloned());
        k.label_keys.extend(n.labels.keys().cloned());
    }
    k
}

/// One workload's planned fate.
#[derive(Debug)]
pub struct PlannedWorkload {
    /// The workload's name.
    pub name: String,
    /// Its priority.
    pub priority: Priority,
    /// Its tenant.
    pub tenant: String,
    /// The line it is declared on.
    pub line: Option<usize>,
    /// Where it goes, or why nowhere (its final state after every
    /// preemption in the plan).
    pub result: Result<Allocation, ScheduleError>,
    /// The workload whose placement evicted it, if any.
    pub preempted_by: Option<String>,
}

impl Serialize for PlannedWorkload {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("PlannedWorkload", 8)?;
        st.serialize_field("name", &self.name)?;
        st.serialize_field("priority", &self.priority)?;
        st.serialize_field("tenant", &self.tenant)?;
        st.serialize_field("line", &self.line)?;
        st.serialize_field("preempted_by", &self.preempted_by)?;
        match &self.result {
            Ok(a) => {
                st.serialize_field("placed", &true)?;
                st.serialize_field("allocation", a)?;
                st.skip_field("error")?;
            }
            Err(e) => {
                st.serialize_field("placed", &false)?;
                st.skip_field("allocation")?;
                st.serialize_field("error", &e.to_string())?;
                if let ScheduleError::Unschedulable { explanation, .. } = e {
                    st.serialize_field("explanation", explanation)?;
                }
            }
        }
        st.end()
    }
}

/// A whole deployment planned onto an inventory.
#[derive(Debug, Serialize)]
pub struct Plan {
    /// Every workload, in file order.
    pub workloads: Vec<PlannedWorkload>,
    /// Nodes in the inventory.
    pub nodes: usize,
    /// The scheduler's counters for the plan.
    pub metrics: SchedulerMetrics,
}

impl Plan {
    /// Whether every workload was placed.
    pub fn all_placed(&self) -> bool {
        self.workloads.iter().all(|w| w.result.is_ok())
    }
}

/// Plans `deployment` onto `inventory` without running anything: checks
/// the constraints' labels against the inventory, then queues every
/// workload and places them as the kernel would (priority, trust, age;
/// affinity targets first; preemption). Trust is the tenant's policy level
/// with one signer when a signature is listed; nothing is verified here.
pub fn plan(
    deployment: &Deployment,
    inventory: Arc<dyn NodeInventory>,
) -> Result<Plan, ScheduleError> {
    let nodes = inventory.nodes()?;
    deployment.check_labels(&known_labels(&nodes))?;
    let policies = deployment.policies();
    let mut ctx = SchedulerContext::new(inventory, policies)?;
    let mut ids = Vec::new();
    for spec in &deployment.workloads {
        let level = deployment
            .tenant(&spec.tenant)
            .map(|t| t.trust)
            .unwrap_or_default();
        let trust = TrustVector::new(level, u8::from(spec.signature.is_some()));
        let w = workload_from_spec(spec, trust);
        ids.push(w.id);
        ctx.submit(w);
    }
    let outcomes = ctx.schedule_pending()?;
    let mut evicted_by: HashMap<uuid::Uuid, String> = HashMap::new();
    let mut last: BTreeMap<uuid::Uuid, Result<Allocation, ScheduleError>> = BTreeMap::new();
    for o in outcomes {
        if let Ok(a) = &o.result {
            for v in &a.preempted {
                evicted_by.insert(v.id, o.name.clone());
            }
        }
        last.insert(o.workload, o.result);
    }
    let workloads = deployment
        .workloads
        .iter()
        .zip(ids)
        .map(|(spec, id)| PlannedWorkload {
            name: spec.name.clone(),
            priority: spec.priority,
            tenant: spec.tenant.clone(),
            line: deployment.line_of(&spec.name),
            result: last
                .remove(&id)
                .unwrap_or(Err(ScheduleError::UnknownWorkload(id))),
            preempted_by: evicted_by.remove(&id),
        })
        .collect();
    Ok(Plan {
        workloads,
        nodes: nodes.len(),
        metrics: ctx.metrics().clone(),
    })
}
