//! One placement decision: policy, then filters, then scores, then (if
//! nothing fits only for lack of capacity) the victim search. Nothing here
//! changes the placements; [`SchedulerContext::commit`] applies a
//! [`Decision`] and [`SchedulerContext::fail`] reports a [`Failure`].

use super::super::ScheduleError;
use super::super::placement::{Explanation, NodeScore};
use super::super::types::Workload;
use super::SchedulerContext;
use super::compile::Compiled;
use super::filter::{self, Asker, Denial, Filter};
use super::preempt;
use super::score::{Ranking, Scoring};
use super::state::signer_group;

/// Why a workload was not placed.
pub(super) enum Failure {
    /// The tenant's policy refused it (audited as `policy.denied`).
    Denied(Denial),
    /// A constraint or the policy could not be understood.
    Invalid(Box<ScheduleError>),
    /// No node fits (audited as `schedule.unschedulable`).
    Unschedulable(Box<Explanation>),
}

impl Failure {
    fn invalid(e: ScheduleError) -> Failure {
        Failure::Invalid(Box::new(e))
    }
}

/// Where a workload goes, and whom it evicts there.
pub(super) struct Decision {
    pub(super) node: usize,
    pub(super) score: u32,
    pub(super) explanation: Explanation,
    pub(super) victims: Vec<usize>,
}

/// Per-decision buffers, reused so the hot path does not allocate per node.
#[derive(Debug)]
pub(super) struct Scratch {
    compiled: Compiled,
    filter: Filter,
    ranking: Ranking,
}

impl Scratch {
    pub(super) fn new(n: usize) -> Scratch {
        Scratch {
            compiled: Compiled::default(),
            filter: Filter::new(n),
            ranking: Ranking::default(),
        }
    }
}

impl SchedulerContext {
    /// Filter, score, and (if nothing fits) look for victims.
    pub(super) fn decide(
        &mut self,
        w: &Workload,
        allow_preempt: bool,
    ) -> Result<Decision, Failure> {
        let tenant = w.identity.tenant.as_str();
        let usage = self.st.tenants.get(tenant).copied().unwrap_or_default();
        let policy = filter::admit(&self.policies, usage, self.index.total_cpu, w)
            .map_err(Failure::Denied)?;
        let tenant_location = self
            .cache
            .tenant_location(tenant, policy, &self.index)
            .map_err(Failure::invalid)?;
        let sc = &mut self.scratch;
        sc.compiled
            .compile(&mut self.cache, &mut self.st, &self.index, w)
            .map_err(Failure::invalid)?;

        let (ix, st) = (&self.index, &self.st);
        sc.filter
            .by_node_sets(ix, st, tenant_location.as_deref(), &sc.compiled, w);
        let signer_key = signer_group(&w.signers);
        let asker = Asker {
            iso: policy.isolation,
            tenant,
            signer_key: &signer_key,
        };
        let scoring = Scoring {
            weights: &self.weights,
            top_n: self.top_n,
            prefs: &sc.compiled.prefs,
        };
        let feasible = sc.ranking.rank(&mut sc.filter, st, &scoring, w, &asker);
        sc.filter.finish();
        let mut explanation = Explanation {
            ids: ix.ids.clone(),
            words: sc.filter.survivors.words().len(),
            considered: ix.n as u32,
            feasible,
            groups: sc.filter.groups.clone(),
            bits: sc.filter.bits.clone(),
            top: sc
                .ranking
                .top
                .iter()
                .map(|&(score, i, parts)| NodeScore {
                    node: ix.ids[i].clone(),
                    score,
                    parts,
                })
                .collect(),
            note: None,
        };
        self.metrics.nodes_scored += u64::from(feasible);
        if let Some(&(score, node, _)) = sc.ranking.top.first() {
            return Ok(Decision {
                node,
                score,
                explanation,
                victims: Vec::new(),
            });
        }

        // Nothing fits. Preemption can only help where capacity was the
        // problem (those nodes passed every other check).
        if !allow_preempt || sc.filter.capacity_blocked() == 0 {
            return Err(Failure::Unschedulable(Box::new(explanation)));
        }
        let candidates = sc.filter.capacity_blocked_nodes(ix.n);
        let min_trust = self.policies.min_trust_to_preempt();
        match preempt::victims(ix, st, &candidates, w, min_trust, &mut explanation) {
            Some((node, victims)) => Ok(Decision {
                node,
                score: 0,
                explanation,
                victims,
            }),
            None => Err(Failure::Unschedulable(Box::new(explanation))),
        }
    }
}
