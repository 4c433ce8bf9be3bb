//! Tests of the assignment state machine.

use super::*;
use chrono::Utc;
use shoal_protocol::ErrorCode;

fn author() -> Author {
    Author {
        leader_id: "c1".into(),
        epoch: 5,
    }
}

fn req(agent: &str, request_id: Option<&str>) -> AssignRequest {
    AssignRequest {
        agent_name: agent.into(),
        request_id: request_id.map(str::to_string),
        ..AssignRequest::default()
    }
}

fn assigned(state: &mut State, agent: &str, node: &str, request_id: Option<&str>) {
    let c = State::assign_change(
        &author(),
        &req(agent, request_id),
        node,
        "requested",
        None,
        Utc::now(),
    );
    state.apply_change(&c);
}

#[test]
fn assign_and_unassign_track_nodes() {
    let mut s = State::default();
    assigned(&mut s, "a1", "n1", None);
    assigned(&mut s, "a2", "n1", None);
    assigned(&mut s, "a3", "n2", None);
    assert_eq!((s.len(), s.count_on("n1"), s.count_on("n2")), (3, 2, 1));
    let c = s.unassign_change(&author(), "a1", Utc::now()).unwrap();
    assert_eq!(c.previous_node_id.as_deref(), Some("n1"));
    s.apply_change(&c);
    assert_eq!((s.len(), s.count_on("n1")), (2, 1));
    assert!(s.get("a1").is_none());
}

#[test]
fn an_unassign_with_a_request_id_is_answered_again_after_it_took() {
    let mut s = State::default();
    assigned(&mut s, "a1", "n1", Some("r1"));
    let mut c = s.unassign_change(&author(), "a1", Utc::now()).unwrap();
    c.request_id = Some("u1".into());
    s.apply_change(&c);
    let again = s.answered_unassign(Some("u1")).unwrap();
    assert_eq!(
        (again.agent_name.as_str(), again.node_id.as_str()),
        ("a1", "n1")
    );
    assert_eq!(again.epoch, 5);
    // One request id answers one kind of request.
    assert!(s.answered(Some("u1")).is_none());
    assert!(s.answered_unassign(Some("r1")).is_none());
    assert!(s.answered_unassign(None).is_none());
    // And the answer survives a snapshot.
    let json = serde_json::to_vec(&s.to_snapshot()).unwrap();
    let back = State::from_snapshot(serde_json::from_slice(&json).unwrap());
    assert_eq!(back.answered_unassign(Some("u1")), Some(again));
}

#[test]
fn a_snapshot_written_before_unassigns_had_request_ids_still_loads() {
    let mut s = State::default();
    assigned(&mut s, "a1", "n1", Some("r1"));
    let mut json = serde_json::to_value(s.to_snapshot()).unwrap();
    assert!(json.get("unassigns").is_none(), "{json}");
    json.as_object_mut().unwrap().remove("unassigns");
    let back = State::from_snapshot(serde_json::from_value(json).unwrap());
    assert_eq!(back.answered(Some("r1")).unwrap().node_id, "n1");
}

#[test]
fn unassigning_an_unknown_agent_is_not_found() {
    let e = State::default()
        .unassign_change(&author(), "ghost", Utc::now())
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::NotFound);
}

#[test]
fn an_agent_is_on_one_node_only() {
    let mut s = State::default();
    assigned(&mut s, "a1", "n1", None);
    let moved = s
        .move_change(
            &author(),
            "a1",
            Some("n2"),
            MoveKind::Orphan,
            None,
            Utc::now(),
        )
        .unwrap();
    s.apply_change(&moved);
    assert_eq!(s.count_on("n1"), 0);
    assert_eq!(s.count_on("n2"), 1);
    assert_eq!(s.get("a1").unwrap().node_id, "n2");
    assert_eq!(s.nodes().count(), 1);
    assert_eq!(moved.action, AssignmentAction::Orphaned);
    assert_eq!(moved.reason, "orphaned");
    assert_eq!(s.reassignments(), 1);
}

#[test]
fn repeated_request_ids_and_agents_return_the_first_result() {
    let mut s = State::default();
    assigned(&mut s, "a1", "n1", Some("r1"));
    assert_eq!(s.existing(&req("a1", None)).unwrap().node_id, "n1");
    assert_eq!(
        s.existing(&req("other", Some("r1"))).unwrap().agent_name,
        "a1"
    );
    assert!(s.existing(&req("a2", Some("r2"))).is_none());
}

#[test]
fn an_orphan_without_capacity_waits_then_is_reassigned() {
    let mut s = State::default();
    assigned(&mut s, "a1", "n1", None);
    let wait = s
        .move_change(&author(), "a1", None, MoveKind::Orphan, None, Utc::now())
        .unwrap();
    s.apply_change(&wait);
    assert_eq!(s.get("a1").unwrap().status, AssignmentStatus::Orphaned);
    assert_eq!(s.get("a1").unwrap().node_id, "n1");
    // Marking it waiting again records nothing new.
    assert!(
        s.move_change(&author(), "a1", None, MoveKind::Orphan, None, Utc::now())
            .is_none()
    );
    let placed = s
        .move_change(
            &author(),
            "a1",
            Some("n3"),
            MoveKind::Orphan,
            None,
            Utc::now(),
        )
        .unwrap();
    assert_eq!(placed.action, AssignmentAction::Reassigned);
    s.apply_change(&placed);
    assert_eq!(s.get("a1").unwrap().status, AssignmentStatus::Running);
    let orphaned = ListAssignmentsRequest {
        status: Some(AssignmentStatus::Orphaned),
        ..Default::default()
    };
    assert!(s.page(&orphaned).0.is_empty());
}

#[test]
fn list_filters_by_node_and_status() {
    let mut s = State::default();
    assigned(&mut s, "a1", "n1", None);
    assigned(&mut s, "a2", "n2", None);
    let by_node = ListAssignmentsRequest {
        node_id: Some("n2".into()),
        ..Default::default()
    };
    let names: Vec<_> = s
        .page(&by_node)
        .0
        .into_iter()
        .map(|a| a.agent_name)
        .collect();
    // Paging by name: pages join up to the whole list, the last has no `next`.
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let (page, next) = s.page(&ListAssignmentsRequest {
            after: after.clone(),
            limit: Some(1),
            ..Default::default()
        });
        all.extend(page.into_iter().map(|a| a.agent_name));
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let whole: Vec<_> = s
        .page(&ListAssignmentsRequest::default())
        .0
        .into_iter()
        .map(|a| a.agent_name)
        .collect();
    assert_eq!(all, whole);
    assert!(whole.len() > 1);
    assert_eq!(names, ["a2"]);
    assert_eq!(s.page(&ListAssignmentsRequest::default()).0.len(), 2);
}

#[test]
fn a_state_rebuilt_from_its_snapshot_answers_the_same() {
    let mut s = State::default();
    assigned(&mut s, "a1", "n1", Some("r1"));
    assigned(&mut s, "a2", "n1", None);
    assigned(&mut s, "a3", "n2", Some("r3"));
    let wait = s
        .move_change(&author(), "a3", None, MoveKind::Orphan, None, Utc::now())
        .unwrap();
    s.apply_change(&wait);
    s.apply(
        9,
        &LogRecord::EpochStart(crate::record::EpochStart {
            event_id: "e".into(),
            leader_id: "c2".into(),
            epoch: 4,
            at: Utc::now(),
        }),
    );
    let snapshot = s.to_snapshot();
    let json = serde_json::to_vec(&snapshot).unwrap();
    let back = State::from_snapshot(serde_json::from_slice(&json).unwrap());
    assert_eq!(back.to_snapshot(), snapshot);
    assert_eq!((back.last_seq(), back.epoch(), back.len()), (9, 4, 3));
    assert_eq!(back.digest_of("n1"), s.digest_of("n1"));
    assert_eq!(back.waiting_count(), 1);
    assert_eq!(back.count_by_status(), s.count_by_status());
    assert_eq!(
        back.existing(&req("other", Some("r1"))).unwrap().agent_name,
        "a1"
    );
    assert_eq!(back.page(&Default::default()), s.page(&Default::default()));
}

#[test]
fn epoch_start_records_move_the_epoch_and_sequence() {
    let mut s = State::default();
    s.apply(
        3,
        &LogRecord::EpochStart(crate::record::EpochStart {
            event_id: "e".into(),
            leader_id: "c2".into(),
            epoch: 42,
            at: Utc::now(),
        }),
    );
    assert_eq!((s.epoch(), s.last_seq()), (42, 3));
}
