//! [`Broker`]: the handle applications publish and subscribe through.

use std::sync::Arc;
use std::time::Duration;

use micro_runtime::{
    Addr, ChildSpec, Intensity, Metadata, Node, NodeId, Strategy, SupervisorRef, SupervisorSpec,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::actor::BrokerActor;
use crate::core::{BrokerConfig, BrokerStats, Core, TopicInterest};
use crate::protocol::{BROKER_NAME, BrokerMsg, Command, Interest, command};
use crate::queue::{SubQueue, SubscriptionStats};
use crate::subscription::{Handler, SubscriberSpec};
use crate::{BrokerError, Delivery, Envelope, PublishOptions, SubscribeOptions};

/// Messages the broker actor may have queued (it is exposed, so this bounds what peers can queue
/// on it; flow control keeps each peer well under it).
const BROKER_MAILBOX: usize = 1 << 20;

/// Time to wait for the broker actor's answer to a subscribe or unsubscribe.
const ASK: Duration = Duration::from_secs(5);

/// Longest topic or group name.
const MAX_NAME: usize = 1024;

/// A handle to this node's broker (cheap to clone): publish, subscribe, read counters.
///
/// ```no_run
/// use micro_broker::{Broker, Event, HandlerError};
/// use micro_runtime::Node;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct OrderPlaced { id: u64, cents: u64 }
///
/// async fn bill(event: Event<OrderPlaced>) -> Result<(), HandlerError> {
///     println!("billing order {} for {} cents", event.message.id, event.message.cents);
///     Ok(())
/// }
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let a = Node::builder().name("a").listen("127.0.0.1:0".parse()?).start().await?;
/// let b = Node::builder().name("b").listen("127.0.0.1:0".parse()?).start().await?;
/// let (on_a, on_b) = (Broker::start(&a).await?, Broker::start(&b).await?);
/// b.connect(a.local_addr().unwrap()).await?; // the brokers exchange interest over the link
///
/// on_a.subscribe("orders.placed", bill).await?;
/// // … once b has heard of a's interest (milliseconds):
/// on_b.publish("orders.placed", &OrderPlaced { id: 1, cents: 4200 }).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Broker {
    pub(crate) core: Arc<Core>,
    addr: Addr<BrokerMsg>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("node", &self.core.me)
            .finish()
    }
}

impl Broker {
    /// Starts the node's broker with default settings, under the node's root supervisor (a
    /// supervisor `broker.sup` holding the broker actor, named and exposed as `"broker"`, and one
    /// supervisor per subscription). One broker per node.
    pub async fn start(node: &Node) -> Result<Broker, BrokerError> {
        Broker::start_with(node, BrokerConfig::default()).await
    }

    /// Starts the node's broker with `config`.
    pub async fn start_with(node: &Node, config: BrokerConfig) -> Result<Broker, BrokerError> {
        let core = Core::new(node.clone(), config);
        let for_actor = core.clone();
        // Generous: if `broker.sup` itself gave up, the subscriptions under it would go with it.
        let spec = SupervisorSpec::new(Strategy::OneForOne)
            .named("broker.sup")
            .intensity(Intensity::new(20, Duration::from_secs(10)))
            .child(
                ChildSpec::new(move || BrokerActor::new(for_actor.clone()))
                    .named(BROKER_NAME)
                    .mailbox(BROKER_MAILBOX),
            );
        let supervisor = node.spawn_supervisor(spec).await?;
        let _ = core.supervisor.set(supervisor);
        let addr = node.lookup::<BrokerMsg>(BROKER_NAME)?;
        Ok(Broker { core, addr })
    }

    /// A handle to the broker already running on `node`.
    pub async fn lookup(node: &Node) -> Result<Broker, BrokerError> {
        let addr = node.lookup::<BrokerMsg>(BROKER_NAME)?;
        let shared = addr
            .ask(|reply| command(Command::Shared(reply)), ASK)
            .await?;
        let core = shared
            .downcast::<Core>()
            .map_err(|_| BrokerError::Closed(format!("the broker of node {}", node.id())))?;
        Ok(Broker { core, addr })
    }

    /// The node this broker runs on.
    pub fn node(&self) -> &Node {
        &self.core.node
    }

    /// The broker actor's address.
    pub fn addr(&self) -> &Addr<BrokerMsg> {
        &self.addr
    }

    /// Publishes `message` on `topic`, encoded with bincode and without headers. See
    /// [`Broker::publish_with`].
    pub async fn publish<T: Serialize + ?Sized>(
        &self,
        topic: &str,
        message: &T,
    ) -> Result<(), BrokerError> {
        self.publish_with(topic, message, PublishOptions::default())
            .await
    }

    /// Publishes `message` on `topic` with headers and a content type: every plain subscriber
    /// and one member of each queue group, on any node, gets it.
    ///
    /// Returns once the message is queued for every local subscriber and handed to the link of
    /// every interested node: it waits only when a subscriber has the blocking policy (then it
    /// fails with [`BrokerError::Full`] if that subscriber had no room in time) or when a peer's
    /// flow-control window is full ([`BrokerError::Overloaded`] past the publish timeout).
    /// Publishing on a topic nobody subscribed is not an error (counted in `unrouted`).
    pub async fn publish_with<T: Serialize + ?Sized>(
        &self,
        topic: &str,
        message: &T,
        options: PublishOptions,
    ) -> Result<(), BrokerError> {
        check_name(topic)?;
        let body = self
            .core
            .node
            .encode(options.content_type, message)
            .map_err(|err| BrokerError::Encode {
                topic: topic.to_owned(),
                detail: err.to_string(),
            })?;
        self.publish_raw(topic, options.content_type.as_str(), options.headers, body)
            .await
    }

    /// Publishes a payload already encoded in `content_type` (for bridges and proxies).
    pub async fn publish_raw(
        &self,
        topic: &str,
        content_type: &str,
        headers: Metadata,
        body: Vec<u8>,
    ) -> Result<(), BrokerError> {
        check_name(topic)?;
        let env = Envelope {
            origin: self.core.me,
            id: self.core.next_msg_id(),
            topic: topic.to_owned(),
            content_type: content_type.to_owned(),
            headers,
            body,
        };
        let span = tracing::trace_span!("publish", topic, id = env.id);
        self.core.publish(env).instrument(span).await
    }

    /// Subscribes `handler` to `topic` (plain, at-most-once, drop-oldest beyond 4,096 queued).
    pub async fn subscribe<T, H>(
        &self,
        topic: &str,
        handler: H,
    ) -> Result<Subscription, BrokerError>
    where
        T: DeserializeOwned + Send + 'static,
        H: Handler<T>,
    {
        self.subscribe_spec(&SubscriberSpec::new(topic, handler))
            .await
    }

    /// Subscribes `handler` to `topic` with `options`.
    pub async fn subscribe_with<T, H>(
        &self,
        topic: &str,
        options: SubscribeOptions,
        handler: H,
    ) -> Result<Subscription, BrokerError>
    where
        T: DeserializeOwned + Send + 'static,
        H: Handler<T>,
    {
        self.subscribe_spec(&SubscriberSpec::new(topic, handler).options(options))
            .await
    }

    /// Starts a declared subscriber: its supervised actor first, then its interest, here and on
    /// every peer. When this returns, publishes from this node reach it; other nodes learn of it
    /// within a round trip.
    pub async fn subscribe_spec(&self, spec: &SubscriberSpec) -> Result<Subscription, BrokerError> {
        let topic = spec.topic();
        check_name(topic)?;
        let options = spec.subscribe_options();
        if let Some(group) = &options.group {
            check_name(group)?;
        }
        let redelivery = match &options.delivery {
            Delivery::AtMostOnce => None,
            Delivery::AtLeastOnce(r) => Some(r.clone()),
        };
        let id = self.core.next_sub_id();
        let queue = Arc::new(SubQueue::new(
            id,
            topic.to_owned(),
            options.group.clone(),
            options.backpressure,
            redelivery.clone(),
        ));
        let parent = self
            .core
            .supervisor
            .get()
            .ok_or_else(|| BrokerError::Closed("the broker has no supervisor".into()))?;
        let supervisor = parent
            .start_supervisor(spec.supervisor(queue.clone(), self.core.clone()))
            .await?;
        let interest = Interest {
            sub: id,
            topic: topic.to_owned(),
            group: options.group.clone(),
            redelivery,
            backpressure: options.backpressure,
        };
        let for_actor = queue.clone();
        let subscribed = self
            .addr
            .ask(
                |reply| {
                    command(Command::Subscribe {
                        queue: for_actor,
                        interest,
                        reply,
                    })
                },
                ASK,
            )
            .await;
        if let Err(err) = subscribed {
            let _ = parent.stop_child(supervisor.id()).await;
            return Err(err.into());
        }
        tracing::debug!(topic, sub = id, group = ?options.group, "subscribed");
        Ok(Subscription {
            queue,
            broker: self.clone(),
            supervisor,
        })
    }

    pub(crate) async fn unsubscribe_id(&self, sub: u64) -> Result<(), BrokerError> {
        self.addr
            .ask(|reply| command(Command::Unsubscribe { sub, reply }), ASK)
            .await?;
        Ok(())
    }

    /// The broker's counters.
    pub fn stats(&self) -> BrokerStats {
        self.core.stats()
    }

    /// Where `topic`'s subscribers are, as this node knows now (its own and its peers').
    pub fn interest(&self, topic: &str) -> TopicInterest {
        self.core.topic_interest(topic)
    }

    /// The peer brokers this one exchanges interest with.
    pub fn peers(&self) -> Vec<NodeId> {
        self.core
            .peer_list()
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    }
}

fn check_name(name: &str) -> Result<(), BrokerError> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(BrokerError::InvalidTopic(name.chars().take(64).collect()));
    }
    Ok(())
}

/// A running subscription. Dropping the handle leaves the subscription running (as services
/// expect); [`Subscription::unsubscribe`] ends it.
#[derive(Debug)]
pub struct Subscription {
    pub(crate) queue: Arc<SubQueue>,
    pub(crate) broker: Broker,
    pub(crate) supervisor: SupervisorRef,
}

impl Subscription {
    /// The subscription's id (unique on its node).
    pub fn id(&self) -> u64 {
        self.queue.id
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.queue.topic
    }

    /// The queue group, if any.
    pub fn group(&self) -> Option<&str> {
        self.queue.group.as_deref()
    }

    /// The subscription's counters: received, handled, failed, crashed, dropped, rejected,
    /// undecodable, discarded, and what is queued now.
    pub fn stats(&self) -> SubscriptionStats {
        self.queue.stats()
    }

    /// Whether the subscription ended (unsubscribed, or withdrawn after too many crashes).
    pub fn is_closed(&self) -> bool {
        self.queue.is_closed()
    }

    /// Withdraws the subscription here and on every peer, then stops its actor. What is still
    /// queued is discarded (counted in `discarded`); its unacknowledged at-least-once group
    /// messages move to other members.
    pub async fn unsubscribe(self) -> Result<SubscriptionStats, BrokerError> {
        self.broker.unsubscribe_id(self.queue.id).await?;
        let id = self.supervisor.id();
        if let Some(parent) = self.broker.core.supervisor.get() {
            // Already gone if it gave up on its own.
            let _ = parent.stop_child(id).await;
        }
        Ok(self.queue.stats())
    }
}
