//! Messages: their wire form (bytes, content type, headers) and the typed event a handler gets.

use std::collections::BTreeMap;

use micro_runtime::NodeId;
use serde::{Deserialize, Serialize};

/// Headers that travel with a message (Go Micro's `map[string]string`).
pub type Headers = BTreeMap<String, String>;

/// A published message as it travels: the payload stays bytes in its content type, so the broker
/// never needs the message's type and any codec works.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The publishing node.
    pub origin: NodeId,
    /// Unique per publishing node (with `origin`, unique in the cluster).
    pub id: u64,
    /// The topic.
    pub topic: String,
    /// The payload's content type (a MIME name the runtime's codecs know).
    pub content_type: String,
    /// The headers.
    pub headers: Headers,
    /// The payload.
    pub body: Vec<u8>,
}

/// What a subscriber's handler receives: the decoded message and what came with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event<T> {
    /// The topic it was published on.
    pub topic: String,
    /// The message id, unique per publishing node: a redelivered message keeps its id, so
    /// at-least-once handlers can drop duplicates by (`publisher`, `id`).
    pub id: u64,
    /// The node that published it.
    pub publisher: NodeId,
    /// The headers.
    pub headers: Headers,
    /// Which delivery this is (1 for the first; more after redeliveries).
    pub attempt: u32,
    /// The message.
    pub message: T,
}
