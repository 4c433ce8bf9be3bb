//! A docker compose project started for real: Shoal's `compose/docker-compose.yml`
//! with the images `compose/offline/build-images.sh` made (its override file swaps
//! them in), under a project name of its own and free host ports, so it runs beside
//! a developer's own stack. On drop it is brought down with `down -v`, which
//! removes its containers, network and volumes; when the test is panicking, the
//! tail of every service's log is printed first. With `SHOAL_COMPOSE_KEEP` set, a
//! stack that was not brought down by the test is left running to look at.
//!
//! Works with Compose v2 (`docker compose`) and with Debian's `docker-compose` 1.29;
//! containers are found by service name (`ps -q`), never by the container names the
//! two spell differently. The host reaches each container at its address on the
//! project's network ([`ComposeStack::ip`]), so a test can talk to any NATS server,
//! not only the one whose ports are published.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Output;

use anyhow::{Context, Result, bail};
use tokio::process::Command;

use crate::ports::free_ports;

/// The compose tool found on this machine.
#[derive(Clone, Debug)]
enum Tool {
    /// `docker compose` (v2).
    Plugin,
    /// `docker-compose` (v1, Debian's 1.29).
    Standalone,
}

async fn find_tool() -> Result<Tool> {
    let ok = |program: &str, args: &[&str]| {
        let mut cmd = Command::new(program);
        cmd.args(args);
        async move { cmd.output().await.is_ok_and(|o| o.status.success()) }
    };
    if ok("docker", &["compose", "version"]).await {
        Ok(Tool::Plugin)
    } else if ok("docker-compose", &["version"]).await {
        Ok(Tool::Standalone)
    } else {
        bail!("neither `docker compose` nor `docker-compose` is installed")
    }
}

pub struct ComposeStack {
    tool: Tool,
    dir: PathBuf,
    files: Vec<PathBuf>,
    project: String,
    env: Vec<(String, String)>,
    down: bool,
}

impl ComposeStack {
    /// `up -d --no-build` of `files` (relative to `dir`, the first the main file)
    /// under a fresh project name, with `SHOAL_NATS_PORT`,
    /// `SHOAL_NATS_MONITOR_PORT` and `SHOAL_HTTP_PORT` set to free ports. Returns once compose does, that
    /// is once every health-checked service others depend on is healthy.
    pub async fn up(dir: &Path, files: &[&str]) -> Result<ComposeStack> {
        let tool = find_tool().await?;
        let ports = free_ports(3);
        // Lowercase letters and digits only: both compose versions accept that as is.
        let project = format!("shoaltest{}x{}", std::process::id(), rand::random::<u32>());
        let stack = ComposeStack {
            tool,
            dir: dir.to_path_buf(),
            files: files.iter().map(|f| dir.join(f)).collect(),
            project,
            env: vec![
                ("SHOAL_NATS_PORT".into(), ports[0].to_string()),
                ("SHOAL_NATS_MONITOR_PORT".into(), ports[1].to_string()),
                ("SHOAL_HTTP_PORT".into(), ports[2].to_string()),
            ],
            down: true,
        };
        stack.compose(&["up", "-d", "--no-build"]).await?;
        Ok(stack)
    }

    /// The host port given to the stack in `var` (`SHOAL_HTTP_PORT`, …).
    pub fn host_port(&self, var: &str) -> Option<u16> {
        self.env
            .iter()
            .find(|(k, _)| k == var)
            .and_then(|(_, v)| v.parse().ok())
    }

    /// The project's default network, which every service joins.
    pub fn network(&self) -> String {
        format!("{}_default", self.project)
    }

    /// The compose tool with the project's name, files and environment.
    fn base(&self) -> std::process::Command {
        let mut cmd = match self.tool {
            Tool::Plugin => {
                let mut c = std::process::Command::new("docker");
                c.arg("compose");
                c
            }
            Tool::Standalone => std::process::Command::new("docker-compose"),
        };
        cmd.current_dir(&self.dir)
            .arg("--project-name")
            .arg(&self.project);
        for f in &self.files {
            cmd.arg("--file").arg(f);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut base = self.base();
        base.args(args);
        let mut cmd = Command::from(base);
        cmd.kill_on_drop(true);
        cmd
    }

    /// A compose subcommand (`kill registry`, `run --rm shoal nodes`, …); its
    /// standard output, or an error with its standard error.
    pub async fn compose(&self, args: &[&str]) -> Result<String> {
        let out = self
            .command(args)
            .output()
            .await
            .with_context(|| format!("running compose {}", args.join(" ")))?;
        checked(out, &format!("compose {}", args.join(" ")))
    }

    /// The container of `service` (its first replica).
    pub async fn container(&self, service: &str) -> Result<String> {
        let out = self.compose(&["ps", "-q", service]).await?;
        out.lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(str::to_string)
            .with_context(|| format!("service {service} has no container"))
    }

    /// The address of `service`'s container on the project's network.
    pub async fn ip(&self, service: &str) -> Result<Ipv4Addr> {
        let id = self.container(service).await?;
        let format = format!(
            "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
            self.network()
        );
        let out = docker(&["inspect", "--format", &format, &id]).await?;
        out.trim()
            .parse()
            .with_context(|| format!("{service} has no address on {}: {out:?}", self.network()))
    }

    /// `docker <verb> <service's container>`: `kill`, `pause`, `unpause`, `start`, …
    pub async fn container_command(&self, verb: &str, service: &str) -> Result<()> {
        let id = self.container(service).await?;
        docker(&[verb, &id]).await.map(drop)
    }

    /// Takes `service` off the project's network (`docker network disconnect`):
    /// the process runs on, unreachable.
    pub async fn disconnect(&self, service: &str) -> Result<()> {
        let id = self.container(service).await?;
        docker(&["network", "disconnect", &self.network(), &id])
            .await
            .map(drop)
    }

    /// Puts `service` back on the project's network, under its service name.
    pub async fn connect(&self, service: &str) -> Result<()> {
        let id = self.container(service).await?;
        docker(&[
            "network",
            "connect",
            "--alias",
            service,
            &self.network(),
            &id,
        ])
        .await
        .map(drop)
    }

    /// The health check's verdict for `service` (`healthy`, `starting`, …), or
    /// `running`/`exited`/`paused` for a service without one.
    pub async fn health(&self, service: &str) -> Result<String> {
        let id = self.container(service).await?;
        let out = docker(&[
            "inspect",
            "--format",
            "{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}",
            &id,
        ])
        .await?;
        Ok(out.trim().to_string())
    }

    /// Containers, networks and volumes that still carry the project's label.
    pub async fn leftovers(&self) -> Result<Vec<String>> {
        let filter = format!("label=com.docker.compose.project={}", self.project);
        let mut found = Vec::new();
        for (what, args) in [
            ("container", vec!["ps", "-a", "-q", "--filter", &filter]),
            ("network", vec!["network", "ls", "-q", "--filter", &filter]),
            ("volume", vec!["volume", "ls", "-q", "--filter", &filter]),
        ] {
            let out = docker(&args).await?;
            found.extend(
                out.lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| format!("{what} {}", l.trim())),
            );
        }
        Ok(found)
    }

    /// `down -v`: removes the containers, the network and the volumes.
    pub async fn down(&mut self) -> Result<()> {
        self.compose(&["down", "-v", "--timeout", "5"]).await?;
        self.down = false;
        Ok(())
    }
}

impl Drop for ComposeStack {
    fn drop(&mut self) {
        if !self.down {
            return;
        }
        if std::env::var_os("SHOAL_COMPOSE_KEEP").is_some() {
            eprintln!(
                "SHOAL_COMPOSE_KEEP is set: compose project {} left running",
                self.project
            );
            return;
        }
        // Drop cannot await: the same commands, run synchronously.
        if std::thread::panicking()
            && let Ok(out) = self
                .base()
                .args(["logs", "--no-color", "--tail", "30"])
                .output()
        {
            eprintln!(
                "----- compose project {} (last 30 lines per service) -----\n{}",
                self.project,
                String::from_utf8_lossy(&out.stdout)
            );
        }
        if let Err(e) = self.base().args(["down", "-v", "--timeout", "5"]).output() {
            eprintln!("compose project {} not brought down: {e}", self.project);
        }
    }
}

/// A compose `.env` file as compose reads it: `KEY=value` lines, `#` comments.
pub fn dotenv(path: &Path) -> Result<BTreeMap<String, String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect())
}

/// `docker <args>`; its standard output, or an error with its standard error.
pub async fn docker(args: &[&str]) -> Result<String> {
    let out = Command::new("docker")
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("running docker {}", args.join(" ")))?;
    checked(out, &format!("docker {}", args.join(" ")))
}

fn checked(out: Output, what: &str) -> Result<String> {
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
