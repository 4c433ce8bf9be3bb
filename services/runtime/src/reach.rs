//! Whether this process reaches the NATS cluster's majority, and leaving a
//! nats-server that does not. A server cut off from its peers keeps its own
//! clients connected: nothing tells them, and they would sit in the minority for
//! the whole cut (a balancer there answers nobody, a registry hears only the nodes
//! on its side and can write nothing).
//!
//! The probe asks for the info of a replicated stream the service uses anyway (its
//! KV bucket). Only the stream's Raft leader answers, and it says when it last
//! heard each peer, so an answer from a leader that has lost its quorum (it keeps
//! believing it leads for up to 10 s) is told apart from a live one; no answer, an
//! error or no leader at all are the same verdict.

use std::time::{Duration, Instant};

use async_nats::Client;
use async_nats::connection::State;
use async_nats::jetstream::{self, stream::ClusterInfo};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// How often the attached server is probed.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);
/// How long a probe waits for the stream's leader.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// A peer the leader has not heard from for this long does not count towards its
/// quorum (Raft heartbeats every second).
pub const PEER_STALE: Duration = Duration::from_secs(3);
/// Failed probes in a row before the server is left: one slow answer under load is
/// no reason to drop a connection.
pub const PATIENCE: u32 = 3;
/// The pause after leaving a server grows from this while every server fails the
/// probe (the whole cluster without a majority: hopping does not help).
const FIRST_COOLDOWN: Duration = Duration::from_secs(2);
const MAX_COOLDOWN: Duration = Duration::from_secs(30);

/// Why the cluster's majority was not reached.
#[derive(Debug, thiserror::Error)]
pub enum Unreached {
    #[error("no answer about stream {stream} within {timeout:?}")]
    Timeout { stream: String, timeout: Duration },
    #[error("asking for stream {stream}'s info")]
    Request {
        stream: String,
        #[source]
        source: jetstream::context::GetStreamError,
    },
    #[error("stream {stream} has no leader")]
    Leaderless { stream: String },
    #[error("the leader of stream {stream} ({leader}) hears {heard} of its {replicas} replicas")]
    Minority {
        stream: String,
        leader: String,
        heard: usize,
        replicas: usize,
    },
}

/// Asks for `stream`'s info and judges the answer ([`majority`]).
pub async fn probe(js: &jetstream::Context, stream: &str) -> Result<(), Unreached> {
    let info = match tokio::time::timeout(PROBE_TIMEOUT, js.get_stream(stream)).await {
        Err(_) => {
            return Err(Unreached::Timeout {
                stream: stream.to_string(),
                timeout: PROBE_TIMEOUT,
            });
        }
        Ok(Err(source)) => {
            return Err(Unreached::Request {
                stream: stream.to_string(),
                source,
            });
        }
        Ok(Ok(found)) => found.cached_info().clone(),
    };
    majority(stream, info.cluster.as_ref())
}

/// Whether a stream's cluster info comes from a leader that hears a majority of
/// its replicas (itself included). A stream without cluster info or replicas (a
/// single server) always does.
pub fn majority(stream: &str, cluster: Option<&ClusterInfo>) -> Result<(), Unreached> {
    let Some(cluster) = cluster else {
        return Ok(());
    };
    let Some(leader) = cluster.leader.as_deref().filter(|l| !l.is_empty()) else {
        return Err(Unreached::Leaderless {
            stream: stream.to_string(),
        });
    };
    let replicas = cluster.replicas.len() + 1;
    let heard = 1 + cluster
        .replicas
        .iter()
        .filter(|p| !p.offline && p.active < PEER_STALE)
        .count();
    if heard * 2 > replicas {
        Ok(())
    } else {
        Err(Unreached::Minority {
            stream: stream.to_string(),
            leader: leader.to_string(),
            heard,
            replicas,
        })
    }
}

/// Probes the cluster through `client`'s server every [`PROBE_EVERY`] until
/// `shutdown`; after [`PATIENCE`] failures in a row, while connected and with
/// another server to go to, forces a reconnect (the client picks among its other
/// servers at random, so a second round may be needed). `stream` is a replicated
/// stream the service may ask about.
pub async fn keep_to_majority(client: Client, stream: String, shutdown: CancellationToken) {
    let js = jetstream::new(client.clone());
    let mut ticker = tokio::time::interval(PROBE_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures = 0u32;
    let mut cooldown = FIRST_COOLDOWN;
    let mut left_at: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if client.connection_state() != State::Connected {
            failures = 0;
            continue;
        }
        let verdict = tokio::select! {
            _ = shutdown.cancelled() => return,
            verdict = probe(&js, &stream) => verdict,
        };
        let error = match verdict {
            Ok(()) => {
                if failures >= PATIENCE || left_at.is_some() {
                    info!(server = %client.server_info().server_name, "the cluster's majority is reachable again");
                }
                failures = 0;
                left_at = None;
                cooldown = FIRST_COOLDOWN;
                continue;
            }
            Err(e) => e,
        };
        failures += 1;
        debug!(error = %error, failures, "majority probe failed");
        if failures < PATIENCE || left_at.is_some_and(|at| at.elapsed() < cooldown) {
            continue;
        }
        let others = client.server_pool().await.map_or(0, |pool| pool.len());
        if others < 2 {
            continue;
        }
        warn!(
            server = %client.server_info().server_name,
            error = %error,
            "the attached nats-server does not reach the cluster's majority: moving to another server"
        );
        if left_at.is_some() {
            cooldown = (cooldown * 2).min(MAX_COOLDOWN);
        }
        left_at = Some(Instant::now());
        failures = 0;
        if client.force_reconnect().await.is_err() {
            // The client is closed: the service is going away.
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_nats::jetstream::stream::PeerInfo;

    fn peer(name: &str, active_ms: u64, offline: bool) -> PeerInfo {
        PeerInfo {
            name: name.into(),
            current: true,
            active: Duration::from_millis(active_ms),
            offline,
            lag: None,
        }
    }

    fn cluster(leader: Option<&str>, replicas: Vec<PeerInfo>) -> ClusterInfo {
        serde_json::from_value(serde_json::json!({
            "name": "c",
            "leader": leader,
        }))
        .map(|mut c: ClusterInfo| {
            c.replicas = replicas;
            c
        })
        .unwrap()
    }

    #[test]
    fn a_leader_hearing_its_peers_is_the_majority() {
        let c = cluster(
            Some("n1"),
            vec![peer("n2", 200, false), peer("n3", 900, false)],
        );
        assert!(majority("S", Some(&c)).is_ok());
        // One peer gone: two of three is still a majority.
        let c = cluster(
            Some("n1"),
            vec![peer("n2", 200, false), peer("n3", 0, true)],
        );
        assert!(majority("S", Some(&c)).is_ok());
    }

    #[test]
    fn a_leader_that_lost_its_peers_is_not() {
        let c = cluster(
            Some("n3"),
            vec![peer("n1", 5_000, false), peer("n2", 4_000, false)],
        );
        let e = majority("S", Some(&c)).unwrap_err();
        assert!(
            matches!(
                e,
                Unreached::Minority {
                    heard: 1,
                    replicas: 3,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("hears 1 of its 3 replicas"), "{e}");
    }

    #[test]
    fn no_leader_is_not_and_a_single_server_always_is() {
        let c = cluster(None, vec![peer("n1", 100, false)]);
        assert!(matches!(
            majority("S", Some(&c)),
            Err(Unreached::Leaderless { .. })
        ));
        assert!(majority("S", None).is_ok());
        assert!(majority("S", Some(&cluster(Some("n1"), vec![]))).is_ok());
    }
}
