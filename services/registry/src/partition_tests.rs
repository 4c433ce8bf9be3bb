//! A partitioned membership, driven with explicit times: a replica plans writes only
//! for the partitions it owns, and a partition it gains has its members' silence
//! counted from the handover.

use shoal_protocol::NodeEventKind;
use shoal_protocol::partition::partition_of;

use crate::machine_tests::{Clock, heartbeat, kinds, write};
use crate::member::Thresholds;
use crate::membership::Membership;
use crate::model::{self, tests::announce};

/// A node id in partition `p` of 2.
fn id_in(p: u32) -> String {
    (0..)
        .map(|i| format!("n{i}"))
        .find(|id| partition_of(id, 2) == p)
        .expect("ids fall in every partition")
}

#[test]
fn only_owned_partitions_are_judged_and_a_gained_one_is_judged_from_the_handover() {
    let c = Clock::new();
    let (mine, theirs) = (id_in(0), id_in(1));
    let mut m = Membership::partitioned(Thresholds::default(), 2);
    let (t0, u0) = c.at(0);
    m.set_owned(&[true, false], t0);
    // Both joined (as the bucket tells), and both were heard at 0.
    for (rev, id) in [(1, &mine), (2, &theirs)] {
        let node = model::from_announce(&announce(id), u0);
        m.apply_entry(id, rev, Some(node), t0);
        m.on_heartbeat(&heartbeat(id, 1, 0), t0, u0);
    }
    assert!(m.owns(&mine) && !m.owns(&theirs));
    m.on_announce(announce(&theirs), t0, u0);
    assert!(
        m.plan(&theirs, t0, u0).is_none(),
        "another replica writes for its partition"
    );

    // Both fall silent: only the owned node is judged.
    let (t, u) = c.at(2_500);
    let plans = m.due(t, u);
    assert_eq!(kinds(&plans), vec![NodeEventKind::Suspect]);
    assert_eq!(plans[0].id, mine);
    assert_eq!(m.falling_silent(t), 1);

    // Partition 1 changes hands at 10 s: its node's silence counts from then.
    let (t10, _) = c.at(10_000);
    m.set_owned(&[true, true], t10);
    // Every write planned succeeds (the next revision each); what was planned for
    // the node of partition 1.
    let mut rev = 10;
    let mut theirs_at = |m: &mut Membership, millis| {
        let (t, u) = c.at(millis);
        let plans = m.due(t, u);
        for plan in &plans {
            rev += 1;
            write(m, plan, rev, t);
        }
        let theirs: Vec<_> = plans.into_iter().filter(|p| p.id == theirs).collect();
        kinds(&theirs)
    };
    assert!(
        !theirs_at(&mut m, 11_000).contains(&NodeEventKind::Suspect),
        "1 s after the handover is no silence"
    );
    assert_eq!(theirs_at(&mut m, 12_500), vec![NodeEventKind::Suspect]);
}
