//! A private, throwaway Postgres server per test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use nix::sys::signal::Signal;
use nix::unistd::{Gid, Uid, User, chown, geteuid};
use tempfile::TempDir;
use tokio_postgres::NoTls;

use crate::pgdata::{make_data_dir, scratch_dir};
use crate::ports::free_port;
use crate::process::{CommandSpec, Proc, log_file};
use crate::wait::try_wait_for;

const FALLBACK_BINDIR: &str = "/usr/lib/postgresql/15/bin";
const READY_DEADLINE: Duration = Duration::from_secs(30);
const STOP_DEADLINE: Duration = Duration::from_secs(15);
const START_ATTEMPTS: usize = 3;
const PANIC_TAIL_LINES: usize = 50;

/// A Postgres server of its own: data directory, unix socket directory and log
/// in one temporary directory (on tmpfs when there is room), listening on a
/// free port of 127.0.0.1 only, `trust` authentication for user `postgres`.
/// Dropping it shuts the server down at once and deletes the directory.
pub struct Postgres {
    // Declared before `dir` so the server dies before its directory goes.
    proc: Proc,
    port: u16,
    next_db: AtomicU32,
    dir: TempDir,
}

impl Postgres {
    pub async fn start() -> Result<Postgres> {
        let bindir = postgres_bindir()?;
        // initdb and postgres refuse to run as root.
        let run_as = if geteuid().is_root() {
            Some(postgres_user()?)
        } else {
            None
        };
        let mut dir = scratch_dir("shoal-pg-")?;
        let data_dir = dir.path().join("data");
        let socket_dir = dir.path().join("sock");
        std::fs::create_dir(&socket_dir)?;
        if let Some((uid, gid)) = run_as {
            for path in [dir.path(), socket_dir.as_path()] {
                chown(path, Some(uid), Some(gid))
                    .with_context(|| format!("chown {} to postgres", path.display()))?;
            }
        }
        make_data_dir(&bindir, dir.path(), &data_dir, run_as).await?;
        let log_path = log_file(dir.path(), "postgres")?;

        let mut attempt = 1;
        loop {
            let port = free_port();
            let mut spec = CommandSpec::new(bindir.join("postgres"));
            spec.arg("-D")
                .arg(&data_dir)
                .arg("-p")
                .arg(port.to_string())
                .arg("-k")
                .arg(&socket_dir);
            for setting in [
                "listen_addresses=127.0.0.1",
                "max_connections=200",
                // Durability against OS crashes only costs time here; commits
                // still reach the kernel, so they survive the server being
                // killed (which is why synchronous_commit stays on).
                "fsync=off",
                "full_page_writes=off",
            ] {
                spec.arg("-c").arg(setting);
            }
            spec.cwd = Some(dir.path().to_path_buf());
            spec.run_as = run_as;
            let mut proc = Proc::new(
                format!("postgres :{port}"),
                spec,
                log_path.clone(),
                PANIC_TAIL_LINES,
            );
            // Immediate shutdown: as quick as SIGKILL, but postgres removes its
            // SysV shared memory segment, which would otherwise outlive the
            // test and, a few thousand tests later, exhaust the system's limit.
            proc.set_drop_signal(Signal::SIGQUIT);
            let mut pg = Postgres {
                proc,
                port,
                next_db: AtomicU32::new(1),
                dir,
            };
            pg.proc.start()?;
            match pg.wait_ready().await {
                Ok(()) => return Ok(pg),
                Err(e) if attempt < START_ATTEMPTS && pg.lost_a_port_race() => {
                    tracing::warn!(error = %e, attempt, "postgres lost a port race, retrying with a new port");
                }
                Err(e) => return Err(e),
            }
            attempt += 1;
            pg.proc.kill()?;
            dir = pg.into_dir();
        }
    }

    /// Gives the directory back for another attempt. Only called once the
    /// process is dead, so dropping `proc` here does nothing more.
    fn into_dir(self) -> TempDir {
        let Postgres { proc, dir, .. } = self;
        drop(proc);
        dir
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The postmaster's pid, while it runs (its backends are its children).
    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    /// `postgres://postgres@127.0.0.1:PORT/db`
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A connection to `db`, its connection task spawned on the current runtime.
    pub async fn connect(&self, db: &str) -> Result<tokio_postgres::Client> {
        connect(&self.url(db)).await
    }

    /// Creates a fresh, uniquely named database and returns its URL.
    pub async fn create_database(&self) -> Result<String> {
        let n = self.next_db.fetch_add(1, Ordering::Relaxed);
        let name = format!("test_{n}_{:08x}", rand::random::<u32>());
        let client = self.connect("postgres").await?;
        client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .with_context(|| format!("creating database {name}"))?;
        Ok(self.url(&name))
    }

    /// Fast shutdown (SIGINT) and wait for the exit; nothing to do if it is
    /// not running.
    pub async fn stop(&mut self) -> Result<()> {
        self.proc.stop(Signal::SIGINT, STOP_DEADLINE).await
    }

    /// Starts the server again on the same data directory and port, and waits
    /// until it accepts queries.
    pub async fn start_again(&mut self) -> Result<()> {
        self.proc.start()?;
        self.wait_ready().await
    }

    /// SIGKILLs the postmaster and its backends (a crash); nothing to do if it
    /// is not running.
    pub fn kill(&mut self) -> Result<()> {
        let was_running = self.proc.is_running();
        self.proc.kill()?;
        if was_running {
            remove_shared_memory(&self.data_dir());
        }
        Ok(())
    }

    /// The server's log so far (all its runs).
    pub fn log(&self) -> String {
        self.proc.log()
    }

    fn lost_a_port_race(&mut self) -> bool {
        !self.proc.is_running() && self.log().to_lowercase().contains("address already in use")
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let url = self.url("postgres");
        let what = format!("{} to accept queries", self.proc.name());
        let proc = &mut self.proc;
        let result = try_wait_for(&what, READY_DEADLINE, || {
            let exited = (!proc.is_running()).then(|| proc.describe_exit());
            let url = url.clone();
            async move {
                if let Some(exit) = exited {
                    bail!("{exit} while starting");
                }
                let Ok(client) = connect(&url).await else {
                    return Ok(None);
                };
                Ok(client.simple_query("SELECT 1").await.ok().map(|_| ()))
            }
        })
        .await;
        result.map_err(|e| self.proc.with_log_tail(e))
    }
}

async fn connect(url: &str) -> Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "postgres connection ended");
        }
    });
    Ok(client)
}

/// Removes the SysV shared memory segment a killed postmaster leaves behind
/// (nothing is attached any more). Postgres would reuse or remove it on its next
/// start, but a killed test server may never start again.
fn remove_shared_memory(data_dir: &Path) {
    // postmaster.pid's seventh line is "<key> <shmid>".
    let pid_file = std::fs::read_to_string(data_dir.join("postmaster.pid")).unwrap_or_default();
    let Some(shmid) = pid_file
        .lines()
        .nth(6)
        .and_then(|line| line.split_whitespace().nth(1))
        .filter(|id| id.parse::<u64>().is_ok())
    else {
        return;
    };
    match Command::new("ipcrm").args(["-m", shmid]).output() {
        Ok(output) if output.status.success() => {
            tracing::debug!(shmid, "removed a killed postgres's shared memory")
        }
        Ok(output) => tracing::warn!(
            shmid,
            stderr = %String::from_utf8_lossy(&output.stderr),
            "could not remove a killed postgres's shared memory"
        ),
        Err(e) => tracing::warn!(shmid, error = %e, "could not run ipcrm"),
    }
}

fn postgres_user() -> Result<(Uid, Gid)> {
    match User::from_name("postgres").context("looking up the postgres user")? {
        Some(user) => Ok((user.uid, user.gid)),
        None => bail!(
            "as root, postgres must run as the `postgres` user, which does not exist: run scripts/deps.sh"
        ),
    }
}

/// `pg_config --bindir`, else Debian's Postgres 15 location.
fn postgres_bindir() -> Result<PathBuf> {
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()));
    let candidates: Vec<PathBuf> = from_pg_config
        .into_iter()
        .chain([PathBuf::from(FALLBACK_BINDIR)])
        .collect();
    candidates
        .iter()
        .find(|dir| dir.join("initdb").is_file() && dir.join("postgres").is_file())
        .cloned()
        .ok_or_else(|| {
            let looked: Vec<String> = candidates.iter().map(|d| d.display().to_string()).collect();
            anyhow!(
                "postgres server binaries (initdb, postgres) not found in {}: run scripts/deps.sh",
                looked.join(", ")
            )
        })
}
