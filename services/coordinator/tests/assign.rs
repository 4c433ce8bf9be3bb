//! Assignments through a real coordinator process: pinning, idempotency, reads on
//! every replica, node notices, and the errors a client can tell apart.

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use shoal_protocol::{
    AgentNotice, AssignRequest, AssignmentAction, AssignmentEvent, Endpoint, ErrorCode,
    ListAssignmentsRequest, NodeStatus, Subjects, UnassignReply, UnassignRequest,
};
use shoal_testkit::{NatsServer, wait_for};

fn code(e: &shoal_protocol::ClientError) -> Option<ErrorCode> {
    e.service_code()
}

#[tokio::test]
async fn pinned_assignments_are_idempotent_readable_everywhere_and_notified() {
    let nats = NatsServer::start().await.unwrap();
    let client = nats.client().await.unwrap();
    let kv = members(&client).await.unwrap();
    put_node(&kv, &node("n1", 5)).await.unwrap();
    put_node(&kv, &node("n2", 5)).await.unwrap();
    let c1 = coordinator(&nats.url(), "c1", &[]).unwrap();
    let c2 = coordinator(&nats.url(), "c2", &[]).unwrap();
    let shoal = shoal(&client);
    let leader = wait_leader(&shoal, &["c1", "c2"], LONG).await.unwrap();
    println!("leader: {leader}");

    let subjects = Subjects::default();
    let mut notices = client.subscribe(subjects.node_agents("n2")).await.unwrap();
    let mut events = client
        .subscribe(subjects.coordinator_events_all())
        .await
        .unwrap();

    let req = pinned("agent-a", "n2");
    let first = shoal.assign(&req).await.unwrap();
    assert_eq!(first.node_id, "n2");
    assert!(first.epoch > 0);
    // The same request_id again: the first result, nothing new written.
    let again = shoal.assign(&req).await.unwrap();
    assert_eq!(again, first);
    // The same agent under another request: its current assignment, when the pin
    // agrees or there is none; a pin elsewhere is a conflict naming where it is.
    let same = shoal.assign(&pinned("agent-a", "n2")).await.unwrap();
    assert_eq!(same.node_id, "n2");
    let unpinned = AssignRequest {
        node_id: None,
        ..pinned("agent-a", "n2")
    };
    assert_eq!(shoal.assign(&unpinned).await.unwrap().node_id, "n2");
    let e = shoal.assign(&pinned("agent-a", "n1")).await.unwrap_err();
    assert_eq!(code(&e), Some(ErrorCode::Conflict), "{e}");
    let shoal_protocol::ClientError::Service(conflict) = &e else {
        panic!("{e}")
    };
    let details = conflict.details.as_ref().unwrap();
    assert_eq!(details["node_id"], "n2", "{details}");
    assert!(conflict.message.contains("move"), "{}", conflict.message);

    let notice: AgentNotice = serde_json::from_slice(
        &tokio::time::timeout(LONG, notices.next())
            .await
            .unwrap()
            .unwrap()
            .payload,
    )
    .unwrap();
    let AgentNotice::Start(start) = notice else {
        panic!("{notice:?}")
    };
    assert_eq!(
        (start.agent_name.as_str(), start.node_id.as_str()),
        ("agent-a", "n2")
    );
    let event: AssignmentEvent = serde_json::from_slice(
        &tokio::time::timeout(LONG, events.next())
            .await
            .unwrap()
            .unwrap()
            .payload,
    )
    .unwrap();
    assert_eq!(event.event, AssignmentAction::Assigned);

    // Both replicas (leader and follower) serve the read.
    for id in [&c1.id, &c2.id] {
        let got = wait_for("the replica to have the assignment", LONG, || async {
            shoal
                .call_direct::<_, shoal_protocol::Assignment>(
                    shoal_protocol::Endpoint::CoordinatorAssignmentsGet,
                    id,
                    &shoal_protocol::AgentNameRequest {
                        agent_name: "agent-a".into(),
                    },
                )
                .await
                .ok()
        })
        .await
        .unwrap();
        assert_eq!(got.node_id, "n2");
    }
    shoal.assign(&pinned("agent-b", "n1")).await.unwrap();
    let on_n1 = wait_for("agent-b listed", LONG, || async {
        let list = shoal
            .list_assignments(&ListAssignmentsRequest {
                node_id: Some("n1".into()),
                ..Default::default()
            })
            .await
            .ok()?;
        (list.count == 1).then_some(list)
    })
    .await
    .unwrap();
    assert_eq!(on_n1.assignments[0].agent_name, "agent-b");
    // Pages of one, joined through `next`, give the whole list in name order.
    let first = shoal
        .list_assignments(&ListAssignmentsRequest {
            limit: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(first.count, 1);
    assert_eq!(first.assignments[0].agent_name, "agent-a");
    assert_eq!(first.next.as_deref(), Some("agent-a"));
    let names: Vec<String> = shoal
        .list_all_assignments(&ListAssignmentsRequest::default())
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.agent_name)
        .collect();
    assert_eq!(names, ["agent-a", "agent-b"]);

    let unassign = UnassignRequest {
        agent_name: "agent-a".into(),
        request_id: Some("unassign-a".into()),
    };
    let removed = shoal.unassign_request(&unassign).await.unwrap();
    assert_eq!(removed.node_id, "n2");
    // A retry of an unassign that took gets the same answer, not `not_found`;
    // another request for the agent, with no request id of its own, is refused.
    assert_eq!(shoal.unassign_request(&unassign).await.unwrap(), removed);
    let again = shoal
        .call::<_, UnassignReply>(
            Endpoint::CoordinatorUnassign,
            &serde_json::json!({ "agent_name": "agent-a" }),
        )
        .await
        .unwrap_err();
    assert_eq!(again.code(), "not_found");
    let notice: AgentNotice = serde_json::from_slice(
        &tokio::time::timeout(LONG, notices.next())
            .await
            .unwrap()
            .unwrap()
            .payload,
    )
    .unwrap();
    assert_eq!(notice.action(), "stop");
    let log = log_records(&client).await.unwrap();
    let counts = assigned_counts(&log);
    assert_eq!(
        counts.get("agent-a"),
        Some(&1),
        "one assigned record for agent-a"
    );
}

#[tokio::test]
async fn bad_requests_get_distinct_errors() {
    let nats = NatsServer::start().await.unwrap();
    let client = nats.client().await.unwrap();
    let kv = members(&client).await.unwrap();
    put_node(&kv, &node("full", 1)).await.unwrap();
    let mut down = node("down", 5);
    down.status = NodeStatus::Offline;
    put_node(&kv, &down).await.unwrap();
    let mut draining = node("draining", 5);
    draining.draining = true;
    put_node(&kv, &draining).await.unwrap();
    let _c = coordinator(&nats.url(), "c1", &[]).unwrap();
    let shoal = shoal(&client);
    wait_leader(&shoal, &["c1"], LONG).await.unwrap();

    let refuse = |req: AssignRequest| {
        let shoal = shoal.clone();
        async move { shoal.assign(&req).await.unwrap_err() }
    };
    let e = refuse(pinned("", "full")).await;
    assert_eq!(code(&e), Some(ErrorCode::BadRequest), "{e}");
    let e = refuse(pinned(&"x".repeat(200), "full")).await;
    assert_eq!(code(&e), Some(ErrorCode::BadRequest), "{e}");
    let e = refuse(pinned("a.b", "full")).await;
    assert_eq!(code(&e), Some(ErrorCode::BadRequest), "{e}");
    let e = refuse(pinned("a1", "nowhere")).await;
    assert_eq!(code(&e), Some(ErrorCode::NotFound), "{e}");
    let greedy = AssignRequest {
        resources: Some(shoal_protocol::Resources {
            cpu: 150.0,
            memory: 1.0,
        }),
        ..pinned("a1", "full")
    };
    let e = refuse(greedy).await;
    assert_eq!(code(&e), Some(ErrorCode::BadRequest), "{e}");
    assert!(e.to_string().contains("resources.cpu"), "{e}");
    // Group rules: a group is an id, spread_by a label key, and both rules need a
    // group.
    let long_key = "k".repeat(129);
    let bad_rules = [
        (Some(""), None, false, "group"),
        (Some("a.b"), None, true, "group"),
        (None, Some("zone"), false, "spread_by needs a group"),
        (None, None, true, "anti_affinity needs a group"),
        (Some("g1"), Some(" "), false, "spread_by"),
        (Some("g1"), Some(long_key.as_str()), false, "spread_by"),
    ];
    for (group, spread_by, anti_affinity, says) in bad_rules {
        let req = AssignRequest {
            group: group.map(str::to_string),
            spread_by: spread_by.map(str::to_string),
            anti_affinity,
            ..pinned("a1", "full")
        };
        let e = refuse(req).await;
        assert_eq!(code(&e), Some(ErrorCode::BadRequest), "{e}");
        assert!(e.to_string().contains(says), "{says}: {e}");
    }
    // spread_by adds its label to each selection: it must leave room for it.
    let crowded = AssignRequest {
        group: Some("g1".into()),
        spread_by: Some("zone".into()),
        labels: (0..64)
            .map(|i| (format!("k{i}"), "v".to_string()))
            .collect(),
        ..pinned("a1", "full")
    };
    let e = refuse(crowded).await;
    assert_eq!(code(&e), Some(ErrorCode::BadRequest), "{e}");
    assert!(e.to_string().contains("at most 63"), "{e}");
    // A move of an agent that is nowhere, or to a node that is not, is not_found.
    let e = shoal
        .move_agent(&shoal_protocol::MoveRequest {
            agent_name: "ghost".into(),
            node_id: Some("full".into()),
            request_id: None,
        })
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some(ErrorCode::NotFound), "{e}");
    // The membership view may lag the test's writes by a moment.
    let e = wait_for("the offline node to be known", LONG, || async {
        let e = shoal.assign(&pinned("a1", "down")).await.unwrap_err();
        (code(&e) == Some(ErrorCode::Conflict)).then_some(e)
    })
    .await
    .unwrap();
    assert!(e.to_string().contains("offline"), "{e}");
    let e = refuse(pinned("a1", "draining")).await;
    assert_eq!(code(&e), Some(ErrorCode::Conflict), "{e}");
    assert!(e.to_string().contains("draining"), "{e}");
    shoal.assign(&pinned("a1", "full")).await.unwrap();
    let e = refuse(pinned("a2", "full")).await;
    assert_eq!(code(&e), Some(ErrorCode::NoCapacity), "{e}");

    let e = shoal.unassign("ghost").await.unwrap_err();
    assert_eq!(code(&e), Some(ErrorCode::NotFound), "{e}");
    let e = shoal.unassign("").await.unwrap_err();
    assert_eq!(code(&e), Some(ErrorCode::BadRequest), "{e}");
    let e = shoal.get_assignment("ghost").await.unwrap_err();
    assert_eq!(code(&e), Some(ErrorCode::NotFound), "{e}");
    // Malformed JSON on a write endpoint.
    let reply = client
        .request("shoal.coordinator.assign", "{not json".into())
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(body["error"]["code"], "bad_request");
    // No history without a database, said plainly.
    let e = shoal
        .clone()
        .with_retry_for(Duration::ZERO)
        .history(&Default::default())
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some(ErrorCode::Unavailable), "{e}");
}
