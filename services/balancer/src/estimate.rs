//! A node's estimated load: its measured load plus the cost of the placements its
//! measurements do not show yet.
//!
//! Heartbeats lag a placement: the agent has to start, and then a heartbeat has to
//! sample a full interval of it. Ranking by measured load alone sends a whole burst
//! to the node that looked idle when it began. So every placement adds its cost to
//! the node's estimate at once, and that cost fades as the measurements catch up.
//!
//! **Cost.** What one agent uses, in the heartbeat's units (percent of the node's CPU
//! and memory): the request's `resources` when it has them; otherwise the node's
//! observed per-agent average ([`Observed`]), but never less than the configured
//! default. Underestimating an agent is what herds a burst, while overestimating
//! only spreads it a little more than needed, hence the floor.
//!
//! **Decay.** Each placement `p` carries its cost `c_p` and the instant `t_p` this
//! replica learned of it (its own pick, or the coordinator's assignment event). Let
//! `h` be the arrival of the node's latest measurement (heartbeat, or membership
//! record when heartbeats are stale) and `a_p = max(0, h − t_p)` the stretch of
//! measurement since the placement. The share of `c_p` still counted is
//!
//! ```text
//! w(a) = 1                        a ≤ hold
//! w(a) = 1 − (a − hold) / fade    hold < a < hold + fade
//! w(a) = 0                        a ≥ hold + fade
//! ```
//!
//! and the estimated usage is `measured + Σ w(a_p) · c_p`, fed into the load score
//! with the pending part unclamped (a node about to be overloaded ranks above a
//! merely busy one). `hold` covers the agent starting and a heartbeat interval
//! sampling it; over `fade` the measured usage takes the cost over. The decay runs on
//! the measurement clock, not the wall clock: a node that stops reporting keeps its
//! placements' costs in full, and a flurry of heartbeats (a node reports a changed
//! agent count at once) does not hurry it.
//!
//! On a real node the agent's CPU shows up in the measurements while `w` falls, so
//! the estimate moves from `measured + cost` to the new measured load. A simulated
//! node never changes its CPU with agents: after `hold + fade` its estimate is what
//! it reports, as it would be for a real node whose agents turned out idle. Every
//! replica sees the same events and heartbeats, so replicas agree on the estimate
//! (up to the milliseconds between their arrivals); a replica's own pick counts from
//! the moment it is made and becomes the placement when the event confirms it.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use shoal_protocol::{CPU_WEIGHT, MEMORY_WEIGHT, Resources};

/// How a placement's cost fades into the measured load.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Decay {
    /// Counted in full this long (of measurement) after the placement.
    pub hold: Duration,
    /// Then fades linearly to nothing over this long.
    pub fade: Duration,
}

impl Default for Decay {
    fn default() -> Decay {
        Decay {
            hold: Duration::from_secs(3),
            fade: Duration::from_secs(10),
        }
    }
}

impl Decay {
    /// The share of a placement's cost still counted after `age` of measurement.
    pub fn weight(&self, age: Duration) -> f64 {
        if age <= self.hold {
            return 1.0;
        }
        let past = age - self.hold;
        if past >= self.fade {
            0.0
        } else {
            1.0 - past.as_secs_f64() / self.fade.as_secs_f64()
        }
    }

    /// Whether a placement this old no longer counts at all.
    fn settled(&self, age: Duration) -> bool {
        age >= self.hold + self.fade
    }
}

/// What a cost adds to the load score.
pub fn load_of(cost: Resources) -> f64 {
    CPU_WEIGHT * cost.cpu / 100.0 + MEMORY_WEIGHT * cost.memory / 100.0
}

/// A placement whose cost still counts.
#[derive(Clone, Copy, Debug)]
struct Placement {
    at: Instant,
    cost: Resources,
}

/// One of this replica's picks not yet confirmed by an assignment event.
#[derive(Clone, Copy, Debug)]
struct Pick {
    expiry: Instant,
    placement: Placement,
}

/// The placements on one node whose cost its measurements do not show yet.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    /// This replica's unconfirmed picks, oldest first.
    picks: VecDeque<Pick>,
    /// The coordinator's placements, by agent.
    placed: HashMap<String, Placement>,
    /// Arrival of the node's latest measurement: the clock the decay runs on.
    clock: Option<Instant>,
    /// `Σ w · cost` at `clock`.
    total: Resources,
}

impl Pending {
    /// Unconfirmed picks (they count as agents too).
    pub fn picks(&self) -> usize {
        self.picks.len()
    }

    /// Placements (picks included) still counted.
    pub fn len(&self) -> usize {
        self.picks.len() + self.placed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The weighted cost of everything pending.
    pub fn total(&self) -> Resources {
        self.total
    }

    fn weight(&self, p: &Placement, decay: &Decay) -> f64 {
        let age = self
            .clock
            .map_or(Duration::ZERO, |h| h.saturating_duration_since(p.at));
        decay.weight(age)
    }

    fn add(&mut self, p: &Placement, decay: &Decay) {
        let w = self.weight(p, decay);
        self.total.cpu += w * p.cost.cpu;
        self.total.memory += w * p.cost.memory;
    }

    fn subtract(&mut self, p: &Placement, decay: &Decay) {
        let w = self.weight(p, decay);
        self.total.cpu = (self.total.cpu - w * p.cost.cpu).max(0.0);
        self.total.memory = (self.total.memory - w * p.cost.memory).max(0.0);
        if self.is_empty() {
            self.total = Resources::default();
        }
    }

    /// Counts one of this replica's picks from `at` until `expiry`.
    pub fn pick(&mut self, at: Instant, expiry: Instant, cost: Resources, decay: &Decay) {
        let placement = Placement { at, cost };
        self.add(&placement, decay);
        self.picks.push_back(Pick { expiry, placement });
    }

    /// The coordinator placed `agent` here. Its oldest unconfirmed pick, if any,
    /// becomes this placement and keeps its start; otherwise it starts `now`. A
    /// placement already counted for the agent is left as it is. Returns whether a
    /// pick was confirmed.
    pub fn place(&mut self, agent: &str, cost: Resources, now: Instant, decay: &Decay) -> bool {
        let pick = self.picks.pop_front();
        if let Some(p) = &pick {
            self.subtract(&p.placement, decay);
        }
        if !self.placed.contains_key(agent) {
            let placement = Placement {
                at: pick.map_or(now, |p| p.placement.at),
                cost,
            };
            self.add(&placement, decay);
            self.placed.insert(agent.to_string(), placement);
        }
        pick.is_some()
    }

    /// `agent` left the node (unassigned, orphaned, moved): its cost goes with it.
    pub fn remove(&mut self, agent: &str, decay: &Decay) -> bool {
        match self.placed.remove(agent) {
            Some(p) => {
                self.subtract(&p, decay);
                true
            }
            None => false,
        }
    }

    /// Drops the front pick if it expired by `now`. Returns whether it did.
    pub fn expire_front(&mut self, now: Instant, decay: &Decay) -> bool {
        if self.picks.front().is_none_or(|p| p.expiry > now) {
            return false;
        }
        if let Some(p) = self.picks.pop_front() {
            self.subtract(&p.placement, decay);
        }
        true
    }

    /// A measurement arrived at `at`: the decay moves on, and placements the
    /// measurements now carry are forgotten.
    pub fn measured(&mut self, at: Instant, decay: &Decay) {
        let clock = self.clock.map_or(at, |c| c.max(at));
        self.clock = Some(clock);
        self.placed
            .retain(|_, p| !decay.settled(clock.saturating_duration_since(p.at)));
        let mut total = Resources::default();
        for p in self
            .placed
            .values()
            .chain(self.picks.iter().map(|p| &p.placement))
        {
            let w = self.weight(p, decay);
            total.cpu += w * p.cost.cpu;
            total.memory += w * p.cost.memory;
        }
        self.total = total;
    }
}

/// What a node's measurements say its agents use.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Observed {
    /// Usage when the node last ran no agents and had none coming.
    idle: Option<Resources>,
    /// Usage above idle per running agent, learned while nothing was pending.
    per_agent: Option<Resources>,
}

impl Observed {
    /// Learns from a measurement of a node running `running` agents, where the
    /// coordinator has placed `assigned`. `settled`: no placement on the node is
    /// pending. Only a measurement that shows exactly the agents the node was given
    /// teaches anything: not while agents start, nor while they stop.
    pub fn learn(&mut self, usage: Resources, running: u32, assigned: u32, settled: bool) {
        let finite = usage.cpu.is_finite() && usage.memory.is_finite();
        if !settled || running != assigned || !finite {
            return;
        }
        if running == 0 {
            self.idle = Some(usage);
        } else if let Some(idle) = self.idle {
            let k = f64::from(running);
            self.per_agent = Some(Resources {
                cpu: ((usage.cpu - idle.cpu) / k).clamp(0.0, 100.0),
                memory: ((usage.memory - idle.memory) / k).clamp(0.0, 100.0),
            });
        }
    }

    /// The cost of an agent without a resource request: the observed average, but
    /// at least `floor`.
    pub fn cost(&self, floor: Resources) -> Resources {
        let seen = self.per_agent.unwrap_or_default();
        Resources {
            cpu: seen.cpu.max(floor.cpu),
            memory: seen.memory.max(floor.memory),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn cost(cpu: f64) -> Resources {
        Resources { cpu, memory: 0.0 }
    }

    #[test]
    fn weight_holds_then_fades_linearly() {
        let d = Decay {
            hold: 2 * S,
            fade: 4 * S,
        };
        assert_eq!(d.weight(Duration::ZERO), 1.0);
        assert_eq!(d.weight(2 * S), 1.0);
        assert!((d.weight(3 * S) - 0.75).abs() < 1e-9);
        assert!((d.weight(5 * S) - 0.25).abs() < 1e-9);
        assert_eq!(d.weight(6 * S), 0.0);
        assert_eq!(d.weight(60 * S), 0.0);
    }

    #[test]
    fn decay_runs_on_measurements_not_on_the_wall_clock() {
        let d = Decay::default();
        let t0 = Instant::now();
        let mut p = Pending::default();
        p.place("a", cost(10.0), t0, &d);
        assert_eq!(p.total().cpu, 10.0);
        // No measurement since: still in full, however late it is.
        p.expire_front(t0 + 60 * S, &d);
        assert_eq!(p.total().cpu, 10.0);
        p.measured(t0 + d.hold + d.fade / 2, &d);
        assert!((p.total().cpu - 5.0).abs() < 1e-9);
        p.measured(t0 + d.hold + d.fade, &d);
        assert_eq!(p.total().cpu, 0.0);
        assert!(p.is_empty(), "settled placements are forgotten");
    }

    #[test]
    fn a_confirmed_pick_keeps_its_start_and_is_counted_once() {
        let d = Decay::default();
        let t0 = Instant::now();
        let mut p = Pending::default();
        p.pick(t0, t0 + 5 * S, cost(4.0), &d);
        assert_eq!((p.picks(), p.total().cpu), (1, 4.0));
        assert!(p.place("a", cost(4.0), t0 + S, &d));
        assert_eq!((p.picks(), p.len(), p.total().cpu), (0, 1, 4.0));
        // Repeated event: nothing added.
        assert!(!p.place("a", cost(4.0), t0 + 2 * S, &d));
        assert_eq!(p.total().cpu, 4.0);
        // It started at t0, not at the event.
        p.measured(t0 + d.hold + d.fade, &d);
        assert!(p.is_empty());
        assert!(!p.expire_front(t0 + 60 * S, &d));
    }

    #[test]
    fn observed_cost_is_usage_above_idle_per_agent_with_a_floor() {
        let floor = Resources {
            cpu: 1.0,
            memory: 1.0,
        };
        let usage = |cpu, memory| Resources { cpu, memory };
        let mut o = Observed::default();
        assert_eq!(o.cost(floor), floor, "nothing observed: the default");
        o.learn(usage(10.0, 20.0), 0, 0, true);
        o.learn(usage(50.0, 21.0), 4, 4, false);
        let pending = o.cost(floor);
        assert_eq!(pending, floor, "not learned while placements are pending");
        // Agents stopping: the node still runs 4, none is placed there any more.
        o.learn(usage(90.0, 21.0), 4, 0, true);
        assert_eq!(o.cost(floor), floor, "not learned while agents stop");
        o.learn(usage(50.0, 21.0), 4, 4, true);
        let c = o.cost(floor);
        assert!((c.cpu - 10.0).abs() < 1e-9, "{c:?}");
        assert_eq!(c.memory, 1.0, "below the floor: the floor");
    }
}
