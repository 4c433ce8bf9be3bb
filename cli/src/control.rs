//! `shoal status`, `shoal down`, `shoal logs`: the local control plane `shoal up`
//! started, found again through its state file.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::local::{Kind, Paths, State, alive, tail};
use crate::output::Table;

fn not_found(paths: &Paths) -> anyhow::Error {
    anyhow::anyhow!(
        "no local control plane found in {} (the first .shoal directory in the current directory or above it; SHOAL_DIR or --dir names another) — start one with `shoal up`",
        paths.root.display()
    )
}

fn require_state(paths: &Paths) -> anyhow::Result<State> {
    paths.load()?.ok_or_else(|| not_found(paths))
}

/// The running control plane's state, or else the last run's (stopped).
fn current_or_last(paths: &Paths) -> anyhow::Result<(State, bool)> {
    if let Some(state) = paths.load()? {
        return Ok((state, true));
    }
    paths
        .load_last()?
        .map(|state| (state, false))
        .ok_or_else(|| not_found(paths))
}

/// A table like Tasker's cluster-status: instance, status, pid, health.
pub async fn status(
    paths: &Paths,
    nats: &shoal_runtime::NatsArgs,
    as_json: bool,
) -> anyhow::Result<()> {
    let (state, current) = current_or_last(paths)?;
    let health = if current {
        service_health(&state, nats).await
    } else {
        HashMap::new()
    };
    let mut rows = Vec::new();
    for i in &state.instances {
        let running = alive(i.pid);
        let healthy = match i.kind.service_name() {
            Some(_) => health.get(&i.name).copied().unwrap_or(false),
            None => running,
        };
        rows.push(serde_json::json!({
            "instance": i.name,
            "status": if running { "running" } else { "stopped" },
            "pid": i.pid,
            "health": if healthy { "healthy" } else { "unhealthy" },
            "address": i.address,
            "log": i.log,
        }));
    }
    if as_json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "nats_url": state.nats_url,
                "running": current,
                "instances": rows
            }))?
        );
    } else {
        print_status(&rows);
    }
    if !current {
        anyhow::bail!(
            "the control plane in {} is not running (above: its last run; `shoal logs` shows its logs) — start it with `shoal up`",
            paths.root.display()
        );
    }
    Ok(())
}

fn print_status(rows: &[serde_json::Value]) {
    let mut t = Table::new(vec!["INSTANCE", "STATUS", "PID", "HEALTH", "ADDRESS"]);
    for r in rows {
        let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
        t.row(vec![
            s("instance"),
            s("status"),
            r["pid"].to_string(),
            s("health"),
            s("address"),
        ]);
    }
    outln!("{}", t.render());
}

/// Services answering `$SRV.PING`, by the instance id in their metadata. Connects
/// to the control plane's NATS with the CLI's credentials (an authorised server
/// refuses anonymous clients).
async fn service_health(state: &State, nats: &shoal_runtime::NatsArgs) -> HashMap<String, bool> {
    let mut healthy = HashMap::new();
    let mut args = nats.clone();
    args.nats_url = state.nats_url.clone();
    let Ok((opts, urls)) = shoal_runtime::connect_options(&args, "shoal-cli").await else {
        return healthy;
    };
    let Ok(client) = opts
        .connection_timeout(Duration::from_secs(2))
        .connect(urls)
        .await
    else {
        return healthy;
    };
    let Ok(subjects) = nats.subjects() else {
        return healthy;
    };
    let Ok(found) = shoal_protocol::ShoalClient::new(client, subjects)
        .discover(None, Duration::from_millis(500))
        .await
    else {
        return healthy;
    };
    for instance in found {
        healthy.insert(instance.instance_id, true);
    }
    healthy
}

/// Stops the control plane `shoal up` runs: asks `shoal up` to stop everything in
/// order; if it is gone, stops what is left directly.
pub async fn down(paths: &Paths) -> anyhow::Result<()> {
    let state = require_state(paths)?;
    let signal = |pid: u32, sig| {
        if let Ok(pid) = i32::try_from(pid) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
        }
    };
    if alive(state.up_pid) {
        signal(state.up_pid, nix::sys::signal::Signal::SIGTERM);
        let started = Instant::now();
        while alive(state.up_pid) {
            if started.elapsed() > Duration::from_secs(60) {
                anyhow::bail!("shoal up (pid {}) did not stop within 60 s", state.up_pid);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    } else {
        // `shoal up` is gone: stop what it left, one kind at a time, in its order.
        for rank in 0..=Kind::NatsServer.stop_rank() {
            let group: Vec<_> = state
                .instances
                .iter()
                .filter(|i| i.kind.stop_rank() == rank && alive(i.pid))
                .collect();
            for i in &group {
                let sig = if i.kind == Kind::Postgres {
                    nix::sys::signal::Signal::SIGINT
                } else {
                    nix::sys::signal::Signal::SIGTERM
                };
                signal(i.pid, sig);
            }
            let started = Instant::now();
            while group.iter().any(|i| alive(i.pid)) && started.elapsed() < Duration::from_secs(10)
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        paths.clear();
    }
    outln!("stopped");
    Ok(())
}

/// `shoal stop|start|restart <instance>`, carried out by the running `shoal up`
/// (it owns the processes).
pub async fn instance(
    paths: &Paths,
    action: crate::up::Action,
    name: &str,
    as_json: bool,
) -> anyhow::Result<()> {
    require_state(paths)?;
    let outcome = crate::up::ask(&paths.control_socket(), action, name).await?;
    if as_json {
        outln!("{}", serde_json::to_string_pretty(&outcome)?);
    } else {
        outln!("{}", outcome.message);
    }
    Ok(())
}

/// Prints the logs of one instance (by name, or every instance of a service kind:
/// `coordinator` shows coordinator-1 and coordinator-2), or of all.
pub fn logs(paths: &Paths, which: Option<&str>, lines: usize) -> anyhow::Result<()> {
    let (state, current) = current_or_last(paths)?;
    if !current {
        outln!(
            "(the last run, stopped; the run before it: {})\n",
            paths.previous_logs().display()
        );
    }
    let chosen: Vec<_> = state
        .instances
        .iter()
        .filter(|i| match which {
            None => true,
            Some(w) => {
                i.name == w
                    || i.name.starts_with(&format!("{w}-"))
                    || (w == "announcer" && i.kind == Kind::Announcer)
            }
        })
        .collect();
    if chosen.is_empty() {
        let names: Vec<_> = state.instances.iter().map(|i| i.name.as_str()).collect();
        anyhow::bail!(
            "no instance called {:?} — one of: {}",
            which.unwrap_or_default(),
            names.join(", ")
        );
    }
    for i in chosen {
        outln!(
            "==> {} ({}) <==\n{}\n",
            i.name,
            i.log.display(),
            tail(&i.log, lines)
        );
    }
    Ok(())
}
