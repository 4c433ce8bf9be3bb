//! The leader coordinator cut off from NATS with its process alive: it runs in its
//! own network namespace and its link is dropped like a pulled cable. A follower
//! must take over, and from then on every write must be answered: the server still
//! holds the cut leader's subscriptions until it drops the silent connection, and
//! requests it routes there would otherwise go unanswered. Once the link is back the
//! old leader must not lead again, and nothing acknowledged may be lost.

mod common;

use std::time::Instant;

use common::*;
use shoal_testkit::{NatsOptions, NatsServer, NetNs, ServiceProcess, binary, wait_for};

#[tokio::test]
async fn a_cut_off_leader_is_replaced_and_no_write_goes_unanswered_for_the_rest_of_the_cut() {
    // Declared first: dropped after the processes that run in it.
    let netns = NetNs::new().unwrap();
    let nats = NatsServer::start_with(NatsOptions::for_netns())
        .await
        .unwrap();
    let url = nats.url();
    let client = nats.client().await.unwrap();
    let kv = members(&client).await.unwrap();
    put_node(&kv, &node("n1", 1_000_000)).await.unwrap();
    let shoal = shoal(&client);

    // c1 starts alone, so it leads; then two followers on the host.
    let args: Vec<String> = ["--nats-url", &netns.nats_url(&nats).unwrap()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let envs = [("SHOAL_INSTANCE_ID".to_string(), "c1".to_string())];
    let _c1 = ServiceProcess::spawn_in(
        &netns,
        "c1",
        &binary("shoal-coordinator").unwrap(),
        &args,
        &envs,
    )
    .unwrap();
    wait_leader(&shoal, &["c1"], LONG).await.unwrap();
    let _c2 = coordinator(&url, "c2", &[]).unwrap();
    let _c3 = coordinator(&url, "c3", &[]).unwrap();
    wait_for("the followers to answer", LONG, || async {
        for id in ["c2", "c3"] {
            leader_of(&shoal, id).await.ok()?;
        }
        Some(())
    })
    .await
    .unwrap();

    let before = Writers::start(&shoal, 8, "n1");
    before.wait_acked(50).await;
    netns.cut().unwrap();
    let cut_at = Instant::now();
    let next = wait_leader(&shoal, &["c2", "c3"], LONG).await.unwrap();
    let leading_after = cut_at.elapsed();
    // Requests sent to the cut leader before the takeover are lost with it.
    let during_takeover = before.finish().await;

    let after = Writers::start(&shoal, 8, "n1");
    after.wait_acked(100).await;
    // The rest of the cut: at least until the server gives up on c1's connection,
    // the moment its subscriptions stop taking requests.
    let c1_ip = std::net::IpAddr::V4(netns.ns_ip());
    wait_for("the server to drop the cut leader", LONG, || async {
        let closed = nats.closed_connections().await.ok()?;
        closed.iter().any(|c| c.ip == c1_ip).then_some(())
    })
    .await
    .unwrap();
    let dropped_after = cut_at.elapsed();
    after.wait_acked(50).await;
    let out = after.finish().await;
    println!(
        "MEASURED leader cut off: {next} leads after {leading_after:?}, the server dropped c1 \
         after {dropped_after:?}; before the takeover: {during_takeover:?}; after it: {out:?}"
    );
    assert_eq!(out.timeouts, 0, "writes went unanswered after the takeover");
    assert!(out.other.is_empty(), "{:?}", out.other);

    netns.restore().unwrap();
    // Back on a new connection, c1 knows it no longer leads.
    wait_for("c1 to follow the new leader", LONG, || async {
        let r = leader_of(&shoal, "c1").await.ok()?;
        (!r.is_leader && r.leader?.coordinator_id == next).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(
        wait_leader(&shoal, &["c1", "c2", "c3"], LONG)
            .await
            .unwrap(),
        next
    );
    let total = during_takeover.acked + out.acked;
    let listed = shoal
        .list_all_assignments(&Default::default())
        .await
        .unwrap();
    assert!(
        listed.len() >= total,
        "{} assignments listed, {total} acknowledged",
        listed.len()
    );
}
