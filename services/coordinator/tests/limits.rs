//! Requests at every documented limit, in numbers whose messages together pass NATS'
//! max payload: the control plane splits, pages and keeps serving. Nodes carry 64
//! labels of the longest key and value, 64 services and 64 features; agents ask for
//! all 64 labels.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use shoal_protocol::validate::{MAX_LABEL_KEY_LEN, MAX_LABEL_VALUE_LEN, MAX_LABELS, MAX_NAMES};
use shoal_protocol::{
    AssignRequest, ClientError, ListAssignmentsRequest, ListNodesRequest, Node, size,
};
use shoal_testkit::{NatsServer, wait_for};

fn maximal_labels() -> BTreeMap<String, String> {
    (0..MAX_LABELS)
        .map(|i| {
            (
                format!("{i:0>width$}", width = MAX_LABEL_KEY_LEN),
                format!("{i:v>width$}", width = MAX_LABEL_VALUE_LEN),
            )
        })
        .collect()
}

fn maximal_node(id: &str, max_agents: u32) -> Node {
    let mut n = node(id, max_agents);
    n.labels = maximal_labels();
    n.services = (0..MAX_NAMES).map(|i| format!("{i:s>128}")).collect();
    n.features = (0..MAX_NAMES).map(|i| format!("{i:f>128}")).collect();
    n
}

fn maximal_assign(agent: &str) -> AssignRequest {
    AssignRequest {
        agent_name: format!("{agent:a>128}"),
        labels: maximal_labels(),
        ..Default::default()
    }
}

#[tokio::test]
async fn maximal_requests_are_served_split_and_paged_never_dropped() {
    let nats = NatsServer::start().await.unwrap();
    let client = nats.client().await.unwrap();
    let max_payload = client.server_info().max_payload;
    let kv = members(&client).await.unwrap();
    put_node(&kv, &maximal_node("big", 50)).await.unwrap();
    for i in 0..39 {
        put_node(&kv, &maximal_node(&format!("n{i:02}"), 10))
            .await
            .unwrap();
    }
    let url = nats.url();
    let _services = registry_and_balancer(&url);
    let c1 = coordinator(&url, "c1", &[]).unwrap();
    let shoal = shoal(&client).with_timeout(Duration::from_secs(10));
    let leader = wait_leader(&shoal, &["c1"], LONG).await.unwrap();
    wait_for("the balancer to see 40 nodes", LONG, || async {
        (shoal.balancer_stats().await.ok()?.nodes == 40).then_some(())
    })
    .await
    .unwrap();

    // 40 maximal nodes are more than one message: the list comes in pages.
    let page = wait_for("the registry to list every node", LONG, || async {
        let page = shoal.list_nodes(&ListNodesRequest::default()).await.ok()?;
        page.next.is_some().then_some(page)
    })
    .await
    .unwrap();
    assert!(page.count < 40, "{} nodes in one page", page.count);
    assert!(serde_json::to_vec(&page).unwrap().len() <= max_payload);
    let all = shoal
        .list_all_nodes(&ListNodesRequest::default())
        .await
        .unwrap();
    assert_eq!(all.len(), 40);

    // 64 maximal assigns at once: every one acknowledged, none refused as
    // not_leader, though their changes and picks add up to more than a message.
    let started = Instant::now();
    let results: Vec<Result<_, ClientError>> = futures::stream::iter(0..64)
        .map(|i| {
            let shoal = shoal.clone();
            async move { shoal.assign(&maximal_assign(&format!("{i}"))).await }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let refused: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(ToString::to_string))
        .collect();
    assert!(refused.is_empty(), "{refused:?}");
    println!(
        "MEASURED 64 maximal assigns ({} bytes each) acknowledged in {:?}",
        size::encoded_len(&maximal_assign("0")),
        started.elapsed()
    );
    assert_eq!(
        wait_leader(&shoal, &["c1"], LONG).await.unwrap(),
        leader,
        "the leader kept its term"
    );
    let records = log_records(&client).await.unwrap();
    assert!(records.len() > 2, "the changes went out in several records");
    let page = shoal
        .list_assignments(&ListAssignmentsRequest::default())
        .await
        .unwrap();
    assert!(
        page.next.is_some() && page.count < 64,
        "{} in one page",
        page.count
    );
    let listed = shoal
        .list_all_assignments(&ListAssignmentsRequest::default())
        .await
        .unwrap();
    assert_eq!(listed.len(), 64);

    // 40 more maximal agents on one node (it has room for 50), then drained off it.
    for i in 0..40 {
        let mut req = maximal_assign(&format!("pinned-{i}"));
        req.node_id = Some("big".into());
        wait_for("a pin to be accepted", LONG, || async {
            shoal.assign(&req).await.ok()
        })
        .await
        .unwrap();
    }
    let drained_at = Instant::now();
    shoal.drain_node("big").await.unwrap();
    wait_for("the drained node to be empty", LONG, || async {
        (on_node(&shoal, "big").await == 0).then_some(())
    })
    .await
    .unwrap();
    println!(
        "MEASURED 40 maximal agents drained in {:?}",
        drained_at.elapsed()
    );
    assert!(
        !c1.process.log().contains("max payload"),
        "the coordinator hit the max payload"
    );
}
