//! Planning a deployment onto an inventory without running anything
//! (`forgeone plan`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Serialize;
use serde::ser::SerializeStruct;

use crate::identity::{Priority, TrustVector};
use crate::scheduler::{
    Allocation, NodeInventory, ScheduleError, SchedulerContext, SchedulerMetrics,
};

use super::Deployment;
use super::error::DeploymentError;
use super::types::KnownLabels;

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

/// Why a deployment could not be planned at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The deployment does not fit the inventory (a constraint names a
    /// label no node has).
    #[error(transparent)]
    Deployment(#[from] DeploymentError),
    /// The inventory could not be read, or a policy is invalid.
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
}

impl Deployment {
    /// Plans this deployment onto `inventory` without running anything:
    /// checks the constraints' labels against the inventory, then queues
    /// every workload and places them as the kernel would (priority,
    /// trust, age; affinity targets first; preemption). Nothing is
    /// verified here, so every workload is planned as signed code (one
    /// signer) at its tenant's trust level, which is what it runs as once
    /// its component verifies.
    ///
    /// `workers` is the number of executor workers the kernel will have
    /// (`forgeone up --workers`, by default one per core): a workload
    /// pinned to a worker beyond them is refused with
    /// [`ScheduleError::NoSuchWorker`] and takes no capacity, as the
    /// kernel refuses it.
    pub fn plan(
        &self,
        inventory: Arc<dyn NodeInventory>,
        workers: usize,
    ) -> Result<Plan, PlanError> {
        let nodes = inventory.nodes().map_err(ScheduleError::from)?;
        self.check_labels(&KnownLabels::of(&nodes))?;
        let mut ctx = SchedulerContext::new(inventory, self.policies())?;
        let mut ids = Vec::new();
        let mut last: BTreeMap<uuid::Uuid, Result<Allocation, ScheduleError>> = BTreeMap::new();
        for spec in &self.workloads {
            let level = self
                .tenant(&spec.tenant)
                .map(|t| t.trust)
                .unwrap_or_default();
            let mut w = spec.workload();
            w.identity.trust = TrustVector::new(level, 1);
            ids.push(w.id);
            match spec.worker {
                Some(worker) if worker >= workers => {
                    last.insert(w.id, Err(ScheduleError::NoSuchWorker { worker, workers }));
                }
                _ => {
                    ctx.submit(w);
                }
            }
        }
        plan_of(self, ctx, ids, last, nodes.len())
    }
}

fn plan_of(
    deployment: &Deployment,
    mut ctx: SchedulerContext,
    ids: Vec<uuid::Uuid>,
    mut last: BTreeMap<uuid::Uuid, Result<Allocation, ScheduleError>>,
    nodes: usize,
) -> Result<Plan, PlanError> {
    let outcomes = ctx.schedule_pending()?;
    let mut evicted_by: HashMap<uuid::Uuid, String> = HashMap::new();
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
        nodes,
        metrics: ctx.metrics().clone(),
    })
}
