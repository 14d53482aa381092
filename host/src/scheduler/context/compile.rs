//! Constraint compilation: each distinct constraint text becomes, once,
//! the set of nodes it allows ([`StaticC`], cached by kind and text in
//! [`Cache`]), or an affinity term id whose node sets the [`State`] keeps
//! current. A decision then only combines compiled sets.

use std::collections::HashMap;
use std::sync::Arc;

use crate::policy::TenantPolicy;

use super::super::ScheduleError;
use super::super::placement::{Index, NodeSet, Reason};
use super::super::selector::{LabelSelector, LocationPattern};
use super::super::types::{ConstraintType, Workload};
use super::state::State;

/// A node-static hard constraint compiled to the set of nodes it allows.
#[derive(Debug)]
pub(super) struct StaticC {
    pub(super) reason: Reason,
    pub(super) set: NodeSet,
}

/// A preferred (weighted) constraint: a static node set, or an affinity
/// term (its id in the state) to be near or away from.
#[derive(Debug, Clone)]
pub(super) enum Pref {
    Static(Arc<StaticC>),
    Affinity(usize),
    Anti(usize),
}

/// Compiled static constraints by kind and text, and each tenant's
/// allowed locations. Rebuilt when the inventory's generation moves.
#[derive(Debug, Default)]
pub(super) struct Cache {
    location: HashMap<String, Arc<StaticC>>,
    hardware: HashMap<String, Arc<StaticC>>,
    network: HashMap<String, Arc<StaticC>>,
    label: HashMap<String, Arc<StaticC>>,
    tenant_location: HashMap<String, Option<Arc<StaticC>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Location,
    Hardware,
    Network,
    Label,
}

impl Cache {
    fn get(&mut self, kind: Kind, value: &str, index: &Index) -> Result<Arc<StaticC>, String> {
        let map = match kind {
            Kind::Location => &mut self.location,
            Kind::Hardware => &mut self.hardware,
            Kind::Network => &mut self.network,
            Kind::Label => &mut self.label,
        };
        if let Some(c) = map.get(value) {
            return Ok(c.clone());
        }
        let text: Arc<str> = Arc::from(value.trim());
        let compiled = match kind {
            Kind::Location => {
                let p = LocationPattern::parse(value)?;
                StaticC {
                    reason: Reason::Location(text),
                    set: index.location_set(&p),
                }
            }
            Kind::Hardware => StaticC {
                set: index.hardware_set(value.trim()),
                reason: Reason::Hardware(text),
            },
            Kind::Network => StaticC {
                set: index.network_set(value.trim()),
                reason: Reason::Network(text),
            },
            Kind::Label => {
                let s = LabelSelector::parse(value)?;
                StaticC {
                    set: index.selector_set(&s),
                    reason: Reason::Label(text),
                }
            }
        };
        let c = Arc::new(compiled);
        map.insert(value.to_string(), c.clone());
        Ok(c)
    }

    /// The nodes `tenant`'s policy allows (`None`: no location rule),
    /// compiled on first use.
    pub(super) fn tenant_location(
        &mut self,
        tenant: &str,
        policy: &TenantPolicy,
        index: &Index,
    ) -> Result<Option<Arc<StaticC>>, ScheduleError> {
        if let Some(c) = self.tenant_location.get(tenant) {
            return Ok(c.clone());
        }
        let c = if policy.allowed_locations.is_empty() {
            None
        } else {
            let text = policy.allowed_locations.join(",");
            let pattern =
                LocationPattern::parse(&text).map_err(|reason| ScheduleError::InvalidPolicy {
                    tenant: tenant.to_string(),
                    reason,
                })?;
            Some(Arc::new(StaticC {
                set: index.location_set(&pattern),
                reason: Reason::TenantLocation(Arc::from(text)),
            }))
        };
        self.tenant_location.insert(tenant.to_string(), c.clone());
        Ok(c)
    }
}

/// One workload's constraints, compiled: hard static sets, hard affinity
/// terms (`true`: anti-affinity), and weighted preferences. The buffers
/// are reused from one decision to the next.
#[derive(Debug, Default)]
pub(super) struct Compiled {
    pub(super) hard: Vec<Arc<StaticC>>,
    pub(super) aff: Vec<(usize, bool)>,
    pub(super) prefs: Vec<(Pref, u32)>,
}

impl Compiled {
    /// Compiles `w`'s constraints (static ones through `cache`, affinity
    /// terms through `st`), replacing the previous workload's.
    pub(super) fn compile(
        &mut self,
        cache: &mut Cache,
        st: &mut State,
        index: &Index,
        w: &Workload,
    ) -> Result<(), ScheduleError> {
        self.hard.clear();
        self.aff.clear();
        self.prefs.clear();
        for c in &w.constraints {
            let kind = match &c.constraint_type {
                ConstraintType::Location => Some(Kind::Location),
                ConstraintType::Hardware => Some(Kind::Hardware),
                ConstraintType::Network => Some(Kind::Network),
                ConstraintType::Custom(k) if k == "label" => Some(Kind::Label),
                ConstraintType::Custom(k) => {
                    return Err(invalid(
                        &w.name,
                        &c.value,
                        format!("unknown custom constraint kind `{k}` (only `label` is defined)"),
                    ));
                }
                ConstraintType::Affinity | ConstraintType::AntiAffinity => None,
            };
            match kind {
                Some(kind) => {
                    let compiled = cache
                        .get(kind, &c.value, index)
                        .map_err(|r| invalid(&w.name, &c.value, r))?;
                    match c.preferred {
                        None => self.hard.push(compiled),
                        Some(wt) => self.prefs.push((Pref::Static(compiled), wt)),
                    }
                }
                None => {
                    let anti = c.constraint_type == ConstraintType::AntiAffinity;
                    let t = st
                        .term_id(&c.value, index.n)
                        .map_err(|r| invalid(&w.name, &c.value, r))?;
                    match (c.preferred, anti) {
                        (None, _) => self.aff.push((t, anti)),
                        (Some(wt), false) => self.prefs.push((Pref::Affinity(t), wt)),
                        (Some(wt), true) => self.prefs.push((Pref::Anti(t), wt)),
                    }
                }
            }
        }
        Ok(())
    }
}

/// The error for a constraint `workload` wrote that cannot be understood.
pub(super) fn invalid(workload: &str, constraint: &str, reason: String) -> ScheduleError {
    ScheduleError::InvalidConstraint {
        workload: workload.to_string(),
        constraint: constraint.to_string(),
        reason,
    }
}
