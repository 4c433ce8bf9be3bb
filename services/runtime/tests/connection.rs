//! A service's connection notices by itself when its nats-server goes silent (the
//! process stopped, as a host cut off looks to its clients: the socket stays open,
//! nothing answers) and moves to another member of the cluster within about two
//! seconds, from the client's own PINGs, instead of waiting for TCP to give up (and
//! without waiting long on the silent server should it try that one again first).

use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;
use shoal_runtime::NatsArgs;
use shoal_testkit::{NatsCluster, wait_for};

#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    nats: NatsArgs,
}

#[tokio::test]
async fn a_service_leaves_a_silent_server_for_another_cluster_member() {
    let cluster = NatsCluster::start(3).await.unwrap();
    let flags = Flags::parse_from(["test", "--nats-url", &cluster.urls()]);
    assert_eq!(flags.nats.nats_ping_interval, Duration::from_millis(500));
    assert_eq!(flags.nats.nats_connect_timeout, Duration::from_secs(1));
    let service = shoal_runtime::connect(&flags.nats, "shoal-test:liveness")
        .await
        .unwrap();
    // It answers on a subject; another client, on the whole cluster, asks.
    let mut requests = service.subscribe("liveness.echo").await.unwrap();
    let answering = service.clone();
    tokio::spawn(async move {
        while let Some(m) = requests.next().await {
            if let Some(reply) = m.reply {
                let _ = answering.publish(reply, m.payload).await;
            }
        }
    });
    service.flush().await.unwrap();
    let first = service.server_info().server_name;
    let silent = cluster
        .servers
        .iter()
        .position(|s| s.server_name() == first)
        .unwrap();
    let asker = async_nats::ConnectOptions::new()
        .connect(
            cluster
                .servers
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != silent)
                .map(|(_, s)| s.url().parse::<async_nats::ServerAddr>().unwrap())
                .collect::<Vec<_>>(),
        )
        .await
        .unwrap();
    let answers = |what: &'static str| {
        wait_for(what, Duration::from_secs(10), || async {
            asker.request("liveness.echo", "hi".into()).await.ok()
        })
    };
    answers("the service to answer through the cluster")
        .await
        .unwrap();

    cluster.servers[silent].pause().unwrap();
    let paused_at = Instant::now();
    let moved = wait_for(
        "the service to reconnect elsewhere",
        Duration::from_secs(10),
        || async {
            let now = service.server_info().server_name;
            (now != first && service.connection_state() == async_nats::connection::State::Connected)
                .then_some(now)
        },
    )
    .await;
    let noticed_after = paused_at.elapsed();
    cluster.servers[silent].resume().unwrap();
    let moved = moved.unwrap();
    println!("MEASURED the service left silent {first} for {moved} after {noticed_after:?}");
    assert!(
        noticed_after < Duration::from_secs(5),
        "a silent server was noticed after {noticed_after:?}, not from the client's PINGs"
    );
    answers("the service to answer again").await.unwrap();
}
