//! The broker's shared state: who wants which topic (here and on peers), the local subscription
//! queues, the links to peer brokers, and the at-least-once messages waiting for an ack.
//!
//! Publishers use it directly (no hop through the broker actor on the hot path); the broker actor
//! is the only writer of the interest tables, so snapshots and deltas sent to peers stay ordered.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::Duration;

use micro_runtime::{AbortOnDrop, Addr, Node, NodeId, SupervisorRef};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use crate::acks::{AckScope, Pending, PendingAcks};
use crate::outbox::{CreditCounter, Outbox, Window};
use crate::protocol::{BrokerMsg, Dispatch, Interest, Outcome};
use crate::queue::{Confirm, Item, Pushed, RemoteConfirm, SubQueue, lock};
use crate::routes::{InterestTable, Target, TopicRoutes};
use crate::{Backpressure, BrokerError, Envelope};

/// Tuning of a broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    /// Deliveries sent to one peer and not yet confirmed by it before publishers wait (flow
    /// control, so a fast publisher never overruns a peer's bounded inbox).
    pub window: u64,
    /// How long a publish waits for room in that window before it fails with
    /// [`BrokerError::Overloaded`].
    pub publish_timeout: Duration,
    /// At-least-once messages this broker tracks (unacknowledged) at most; publishes beyond fail
    /// with [`BrokerError::Overloaded`].
    pub max_pending: usize,
    /// How often redelivery timeouts and blocked publishers' deadlines are checked.
    pub tick: Duration,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            window: 16_384,
            publish_timeout: Duration::from_secs(5),
            max_pending: 65_536,
            tick: Duration::from_millis(20),
        }
    }
}

/// Counters of a broker, for the user to read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerStats {
    /// Messages published through this broker (dead letters included).
    pub published: u64,
    /// Published messages no subscriber anywhere wanted.
    pub unrouted: u64,
    /// Deliver frames sent to other nodes (each carries a batch of messages, at most one
    /// delivery per message per node).
    pub frames_sent: u64,
    /// Deliver frames received from other nodes.
    pub frames_received: u64,
    /// Messages handed to other nodes: one per message per interested node, however many
    /// subscribers it has there (redeliveries included).
    pub remote_deliveries: u64,
    /// Deliveries lost on the way out: the subscriber's node was unreachable and no other group
    /// member was left, or the link refused a batch already queued for it.
    pub undeliverable: u64,
    /// Deliveries that arrived for a subscription that no longer exists here.
    pub stale: u64,
    /// At-least-once messages redelivered (after a timeout, a nack or a lost node).
    pub redelivered: u64,
    /// At-least-once messages acknowledged.
    pub acked: u64,
    /// Messages sent to a dead-letter topic.
    pub dead_lettered: u64,
    /// At-least-once messages given up because their (plain) subscriber went away.
    pub abandoned: u64,
    /// At-least-once messages waiting for an ack now.
    pub pending: u64,
    /// Subscriptions on this node now.
    pub subscriptions: u64,
    /// Peer brokers this broker exchanges interest with now.
    pub peers: u64,
}

#[derive(Default)]
struct Counters {
    published: AtomicU64,
    unrouted: AtomicU64,
    frames_sent: AtomicU64,
    frames_received: AtomicU64,
    remote_deliveries: AtomicU64,
    undeliverable: AtomicU64,
    stale: AtomicU64,
    redelivered: AtomicU64,
    acked: AtomicU64,
    dead_lettered: AtomicU64,
    abandoned: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Where a topic's subscribers are, as this node knows now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicInterest {
    /// Plain subscriptions: (node, how many there).
    pub plain: BTreeMap<NodeId, usize>,
    /// Queue groups: name → members per node.
    pub groups: BTreeMap<String, BTreeMap<NodeId, usize>>,
}

impl TopicInterest {
    /// All subscriptions, plain and grouped, on every node.
    pub fn total(&self) -> usize {
        self.plain.values().sum::<usize>()
            + self
                .groups
                .values()
                .flat_map(|nodes| nodes.values())
                .sum::<usize>()
    }
}

/// The way out to one peer's broker: an outbox that a flusher task turns into batched Deliver
/// frames (in order), and the flow-control window (in deliveries).
pub(crate) struct PeerOut {
    pub(crate) addr: Addr<BrokerMsg>,
    node: NodeId,
    core: Weak<Core>,
    window: Window,
    room: Notify,
    outbox: Mutex<Outbox>,
    scheduled: std::sync::atomic::AtomicBool,
    /// Held while batches are taken and sent.
    sending: Mutex<()>,
    wake: Arc<Notify>,
    _flusher: AbortOnDrop,
}

impl PeerOut {
    fn new(node: NodeId, addr: Addr<BrokerMsg>, core: Weak<Core>) -> Arc<Self> {
        Arc::new_cyclic(|weak: &Weak<PeerOut>| {
            let wake = Arc::new(Notify::new());
            let flusher = {
                let (weak, wake) = (weak.clone(), wake.clone());
                AbortOnDrop::spawn(async move {
                    loop {
                        wake.notified().await;
                        let Some(out) = weak.upgrade() else { return };
                        out.flush();
                    }
                })
            };
            PeerOut {
                addr,
                node,
                core,
                window: Window::default(),
                room: Notify::new(),
                outbox: Mutex::new(Outbox::default()),
                scheduled: std::sync::atomic::AtomicBool::new(false),
                sending: Mutex::new(()),
                wake,
                _flusher: flusher,
            }
        })
    }

    fn in_flight(&self) -> u64 {
        self.window.in_flight()
    }

    pub(crate) fn confirm(&self, received: u64) {
        self.window.confirm(received);
        self.room.notify_waiters();
    }

    /// Queues a delivery; the flusher sends it (with whatever else is queued by then).
    fn enqueue(&self, delivery: Dispatch) {
        let full = lock(&self.outbox).push(delivery);
        self.window.sent_one();
        // A full batch is sent by the publisher that completed it (unless a flush is running);
        // anything less by the flusher task, at once.
        if full && let Ok(sending) = self.sending.try_lock() {
            self.send_batches(sending);
            return;
        }
        if !self.scheduled.swap(true, Ordering::AcqRel) {
            self.wake.notify_one();
        }
    }

    /// Sends everything queued, in order, in frames of at most `MAX_BATCH` deliveries.
    fn flush(&self) {
        self.scheduled.store(false, Ordering::Release);
        self.send_batches(lock(&self.sending));
    }

    /// Sends what is queued; the guard keeps one sender at a time, so batches leave in order.
    fn send_batches(&self, _sending: std::sync::MutexGuard<'_, ()>) {
        loop {
            let batch = lock(&self.outbox).next_batch();
            if batch.is_empty() {
                return;
            }
            let deliveries = batch.len() as u64;
            let core = self.core.upgrade();
            let Some(core) = core else { return };
            let sent = self.addr.send(BrokerMsg::Deliver {
                from: core.me,
                batch,
            });
            match sent {
                Ok(()) => bump(&core.counters.frames_sent),
                Err(err) => {
                    // Handed over by the publisher, lost at the link: counted.
                    tracing::debug!(peer = %self.node, %err, deliveries, "batch not sent");
                    core.counters
                        .undeliverable
                        .fetch_add(deliveries, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Where a remote node's confirmation is awaited.
type ConfirmSender = oneshot::Sender<Result<(), BrokerError>>;

/// Waits of one publish for blocking subscribers.
enum Wait {
    Local(Arc<SubQueue>, Instant, oneshot::Receiver<()>),
    /// A remote node's confirmation: (node, token, answer, how long it may take).
    Remote(
        NodeId,
        u64,
        oneshot::Receiver<Result<(), BrokerError>>,
        Duration,
    ),
}

pub(crate) struct Core {
    myself: Weak<Core>,
    pub(crate) node: Node,
    pub(crate) me: NodeId,
    pub(crate) config: BrokerConfig,
    pub(crate) supervisor: OnceLock<SupervisorRef>,
    next_msg: AtomicU64,
    next_sub: AtomicU64,
    /// What every node (this one included) subscribed.
    interest: Mutex<InterestTable>,
    routes: RwLock<HashMap<String, Arc<TopicRoutes>>>,
    local: RwLock<HashMap<u64, Arc<SubQueue>>>,
    peers: RwLock<HashMap<NodeId, Arc<PeerOut>>>,
    pending: Mutex<PendingAcks>,
    /// Deliver frames received from each peer (flow-control credit), kept across broker restarts.
    pub(crate) received: Mutex<CreditCounter>,
    /// Publishers waiting for a remote blocking subscriber: token → (node, who waits).
    confirms: Mutex<HashMap<u64, (NodeId, ConfirmSender)>>,
    next_token: AtomicU64,
    counters: Counters,
}

impl Core {
    pub(crate) fn new(node: Node, config: BrokerConfig) -> Arc<Self> {
        let (me, max_pending) = (node.id(), config.max_pending);
        Arc::new_cyclic(|myself| Core {
            myself: myself.clone(),
            me,
            node,
            config,
            supervisor: OnceLock::new(),
            next_msg: AtomicU64::new(1),
            // Subscription ids never repeat on a node, even across broker restarts.
            next_sub: AtomicU64::new(rand::random::<u32>() as u64 + 1),
            interest: Mutex::new(InterestTable::new(me)),
            routes: RwLock::new(HashMap::new()),
            local: RwLock::new(HashMap::new()),
            peers: RwLock::new(HashMap::new()),
            pending: Mutex::new(PendingAcks::new(max_pending)),
            received: Mutex::new(CreditCounter::default()),
            confirms: Mutex::new(HashMap::new()),
            next_token: AtomicU64::new(1),
            counters: Counters::default(),
        })
    }

    pub(crate) fn next_sub_id(&self) -> u64 {
        self.next_sub.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn next_msg_id(&self) -> u64 {
        self.next_msg.fetch_add(1, Ordering::Relaxed)
    }

    // ---- interest (written by the broker actor only) ----

    pub(crate) fn add_local(&self, queue: Arc<SubQueue>) {
        self.local
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(queue.id, queue);
    }

    pub(crate) fn local_queue(&self, sub: u64) -> Option<Arc<SubQueue>> {
        self.local
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&sub)
            .cloned()
    }

    pub(crate) fn local_queues(&self) -> Vec<Arc<SubQueue>> {
        self.local
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// This node's subscriptions, as sent to peers.
    pub(crate) fn local_interest(&self) -> Vec<Interest> {
        lock(&self.interest).local()
    }

    /// Adds one subscription of `node`.
    pub(crate) fn add_interest(&self, node: NodeId, interest: Interest) {
        let topic = lock(&self.interest).add(node, interest);
        self.rebuild(&[topic]);
    }

    /// Removes one subscription of `node`; its unacknowledged messages move on.
    pub(crate) fn remove_interest(&self, node: NodeId, sub: u64) {
        let removed = lock(&self.interest).remove(node, sub);
        if let Some(interest) = removed {
            self.rebuild(&[interest.topic]);
        }
        if node == self.me
            && let Some(queue) = self
                .local
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&sub)
        {
            queue.close();
        }
        self.move_pending(|p| p.node == node && p.sub == sub);
    }

    /// Replaces everything `node` subscribed (its broker said hello).
    pub(crate) fn replace_interest(&self, node: NodeId, interests: Vec<Interest>) {
        let topics = lock(&self.interest).replace(node, interests);
        self.rebuild(&topics);
    }

    /// Forgets a peer that went down: its interest, its link, and moves its unacknowledged
    /// messages to other group members.
    pub(crate) fn drop_peer(&self, node: NodeId) {
        self.replace_interest(node, Vec::new());
        self.peers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&node);
        // Publishers waiting for that node's confirmation learn it is gone.
        lock(&self.confirms).retain(|_, (peer, _)| *peer != node);
        self.move_pending(|p| p.node == node);
    }

    /// Records a peer's broker (kept as it is if already known, with its window).
    pub(crate) fn set_peer(&self, node: NodeId, addr: Addr<BrokerMsg>) {
        self.peers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(node)
            .or_insert_with(|| PeerOut::new(node, addr, self.myself.clone()));
    }

    pub(crate) fn has_peer(&self, node: NodeId) -> bool {
        self.peers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&node)
    }

    pub(crate) fn peer(&self, node: NodeId) -> Option<Arc<PeerOut>> {
        self.peers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&node)
            .cloned()
    }

    pub(crate) fn peer_list(&self) -> Vec<(NodeId, Arc<PeerOut>)> {
        self.peers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(id, out)| (*id, out.clone()))
            .collect()
    }

    fn rebuild(&self, topics: &[String]) {
        let all = lock(&self.interest);
        let local = self.local.read().unwrap_or_else(|p| p.into_inner());
        let mut routes = self.routes.write().unwrap_or_else(|p| p.into_inner());
        for topic in topics {
            match all.routes(topic, &local, || rand::random::<u16>() as usize) {
                Some(built) => {
                    routes.insert(topic.clone(), Arc::new(built));
                }
                None => {
                    routes.remove(topic);
                }
            }
        }
    }

    fn routes_for(&self, topic: &str) -> Option<Arc<TopicRoutes>> {
        self.routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(topic)
            .cloned()
    }

    pub(crate) fn topic_interest(&self, topic: &str) -> TopicInterest {
        let mut info = TopicInterest::default();
        if let Some(routes) = self.routes_for(topic) {
            for t in &routes.plain {
                *info.plain.entry(t.node).or_default() += 1;
            }
            for (name, group) in &routes.groups {
                let nodes = info.groups.entry(name.clone()).or_default();
                for t in &group.members {
                    *nodes.entry(t.node).or_default() += 1;
                }
            }
        }
        info
    }

    // ---- publishing ----

    /// Publishes: one delivery per plain subscription and one per queue group, one frame per
    /// remote node. Waits only for blocking subscribers and for a full flow-control window.
    pub(crate) async fn publish(self: &Arc<Self>, env: Envelope) -> Result<(), BrokerError> {
        bump(&self.counters.published);
        let Some(routes) = self.routes_for(&env.topic) else {
            bump(&self.counters.unrouted);
            return Ok(());
        };
        let mut targets: Vec<Target> = routes.plain.clone();
        for group in routes.groups.values() {
            if let Some(t) = group.pick(&[]) {
                targets.push(t.clone());
            }
        }
        let env = Arc::new(env);
        // At-least-once deliveries are tracked before they are sent.
        if targets.iter().any(|t| t.redelivery.is_some()) {
            let mut pending = lock(&self.pending);
            if pending.is_full() {
                return Err(BrokerError::Overloaded(format!(
                    "{} unacknowledged messages",
                    pending.len()
                )));
            }
            let now = Instant::now();
            for t in &targets {
                if let Some(redelivery) = &t.redelivery {
                    let first = Pending::first(env.clone(), t.node, t.sub, redelivery.clone(), now);
                    pending.track(env.id, AckScope::of(t.sub, &t.group), first);
                }
            }
        }

        let mut waits: Vec<Wait> = Vec::new();
        let mut failed_nodes: Vec<NodeId> = Vec::new();
        let mut queue_of_targets = targets;
        // Rerouted group deliveries come back around this loop (bounded by the number of nodes).
        while !queue_of_targets.is_empty() {
            let mut remote: BTreeMap<NodeId, Vec<Target>> = BTreeMap::new();
            for t in queue_of_targets.drain(..) {
                match &t.queue {
                    Some(queue) => {
                        self.push_local(queue, &env, 1, &mut waits)?;
                    }
                    None => remote.entry(t.node).or_default().push(t),
                }
            }
            for (node, group) in remote {
                if let Err(err) = self
                    .send_remote(node, &env, &group, 1, true, &mut waits)
                    .await
                {
                    if matches!(err, BrokerError::Overloaded(_)) {
                        return Err(err);
                    }
                    // Known down before sending: group deliveries go to another member.
                    tracing::debug!(%node, %err, topic = %env.topic, "peer unreachable; rerouting");
                    failed_nodes.push(node);
                    for t in group {
                        let replacement = t.group.as_ref().and_then(|name| {
                            routes
                                .groups
                                .get(name)
                                .and_then(|g| g.pick(&failed_nodes).cloned())
                        });
                        match replacement {
                            Some(other) => {
                                self.retarget(env.id, &t, &other);
                                queue_of_targets.push(other);
                            }
                            None => {
                                bump(&self.counters.undeliverable);
                            }
                        }
                    }
                }
            }
        }
        self.finish_waits(&env, waits).await
    }

    /// Moves a pending at-least-once delivery to another group member.
    fn retarget(&self, id: u64, from: &Target, to: &Target) {
        lock(&self.pending).retarget(id, AckScope::of(from.sub, &from.group), to.node, to.sub);
    }

    fn push_local(
        &self,
        queue: &Arc<SubQueue>,
        env: &Arc<Envelope>,
        attempt: u32,
        waits: &mut Vec<Wait>,
    ) -> Result<(), BrokerError> {
        let item = Item {
            env: env.clone(),
            attempt,
        };
        match queue.policy {
            Backpressure::Block { timeout, .. } => {
                let deadline = Instant::now() + timeout;
                let (tx, rx) = oneshot::channel();
                match queue.push(item, Some((deadline, Confirm::Local(tx)))) {
                    Pushed::Parked => waits.push(Wait::Local(queue.clone(), deadline, rx)),
                    Pushed::Queued | Pushed::Closed | Pushed::Full => {}
                }
            }
            Backpressure::DropOldest { .. } => {
                queue.push(item, None);
            }
        }
        Ok(())
    }

    /// Sends one Deliver frame to `node` for `targets` there. With `wait`, a full window makes
    /// the caller wait, and blocking subscribers get a confirm to wait for.
    async fn send_remote(
        &self,
        node: NodeId,
        env: &Arc<Envelope>,
        targets: &[Target],
        attempt: u32,
        wait: bool,
        waits: &mut Vec<Wait>,
    ) -> Result<(), BrokerError> {
        let peer = self
            .peer(node)
            .ok_or_else(|| BrokerError::Runtime(micro_runtime::Error::NoRoute(node.to_string())))?;
        if wait && peer.in_flight() >= self.config.window {
            let deadline = Instant::now() + self.config.publish_timeout;
            loop {
                let room = peer.room.notified();
                if peer.in_flight() < self.config.window {
                    break;
                }
                if tokio::time::timeout_at(deadline, room).await.is_err() {
                    return Err(BrokerError::Overloaded(format!(
                        "{} deliveries unconfirmed by node {node}",
                        peer.in_flight()
                    )));
                }
                if !self.has_peer(node) {
                    return Err(BrokerError::Runtime(micro_runtime::Error::NodeLost(
                        node.to_string(),
                    )));
                }
            }
        }
        let subs: Vec<u64> = targets.iter().map(|t| t.sub).collect();
        let block = targets.iter().filter_map(|t| t.block).max();
        let confirm = match block {
            Some(timeout) if wait => {
                let token = self.next_token.fetch_add(1, Ordering::Relaxed);
                let (tx, rx) = oneshot::channel();
                lock(&self.confirms).insert(token, (node, tx));
                // The subscriber's node answers at its own deadline; allow for the trip.
                waits.push(Wait::Remote(
                    node,
                    token,
                    rx,
                    timeout + Duration::from_secs(2),
                ));
                Some(token)
            }
            _ => None,
        };
        peer.enqueue(Dispatch {
            envelope: env.clone(),
            subs,
            attempt,
            confirm,
        });
        bump(&self.counters.remote_deliveries);
        Ok(())
    }

    async fn finish_waits(&self, env: &Envelope, waits: Vec<Wait>) -> Result<(), BrokerError> {
        let mut result = Ok(());
        for wait in waits {
            let outcome = match wait {
                Wait::Local(queue, deadline, mut rx) => {
                    match tokio::time::timeout_at(deadline, &mut rx).await {
                        Ok(Ok(())) => Ok(()),
                        _ => {
                            // Close first: an answer that raced the deadline still counts.
                            rx.close();
                            // (A subscription that closed meanwhile refuses nobody.)
                            if rx.try_recv().is_ok() || queue.is_closed() {
                                Ok(())
                            } else {
                                queue.counters.rejected.fetch_add(1, Ordering::Relaxed);
                                Err(queue.full_error())
                            }
                        }
                    }
                }
                Wait::Remote(node, token, rx, bound) => {
                    let answer = match tokio::time::timeout(bound, rx).await {
                        Ok(Ok(answer)) => answer,
                        Ok(Err(_)) => Err(BrokerError::Runtime(micro_runtime::Error::NodeLost(
                            node.to_string(),
                        ))),
                        Err(_) => {
                            lock(&self.confirms).remove(&token);
                            Err(BrokerError::Runtime(micro_runtime::Error::Timeout(bound)))
                        }
                    };
                    if let Err(err) = &answer {
                        tracing::debug!(%node, %err, topic = %env.topic, "remote subscriber refused");
                    }
                    answer
                }
            };
            if result.is_ok() {
                result = outcome;
            }
        }
        result
    }

    // ---- receiving from peers ----

    /// A delivery from a peer: fan out to the local subscriptions it names.
    pub(crate) fn accept_remote(&self, from: NodeId, delivery: Dispatch) {
        let Dispatch {
            envelope: env,
            subs,
            attempt,
            confirm,
        } = delivery;
        let confirm = confirm.map(|token| {
            let peer = self.peer(from);
            RemoteConfirm::new(move |result| {
                if let Some(peer) = peer {
                    let _ = peer.addr.send(BrokerMsg::Confirmed { token, result });
                }
            })
        });
        for sub in subs {
            let Some(queue) = self.local_queue(sub) else {
                bump(&self.counters.stale);
                continue;
            };
            let item = Item {
                env: env.clone(),
                attempt,
            };
            match (&queue.policy, &confirm) {
                (Backpressure::Block { timeout, .. }, Some(confirm)) => {
                    confirm.expect_one();
                    let park = (Instant::now() + *timeout, Confirm::Remote(confirm.clone()));
                    match queue.push(item, Some(park)) {
                        Pushed::Parked => {}
                        Pushed::Queued | Pushed::Closed | Pushed::Full => confirm.accepted(),
                    }
                }
                _ => {
                    if queue.push(item, None) == Pushed::Full {
                        // A redelivery to a full blocking queue: its ack timeout will retry.
                        queue.counters.rejected.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        if let Some(confirm) = confirm {
            confirm.accepted();
        }
    }

    /// A peer answered a delivery that asked for confirmation.
    pub(crate) fn confirmed(&self, token: u64, result: Result<(), BrokerError>) {
        if let Some((_, tx)) = lock(&self.confirms).remove(&token) {
            let _ = tx.send(result);
        }
    }

    pub(crate) fn count_frame_received(&self) {
        bump(&self.counters.frames_received);
    }

    // ---- acknowledgements ----

    /// A subscriber on this node finished an at-least-once delivery: tell its publisher.
    pub(crate) fn settle(
        &self,
        env: &Envelope,
        sub: u64,
        group: &Option<String>,
        outcome: Outcome,
    ) {
        if env.origin == self.me {
            self.settled(env.id, sub, group.clone(), outcome);
        } else if let Some(peer) = self.peer(env.origin) {
            let _ = peer.addr.send(BrokerMsg::Ack {
                id: env.id,
                sub,
                group: group.clone(),
                outcome,
            });
        }
        // With no link to the publisher the ack is lost; so is the publisher's pending entry
        // (its node is gone or will redeliver after its timeout).
    }

    /// An ack for a message this node published.
    pub(crate) fn settled(&self, id: u64, sub: u64, group: Option<String>, outcome: Outcome) {
        let settled = lock(&self.pending).settle(id, AckScope::of(sub, &group));
        let Some((scope, pending)) = settled else {
            return;
        };
        match outcome {
            Outcome::Ack => bump(&self.counters.acked),
            Outcome::Nack(reason) => self.redeliver(scope, pending, &reason),
            Outcome::Dead(reason) => self.dead_letter(pending, &reason),
        }
    }

    /// Redelivers the at-least-once messages whose ack is overdue.
    pub(crate) fn tick(self: &Arc<Self>) {
        let now = Instant::now();
        let overdue = lock(&self.pending).poll_overdue(now);
        for (scope, pending) in overdue {
            self.redeliver(scope, pending, "no ack within the timeout");
        }
        for queue in self.local_queues() {
            queue.expire_waiters(now);
        }
    }

    /// Moves the pending deliveries `which` selects (their subscriber or node went away).
    fn move_pending(&self, which: impl Fn(&Pending) -> bool) {
        let moved = lock(&self.pending).take_where(which);
        for (scope, pending) in moved {
            match scope {
                AckScope::Group(_) => self.redeliver(scope, pending, "its subscriber went away"),
                AckScope::Sub(_) => bump(&self.counters.abandoned),
            }
        }
    }

    /// Sends a pending delivery again (another group member when there is one), or to the
    /// dead-letter topic once its attempts are spent. Never waits.
    fn redeliver(&self, scope: AckScope, mut pending: Pending, reason: &str) {
        if pending.spent() {
            self.dead_letter(pending, reason);
            return;
        }
        let target = match &scope {
            AckScope::Sub(sub) => self
                .routes_for(&pending.env.topic)
                .and_then(|routes| routes.plain.iter().find(|t| t.sub == *sub).cloned()),
            AckScope::Group(group) => self.routes_for(&pending.env.topic).and_then(|routes| {
                // Prefer another member than the one that failed.
                routes.groups.get(group)?.pick_other(pending.sub).cloned()
            }),
        };
        let Some(target) = target else {
            bump(&self.counters.abandoned);
            return;
        };
        pending.redirect(target.node, target.sub, Instant::now());
        let env = pending.env.clone();
        let attempt = pending.attempt;
        bump(&self.counters.redelivered);
        tracing::debug!(topic = %env.topic, id = env.id, attempt, %reason, "redelivering");
        lock(&self.pending).track(env.id, scope, pending);
        match &target.queue {
            Some(queue) => {
                if queue.push(Item { env, attempt }, None) == Pushed::Full {
                    queue.counters.rejected.fetch_add(1, Ordering::Relaxed);
                }
            }
            None => {
                if let Some(peer) = self.peer(target.node) {
                    peer.enqueue(Dispatch {
                        envelope: env,
                        subs: vec![target.sub],
                        attempt,
                        confirm: None,
                    });
                    bump(&self.counters.remote_deliveries);
                }
                // Not sent: the next timeout tries again.
            }
        }
    }

    /// Publishes a message that could not be delivered on its dead-letter topic.
    fn dead_letter(&self, pending: Pending, reason: &str) {
        let env = pending.dead_letter(reason, self.me, self.next_msg_id());
        bump(&self.counters.dead_lettered);
        tracing::debug!(topic = %pending.env.topic, id = pending.env.id, %reason, "dead-lettered");
        // Published from a task: a blocking dead-letter subscriber may make it wait.
        if let Some(core) = self.myself() {
            tokio::spawn(async move {
                if let Err(err) = core.publish(env).await {
                    tracing::warn!(%err, "dead letter not delivered");
                }
            });
        }
    }

    fn myself(&self) -> Option<Arc<Core>> {
        self.myself.upgrade()
    }

    pub(crate) fn stats(&self) -> BrokerStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        BrokerStats {
            published: get(&c.published),
            unrouted: get(&c.unrouted),
            frames_sent: get(&c.frames_sent),
            frames_received: get(&c.frames_received),
            remote_deliveries: get(&c.remote_deliveries),
            undeliverable: get(&c.undeliverable),
            stale: get(&c.stale),
            redelivered: get(&c.redelivered),
            acked: get(&c.acked),
            dead_lettered: get(&c.dead_lettered),
            abandoned: get(&c.abandoned),
            pending: lock(&self.pending).len() as u64,
            subscriptions: self.local.read().unwrap_or_else(|p| p.into_inner()).len() as u64,
            peers: self.peers.read().unwrap_or_else(|p| p.into_inner()).len() as u64,
        }
    }
}
