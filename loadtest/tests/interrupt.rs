//! An interrupted run stops what it started: SIGTERM (or Ctrl-C) in the middle of a
//! `--spawn` run leaves no nats-server, Postgres or service process behind.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The direct children of `parent`, by pid and command name.
fn children(parent: u32) -> Vec<(u32, String)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (name, rest) = stat.split_once(" (")?.1.rsplit_once(") ")?;
            let ppid: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
            (ppid == parent).then(|| (pid, name.to_string()))
        })
        .collect()
}

/// Whether `pid` still runs (a zombie waiting for its reaper does not).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, r)| !r.starts_with('Z')))
        .unwrap_or(false)
}

fn wait_until(what: &str, deadline: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigterm_stops_the_private_stack() {
    let mut run = Command::new(env!("CARGO_BIN_EXE_shoal-loadtest"))
        .args([
            "--scenario",
            "heartbeats",
            "--nodes",
            "20",
            "--duration",
            "10m",
        ])
        .arg("--spawn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = run.id();
    let mut started = Vec::new();
    wait_until(
        "the private stack's registry",
        Duration::from_secs(60),
        || {
            started = children(pid);
            started.iter().any(|(_, name)| name == "shoal-registry")
        },
    );
    assert!(
        started.iter().any(|(_, name)| name == "nats-server"),
        "{started:?}"
    );
    kill(Pid::from_raw(pid as i32), Signal::SIGTERM).unwrap();
    let status = run.wait().unwrap();
    assert!(!status.success(), "an interrupted run does not pass");
    wait_until(
        "every process of the stack to end",
        Duration::from_secs(20),
        || started.iter().all(|(p, _)| !running(*p)),
    );
}
