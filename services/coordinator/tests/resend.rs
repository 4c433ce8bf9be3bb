//! Appends whose answer is lost (the server stopped for a while, the log's stream
//! changing leader under them) are sent again and confirmed, stored exactly once,
//! instead of failing the leader's term.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use chrono::Utc;
use shoal_coordinator::append::{Appender, LogTarget, Pending};
use shoal_coordinator::log::open_stream;
use shoal_coordinator::record::{EpochStart, LogRecord};
use shoal_protocol::{LOG_STREAM, Subjects};
use shoal_testkit::{NatsCluster, NatsServer, wait_for};

fn record(i: u64) -> bytes::Bytes {
    LogRecord::EpochStart(EpochStart {
        event_id: format!("record-{i}"),
        leader_id: "writer".into(),
        epoch: 1,
        at: Utc::now(),
    })
    .encode()
    .unwrap()
}

/// A writer at the start of a new log of `replicas`, its JetStream answers awaited
/// for `timeout`; and the log.
async fn log_writer(
    client: &async_nats::Client,
    timeout: Duration,
    replicas: usize,
) -> (Appender, stream::Stream) {
    let mut js = jetstream::new(client.clone());
    js.set_timeout(timeout);
    let subjects = Subjects::default();
    let stream = open_stream(&js, &subjects, replicas).await.unwrap();
    (Appender::new(js, stream.clone(), &subjects, 0), stream)
}

/// Every record in the log, by sequence: its `Nats-Msg-Id`.
async fn names_in_log(stream: &stream::Stream) -> Vec<String> {
    let last = stream.get_info().await.unwrap().state.last_sequence;
    let mut names = Vec::new();
    for seq in 1..=last {
        let message = stream.get_raw_message(seq).await.unwrap();
        let name = message
            .headers
            .get(async_nats::header::NATS_MESSAGE_ID)
            .map(|v| v.to_string())
            .unwrap_or_default();
        names.push(name);
    }
    names
}

/// Confirms the oldest append in flight; returns how long it took.
async fn confirm_oldest(
    target: &LogTarget,
    in_flight: &mut VecDeque<(Pending, Instant)>,
) -> Duration {
    let (pending, sent) = in_flight.pop_front().unwrap();
    let want = pending.want;
    let mut later: Vec<&mut Pending> = in_flight.iter_mut().map(|(p, _)| p).collect();
    assert_eq!(target.confirm(pending, &mut later).await.unwrap(), want);
    sent.elapsed()
}

#[tokio::test]
async fn appends_left_unanswered_by_a_stopped_server_are_confirmed_once() {
    let nats = NatsServer::start().await.unwrap();
    let client = nats.client().await.unwrap();
    // The JetStream timeout is far shorter than the stop below: one unanswered send
    // is not the end.
    let (mut writer, stream) = log_writer(&client, Duration::from_millis(300), 1).await;
    let target = writer.target();
    nats.pause().unwrap();
    // Two pipelined appends, each sent while nothing answers.
    let first = writer.send(record(1)).await.unwrap();
    let second = writer.send(record(2)).await.unwrap();
    let confirming = tokio::spawn(async move {
        let mut second = second;
        let one = target.confirm(first, &mut [&mut second]).await;
        let two = target.confirm(second, &mut []).await;
        (one, two)
    });
    // The server stays stopped for well over a resend interval and the JetStream
    // timeout: the fault, not a wait for something to happen.
    tokio::time::sleep(Duration::from_secs(1)).await;
    nats.resume().unwrap();
    let (one, two) = tokio::time::timeout(Duration::from_secs(10), confirming)
        .await
        .expect("the appends were confirmed")
        .unwrap();
    assert_eq!(one.unwrap(), 1);
    assert_eq!(two.unwrap(), 2);
    assert!(!writer.failed().is_cancelled());
    let names = names_in_log(&stream).await;
    assert_eq!(names.len(), 2, "each append stored once: {names:?}");
    assert_ne!(names[0], names[1]);
}

#[tokio::test]
async fn appends_survive_the_log_changing_leader_under_them_exactly_once() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("shoal_coordinator=debug")
        .try_init();
    let cluster = NatsCluster::start(3).await.unwrap();
    let client = cluster.client().await.unwrap();
    // The test's own questions about the log give up as quickly as the writer's.
    let mut js = jetstream::new(client.clone());
    js.set_timeout(Duration::from_secs(1));
    let (mut writer, stream) = log_writer(&client, Duration::from_secs(1), 3).await;
    let target = writer.target();
    let failed = writer.failed();
    const APPENDS: u64 = 3000;
    let appending = tokio::spawn(async move {
        let mut in_flight = VecDeque::new();
        let mut slowest = Duration::ZERO;
        for i in 1..=APPENDS {
            in_flight.push_back((writer.send(record(i)).await.unwrap(), Instant::now()));
            if in_flight.len() == 2 {
                slowest = slowest.max(confirm_oldest(&target, &mut in_flight).await);
            }
        }
        while !in_flight.is_empty() {
            slowest = slowest.max(confirm_oldest(&target, &mut in_flight).await);
        }
        slowest
    });
    // What the log's stream says of itself (None while it cannot answer).
    let log_info = || {
        let js = js.clone();
        async move { js.get_stream(LOG_STREAM).await.ok()?.get_info().await.ok() }
    };
    let stream_leader = || async { log_info().await?.cluster?.leader };
    let mut moves = 0;
    while !appending.is_finished() && moves < 3 {
        let before = wait_for(
            "the log's stream to have a leader",
            Duration::from_secs(10),
            stream_leader,
        )
        .await
        .unwrap();
        // Wait for appends to be flowing to this leader before moving it.
        wait_for(
            "appends to reach the log",
            Duration::from_secs(10),
            || async {
                let info = log_info().await?;
                (info.state.last_sequence > 100 * (moves + 1)).then_some(())
            },
        )
        .await
        .unwrap();
        client
            .request(
                format!("$JS.API.STREAM.LEADER.STEPDOWN.{LOG_STREAM}"),
                "".into(),
            )
            .await
            .unwrap();
        wait_for(
            "the log's stream to have a new leader",
            Duration::from_secs(10),
            || async {
                let now = stream_leader().await?;
                (now != before).then_some(())
            },
        )
        .await
        .unwrap();
        moves += 1;
    }
    let slowest = tokio::time::timeout(Duration::from_secs(60), appending)
        .await
        .expect("every append was confirmed")
        .unwrap();
    assert!(
        moves >= 1,
        "the log never changed leader during the appends"
    );
    assert!(!failed.is_cancelled());
    println!(
        "MEASURED {APPENDS} appends through {moves} leader moves, slowest confirmed in {slowest:?}"
    );
    let names = names_in_log(&stream).await;
    assert_eq!(names.len() as u64, APPENDS, "each append stored once");
    let distinct: HashSet<&String> = names.iter().collect();
    assert_eq!(distinct.len(), names.len(), "an append was stored twice");
}
