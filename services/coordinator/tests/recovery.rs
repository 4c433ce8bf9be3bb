//! Recovery and the fencing mechanism itself, against a real nats-server.

mod common;

use std::time::{Duration, Instant};

use chrono::Utc;
use common::*;
use shoal_coordinator::append::Appender;
use shoal_coordinator::log::open_stream;
use shoal_coordinator::record::{EpochStart, LogRecord};
use shoal_protocol::{LeaderReply, ListAssignmentsRequest, Subjects};
use shoal_testkit::{NatsServer, wait_for};

/// How long a test append may go unconfirmed.
const PATIENCE: Duration = Duration::from_secs(5);

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
    let mut old = Appender::new(js.clone(), stream.clone(), &subjects, 0);
    old.append_now(&epoch_start("old", 1), PATIENCE)
        .await
        .unwrap();
    // Pipelined appends: each expects the sequence the previous one gets.
    let started = Instant::now();
    let mut sent = Vec::new();
    for _ in 0..1000 {
        sent.push(
            old.send(epoch_start("old", 1).encode().unwrap())
                .await
                .unwrap(),
        );
    }
    let target = old.target();
    for pending in sent {
        let want = pending.want;
        assert_eq!(target.confirm(pending, &mut []).await.unwrap(), want);
    }
    println!(
        "MEASURED 1000 pipelined fenced appends in {:?}",
        started.elapsed()
    );
    let last = stream.get_info().await.unwrap().state.last_sequence;
    let mut new = Appender::new(js.clone(), stream.clone(), &subjects, last);
    new.append_now(&epoch_start("new", 2), PATIENCE)
        .await
        .unwrap();
    let refused = old
        .append_now(&epoch_start("old", 1), PATIENCE)
        .await
        .unwrap_err();
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

#[tokio::test]
async fn an_unanswered_append_is_lost_not_fenced() {
    let nats = NatsServer::start().await.unwrap();
    let client = nats.client().await.unwrap();
    let mut js = async_nats::jetstream::new(client.clone());
    js.set_timeout(Duration::from_millis(300));
    let subjects = Subjects::default();
    let stream = open_stream(&js, &subjects, 1).await.unwrap();
    let mut writer = Appender::new(js.clone(), stream.clone(), &subjects, 0);
    nats.pause().unwrap();
    let lost = writer
        .append_now(&epoch_start("w", 1), Duration::from_millis(300))
        .await
        .unwrap_err();
    nats.resume().unwrap();
    assert!(!lost.is_fenced(), "{lost}");
}

/// A leader whose epoch-start appends fail without being refused (here the log's
/// stream takes other subjects, so nothing stores them) keeps its lease and keeps
/// trying: giving the lease up would hand the same log to the next replica.
#[tokio::test]
async fn a_term_that_cannot_start_keeps_its_lease_unless_fenced() {
    let nats = NatsServer::start().await.unwrap();
    let client = nats.client().await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    js.create_stream(async_nats::jetstream::stream::Config {
        name: shoal_protocol::LOG_STREAM.to_string(),
        subjects: vec!["elsewhere.log".to_string()],
        ..Default::default()
    })
    .await
    .unwrap();
    let c1 = coordinator(&nats.url(), "c1", &[]).unwrap();
    let shoal = shoal(&client);
    wait_leader(&shoal, &["c1"], LONG).await.unwrap();
    let epoch = |reply: LeaderReply| reply.leader.map(|l| l.epoch);
    let first = epoch(leader_of(&shoal, "c1").await.unwrap());
    assert!(first.is_some());
    // More than a lease TTL (3 s) of failing starts.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let reply = leader_of(&shoal, "c1").await.unwrap();
    assert!(reply.is_leader, "{reply:?}");
    assert_eq!(epoch(reply), first, "the lease was given up and won again");
    let log = c1.process.log();
    assert!(!log.contains("released the leader lease"), "{log}");
    assert!(log.contains("starting the term"), "{log}");
}
