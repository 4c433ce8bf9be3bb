//! `shoal up` driven from the outside, for the CLI's tests: the whole control plane
//! it starts (nats-server, Postgres, registry, balancer, coordinators, announcers,
//! gateway) on free ports in a temporary directory, and `shoal` commands run against
//! it as a user runs them (a subprocess, JSON output parsed).

// Each test binary uses its own part of this.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::de::DeserializeOwned;
use shoal_protocol::{Node, NodeList, NodeStatus};
use shoal_testkit::ports::free_port;
use shoal_testkit::{ServiceProcess, nats_server_binary, wait_for};

/// For things that must happen (a first start runs initdb): generous, the machine
/// may be loaded.
pub const DEADLINE: Duration = Duration::from_secs(120);
/// One CLI invocation.
pub const COMMAND_DEADLINE: Duration = Duration::from_secs(30);

/// Where a `shoal up` keeps its state, and the ports it uses: kept across a
/// `down` and the next `up`.
pub struct Layout {
    dir: Arc<tempfile::TempDir>,
    nats_port: u16,
    monitor_port: u16,
    pg_port: u16,
    http_port: u16,
}

impl Layout {
    pub fn new() -> Result<Layout> {
        let dir = tempfile::Builder::new().prefix("shoal-up-").tempdir()?;
        // Postgres runs as the `postgres` user when the tests run as root: it must
        // be able to reach its data directory under here.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )?;
        Ok(Layout {
            dir: Arc::new(dir),
            nats_port: free_port(),
            monitor_port: free_port(),
            pg_port: free_port(),
            http_port: free_port(),
        })
    }
}

/// A `shoal up` running in the foreground, and the `shoal` commands that talk to it.
pub struct Stack {
    pub dir: Arc<tempfile::TempDir>,
    pub layout: (u16, u16, u16, u16),
    pub nats_url: String,
    pub up: ServiceProcess,
    /// Every pid seen in `status`, killed on drop if still alive: `shoal up` runs
    /// its children in their own process groups, so killing it alone (as the
    /// testkit does on drop) would leave them running after a failed test.
    seen: Mutex<Vec<u32>>,
}

impl Stack {
    pub async fn up(extra: &[&str]) -> Result<Stack> {
        Stack::up_in(Layout::new()?, extra).await
    }

    /// `shoal up` again where this stack ran (after `down`): same directory, ports.
    pub async fn again(&self, extra: &[&str]) -> Result<Stack> {
        let (nats_port, monitor_port, pg_port, http_port) = self.layout;
        let layout = Layout {
            dir: self.dir.clone(),
            nats_port,
            monitor_port,
            pg_port,
            http_port,
        };
        Stack::up_in(layout, extra).await
    }

    pub async fn up_in(layout: Layout, extra: &[&str]) -> Result<Stack> {
        let Layout {
            dir,
            nats_port,
            monitor_port,
            pg_port,
            http_port,
        } = layout;
        let mut args: Vec<String> = vec![
            "--dir".into(),
            dir.path().to_string_lossy().into_owned(),
            "up".into(),
            "--nats-port".into(),
            nats_port.to_string(),
            "--monitor-port".into(),
            monitor_port.to_string(),
            "--pg-port".into(),
            pg_port.to_string(),
            "--http-port".into(),
            http_port.to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let nats_server = nats_server_binary()?;
        let up = ServiceProcess::spawn(
            "shoal-up",
            Path::new(env!("CARGO_BIN_EXE_shoal")),
            &args,
            &[(
                "SHOAL_NATS_SERVER".into(),
                nats_server.to_string_lossy().into_owned(),
            )],
        )?;
        up.wait_for_log("running; Ctrl-C", DEADLINE).await?;
        Ok(Stack {
            dir,
            layout: (nats_port, monitor_port, pg_port, http_port),
            nats_url: format!("nats://127.0.0.1:{nats_port}"),
            up,
            seen: Mutex::new(Vec::new()),
        })
    }

    /// `shoal --dir <dir> --nats-url <url> <args>`, with a deadline.
    pub async fn run(&self, args: &[&str]) -> Result<Output> {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_shoal"));
        cmd.arg("--dir")
            .arg(self.dir.path())
            .args(["--nats-url", &self.nats_url, "--timeout", "5s"])
            .args(args)
            .kill_on_drop(true);
        tokio::time::timeout(COMMAND_DEADLINE, cmd.output())
            .await
            .with_context(|| format!("shoal {} did not finish", args.join(" ")))?
            .with_context(|| format!("running shoal {}", args.join(" ")))
    }

    /// `shoal <args>`, which must succeed: what it printed.
    pub async fn text(&self, args: &[&str]) -> Result<String> {
        let out = self.run(args).await?;
        if !out.status.success() {
            bail!(
                "shoal {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// One instance's row of `shoal --json status`.
    pub async fn instance(&self, name: &str) -> Result<serde_json::Value> {
        let status: serde_json::Value = self.json(&["status"]).await?;
        status["instances"]
            .as_array()
            .and_then(|all| all.iter().find(|i| i["instance"] == name))
            .cloned()
            .with_context(|| format!("no {name} in {status}"))
    }

    /// `shoal --json <args>`, which must succeed, parsed.
    pub async fn json<T: DeserializeOwned>(&self, args: &[&str]) -> Result<T> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let printed = self.text(&all).await?;
        serde_json::from_str(&printed)
            .with_context(|| format!("shoal --json {} printed {printed}", args.join(" ")))
    }

    /// `status --json` once every instance runs and is healthy; remembers the pids.
    pub async fn all_healthy(&self, expected: &[&str]) -> Result<Vec<u32>> {
        let status: serde_json::Value = wait_for("every instance healthy", DEADLINE, || async {
            let s: serde_json::Value = self.json(&["status"]).await.ok()?;
            let instances = s["instances"].as_array()?;
            let healthy = instances
                .iter()
                .all(|i| i["status"] == "running" && i["health"] == "healthy");
            (healthy && instances.len() == expected.len()).then_some(s)
        })
        .await?;
        let instances = status["instances"].as_array().context("instances")?;
        let mut names: Vec<&str> = instances
            .iter()
            .filter_map(|i| i["instance"].as_str())
            .collect();
        names.sort_unstable();
        let mut want = expected.to_vec();
        want.sort_unstable();
        assert_eq!(names, want);
        let pids: Vec<u32> = instances
            .iter()
            .filter_map(|i| i["pid"].as_u64().and_then(|p| u32::try_from(p).ok()))
            .collect();
        assert_eq!(pids.len(), expected.len(), "a pid is missing: {status}");
        self.seen.lock().unwrap().extend(&pids);
        Ok(pids)
    }

    pub async fn online_nodes(&self, n: usize) -> Result<Vec<Node>> {
        wait_for(&format!("{n} online nodes"), DEADLINE, || async {
            let list: NodeList = self.json(&["nodes"]).await.ok()?;
            let online = list
                .nodes
                .iter()
                .filter(|n| n.status == NodeStatus::Online)
                .count();
            (online == n).then_some(list.nodes)
        })
        .await
    }

    pub fn state_file(&self) -> PathBuf {
        self.dir.path().join("run/state.json")
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let mut pids = self.seen.lock().unwrap().clone();
        // A test that failed before `status` ran still has the state file.
        if let Ok(text) = std::fs::read_to_string(self.state_file())
            && let Ok(state) = serde_json::from_str::<serde_json::Value>(&text)
        {
            let listed = state["instances"].as_array().cloned().unwrap_or_default();
            pids.extend(
                listed
                    .iter()
                    .filter_map(|i| i["pid"].as_u64().and_then(|p| u32::try_from(p).ok())),
            );
        }
        for &pid in &pids {
            if alive(pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// A process with this pid exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

pub async fn all_gone(pids: &[u32]) -> Result<()> {
    wait_for("every process to exit", Duration::from_secs(30), || {
        let left: Vec<u32> = pids.iter().copied().filter(|&p| alive(p)).collect();
        async move { left.is_empty().then_some(()) }
    })
    .await
    .map_err(|e| {
        let left: Vec<u32> = pids.iter().copied().filter(|&p| alive(p)).collect();
        e.context(format!("still running: {left:?}"))
    })
}

pub const FULL: [&str; 10] = [
    "nats-server",
    "postgres",
    "registry",
    "balancer",
    "coordinator-1",
    "coordinator-2",
    "node-1",
    "node-2",
    "node-3",
    "gateway",
];
