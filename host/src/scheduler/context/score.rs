//! Scores: one pass over the surviving nodes that makes the per-node
//! checks ([`node_check`]) and scores each node that passes them
//! ([`score_parts`]: load, balance, spread, preferred constraints, trust,
//! each 0..=100), keeping the best few for the explanation.

use super::super::placement::{ScoreParts, ScoreWeights};
use super::super::types::Workload;
use super::compile::Pref;
use super::filter::{Asker, Filter, Need, node_check};
use super::state::{Hot, State};

/// The best nodes of one decision, best first: (score, node, parts).
/// Reused from one decision to the next.
#[derive(Debug, Default)]
pub(super) struct Ranking {
    pub(super) top: Vec<(u32, usize, ScoreParts)>,
    key: String,
}

/// How one decision scores: the weights, how many nodes to keep, and the
/// workload's weighted preferences.
pub(super) struct Scoring<'a> {
    pub(super) weights: &'a ScoreWeights,
    pub(super) top_n: usize,
    pub(super) prefs: &'a [(Pref, u32)],
}

impl Ranking {
    /// Checks and scores every node `filter` left, recording the
    /// rejections in it and keeping the best `top_n` here. Returns how many
    /// nodes passed every check.
    pub(super) fn rank(
        &mut self,
        filter: &mut Filter,
        st: &State,
        scoring: &Scoring<'_>,
        w: &Workload,
        asker: &Asker<'_>,
    ) -> u32 {
        self.top.clear();
        // The spread group: the workload's `app` label, else its tenant.
        self.key.clear();
        match w.labels.get("app") {
            Some(app) => {
                self.key.push_str("app=");
                self.key.push_str(app);
            }
            None => {
                self.key.push_str("tenant=");
                self.key.push_str(asker.tenant);
            }
        }
        let zone_counts = st.spread.get(self.key.as_str()).map(Vec::as_slice);
        let max_zone = zone_counts
            .and_then(|z| z.iter().max().copied())
            .unwrap_or(0);
        let total_pref: u32 = scoring.prefs.iter().map(|(_, w)| *w).sum();
        let need = Need::of(w);
        let top_n = scoring.top_n;
        let mut feasible = 0u32;
        for wi in 0..filter.survivors.words().len() {
            let mut word = filter.survivors.words()[wi];
            while word != 0 {
                let i = wi * 64 + word.trailing_zeros() as usize;
                word &= word - 1;
                let h = &st.hot[i];
                if let Some(k) = node_check(h, &st.occ[i], need, asker) {
                    filter.reject(k, i);
                    continue;
                }
                feasible += 1;
                let parts = score_parts(
                    h,
                    st,
                    i,
                    need,
                    zone_counts,
                    max_zone,
                    scoring.prefs,
                    total_pref,
                );
                let score = scoring.weights.total(&parts);
                let pos = self.top.partition_point(|(s, _, _)| *s >= score);
                if pos < top_n {
                    self.top.insert(pos, (score, i, parts));
                    if self.top.len() > top_n {
                        self.top.pop();
                    }
                }
            }
        }
        feasible
    }
}

#[allow(clippy::too_many_arguments)]
#[inline]
fn score_parts(
    h: &Hot,
    st: &State,
    i: usize,
    need: Need,
    zone_counts: Option<&[u32]>,
    max_zone: u32,
    prefs: &[(Pref, u32)],
    total_pref: u32,
) -> ScoreParts {
    // Fraction of capacity in use once the workload is placed.
    let frac = |free: i64, need: i64, inv: f32| -> f32 {
        if inv == 0.0 {
            1.0
        } else {
            (1.0 - (free - need) as f32 * inv).clamp(0.0, 1.0)
        }
    };
    let cpu = frac(h.free_cpu, need.cpu, h.inv_cpu).max(h.util);
    let mem = frac(h.free_mem, need.mem, h.inv_mem);
    let load = ((1.0 - cpu.max(mem)) * 100.0) as u32;
    let balance = ((1.0 - (cpu - mem).abs()) * 100.0) as u32;
    let spread = match zone_counts {
        Some(z) if max_zone > 0 => {
            let here = z.get(h.zone as usize).copied().unwrap_or(0);
            (max_zone - here.min(max_zone)) * 100 / max_zone
        }
        _ => 100,
    };
    let preferred = {
        let mut matched = 0;
        for (p, wt) in prefs {
            let hit = match p {
                Pref::Static(s) => s.set.get(i),
                Pref::Affinity(t) => st.terms[*t].occ.get(i),
                Pref::Anti(t) => !st.terms[*t].occ.get(i),
            };
            if hit {
                matched += wt;
            }
        }
        (matched * 100).checked_div(total_pref).unwrap_or(0)
    };
    let trust = h.trust * 25;
    ScoreParts {
        load,
        balance,
        spread,
        preferred,
        trust,
    }
}
