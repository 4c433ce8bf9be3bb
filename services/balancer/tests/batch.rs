//! `select.batch`: many picks in one request, made in order as if sent one by one,
//! with an error per selection that cannot be served and a clear error for a batch
//! that is malformed.

mod common;

use std::collections::HashMap;

use anyhow::Result;
use common::{Cluster, ten_nodes};
use shoal_protocol::{
    ClientError, ErrorCode, MAX_SELECT_BATCH, SelectBatchRequest, SelectRequest, Strategy,
};

#[tokio::test]
async fn a_batch_spreads_its_picks_and_reports_each_failure_in_place() -> Result<()> {
    let cluster = Cluster::start(1, &ten_nodes()).await?;
    cluster
        .set_strategy_on(&cluster.ids[0], Strategy::LeastAgents)
        .await?;
    cluster
        .wait_strategy_everywhere(Strategy::LeastAgents)
        .await?;

    // 30 picks in one request: each counts against its node for the next, so
    // least_agents gives every node exactly three.
    let batch = SelectBatchRequest {
        selections: vec![SelectRequest::default(); 30],
    };
    let reply = cluster.shoal.select_batch(&batch).await?;
    assert_eq!(reply.results.len(), 30);
    let mut counts: HashMap<String, u32> = HashMap::new();
    for outcome in &reply.results {
        assert_eq!(outcome.error, None, "{outcome:?}");
        assert_eq!(outcome.strategy, Some(Strategy::LeastAgents));
        assert!(!outcome.candidates.is_empty(), "{outcome:?}");
        *counts
            .entry(outcome.node_id.clone().expect("a pick names its node"))
            .or_default() += 1;
    }
    println!("30 least_agents picks in one batch: {counts:?}");
    assert_eq!(counts.len(), 10, "{counts:?}");
    assert!(counts.values().all(|&n| n == 3), "{counts:?}");

    // A selection nothing matches fails alone, in its place; the others succeed.
    let mut missing = SelectRequest::default();
    missing
        .labels
        .insert("slot".to_string(), "no-such-slot".to_string());
    let mut pinned = SelectRequest::default();
    pinned.labels.insert("slot".to_string(), "4".to_string());
    let batch = SelectBatchRequest {
        selections: vec![SelectRequest::default(), missing, pinned],
    };
    let reply = cluster.shoal.select_batch(&batch).await?;
    assert_eq!(reply.results.len(), 3);
    assert!(reply.results[0].node_id.is_some(), "{:?}", reply.results[0]);
    let error = reply.results[1]
        .error
        .as_ref()
        .expect("no match is an error");
    assert_eq!(error.code, ErrorCode::NoCapacity, "{error:?}");
    assert_eq!(reply.results[1].node_id, None);
    assert_eq!(reply.results[2].node_id.as_deref(), Some("n04"));
    Ok(())
}

#[tokio::test]
async fn an_empty_or_oversized_batch_is_a_bad_request() -> Result<()> {
    let cluster = Cluster::start(1, &ten_nodes()).await?;
    let quick = cluster
        .shoal
        .clone()
        .with_retry_for(std::time::Duration::ZERO);
    for size in [0, MAX_SELECT_BATCH + 1] {
        let batch = SelectBatchRequest {
            selections: vec![SelectRequest::default(); size],
        };
        match quick.select_batch(&batch).await {
            Err(ClientError::Service(e)) => {
                assert_eq!(e.code, ErrorCode::BadRequest, "{e:?}");
                assert!(e.message.contains("selections"), "{}", e.message);
            }
            other => panic!("batch of {size}: expected bad_request, got {other:?}"),
        }
    }
    Ok(())
}
