//! Checks every Shoal service binary passes: it is a NATS micro service answering
//! `$SRV.PING` / `$SRV.INFO` with its name and version, and it exits 0 soon after
//! SIGTERM.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use serde_json::Value;

use crate::{NatsServer, ServiceProcess, binary, request_json, wait_for};

/// What a lifecycle check saw, for further assertions.
pub struct Lifecycle {
    pub ping: Value,
    pub info: Value,
    /// Time from SIGTERM to exit.
    pub stop_time: Duration,
}

/// Starts `binary_name` against a fresh nats-server with `args` (the NATS URL is
/// added), waits for `$SRV.PING.<service_name>`, reads `$SRV.INFO`, sends SIGTERM and
/// requires exit status 0 within 5 s.
pub async fn check_lifecycle(
    binary_name: &str,
    service_name: &str,
    args: &[String],
) -> Result<Lifecycle> {
    let nats = NatsServer::start().await?;
    let client = nats.client().await?;
    let mut all_args = vec!["--nats-url".to_string(), nats.url()];
    all_args.extend_from_slice(args);
    let mut process = ServiceProcess::spawn(binary_name, &binary(binary_name)?, &all_args, &[])?;
    let ping_subject = format!("$SRV.PING.{service_name}");
    let ping = wait_for(
        &format!("{service_name} to answer {ping_subject}"),
        Duration::from_secs(15),
        || {
            let client = client.clone();
            let subject = ping_subject.clone();
            async move {
                request_json(&client, &subject, &Value::Null, Duration::from_millis(500))
                    .await
                    .ok()
            }
        },
    )
    .await?;
    let info = request_json(
        &client,
        &format!("$SRV.INFO.{service_name}"),
        &Value::Null,
        Duration::from_secs(2),
    )
    .await?;
    ensure!(
        ping["name"] == service_name,
        "ping names {:?}, expected {service_name}",
        ping["name"]
    );
    ensure!(
        info["name"] == service_name,
        "info names {:?}",
        info["name"]
    );
    ensure!(
        info["version"].as_str().is_some_and(|v| !v.is_empty()),
        "info carries no version: {info}"
    );
    let asked = Instant::now();
    process.terminate()?;
    let status = process.wait_exit(Duration::from_secs(5)).await?;
    let stop_time = asked.elapsed();
    ensure!(
        status.success(),
        "{binary_name} exited with {status} after SIGTERM"
    );
    Ok(Lifecycle {
        ping,
        info,
        stop_time,
    })
}
