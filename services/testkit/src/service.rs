//! [`ServiceProcess`]: a Shoal service binary (or any command) run as a child
//! process with its output in a log file, and [`binary`], where cargo put it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use nix::sys::signal::Signal;
use tempfile::TempDir;

use crate::process::{CommandSpec, Proc, file_stem, log_file};
use crate::wait::try_wait_for;

const SERVICE_PANIC_TAIL_LINES: usize = 200;

/// A Shoal service binary (or any command) run as a child process, its stdout
/// and stderr captured in a log file in its own temporary directory.
pub struct ServiceProcess {
    proc: Proc,
    _dir: TempDir,
}

impl ServiceProcess {
    /// Starts `bin args...` with the test's environment plus `envs` (which win).
    pub fn spawn(
        name: &str,
        bin: &Path,
        args: &[String],
        envs: &[(String, String)],
    ) -> Result<ServiceProcess> {
        let mut spec = CommandSpec::new(bin);
        spec.args = args.iter().map(OsString::from).collect();
        spec.envs = envs.iter().map(|(k, v)| (k.into(), v.into())).collect();
        ServiceProcess::start_spec(name, spec)
    }

    /// Starts `spec` with its log in a new temporary directory.
    pub(crate) fn start_spec(name: &str, spec: CommandSpec) -> Result<ServiceProcess> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("shoal-{}-", file_stem(name)))
            .tempdir()
            .context("creating a temporary directory")?;
        let log_path = log_file(dir.path(), name)?;
        let mut proc = Proc::new(name, spec, log_path, SERVICE_PANIC_TAIL_LINES);
        proc.start()?;
        Ok(ServiceProcess { proc, _dir: dir })
    }

    /// The pid of the latest run (still reported after it exits).
    pub fn pid(&self) -> u32 {
        self.proc.last_pid().unwrap_or_default()
    }

    pub fn name(&self) -> &str {
        self.proc.name()
    }

    pub fn log_path(&self) -> &Path {
        self.proc.log_path()
    }

    /// SIGKILL and reap; a process that has already exited is left as it is.
    pub fn kill(&mut self) -> Result<()> {
        self.proc.kill()
    }

    pub fn terminate(&self) -> Result<()> {
        self.proc.signal(Signal::SIGTERM)
    }

    pub fn interrupt(&self) -> Result<()> {
        self.proc.signal(Signal::SIGINT)
    }

    /// SIGSTOP; returns once the process has actually stopped.
    pub fn pause(&self) -> Result<()> {
        self.proc.pause()
    }

    pub fn resume(&self) -> Result<()> {
        self.proc.signal(Signal::SIGCONT)
    }

    /// Waits for the process to exit; `Err` if it is still running at the deadline.
    pub async fn wait_exit(&mut self, deadline: Duration) -> Result<ExitStatus> {
        let result = self.proc.wait_exit(deadline).await;
        result.map_err(|e| self.proc.with_log_tail(e))
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.is_running()
    }

    /// Everything the process has written so far (all runs, see [`Self::respawn`]).
    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// Bytes in the log so far: pass to [`Self::wait_for_log_since`] to wait for
    /// output newer than now.
    pub fn log_len(&self) -> usize {
        std::fs::read(self.proc.log_path()).map_or(0, |bytes| bytes.len())
    }

    /// Waits until the log contains `needle`; fails early if the process exits
    /// without having written it.
    pub async fn wait_for_log(&self, needle: &str, deadline: Duration) -> Result<()> {
        self.wait_for_log_since(0, needle, deadline).await
    }

    /// Like [`Self::wait_for_log`], looking only at the log after byte `offset`.
    pub async fn wait_for_log_since(
        &self,
        offset: usize,
        needle: &str,
        deadline: Duration,
    ) -> Result<()> {
        let what = format!("{needle:?} in the log of {}", self.proc.name());
        // Bytes, not text: an offset need not fall on a character boundary.
        let found = || {
            let log = std::fs::read(self.proc.log_path()).unwrap_or_default();
            log.get(offset..).is_some_and(|recent| {
                needle.is_empty() || recent.windows(needle.len()).any(|w| w == needle.as_bytes())
            })
        };
        let result = try_wait_for(&what, deadline, || {
            let outcome = if found() {
                Ok(Some(()))
            } else if self.proc.has_exited() {
                // It may have written the needle just before exiting.
                if found() {
                    Ok(Some(()))
                } else {
                    Err(anyhow!(
                        "{} exited before writing {needle:?}",
                        self.proc.name()
                    ))
                }
            } else {
                Ok(None)
            };
            std::future::ready(outcome)
        })
        .await;
        result.map_err(|e| self.proc.with_log_tail(e))
    }

    /// Runs the same command again (after it was killed or exited), appending
    /// to the same log.
    pub fn respawn(&mut self) -> Result<()> {
        self.proc.start()
    }
}

/// The path of a workspace binary built by cargo: `CARGO_BIN_EXE_<name>` if set
/// at run time, else next to the running test executable
/// (`target/<profile>/deps/test-hash` → `target/<profile>/<name>`).
pub fn binary(name: &str) -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(format!("CARGO_BIN_EXE_{name}")) {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().context("finding the current executable")?;
    let dir = exe
        .parent()
        .context("current executable has no directory")?;
    let candidates = [
        dir.parent().map(|profile| profile.join(name)),
        Some(dir.join(name)),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|path| path.is_file())
        .ok_or_else(|| {
            let release = exe.components().any(|c| c.as_os_str() == "release");
            let flag = if release { " --release" } else { "" };
            anyhow!("binary {name} not built: run `cargo build{flag} --workspace --bins`")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binary_names_the_build_command() {
        let err = binary("shoal-no-such-binary").unwrap_err().to_string();
        assert_eq!(
            err,
            "binary shoal-no-such-binary not built: run `cargo build --workspace --bins`"
        );
    }
}
