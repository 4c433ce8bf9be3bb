//! How busy a node is, as the strategies see it.
//!
//! The load score
//!
//! ```text
//! load = 0.4 · cpu_usage/100 + 0.3 · memory_usage/100 + 0.3 · agents/max_agents
//! ```
//!
//! is a number from 0 (idle) to 1 (saturated). CPU weighs most because it is what an
//! extra agent competes for first; memory and the agent slots share the rest. The
//! agent term uses the balancer's *effective* agent count (see [`effective_agents`]),
//! which moves with every pick. `least_loaded` ranks nodes by the score of their
//! measured metrics plus the cost of the placements those metrics do not show yet
//! (see [`crate::estimate`]), so a burst climbs the estimate of the node it lands on
//! and spreads instead of piling onto the node that looked emptiest.
//!
//! `weighted` draws a node with probability proportional to its free capacity, the
//! free agent slots `max_agents − agents`.

pub use shoal_protocol::{AGENTS_WEIGHT, CPU_WEIGHT, MEMORY_WEIGHT, load_score};

/// The agents a node should be counted as running: the larger of what it reports
/// (heartbeats, which lag a new placement until the agent starts) and what the
/// coordinator has placed on it (which a balancer that started late may undercount),
/// plus this replica's picks not yet confirmed by an assignment event.
pub fn effective_agents(reported: u32, assigned: u32, in_flight: usize) -> u32 {
    let in_flight = u32::try_from(in_flight).unwrap_or(u32::MAX);
    reported.max(assigned).saturating_add(in_flight)
}

/// Free agent slots: the `weighted` strategy's weight.
pub fn free_slots(agents: u32, max_agents: u32) -> u32 {
    max_agents.saturating_sub(agents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_spans_idle_to_saturated() {
        assert_eq!(load_score(0.0, 0.0, 0, 10), 0.0);
        assert!((load_score(100.0, 100.0, 10, 10) - 1.0).abs() < 1e-12);
        assert!((load_score(50.0, 0.0, 0, 10) - 0.2).abs() < 1e-12);
        assert!((load_score(0.0, 0.0, 5, 10) - 0.15).abs() < 1e-12);
        // Garbage in is treated as busy, never as idle.
        assert!(load_score(f64::NAN, -5.0, 0, 0) >= 0.7);
    }

    #[test]
    fn effective_agents_counts_the_larger_source_and_in_flight_picks() {
        assert_eq!(effective_agents(3, 5, 0), 5);
        assert_eq!(effective_agents(7, 5, 2), 9);
        assert_eq!(free_slots(9, 10), 1);
        assert_eq!(free_slots(12, 10), 0);
    }
}
