//! The broker's typed protocol: what brokers of a cluster tell each other.

use std::any::Any;
use std::sync::Arc;

use micro_runtime::{Addr, NodeId, RemoteMessage, Reply};
use serde::{Deserialize, Serialize};

use crate::queue::SubQueue;
use crate::{Backpressure, BrokerError, Envelope, Redelivery};

/// The name of every node's broker actor (exposed to other nodes).
pub const BROKER_NAME: &str = "broker";

/// Prefix of the name of each subscription's supervisor; the subscription id follows.
pub(crate) const SUB_PREFIX: &str = "broker.sub.";

/// What a broker actor takes. Brokers of a cluster speak it to each other; applications use the
/// [`Broker`](crate::Broker) handle.
#[derive(Debug, Serialize, Deserialize)]
pub enum BrokerMsg {
    /// A peer's broker introduces itself with everything its node subscribed (replacing what
    /// was known of that node), and asks for the same back when `answer` is set.
    Hello {
        /// The peer node.
        node: NodeId,
        /// Its broker.
        broker: Addr<BrokerMsg>,
        /// All its subscriptions.
        interest: Vec<Interest>,
        /// Whether to answer with our own hello.
        answer: bool,
    },
    /// A peer subscribed or unsubscribed.
    Interest {
        /// The peer node.
        node: NodeId,
        /// What changed.
        change: InterestChange,
    },
    /// Messages for subscriptions on this node, in publish order: fanned out here. A publisher
    /// batches what it has queued for a node into one frame.
    Deliver {
        /// The node that sent the frame (for flow control and confirmations).
        from: NodeId,
        /// The deliveries.
        batch: Vec<Dispatch>,
    },
    /// The answer to a delivery that asked for one (a blocking subscriber was among its targets):
    /// every blocking target took the message, or the first refusal.
    Confirmed {
        /// The token the delivery carried.
        token: u64,
        /// The outcome.
        result: Result<(), BrokerError>,
    },
    /// A subscriber's answer to an at-least-once delivery, sent to the publishing node.
    Ack {
        /// The message id (the receiver is its origin).
        id: u64,
        /// The subscription that handled it.
        sub: u64,
        /// Its queue group.
        group: Option<String>,
        /// What happened.
        outcome: Outcome,
    },
    /// Flow control: the sender has received `received` Deliver frames from this node so far.
    Credit {
        /// The node that received them.
        node: NodeId,
        /// How many it has received in all.
        received: u64,
    },
    /// The broker's messages to itself and from its handle. Never travels: it has no wire form.
    #[serde(skip)]
    #[doc(hidden)]
    Local(BrokerCommand),
}

impl RemoteMessage for BrokerMsg {
    const TYPE_NAME: &'static str = "micro.broker.v1";
}

/// A command to the broker actor from its own node (its handle, its timers, its membership
/// events): opaque outside the crate, and never sent over the wire.
pub struct BrokerCommand(pub(crate) Command);

/// The broker's command under its old name (it is not the registry's `Local`).
#[deprecated(note = "renamed `BrokerCommand`")]
pub type Local = BrokerCommand;

impl std::fmt::Debug for BrokerCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("BrokerCommand").field(&self.0).finish()
    }
}

/// What a [`BrokerCommand`] asks.
#[derive(Debug)]
pub(crate) enum Command {
    /// A subscription on this node: its queue and its interest, to announce.
    Subscribe {
        queue: Arc<SubQueue>,
        interest: Interest,
        reply: Reply<()>,
    },
    /// Withdraw a subscription of this node.
    Unsubscribe { sub: u64, reply: Reply<()> },
    /// A link to a peer came up: find its broker.
    PeerUp(NodeId),
    /// The peer's broker was found.
    PeerFound(NodeId, Addr<BrokerMsg>),
    /// A link to a peer went down.
    PeerDown(NodeId),
    /// A subscription's supervisor gave up.
    SubFailed(u64),
    /// Time to check redelivery and blocked publishers' deadlines.
    Tick,
    /// The broker's shared state, for a handle found by lookup. Typed as `Any` so this module
    /// (below the core) need not name it; the handle downcasts.
    Shared(Reply<Arc<dyn Any + Send + Sync>>),
}

/// A command wrapped as the broker actor's message.
pub(crate) fn command(command: Command) -> BrokerMsg {
    BrokerMsg::Local(BrokerCommand(command))
}

/// One message for some subscriptions of one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dispatch {
    /// The message (shared by the deliveries of one publish).
    pub envelope: Arc<Envelope>,
    /// The subscriptions on the receiving node it is for.
    pub subs: Vec<u64>,
    /// Which delivery this is (1, or more when redelivered).
    pub attempt: u32,
    /// Set when a blocking subscriber is among `subs`: answer with
    /// [`BrokerMsg::Confirmed`] carrying this token.
    pub confirm: Option<u64>,
}

/// One subscription as other nodes learn of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interest {
    /// Its id (unique on its node).
    pub sub: u64,
    /// The topic.
    pub topic: String,
    /// Its queue group, if any.
    pub group: Option<String>,
    /// At-least-once settings, if it asked for them.
    pub redelivery: Option<Redelivery>,
    /// Its backpressure policy (a publisher waits for blocking subscribers).
    pub backpressure: Backpressure,
}

/// A change in a node's subscriptions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InterestChange {
    /// A subscription was made.
    Added(Interest),
    /// A subscription was withdrawn.
    Removed(u64),
}

/// What a subscriber did with an at-least-once delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Handled: done.
    Ack,
    /// The handler failed: redeliver (counts as an attempt).
    Nack(String),
    /// It can never be handled (its payload does not decode): dead-letter it now.
    Dead(String),
}
