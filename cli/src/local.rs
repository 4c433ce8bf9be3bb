//! The local control plane `shoal up` runs: where its state lives, how its
//! processes are found again by `status`, `down` and `logs`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// One process `shoal up` started.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Instance {
    /// e.g. `registry`, `coordinator-2`, `node-1`, `nats-server`, `postgres`.
    pub name: String,
    pub kind: Kind,
    pub pid: u32,
    pub log: PathBuf,
    /// Where it listens, for servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    NatsServer,
    Postgres,
    Registry,
    Balancer,
    Coordinator,
    Announcer,
    Gateway,
}

impl Kind {
    /// When a kind stops, first to last: coordinators before the nodes, so a clean
    /// stop moves no agent; the services before the servers they need.
    pub fn stop_rank(self) -> u8 {
        match self {
            Kind::Coordinator | Kind::Gateway => 0,
            Kind::Announcer => 1,
            Kind::Balancer | Kind::Registry => 2,
            Kind::Postgres => 3,
            Kind::NatsServer => 4,
        }
    }

    /// The NATS micro service name, for services.
    pub fn service_name(self) -> Option<&'static str> {
        match self {
            Kind::Registry => Some("shoal-registry"),
            Kind::Balancer => Some("shoal-balancer"),
            Kind::Coordinator => Some("shoal-coordinator"),
            Kind::Announcer => Some("shoal-announcer"),
            Kind::Gateway => Some("shoal-gateway"),
            Kind::NatsServer | Kind::Postgres => None,
        }
    }
}

/// What `shoal up` wrote down about the running control plane.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct State {
    pub up_pid: u32,
    pub nats_url: String,
    pub monitor_port: Option<u16>,
    pub database_url: Option<String>,
    pub instances: Vec<Instance>,
}

pub struct Paths {
    pub root: PathBuf,
}

impl Paths {
    /// Made absolute: Postgres changes into its data directory, so a relative
    /// socket directory (`.shoal/run/pg`) would point nowhere.
    pub fn new(root: &Path) -> Paths {
        let root = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
        Paths { root }
    }
    pub fn run(&self) -> PathBuf {
        self.root.join("run")
    }
    pub fn logs(&self) -> PathBuf {
        self.run().join("logs")
    }
    pub fn nats_store(&self) -> PathBuf {
        self.run().join("nats")
    }
    pub fn nats_config(&self) -> PathBuf {
        self.run().join("nats-server.conf")
    }
    pub fn pg_data(&self) -> PathBuf {
        self.run().join("pg")
    }
    /// Where the running `shoal up` takes `shoal stop|start|restart` requests.
    pub fn control_socket(&self) -> PathBuf {
        self.run().join("control.sock")
    }
    pub fn state_file(&self) -> PathBuf {
        self.run().join("state.json")
    }
    /// What the last run wrote down, kept after it stopped.
    pub fn last_run_file(&self) -> PathBuf {
        self.run().join("last-run.json")
    }
    /// The run before this one's logs.
    pub fn previous_logs(&self) -> PathBuf {
        self.run().join("logs.previous")
    }

    /// The running control plane's state, if one runs (or ran and was not stopped).
    pub fn load(&self) -> anyhow::Result<Option<State>> {
        read_state(&self.state_file())
    }

    /// The state of the last run that was stopped.
    pub fn load_last(&self) -> anyhow::Result<Option<State>> {
        read_state(&self.last_run_file())
    }

    pub fn save(&self, state: &State) -> anyhow::Result<()> {
        let tmp = self.state_file().with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(state)?)?;
        std::fs::rename(&tmp, self.state_file())?;
        Ok(())
    }

    /// The control plane stopped: its state becomes the last run's, so `status` and
    /// `logs` still find its processes and logs.
    pub fn clear(&self) {
        let _ = std::fs::rename(self.state_file(), self.last_run_file());
    }

    /// Before a run: the last run's logs move to `logs.previous` (replacing the
    /// ones before), so a new run does not overwrite them.
    pub fn rotate_logs(&self) -> anyhow::Result<()> {
        let (logs, previous) = (self.logs(), self.previous_logs());
        if logs.is_dir() {
            if previous.exists() {
                std::fs::remove_dir_all(&previous)
                    .with_context(|| format!("removing {}", previous.display()))?;
            }
            std::fs::rename(&logs, &previous).with_context(|| {
                format!("keeping the last run's logs in {}", previous.display())
            })?;
        }
        std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))
    }
}

fn read_state(path: &Path) -> anyhow::Result<Option<State>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a shoal state file; remove it if nothing runs",
                path.display()
            )
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Whether a process with this pid exists (signal 0 checks without sending).
pub fn alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok() && !zombie(pid)
}

fn zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Where the local control plane lives when `--dir`/`SHOAL_DIR` is not given: the
/// first `name` directory found in `from` or above it, as git finds `.git`, so
/// `shoal status` works from any subdirectory of the project; `from/name` if there
/// is none.
pub fn find_dir(from: &Path, name: &Path) -> PathBuf {
    from.ancestors()
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_dir())
        .unwrap_or_else(|| from.join(name))
}

/// The last `lines` lines of a file.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_absolute_whatever_the_flag_says() {
        let paths = Paths::new(Path::new(".shoal"));
        assert!(
            paths.pg_data().is_absolute(),
            "{}",
            paths.pg_data().display()
        );
        assert!(paths.pg_data().ends_with(".shoal/run/pg"));
    }

    #[test]
    fn the_stack_is_found_from_any_directory_below_it() {
        let project = tempfile::tempdir().unwrap();
        let deep = project.path().join("a/b/c");
        std::fs::create_dir_all(&deep).unwrap();
        let name = Path::new(".shoal");
        // None yet: here.
        assert_eq!(find_dir(&deep, name), deep.join(".shoal"));
        std::fs::create_dir(project.path().join(".shoal")).unwrap();
        assert_eq!(find_dir(&deep, name), project.path().join(".shoal"));
        // The nearest wins.
        std::fs::create_dir(project.path().join("a/.shoal")).unwrap();
        assert_eq!(find_dir(&deep, name), project.path().join("a/.shoal"));
    }
}
