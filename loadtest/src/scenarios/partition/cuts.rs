//! The partition scenario's cuts, each made while the writer assigns, held for
//! `--cut-for`, healed, and followed until the cluster is whole again. Each
//! reports what its detection took and the writes' longest stall; the goal is
//! that stall within detection plus 1 s.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use shoal_protocol::{
    AssignmentStatus, ListAssignmentsRequest, NodeEventKind, NodeStatus, ServiceKind, connection,
};
use shoal_testkit::wait_for;

use super::hosts::{
    BALANCER, CUT_NODE, Hosts, MAJORITY_COORDINATOR, MINORITY_COORDINATOR, MINORITY_SERVER,
};
use super::streams::{Term, elected, leaders, led_by, wait_current};
use super::watchers::{NodeEvents, Writer};
use crate::args::Cut;
use crate::report::Report;
use crate::scenarios::failover::watch::Watch;
use crate::stack::Stack;

const PATIENCE: Duration = Duration::from_secs(60);
/// Writes may resume this long after the cut is detected.
const SLACK: Duration = Duration::from_secs(1);
/// The longest Raft election of nats-server (not configurable): 4–9 s.
const RAFT_ELECTION: Duration = Duration::from_secs(9);

/// Runs one cut and reports its detection and the writes' stalls against their
/// goals.
pub async fn run(
    cut: Cut,
    hosts: &Hosts,
    stack: &Stack,
    watchers: (&Writer, &NodeEvents, &Watch),
    cut_for: Duration,
    report: &mut Report,
) -> anyhow::Result<()> {
    let (writer, events, watch) = watchers;
    let name = cut.name();
    // Who leads when the cut begins: the majority's coordinator for a server's
    // cut (a cut of its own, the leader's comes next), the minority's for the
    // leader's.
    match cut {
        Cut::NatsServer => lead(stack, MAJORITY_COORDINATOR).await?,
        Cut::Leader => lead(stack, MINORITY_COORDINATOR).await?,
        Cut::Registry | Cut::Node => {}
    }
    eprintln!("cut: {name} for {cut_for:?}");
    let at = Instant::now();
    let wall = chrono::Utc::now();
    let cutting = Cutting {
        hosts,
        stack,
        events,
        at,
        cut_for,
    };
    let (detection, healed) = match cut {
        Cut::NatsServer => nats_server(&cutting, report).await?,
        Cut::Leader => leader(&cutting, report).await?,
        Cut::Registry => registry(&cutting, report).await?,
        Cut::Node => node(&cutting, report).await?,
    };
    // Settled: JetStream current everywhere and writes acknowledged again, so the
    // next cut starts from a whole cluster.
    wait_current(stack).await?;
    writer.wait_acked(writer.acked() + 1).await?;
    let stall = writer.stall_between(at, healed.at);
    let after_heal = writer.stall_between(healed.at, Instant::now());
    let now_leading = leaders(stack).await?;
    let reelected: Vec<&String> = healed
        .leaders
        .iter()
        .filter(|(stream, term)| now_leading.get(*stream).is_some_and(|now| now != *term))
        .map(|(stream, _)| stream)
        .collect();
    report.figure(
        &format!("{name}.writes_stalled_after_heal_ms"),
        ms(after_heal),
    );
    report.figure(&format!("{name}.streams_reelected_at_heal"), &reelected);
    // A server that rejoins may make JetStream elect again (it campaigned alone
    // meanwhile): then writes wait for that Raft election (4-9 s), else for
    // nothing.
    let rejoin = if reelected.is_empty() {
        Duration::ZERO
    } else {
        RAFT_ELECTION
    };
    report.goal(
        &format!("{name} heal: writes stall ≤ any rejoin election + 1 s"),
        after_heal <= rejoin + SLACK,
        format!("writes stalled {after_heal:?} after the heal; streams re-elected: {reelected:?}"),
    );
    let leader = stack.wait_for_leader().await?;
    report.figure(&format!("{name}.leader_after"), leader);
    // Terms begun from the cut on (a leader that never had to go should keep its
    // term through a cut that spares it).
    watch.caught_up().await?;
    let terms: Vec<String> = watch.read(|s| {
        s.terms
            .iter()
            .filter(|t| t.at >= wall)
            .map(|t| {
                let after = (t.at - wall).num_milliseconds();
                format!(
                    "{} (epoch {}) {after} ms after the cut",
                    t.leader_id, t.epoch
                )
            })
            .collect()
    });
    report.figure(&format!("{name}.terms_begun"), terms);
    report.figure(&format!("{name}.writes_stalled_ms"), ms(stall));
    report.goal(
        &format!("{name} cut: writes stall ≤ detection + 1 s"),
        stall <= detection + SLACK,
        format!("writes stalled {stall:?} at most; detection took {detection:?}"),
    );
    Ok(())
}

/// s3's routes cut, its clients (the balancer) still attached: the majority
/// elects leaders for what s3 led, and the balancer must leave s3.
async fn nats_server(c: &Cutting<'_>, report: &mut Report) -> anyhow::Result<(Duration, Healed)> {
    let (stack, at) = (c.stack, c.at);
    let server = c.s3()?;
    let s3 = server.server_name();
    let led = led_by(stack, s3).await?;
    let cluster = stack.cluster.as_ref().context("no nats cluster")?;
    c.hosts.minority.cut_routes(&cluster.cluster_ports())?;
    let balancer = connection::service(ServiceKind::Balancer, BALANCER);
    let left = async {
        wait_for(
            "the balancer to leave the minority's server",
            PATIENCE,
            || async {
                let open = server.connections().await.ok()?;
                let attached = open
                    .iter()
                    .any(|conn| conn.name.as_deref() == Some(balancer.as_str()));
                (!attached).then_some(())
            },
        )
        .await
        .map(|()| at.elapsed())
    };
    let (elected, left) = tokio::join!(elected(stack, &led, s3, at), left);
    let (elected, left) = (elected?, left?);
    report.figure("nats-server.streams_led_by_it", &led);
    report.figure("nats-server.elected_ms", ms(elected));
    report.figure("nats-server.balancer_left_ms", ms(left));
    let detection = elected.max(left);
    let healed = c.hold().await;
    c.hosts.minority.restore_routes()?;
    wait_current(stack).await?;
    report.figure("nats-server.healed_ms", ms(at.elapsed()));
    Ok((detection, healed))
}

/// The leader (coordinator-1) cut off with s3: coordinator-2 takes over once the
/// lease runs out.
async fn leader(c: &Cutting<'_>, report: &mut Report) -> anyhow::Result<(Duration, Healed)> {
    let (stack, at) = (c.stack, c.at);
    let client = stack.client.clone();
    let s3 = c.s3()?.server_name();
    let led = led_by(stack, s3).await?;
    c.hosts.minority.cut()?;
    // Asked quickly and often: a request that reached the cut leader is lost.
    let quick = client
        .clone()
        .with_timeout(Duration::from_millis(250))
        .with_retry_for(Duration::ZERO);
    let taken = async {
        wait_for(
            "a coordinator other than coordinator-1 to lead",
            PATIENCE,
            || async {
                let leader = quick.leader().await.ok()?.leader?.coordinator_id;
                (leader != MINORITY_COORDINATOR).then(|| at.elapsed())
            },
        )
        .await
    };
    let (elected, took_over) = tokio::join!(elected(stack, &led, s3, at), taken);
    let (elected, took_over) = (elected?, took_over?);
    report.figure("leader.streams_led_by_its_server", &led);
    report.figure("leader.elected_ms", ms(elected));
    report.figure("leader.taken_over_ms", ms(took_over));
    let healed = c.hold().await;
    c.hosts.minority.restore()?;
    // Back, coordinator-1 agrees with the cluster on who leads (coordinator-2,
    // or a later term if the rejoin cost coordinator-2 its lease).
    wait_for("coordinator-1 to agree on the leader", PATIENCE, || async {
        let leader = client.leader().await.ok()?.leader?.coordinator_id;
        let reply = client.leader_of(MINORITY_COORDINATOR).await.ok()?;
        let says = reply.leader?.coordinator_id;
        (says == leader && reply.is_leader == (leader == MINORITY_COORDINATOR)).then_some(())
    })
    .await?;
    wait_current(stack).await?;
    report.figure("leader.healed_ms", ms(at.elapsed()));
    // Writes wait for the takeover, and for JetStream to elect leaders for what
    // s3 led.
    Ok((took_over.max(elected), healed))
}

/// The registry cut off: it hears no heartbeat meanwhile, and must not take that
/// for the nodes' silence once it is back.
async fn registry(c: &Cutting<'_>, report: &mut Report) -> anyhow::Result<(Duration, Healed)> {
    c.hosts.registry.cut()?;
    let healed = c.hold().await;
    c.hosts.registry.restore()?;
    let back = Instant::now();
    let client = c.stack.client.clone();
    let expected = c.stack.nodes.as_ref().map_or(0, |n| n.len()) + 1;
    let heard = wait_for(
        "the registry to hear every node again",
        PATIENCE,
        || async {
            let stats = client.registry_stats().await.ok()?;
            (stats.online_nodes >= expected).then_some(())
        },
    )
    .await;
    heard?;
    report.figure("registry.answering_again_ms", ms(back.elapsed()));
    // Long enough after the heal for a wrong judgement to have been published: the
    // offline threshold (3 heartbeat intervals) and a heartbeat more.
    let settle = back + Duration::from_secs(4);
    tokio::time::sleep_until(settle.into()).await;
    let condemned = c
        .events
        .since(c.at, &[NodeEventKind::Suspect, NodeEventKind::Offline]);
    report.figure("registry.nodes_condemned", condemned.len());
    report.check(
        "registry cut: no node suspected for the registry's own cut",
        condemned.is_empty(),
        format!("{condemned:?}"),
    );
    // Nothing to detect: writes go on through the balancer's own view.
    Ok((Duration::ZERO, healed))
}

/// The real node cut off: offline, its agents moved; back, it runs exactly what
/// it is told.
async fn node(c: &Cutting<'_>, report: &mut Report) -> anyhow::Result<(Duration, Healed)> {
    let at = c.at;
    let client = c.stack.client.clone();
    let held = c.agents_on(CUT_NODE).await?;
    report.figure("node.agents_before", held);
    c.hosts.node.cut()?;
    c.events
        .wait(CUT_NODE, NodeEventKind::Offline, at, PATIENCE)
        .await?;
    let offline = at.elapsed();
    report.figure("node.offline_ms", ms(offline));
    wait_for(
        &format!("{CUT_NODE}'s agents to move"),
        PATIENCE,
        || async { (c.agents_on(CUT_NODE).await.ok()? == 0).then_some(()) },
    )
    .await?;
    report.figure("node.agents_moved_ms", ms(at.elapsed()));
    let healed = c.hold().await;
    c.hosts.node.restore()?;
    wait_for(
        &format!("{CUT_NODE} to be online again"),
        PATIENCE,
        || async {
            let node = client.get_node(CUT_NODE).await.ok()?;
            (node.status == NodeStatus::Online).then_some(())
        },
    )
    .await?;
    report.figure("node.online_again_ms", ms(at.elapsed()));
    // Detection is the offline judgement: writes to other nodes need none.
    Ok((offline, healed))
}

/// Hands the lease to `id` unless it holds it (`leader.promote`, asked again
/// until it has taken).
async fn lead(stack: &Stack, id: &str) -> anyhow::Result<()> {
    let client = stack.client.clone();
    wait_for(&format!("{id} to lead"), PATIENCE, || async {
        let leader = client.leader().await.ok()?.leader?;
        if leader.coordinator_id == id {
            return Some(());
        }
        let _ = client.promote(id).await;
        None
    })
    .await
}

/// The cut as it ends: when, and who led each stream just before.
pub struct Healed {
    at: Instant,
    leaders: BTreeMap<String, Term>,
}

/// One cut in progress: where it is made, when it began, how long it lasts.
struct Cutting<'a> {
    hosts: &'a Hosts,
    stack: &'a Stack,
    events: &'a NodeEvents,
    at: Instant,
    cut_for: Duration,
}

impl Cutting<'_> {
    /// Holds the cut for its length (a schedule, not a wait for some state), then
    /// notes the streams' leaders; the caller heals the cut right after.
    async fn hold(&self) -> Healed {
        tokio::time::sleep_until((self.at + self.cut_for).into()).await;
        let leaders = leaders(self.stack).await.unwrap_or_default();
        Healed {
            at: Instant::now(),
            leaders,
        }
    }

    /// The nats-server in the minority host.
    fn s3(&self) -> anyhow::Result<&shoal_testkit::NatsServer> {
        let cluster = self.stack.cluster.as_ref().context("no nats cluster")?;
        Ok(&cluster.servers[MINORITY_SERVER])
    }

    /// Agents the coordinator has running on `node`.
    async fn agents_on(&self, node: &str) -> anyhow::Result<usize> {
        let on_node = ListAssignmentsRequest {
            node_id: Some(node.to_string()),
            status: Some(AssignmentStatus::Running),
            ..ListAssignmentsRequest::default()
        };
        Ok(self
            .stack
            .client
            .list_all_assignments(&on_node)
            .await?
            .len())
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}
