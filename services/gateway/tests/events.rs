//! `/api/cluster/events` (Server-Sent Events) against a real control plane: node
//! events and assignment events arrive as they happen, and the gateway's NATS
//! subscriptions end when the client goes.

mod common;

use std::time::Duration;

use common::{LONG, Stack};
use futures::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};
use shoal_testkit::{NatsServer, wait_for};

/// Reads Server-Sent Events from a response body.
struct Events {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
}

impl Events {
    fn new(response: reqwest::Response) -> Events {
        Events {
            body: response.bytes_stream().boxed(),
            buffer: String::new(),
        }
    }

    /// The next event: its `event:` and its `data:` as JSON (comments skipped).
    async fn next(&mut self) -> Option<(String, Value)> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                let (mut event, mut data) = (String::new(), String::new());
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if event.is_empty() {
                    continue;
                }
                return Some((event, serde_json::from_str(&data).ok()?));
            }
            let chunk = self.body.next().await?.ok()?;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Waits for an event of `kind` whose data matches `wanted`; returns it.
    async fn expect(&mut self, kind: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        let found = tokio::time::timeout(LONG, async {
            while let Some((event, data)) = self.next().await {
                if event == kind && wanted(&data) {
                    return Some(data);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(data)) => data,
            Ok(None) => panic!("the event stream ended before a {kind} event came"),
            Err(_) => panic!("no matching {kind} event within {LONG:?}"),
        }
    }
}

/// How many of the gateway's NATS subscriptions are on `subject`.
async fn gateway_subscriptions(nats: &NatsServer, subject: &str) -> Option<usize> {
    let connz = nats.monitor_json("/connz?subs=1").await.ok()?;
    let gateway = connz["connections"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == "shoal-gateway:gateway-1")?;
    Some(
        gateway["subscriptions_list"]
            .as_array()
            .map_or(0, |subs| subs.iter().filter(|s| *s == subject).count()),
    )
}

#[tokio::test]
async fn node_and_assignment_events_stream_until_the_client_goes() {
    let stack = Stack::start().await.unwrap();
    let register = |id: &str| json!({ "id": id, "hostname": id, "max_agents": 10 });
    stack
        .ok(Method::POST, "/api/cluster/nodes", Some(&register("n1")))
        .await
        .unwrap();

    let response = stack
        .http
        .get(stack.url("/api/cluster/events"))
        .timeout(Duration::from_secs(600))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut events = Events::new(response);
    let subject = "shoal.registry.events.*";
    assert_eq!(gateway_subscriptions(&stack.nats, subject).await, Some(1));

    stack
        .ok(Method::POST, "/api/cluster/nodes", Some(&register("n2")))
        .await
        .unwrap();
    let joined = events
        .expect("registry", |e| {
            e["node_id"] == "n2" && e["event"] == "joined"
        })
        .await;
    assert_eq!(joined["node"]["max_agents"], 10, "{joined}");

    stack
        .ok(Method::POST, "/api/cluster/nodes/n1/drain", None)
        .await
        .unwrap();
    let draining = events
        .expect("registry", |e| {
            e["node_id"] == "n1" && e["event"] == "draining"
        })
        .await;
    assert_eq!(draining["status"], "draining", "{draining}");

    let placed = stack
        .ok(
            Method::POST,
            "/api/cluster/assignments",
            Some(&json!({ "agent_name": "a1" })),
        )
        .await
        .unwrap();
    assert_eq!(
        placed["node_id"], "n2",
        "the drained node took it: {placed}"
    );
    let assigned = events
        .expect("coordinator", |e| e["agent_name"] == "a1")
        .await;
    assert_eq!(assigned["event"], "assigned", "{assigned}");
    assert_eq!(assigned["node_id"], "n2", "{assigned}");

    // The client goes: so do the gateway's subscriptions.
    drop(events);
    wait_for(
        "the gateway to drop its event subscriptions",
        LONG,
        || async { (gateway_subscriptions(&stack.nats, subject).await? == 0).then_some(()) },
    )
    .await
    .unwrap();
}

/// A stream that never ends must not hold a stopping gateway: on SIGTERM the
/// event stream ends and the gateway exits 0 within its shutdown grace.
#[tokio::test]
async fn a_stopping_gateway_ends_the_event_stream_and_exits_cleanly() {
    let mut stack = Stack::start().await.unwrap();
    let response = stack
        .http
        .get(stack.url("/api/cluster/events"))
        .timeout(Duration::from_secs(600))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut events = Events::new(response);
    stack.gateway.terminate().unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(5), events.next()).await;
    assert!(
        matches!(ended, Ok(None)),
        "the event stream did not end when the gateway stopped: {ended:?}"
    );
    let status = stack
        .gateway
        .wait_exit(Duration::from_secs(5))
        .await
        .unwrap();
    assert!(status.success(), "the gateway exited with {status}");
}
