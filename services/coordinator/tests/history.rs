//! The Postgres ledger: every acknowledged change reaches `assignment_history`
//! exactly once, even across a Postgres outage in the middle of assignments.

mod common;

use std::time::{Duration, Instant};

use common::*;
use shoal_protocol::{AssignmentAction, HistoryRequest};
use shoal_testkit::{NatsServer, Postgres, wait_for};

#[tokio::test]
async fn history_catches_up_exactly_once_after_a_postgres_outage() {
    let nats = NatsServer::start().await.unwrap();
    let mut pg = Postgres::start().await.unwrap();
    let db = pg.create_database().await.unwrap();
    let db_name = db.rsplit('/').next().unwrap().to_string();
    let client = nats.client().await.unwrap();
    let kv = members(&client).await.unwrap();
    put_node(&kv, &node("n1", 100_000)).await.unwrap();
    let _c = coordinator(&nats.url(), "c1", &[("SHOAL_DATABASE_URL", &db)]).unwrap();
    let shoal = shoal(&client);
    wait_leader(&shoal, &["c1"], LONG).await.unwrap();

    let mut acknowledged = 0usize;
    let mut next = 0usize;
    let mut assign_some = async |n: usize, acked: &mut usize| {
        for _ in 0..n {
            shoal
                .assign(&pinned(&format!("agent-{next}"), "n1"))
                .await
                .unwrap();
            next += 1;
            *acked += 1;
        }
    };
    assign_some(20, &mut acknowledged).await;

    pg.stop().await.unwrap();
    let down_at = Instant::now();
    // Assignments go on while Postgres is down.
    while down_at.elapsed() < Duration::from_secs(10) {
        assign_some(5, &mut acknowledged).await;
    }
    shoal.unassign("agent-0").await.unwrap();
    acknowledged += 1;
    println!("{acknowledged} changes acknowledged, the last 10 s with postgres down");
    pg.start_again().await.unwrap();
    let back_at = Instant::now();
    assign_some(10, &mut acknowledged).await;
    // A burst: the leader writes what arrives while an append is in flight as one
    // log record, so several rows share a log_seq and differ by log_index.
    let burst = futures::future::join_all((0..50).map(|i| {
        let shoal = shoal.clone();
        async move { shoal.assign(&pinned(&format!("burst-{i}"), "n1")).await }
    }))
    .await;
    for result in burst {
        result.unwrap();
        acknowledged += 1;
    }

    let pg_client = pg.connect(&db_name).await.unwrap();
    let rows = wait_for("history to catch up", LONG, || async {
        let row = pg_client
            .query_one("SELECT count(*) FROM assignment_history", &[])
            .await
            .ok()?;
        let n: i64 = row.get(0);
        (n as usize >= acknowledged).then_some(n as usize)
    })
    .await
    .unwrap();
    println!(
        "MEASURED history caught up {:?} after postgres came back",
        back_at.elapsed()
    );
    assert_eq!(rows, acknowledged, "one row per acknowledged change");
    let distinct = pg_client
        .query_one(
            "SELECT count(DISTINCT event_id), count(DISTINCT (log_seq, log_index)), \
             count(DISTINCT log_seq) FROM assignment_history",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(distinct.get::<_, i64>(0) as usize, acknowledged);
    assert_eq!(distinct.get::<_, i64>(1) as usize, acknowledged);
    println!(
        "MEASURED {acknowledged} changes in {} log records",
        distinct.get::<_, i64>(2)
    );

    let agent0 = shoal
        .history(&HistoryRequest {
            agent_name: Some("agent-0".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let actions: Vec<AssignmentAction> = agent0.history.iter().map(|h| h.action).collect();
    assert_eq!(
        actions,
        [AssignmentAction::Unassigned, AssignmentAction::Assigned]
    );
    assert_eq!(agent0.history[1].node_id.as_deref(), Some("n1"));
    assert_eq!(agent0.history[1].reason, "pinned");
    assert_eq!(agent0.history[1].leader_id, "c1");
    let limited = shoal
        .history(&HistoryRequest {
            node_id: Some("n1".into()),
            limit: Some(3),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(limited.count, 3);
    let at = |i: usize| (limited.history[i].log_seq, limited.history[i].log_index);
    assert!(at(0) > at(1) && at(1) > at(2), "newest first");

    // The burst comes back newest first, each of its 50 agents once.
    let recent = shoal
        .history(&HistoryRequest {
            node_id: Some("n1".into()),
            limit: Some(50),
            ..Default::default()
        })
        .await
        .unwrap();
    let positions: Vec<(u64, u32)> = recent
        .history
        .iter()
        .map(|h| (h.log_seq, h.log_index))
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] > w[1]),
        "newest first: {positions:?}"
    );
    let mut agents: Vec<&str> = recent
        .history
        .iter()
        .map(|h| h.agent_name.as_str())
        .collect();
    agents.sort_unstable();
    agents.dedup();
    assert_eq!(agents.len(), 50);
    assert!(agents.iter().all(|a| a.starts_with("burst-")), "{agents:?}");

    // Paged with `before`, 7 rows at a time (pages end inside the burst's batched
    // records): every row once, newest first, and a last page without `next`.
    let mut paged: Vec<(u64, u32)> = Vec::new();
    let mut before = None;
    loop {
        let page = shoal
            .history(&HistoryRequest {
                limit: Some(7),
                before,
                ..Default::default()
            })
            .await
            .unwrap();
        paged.extend(page.history.iter().map(|h| (h.log_seq, h.log_index)));
        match page.next {
            Some(next) => {
                assert_eq!(page.count, 7);
                assert_eq!(
                    (next.log_seq, next.log_index),
                    *paged.last().unwrap(),
                    "next is the page's oldest row"
                );
                before = Some(next);
            }
            None => break,
        }
    }
    assert_eq!(paged.len(), acknowledged);
    assert!(paged.windows(2).all(|w| w[0] > w[1]), "{paged:?}");
    let refused = shoal
        .history(&HistoryRequest {
            before: Some(shoal_protocol::HistoryCursor {
                log_seq: 0,
                log_index: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("before.log_seq"), "{refused}");
}
