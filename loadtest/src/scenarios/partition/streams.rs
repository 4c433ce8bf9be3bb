//! JetStream's streams as the partition scenario follows them through a cut: who
//! leads each (and since when), who elects anew, and when every replica is
//! current again. Read through the run's own client, on the majority's side.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use futures::TryStreamExt;
use shoal_testkit::wait_for;

use crate::stack::Stack;

const PATIENCE: Duration = Duration::from_secs(60);

/// A stream's leader and since when: a re-election of the same server shows as
/// a new `since`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Term {
    pub leader: String,
    since: String,
}

/// Every stream by name, with its info where it could be read (not while the
/// stream is between leaders); `None` if JetStream could not list them.
async fn infos(js: &jetstream::Context) -> Option<Vec<(String, Option<stream::Info>)>> {
    let names: Vec<String> = js.stream_names().try_collect().await.ok()?;
    let mut infos = Vec::with_capacity(names.len());
    for name in names {
        let info = match js.get_stream(&name).await {
            Ok(mut found) => found.info().await.ok().cloned(),
            Err(_) => None,
        };
        infos.push((name, info));
    }
    Some(infos)
}

/// The leadership an info shows, if the stream has a leader.
fn term(info: &Option<stream::Info>) -> Option<Term> {
    let cluster = info.as_ref()?.cluster.as_ref()?;
    let leader = cluster.leader.clone().filter(|l| !l.is_empty())?;
    Some(Term {
        leader,
        since: format!("{:?}", cluster.leader_since),
    })
}

/// Every stream's leadership (streams without a leader left out), asked again
/// while JetStream is between leaders.
pub async fn leaders(stack: &Stack) -> anyhow::Result<BTreeMap<String, Term>> {
    let js = quick_js(stack);
    let infos = wait_for("JetStream to describe its streams", PATIENCE, || infos(&js)).await?;
    Ok(infos
        .iter()
        .filter_map(|(name, info)| Some((name.clone(), term(info)?)))
        .collect())
}

/// The streams `server` leads.
pub async fn led_by(stack: &Stack, server: &str) -> anyhow::Result<Vec<String>> {
    Ok(leaders(stack)
        .await?
        .into_iter()
        .filter(|(_, term)| term.leader == server)
        .map(|(stream, _)| stream)
        .collect())
}

/// How long from `at` until every one of `streams` has a leader other than
/// `server` (zero for none).
pub async fn elected(
    stack: &Stack,
    streams: &[String],
    server: &str,
    at: Instant,
) -> anyhow::Result<Duration> {
    if streams.is_empty() {
        return Ok(Duration::ZERO);
    }
    let js = quick_js(stack);
    wait_for(
        &format!("the majority to elect leaders for {streams:?}"),
        PATIENCE,
        || async {
            let infos = infos(&js).await?;
            let moved = streams.iter().all(|stream| {
                infos
                    .iter()
                    .find(|(name, _)| name == stream)
                    .and_then(|(_, info)| term(info))
                    .is_some_and(|t| t.leader != server)
            });
            moved.then(|| at.elapsed())
        },
    )
    .await
}

/// Waits until every stream's leader has all its other replicas current: s3 is
/// back, and JetStream done with the elections its return set off.
pub async fn wait_current(stack: &Stack) -> anyhow::Result<()> {
    let js = quick_js(stack);
    wait_for(
        "every replica of every stream to be current",
        PATIENCE,
        || async {
            let whole = infos(&js).await?.iter().all(|(_, info)| {
                info.as_ref().is_some_and(|info| {
                    info.cluster.as_ref().is_some_and(|c| {
                        c.replicas.len() + 1 == info.config.num_replicas
                            && c.replicas.iter().all(|r| r.current && !r.offline)
                    })
                })
            });
            whole.then_some(())
        },
    )
    .await
}

/// JetStream through the run's client, asking again after 1 s rather than 5.
fn quick_js(stack: &Stack) -> jetstream::Context {
    let mut js = jetstream::new(stack.client.nats().clone());
    js.set_timeout(Duration::from_secs(1));
    js
}
