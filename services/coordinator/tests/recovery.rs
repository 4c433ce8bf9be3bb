//! Recovery and the fencing mechanism itself, against a real nats-server.

mod common;

use std::time::Instant;

use chrono::Utc;
use common::*;
use shoal_coordinator::log::{Appender, open_stream};
use shoal_coordinator::record::{EpochStart, LogRecord};
use shoal_protocol::{ListAssignmentsRequest, Subjects};
use shoal_testkit::{NatsServer, wait_for};

fn epoch_start(leader: &str, epoch: u64) -> LogRecord {
    LogRecord::EpochStart(EpochStart {
        event_id: uuid::Uuid::new_v4().to_string(),
        leader_id: leader.into(),
        epoch,
        at: Utc::now(),
    })
}

#[tokio::test]
async fn an_older_writer_is_refused_after_a_newer_epoch_start() {
    let nats = NatsServer::start().await.unwrap();
    let client = nats.client().await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let subjects = Subjects::default();
    let stream = open_stream(&js, &subjects, 1).await.unwrap();
    let mut old = Appender::new(js.clone(), &subjects, 0);
    old.append_now(&epoch_start("old", 1)).await.unwrap();
    // Pipelined appends: each expects the sequence the previous one gets.
    let started = Instant::now();
    let mut acks = Vec::new();
    for _ in 0..1000 {
        acks.push(
            old.send(epoch_start("old", 1).encode().unwrap())
                .await
                .unwrap(),
        );
    }
    for (want, ack) in acks {
        assert_eq!(ack.await.unwrap().sequence, want);
    }
    println!(
        "MEASURED 1000 pipelined fenced appends in {:?}",
        started.elapsed()
    );
    let last = stream.get_info().await.unwrap().state.last_sequence;
    let mut new = Appender::new(js.clone(), &subjects, last);
    new.append_now(&epoch_start("new", 2)).await.unwrap();
    let refused = old.append_now(&epoch_start("old", 1)).await.unwrap_err();
    assert!(refused.is_fenced(), "{refused}");
    assert!(
        refused.to_string().contains("wrong last sequence"),
        "{refused}"
    );
    assert!(old.failed().is_cancelled());
    assert_eq!(
        stream.get_info().await.unwrap().state.last_sequence,
        last + 1
    );
}

#[tokio::test]
async fn assignments_and_leadership_survive_a_nats_server_restart() {
    let mut nats = NatsServer::start().await.unwrap();
    let client = nats.client().await.unwrap();
    let kv = members(&client).await.unwrap();
    put_node(&kv, &node("n1", 1000)).await.unwrap();
    let _c1 = coordinator(&nats.url(), "c1", &[]).unwrap();
    let _c2 = coordinator(&nats.url(), "c2", &[]).unwrap();
    let shoal = shoal(&client);
    wait_leader(&shoal, &["c1", "c2"], LONG).await.unwrap();
    for i in 0..20 {
        shoal
            .assign(&pinned(&format!("before-{i}"), "n1"))
            .await
            .unwrap();
    }
    let restarted_at = Instant::now();
    nats.restart().await.unwrap();
    let leader = wait_leader(&shoal, &["c1", "c2"], LONG).await.unwrap();
    let a = assign_acked(&shoal, &pinned("after-0", "n1"), LONG)
        .await
        .unwrap();
    println!(
        "MEASURED after a nats-server restart, {leader} leads and assigns {:?} after the restart began",
        restarted_at.elapsed()
    );
    for i in 1..10 {
        assign_acked(&shoal, &pinned(&format!("after-{i}"), "n1"), LONG)
            .await
            .unwrap();
    }
    assert!(a.epoch > 0);
    for id in ["c1", "c2"] {
        wait_for("the replica to list all 30 assignments", LONG, || async {
            let list: shoal_protocol::AssignmentList = shoal
                .call_direct(
                    shoal_protocol::Endpoint::CoordinatorAssignmentsList,
                    id,
                    &ListAssignmentsRequest::default(),
                )
                .await
                .ok()?;
            (list.count == 30).then_some(())
        })
        .await
        .unwrap();
    }
}
