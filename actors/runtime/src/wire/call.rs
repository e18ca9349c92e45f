//! [`CallData`]: what travels beside a message rather than inside it — a deadline, a trace id,
//! headers. Locally it is a field of the message; between nodes it rides in the frame's
//! envelope (ARCHITECTURE.md, "Wire format"), so every layer above the runtime sends it in one
//! form and the runtime needs to know nothing about them.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, Visitor};
use serde::{Serialize, Serializer};
use tokio::time::Instant;

use super::context;

/// Per-message data a layer above the runtime (services, the next primitives) sets on a message
/// and reads on the other side: a deadline, a trace id, headers and the id of the type carried.
///
/// Put one `CallData` field in a message type. Locally the message carries it as it is; when the
/// message crosses nodes the field encodes as nothing in the body (a unit: no bytes in bincode,
/// `null` in JSON) and its contents go into the frame's envelope instead, from which the field is
/// filled again when the receiving node decodes the message. The deadline travels as the time
/// left (so clocks need not agree) and is read against the receiver's clock on arrival. One
/// `CallData` per message: a second one inside the same message replaces the first on the wire.
/// Empty call data costs nothing: no allocation, no clock read, no bytes.
///
/// ```
/// use micro_runtime::{CallData, RemoteMessage, Reply};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Get { key: String, call: CallData, reply: Reply<Option<String>> }
///
/// impl RemoteMessage for Get {
///     const TYPE_NAME: &'static str = "example.Get";
/// }
///
/// let call = CallData::new().with_trace_id(7).with_header("tenant", "acme");
/// assert_eq!(call.header("tenant"), Some("acme"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallData {
    /// When the caller stops waiting (in the frame: `deadline_ms`, the time left).
    pub deadline: Option<Instant>,
    /// The trace the message belongs to (in the frame: `trace_id`).
    pub trace_id: Option<u128>,
    /// Headers, in order (in the frame: `metadata`). Empty costs no allocation.
    pub headers: Vec<(String, String)>,
    /// A compact, stable id of the type of what the message carries, for the receiver to check
    /// before it decodes (services: the request's shape id; in the frame: `type_id`, appended
    /// to the envelope).
    pub type_id: Option<u64>,
    /// The node the message came from over a link: its id as its mutual-TLS certificate
    /// proves it. Set when a link's message is decoded, never sent (`None` locally).
    pub peer: Option<crate::NodeId>,
}

impl CallData {
    /// No deadline, no trace id, no headers.
    pub const fn new() -> Self {
        CallData {
            deadline: None,
            trace_id: None,
            headers: Vec::new(),
            type_id: None,
            peer: None,
        }
    }

    /// With a deadline.
    #[must_use]
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// With a trace id.
    #[must_use]
    pub fn with_trace_id(mut self, trace_id: u128) -> Self {
        self.trace_id = Some(trace_id);
        self
    }

    /// With one more header.
    #[must_use]
    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((key.into(), value.into()));
        self
    }

    /// With the id of the type it carries.
    #[must_use]
    pub fn with_type_id(mut self, type_id: u64) -> Self {
        self.type_id = Some(type_id);
        self
    }

    /// The first header named `key`.
    pub fn header(&self, key: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether there is nothing to carry.
    pub fn is_empty(&self) -> bool {
        self.deadline.is_none()
            && self.trace_id.is_none()
            && self.headers.is_empty()
            && self.type_id.is_none()
    }
}

impl Serialize for CallData {
    /// Writes a unit and hands the contents to the frame being encoded.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if !self.is_empty() {
            context::put_call(self);
        }
        serializer.serialize_unit()
    }
}

impl<'de> Deserialize<'de> for CallData {
    /// Reads a unit and takes the contents of the frame being decoded (none outside a delivery).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_unit(UnitVisitor)?;
        let mut call = context::take_call();
        call.peer = context::current_from();
        Ok(call)
    }
}

struct UnitVisitor;

impl<'de> Visitor<'de> for UnitVisitor {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a unit (call data travels in the frame's envelope)")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}
