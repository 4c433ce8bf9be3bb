//! A 3-server JetStream cluster whose third member runs in a network
//! namespace: it forms and replicates across the veth; cutting only its routes
//! leaves it in a minority of one whose clients notice nothing, while the
//! majority carries on; and cutting its whole link isolates it from the host's
//! clients too.
//!
//! Needs root (CI runs as root).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use async_nats::connection::State;
use async_nats::jetstream::{self, stream};
use futures::StreamExt;
use shoal_testkit::{NatsCluster, NatsOptions, NatsServer, NetNs, wait_for};

const DEADLINE: Duration = Duration::from_secs(20);
/// Routes are PINGed every second and closed after 2 unanswered PINGs; the
/// rest is room for a loaded machine.
const ROUTE_LOSS_DEADLINE: Duration = Duration::from_secs(15);
/// JetStream's Raft takes 4-9 s to elect a new stream leader; room on top.
const ELECTION_DEADLINE: Duration = Duration::from_secs(30);
/// How long a single publish or request may take before it counts as failed.
const ATTEMPT: Duration = Duration::from_secs(2);
const STREAM: &str = "ORDERS";

/// A cluster of s1, s2 on the host and s3 in `netns`, with an R3 stream.
async fn spread_cluster(netns: &NetNs) -> Result<NatsCluster> {
    let cluster =
        NatsCluster::start_spread(NatsOptions::for_netns(), &[None, None, Some(netns)]).await?;
    let js = jetstream::new(cluster.servers[0].client().await?);
    js.create_stream(stream::Config {
        name: STREAM.to_string(),
        subjects: vec!["orders.>".to_string()],
        num_replicas: 3,
        ..Default::default()
    })
    .await
    .context("creating an R3 stream through s1")?;
    Ok(cluster)
}

/// A client of `server` alone: it neither learns of the other servers from
/// the cluster nor moves to them.
/// Answers every request on `echo` with its payload, for as long as the test runs.
async fn answer_echo(answerer: async_nats::Client) -> Result<()> {
    let mut echo = answerer.subscribe("echo").await?;
    answerer.flush().await?;
    tokio::spawn(async move {
        while let Some(request) = echo.next().await {
            if let Some(reply) = request.reply {
                let _ = answerer.publish(reply, request.payload).await;
            }
        }
    });
    Ok(())
}

async fn pinned_client(server: &NatsServer) -> Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .ignore_discovered_servers()
        .request_timeout(Some(ATTEMPT))
        .connect(server.url())
        .await
        .with_context(|| format!("connecting to {} alone", server.url()))
}

/// JetStream through `client`, giving up on an ack after [`ATTEMPT`].
fn js(client: &async_nats::Client) -> jetstream::Context {
    jetstream::ContextBuilder::new()
        .timeout(ATTEMPT)
        .build(client.clone())
}

/// Publishes and waits for the stream's ack: its sequence number.
async fn publish(js: &jetstream::Context, subject: &str) -> Result<u64> {
    let ack = js.publish(subject.to_string(), "x".into()).await?.await?;
    if ack.stream != STREAM {
        bail!("acked by stream {}", ack.stream);
    }
    Ok(ack.sequence)
}

/// Publishes through a server that may have just joined: it may not know yet where
/// the stream's subjects go ("no stream found for given subject"), so the publish is
/// tried again until the stream acks it. Its message id makes a retry after a lost
/// ack store nothing twice.
async fn publish_through_new_member(js: &jetstream::Context, subject: &str) -> Result<u64> {
    let id = format!("{subject}-first");
    wait_for(
        &format!("the stream to ack {subject}"),
        DEADLINE,
        || async {
            let message = jetstream::message::PublishMessage::build()
                .payload("x".into())
                .message_id(&id);
            let ack = js
                .send_publish(subject.to_string(), message)
                .await
                .ok()?
                .await
                .ok()?;
            (ack.stream == STREAM).then_some(ack.sequence)
        },
    )
    .await
}

/// The server leading [`STREAM`] as `js` is told, if it has one.
async fn stream_leader(js: &jetstream::Context) -> Option<String> {
    let mut stream = js.get_stream(STREAM).await.ok()?;
    stream.info().await.ok()?.cluster.clone()?.leader
}

/// Hands the leadership of [`STREAM`] to server `to` (nats-server 2.11 and
/// later take a preferred server on a stepdown).
async fn move_stream_leader(js: &jetstream::Context, to: &str) -> Result<()> {
    let subject = format!("$JS.API.STREAM.LEADER.STEPDOWN.{STREAM}");
    let request = serde_json::json!({ "placement": { "preferred": to } }).to_string();
    let what = format!("stream {STREAM} to accept a stepdown to {to}");
    // A stepdown to a replica not yet current is refused, and changes nothing.
    wait_for(&what, ELECTION_DEADLINE, || async {
        let leader = stream_leader(js).await?;
        if leader == to {
            return Some(());
        }
        let answer = js
            .client()
            .request(subject.clone(), request.clone().into())
            .await;
        let answer: serde_json::Value = serde_json::from_slice(&answer.ok()?.payload).ok()?;
        (answer["success"] == true).then_some(())
    })
    .await?;
    let what = format!("{to} to lead stream {STREAM}");
    wait_for(&what, ELECTION_DEADLINE, || async {
        (stream_leader(js).await? == to).then_some(())
    })
    .await
}

async fn wait_for_peers(server: &NatsServer, peers: &[&str], deadline: Duration) -> Result<()> {
    let what = format!("{} to be routed to {peers:?}", server.server_name());
    wait_for(&what, deadline, || async {
        let routed = server.routed_peers().await.ok()?;
        (routed == peers).then_some(())
    })
    .await
}

/// The first 4 bytes a server sends to a TCP client connecting from inside
/// `netns` to `url` (`INFO` for a nats-server).
fn greeting_inside(netns: &NetNs, url: &str) -> Result<String> {
    let addr = url.strip_prefix("nats://").context("a nats:// url")?;
    let (ip, port) = addr.rsplit_once(':').context("host:port")?;
    let script = format!("exec 3<>/dev/tcp/{ip}/{port} && head -c 4 <&3");
    let output = netns
        .command("timeout")
        .args(["5", "bash", "-c", &script])
        .output()?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[tokio::test]
async fn a_cluster_with_a_member_in_a_namespace_forms_and_replicates() -> Result<()> {
    let netns = NetNs::new()?;
    let started = Instant::now();
    let cluster = spread_cluster(&netns).await?;
    eprintln!("spread cluster and stream ready in {:?}", started.elapsed());
    let s3 = &cluster.servers[2];

    assert_eq!(s3.netns(), Some(netns.name()));
    assert_eq!(cluster.servers[0].netns(), None);
    let pid = s3.pid().context("s3 runs")?;
    let inside = std::fs::read_link(format!("/proc/{pid}/ns/net"))?;
    assert_ne!(inside, std::fs::read_link("/proc/self/ns/net")?);
    assert_eq!(s3.url(), format!("nats://{}:{}", netns.ns_ip(), s3.port()));
    assert_eq!(cluster.url_list().len(), 3);
    assert_eq!(cluster.cluster_ports().len(), 3);

    // Processes in the namespace reach s3 on loopback and s1 across the veth.
    assert_eq!(
        netns.nats_url(s3)?,
        format!("nats://127.0.0.1:{}", s3.port())
    );
    assert_eq!(greeting_inside(&netns, &netns.nats_url(s3)?)?, "INFO");
    let s1_inside = netns.nats_url(&cluster.servers[0])?;
    assert!(s1_inside.starts_with(&format!("nats://{}:", netns.host_ip())));
    assert_eq!(greeting_inside(&netns, &s1_inside)?, "INFO");

    wait_for_peers(&cluster.servers[0], &["s2", "s3"], DEADLINE).await?;
    wait_for_peers(&cluster.servers[1], &["s1", "s3"], DEADLINE).await?;
    wait_for_peers(s3, &["s1", "s2"], DEADLINE).await?;

    let through_s3 = js(&pinned_client(s3).await?);
    assert_eq!(
        publish_through_new_member(&through_s3, "orders.1").await?,
        1
    );
    let jsz = s3.monitor_json("/jsz?streams=true").await?;
    assert_eq!(jsz["streams"].as_u64(), Some(1), "{jsz}");
    let via_s1 = jetstream::new(cluster.client().await?);
    let info = via_s1.get_stream(STREAM).await?.info().await?.clone();
    assert_eq!(info.state.messages, 1);
    let replicas = info.cluster.context("cluster info")?;
    assert_eq!(replicas.replicas.len(), 2, "{replicas:?}");
    Ok(())
}

#[tokio::test]
async fn cutting_only_the_routes_leaves_a_minority_whose_clients_stay_connected() -> Result<()> {
    let netns = NetNs::new()?;
    let cluster = spread_cluster(&netns).await?;
    let [s1, s2, s3] = &cluster.servers[..] else {
        unreachable!("three servers")
    };
    wait_for_peers(s3, &["s1", "s2"], DEADLINE).await?;
    let (asker, answerer) = (pinned_client(s3).await?, pinned_client(s3).await?);
    answer_echo(answerer).await?;
    let through_s1 = js(&pinned_client(s1).await?);
    let through_s3 = js(&asker);
    publish(&through_s3, "orders.before").await?;
    // The hard case: the minority holds the stream's leadership.
    move_stream_leader(&through_s1, "s3").await?;

    netns.cut_routes(&cluster.cluster_ports())?;
    let cut_at = Instant::now();
    wait_for_peers(s3, &[], ROUTE_LOSS_DEADLINE).await?;
    let routes_gone = cut_at.elapsed();
    wait_for_peers(s1, &["s2"], ROUTE_LOSS_DEADLINE).await?;
    wait_for_peers(s2, &["s1"], ROUTE_LOSS_DEADLINE).await?;

    // s3's clients notice nothing: still connected, and talking to each other.
    assert_eq!(asker.connection_state(), State::Connected);
    let reply = asker.request("echo", "ping".into()).await?;
    assert_eq!(reply.payload.as_ref(), b"ping");

    // The majority elects a stream leader of its own and takes writes again.
    let accepted = wait_for(
        "the majority to take a write",
        ELECTION_DEADLINE,
        || async { publish(&through_s1, "orders.majority").await.ok() },
    )
    .await?;
    let majority_after = cut_at.elapsed();
    // The minority of one takes none.
    let refused = publish(&through_s3, "orders.minority").await;
    let refused = refused.err().context("s3 alone took a write")?;
    assert_eq!(asker.connection_state(), State::Connected);
    eprintln!(
        "after the route cut: s3 lost its routes in {routes_gone:?}, the majority took write \
         #{accepted} after {majority_after:?}, s3 refused with: {refused:#}"
    );

    netns.restore_routes()?;
    let restored_at = Instant::now();
    wait_for_peers(s3, &["s1", "s2"], DEADLINE).await?;
    let rejoined = restored_at.elapsed();
    let sequence = wait_for("s3 to take writes again", ELECTION_DEADLINE, || async {
        publish(&through_s3, "orders.after").await.ok()
    })
    .await?;
    assert!(sequence > accepted, "{sequence} after {accepted}");
    eprintln!(
        "after the restore: routes back in {rejoined:?}, s3 took a write after {:?}",
        restored_at.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn the_member_in_a_namespace_restarts_and_pauses_there() -> Result<()> {
    let netns = NetNs::new()?;
    let mut cluster =
        NatsCluster::start_spread(NatsOptions::for_netns(), &[None, None, Some(&netns)]).await?;
    let host_net = std::fs::read_link("/proc/self/ns/net")?;
    let net_of = |pid: u32| std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
    let s3 = cluster.server(2);
    let first = s3.pid().context("s3 runs")?;

    s3.kill()?;
    assert_eq!(s3.pid(), None);
    s3.start_again().await?;
    let second = s3.pid().context("s3 runs again")?;
    assert_ne!(second, first);
    let inside = net_of(second).context("s3's network namespace")?;
    assert_ne!(inside, host_net, "started in the namespace again");
    wait_for_peers(s3, &["s1", "s2"], DEADLINE).await?;

    s3.restart().await?;
    assert_eq!(net_of(s3.pid().context("s3 runs")?), Some(inside));
    wait_for_peers(s3, &["s1", "s2"], DEADLINE).await?;

    s3.pause()?;
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", s3.pid().context("pid")?))?;
    assert!(stat.contains(") T"), "stopped: {stat}");
    s3.resume()?;
    let client = pinned_client(cluster.server(2)).await?;
    client.flush().await?;
    Ok(())
}

#[tokio::test]
async fn a_full_cut_isolates_the_member_from_host_clients_too() -> Result<()> {
    let netns = NetNs::new()?;
    let cluster =
        NatsCluster::start_spread(NatsOptions::for_netns(), &[None, None, Some(&netns)]).await?;
    let (s1, s3) = (&cluster.servers[0], &cluster.servers[2]);
    let answerer = pinned_client(s1).await?;
    answer_echo(answerer).await?;
    let asker = pinned_client(s3).await?;
    // s1's interest in `echo` reaches s3 over the route a moment later.
    wait_for(
        "a request through s3 to be answered from s1",
        DEADLINE,
        || async { asker.request("echo", "ping".into()).await.ok() },
    )
    .await?;

    netns.cut()?;
    let refused = asker.request("echo", "ping".into()).await;
    assert!(refused.is_err(), "answered across a cut link");
    wait_for_peers(s1, &["s2"], ROUTE_LOSS_DEADLINE).await?;
    Ok(())
}
