//! A wire fuzzer against a running control plane (registry, balancer, coordinator,
//! two announcers): malformed and mutated messages on every subject of the AsyncAPI
//! catalogue. Every request gets an error envelope within a deadline, no process dies,
//! and membership and assignments are what they were. Only messages the shared decode
//! step refuses are sent, so nothing valid can change the cluster meanwhile.
//!
//! Seeded and bounded in the suite; `SHOAL_FUZZ_CASES=100000` (and
//! `SHOAL_FUZZ_SEED=<n>`) for a longer run.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use shoal_protocol::catalogue::{Kind, Operation, catalogue};
use shoal_protocol::test_util::{decode_as, hostile_values, samples};
use shoal_protocol::{
    AssignRequest, ErrorEnvelope, ListAssignmentsRequest, ListNodesRequest, NodeEvent, NodeStatus,
    ShoalClient, Subjects,
};
use shoal_testkit::{NatsServer, ServiceProcess, binary, wait_for};

const DEADLINE: Duration = Duration::from_secs(30);
/// Every refused request is answered within this.
const REPLY_DEADLINE: Duration = Duration::from_secs(2);
const IN_FLIGHT: usize = 16;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn spawn(url: &str, bin: &str, name: &str, extra: &[(&str, &str)]) -> Result<ServiceProcess> {
    let mut envs = vec![
        ("SHOAL_NATS_URL".to_string(), url.to_string()),
        ("SHOAL_INSTANCE_ID".to_string(), name.to_string()),
    ];
    envs.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    ServiceProcess::spawn(name, &binary(bin)?, &[], &envs)
}

/// One message to send.
struct Case {
    subject: String,
    payload: Vec<u8>,
    request: bool,
}

/// A message the decode step refuses for `name` (or any struct, when `name` has no
/// decoder here): a mutated valid sample, a non-object, broken JSON, bad UTF-8, or
/// an oversized one.
fn spoiled(rng: &mut StdRng, name: &str, oversize: bool) -> Vec<u8> {
    let sample = samples()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v);
    loop {
        let payload = match (rng.random_range(0..6), &sample) {
            (0, Some(sample)) => {
                let mut message = sample.clone();
                let object = message.as_object_mut().expect("samples are objects");
                let keys: Vec<String> = object.keys().cloned().collect();
                if keys.is_empty() || rng.random_bool(0.3) {
                    object.insert("zz".into(), hostile(rng));
                } else {
                    let key = &keys[rng.random_range(0..keys.len())];
                    if rng.random_bool(0.3) {
                        object.remove(key);
                    } else {
                        object.insert(key.clone(), hostile(rng));
                    }
                }
                serde_json::to_vec(&message).unwrap()
            }
            (1, Some(sample)) => {
                let full = serde_json::to_vec(sample).unwrap();
                full[..rng.random_range(1..full.len())].to_vec()
            }
            (2, Some(sample)) if oversize => {
                let mut message = sample.clone();
                message["padding"] = json!("p".repeat(70 * 1024));
                serde_json::to_vec(&message).unwrap()
            }
            (3, _) => {
                let mut bytes = br#"{"id":"n1","x":""#.to_vec();
                bytes.extend((0..rng.random_range(1..8)).map(|_| rng.random_range(0x80..=0xff)));
                bytes.extend_from_slice(br#""}"#);
                bytes
            }
            (4, _) => serde_json::to_vec(&json!([hostile(rng), "n1", 3])).unwrap(),
            _ => (0..rng.random_range(1..120))
                .map(|_| rng.random::<u8>())
                .collect(),
        };
        // Only what the shared decode step refuses (and never an empty payload,
        // which means `{}`); events have no decoder here and get only garbage.
        let refused = match &sample {
            Some(_) => decode_as(name, &payload).is_err(),
            None => serde_json::from_slice::<serde_json::Map<String, Value>>(&payload).is_err(),
        };
        if refused && !payload.iter().all(u8::is_ascii_whitespace) {
            return payload;
        }
    }
}

fn hostile(rng: &mut StdRng) -> Value {
    let values = hostile_values();
    values[rng.random_range(0..values.len())].clone()
}

fn cases(ops: &[Operation], count: usize, seed: u64) -> Vec<Case> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..count)
        .map(|_| {
            let op = &ops[rng.random_range(0..ops.len())];
            let node = ["node-1", "node-2", "ghost-node"][rng.random_range(0..3)];
            let subject = op
                .subject
                .replace("{node_id}", node)
                .replace("{agent_name}", "fuzz-agent");
            // select.batch takes up to the max payload, so it is not sent oversized.
            let oversize = !op.subject.ends_with("select.batch");
            Case {
                payload: spoiled(&mut rng, op.payload, oversize),
                request: op.kind == Kind::Request,
                subject,
            }
        })
        .collect()
}

/// Membership and assignments, without what changes by itself (metrics, times).
async fn state(shoal: &ShoalClient) -> Option<(BTreeMap<String, Value>, Vec<Value>)> {
    let nodes = shoal
        .list_all_nodes(&ListNodesRequest::default())
        .await
        .ok()?;
    let nodes = nodes
        .into_iter()
        .map(|n| {
            let stable = json!({"status": n.status, "draining": n.draining,
                "labels": n.labels, "services": n.services, "max_agents": n.max_agents});
            (n.id, stable)
        })
        .collect();
    let assignments = shoal
        .list_all_assignments(&ListAssignmentsRequest::default())
        .await
        .ok()?;
    let assignments = assignments
        .into_iter()
        .map(|a| json!([a.agent_name, a.node_id, a.status, a.epoch]))
        .collect();
    Some((nodes, assignments))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_on_every_subject_get_envelopes_and_change_nothing() -> Result<()> {
    let nats = NatsServer::start().await?;
    let url = nats.url();
    let mut processes = vec![
        spawn(&url, "shoal-registry", "registry", &[])?,
        spawn(&url, "shoal-balancer", "balancer", &[])?,
        spawn(&url, "shoal-coordinator", "coordinator-1", &[])?,
    ];
    for id in ["node-1", "node-2"] {
        processes.push(spawn(
            &url,
            "shoal-announcer",
            id,
            &[("SHOAL_NODE_ID", id), ("SHOAL_NODE_MAX_AGENTS", "10")],
        )?);
    }
    let client = nats.client().await?;
    let shoal = ShoalClient::new(client.clone(), Subjects::default())
        .with_timeout(Duration::from_secs(2))
        .with_retry_for(Duration::from_secs(10));
    for i in 0..4 {
        let req = AssignRequest {
            agent_name: format!("agent-{i}"),
            ..Default::default()
        };
        wait_for("an assign to be accepted", DEADLINE, || async {
            shoal.assign(&req).await.ok()
        })
        .await?;
    }
    let before = wait_for("the cluster to settle", DEADLINE, || async {
        let s = state(&shoal).await?;
        let online =
            s.0.values()
                .filter(|n| n["status"] == json!(NodeStatus::Online));
        (online.count() == 2 && s.1.len() == 4).then_some(s)
    })
    .await?;

    // Any node event during the run would mean junk disturbed membership.
    let mut node_events = client
        .subscribe(Subjects::default().registry_events_all())
        .await?;
    client.flush().await?;
    let count = env_or("SHOAL_FUZZ_CASES", 1500usize);
    let seed = env_or("SHOAL_FUZZ_SEED", 20261130u64);
    let ops = catalogue(&Subjects::default());
    let started = Instant::now();
    let all = cases(&ops, count, seed);
    let failures: Vec<String> = futures::stream::iter(all)
        .map(|case| {
            let client = client.clone();
            async move {
                if !case.request {
                    return client
                        .publish(case.subject.clone(), case.payload.into())
                        .await
                        .err()
                        .map(|e| format!("{}: publish failed: {e}", case.subject));
                }
                let shown = String::from_utf8_lossy(&case.payload[..case.payload.len().min(80)])
                    .into_owned();
                let reply = tokio::time::timeout(
                    REPLY_DEADLINE,
                    client.request(case.subject.clone(), case.payload.into()),
                )
                .await;
                match reply {
                    Ok(Ok(m)) => match serde_json::from_slice::<ErrorEnvelope>(&m.payload) {
                        Ok(e) if e.error.code.as_str() == "bad_request" => None,
                        Ok(e) => Some(format!("{} {shown:?}: {:?}", case.subject, e.error)),
                        Err(_) => Some(format!(
                            "{} {shown:?}: not an envelope: {}",
                            case.subject,
                            String::from_utf8_lossy(&m.payload)
                        )),
                    },
                    Ok(Err(e)) => Some(format!("{} {shown:?}: {e}", case.subject)),
                    Err(_) => Some(format!(
                        "{} {shown:?}: no reply within {REPLY_DEADLINE:?}",
                        case.subject
                    )),
                }
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .filter_map(|f| async move { f })
        .collect()
        .await;
    client.flush().await?;
    let took = started.elapsed();
    println!(
        "MEASURED {count} fuzz cases (seed {seed}) over {} subjects made and sent in {took:?}",
        ops.len()
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    for p in &mut processes {
        assert!(p.is_running(), "{} died", p.name());
    }
    // Nothing sent was valid: the cluster is as it was (asked until the services
    // have worked through what is still queued).
    let settled = Instant::now();
    let after = wait_for("the cluster to be as it was", DEADLINE, || async {
        state(&shoal).await.filter(|s| *s == before)
    })
    .await;
    println!(
        "MEASURED state as before {:?} after the last case",
        settled.elapsed()
    );
    assert!(after.is_ok(), "{before:?} became {:?}", state(&shoal).await);
    // The registry's own events (the fuzzer's junk on the same subjects does not
    // decode as one): none, so no node was even suspected meanwhile.
    let mut seen = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(1), node_events.next()).await
    {
        if let Ok(e) = serde_json::from_slice::<NodeEvent>(&m.payload) {
            seen.push(e);
        }
    }
    assert!(seen.is_empty(), "membership moved during the run: {seen:?}");
    Ok(())
}
