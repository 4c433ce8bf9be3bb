//! Bad requests get clear error envelopes (with the NATS service error headers), a
//! selection that cannot be served says why, and nothing crashes.

mod common;

use std::time::Duration;

use anyhow::{Context, Result};
use async_nats::service::NATS_SERVICE_ERROR_CODE;
use common::{Cluster, DEADLINE, put_node, ten_nodes};
use serde_json::Value;
use shoal_balancer::bench::synthetic_node;
use shoal_protocol::{Endpoint, SelectRequest, Strategy, Subjects};
use shoal_testkit::wait_for;

/// Sends raw bytes to a balancer endpoint; returns the error envelope's code,
/// message and details, checking the NATS error headers agree.
async fn error_of(
    cluster: &Cluster,
    endpoint: Endpoint,
    payload: &[u8],
) -> Result<(String, String, Value)> {
    let subject = Subjects::default().endpoint(endpoint);
    let reply = tokio::time::timeout(
        Duration::from_secs(5),
        cluster
            .client
            .request(subject.clone(), payload.to_vec().into()),
    )
    .await
    .context("no reply")??;
    let body: Value = serde_json::from_slice(&reply.payload).with_context(|| {
        format!(
            "reply is not JSON: {:?}",
            String::from_utf8_lossy(&reply.payload)
        )
    })?;
    let error = body
        .get("error")
        .with_context(|| format!("not an error envelope: {body}"))?;
    let headers = reply.headers.context("error reply without headers")?;
    assert!(
        headers.get(NATS_SERVICE_ERROR_CODE).is_some(),
        "{subject}: no service error header"
    );
    Ok((
        error["code"].as_str().unwrap_or_default().to_string(),
        error["message"].as_str().unwrap_or_default().to_string(),
        error["details"].clone(),
    ))
}

#[tokio::test]
async fn bad_requests_get_clear_errors_and_nothing_crashes() -> Result<()> {
    let mut cluster = Cluster::start(1, &ten_nodes()).await?;

    // Unknown strategy: bad_request naming the field and every valid strategy.
    for endpoint in [Endpoint::BalancerStrategySet, Endpoint::BalancerSelect] {
        let (code, message, _) = error_of(&cluster, endpoint, br#"{"strategy":"fastest"}"#).await?;
        assert_eq!(code, "bad_request");
        assert!(
            message.contains("`strategy`") && message.contains("fastest"),
            "{message}"
        );
        for s in Strategy::ALL {
            assert!(message.contains(s.as_str()), "{message} lacks {s}");
        }
        println!("{endpoint:?} unknown strategy -> {message}");
    }
    assert_eq!(
        cluster.strategy_of(&cluster.ids[0]).await?,
        Strategy::LeastLoaded,
        "unchanged"
    );

    // Wrong types and malformed JSON.
    let cases: [(&[u8], &str); 5] = [
        (br#"{"labels":"zone"}"#, "`labels`"),
        (br#"{"exclude":"n01"}"#, "`exclude`"),
        (br#"{"service":7}"#, "`service`"),
        (br#"{"service":""}"#, "service"),
        (b"not json", "malformed JSON"),
    ];
    for (payload, needle) in cases {
        let (code, message, _) = error_of(&cluster, Endpoint::BalancerSelect, payload).await?;
        assert_eq!(code, "bad_request", "{}", String::from_utf8_lossy(payload));
        assert!(
            message.contains(needle),
            "{message} should mention {needle}"
        );
    }
    // A list where a strategy name belongs is refused too (the shared decode step
    // reports it as "malformed JSON: expected value", from serde_json's enum parser).
    let (code, message, _) = error_of(
        &cluster,
        Endpoint::BalancerSelect,
        br#"{"strategy":["random"]}"#,
    )
    .await?;
    assert_eq!(code, "bad_request", "{message}");
    let (code, _, _) = error_of(&cluster, Endpoint::BalancerStrategySet, b"{}").await?;
    assert_eq!(code, "bad_request", "strategy.set needs a strategy");
    let (code, _, _) = error_of(&cluster, Endpoint::BalancerStats, b"[1,2").await?;
    assert_eq!(code, "bad_request");

    // Unknown service and unmatched labels: no_capacity saying why.
    let (code, message, details) =
        error_of(&cluster, Endpoint::BalancerSelect, br#"{"service":"tpu"}"#).await?;
    assert_eq!(code, "no_capacity");
    assert_eq!(message, "no online node offers service \"tpu\"");
    assert_eq!(details["reason"], "no_service");
    let (_, message, details) = error_of(
        &cluster,
        Endpoint::BalancerSelect,
        br#"{"labels":{"slot":"99"}}"#,
    )
    .await?;
    assert_eq!(details["reason"], "no_labels", "{message}");
    assert!(message.contains("slot=99"), "{message}");

    // All full: every node at max_agents.
    for (i, node) in ten_nodes().iter().enumerate() {
        let mut full = node.clone();
        full.max_agents = 3;
        full.active_agents = 3;
        put_node(&cluster.members, &full)
            .await
            .with_context(|| format!("node {i}"))?;
    }
    let c = &cluster;
    let (message, details) = wait_for(
        "the balancer to see every node full",
        DEADLINE,
        || async move {
            let (_, message, details) = error_of(c, Endpoint::BalancerSelect, b"{}").await.ok()?;
            (details["reason"] == "all_full").then_some((message, details))
        },
    )
    .await?;
    assert_eq!(
        message,
        "all 10 online nodes that match the request are full"
    );
    assert_eq!(details["not_excluded"], 10);

    // Still alive and serving; the failures are counted.
    assert!(cluster.balancers[0].is_running(), "the balancer survived");
    put_node(&cluster.members, &ten_nodes()[0]).await?;
    let shoal = &cluster.shoal;
    let reply = wait_for("a selection to succeed again", DEADLINE, || async move {
        shoal.select(&SelectRequest::default()).await.ok()
    })
    .await?;
    assert_eq!(reply.node_id, "n00");
    let stats = cluster.stats(&cluster.ids[0]).await?;
    assert!(stats.no_capacity >= 3, "{stats:?}");
    Ok(())
}

#[tokio::test]
async fn select_before_any_membership_says_so() -> Result<()> {
    let cluster = Cluster::start(1, &[]).await?;
    let (code, message, details) = error_of(&cluster, Endpoint::BalancerSelect, b"").await?;
    assert_eq!(code, "no_capacity");
    assert_eq!(details["reason"], "no_nodes", "{message}");
    // A node appearing later is used without a restart.
    put_node(&cluster.members, &synthetic_node("late", 5, 0, 1.0, 1.0)).await?;
    let shoal = &cluster.shoal;
    let reply = wait_for("the late node to be selectable", DEADLINE, || async move {
        shoal.select(&SelectRequest::default()).await.ok()
    })
    .await?;
    assert_eq!(reply.node_id, "late");
    Ok(())
}
