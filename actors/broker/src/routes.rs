//! Routes and interest, as a state machine free of I/O: who subscribed what on every node (this
//! one included), the per-topic routes publishers read, and the choice of a queue group's member.
//!
//! The broker actor is the only writer of the [`InterestTable`]; publishers read the
//! [`TopicRoutes`] built from it (rebuilt only when interest in a topic changes) and pick group
//! members without a lock (an atomic round-robin counter per group).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use micro_runtime::NodeId;

use crate::protocol::Interest;
use crate::queue::SubQueue;
use crate::{Backpressure, Redelivery};

/// One subscription as a publisher sees it.
#[derive(Clone)]
pub(crate) struct Target {
    pub(crate) node: NodeId,
    pub(crate) sub: u64,
    pub(crate) group: Option<String>,
    pub(crate) redelivery: Option<Redelivery>,
    pub(crate) block: Option<Duration>,
    /// The queue, when the subscription is on this node.
    pub(crate) queue: Option<Arc<SubQueue>>,
}

/// A queue group's members, sorted by (node, subscription), picked round robin.
pub(crate) struct Group {
    pub(crate) members: Vec<Target>,
    next: AtomicUsize,
}

impl Group {
    /// A group whose round robin begins at `start` (modulo its size).
    pub(crate) fn new(mut members: Vec<Target>, start: usize) -> Self {
        // A stable order, so round robin visits members evenly.
        members.sort_by_key(|t| (t.node, t.sub));
        Group {
            members,
            next: AtomicUsize::new(start),
        }
    }

    /// The next member, round robin, skipping members on `avoid` nodes while others remain.
    pub(crate) fn pick(&self, avoid: &[NodeId]) -> Option<&Target> {
        self.pick_where(|t| !avoid.contains(&t.node))
    }

    /// The next member other than subscription `failed` (the same one when it is alone).
    pub(crate) fn pick_other(&self, failed: u64) -> Option<&Target> {
        let alone = self.members.len() == 1;
        self.pick_where(|t| t.sub != failed || alone)
    }

    fn pick_where(&self, ok: impl Fn(&Target) -> bool) -> Option<&Target> {
        let len = self.members.len();
        if len == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..len)
            .map(|i| &self.members[start.wrapping_add(i) % len])
            .find(|t| ok(t))
    }
}

/// Who wants one topic.
#[derive(Default)]
pub(crate) struct TopicRoutes {
    pub(crate) plain: Vec<Target>,
    pub(crate) groups: BTreeMap<String, Group>,
}

/// What every node (this one included) subscribed: node → subscription → interest.
pub(crate) struct InterestTable {
    me: NodeId,
    nodes: HashMap<NodeId, BTreeMap<u64, Interest>>,
}

impl InterestTable {
    /// An empty table for the broker of node `me`.
    pub(crate) fn new(me: NodeId) -> Self {
        InterestTable {
            me,
            nodes: HashMap::new(),
        }
    }

    /// This node's subscriptions, as sent to peers.
    pub(crate) fn local(&self) -> Vec<Interest> {
        self.nodes
            .get(&self.me)
            .map(|subs| subs.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Adds one subscription of `node`; returns the topic whose routes change.
    pub(crate) fn add(&mut self, node: NodeId, interest: Interest) -> String {
        let topic = interest.topic.clone();
        self.nodes
            .entry(node)
            .or_default()
            .insert(interest.sub, interest);
        topic
    }

    /// Removes one subscription of `node`, if known.
    pub(crate) fn remove(&mut self, node: NodeId, sub: u64) -> Option<Interest> {
        self.nodes.get_mut(&node).and_then(|subs| subs.remove(&sub))
    }

    /// Replaces everything `node` subscribed; returns the topics whose routes change (sorted).
    pub(crate) fn replace(&mut self, node: NodeId, interests: Vec<Interest>) -> Vec<String> {
        let mut topics: Vec<String> = Vec::new();
        if let Some(old) = self.nodes.remove(&node) {
            topics.extend(old.into_values().map(|i| i.topic));
        }
        let subs: BTreeMap<u64, Interest> = interests.into_iter().map(|i| (i.sub, i)).collect();
        topics.extend(subs.values().map(|i| i.topic.clone()));
        if !subs.is_empty() {
            self.nodes.insert(node, subs);
        }
        topics.sort();
        topics.dedup();
        topics
    }

    /// The routes of `topic` (none when nobody wants it). This node's subscriptions count only
    /// once their queue is in `local`; each group's round robin starts at `start()`.
    pub(crate) fn routes(
        &self,
        topic: &str,
        local: &HashMap<u64, Arc<SubQueue>>,
        mut start: impl FnMut() -> usize,
    ) -> Option<TopicRoutes> {
        let mut plain = Vec::new();
        let mut groups: BTreeMap<String, Vec<Target>> = BTreeMap::new();
        for (node, subs) in &self.nodes {
            for interest in subs.values().filter(|i| i.topic == topic) {
                let queue = if *node == self.me {
                    match local.get(&interest.sub) {
                        Some(queue) => Some(queue.clone()),
                        None => continue,
                    }
                } else {
                    None
                };
                let target = Target {
                    node: *node,
                    sub: interest.sub,
                    group: interest.group.clone(),
                    redelivery: interest.redelivery.clone(),
                    block: match interest.backpressure {
                        Backpressure::Block { timeout, .. } => Some(timeout),
                        Backpressure::DropOldest { .. } => None,
                    },
                    queue,
                };
                match &interest.group {
                    None => plain.push(target),
                    Some(group) => groups.entry(group.clone()).or_default().push(target),
                }
            }
        }
        if plain.is_empty() && groups.is_empty() {
            return None;
        }
        let groups = groups
            .into_iter()
            .map(|(name, members)| (name, Group::new(members, start())))
            .collect();
        Some(TopicRoutes { plain, groups })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(n: u128) -> NodeId {
        NodeId::from_u128(n)
    }

    fn interest(sub: u64, topic: &str, group: Option<&str>) -> Interest {
        Interest {
            sub,
            topic: topic.into(),
            group: group.map(Into::into),
            redelivery: None,
            backpressure: Backpressure::default(),
        }
    }

    /// Three nodes' members of group "g" on topic "t" (none on this node, 99).
    fn table() -> InterestTable {
        let mut table = InterestTable::new(node(99));
        table.add(node(2), interest(20, "t", Some("g")));
        table.add(node(1), interest(11, "t", Some("g")));
        table.add(node(1), interest(10, "t", Some("g")));
        table.add(node(3), interest(30, "t", Some("g")));
        table.add(node(3), interest(31, "t", None));
        table.add(node(3), interest(32, "other", None));
        table
    }

    fn subs<'a>(picks: impl Iterator<Item = Option<&'a Target>>) -> Vec<u64> {
        picks.map(|t| t.map_or(0, |t| t.sub)).collect()
    }

    #[test]
    fn a_group_is_picked_round_robin_in_member_order_from_its_start() {
        let routes = table().routes("t", &HashMap::new(), || 2).expect("routes");
        assert_eq!(routes.plain.len(), 1);
        let group = &routes.groups["g"];
        // Sorted (node, sub): 10, 11 (node 1), 20 (node 2), 30 (node 3); the start is 2.
        let picks = subs((0..6).map(|_| group.pick(&[])));
        assert_eq!(picks, vec![20, 30, 10, 11, 20, 30]);
    }

    #[test]
    fn members_on_lost_nodes_are_skipped_while_others_remain() {
        let routes = table().routes("t", &HashMap::new(), || 0).expect("routes");
        let group = &routes.groups["g"];
        let picks = subs((0..4).map(|_| group.pick(&[node(1)])));
        assert_eq!(
            picks,
            vec![20, 20, 20, 30],
            "node 1's members are never chosen"
        );
        let none = group.pick(&[node(1), node(2), node(3)]);
        assert!(none.is_none(), "no member left: nothing to pick");
    }

    #[test]
    fn a_redelivery_prefers_another_member_unless_alone() {
        let routes = table().routes("t", &HashMap::new(), || 0).expect("routes");
        let group = &routes.groups["g"];
        assert!((0..8).all(|_| group.pick_other(10).is_some_and(|t| t.sub != 10)));
        let mut alone = InterestTable::new(node(99));
        alone.add(node(1), interest(10, "t", Some("g")));
        let routes = alone.routes("t", &HashMap::new(), || 5).expect("routes");
        assert_eq!(routes.groups["g"].pick_other(10).map(|t| t.sub), Some(10));
    }

    #[test]
    fn interest_comes_and_goes_per_node() {
        let mut table = table();
        assert_eq!(table.remove(node(3), 31).map(|i| i.sub), Some(31));
        assert!(table.remove(node(3), 31).is_none());
        let topics = table.replace(node(3), vec![interest(40, "new", None)]);
        assert_eq!(topics, vec!["new".to_owned(), "other".into(), "t".into()]);
        assert!(table.routes("other", &HashMap::new(), || 0).is_none());
        // This node's own subscriptions route only once their queue is there.
        table.add(node(99), interest(1, "mine", None));
        assert_eq!(table.local().len(), 1);
        assert!(table.routes("mine", &HashMap::new(), || 0).is_none());
    }
}
