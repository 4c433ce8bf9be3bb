//! The coordinator's view of membership (the registry's `shoal_members` records) and
//! what it decides from it: may a node take an agent, must its agents move. Pure.

use std::collections::HashMap;

use shoal_protocol::{Node, NodeStatus, ShoalError};

#[derive(Clone, Debug, Default)]
pub struct Members {
    nodes: HashMap<String, Node>,
    /// The initial contents of the bucket have been read: until then an absent
    /// node is unknown, not gone.
    loaded: bool,
}

/// What should happen to the agents of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Keep them (online, or only suspect).
    Stay,
    /// Move them: the node is offline, left, or no longer known.
    Gone,
    /// Move them: the node is draining.
    Draining,
}

impl Members {
    /// Adds or replaces a node's record; true when the change can matter to a
    /// placement or a move (a new node, or a new status, drain flag, capacity,
    /// services or labels), false for metrics alone.
    pub fn upsert(&mut self, node: Node) -> bool {
        let relevant = self.nodes.get(&node.id).is_none_or(|old| {
            old.status != node.status
                || old.draining != node.draining
                || old.max_agents != node.max_agents
                || old.services != node.services
                || old.labels != node.labels
        });
        self.nodes.insert(node.id.clone(), node);
        relevant
    }
    pub fn remove(&mut self, id: &str) -> bool {
        self.nodes.remove(id).is_some()
    }
    pub fn mark_loaded(&mut self) {
        self.loaded = true;
    }
    pub fn is_loaded(&self) -> bool {
        self.loaded
    }
    pub fn len(&self) -> usize {
        self.nodes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Why `node` cannot take one more agent when it holds `assigned` already.
    fn refusal(node: &Node, assigned: usize) -> Option<ShoalError> {
        let id = &node.id;
        if node.draining || node.status == NodeStatus::Draining {
            return Some(ShoalError::conflict(format!(
                "node {id:?} is draining and takes no new agents"
            )));
        }
        if node.status != NodeStatus::Online {
            return Some(ShoalError::conflict(format!(
                "node {id:?} is {} and cannot take agents",
                node.status.as_str()
            )));
        }
        if assigned >= node.max_agents as usize {
            return Some(ShoalError::no_capacity(format!(
                "node {id:?} is full ({assigned} of {} agents)",
                node.max_agents
            )));
        }
        None
    }

    /// Checks a pinned placement: the node must exist, be online, not draining,
    /// and have a free slot (counting the coordinator's own assignments).
    pub fn check_pin(&self, id: &str, assigned: usize) -> Result<(), ShoalError> {
        let node = self.nodes.get(id).ok_or_else(|| ShoalError::no_node(id))?;
        match Members::refusal(node, assigned) {
            Some(e) => Err(e.with_details(serde_json::json!({ "node_id": id }))),
            None => Ok(()),
        }
    }

    /// Whether a node the balancer picked is known here to be unable to take the
    /// agent (a node unknown here is trusted: the balancer may have seen it first).
    pub fn refuses(&self, id: &str, assigned: usize) -> bool {
        self.nodes
            .get(id)
            .is_some_and(|n| Members::refusal(n, assigned).is_some())
    }

    /// The nodes that can take agents now and how many more each can take, counting
    /// the coordinator's own assignments (`assigned`): a local first fit, so the
    /// leader asks the balancer only for agents some node can take.
    pub fn free_slots(&self, assigned: impl Fn(&str) -> usize) -> FreeSlots<'_> {
        let nodes = self
            .nodes
            .values()
            .filter_map(|n| {
                let used = assigned(&n.id);
                Members::refusal(n, used)
                    .is_none()
                    .then(|| (n, n.max_agents as usize - used))
            })
            .collect();
        FreeSlots { nodes }
    }

    /// The nodes that could take one more agent offering `service` and carrying
    /// `labels`, other than `exclude`, counting the coordinator's own assignments
    /// (`assigned`); by id.
    pub fn candidates(
        &self,
        service: Option<&str>,
        labels: &std::collections::BTreeMap<String, String>,
        exclude: &[String],
        assigned: impl Fn(&str) -> usize,
    ) -> Vec<&Node> {
        let mut nodes: Vec<&Node> = self
            .nodes
            .values()
            .filter(|n| {
                !exclude.contains(&n.id)
                    && service.is_none_or(|s| n.has_service(s))
                    && n.matches_labels(labels)
                    && Members::refusal(n, assigned(&n.id)).is_none()
            })
            .collect();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        nodes
    }

    /// Every known node.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values()
    }

    /// The node's record, if known.
    pub fn get(&self, id: &str) -> Option<&Node> {
        self.nodes.get(id)
    }

    pub fn fate(&self, id: &str) -> Fate {
        match self.nodes.get(id) {
            None if self.loaded => Fate::Gone,
            None => Fate::Stay,
            Some(n) if matches!(n.status, NodeStatus::Offline | NodeStatus::Left) => Fate::Gone,
            Some(n) if n.draining || n.status == NodeStatus::Draining => Fate::Draining,
            Some(_) => Fate::Stay,
        }
    }

    /// (offline nodes, nodes that have not left).
    pub fn offline_share(&self) -> (usize, usize) {
        let present = self.nodes.values().filter(|n| n.status != NodeStatus::Left);
        let (mut offline, mut total) = (0, 0);
        for n in present {
            total += 1;
            if n.status == NodeStatus::Offline {
                offline += 1;
            }
        }
        (offline, total)
    }
}

/// Free agent slots per selectable node; see [`Members::free_slots`].
pub struct FreeSlots<'a> {
    nodes: Vec<(&'a Node, usize)>,
}

impl FreeSlots<'_> {
    /// Takes a slot on some node offering `service` and carrying `labels`, other than
    /// `exclude`; false when no such node has one left.
    pub fn take(
        &mut self,
        service: Option<&str>,
        labels: &std::collections::BTreeMap<String, String>,
        exclude: Option<&str>,
    ) -> bool {
        let slot = self.nodes.iter_mut().find(|(n, free)| {
            *free > 0
                && exclude != Some(n.id.as_str())
                && service.is_none_or(|s| n.has_service(s))
                && n.matches_labels(labels)
        });
        match slot {
            Some((_, free)) => {
                *free -= 1;
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use shoal_protocol::ErrorCode;

    pub(crate) fn node(id: &str, status: NodeStatus, max_agents: u32) -> Node {
        Node {
            status,
            healthy: status == NodeStatus::Online,
            max_agents,
            ..Node::example(id)
        }
    }

    fn members() -> Members {
        let mut m = Members::default();
        m.upsert(node("up", NodeStatus::Online, 2));
        m.upsert(node("down", NodeStatus::Offline, 2));
        m.upsert(node("shaky", NodeStatus::Suspect, 2));
        let mut d = node("drain", NodeStatus::Online, 2);
        d.draining = true;
        m.upsert(d);
        m
    }

    #[test]
    fn pins_name_the_problem() {
        let m = members();
        assert!(m.check_pin("up", 1).is_ok());
        assert_eq!(
            m.check_pin("nope", 0).unwrap_err().code,
            ErrorCode::NotFound
        );
        let e = m.check_pin("down", 0).unwrap_err();
        assert_eq!(e.code, ErrorCode::Conflict);
        assert!(e.message.contains("offline"), "{}", e.message);
        let e = m.check_pin("drain", 0).unwrap_err();
        assert!(e.message.contains("draining"), "{}", e.message);
        assert_eq!(
            m.check_pin("up", 2).unwrap_err().code,
            ErrorCode::NoCapacity
        );
    }

    #[test]
    fn fates_follow_status() {
        let mut m = members();
        // Before the bucket is read, an unknown node is not judged.
        assert_eq!(m.fate("ghost"), Fate::Stay);
        m.mark_loaded();
        assert_eq!(m.fate("ghost"), Fate::Gone);
        assert_eq!(m.fate("down"), Fate::Gone);
        assert_eq!(m.fate("drain"), Fate::Draining);
        assert_eq!(m.fate("shaky"), Fate::Stay);
        assert_eq!(m.fate("up"), Fate::Stay);
        assert_eq!(m.offline_share(), (1, 4));
    }

    #[test]
    fn only_placement_relevant_changes_count() {
        let mut m = members();
        let mut up = node("up", NodeStatus::Online, 2);
        up.cpu_usage = 55.0;
        assert!(!m.upsert(up.clone()), "metrics alone");
        up.labels.insert("zone".into(), "a".into());
        assert!(m.upsert(up.clone()), "labels");
        up.status = NodeStatus::Suspect;
        assert!(m.upsert(up), "status");
        assert!(m.upsert(node("new", NodeStatus::Online, 1)), "a new node");
        assert!(m.remove("new"));
        assert!(!m.remove("new"));
    }

    #[test]
    fn free_slots_fit_agents_first_come_and_respect_constraints() {
        let mut m = members();
        let mut gpu = node("gpu", NodeStatus::Online, 3);
        gpu.services = vec!["gpu".into()];
        gpu.labels.insert("zone".into(), "b".into());
        m.upsert(gpu);
        let none = std::collections::BTreeMap::new();
        let zone_b = std::collections::BTreeMap::from([("zone".into(), "b".into())]);
        // "up" holds 1 of 2, "gpu" 2 of 3: one slot each; offline, suspect and
        // draining nodes have none.
        let mut free = m.free_slots(|id| match id {
            "up" => 1,
            "gpu" => 2,
            _ => 0,
        });
        assert!(free.take(Some("gpu"), &zone_b, None));
        assert!(!free.take(Some("gpu"), &none, None), "gpu is full now");
        assert!(!free.take(None, &none, Some("up")), "up is excluded");
        assert!(free.take(None, &none, None));
        assert!(!free.take(None, &none, None), "every slot taken");
    }

    #[test]
    fn balancer_picks_are_trusted_unless_known_bad() {
        let m = members();
        assert!(!m.refuses("unknown-yet", 0));
        assert!(m.refuses("down", 0));
        assert!(m.refuses("up", 2));
        assert!(!m.refuses("up", 1));
    }
}
