//! Subscriptions: the handler trait, the supervised actor that runs a handler over its queue, the
//! declarative [`SubscriberSpec`] a service definition holds, and the [`Subscription`] handle.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use micro_runtime::{
    Actor, ActorError, ChildSpec, ContentType, Context, Restart, Strategy, SupervisorSpec,
};
use serde::de::DeserializeOwned;

use crate::core::Core;
use crate::protocol::Outcome;
use crate::protocol::SUB_PREFIX;
use crate::queue::{Item, SubMsg, SubQueue};
use crate::{BrokerError, Event, HandlerError, SubscribeOptions};

/// Deliveries handled per turn before the actor yields to its mailbox.
const BATCH: usize = 64;

/// Handles the events of a subscription. Implemented for every `Fn(Event<T>) -> impl Future`
/// returning `Result<(), HandlerError>`, such as an `async fn`:
///
/// ```
/// use micro_broker::{Event, HandlerError};
///
/// async fn on_greeting(event: Event<String>) -> Result<(), HandlerError> {
///     tracing::info!(greeting = %event.message, "got one");
///     Ok(())
/// }
/// ```
///
/// The handler runs inside the subscription's actor, one event at a time, in queue order. A
/// panic restarts the actor (the queue survives); an error is a nack for at-least-once
/// subscriptions and a counted failure otherwise.
pub trait Handler<T>: Send + Sync + 'static {
    /// Handles one event.
    fn handle(&self, event: Event<T>) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

impl<T, F, Fut> Handler<T> for F
where
    F: Fn(Event<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send,
{
    fn handle(&self, event: Event<T>) -> impl Future<Output = Result<(), HandlerError>> + Send {
        self(event)
    }
}

/// The actor that runs one subscription's handler over its queue.
struct SubActor<T, H> {
    queue: Arc<SubQueue>,
    core: Arc<Core>,
    handler: Arc<H>,
    _message: PhantomData<fn() -> T>,
}

impl<T, H> SubActor<T, H>
where
    T: DeserializeOwned + Send + 'static,
    H: Handler<T>,
{
    async fn deliver(&self, item: Item) {
        let env = &item.env;
        let reliable = self.queue.redelivery.is_some();
        let decoded = ContentType::parse(&env.content_type)
            .and_then(|ct| self.core.node.decode::<T>(ct, &env.body));
        let message = match decoded {
            Ok(message) => message,
            Err(err) => {
                self.queue
                    .counters
                    .undecodable
                    .fetch_add(1, Ordering::Relaxed);
                let err = BrokerError::Decode {
                    topic: env.topic.clone(),
                    content_type: env.content_type.clone(),
                    detail: err.to_string(),
                };
                tracing::warn!(sub = self.queue.id, %err, "undecodable message");
                if reliable {
                    self.settle(&item, Outcome::Dead(err.to_string()));
                }
                self.queue.done();
                return;
            }
        };
        let event = Event {
            topic: env.topic.clone(),
            id: env.id,
            publisher: env.origin,
            headers: env.headers.clone(),
            attempt: item.attempt,
            message,
        };
        let result = self.handler.handle(event).await;
        self.queue.done();
        match result {
            Ok(()) => {
                self.queue.counters.handled.fetch_add(1, Ordering::Relaxed);
                if reliable {
                    self.settle(&item, Outcome::Ack);
                }
            }
            Err(err) => {
                self.queue.counters.failed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(sub = self.queue.id, topic = %env.topic, %err, "handler failed");
                if reliable {
                    self.settle(&item, Outcome::Nack(err.to_string()));
                }
            }
        }
    }

    fn settle(&self, item: &Item, outcome: Outcome) {
        self.core
            .settle(&item.env, self.queue.id, &self.queue.group, outcome);
    }
}

impl<T, H> Actor for SubActor<T, H>
where
    T: DeserializeOwned + Send + 'static,
    H: Handler<T>,
{
    type Msg = SubMsg;

    async fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        if let Some(lost) = self.queue.take_in_flight() {
            // The previous incarnation crashed handling it. At-least-once: the publisher's ack
            // timeout redelivers it; at-most-once: it is lost, and counted.
            self.queue.counters.crashed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(sub = self.queue.id, topic = %lost.env.topic, id = lost.env.id, "handler crashed");
        }
        self.queue.set_waker(ctx.addr());
        Ok(())
    }

    async fn handle(&mut self, _ctx: &mut Context<Self>, msg: SubMsg) -> Result<(), ActorError> {
        match msg {
            SubMsg::Drain => {
                self.queue.draining();
                for _ in 0..BATCH {
                    let Some(item) = self.queue.pop() else { break };
                    self.deliver(item).await;
                }
                if self.queue.len() > 0 {
                    self.queue.schedule();
                }
            }
        }
        Ok(())
    }
}

type Starter = dyn Fn(Arc<SubQueue>, Arc<Core>) -> SupervisorSpec + Send + Sync;

/// A subscriber described as a value: topic, options and handler. A service definition holds
/// these (like Go Micro's `RegisterSubscriber`) and starts them with
/// [`Broker::subscribe_spec`](crate::Broker::subscribe_spec); the same spec can be started on several brokers.
///
/// ```
/// use micro_broker::{Event, HandlerError, SubscribeOptions, SubscriberSpec};
///
/// async fn on_order(event: Event<String>) -> Result<(), HandlerError> {
///     let _ = event.message;
///     Ok(())
/// }
///
/// let spec = SubscriberSpec::new("orders.placed", on_order)
///     .options(SubscribeOptions::new().queue("billing"));
/// assert_eq!(spec.topic(), "orders.placed");
/// ```
#[derive(Clone)]
pub struct SubscriberSpec {
    topic: String,
    options: SubscribeOptions,
    start: Arc<Starter>,
}

impl std::fmt::Debug for SubscriberSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriberSpec")
            .field("topic", &self.topic)
            .field("options", &self.options)
            .finish()
    }
}

impl SubscriberSpec {
    /// A plain at-most-once subscriber of `topic` whose handler decodes messages as `T`.
    pub fn new<T, H>(topic: impl Into<String>, handler: H) -> Self
    where
        T: DeserializeOwned + Send + 'static,
        H: Handler<T>,
    {
        let handler = Arc::new(handler);
        let start = move |queue: Arc<SubQueue>, core: Arc<Core>| {
            let handler = handler.clone();
            let id = queue.id;
            let factory = move || SubActor::<T, H> {
                queue: queue.clone(),
                core: core.clone(),
                handler: handler.clone(),
                _message: PhantomData,
            };
            SupervisorSpec::new(Strategy::OneForOne)
                .named(format!("{SUB_PREFIX}{id}"))
                .restart(Restart::Temporary)
                .child(ChildSpec::new(factory).shutdown(std::time::Duration::from_secs(5)))
        };
        SubscriberSpec {
            topic: topic.into(),
            options: SubscribeOptions::default(),
            start: Arc::new(start),
        }
    }

    /// Sets the subscription's options (queue group, delivery, backpressure, supervision).
    #[must_use = "a builder method returns the changed value"]
    pub fn options(mut self, options: SubscribeOptions) -> Self {
        self.options = options;
        self
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The options.
    pub fn subscribe_options(&self) -> &SubscribeOptions {
        &self.options
    }

    pub(crate) fn supervisor(&self, queue: Arc<SubQueue>, core: Arc<Core>) -> SupervisorSpec {
        (self.start)(queue, core)
            .intensity(self.options.intensity)
            .backoff(self.options.backoff)
    }
}

impl std::fmt::Debug for SubQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubQueue")
            .field("id", &self.id)
            .field("topic", &self.topic)
            .field("group", &self.group)
            .finish()
    }
}
