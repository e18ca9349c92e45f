//! Pending acknowledgements, as a state machine free of I/O with time passed in: the
//! at-least-once deliveries a publishing node waits an ack for, which are overdue, which are
//! spent (dead letters), and the dead letter's envelope.

use std::collections::HashMap;
use std::sync::Arc;
use tokio::time::Instant;

use micro_runtime::NodeId;

use crate::{Envelope, Redelivery};

/// Which delivery of a message an ack settles: a plain subscription's, or a group's (any member
/// may ack, since redelivery can move the message to another member).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum AckScope {
    Sub(u64),
    Group(String),
}

impl AckScope {
    /// The scope of a delivery to subscription `sub` of `group`.
    pub(crate) fn of(sub: u64, group: &Option<String>) -> AckScope {
        match group {
            Some(group) => AckScope::Group(group.clone()),
            None => AckScope::Sub(sub),
        }
    }
}

/// An at-least-once delivery waiting for its ack.
pub(crate) struct Pending {
    pub(crate) env: Arc<Envelope>,
    pub(crate) node: NodeId,
    pub(crate) sub: u64,
    pub(crate) redelivery: Redelivery,
    pub(crate) attempt: u32,
    pub(crate) deadline: Instant,
}

impl Pending {
    /// A first delivery to subscription `sub` on `node`, sent at `now`.
    pub(crate) fn first(
        env: Arc<Envelope>,
        node: NodeId,
        sub: u64,
        redelivery: Redelivery,
        now: Instant,
    ) -> Self {
        let deadline = now + redelivery.ack_timeout;
        Pending {
            env,
            node,
            sub,
            redelivery,
            attempt: 1,
            deadline,
        }
    }

    /// Whether its attempts are spent (the next step is the dead-letter topic).
    pub(crate) fn spent(&self) -> bool {
        self.attempt >= self.redelivery.max_attempts
    }

    /// The next attempt, to subscription `sub` on `node`, sent at `now`.
    pub(crate) fn redirect(&mut self, node: NodeId, sub: u64, now: Instant) {
        self.attempt += 1;
        self.node = node;
        self.sub = sub;
        self.deadline = now + self.redelivery.ack_timeout;
    }

    /// The message for the dead-letter topic (`"<topic>.dead-letter"` unless set): same payload,
    /// headers saying where it came from and why, a new id `id` from this node `me`.
    pub(crate) fn dead_letter(&self, reason: &str, me: NodeId, id: u64) -> Envelope {
        let env = &self.env;
        let topic = self
            .redelivery
            .dead_letter
            .clone()
            .unwrap_or_else(|| format!("{}.dead-letter", env.topic));
        let mut headers = env.headers.clone();
        headers.insert("x-dead-letter-topic".into(), env.topic.clone());
        headers.insert("x-dead-letter-reason".into(), reason.to_owned());
        headers.insert("x-dead-letter-attempts".into(), self.attempt.to_string());
        headers.insert("x-dead-letter-id".into(), env.id.to_string());
        Envelope {
            origin: me,
            id,
            topic,
            content_type: env.content_type.clone(),
            headers,
            body: env.body.clone(),
        }
    }
}

/// The deliveries waiting for an ack, keyed by (message id, scope), at most `max` of them.
pub(crate) struct PendingAcks {
    entries: HashMap<(u64, AckScope), Pending>,
    max: usize,
}

impl PendingAcks {
    /// No deliveries pending; room for `max`.
    pub(crate) fn new(max: usize) -> Self {
        PendingAcks {
            entries: HashMap::new(),
            max,
        }
    }

    /// How many wait.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no more may be tracked.
    pub(crate) fn is_full(&self) -> bool {
        self.entries.len() >= self.max
    }

    /// Tracks a delivery of message `id` (replacing one of the same scope).
    pub(crate) fn track(&mut self, id: u64, scope: AckScope, pending: Pending) {
        self.entries.insert((id, scope), pending);
    }

    /// The delivery of message `id` in `scope` now goes to subscription `sub` on `node`.
    pub(crate) fn retarget(&mut self, id: u64, scope: AckScope, node: NodeId, sub: u64) {
        if let Some(p) = self.entries.get_mut(&(id, scope)) {
            p.node = node;
            p.sub = sub;
        }
    }

    /// An answer came for message `id` in `scope`: the delivery stops waiting.
    pub(crate) fn settle(&mut self, id: u64, scope: AckScope) -> Option<(AckScope, Pending)> {
        let key = (id, scope);
        let pending = self.entries.remove(&key)?;
        Some((key.1, pending))
    }

    /// The deliveries whose ack is overdue at `now`, taken out (to redeliver).
    pub(crate) fn poll_overdue(&mut self, now: Instant) -> Vec<(AckScope, Pending)> {
        self.take_where(|p| p.deadline <= now)
    }

    /// The deliveries `which` selects, taken out (their subscriber or node went away).
    pub(crate) fn take_where(
        &mut self,
        which: impl Fn(&Pending) -> bool,
    ) -> Vec<(AckScope, Pending)> {
        let keys: Vec<(u64, AckScope)> = self
            .entries
            .iter()
            .filter(|(_, p)| which(p))
            .map(|(k, _)| k.clone())
            .collect();
        keys.into_iter()
            .filter_map(|k| self.entries.remove(&k).map(|p| (k.1, p)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn env(id: u64) -> Arc<Envelope> {
        Arc::new(Envelope {
            origin: NodeId::from_u128(1),
            id,
            topic: "orders".into(),
            content_type: "application/json".into(),
            headers: [("k".to_owned(), "v".to_owned())].into(),
            body: b"{}".to_vec(),
        })
    }

    fn redelivery(max_attempts: u32) -> Redelivery {
        Redelivery {
            ack_timeout: Duration::from_secs(10),
            max_attempts,
            dead_letter: None,
        }
    }

    #[test]
    fn a_delivery_is_overdue_only_once_its_ack_timeout_has_passed() {
        let t0 = Instant::now();
        let node = NodeId::from_u128(2);
        let mut acks = PendingAcks::new(10);
        acks.track(
            7,
            AckScope::Sub(1),
            Pending::first(env(7), node, 1, redelivery(3), t0),
        );
        assert!(acks.poll_overdue(t0 + Duration::from_secs(9)).is_empty());
        let mut overdue = acks.poll_overdue(t0 + Duration::from_secs(10));
        assert_eq!(overdue.len(), 1);
        assert_eq!(acks.len(), 0, "taken out");

        // Redelivered at t0 + 10 s: due again 10 s later, attempt 2, then spent at attempt 3.
        let (scope, mut pending) = overdue.remove(0);
        let t1 = t0 + Duration::from_secs(10);
        pending.redirect(node, 1, t1);
        assert_eq!((pending.attempt, pending.spent()), (2, false));
        acks.track(7, scope, pending);
        assert!(acks.poll_overdue(t1 + Duration::from_secs(5)).is_empty());
        let (_, mut pending) = acks.poll_overdue(t1 + Duration::from_secs(10)).remove(0);
        pending.redirect(node, 1, t1 + Duration::from_secs(10));
        assert!(pending.spent(), "3 of 3 attempts made");
    }

    #[test]
    fn any_member_settles_a_group_delivery_once() {
        let t0 = Instant::now();
        let mut acks = PendingAcks::new(10);
        let group = AckScope::of(5, &Some("workers".into()));
        let pending = Pending::first(env(1), NodeId::from_u128(2), 5, redelivery(3), t0);
        acks.track(1, group.clone(), pending);
        acks.retarget(1, group.clone(), NodeId::from_u128(3), 6);
        let scope = AckScope::of(6, &Some("workers".into()));
        let (_, settled) = acks.settle(1, scope.clone()).expect("pending");
        assert_eq!((settled.node, settled.sub), (NodeId::from_u128(3), 6));
        assert!(acks.settle(1, scope).is_none(), "settled once");
    }

    #[test]
    fn capacity_and_lost_nodes() {
        let t0 = Instant::now();
        let (a, b) = (NodeId::from_u128(2), NodeId::from_u128(3));
        let mut acks = PendingAcks::new(2);
        acks.track(
            1,
            AckScope::Sub(1),
            Pending::first(env(1), a, 1, redelivery(3), t0),
        );
        assert!(!acks.is_full());
        acks.track(
            2,
            AckScope::Sub(2),
            Pending::first(env(2), b, 2, redelivery(3), t0),
        );
        assert!(acks.is_full());
        let lost = acks.take_where(|p| p.node == a);
        assert_eq!(lost.len(), 1);
        assert_eq!(lost[0].0, AckScope::Sub(1));
        assert_eq!(acks.len(), 1);
    }

    #[test]
    fn a_dead_letter_says_where_it_came_from() {
        let t0 = Instant::now();
        let pending = Pending::first(env(9), NodeId::from_u128(2), 1, redelivery(1), t0);
        let dead = pending.dead_letter("boom", NodeId::from_u128(1), 42);
        assert_eq!((dead.topic.as_str(), dead.id), ("orders.dead-letter", 42));
        assert_eq!(dead.headers["x-dead-letter-reason"], "boom");
        assert_eq!(dead.headers["x-dead-letter-attempts"], "1");
        assert_eq!(dead.headers["x-dead-letter-id"], "9");
        assert_eq!(dead.headers["k"], "v");
        assert_eq!(dead.body, b"{}");
    }
}
