//! What one operation costs the whole system, with `--spawn`: the CPU time every
//! process of the stack used (from `/proc`: nats-server, Postgres with its backends,
//! each service, and this process, which also runs the simulated nodes) and the
//! messages nats-server took in and delivered (its `/varz` counters), each as a delta
//! over a measurement, divided by the operations it acknowledged.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::report::Report;
use crate::stack::Stack;

/// Clock ticks per second of `/proc/<pid>/stat` times (USER_HZ: 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// utime + stime of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let (ticks, _) = stat(pid)?;
    Ok(ticks)
}

/// (utime + stime, parent pid) of a process.
fn stat(pid: u32) -> anyhow::Result<(u64, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces; the fields after it are fixed.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok((field(11) + field(12), u32::try_from(field(1)).unwrap_or(0)))
}

/// CPU ticks of `pid` and all its direct children (Postgres' backends).
fn family_ticks(pid: u32) -> u64 {
    let own = cpu_ticks(pid).unwrap_or(0);
    let children: u64 = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| stat(p).ok())
        .filter(|(_, parent)| *parent == pid)
        .map(|(ticks, _)| ticks)
        .sum();
    own + children
}

#[derive(Deserialize)]
struct Varz {
    in_msgs: u64,
    out_msgs: u64,
}

/// A reading of the counters.
pub struct Cost {
    /// (name, pid, with children) of every process measured.
    processes: Vec<(String, u32, bool)>,
    ticks: BTreeMap<String, u64>,
    monitor_ports: Vec<u16>,
    msgs: (u64, u64),
}

impl Cost {
    /// Reads the counters of the stack's own processes now; `None` for a stack not
    /// started here (its processes are elsewhere).
    pub async fn start(stack: &Stack) -> Option<Cost> {
        let processes = stack.process_ids();
        if processes.is_empty() {
            return None;
        }
        let monitor_ports = stack.monitor_ports();
        let mut cost = Cost {
            processes,
            ticks: BTreeMap::new(),
            monitor_ports,
            msgs: (0, 0),
        };
        cost.ticks = cost.read_ticks();
        cost.msgs = cost.read_msgs().await;
        Some(cost)
    }

    fn read_ticks(&self) -> BTreeMap<String, u64> {
        let mut ticks = BTreeMap::new();
        for (name, pid, family) in &self.processes {
            let t = if *family {
                family_ticks(*pid)
            } else {
                cpu_ticks(*pid).unwrap_or(0)
            };
            *ticks.entry(name.clone()).or_default() += t;
        }
        ticks
    }

    async fn read_msgs(&self) -> (u64, u64) {
        let mut total = (0, 0);
        for port in &self.monitor_ports {
            let Ok(reply) = shoal_testkit::http::get(*port, "/varz").await else {
                continue;
            };
            if let Ok(v) = serde_json::from_str::<Varz>(&reply.body) {
                total.0 += v.in_msgs;
                total.1 += v.out_msgs;
            }
        }
        total
    }

    /// Reports, per operation of `what` (`ops` acknowledged since [`Cost::start`]),
    /// the CPU µs of each process and in all, and the messages in and out of
    /// nats-server.
    pub async fn report(self, report: &mut Report, what: &str, ops: u64) {
        if ops == 0 {
            return;
        }
        let now = self.read_ticks();
        let msgs = self.read_msgs().await;
        let per_op_us = |ticks: u64| ticks as f64 / TICKS_PER_SEC * 1e6 / ops as f64;
        let mut total = 0;
        for (name, after) in &now {
            let used = after.saturating_sub(self.ticks.get(name).copied().unwrap_or(0));
            total += used;
            report.figure(&format!("{what}_cpu_us_{name}"), round(per_op_us(used)));
        }
        report.figure(&format!("{what}_cpu_us_total"), round(per_op_us(total)));
        if !self.monitor_ports.is_empty() {
            let per_op = |n: u64| round(n as f64 / ops as f64);
            report.figure(
                &format!("{what}_nats_msgs_in"),
                per_op(msgs.0.saturating_sub(self.msgs.0)),
            );
            report.figure(
                &format!("{what}_nats_msgs_out"),
                per_op(msgs.1.saturating_sub(self.msgs.1)),
            );
        }
    }

    /// Reports the share of one core each process used since [`Cost::start`]
    /// (`{what}_cores_<process>`), over `elapsed`.
    pub fn report_cores(self, report: &mut Report, what: &str, elapsed: std::time::Duration) {
        let now = self.read_ticks();
        let secs = elapsed.as_secs_f64().max(f64::EPSILON);
        for (name, after) in &now {
            let used = after.saturating_sub(self.ticks.get(name).copied().unwrap_or(0));
            let cores = used as f64 / TICKS_PER_SEC / secs;
            report.figure(
                &format!("{what}_cores_{name}"),
                (cores * 1000.0).round() / 1000.0,
            );
        }
    }
}

fn round(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_time_and_a_parent() {
        let me = std::process::id();
        // Spend some CPU so the reading is above zero.
        let mut x = 0u64;
        for i in 0..50_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        assert!(x > 0);
        let (ticks, parent) = stat(me).unwrap();
        assert!(ticks > 0);
        assert!(parent > 0);
        assert!(family_ticks(parent) >= cpu_ticks(parent).unwrap());
    }
}
