//! Pubsub for micro: a broker actor on every node, with events carried between nodes by remote
//! actors over QUIC — no broker server to run.
//!
//! Start a [`Broker`] on each node; [`Broker::publish`] a typed message (any serde type, in any
//! codec the runtime knows) with headers; [`Broker::subscribe`] a [`Handler`] that runs in its
//! own supervised actor. Services declare subscribers as [`SubscriberSpec`] values.
//!
//! # How messages travel
//!
//! Brokers learn each other through the runtime's membership: when a link comes up they exchange
//! their nodes' subscriptions (topic, queue group, options), and every subscribe or unsubscribe
//! is pushed to every peer. A link lost ([`PeerEvent::Down`](micro_runtime::PeerEvent)) drops
//! that node's interest. A publisher therefore knows every subscription in the cluster: it sends
//! one frame per interested node (naming the subscriptions there) and that node's broker fans it
//! out to the local queues. Topics match exactly.
//!
//! - **Plain subscribers**: every subscription of the topic, on any node, gets every message.
//! - **Queue groups** ([`SubscribeOptions::queue`]): each message goes to one member of the group
//!   across the cluster, round robin over the members (so a node with two members gets twice the
//!   share of a node with one).
//!
//! # Delivery guarantees
//!
//! **At most once** (the default, [`Delivery::AtMostOnce`]):
//! - a message is delivered to a subscription at most once: no duplicates, ever;
//! - a group message is rerouted to another member only when its member's node is known to be
//!   unreachable *before* sending (its broker forgotten after the link went down, or its interest
//!   already withdrawn); once a message is queued for a node it is never sent again, so a link
//!   that fails later loses it (a batch the link refuses is counted in
//!   [`BrokerStats::undeliverable`]);
//! - order is kept per publisher per topic for each subscriber: a subscriber sees one
//!   publisher's messages of one topic in publish order (frames to one node share one ordered
//!   lane; the subscriber's queue is FIFO). Messages of different publishers interleave;
//! - losses are counted: a delivery with no reachable node ([`BrokerStats::undeliverable`]), a
//!   message pushed out of a full drop-oldest queue ([`SubscriptionStats::dropped`]), one in hand
//!   when its handler panicked ([`SubscriptionStats::crashed`]), a payload that does not decode
//!   ([`SubscriptionStats::undecodable`]), messages queued when a subscription ends
//!   ([`SubscriptionStats::discarded`]). What a lost link had in flight is lost with it; the
//!   runtime counts frames an overloaded node refused ([`Node::refused_messages`](micro_runtime::Node::refused_messages)),
//!   which flow control (a window of unconfirmed frames per peer) keeps from happening.
//!
//! **At least once** ([`SubscribeOptions::at_least_once`], per subscription):
//! - every message carries an id ([`Event::id`], unique per publishing node; a redelivery keeps
//!   it). The publishing node's broker tracks each delivery until the subscriber's handler
//!   returns: `Ok` acknowledges, `Err` is a nack (redelivered at once);
//! - a delivery not acknowledged within [`Redelivery::ack_timeout`] (a handler that crashed, a
//!   subscriber that is too slow, a lost frame) is redelivered — to another member of the queue
//!   group when there is one, otherwise to the same subscription — and [`Event::attempt`] counts
//!   up. After [`Redelivery::max_attempts`] deliveries, or at once when the payload does not
//!   decode, the message is published on the dead-letter topic (`"<topic>.dead-letter"` unless
//!   set), with headers `x-dead-letter-topic`, `x-dead-letter-reason`, `x-dead-letter-attempts`,
//!   `x-dead-letter-id`;
//! - **duplicates are possible**: a handler that finished after its ack timeout, or whose ack was
//!   lost, may see the message again (deduplicate by [`Event::publisher`] and [`Event::id`]);
//! - **ordering may break under redelivery**: a redelivered message arrives after later ones;
//! - when a group member's node is lost, its unacknowledged messages move to other members at
//!   once; a plain subscriber's die with its node (counted in [`BrokerStats::abandoned`]);
//! - the tracking lives on the publishing node: if that node dies, its unacknowledged messages
//!   are not redelivered (the broker keeps no durable log).
//!
//! # Backpressure
//!
//! Each subscription has a bounded queue, with a policy chosen at subscribe time
//! ([`Backpressure`]): **drop oldest** (publishers never wait; drops counted), or **block**
//! (publishers, local or remote, wait up to a timeout for room, then the publish fails with
//! [`BrokerError::Full`], counted as `rejected`). A slow subscriber never stalls the others:
//! each has its own queue and actor. Memory is bounded: queues by their capacity, frames in
//! flight to a peer by the flow-control window, unacknowledged messages by
//! [`BrokerConfig::max_pending`].
//!
//! ```
//! use micro_broker::{Broker, Event, HandlerError};
//! use micro_runtime::Node;
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU64, Ordering};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let node = Node::builder().start().await?;
//! let broker = Broker::start(&node).await?;
//!
//! let total = Arc::new(AtomicU64::new(0));
//! let sum = total.clone();
//! let subscription = broker
//!     .subscribe("numbers", move |event: Event<u64>| {
//!         let sum = sum.clone();
//!         async move {
//!             sum.fetch_add(event.message, Ordering::SeqCst);
//!             Ok::<(), HandlerError>(())
//!         }
//!     })
//!     .await?;
//!
//! for n in 1..=10u64 {
//!     broker.publish("numbers", &n).await?;
//! }
//! while subscription.stats().handled < 10 {
//!     tokio::time::sleep(std::time::Duration::from_millis(1)).await;
//! }
//! assert_eq!(total.load(Ordering::SeqCst), 55);
//! node.shutdown().await?;
//! # Ok(()) }
//! ```

// Layers, each importing only those above it in this list (no cycles):
// message, error, options → queue → protocol → routes, acks, outbox (state machines, no I/O)
// → core → actor, subscription → broker (the handle).
mod acks;
mod actor;
mod broker;
mod core;
mod error;
mod message;
mod options;
mod outbox;
mod protocol;
mod queue;
mod routes;
mod subscription;

pub use broker::{Broker, Subscription};
pub use core::{BrokerConfig, BrokerStats, TopicInterest};
pub use error::{BrokerError, HandlerError};
#[allow(deprecated)]
pub use message::Headers;
pub use message::{Envelope, Event};
pub use micro_runtime::Metadata;
pub use options::{Backpressure, Delivery, PublishOptions, Redelivery, SubscribeOptions};
#[allow(deprecated)]
pub use protocol::Local;
pub use protocol::{
    BROKER_NAME, BrokerCommand, BrokerMsg, Dispatch, Interest, InterestChange, Outcome,
};
pub use queue::SubscriptionStats;
pub use subscription::{Handler, SubscriberSpec};
