//! Host metrics for heartbeats, from sysinfo, and the node's own uptime.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sysinfo::{Disks, MINIMUM_CPU_UPDATE_INTERVAL, System};

/// One reading, every value already in the range the heartbeat contract accepts.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Sample {
    pub cpu_usage: f64,
    pub memory_usage: f64,
    pub disk_usage: f64,
    pub load_average: f64,
    /// Seconds since this sampler (the node's announcer) started: the node's own
    /// uptime, not the host's.
    pub uptime_s: u64,
}

/// Disks are re-read this often: their usage moves slowly and a refresh stats every
/// mount.
const DISK_REFRESH: Duration = Duration::from_secs(10);

/// Samples the host. CPU usage is the difference between two refreshes, which must be
/// at least [`MINIMUM_CPU_UPDATE_INTERVAL`] apart; [`Sampler::sample`] waits out the
/// rest of that interval when called too early (only ever the first time at a 1 s
/// heartbeat).
pub struct Sampler {
    system: Option<System>,
    disks: Option<Disks>,
    disk_path: PathBuf,
    cpu_refreshed_at: Instant,
    disks_refreshed_at: Instant,
    disk_usage: f64,
    started: Instant,
}

impl Sampler {
    pub fn new(disk_path: PathBuf) -> Sampler {
        let mut system = System::new_with_specifics(sysinfo::RefreshKind::nothing()).ok();
        if let Some(system) = &mut system {
            system.refresh_cpu_usage();
        }
        let disks = Disks::new_with_refreshed_list().ok();
        let disk_usage = disks.as_ref().map_or(0.0, |d| disk_usage_of(d, &disk_path));
        let now = Instant::now();
        Sampler {
            system,
            disks,
            disk_path,
            cpu_refreshed_at: now,
            disks_refreshed_at: now,
            disk_usage,
            started: now,
        }
    }

    pub async fn sample(&mut self) -> Sample {
        let since = self.cpu_refreshed_at.elapsed();
        if since < MINIMUM_CPU_UPDATE_INTERVAL {
            // sysinfo reports 0 % for two refreshes closer than this.
            tokio::time::sleep(MINIMUM_CPU_UPDATE_INTERVAL - since).await;
        }
        self.cpu_refreshed_at = Instant::now();
        let (cpu_usage, memory_usage) = match &mut self.system {
            Some(system) => {
                system.refresh_cpu_usage();
                system.refresh_memory();
                let total = system.total_memory();
                let memory = if total == 0 {
                    0.0
                } else {
                    system.used_memory() as f64 / total as f64 * 100.0
                };
                (f64::from(system.global_cpu_usage()), memory)
            }
            None => (0.0, 0.0),
        };
        if self.disks_refreshed_at.elapsed() >= DISK_REFRESH {
            self.disks_refreshed_at = Instant::now();
            if let Some(disks) = &mut self.disks {
                disks.refresh(true);
                self.disk_usage = disk_usage_of(disks, &self.disk_path);
            }
        }
        Sample {
            cpu_usage: clamp_percent(cpu_usage),
            memory_usage: clamp_percent(memory_usage),
            disk_usage: clamp_percent(self.disk_usage),
            load_average: System::load_average()
                .map(|l| l.one)
                .ok()
                .filter(|l| l.is_finite() && *l >= 0.0)
                .unwrap_or(0.0),
            uptime_s: self.started.elapsed().as_secs(),
        }
    }
}

/// Usage of the disk mounted at the longest mount point containing `path`.
fn disk_usage_of(disks: &Disks, path: &Path) -> f64 {
    disks
        .iter()
        .filter(|d| path.starts_with(d.mount_point()))
        .max_by_key(|d| d.mount_point().as_os_str().len())
        .filter(|d| d.total_space() > 0)
        .map_or(0.0, |d| {
            let used = d.total_space().saturating_sub(d.available_space());
            used as f64 / d.total_space() as f64 * 100.0
        })
}

/// Keeps a reading inside 0–100 (rounding can overshoot) and finite.
pub fn clamp_percent(value: f64) -> f64 {
    if value.is_finite() {
        value.clamp(0.0, 100.0)
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_are_kept_in_range() {
        assert_eq!(clamp_percent(100.0001), 100.0);
        assert_eq!(clamp_percent(-0.5), 0.0);
        assert_eq!(clamp_percent(f64::NAN), 0.0);
        assert_eq!(clamp_percent(42.0), 42.0);
    }

    #[tokio::test]
    async fn a_sample_is_valid_for_a_heartbeat() {
        let mut sampler = Sampler::new("/".into());
        for _ in 0..2 {
            let s = sampler.sample().await;
            for v in [s.cpu_usage, s.memory_usage, s.disk_usage] {
                assert!((0.0..=100.0).contains(&v), "{s:?}");
            }
            assert!(s.load_average >= 0.0);
        }
        // Memory in use on a running host is never zero.
        assert!(sampler.sample().await.memory_usage > 0.0);
    }

    /// The uptime is the node's (its announcer's), not the host's: a node started
    /// a moment ago reports 0 s on a host that has been up for longer.
    #[tokio::test]
    async fn a_new_node_reports_its_own_uptime_not_the_hosts() {
        let host = System::uptime().unwrap_or(0);
        let mut sampler = Sampler::new("/".into());
        let s = sampler.sample().await;
        assert!(s.uptime_s <= 1, "{s:?}");
        assert!(
            host > 1,
            "host up for {host} s: the test cannot tell them apart"
        );
    }
}
