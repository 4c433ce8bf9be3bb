//! A replica's terms run in-process against a real nats-server, with the
//! balancer's picks made by the test: a term's start, its step-down when fenced,
//! and placement checking each pick against the state.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use chrono::Utc;
use clap::Parser;
use futures::TryStreamExt;
use shoal_protocol::{
    AssignRequest, ClientError, ErrorCode, LOG_STREAM, MEMBERS_BUCKET, Node, ServiceKind,
    ShoalClient, Strategy, Subjects,
};
use shoal_runtime::metrics::Metrics;
use shoal_testkit::NatsServer;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::append::Appender;
use crate::context::Ctx;
use crate::metrics::CoordinatorMetrics;
use crate::picker::{Pick, Picker, Waiting};
use crate::record::{EpochStart, Explanation, LogRecord};
use crate::{Config, log, open, term};

const DEADLINE: Duration = Duration::from_secs(15);

/// One replica, running its terms in this process; its picks come from the test.
struct Replica {
    ctx: Arc<Ctx>,
    picks: mpsc::UnboundedReceiver<Waiting>,
    shutdown: CancellationToken,
    background: CancellationToken,
    terms: JoinHandle<()>,
    lease_task: JoinHandle<()>,
}

impl Replica {
    async fn start(nats: &NatsServer, id: &str) -> Replica {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("shoal_coordinator=debug")
            .try_init();
        let url = nats.url();
        let cfg = Config::parse_from([
            "shoal-coordinator",
            "--nats-url",
            url.as_str(),
            "--instance-id",
            id,
            "--snapshot-interval",
            "0s",
        ]);
        let client = nats.client().await.unwrap();
        let (picker, picks) = Picker::scripted();
        let (shutdown, background) = (CancellationToken::new(), CancellationToken::new());
        let mut metrics = Metrics::new(ServiceKind::Coordinator, &client);
        let counted = CoordinatorMetrics::register(&mut metrics, false);
        let (ctx, lease_task) = open(cfg, client, |_| picker, counted, &shutdown, &background)
            .await
            .unwrap()
            .unwrap();
        let terms = tokio::spawn(term::run_terms(ctx.clone(), shutdown.clone()));
        Replica {
            ctx,
            picks,
            shutdown,
            background,
            terms,
            lease_task,
        }
    }

    /// Waits until this replica leads a term that serves writes.
    async fn serving(&self) {
        let mut view = self.ctx.lease.subscribe();
        let me = self.ctx.me.clone();
        let serving = view.wait_for(|v| {
            v.serving
                && v.held.is_some()
                && v.leader.as_ref().is_some_and(|l| l.coordinator_id == me)
        });
        tokio::time::timeout(DEADLINE, serving)
            .await
            .expect("the replica to lead and serve")
            .unwrap();
    }

    /// The next selection the leader asks the balancer for.
    async fn asked(&mut self) -> Waiting {
        tokio::time::timeout(DEADLINE, self.picks.recv())
            .await
            .expect("a selection to be asked for")
            .unwrap()
    }

    async fn stop(self) {
        self.ctx.lease.stop().await;
        self.shutdown.cancel();
        self.terms.await.unwrap();
        self.background.cancel();
        drop(self.ctx);
        let _ = tokio::time::timeout(Duration::from_secs(2), self.lease_task).await;
    }
}

fn epoch_start(leader: &str, epoch: u64) -> LogRecord {
    LogRecord::EpochStart(EpochStart {
        event_id: crate::record::new_event_id(),
        leader_id: leader.into(),
        epoch,
        at: Utc::now(),
    })
}

/// Every record in the log, decoded.
async fn records(client: &async_nats::Client) -> Vec<LogRecord> {
    let js = jetstream::new(client.clone());
    let stream = js.get_stream(LOG_STREAM).await.unwrap();
    let last = stream.get_info().await.unwrap().state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        let message = stream.get_raw_message(seq).await.unwrap();
        out.push(LogRecord::decode(&message.payload).unwrap());
    }
    out
}

/// Appends `record` at the log's end, as another writer would.
async fn append_at_end(client: &async_nats::Client, record: &LogRecord) -> u64 {
    let js = jetstream::new(client.clone());
    let subjects = Subjects::default();
    let stream = log::open_stream(&js, &subjects, 1).await.unwrap();
    let last = log::log_end(&stream).await.unwrap();
    let mut writer = Appender::new(js, stream, &subjects, last);
    writer.append_now(record, DEADLINE).await.unwrap()
}

/// Writes online nodes into the membership bucket, as the registry would.
async fn nodes(client: &async_nats::Client, nodes: &[(&str, u32)]) {
    let js = jetstream::new(client.clone());
    let kv = shoal_runtime::kv::open_or_create(&js, MEMBERS_BUCKET, 1)
        .await
        .unwrap();
    for (id, max_agents) in nodes {
        let node = Node {
            max_agents: *max_agents,
            manual: true,
            ..Node::example(id)
        };
        kv.put(*id, serde_json::to_vec(&node).unwrap().into())
            .await
            .unwrap();
    }
}

fn client(nats: &async_nats::Client) -> ShoalClient {
    ShoalClient::new(nats.clone(), Subjects::default())
        .with_timeout(Duration::from_secs(5))
        .with_retry_for(Duration::ZERO)
}

fn agent(name: &str, node: Option<&str>) -> AssignRequest {
    AssignRequest {
        agent_name: name.into(),
        node_id: node.map(str::to_string),
        ..AssignRequest::default()
    }
}

fn pick(node: &str) -> Pick {
    Pick {
        node_id: node.into(),
        why: Explanation {
            strategy: Strategy::LeastLoaded,
            chosen: node.into(),
            candidates: Vec::new(),
        },
    }
}

#[tokio::test]
async fn a_term_starts_one_past_the_last_term_in_the_log() {
    let nats = NatsServer::start().await.unwrap();
    let c = nats.client().await.unwrap();
    append_at_end(&c, &epoch_start("earlier", 4)).await;
    let replica = Replica::start(&nats, "c1").await;
    replica.serving().await;
    let log = records(&c).await;
    assert_eq!(log.len(), 2, "{log:?}");
    match &log[1] {
        LogRecord::EpochStart(start) => {
            assert_eq!(start.epoch, 5);
            assert_eq!(start.leader_id, "c1");
        }
        other => panic!("expected c1's epoch-start, found {other:?}"),
    }
    replica.stop().await;
}

#[tokio::test]
async fn a_fenced_term_steps_down_writes_nothing_more_and_says_not_leader() {
    let nats = NatsServer::start().await.unwrap();
    let c = nats.client().await.unwrap();
    nodes(&c, &[("n1", 100)]).await;
    let replica = Replica::start(&nats, "c1").await;
    replica.serving().await;
    let shoal = client(&c);
    shoal.assign(&agent("before", Some("n1"))).await.unwrap();
    // Another writer starts a newer term behind the leader's back.
    let usurped_at = append_at_end(&c, &epoch_start("usurper", 99)).await;
    let refused = shoal.assign(&agent("after", Some("n1"))).await.unwrap_err();
    assert!(
        matches!(&refused, ClientError::Service(e) if e.code == ErrorCode::NotLeader),
        "{refused:?}"
    );
    // The lease is given up, and nothing more of c1's reaches the log.
    let mut view = replica.ctx.lease.subscribe();
    tokio::time::timeout(DEADLINE, view.wait_for(|v| v.held.is_none()))
        .await
        .expect("the fenced leader to give the lease up")
        .unwrap();
    let log = records(&c).await;
    assert_eq!(log.len() as u64, usurped_at, "{log:?}");
    // Its replica, fed by its own appends while it led, follows the log again (alone,
    // it may then lead the term after the usurper's).
    shoal_testkit::wait_for(
        "the replica to read the usurper's term",
        DEADLINE,
        || async { (replica.ctx.replica.read(|s| s.epoch()) >= 99).then_some(()) },
    )
    .await
    .unwrap();
    replica.stop().await;
}

#[tokio::test]
async fn a_leader_applies_its_own_records_without_reading_them_back() {
    let nats = NatsServer::start().await.unwrap();
    let c = nats.client().await.unwrap();
    nodes(&c, &[("n1", 1000)]).await;
    let replica = Replica::start(&nats, "c1").await;
    replica.serving().await;
    let shoal = client(&c);
    for i in 0..50 {
        let name = format!("agent-{i}");
        shoal.assign(&agent(&name, Some("n1"))).await.unwrap();
    }
    let last = log::log_end(&replica.ctx.stream).await.unwrap();
    shoal_testkit::wait_for(
        "the leader's replica to hold every write",
        DEADLINE,
        || async {
            let held = replica.ctx.replica.read(|s| (s.last_seq(), s.len()));
            (held == (last, 50)).then_some(())
        },
    )
    .await
    .unwrap();
    // No consumer delivered the leader's records: its tail let go of its consumer
    // when the term began.
    let consumers: Vec<_> = replica.ctx.stream.consumers().try_collect().await.unwrap();
    for info in &consumers {
        assert!(
            info.delivered.stream_sequence < last,
            "a consumer read the log to its end: {info:?}"
        );
    }
    replica.stop().await;
}

#[tokio::test]
async fn a_pick_the_state_refuses_is_asked_again_without_that_node() {
    let nats = NatsServer::start().await.unwrap();
    let c = nats.client().await.unwrap();
    nodes(&c, &[("full", 1), ("free", 10)]).await;
    let mut replica = Replica::start(&nats, "c1").await;
    replica.serving().await;
    let shoal = client(&c);
    shoal
        .assign(&agent("resident", Some("full")))
        .await
        .unwrap();

    // The balancer picks the full node first; the leader asks again without it.
    let assigning = {
        let shoal = shoal.clone();
        tokio::spawn(async move { shoal.assign(&agent("a", None)).await })
    };
    let (first, answer) = replica.asked().await;
    assert_eq!(first.exclude, Vec::<String>::new());
    answer.send(Ok(pick("full"))).unwrap();
    let (second, answer) = replica.asked().await;
    assert_eq!(second.exclude, vec!["full".to_string()]);
    answer.send(Ok(pick("free"))).unwrap();
    let placed = assigning.await.unwrap().unwrap();
    assert_eq!(placed.node_id, "free");

    // A balancer that keeps picking full nodes gets a bounded number of tries.
    let assigning = {
        let shoal = shoal.clone();
        tokio::spawn(async move { shoal.assign(&agent("b", None)).await })
    };
    for _ in 0..crate::writes::MAX_PICKS {
        let (_, answer) = replica.asked().await;
        answer.send(Ok(pick("full"))).unwrap();
    }
    let refused = assigning.await.unwrap().unwrap_err();
    assert!(
        matches!(&refused, ClientError::Service(e) if e.code == ErrorCode::NoCapacity),
        "{refused:?}"
    );
    assert!(replica.picks.try_recv().is_err(), "asked once too often");
    replica.stop().await;
}
