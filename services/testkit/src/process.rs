//! Child processes: the plumbing shared by every server the testkit starts
//! ([`crate::service`] runs Shoal's own binaries on it).

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::{Gid, Pid, Uid};

use crate::wait::try_wait_for;

const DROP_EXIT_DEADLINE: Duration = Duration::from_secs(5);
const PAUSE_DEADLINE: Duration = Duration::from_secs(5);
const KILL_CHILDREN_DEADLINE: Duration = Duration::from_secs(5);
const EXEC_DEADLINE: Duration = Duration::from_secs(5);
/// Log lines shown with an error from a process.
pub(crate) const ERROR_TAIL_LINES: usize = 30;

/// How a child is (re)started; kept so the same command can run again after a
/// kill or stop.
#[derive(Clone, Debug)]
pub(crate) struct CommandSpec {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub envs: Vec<(OsString, OsString)>,
    pub cwd: Option<PathBuf>,
    pub run_as: Option<(Uid, Gid)>,
    /// Set when `program` is a launcher that execs the real program in its
    /// place (`ip netns exec`): starting returns once it has, so the pid is
    /// the real program's when signals are sent.
    pub execs_into: Option<PathBuf>,
}

impl CommandSpec {
    pub fn new(program: impl Into<PathBuf>) -> CommandSpec {
        CommandSpec {
            program: program.into(),
            args: Vec::new(),
            envs: Vec::new(),
            cwd: None,
            run_as: None,
            execs_into: None,
        }
    }

    pub fn arg(&mut self, arg: impl Into<OsString>) -> &mut CommandSpec {
        self.args.push(arg.into());
        self
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args);
        cmd.envs(self.envs.iter().map(|(k, v)| (k, v)));
        if let Some(cwd) = &self.cwd {
            cmd.current_dir(cwd);
        }
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid.as_raw()).gid(gid.as_raw());
        }
        cmd
    }
}

/// One child process whose stdout and stderr go to a log file. On drop it is
/// SIGKILLed (with its direct children, after its `drop_signal` if it has one)
/// and reaped, and if the thread is panicking the tail of its log is printed,
/// so a failing test shows what its servers said.
pub(crate) struct Proc {
    name: String,
    spec: CommandSpec,
    log_path: PathBuf,
    /// `Some` until the child is reaped: while we have not reaped it its pid
    /// cannot be reused, so signalling that pid is always safe.
    child: Option<Child>,
    last_pid: Option<u32>,
    last_status: Option<ExitStatus>,
    starts: u32,
    panic_tail_lines: usize,
    /// Sent on drop before resorting to SIGKILL, for servers that leave
    /// system-wide state behind when killed outright.
    drop_signal: Option<Signal>,
}

impl Proc {
    pub fn new(
        name: impl Into<String>,
        spec: CommandSpec,
        log_path: PathBuf,
        panic_tail_lines: usize,
    ) -> Proc {
        Proc {
            name: name.into(),
            spec,
            log_path,
            child: None,
            last_pid: None,
            last_status: None,
            starts: 0,
            panic_tail_lines,
            drop_signal: None,
        }
    }

    /// On drop, send `signal` and give the process a few seconds to exit
    /// before it is SIGKILLed.
    pub fn set_drop_signal(&mut self, signal: Signal) {
        self.drop_signal = Some(signal);
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    pub fn start(&mut self) -> Result<()> {
        if self.is_running() {
            bail!(
                "{} is already running (pid {})",
                self.name,
                self.last_pid.unwrap_or_default()
            );
        }
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| {
                format!("opening log {} for {}", self.log_path.display(), self.name)
            })?;
        if self.starts > 0 {
            // Marks where the new run begins in the shared log.
            writeln!(log, "--- shoal-testkit: starting {} again ---", self.name)?;
        }
        let stderr = log.try_clone()?;
        let child = self
            .spec
            .command()
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {} ({})", self.name, self.spec.program.display()))?;
        tracing::debug!(name = %self.name, pid = child.id(), "started process");
        self.last_pid = Some(child.id());
        self.last_status = None;
        self.child = Some(child);
        self.starts += 1;
        self.wait_for_exec()
    }

    /// With [`CommandSpec::execs_into`], waits until the launcher has exec'd
    /// (or exited: its log says why).
    fn wait_for_exec(&self) -> Result<()> {
        let (Some(target), Some(pid)) = (&self.spec.execs_into, self.pid()) else {
            return Ok(());
        };
        let launcher = self.spec.program.canonicalize()?;
        let until = std::time::Instant::now() + EXEC_DEADLINE;
        loop {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe"));
            if has_ended(pid) || exe.is_ok_and(|exe| exe != launcher) {
                return Ok(());
            }
            if std::time::Instant::now() >= until {
                bail!(
                    "{} did not exec {} within {EXEC_DEADLINE:?}",
                    self.spec.program.display(),
                    target.display()
                );
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The pid while the child has not been reaped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The pid of the most recent start, even if it has exited since.
    pub fn last_pid(&self) -> Option<u32> {
        self.last_pid
    }

    /// Reaps the child if it has exited.
    pub fn is_running(&mut self) -> bool {
        self.poll_exit().is_none() && self.child.is_some()
    }

    /// The exit status once the child has exited (reaping it), `None` while it runs.
    pub fn poll_exit(&mut self) -> Option<ExitStatus> {
        if let Some(child) = &mut self.child {
            match child.try_wait() {
                Ok(Some(status)) => self.reaped(status),
                Ok(None) => return None,
                Err(e) => tracing::warn!(name = %self.name, error = %e, "could not poll process"),
            }
        }
        self.last_status
    }

    fn reaped(&mut self, status: ExitStatus) {
        tracing::debug!(name = %self.name, %status, "process exited");
        self.child = None;
        self.last_status = Some(status);
    }

    /// Whether the child has exited, without reaping it (so usable from `&self`):
    /// an exited but unreaped child is a zombie.
    pub fn has_exited(&self) -> bool {
        match self.pid() {
            None => true,
            Some(pid) => has_ended(pid),
        }
    }

    pub fn describe_exit(&self) -> String {
        match self.last_status {
            Some(status) => format!("{} exited ({status})", self.name),
            None if self.starts == 0 => format!("{} was never started", self.name),
            None => format!("{} has exited", self.name),
        }
    }

    pub fn signal(&self, signal: Signal) -> Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| anyhow!("cannot send {signal} to {}: not running", self.name))?;
        send(pid, signal).with_context(|| format!("sending {signal} to {}", self.name))
    }

    /// SIGSTOP, returning once every thread has stopped: the signal is only
    /// queued when `kill` returns, and a thread already on a CPU can go on
    /// serving requests for a moment.
    pub fn pause(&self) -> Result<()> {
        self.signal(Signal::SIGSTOP)?;
        let pid = self.pid().context("paused process has a pid")?;
        let until = std::time::Instant::now() + PAUSE_DEADLINE;
        while !all_threads_stopped(pid) {
            if std::time::Instant::now() >= until {
                bail!(
                    "{} did not stop within {PAUSE_DEADLINE:?} of SIGSTOP",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    /// SIGKILLs the child and its direct children (a postmaster's backends, a
    /// shell's commands) and reaps it; nothing to do if it is not running.
    pub fn kill(&mut self) -> Result<()> {
        let Some(pid) = self.pid() else { return Ok(()) };
        // Stopped, the parent neither forks nor reaps, so the children listed
        // below keep their pids (as zombies at worst) until we have killed them.
        let _ = send(pid, Signal::SIGSTOP);
        let children = children_of(pid);
        for &child_pid in &children {
            let _ = send(child_pid, Signal::SIGKILL);
        }
        // Dead means zombie (the stopped parent cannot reap them): by then they
        // have released their memory, which matters for shared memory that a
        // crashed server's cleanup removes next.
        let until = std::time::Instant::now() + KILL_CHILDREN_DEADLINE;
        while !children.iter().all(|&child| has_ended(child)) && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
        // SIGKILL ends a stopped process too; SIGCONT only tidies the state.
        let _ = send(pid, Signal::SIGKILL);
        let _ = send(pid, Signal::SIGCONT);
        if let Some(child) = &mut self.child {
            let status = child
                .wait()
                .with_context(|| format!("reaping {}", self.name))?;
            tracing::debug!(name = %self.name, pid, "killed process");
            self.reaped(status);
        }
        Ok(())
    }

    /// Waits for the child to exit on its own.
    pub async fn wait_exit(&mut self, deadline: Duration) -> Result<ExitStatus> {
        if self.starts == 0 {
            bail!("{} was never started", self.name);
        }
        let what = format!("{} to exit", self.name);
        try_wait_for(&what, deadline, || std::future::ready(Ok(self.poll_exit()))).await
    }

    /// Sends `signal` (plus SIGCONT, so a paused child can act on it), waits up
    /// to `deadline` for the exit, then SIGKILLs. Nothing to do if not running.
    pub async fn stop(&mut self, signal: Signal, deadline: Duration) -> Result<()> {
        if !self.is_running() {
            return Ok(());
        }
        self.signal(signal)?;
        let _ = self.signal(Signal::SIGCONT);
        match self.wait_exit(deadline).await {
            Ok(status) => {
                tracing::debug!(name = %self.name, %status, "process stopped");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(name = %self.name, error = %e, "process ignored {signal}, killing it");
                self.kill()
            }
        }
    }

    /// Blocking version of [`Self::stop`] for `drop`, which cannot await: polls
    /// for the exit, bounded, and leaves the SIGKILL to the caller.
    fn exit_on(&mut self, signal: Signal) {
        if self.signal(signal).is_err() {
            return;
        }
        let _ = self.signal(Signal::SIGCONT);
        let until = std::time::Instant::now() + DROP_EXIT_DEADLINE;
        while self.is_running() && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn log(&self) -> String {
        read_log(&self.log_path)
    }

    /// `e` with the last [`ERROR_TAIL_LINES`] lines of this process's log folded in.
    pub(crate) fn with_log_tail(&self, e: anyhow::Error) -> anyhow::Error {
        let header = format!(
            "last lines of the log of {} ({})",
            self.name(),
            self.log_path().display()
        );
        with_log(e, &header, &self.log_tail(ERROR_TAIL_LINES))
    }

    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log(), lines)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(signal) = self.drop_signal {
            self.exit_on(signal);
        }
        if let Err(e) = self.kill() {
            tracing::warn!(name = %self.name, error = %e, "could not kill process on drop");
        }
        if std::thread::panicking() && self.starts > 0 {
            eprintln!(
                "----- shoal-testkit: last {} lines of the log of {} ({}) -----\n{}\n----- end of {} log -----",
                self.panic_tail_lines,
                self.name,
                self.log_path.display(),
                self.log_tail(self.panic_tail_lines),
                self.name,
            );
        }
    }
}

fn send(pid: u32, signal: Signal) -> Result<()> {
    let raw = i32::try_from(pid).context("pid out of range")?;
    kill(Pid::from_raw(raw), signal)?;
    Ok(())
}

/// The fields of `/proc/<pid>/stat` after the command name: state, ppid, ...
pub(crate) fn stat_fields(pid: u32) -> Option<Vec<String>> {
    stat_fields_at(&format!("/proc/{pid}/stat"))
}

fn stat_fields_at(path: &str) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name in parentheses may itself contain spaces and ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// The state letter (`R`, `S`, `T`, `Z`, ...).
fn process_state(pid: u32) -> Option<char> {
    stat_fields(pid)?.first()?.chars().next()
}

fn parent_of(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

fn has_ended(pid: u32) -> bool {
    process_state(pid).is_none_or(|state| matches!(state, 'Z' | 'X'))
}

/// Whether every thread of `pid` is stopped (or the process is gone).
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return true;
    };
    tasks
        .filter_map(|task| task.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .all(|tid| {
            // A thread that exited meanwhile has no stat any more.
            stat_fields_at(&format!("/proc/{pid}/task/{tid}/stat"))
                .and_then(|fields| fields.first()?.chars().next())
                .is_none_or(|state| matches!(state, 'T' | 't' | 'Z' | 'X'))
        })
}

/// Direct children, found by scanning `/proc` because `/proc/<pid>/task/*/children`
/// depends on a kernel option.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&candidate| parent_of(candidate) == Some(pid))
        .collect()
}

pub(crate) fn read_log(path: &Path) -> String {
    std::fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

/// The last `lines` lines of `text`.
pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `name` made safe for a file name.
pub(crate) fn file_stem(name: &str) -> String {
    let stem: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if stem.is_empty() {
        "process".to_string()
    } else {
        stem
    }
}

pub(crate) fn log_file(dir: &Path, name: &str) -> Result<PathBuf> {
    let path = dir.join(format!("{}.log", file_stem(name)));
    File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    Ok(path)
}

/// Folds a log excerpt into the error's own message, so that plain `{}`
/// formatting (not only `{:?}`) shows both.
pub(crate) fn with_log(e: anyhow::Error, header: &str, log: &str) -> anyhow::Error {
    anyhow!("{e:#}\n{header}:\n{log}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
        assert_eq!(tail("", 5), "");
    }

    #[test]
    fn file_stems_are_safe() {
        assert_eq!(file_stem("nats s1/x"), "nats-s1-x");
        assert_eq!(file_stem(""), "process");
    }

    #[test]
    fn reads_its_own_state_and_parent() {
        let me = std::process::id();
        assert!(matches!(process_state(me), Some('R' | 'S')));
        let child = Command::new("/bin/sh")
            .arg("-c")
            .arg("exec sleep 30")
            .spawn()
            .unwrap();
        let mut proc_guard = ChildGuard(child);
        assert!(children_of(me).contains(&proc_guard.0.id()));
        proc_guard.0.kill().unwrap();
        proc_guard.0.wait().unwrap();
    }

    struct ChildGuard(Child);
    impl Drop for ChildGuard {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
