//! Selection: the five strategies over a pool's indexes, the request filters, and the
//! explanation when nothing fits. Strategies read the indexes; only round robin moves
//! state (its cursor), and [`View::select`] records the pick.

use std::collections::BTreeMap;
use std::time::Instant;

use rand::Rng;
use rand::rngs::StdRng;
use shoal_protocol::{Candidate, SelectReply, SelectRequest, ShoalError, Strategy};

use crate::fenwick::Fenwick;
use crate::pool::Pool;
use crate::slot::Slot;
use crate::view::View;

/// Random draws tried before a filtered `random`/`weighted` selection falls back to
/// a scan of the pool.
const DRAWS: usize = 32;
/// Extra index entries inspected past the chosen node while filling the candidate
/// list, so a rare filter cannot turn the explanation into a full scan.
const EXTRA_SCAN_FACTOR: usize = 4;

/// The label and exclude filters of a request.
pub(crate) struct Filter<'a> {
    labels: &'a BTreeMap<String, String>,
    exclude: Vec<usize>,
}

impl Filter<'_> {
    fn is_trivial(&self) -> bool {
        self.labels.is_empty() && self.exclude.is_empty()
    }

    fn accepts<'s>(&self, slot: impl FnOnce() -> &'s Slot, i: usize) -> bool {
        self.is_trivial() || (!self.exclude.contains(&i) && slot().node.matches_labels(self.labels))
    }
}

/// A strategy's choice: the slot and the candidates with their scores, best first
/// (the chosen node is always first).
pub(crate) struct Choice {
    pub slot: usize,
    pub candidates: Vec<Candidate>,
    /// Round robin only: where its cursor moves.
    pub next_cursor: Option<usize>,
}

impl View {
    /// Picks a node for `req` and counts the pick against it. Fails with
    /// `no_capacity` saying why when no node qualifies.
    pub fn select(&mut self, req: &SelectRequest, now: Instant) -> Result<SelectReply, ShoalError> {
        self.expire(now);
        let strategy = req.strategy.unwrap_or(self.settings.strategy);
        self.read_order(strategy, now);
        self.forget_unread_orders(now);
        let filter = Filter {
            labels: &req.labels,
            exclude: req
                .exclude
                .iter()
                .filter_map(|id| self.by_id.get(id).copied())
                .collect(),
        };
        let choice = self
            .pool_of(req.service.as_deref())
            .and_then(|p| self.choose(p, strategy, &filter).map(|c| (p, c)));
        let Some((pool, choice)) = choice else {
            self.counters.no_capacity += 1;
            return Err(self.explain_no_capacity(req));
        };
        if let Some(cursor) = choice.next_cursor {
            self.pools[pool].cursor = cursor;
        }
        let candidates = choice.candidates;
        let slot = self.slot(choice.slot);
        let node = slot.live_node();
        let cost = slot.cost(req.resources, self.settings.agent_cost);
        self.record_pick(choice.slot, now, cost);
        self.counters.picked(strategy);
        Ok(SelectReply {
            node_id: node.id.clone(),
            node,
            strategy,
            candidates,
        })
    }

    fn choose(&mut self, p: usize, strategy: Strategy, filter: &Filter<'_>) -> Option<Choice> {
        let cap = self.settings.max_candidates.max(1);
        let pool = &self.pools[p];
        let slots = &self.slots;
        let slot = |i: usize| slots[i].as_ref().expect("indexed slot is occupied");
        let ok = |i: usize| filter.accepts(|| slot(i), i);
        let name = |i: usize| slot(i).node.id.clone();
        match strategy {
            Strategy::RoundRobin => round_robin(pool, &ok, cap),
            Strategy::LeastAgents => first_matching(
                kept(&pool.by_agents)
                    .iter()
                    .map(|&(a, i)| (i, f64::from(a))),
                &ok,
                cap,
                &name,
            ),
            Strategy::LeastLoaded => first_matching(
                kept(&pool.by_load)
                    .iter()
                    .map(|&(bits, i)| (i, f64::from_bits(bits))),
                &ok,
                cap,
                &name,
            ),
            Strategy::Random => {
                let pos = random_pos(pool, &ok, filter.is_trivial(), &mut self.rng)?;
                let score = 1.0 / pool.len() as f64;
                Some(window(pool, pos, &ok, cap, |_| score))
            }
            Strategy::Weighted => {
                let pos = weighted_pos(pool, &ok, filter.is_trivial(), &mut self.rng, |i| {
                    pool.position(&slot(i).node.id).ok()
                })?;
                let weights = kept(&pool.weights);
                Some(window(pool, pos, &ok, cap, |i| weights.get(i) as f64))
            }
        }
    }
}

/// An index [`View::read_order`] made sure of.
fn kept<T>(index: &Option<T>) -> &T {
    index.as_ref().expect("the order a strategy reads is kept")
}

/// Uniform draw: the `rr` position of an accepted node. With a filter, a few draws
/// are tried before falling back to a uniform pick among all accepted nodes; either
/// way each accepted node is equally likely.
fn random_pos(
    pool: &Pool,
    ok: &dyn Fn(usize) -> bool,
    trivial: bool,
    rng: &mut StdRng,
) -> Option<usize> {
    let n = pool.len();
    if n == 0 {
        return None;
    }
    if trivial {
        return Some(rng.random_range(0..n));
    }
    for _ in 0..DRAWS {
        let pos = rng.random_range(0..n);
        if ok(pool.slot_at(pos)) {
            return Some(pos);
        }
    }
    let accepted: Vec<usize> = (pool.rr.iter().enumerate())
        .filter(|(_, (_, i))| ok(*i))
        .map(|(pos, _)| pos)
        .collect();
    (!accepted.is_empty()).then(|| accepted[rng.random_range(0..accepted.len())])
}

/// Draw proportional to free slots, through the Fenwick tree; with a filter,
/// rejection sampling (which keeps the proportions among accepted nodes) and then a
/// scan as the fallback.
fn weighted_pos(
    pool: &Pool,
    ok: &dyn Fn(usize) -> bool,
    trivial: bool,
    rng: &mut StdRng,
    position: impl Fn(usize) -> Option<usize>,
) -> Option<usize> {
    let weights = kept(&pool.weights);
    let total = weights.total();
    if total == 0 {
        return None;
    }
    let tries = if trivial { 1 } else { DRAWS };
    for _ in 0..tries {
        let i = weights.find(rng.random_range(0..total))?;
        if trivial || ok(i) {
            return position(i);
        }
    }
    weighted_scan(pool, weights, ok, rng)
}

fn round_robin(pool: &Pool, ok: &dyn Fn(usize) -> bool, cap: usize) -> Option<Choice> {
    let n = pool.len();
    if n == 0 {
        return None;
    }
    let start = pool.cursor % n;
    let mut chosen = None;
    let mut candidates = Vec::with_capacity(cap.min(n));
    let mut extra = 0;
    for (k, (id, i)) in pool.rr.ring_from(start).enumerate() {
        if ok(*i) {
            chosen.get_or_insert(((start + k) % n, *i));
            candidates.push(Candidate {
                node_id: id.as_str().to_owned(),
                // Turns until this node's turn (0 = now).
                score: candidates.len() as f64,
            });
            if candidates.len() >= cap {
                break;
            }
        } else if chosen.is_some() {
            extra += 1;
            if extra > cap * EXTRA_SCAN_FACTOR {
                break;
            }
        }
    }
    let (pos, slot) = chosen?;
    Some(Choice {
        slot,
        candidates,
        next_cursor: Some(pos + 1),
    })
}

/// The first accepted entries of an index ordered best first.
fn first_matching(
    ordered: impl Iterator<Item = (usize, f64)>,
    ok: &dyn Fn(usize) -> bool,
    cap: usize,
    name: &dyn Fn(usize) -> String,
) -> Option<Choice> {
    let mut chosen = None;
    let mut candidates = Vec::new();
    let mut extra = 0;
    for (i, score) in ordered {
        if ok(i) {
            chosen.get_or_insert(i);
            candidates.push(Candidate {
                node_id: name(i),
                score,
            });
            if candidates.len() >= cap {
                break;
            }
        } else if !candidates.is_empty() {
            extra += 1;
            if extra > cap * EXTRA_SCAN_FACTOR {
                break;
            }
        }
    }
    Some(Choice {
        slot: chosen?,
        candidates,
        next_cursor: None,
    })
}

/// The node drawn at `pos` and the accepted nodes after it in id order: what a
/// random draw "considered" besides the winner.
fn window(
    pool: &Pool,
    pos: usize,
    ok: &dyn Fn(usize) -> bool,
    cap: usize,
    score: impl Fn(usize) -> f64,
) -> Choice {
    let n = pool.len();
    let chosen = pool.slot_at(pos);
    let mut candidates = Vec::with_capacity(cap);
    let limit = n.min(cap * (EXTRA_SCAN_FACTOR + 1));
    for (k, (id, i)) in pool.rr.ring_from(pos).take(limit).enumerate() {
        if candidates.len() >= cap {
            break;
        }
        // The drawn node first, whatever the filter (the draw already applied it).
        if k == 0 || ok(*i) {
            candidates.push(Candidate {
                node_id: id.as_str().to_owned(),
                score: score(*i),
            });
        }
    }
    Choice {
        slot: chosen,
        candidates,
        next_cursor: None,
    }
}

/// Weighted draw among accepted nodes only, by a scan: the fallback when the filter
/// rejects most of the pool.
fn weighted_scan(
    pool: &Pool,
    weights: &Fenwick,
    ok: &dyn Fn(usize) -> bool,
    rng: &mut StdRng,
) -> Option<usize> {
    let total: u64 = pool
        .rr
        .iter()
        .filter(|(_, i)| ok(*i))
        .map(|(_, i)| weights.get(*i))
        .sum();
    if total == 0 {
        return None;
    }
    let mut target = rng.random_range(0..total);
    for (pos, (_, i)) in pool.rr.iter().enumerate() {
        if !ok(*i) {
            continue;
        }
        let w = weights.get(*i);
        if target < w {
            return Some(pos);
        }
        target -= w;
    }
    None
}
