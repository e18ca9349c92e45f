//! Options of subscriptions and publishes.

use std::time::Duration;

use micro_runtime::{Backoff, ContentType, Intensity};
use serde::{Deserialize, Serialize};

use micro_runtime::Metadata;

/// What a subscription promises about delivery. Chosen at subscribe time.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Delivery {
    /// At most once (the default): never a duplicate; a message in flight when a node, a link or
    /// a handler fails is lost (and counted where the loss is seen).
    #[default]
    AtMostOnce,
    /// At least once: every delivery is acknowledged by the handler's result; unacknowledged
    /// messages are redelivered, then dead-lettered. See [`Redelivery`].
    AtLeastOnce(Redelivery),
}

/// How at-least-once messages are redelivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redelivery {
    /// How long the publishing broker waits for an acknowledgement (from the moment it sends,
    /// queueing time at the subscriber included) before it redelivers.
    pub ack_timeout: Duration,
    /// Deliveries of one message (the first included) before it goes to the dead-letter topic.
    pub max_attempts: u32,
    /// Where messages go after `max_attempts` failed deliveries, or when they cannot be decoded:
    /// `None` means `"<topic>.dead-letter"`.
    pub dead_letter: Option<String>,
}

impl Default for Redelivery {
    /// Ack within 5 s, 5 attempts, dead letters on `"<topic>.dead-letter"`.
    fn default() -> Self {
        Redelivery {
            ack_timeout: Duration::from_secs(5),
            max_attempts: 5,
            dead_letter: None,
        }
    }
}

/// What happens when a subscriber's queue is full. Chosen at subscribe time; every queue is
/// bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Backpressure {
    /// Keep the newest `capacity` messages: a message arriving at a full queue pushes out the
    /// oldest one, which is counted in the subscription's `dropped`. Publishers never wait.
    DropOldest {
        /// Messages the queue holds.
        capacity: usize,
    },
    /// Make the publisher wait for room up to `timeout`, then fail its publish with
    /// [`BrokerError::Full`](crate::BrokerError::Full) (counted in `rejected`). A remote
    /// publisher waits for the subscriber's node to confirm it took the message.
    Block {
        /// Messages the queue holds.
        capacity: usize,
        /// How long a publisher waits for room.
        timeout: Duration,
    },
}

impl Default for Backpressure {
    /// Drop the oldest beyond 4,096 queued messages.
    fn default() -> Self {
        Backpressure::DropOldest { capacity: 4096 }
    }
}

impl Backpressure {
    pub(crate) fn capacity(self) -> usize {
        match self {
            Backpressure::DropOldest { capacity } | Backpressure::Block { capacity, .. } => {
                capacity.max(1)
            }
        }
    }
}

/// How a subscription is made: queue group, delivery guarantee, backpressure, supervision.
///
/// ```
/// use micro_broker::{Backpressure, Redelivery, SubscribeOptions};
/// use std::time::Duration;
///
/// let options = SubscribeOptions::new()
///     .queue("billing")
///     .at_least_once(Redelivery { ack_timeout: Duration::from_secs(2), ..Redelivery::default() })
///     .backpressure(Backpressure::Block { capacity: 1024, timeout: Duration::from_millis(500) });
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct SubscribeOptions {
    pub(crate) group: Option<String>,
    pub(crate) delivery: Delivery,
    pub(crate) backpressure: Backpressure,
    pub(crate) intensity: Intensity,
    pub(crate) backoff: Backoff,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        SubscribeOptions {
            group: None,
            delivery: Delivery::AtMostOnce,
            backpressure: Backpressure::default(),
            intensity: Intensity::new(100, Duration::from_secs(10)),
            backoff: Backoff::exponential(Duration::from_millis(5), Duration::from_secs(1)),
        }
    }
}

impl SubscribeOptions {
    /// A plain at-most-once subscription that drops the oldest beyond 4,096 queued messages.
    pub fn new() -> Self {
        SubscribeOptions::default()
    }

    /// Joins the queue group `group`: each message of the topic goes to one member of the group
    /// across the cluster.
    #[must_use = "a builder method returns the changed value"]
    pub fn queue(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// Asks for at-least-once delivery.
    #[must_use = "a builder method returns the changed value"]
    pub fn at_least_once(mut self, redelivery: Redelivery) -> Self {
        self.delivery = Delivery::AtLeastOnce(redelivery);
        self
    }

    /// Sets the delivery guarantee.
    #[must_use = "a builder method returns the changed value"]
    pub fn delivery(mut self, delivery: Delivery) -> Self {
        self.delivery = delivery;
        self
    }

    /// Sets the backpressure policy of the subscriber's queue.
    #[must_use = "a builder method returns the changed value"]
    pub fn backpressure(mut self, backpressure: Backpressure) -> Self {
        self.backpressure = backpressure;
        self
    }

    /// How many handler crashes within a period the subscription survives (it is restarted after
    /// each); beyond that it is closed and its interest withdrawn. Default: 100 within 10 s.
    #[must_use = "a builder method returns the changed value"]
    pub fn intensity(mut self, intensity: Intensity) -> Self {
        self.intensity = intensity;
        self
    }

    /// The delay before a crashed handler is restarted. Default: 5 ms doubling up to 1 s.
    #[must_use = "a builder method returns the changed value"]
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }
}

/// How a message is published: headers and the codec of its payload.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PublishOptions {
    pub(crate) headers: Metadata,
    pub(crate) content_type: ContentType,
}

impl PublishOptions {
    /// No headers, bincode payload.
    pub fn new() -> Self {
        PublishOptions::default()
    }

    /// Adds a header.
    #[must_use = "a builder method returns the changed value"]
    pub fn header(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(key.into(), value.into());
        self
    }

    /// Encodes the payload with `content_type` (any codec the runtime knows: bincode, JSON, or a
    /// registered one); subscribers decode whatever content type arrives.
    #[must_use = "a builder method returns the changed value"]
    pub fn content_type(mut self, content_type: ContentType) -> Self {
        self.content_type = content_type;
        self
    }
}
