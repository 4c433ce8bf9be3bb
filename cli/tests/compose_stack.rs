//! The compose stack started for real on the Docker engine (compose/docker-compose.yml
//! with the images compose/offline/build-images.sh makes without a registry), then
//! put through what operators do to it: a NATS server killed, the leader coordinator
//! killed, a node taken off the network and put back, the leader paused until its
//! successor leads and then (the new one) past its lease, Postgres restarted. A
//! writer assigns and unassigns the whole time; at the end every acknowledged change
//! is in Postgres exactly once, the history never goes back an epoch nor puts an
//! agent on two nodes, every node's own agent set (the digest in its heartbeat) is
//! what the coordinator says it runs, and `down -v` leaves nothing.
//!
//! Ignored by default (it needs a Docker engine and the images); scripts/test.sh runs
//! it after the suite when `docker info` answers:
//!   compose/offline/build-images.sh
//!   cargo nextest run -p shoal-cli --test compose_stack --run-ignored only

mod stack_support;

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::Instant;

use anyhow::{Context, Result, ensure};
use shoal_protocol::{AssignRequest, DigestSum, ListAssignmentsRequest, NodeStatus};
use shoal_testkit::{ComposeStack, wait_for};
use stack_support::history::{check_history, history_rows};
use stack_support::writer::Writer;
use stack_support::{Cluster, REQUEST_TIMEOUT, compose_dir, node_digests};

const COMPOSE_FILES: [&str; 2] = ["docker-compose.yml", "offline/docker-compose.offline.yml"];
const NODES: [&str; 3] = ["node-1", "node-2", "node-3"];
/// The coordinators' lease TTL in the compose file (the default `--lease-ttl`).
const LEASE_TTL: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a Docker engine and compose/offline/build-images.sh; scripts/test.sh runs it"]
async fn compose_stack_keeps_every_acknowledged_change_through_kills_pauses_and_cuts() -> Result<()>
{
    let started = Instant::now();
    let mut stack = ComposeStack::up(&compose_dir(), &COMPOSE_FILES).await?;
    let cluster = Cluster::connect(&stack).await?;
    let mut report = Vec::new();

    // --- health-gated start: the CLI in a container sees the three nodes online ---
    wait_for(
        "`shoal nodes` in a container to show node-1..3 online",
        Duration::from_secs(120),
        || async {
            let out = stack
                .compose(&["run", "--rm", "-T", "shoal", "--json", "nodes"])
                .await
                .ok()?;
            let list: serde_json::Value = serde_json::from_str(&out).ok()?;
            let online: BTreeSet<&str> = list["nodes"]
                .as_array()?
                .iter()
                .filter(|n| n["status"] == "online")
                .filter_map(|n| n["id"].as_str())
                .collect();
            (online == NODES.into_iter().collect()).then_some(())
        },
    )
    .await?;
    let line = format!(
        "up: `shoal nodes` in a container shows node-1..3 online after {:?}",
        started.elapsed()
    );
    note(&mut report, line);
    // The gateway's HTTP API on the host port the stack was given shows them too.
    let http_port = stack
        .host_port("SHOAL_HTTP_PORT")
        .context("no gateway port")?;
    let listed = wait_for(
        "the gateway to list node-1..3",
        Duration::from_secs(30),
        || async {
            let reply = shoal_testkit::http::get(http_port, "/api/cluster/nodes")
                .await
                .ok()?;
            let list: serde_json::Value = serde_json::from_str(&reply.body).ok()?;
            (reply.status == 200 && list["count"] == NODES.len()).then_some(list)
        },
    )
    .await?;
    note(
        &mut report,
        format!(
            "gateway: GET /api/cluster/nodes lists {} nodes",
            listed["count"]
        ),
    );

    // --- 200 agents ---
    let shoal = cluster.operator();
    for i in 0..200 {
        let req = AssignRequest {
            agent_name: format!("batch-{i}"),
            request_id: Some(format!("batch-{i}")),
            ..AssignRequest::default()
        };
        shoal
            .assign_acknowledged(&req, Duration::from_secs(30))
            .await?;
    }
    let writer = Writer::start(cluster.operator());

    // --- one NATS server killed: the log's stream leader, the hardest case ---
    let victim = cluster.stream_leader(&stack, &[]).await?;
    let killed_at = Instant::now();
    stack.container_command("kill", &victim).await?;
    let new_leader = wait_for(
        "JetStream to elect a new leader of the assignment log",
        Duration::from_secs(30),
        || async {
            let l = cluster
                .stream_leader(&stack, &[victim.as_str()])
                .await
                .ok()?;
            (l != victim).then_some(l)
        },
    )
    .await?;
    let election = killed_at.elapsed();
    let stalled = writer.stall(killed_at, Instant::now()).await?;
    let line = format!(
        "nats-server {victim} killed: {new_leader} leads the log after {election:?}, \
         writes stalled at most {stalled:?}"
    );
    note(&mut report, line);
    ensure!(
        stalled <= election + Duration::from_secs(1) + REQUEST_TIMEOUT,
        "writes stalled {stalled:?} after killing {victim}: more than the election \
         ({election:?}) plus 1 s"
    );
    stack.container_command("start", &victim).await?;
    cluster.wait_js_current(&stack, &victim).await?;

    // --- the leader coordinator killed ---
    let leader = cluster.leader().await?;
    let killed_at = Instant::now();
    stack.container_command("kill", &leader).await?;
    let successor = cluster.wait_leader_other_than(&leader).await?;
    let took_over = killed_at.elapsed();
    let stalled = writer.stall(killed_at, Instant::now()).await?;
    let line = format!(
        "leader {leader} killed: {successor} leads after {took_over:?}, writes stalled at \
         most {stalled:?}"
    );
    note(&mut report, line);
    ensure!(
        stalled <= Duration::from_secs(5),
        "writes stalled {stalled:?} after killing the leader"
    );
    stack.container_command("start", &leader).await?;

    // --- a node taken off the network: offline, its agents move; back: synced ---
    let cut = "node-1";
    let had = cluster.agents_on(cut).await?.len();
    ensure!(had > 0, "{cut} holds no agent to move");
    let cut_at = Instant::now();
    stack.disconnect(cut).await?;
    cluster.wait_node_status(cut, NodeStatus::Offline).await?;
    let offline = cut_at.elapsed();
    wait_for(
        &format!("{cut}'s {had} agents to move"),
        Duration::from_secs(30),
        || async { cluster.agents_on(cut).await.ok()?.is_empty().then_some(()) },
    )
    .await?;
    let moved = cut_at.elapsed();
    stack.connect(cut).await?;
    cluster.wait_node_status(cut, NodeStatus::Online).await?;
    let line = format!(
        "{cut} disconnected: offline after {offline:?}, its {had} agents moved after \
         {moved:?}; reconnected, online after {:?}",
        cut_at.elapsed()
    );
    note(&mut report, line);

    // --- the leader paused: woken right after its successor took over (it believes
    // it leads for a moment, with a stale state), then held past its lease. Neither
    // time is a write of its accepted, nor an answer read from its stale state ---
    for hold in [Duration::ZERO, LEASE_TTL + Duration::from_secs(1)] {
        let leader = cluster.leader().await?;
        let paused_at = Instant::now();
        stack.container_command("pause", &leader).await?;
        let successor = cluster.wait_leader_other_than(&leader).await?;
        let took_over = paused_at.elapsed();
        let stalled = writer.stall(paused_at, Instant::now()).await?;
        // The fault's length, not a wait for something: the pause lasts `hold` at least.
        tokio::time::sleep_until(paused_at + hold).await;
        stack.container_command("unpause", &leader).await?;
        let paused_for = paused_at.elapsed();
        cluster.wait_follower(&leader, &successor).await?;
        let line = format!(
            "leader {leader} paused for {paused_for:?}: {successor} leads after \
             {took_over:?} (writes stalled at most {stalled:?}); unpaused, {leader} follows"
        );
        note(&mut report, line);
    }

    // --- Postgres restarted under writes ---
    let restarted_at = Instant::now();
    stack.compose(&["restart", "postgres"]).await?;
    wait_for(
        "postgres to be healthy again",
        Duration::from_secs(60),
        || async { (stack.health("postgres").await.ok()? == "healthy").then_some(()) },
    )
    .await?;
    let healthy = restarted_at.elapsed();
    let stalled = writer.stall(restarted_at, Instant::now()).await?;
    let line = format!(
        "postgres restarted: healthy after {healthy:?}, writes stalled at most {stalled:?}"
    );
    note(&mut report, line);

    // --- a node's credentials cannot speak for another node ---
    cluster.forged_heartbeat_refused("node-1", "node-2").await?;

    // --- the end: nothing acknowledged lost ---
    let mut acked = writer.stop().await?;
    acked
        .assigned
        .extend((0..200).map(|i| format!("batch-{i}")));
    let expected: BTreeSet<&str> = acked
        .assigned
        .iter()
        .filter(|a| !acked.unassigned.contains(a))
        .map(String::as_str)
        .collect();
    let line = format!(
        "{} assigns and {} unassigns acknowledged",
        acked.assigned.len(),
        acked.unassigned.len()
    );
    note(&mut report, line);

    let current: BTreeSet<String> = shoal
        .list_all_assignments(&ListAssignmentsRequest::default())
        .await?
        .into_iter()
        .map(|a| a.agent_name)
        .collect();
    let lost: Vec<_> = expected
        .iter()
        .filter(|a| !current.contains(**a))
        .take(5)
        .collect();
    ensure!(
        lost.is_empty(),
        "acknowledged agents not assigned: {lost:?}"
    );
    let back: Vec<_> = acked
        .unassigned
        .iter()
        .filter(|a| current.contains(*a))
        .take(5)
        .collect();
    ensure!(
        back.is_empty(),
        "acknowledged unassigns still assigned: {back:?}"
    );

    let pg = cluster.postgres(&stack).await?;
    let rows = wait_for(
        "the history in Postgres to catch up with every acknowledged change",
        Duration::from_secs(60),
        || async {
            let rows = history_rows(&pg).await.ok()?;
            let recorded: BTreeSet<(&str, &str)> = rows
                .iter()
                .map(|r| (r.action.as_str(), r.agent.as_str()))
                .collect();
            let assigned = acked.assigned.iter().map(|a| ("assigned", a.as_str()));
            let unassigned = acked.unassigned.iter().map(|a| ("unassigned", a.as_str()));
            assigned
                .chain(unassigned)
                .all(|change| recorded.contains(&change))
                .then_some(rows)
        },
    )
    .await?;
    let verdict = check_history(&rows, &acked);
    let line = format!("history: {} rows, {} violations", rows.len(), verdict.len());
    note(&mut report, line);
    ensure!(
        verdict.is_empty(),
        "history violations:\n{}",
        verdict.join("\n")
    );

    // Every node runs exactly what the coordinator placed on it (no agent on two nodes).
    let digests = wait_for(
        "every node's own agent set to match its assignments",
        Duration::from_secs(30),
        || async {
            let placed = cluster.operator().running_by_node().await.ok()?;
            let reported = node_digests(&cluster, &NODES).await.ok()?;
            NODES
                .iter()
                .all(|n| {
                    let ours = placed.get(*n).cloned().unwrap_or_default();
                    reported
                        .get(*n)
                        .is_some_and(|d| DigestSum::of(ours.iter().map(String::as_str)).matches(d))
                })
                .then_some(reported)
        },
    )
    .await?;
    note(
        &mut report,
        format!(
            "nodes' own agent counts: {}",
            digests
                .iter()
                .map(|(n, d)| format!("{n}={}", d.count))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    );

    // --- down -v leaves nothing behind ---
    drop(pg);
    drop(cluster);
    stack.down().await?;
    let left = stack.leftovers().await?;
    ensure!(left.is_empty(), "left behind by down -v: {left:?}");

    eprintln!("compose stack:\n  {}", report.join("\n  "));
    Ok(())
}

/// A step's figures: shown as the test goes (`--no-capture`), and kept for the summary.
fn note(report: &mut Vec<String>, line: String) {
    eprintln!("compose stack: {line}");
    report.push(line);
}
