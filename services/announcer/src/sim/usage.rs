//! What a simulated node reports as its usage: a random walk per node, or the same
//! fixed values on every node.

use rand::Rng;

/// What simulated nodes report as their CPU, memory, disk and load average.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum SimMetrics {
    /// Each node starts at its own random values (CPU 5–60 %, memory 20–70 %, disk
    /// 10–80 %, load 0.1–4) and random-walks from there every interval.
    #[default]
    Varied,
    /// Every node reports these percentages, unchanging (disk 50 %, load 1).
    Equal { cpu: f64, memory: f64 },
}

impl SimMetrics {
    /// Equal metrics at moderate values: CPU 30 %, memory 40 %.
    pub const EQUAL: SimMetrics = SimMetrics::Equal {
        cpu: 30.0,
        memory: 40.0,
    };
}

/// A random walk inside a range (synthetic but plausible metrics), or a value that
/// never moves.
#[derive(Debug, Clone, Copy)]
pub(super) struct Walk {
    pub value: f64,
    step: f64,
    max: f64,
}

impl Walk {
    fn new(rng: &mut impl Rng, (low, high): (f64, f64), step: f64, max: f64) -> Walk {
        Walk {
            value: rng.random_range(low..high),
            step,
            max,
        }
    }
    fn fixed(value: f64) -> Walk {
        Walk {
            value,
            step: 0.0,
            max: f64::MAX,
        }
    }
    fn step(&mut self, rng: &mut impl Rng) {
        if self.step > 0.0 {
            self.value =
                (self.value + rng.random_range(-self.step..=self.step)).clamp(0.0, self.max);
        }
    }
}

/// A node's CPU, memory, disk and load average.
#[derive(Debug, Clone, Copy)]
pub(super) struct Usage {
    pub cpu: Walk,
    pub memory: Walk,
    pub disk: Walk,
    pub load: Walk,
}

impl Usage {
    pub(super) fn new(metrics: SimMetrics, rng: &mut impl Rng) -> Usage {
        match metrics {
            SimMetrics::Varied => Usage {
                cpu: Walk::new(rng, (5.0, 60.0), 2.0, 100.0),
                memory: Walk::new(rng, (20.0, 70.0), 0.5, 100.0),
                disk: Walk::new(rng, (10.0, 80.0), 0.01, 100.0),
                load: Walk::new(rng, (0.1, 4.0), 0.1, 64.0),
            },
            SimMetrics::Equal { cpu, memory } => Usage {
                cpu: Walk::fixed(cpu),
                memory: Walk::fixed(memory),
                disk: Walk::fixed(50.0),
                load: Walk::fixed(1.0),
            },
        }
    }

    /// One interval's sample.
    pub(super) fn step(&mut self, rng: &mut impl Rng) {
        for walk in [
            &mut self.cpu,
            &mut self.memory,
            &mut self.disk,
            &mut self.load,
        ] {
            walk.step(rng);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_metrics_never_move_and_varied_ones_stay_in_range() {
        let mut rng = rand::rng();
        let mut equal = Usage::new(SimMetrics::EQUAL, &mut rng);
        let mut varied = Usage::new(SimMetrics::Varied, &mut rng);
        for _ in 0..1000 {
            equal.step(&mut rng);
            varied.step(&mut rng);
            assert!((0.0..=100.0).contains(&varied.cpu.value));
            assert!((0.0..=100.0).contains(&varied.memory.value));
        }
        assert_eq!((equal.cpu.value, equal.memory.value), (30.0, 40.0));
        assert_eq!((equal.disk.value, equal.load.value), (50.0, 1.0));
    }
}
