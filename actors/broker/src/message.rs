//! Messages: their wire form (bytes, content type, headers) and the typed event a handler gets.

use micro_runtime::{Metadata, NodeId};
use serde::{Deserialize, Serialize};

/// Headers that travel with a message: the runtime's [`Metadata`] (same type, same wire form).
#[deprecated(note = "use `micro_runtime::Metadata` (the same type)")]
pub type Headers = Metadata;

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
    pub headers: Metadata,
    /// The payload (encoded as one byte string, not a sequence of numbers).
    #[serde(with = "as_bytes")]
    pub body: Vec<u8>,
}

/// Serde for a payload as a byte string: one length and the raw bytes in bincode, rather than
/// a sequence decoded element by element.
mod as_bytes {
    use std::fmt;

    use serde::de::{Error, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        deserializer.deserialize_byte_buf(BytesVisitor)
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        // Self-describing formats without byte strings (JSON) give a sequence.
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
            while let Some(byte) = seq.next_element::<u8>()? {
                bytes.push(byte);
            }
            Ok(bytes)
        }
    }
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
    pub headers: Metadata,
    /// Which delivery this is (1 for the first; more after redeliveries).
    pub attempt: u32,
    /// The message.
    pub message: T,
}
