//! Leader election, promotion, crash failover and fencing of a paused leader, with
//! three real coordinator processes.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use shoal_protocol::{
    Assignment, AssignmentList, ClientError, Endpoint, ErrorCode, ListAssignmentsRequest,
};
use shoal_testkit::{NatsServer, wait_all_agree, wait_for};

const TTL: Duration = Duration::from_secs(3);

async fn three(nats: &NatsServer) -> Vec<Coordinator> {
    ["c1", "c2", "c3"]
        .into_iter()
        .map(|id| coordinator(&nats.url(), id, &[]).unwrap())
        .collect()
}

async fn with_nodes(client: &async_nats::Client, n: usize) {
    let kv = members(client).await.unwrap();
    for i in 1..=n {
        put_node(&kv, &node(&format!("n{i}"), 100_000))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn one_leader_at_every_sample_and_promote_moves_it() {
    let nats = NatsServer::start().await.unwrap();
    let client = nats.client().await.unwrap();
    with_nodes(&client, 1).await;
    let _cs = three(&nats).await;
    let shoal = shoal(&client);
    let ids = ["c1", "c2", "c3"];
    let leader = wait_leader(&shoal, &ids, LONG).await.unwrap();
    // A replica still starting has no endpoints yet; sample once all three answer.
    wait_for("every coordinator to answer leader.get", LONG, || async {
        for id in ids {
            leader_of(&shoal, id).await.ok()?;
        }
        Some(())
    })
    .await
    .unwrap();

    // Sample every replica back to back across several renewals.
    let until = Instant::now() + TTL + Duration::from_secs(1);
    let mut samples = 0;
    while Instant::now() < until {
        let mut leading = 0;
        for id in ids {
            if leader_of(&shoal, id).await.unwrap().is_leader {
                leading += 1;
            }
        }
        assert_eq!(leading, 1, "sample {samples}: {leading} leaders");
        samples += 1;
    }
    println!("{samples} samples of 3 replicas: exactly one leader in each");

    let target = ids.iter().find(|id| **id != leader).unwrap();
    let writers = Writers::start(&shoal, 8, "n1");
    writers.wait_acked(50).await;
    let t0 = Instant::now();
    let reply = shoal.promote(target).await.unwrap();
    let promoted_in = t0.elapsed();
    assert!(reply.success);
    assert_eq!(reply.leader.coordinator_id, *target);
    let serving = wait_for("the promoted replica to lead", LONG, || async {
        leader_of(&shoal, target)
            .await
            .ok()?
            .is_leader
            .then_some(())
    })
    .await;
    serving.unwrap();
    let leading_after = t0.elapsed();
    writers.wait_acked(50).await;
    let out = writers.finish().await;
    println!(
        "MEASURED promote {leader} -> {target}: reply after {promoted_in:?}, leading after {leading_after:?}; writers: {out:?}"
    );
    assert_eq!(out.timeouts, 0, "a request was dropped in the handover");
    assert!(out.other.is_empty(), "{:?}", out.other);
    let a = shoal.assign(&pinned("after-promote", "n1")).await.unwrap();
    assert_eq!(
        a.epoch, reply.leader.epoch,
        "written by the promoted leader"
    );
    assert_eq!(wait_leader(&shoal, &ids, LONG).await.unwrap(), *target);

    let e = shoal.promote("nobody").await.unwrap_err();
    assert_eq!(e.service_code(), Some(ErrorCode::NotFound), "{e}");
}

#[tokio::test]
async fn kill_9_of_the_leader_loses_no_acknowledged_assignment() {
    let nats = NatsServer::start().await.unwrap();
    let client = nats.client().await.unwrap();
    with_nodes(&client, 3).await;
    let mut cs = three(&nats).await;
    let shoal = shoal(&client);
    let ids = ["c1", "c2", "c3"];
    let leader = wait_leader(&shoal, &ids, LONG).await.unwrap();

    // A steady stream of assigns from a client that retries with the same
    // request_id on timeouts and leader changes.
    let old_epoch = leader_of(&shoal, &leader)
        .await
        .unwrap()
        .leader
        .unwrap()
        .epoch;
    let acked: Arc<Mutex<Vec<(String, Instant, u64)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (acked, stop) = (acked.clone(), stop.clone());
        let fast = shoal.clone().with_timeout(Duration::from_millis(500));
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let req = pinned(&format!("agent-{i}"), &format!("n{}", i % 3 + 1));
                let a = assign_acked(&fast, &req, LONG).await.unwrap();
                acked
                    .lock()
                    .unwrap()
                    .push((a.agent_name, Instant::now(), a.epoch));
                i += 1;
            }
        })
    };
    let count = || acked.lock().unwrap().len();
    wait_for("100 acknowledged assigns", LONG, || async {
        (count() >= 100).then_some(())
    })
    .await
    .unwrap();
    let leader_proc = cs.iter_mut().find(|c| c.id == leader).unwrap();
    let killed_at = Instant::now();
    leader_proc.process.kill().unwrap();
    let at_kill = count();
    let survivors: Vec<&str> = ids.iter().copied().filter(|id| *id != leader).collect();
    let new_leader = wait_leader(&shoal, &survivors, LONG).await.unwrap();
    let elected = killed_at.elapsed();
    let first_ack = wait_for("an assign acknowledged by the new leader", LONG, || async {
        acked
            .lock()
            .unwrap()
            .iter()
            .find(|(_, _, epoch)| *epoch > old_epoch)
            .map(|(_, at, _)| *at - killed_at)
    })
    .await
    .unwrap();
    println!(
        "MEASURED kill -9 of {leader}: {new_leader} leads after {elected:?}, first assign acknowledged by it {first_ack:?} after the kill (ttl {TTL:?})"
    );
    assert!(
        first_ack <= TTL + Duration::from_secs(1),
        "served after {first_ack:?}"
    );
    wait_for("100 more acknowledged assigns", LONG, || async {
        (count() >= at_kill + 100).then_some(())
    })
    .await
    .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.unwrap();

    let acked: BTreeSet<String> = acked
        .lock()
        .unwrap()
        .iter()
        .map(|(a, ..)| a.clone())
        .collect();
    let subjects: Vec<String> = survivors
        .iter()
        .map(|id| {
            shoal
                .subjects()
                .direct(Endpoint::CoordinatorAssignmentsList, id)
        })
        .collect();
    let agreed = wait_all_agree(
        "the survivors to agree on the assignments",
        &client,
        &subjects,
        &serde_json::json!({}),
        LONG,
        |v| v["count"].clone(),
    )
    .await
    .unwrap();
    let list: AssignmentList = shoal
        .list_assignments(&ListAssignmentsRequest::default())
        .await
        .unwrap();
    let listed: BTreeSet<String> = list
        .assignments
        .iter()
        .map(|a| a.agent_name.clone())
        .collect();
    let missing: Vec<_> = acked.difference(&listed).collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    assert_eq!(agreed.as_u64().unwrap() as usize, list.count);
    let counts = assigned_counts(&log_records(&client).await.unwrap());
    let duplicated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicated.is_empty(), "assigned twice: {duplicated:?}");
    println!(
        "{} acknowledged, {} listed, none lost, none duplicated",
        acked.len(),
        list.count
    );
}

#[tokio::test]
async fn a_paused_leader_gets_no_write_accepted_when_it_resumes() {
    let nats = NatsServer::start().await.unwrap();
    let client = nats.client().await.unwrap();
    with_nodes(&client, 2).await;
    let cs = three(&nats).await;
    let shoal = shoal(&client);
    let ids = ["c1", "c2", "c3"];
    let old = wait_leader(&shoal, &ids, LONG).await.unwrap();
    let old_epoch = leader_of(&shoal, &old).await.unwrap().leader.unwrap().epoch;
    for i in 0..5 {
        shoal
            .assign(&pinned(&format!("before-{i}"), "n1"))
            .await
            .unwrap();
    }

    let paused_at = Instant::now();
    cs.iter()
        .find(|c| c.id == old)
        .unwrap()
        .process
        .pause()
        .unwrap();
    let others: Vec<&str> = ids.iter().copied().filter(|id| *id != old).collect();
    let new = wait_for("a follower to take over", LONG, || async {
        for id in &others {
            if leader_of(&shoal, id).await.ok()?.is_leader {
                return Some(id.to_string());
            }
        }
        None
    })
    .await
    .unwrap();
    println!(
        "MEASURED SIGSTOP of {old}: {new} leads after {:?}",
        paused_at.elapsed()
    );
    // Written through the new leader's own subject: the paused process still holds
    // its queue subscription and would sit on requests sent to the shared one.
    let direct = shoal.clone().with_retry_for(Duration::from_secs(10));
    for i in 0..10 {
        let a: Assignment = direct
            .call_direct(
                Endpoint::CoordinatorAssign,
                &new,
                &pinned(&format!("during-{i}"), "n2"),
            )
            .await
            .unwrap();
        assert!(a.epoch > old_epoch);
    }
    wait_for("two lease ttls of pause", LONG, || async {
        (paused_at.elapsed() >= 2 * TTL).then_some(())
    })
    .await
    .unwrap();

    // Writes waiting for the old leader the moment it resumes.
    let stale_client = shoal
        .clone()
        .with_retry_for(Duration::ZERO)
        .with_timeout(Duration::from_secs(10));
    let stale: Vec<_> = (0..5)
        .map(|i| {
            let (c, old) = (stale_client.clone(), old.clone());
            tokio::spawn(async move {
                c.call_direct::<_, Assignment>(
                    Endpoint::CoordinatorAssign,
                    &old,
                    &pinned(&format!("stale-{i}"), "n1"),
                )
                .await
            })
        })
        .collect();
    client.flush().await.unwrap();
    cs.iter()
        .find(|c| c.id == old)
        .unwrap()
        .process
        .resume()
        .unwrap();
    let mut accepted = 0;
    for task in stale {
        match task.await.unwrap() {
            Ok(a) => {
                accepted += 1;
                println!("accepted by the old leader: {a:?}");
            }
            // A request the old leader read while its write endpoints were being
            // unsubscribed is dropped, not answered: the client's retry (same
            // request_id) goes to the new leader. Refused or lost, never accepted.
            Err(e) => assert!(
                matches!(
                    e,
                    ClientError::NoResponders { .. } | ClientError::Timeout { .. }
                ) || e.service_code() == Some(ErrorCode::NotLeader),
                "{e}"
            ),
        }
    }
    println!("old leader {old} after SIGCONT: {accepted} of 5 writes accepted");
    assert_eq!(accepted, 0);
    wait_for("the old leader to step down", LONG, || async {
        let r = leader_of(&shoal, &old).await.ok()?;
        (!r.is_leader && r.leader?.coordinator_id == new).then_some(())
    })
    .await
    .unwrap();

    let subjects: Vec<String> = ids
        .iter()
        .map(|id| {
            shoal
                .subjects()
                .direct(Endpoint::CoordinatorAssignmentsList, id)
        })
        .collect();
    let agreed = wait_all_agree(
        "all replicas to agree on the assignments",
        &client,
        &subjects,
        &serde_json::json!({}),
        LONG,
        |v| {
            let mut names: Vec<String> = v["assignments"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| format!("{}@{}", a["agent_name"], a["node_id"]))
                .collect();
            names.sort();
            serde_json::json!(names)
        },
    )
    .await
    .unwrap();
    assert_eq!(agreed.as_array().unwrap().len(), 15);
    assert!(!agreed.to_string().contains("stale-"), "{agreed}");
    // Nothing in the log from the old epoch after the new leader's epoch-start.
    let log = log_records(&client).await.unwrap();
    let new_start = log
        .iter()
        .find(|(_, r)| r["type"] == "epoch_start" && r["leader_id"] == new.as_str())
        .map(|(seq, _)| *seq)
        .unwrap();
    let late: Vec<_> = log
        .iter()
        .filter(|(seq, r)| *seq > new_start && r["epoch"].as_u64() == Some(old_epoch))
        .collect();
    assert!(
        late.is_empty(),
        "old-epoch records after the new epoch: {late:?}"
    );
}

#[tokio::test]
async fn a_stopping_leader_hands_over_at_once_and_does_not_win_the_lease_back() {
    let nats = NatsServer::start().await.unwrap();
    let client = nats.client().await.unwrap();
    with_nodes(&client, 1).await;
    let mut cs = three(&nats).await;
    let shoal = shoal(&client);
    let ids = ["c1", "c2", "c3"];
    let leader = wait_leader(&shoal, &ids, LONG).await.unwrap();
    let writers = Writers::start(&shoal, 8, "n1");
    writers.wait_acked(50).await;
    let stopping = cs.iter_mut().find(|c| c.id == leader).unwrap();
    let t0 = Instant::now();
    stopping.process.terminate().unwrap();
    let status = stopping
        .process
        .wait_exit(Duration::from_secs(5))
        .await
        .unwrap();
    assert!(status.success(), "{leader} exited with {status}");
    // A released lease is taken at once, not after the TTL runs out.
    let rest: Vec<&str> = ids.iter().copied().filter(|id| *id != leader).collect();
    let next = wait_leader(&shoal, &rest, TTL).await.unwrap();
    let handover = t0.elapsed();
    println!("MEASURED graceful stop of {leader}: {next} leads after {handover:?}");
    assert!(
        handover < TTL,
        "handover took {handover:?}, as long as the lease TTL"
    );
    writers.wait_acked(50).await;
    let out = writers.finish().await;
    println!("writers across the graceful stop: {out:?}");
    assert_eq!(out.timeouts, 0, "a request was dropped in the handover");
    assert!(out.other.is_empty(), "{:?}", out.other);
    // Between releasing and exiting, the stopping replica must not have become a
    // candidate again and won the key back.
    let log = stopping.process.log();
    let after_signal = log.split("shutting down").nth(1).unwrap_or_default();
    assert!(
        !after_signal.contains("won the leader lease"),
        "{leader} won the lease again while stopping:\n{after_signal}"
    );
}
