//! Real nats-servers: a 3-node JetStream cluster losing a server, a single
//! server restarting, pausing, cleaning up, and a missing binary explained.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use async_nats::jetstream::{self, kv, stream::StorageType};
use shoal_testkit::{NatsCluster, NatsOptions, NatsServer, wait_for};

const DEADLINE: Duration = Duration::from_secs(20);

fn kv_config(bucket: &str, replicas: usize) -> kv::Config {
    kv::Config {
        bucket: bucket.to_string(),
        num_replicas: replicas,
        history: 1,
        storage: StorageType::File,
        ..Default::default()
    }
}

#[tokio::test]
async fn nats_cluster_kv_survives_server_loss() -> Result<()> {
    let started = Instant::now();
    let mut cluster = NatsCluster::start(3).await?;
    eprintln!("3-server cluster ready in {:?}", started.elapsed());
    assert_eq!(cluster.servers.len(), 3);
    assert_eq!(cluster.urls().split(',').count(), 3);

    let client = cluster.client().await?;
    let js = jetstream::new(client.clone());
    let kv = js
        .create_key_value(kv_config("survivor", 3))
        .await
        .context("creating an R3 bucket")?;
    kv.put("before", "1".into()).await?;

    // Losing the stream leader is the hard case: a new one must be elected
    // before writes succeed again.
    let info = js.get_stream("KV_survivor").await?.info().await?.clone();
    let replicas = info.cluster.as_ref().context("stream has cluster info")?;
    assert_eq!(
        replicas.replicas.len(),
        2,
        "an R3 stream has two followers: {replicas:?}"
    );
    let leader = replicas.leader.clone().context("stream has a leader")?;
    let victim = cluster
        .servers
        .iter()
        .position(|s| s.server_name() == leader)
        .with_context(|| format!("leader {leader} is one of ours"))?;
    cluster.server(victim).kill()?;
    assert_eq!(cluster.server(victim).pid(), None);

    let kv = &kv;
    wait_for(
        "a put and get of a new key after losing the leader",
        DEADLINE,
        || async move {
            kv.put("after", "2".into()).await.ok()?;
            let value = kv.get("after").await.ok()??;
            (value.as_ref() == b"2").then_some(())
        },
    )
    .await?;
    assert_eq!(kv.get("before").await?.as_deref(), Some(&b"1"[..]));

    let info = js.get_stream("KV_survivor").await?.info().await?.clone();
    let new_leader = info
        .cluster
        .and_then(|c| c.leader)
        .context("a new leader")?;
    assert_ne!(new_leader, leader);
    Ok(())
}

#[tokio::test]
async fn single_server_restart_keeps_jetstream_data() -> Result<()> {
    let started = Instant::now();
    let mut server = NatsServer::start().await?;
    eprintln!("single server ready in {:?}", started.elapsed());
    let (port, monitor, first_pid) = (server.port(), server.monitor_port(), server.pid());
    assert!(first_pid.is_some());

    let client = server.client().await?;
    let kv = jetstream::new(client.clone())
        .create_key_value(kv_config("keep", 1))
        .await?;
    kv.put("k", "v1".into()).await?;

    let started = Instant::now();
    server.restart().await?;
    eprintln!("restart took {:?}", started.elapsed());
    assert_eq!((server.port(), server.monitor_port()), (port, monitor));
    assert_ne!(server.pid(), first_pid);
    assert!(
        server.store_dir().join("jetstream").is_dir(),
        "file store lives in store_dir"
    );

    // The old client reconnects on its own to the same address.
    let kv = &kv;
    let value = wait_for(
        "the value back after the restart",
        DEADLINE,
        || async move { kv.get("k").await.ok()? },
    )
    .await?;
    assert_eq!(value.as_ref(), b"v1");
    assert!(
        server.log().contains("--- shoal-testkit: starting"),
        "the log spans both runs"
    );

    // A stop and a later start_again keep the data too.
    server.stop().await?;
    assert_eq!(server.pid(), None);
    assert!(
        server.client().await.is_err(),
        "nothing listens while stopped"
    );
    server.start_again().await?;
    let fresh = jetstream::new(server.client().await?)
        .get_key_value("keep")
        .await?;
    assert_eq!(fresh.get("k").await?.as_deref(), Some(&b"v1"[..]));
    Ok(())
}

#[tokio::test]
async fn pause_and_resume_server() -> Result<()> {
    let server = NatsServer::start().await?;
    let client = server.client().await?;
    // Answered by the server itself, so only the server's state matters.
    let ask = |timeout: Duration| {
        let client = client.clone();
        async move {
            match tokio::time::timeout(timeout, client.request("$JS.API.INFO", "".into())).await {
                Ok(Ok(reply)) => Ok(reply),
                Ok(Err(e)) => Err(format!("request failed: {e}")),
                Err(_) => Err(format!("no answer within {timeout:?}")),
            }
        }
    };
    if let Err(e) = ask(DEADLINE).await {
        panic!("a running server answers: {e}");
    }

    server.pause()?;
    assert!(
        ask(Duration::from_millis(300)).await.is_err(),
        "a paused server answers nothing"
    );

    server.resume()?;
    wait_for("an answer after resume", DEADLINE, || async {
        ask(Duration::from_millis(500)).await.ok()
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn dropping_a_paused_server_kills_it_and_deletes_its_files() -> Result<()> {
    let server = NatsServer::start().await?;
    let pid = server.pid().context("running")?;
    let store = server.store_dir().to_path_buf();
    let config = server.config_path();
    assert!(std::fs::read_to_string(&config)?.contains("max_file_store: 2GB"));
    server.pause()?;
    drop(server);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "process {pid} is gone"
    );
    assert!(
        !store.exists() && !config.exists(),
        "temporary directory deleted"
    );
    Ok(())
}

#[tokio::test]
async fn start_with_appends_extra_config() -> Result<()> {
    let opts = NatsOptions {
        server_name: Some("custom".into()),
        extra_config: "authorization { user: alice, password: secret }".into(),
        ..Default::default()
    };
    let server = NatsServer::start_with(opts).await?;
    assert_eq!(server.server_name(), "custom");
    assert!(
        server.client().await.is_err(),
        "anonymous connections are refused"
    );
    let authed =
        async_nats::ConnectOptions::with_user_and_password("alice".into(), "secret".into())
            .connect(server.url())
            .await?;
    authed.flush().await?;
    Ok(())
}

#[tokio::test]
async fn netns_options_listen_everywhere_and_drop_silent_clients_fast() -> Result<()> {
    let server = NatsServer::start_with(NatsOptions::for_netns()).await?;
    assert_eq!(server.listen_host().to_string(), "0.0.0.0");
    assert_eq!(server.url(), format!("nats://127.0.0.1:{}", server.port()));
    server.client().await?.flush().await?;
    let varz = shoal_testkit::http::get(server.monitor_port(), "/varz").await?;
    let varz: serde_json::Value = serde_json::from_str(&varz.body)?;
    assert_eq!(varz["host"], "0.0.0.0");
    // Go durations, in nanoseconds.
    assert_eq!(varz["ping_interval"], 1_000_000_000u64, "{varz}");
    assert_eq!(varz["ping_max"], 2, "{varz}");
    assert_eq!(varz["write_deadline"], 2_000_000_000u64, "{varz}");
    Ok(())
}

/// `SHOAL_NATS_SERVER` can't be set inside this process (that needs unsafe), so
/// the test runs itself again with it set, and the child does the check.
#[tokio::test]
async fn missing_nats_binary_is_explained() -> Result<()> {
    if std::env::var_os("SHOAL_TESTKIT_CHILD").is_some_and(|v| v == "missing-nats") {
        let err = match NatsServer::start().await {
            Ok(_) => panic!("started a nats-server that does not exist"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains("nats-server not found: run scripts/deps.sh (or set SHOAL_NATS_SERVER)"),
            "{err}"
        );
        assert!(err.contains("/nonexistent/nats-server"), "{err}");
        assert!(NatsCluster::start(3).await.is_err());
        return Ok(());
    }
    let output = Command::new(std::env::current_exe()?)
        .args([
            "missing_nats_binary_is_explained",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SHOAL_TESTKIT_CHILD", "missing-nats")
        .env("SHOAL_NATS_SERVER", "/nonexistent/nats-server")
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "child run failed:\n{text}");
    assert!(
        text.contains("1 passed"),
        "the child ran the check:\n{text}"
    );
    Ok(())
}
