//! Compaction with real processes: the leader snapshots the assignments and purges
//! the log below the snapshot, never past what the history consumer has written to
//! Postgres (here down for a while); a replica started afterwards loads the snapshot
//! and agrees with the leader, and takes over after a kill -9 with nothing lost.

mod common;

use async_nats::jetstream;
use common::*;
use shoal_protocol::{
    AssignmentList, Endpoint, HISTORY_CONSUMER, LOG_STREAM, ListAssignmentsRequest,
};
use shoal_testkit::{NatsServer, Postgres, wait_for};

const COMPACTING: [(&str, &str); 2] = [
    ("SHOAL_SNAPSHOT_INTERVAL", "200ms"),
    ("SHOAL_SNAPSHOT_MIN_RECORDS", "50"),
];

async fn log_bounds(client: &async_nats::Client) -> (u64, u64) {
    let js = jetstream::new(client.clone());
    let mut stream = js.get_stream(LOG_STREAM).await.unwrap();
    let info = stream.info().await.unwrap();
    (info.state.first_sequence, info.state.last_sequence)
}

async fn history_floor(client: &async_nats::Client) -> u64 {
    let js = jetstream::new(client.clone());
    let stream = js.get_stream(LOG_STREAM).await.unwrap();
    let mut consumer: jetstream::consumer::PullConsumer =
        stream.get_consumer(HISTORY_CONSUMER).await.unwrap();
    consumer.info().await.unwrap().ack_floor.stream_sequence
}

/// Every assignment as one replica lists it.
async fn listed_by(shoal: &shoal_protocol::ShoalClient, id: &str) -> Option<Vec<String>> {
    let page: AssignmentList = shoal
        .call_direct(
            Endpoint::CoordinatorAssignmentsList,
            id,
            &ListAssignmentsRequest {
                limit: Some(10_000),
                ..Default::default()
            },
        )
        .await
        .ok()?;
    Some(
        page.assignments
            .into_iter()
            .map(|a| format!("{}@{}", a.agent_name, a.node_id))
            .collect(),
    )
}

#[tokio::test]
async fn the_log_is_purged_below_snapshots_and_a_new_replica_starts_from_one() {
    let nats = NatsServer::start().await.unwrap();
    let mut pg = Postgres::start().await.unwrap();
    let db = pg.create_database().await.unwrap();
    let db_name = db.rsplit('/').next().unwrap().to_string();
    let client = nats.client().await.unwrap();
    let kv = members(&client).await.unwrap();
    put_node(&kv, &node("n1", 100_000)).await.unwrap();
    let url = nats.url();
    let mut env = vec![("SHOAL_DATABASE_URL", db.as_str())];
    env.extend(COMPACTING);
    let mut c1 = coordinator(&url, "c1", &env).unwrap();
    let shoal = shoal(&client);
    wait_leader(&shoal, &["c1"], LONG).await.unwrap();

    let mut changes = 0usize;
    for i in 0..150 {
        shoal
            .assign(&pinned(&format!("agent-{i}"), "n1"))
            .await
            .unwrap();
        changes += 1;
    }
    for i in 0..100 {
        shoal.unassign(&format!("agent-{i}")).await.unwrap();
        changes += 1;
    }
    let (first, last) = wait_for("the log to be purged", LONG, || async {
        let (first, last) = log_bounds(&client).await;
        (first > 1).then_some((first, last))
    })
    .await
    .unwrap();
    println!("MEASURED log compacted: records {first}..={last} kept of {last}");
    c1.process
        .wait_for_log("log compacted", LONG)
        .await
        .unwrap();

    // With Postgres down the history consumer stops acknowledging: the log keeps
    // everything it has not written.
    pg.stop().await.unwrap();
    let floor = history_floor(&client).await;
    let mark = c1.process.log_len();
    // Churn until a compaction runs meanwhile: it snapshots, but purges no further
    // than the floor.
    let mut i = 150;
    while !c1.process.log()[mark..].contains("log compacted") {
        assert!(i < 5_000, "no compaction after {} changes", 2 * (i - 150));
        let agent = format!("churn-{i}");
        shoal.assign(&pinned(&agent, "n1")).await.unwrap();
        shoal.unassign(&agent).await.unwrap();
        changes += 2;
        i += 1;
    }
    let (first, _) = log_bounds(&client).await;
    assert!(
        first <= floor + 1,
        "purged to {first} past the history floor {floor}"
    );
    pg.start_again().await.unwrap();

    // A replica started now loads the snapshot and agrees with the leader.
    let c2 = coordinator(&url, "c2", &env).unwrap();
    c2.process
        .wait_for_log("state loaded from the snapshot", LONG)
        .await
        .unwrap();
    let leader_view = listed_by(&shoal, "c1").await.unwrap();
    assert_eq!(leader_view.len(), 50);
    wait_for("the new replica to agree", LONG, || async {
        (listed_by(&shoal, "c2").await? == leader_view).then_some(())
    })
    .await
    .unwrap();

    // Every acknowledged change reached Postgres exactly once, purges or not.
    let pg_client = pg.connect(&db_name).await.unwrap();
    let rows = wait_for("history to catch up", LONG, || async {
        let row = pg_client
            .query_one(
                "SELECT count(*), count(DISTINCT event_id) FROM assignment_history",
                &[],
            )
            .await
            .ok()?;
        let (n, distinct): (i64, i64) = (row.get(0), row.get(1));
        (n as usize >= changes).then_some((n as usize, distinct as usize))
    })
    .await
    .unwrap();
    assert_eq!(rows, (changes, changes));

    // kill -9 of the leader: the replica that started from the snapshot takes over.
    c1.process.kill().unwrap();
    wait_leader(&shoal, &["c2"], LONG).await.unwrap();
    let a = assign_acked(&shoal, &pinned("after-failover", "n1"), LONG)
        .await
        .unwrap();
    assert_eq!(a.node_id, "n1");
    // A read right after the ack sees it.
    let after = listed_by(&shoal, "c2").await.unwrap();
    assert_eq!(after.len(), 51);
    assert!(leader_view.iter().all(|a| after.contains(a)));
}
