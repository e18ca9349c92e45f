//! The broker's error type.

use serde::{Deserialize, Serialize};

/// What can go wrong with publishing, subscribing or handling events.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum BrokerError {
    /// The topic (or queue group) name is empty or too long.
    #[error("invalid topic or group {0:?}")]
    InvalidTopic(String),
    /// The message could not be encoded for publishing.
    #[error("cannot encode the message for {topic:?}: {detail}")]
    Encode {
        /// The topic it was published on.
        topic: String,
        /// What the codec said.
        detail: String,
    },
    /// A delivered payload could not be decoded into the subscriber's type (counted in the
    /// subscription's `undecodable`; the handler never sees it).
    #[error("cannot decode a message of {topic:?} ({content_type}): {detail}")]
    Decode {
        /// The topic.
        topic: String,
        /// The payload's content type.
        content_type: String,
        /// What the codec said.
        detail: String,
    },
    /// A subscriber with the blocking backpressure policy had no room for the message within its
    /// timeout: the publish fails (other subscribers of the topic may have received it).
    #[error("subscriber {subscription} of {topic:?} had no room within {timeout_ms} ms")]
    Full {
        /// The topic.
        topic: String,
        /// The subscription that was full.
        subscription: u64,
        /// How long the publisher waited.
        timeout_ms: u64,
    },
    /// Too much is in flight: the link to a node is at its window of unconfirmed frames, or the
    /// broker holds its maximum of unacknowledged at-least-once messages. Retry later.
    #[error("broker overloaded: {0}")]
    Overloaded(String),
    /// The subscription (or the broker) is closed.
    #[error("closed: {0}")]
    Closed(String),
    /// The broker actor or a peer could not be reached.
    #[error("broker unreachable: {0}")]
    Runtime(#[from] micro_runtime::Error),
}

/// What a subscriber's handler returns on failure: any error. For at-least-once subscriptions
/// an error is a negative acknowledgement (the message is redelivered).
pub type HandlerError = Box<dyn std::error::Error + Send + Sync + 'static>;
