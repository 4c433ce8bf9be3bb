//! While `shoal up` runs: watching its children (an exit is reported with the end
//! of the log), carrying out `shoal stop|start|restart <instance>`, and stopping
//! everything in order at the end.

use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::mpsc;

use super::requests::{Action, Outcome, Request};
use super::{Running, Signals, launch};
use crate::local::{Kind, Paths, State, tail};

/// How long a process has to stop after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Until Ctrl-C or SIGTERM: reports children that exit on their own and carries
/// out requests, saving the state file after each change.
pub(super) async fn supervise(
    running: &mut [Running],
    signals: &mut Signals,
    requests: &mut mpsc::Receiver<Request>,
    paths: &Paths,
    state: &mut State,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = signals.recv() => return,
            Some(request) = requests.recv() => {
                let outcome = carry_out(running, request.action, &request.instance).await;
                state.instances = running.iter().map(|r| r.instance.clone()).collect();
                if let Err(e) = paths.save(state) {
                    eprintln!("could not save the state file: {e:#}");
                }
                let _ = request.reply.send(outcome);
            }
            _ = tick.tick() => {
                for r in running.iter_mut().filter(|r| !r.stopped && !r.reported) {
                    if let Ok(Some(status)) = r.child.try_wait() {
                        r.reported = true;
                        eprintln!(
                            "{} exited ({status}); its log ends:\n{}\n(`shoal start {}` starts it again)",
                            r.instance.name,
                            tail(&r.instance.log, 10),
                            r.instance.name
                        );
                    }
                }
            }
        }
    }
}

async fn carry_out(running: &mut [Running], action: Action, name: &str) -> Result<Outcome, String> {
    let Some(r) = running.iter_mut().find(|r| r.instance.name == name) else {
        let names: Vec<&str> = running.iter().map(|r| r.instance.name.as_str()).collect();
        return Err(format!(
            "no instance called {name:?} — one of: {}",
            names.join(", ")
        ));
    };
    if r.recipe.is_none() {
        return Err(format!(
            "{name} holds the control plane's data: it stops and starts with everything (`shoal down`, `shoal up`)"
        ));
    }
    let exited = !r.stopped && matches!(r.child.try_wait(), Ok(Some(_)));
    let message = match action {
        Action::Stop if r.stopped || exited => {
            r.stopped = true;
            format!("{name} is already stopped")
        }
        Action::Stop => {
            stop(r).await;
            format!("{name} stopped")
        }
        Action::Start if !r.stopped && !exited => {
            return Err(format!(
                "{name} is already running (pid {}): `shoal restart {name}` restarts it",
                r.instance.pid
            ));
        }
        Action::Start => {
            start(r)?;
            format!("{name} started (pid {})", r.instance.pid)
        }
        Action::Restart => {
            if !r.stopped && !exited {
                stop(r).await;
            }
            start(r)?;
            format!("{name} restarted (pid {})", r.instance.pid)
        }
    };
    Ok(Outcome {
        instance: name.to_string(),
        status: if r.stopped { "stopped" } else { "running" }.to_string(),
        pid: r.instance.pid,
        message,
    })
}

/// SIGTERM, then SIGKILL after [`STOP_GRACE`].
async fn stop(r: &mut Running) {
    signal(r, Signal::SIGTERM);
    wait_or_kill(r).await;
    r.stopped = true;
}

/// Waits [`STOP_GRACE`] for a signalled process to exit, then kills it.
async fn wait_or_kill(r: &mut Running) {
    if tokio::time::timeout(STOP_GRACE, r.child.wait())
        .await
        .is_err()
    {
        eprintln!("{} did not stop within 10 s; killing it", r.instance.name);
        let _ = r.child.kill().await;
    }
}

/// Starts the process again from its recipe; its log goes on where it ended.
fn start(r: &mut Running) -> Result<(), String> {
    let recipe = r.recipe.as_ref().ok_or("no recipe")?;
    let child = launch(recipe.command(), &r.instance.name, &r.instance.log, true)
        .map_err(|e| format!("{e:#}"))?;
    r.instance.pid = child.id().unwrap_or_default();
    r.child = child;
    r.stopped = false;
    r.reported = false;
    Ok(())
}

fn signal(r: &Running, signal: Signal) {
    if let Ok(pid) = i32::try_from(r.instance.pid) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
    }
}

/// Stops in [`Kind::stop_rank`] order (coordinators, nodes, services, Postgres,
/// nats-server), one kind at a time: each process of the kind gets SIGTERM (SIGINT
/// for Postgres: fast shutdown), then 10 s before SIGKILL.
pub(super) async fn stop_all(running: &mut Vec<Running>) {
    running.sort_by_key(|r| r.instance.kind.stop_rank());
    for rank in 0..=Kind::NatsServer.stop_rank() {
        let split = running
            .iter()
            .position(|r| r.instance.kind.stop_rank() > rank)
            .unwrap_or(running.len());
        let mut group: Vec<Running> = running.drain(..split).collect();
        // One stopped on request is not signalled: its pid may be another's now.
        group.retain(|r| !r.stopped);
        for r in &group {
            let fast = if r.instance.kind == Kind::Postgres {
                Signal::SIGINT
            } else {
                Signal::SIGTERM
            };
            signal(r, fast);
        }
        for r in &mut group {
            wait_or_kill(r).await;
        }
    }
}
