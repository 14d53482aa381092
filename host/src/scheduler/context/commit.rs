//! Applying decisions: a [`Decision`] becomes a placement (victims
//! evicted first, the inventory claimed, the events audited, and all of it
//! undone if the audit log refuses), a [`Failure`] becomes an audited
//! refusal. Also the placements that do not come from a decision: those
//! other schedulers made (foreign claims), and those carried over when the
//! inventory changes.

use std::sync::Arc;
use std::time::Instant;

use crate::audit::Entry;
use crate::identity::{IdentityContext, TrustVector};
use crate::policy::Isolation;

use super::super::ScheduleError;
use super::super::events::{Party, Rejection, ScheduleEvent};
use super::super::inventory::{Capacity, Claim};
use super::super::placement::{Allocation, Explanation};
use super::super::types::{ConstraintType, Workload};
use super::SchedulerContext;
use super::compile::invalid;
use super::decide::{Decision, Failure};
use super::filter::Denial;
use super::state::{Placement, signer_group};

impl SchedulerContext {
    /// Places what other schedulers placed (the inventory's foreign
    /// claims): counted on their nodes, never victims.
    pub(super) fn load_foreign(&mut self) -> Result<(), ScheduleError> {
        for c in self.inventory.foreign_claims()? {
            let Some(&node) = self.index.pos.get(&c.node) else {
                continue;
            };
            let mut w = Workload::new(
                c.name.clone(),
                c.priority,
                IdentityContext::new(c.tenant.clone(), "foreign", TrustVector::default()),
            );
            w.id = c.workload;
            w.labels = c.labels.clone();
            w.signers = c.signers.clone();
            let mut anti = Vec::new();
            for t in &c.anti_affinity {
                anti.push(
                    self.st
                        .term_id(t, self.index.n)
                        .map_err(|reason| invalid(&w.name, t, reason))?,
                );
            }
            let iso = if c.isolate_tenant {
                Isolation::Tenant
            } else if c.isolate_signer {
                Isolation::Signer
            } else {
                Isolation::Shared
            };
            let p = self.make_placement(Arc::new(w), node, c.reserved, iso, anti, true, 0);
            self.st.add(p, &self.index);
        }
        Ok(())
    }

    /// A placement of `w` on `node`, its keys interned.
    #[allow(clippy::too_many_arguments)]
    fn make_placement(
        &mut self,
        w: Arc<Workload>,
        node: usize,
        reserved: Capacity,
        iso: Isolation,
        anti_terms: Vec<usize>,
        foreign: bool,
        seq: u64,
    ) -> Placement {
        let tenant = self.st.intern(&w.identity.tenant);
        let signer_group = self.st.intern(&signer_group(&w.signers));
        let spread_group = match w.labels.get("app") {
            Some(app) => self.st.intern(&format!("app={app}")),
            None => self.st.intern(&format!("tenant={}", w.identity.tenant)),
        };
        let zone = self.index.zone_of[node] as usize;
        Placement::new(
            w,
            node,
            zone,
            reserved,
            tenant,
            signer_group,
            iso,
            anti_terms,
            spread_group,
            foreign,
            seq,
        )
    }

    /// Records `w` on `node` as this scheduler's own placement (no audit,
    /// no claim): the slot.
    pub(super) fn add_own(
        &mut self,
        w: Arc<Workload>,
        node: usize,
        seq: u64,
    ) -> Result<usize, ScheduleError> {
        let iso = self
            .policies
            .get(&w.identity.tenant)
            .map(|p| p.isolation)
            .unwrap_or_default();
        let mut anti = Vec::new();
        for c in &w.constraints {
            if c.constraint_type == ConstraintType::AntiAffinity && c.preferred.is_none() {
                anti.push(
                    self.st
                        .term_id(&c.value, self.index.n)
                        .map_err(|reason| invalid(&w.name, &c.value, reason))?,
                );
            }
        }
        let req = &w.resource_requirements;
        let reserved = Capacity {
            cpu_millis: u64::from(req.cpu_millis),
            memory: req.memory,
            storage: req.storage,
            containers: 1,
        };
        let p = self.make_placement(w, node, reserved, iso, anti, false, seq);
        Ok(self.st.add(p, &self.index))
    }

    /// Decides and applies one workload: the result, and whether it was
    /// placed.
    pub(super) fn schedule_one(
        &mut self,
        workload: Workload,
        seq: u64,
        allow_preempt: bool,
    ) -> (Result<Allocation, ScheduleError>, bool) {
        let t0 = Instant::now();
        if self.st.by_id.contains_key(&workload.id) {
            return (
                Err(ScheduleError::DuplicateWorkload {
                    workload: workload.name.clone(),
                    id: workload.id,
                }),
                false,
            );
        }
        match self.decide(&workload, allow_preempt) {
            Ok(d) => (self.commit(Arc::new(workload), seq, d, t0), true),
            Err(f) => (Err(self.fail(&workload, f, t0)), false),
        }
    }

    /// Whether events are written or recorded at all.
    pub(super) fn observing(&self) -> bool {
        self.audit.is_some() || self.record
    }

    /// Audits `ev` (and records it if asked to).
    pub(super) fn emit(
        &mut self,
        ev: ScheduleEvent,
        workload: &str,
        node: Option<&str>,
        actor: Option<&IdentityContext>,
    ) -> Result<(), ScheduleError> {
        if let Some(log) = &self.audit {
            let mut entry = Entry::new(&ev).workload(workload);
            entry = match actor {
                Some(a) => entry.actor(a),
                None => entry.actor(crate::audit::Actor::host()),
            };
            if let Some(n) = node {
                entry = entry.node(n);
            }
            log.append(entry)?;
        }
        if self.record {
            self.events.push(ev);
        }
        Ok(())
    }

    /// Counts and audits a refusal; the error the caller gets.
    pub(super) fn fail(&mut self, w: &Workload, failure: Failure, t0: Instant) -> ScheduleError {
        self.metrics.decision_time += t0.elapsed();
        match failure {
            Failure::Denied(Denial {
                rule,
                detail,
                error,
            }) => {
                self.metrics.denied += 1;
                if self.observing() {
                    let ev = ScheduleEvent::PolicyDenied {
                        workload: w.id,
                        name: w.name.clone(),
                        tenant: w.identity.tenant.clone(),
                        rule,
                        detail,
                    };
                    if let Err(e) = self.emit(ev, &w.name, None, Some(&w.identity)) {
                        return e;
                    }
                }
                *error
            }
            Failure::Invalid(e) => {
                self.metrics.denied += 1;
                *e
            }
            Failure::Unschedulable(explanation) => {
                self.metrics.decisions += 1;
                self.metrics.unschedulable += 1;
                if self.observing() {
                    let ev = ScheduleEvent::Unschedulable {
                        workload: w.id,
                        name: w.name.clone(),
                        tenant: w.identity.tenant.clone(),
                        priority: w.priority,
                        considered: explanation.considered,
                        rejected: rejections(&explanation),
                        note: explanation.note.clone(),
                    };
                    if let Err(e) = self.emit(ev, &w.name, None, Some(&w.identity)) {
                        return e;
                    }
                }
                ScheduleError::Unschedulable {
                    workload: w.name.clone(),
                    explanation,
                }
            }
        }
    }

    /// Applies `d`: evicts the victims, records and claims the placement,
    /// audits it. The placement is undone if the claim or its audit fails
    /// (a failed claim also restores the victims).
    pub(super) fn commit(
        &mut self,
        w: Arc<Workload>,
        seq: u64,
        d: Decision,
        t0: Instant,
    ) -> Result<Allocation, ScheduleError> {
        if let Some(log) = &self.audit {
            log.ensure_writable()?;
        }
        let node_id = self.index.ids[d.node].clone();
        // Evict the victims first.
        let mut evicted: Vec<Placement> = Vec::new();
        for v in &d.victims {
            if let Some(p) = self.st.remove(*v, &self.index) {
                evicted.push(p);
            }
        }
        for p in &evicted {
            self.inventory.release(&node_id, p.w.id)?;
        }
        let slot = self.add_own(w.clone(), d.node, seq)?;
        let claim = self.claim_for(slot);
        if let Err(e) = self.inventory.claim(&claim) {
            self.st.remove(slot, &self.index);
            for p in evicted {
                let id = p.w.id;
                let slot = self.st.add(p, &self.index);
                let claim = self.claim_for(slot);
                if self.inventory.claim(&claim).is_err() {
                    tracing::warn!(workload = %id, "could not restore a claim after a failed preemption");
                }
            }
            return Err(e.into());
        }
        self.metrics.decisions += 1;
        self.metrics.placed += 1;
        self.metrics.preemptions += evicted.len() as u64;
        self.metrics.decision_time += t0.elapsed();
        for p in &evicted {
            self.evicted_seq.insert(p.w.id, p.seq);
        }
        let preempted: Vec<Workload> = evicted.iter().map(|p| (*p.w).clone()).collect();
        if self.observing() {
            let zone = self.index.zones[self.index.zone_of[d.node] as usize].to_string();
            for p in &evicted {
                let ev = ScheduleEvent::Preempted {
                    node: node_id.to_string(),
                    victim: party(&p.w),
                    preemptor: party(&w),
                };
                self.emit(ev, &p.w.name, Some(node_id.as_str()), Some(&w.identity))?;
            }
            let ev = ScheduleEvent::Placed {
                workload: w.id,
                name: w.name.clone(),
                tenant: w.identity.tenant.clone(),
                priority: w.priority,
                node: node_id.to_string(),
                zone,
                score: d.score,
                feasible: d.explanation.feasible,
                considered: d.explanation.considered,
                rejected: rejections(&d.explanation),
                preempted: preempted.iter().map(|v| v.name.clone()).collect(),
            };
            if let Err(e) = self.emit(ev, &w.name, Some(node_id.as_str()), Some(&w.identity)) {
                // Fail closed: a placement that cannot be audited is undone.
                self.st.remove(slot, &self.index);
                let _ = self.inventory.release(&node_id, w.id);
                return Err(e);
            }
        }
        Ok(Allocation {
            workload: w.id,
            name: w.name.clone(),
            region: self.index.region_of[d.node].to_string(),
            zone: self.index.zones[self.index.zone_of[d.node] as usize].to_string(),
            node_id,
            score: d.score,
            preempted,
            explanation: d.explanation,
        })
    }

    /// The inventory claim for the placement in `slot`.
    fn claim_for(&self, slot: usize) -> Claim {
        let p = self.st.slab[slot]
            .as_ref()
            .expect("claim_for is called right after the slot was filled");
        Claim {
            workload: p.w.id,
            name: p.w.name.clone(),
            tenant: p.w.identity.tenant.clone(),
            priority: p.w.priority,
            labels: p.w.labels.clone(),
            signers: p.w.signers.clone(),
            anti_affinity: p
                .anti_terms
                .iter()
                .map(|&t| self.st.terms[t].text.to_string())
                .collect(),
            isolate_tenant: p.iso_tenant,
            isolate_signer: p.iso_signer,
            node: self.index.ids[p.node].clone(),
            reserved: p.reserved,
        }
    }
}

fn party(w: &Workload) -> Party {
    Party {
        workload: w.id,
        name: w.name.clone(),
        tenant: w.identity.tenant.clone(),
        principal: w.identity.principal.clone(),
        priority: w.priority,
        trust: w.identity.trust.level,
    }
}

fn rejections(e: &Explanation) -> Vec<Rejection> {
    e.groups
        .iter()
        .map(|g| Rejection {
            reason: g.reason.clone(),
            nodes: g.count,
        })
        .collect()
}
