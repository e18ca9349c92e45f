//! What a client sends an endpoint actor, and what comes back: the service layer's protocol on
//! top of the runtime.
//!
//! The envelope is encoded by the runtime (bincode); the request and response bodies inside it
//! are encoded in the caller's content type, which the server answers in, so a JSON caller gets
//! JSON back and a bincode caller bincode, from the same handler. Bodies are [`Body`]s: a small
//! one travels in place inside its message, with no allocation of its own on either node.

use std::time::Duration;

use micro_runtime::{ContentType, RemoteMessage, Reply, StreamSender};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::body::Body;
use crate::{Metadata, ServiceError};

/// A message for an endpoint actor.
#[derive(Serialize, Deserialize)]
pub(crate) enum EndpointMsg {
    /// A unary call: one request, one answer.
    Call {
        head: Head,
        body: Body,
        reply: Reply<Result<Answer, ServiceError>>,
    },
    /// Opens a stream: the caller's sender for responses goes in; the server's sender for
    /// requests comes back.
    Open {
        head: Head,
        responses: StreamSender<StreamItem>,
        reply: Reply<Result<StreamSender<StreamItem>, ServiceError>>,
    },
}

impl RemoteMessage for EndpointMsg {
    const TYPE_NAME: &'static str = "micro.service.Endpoint";
}

/// What every call carries besides its body.
#[derive(Serialize, Deserialize)]
pub(crate) struct Head {
    /// How the bodies are encoded, both ways.
    pub(crate) content_type: WireContentType,
    /// The caller's headers.
    pub(crate) metadata: Metadata,
    /// Time left when the call was sent (the server counts its deadline from arrival).
    pub(crate) timeout_ms: Option<u64>,
}

impl Head {
    pub(crate) fn timeout(&self) -> Option<Duration> {
        self.timeout_ms.map(Duration::from_millis)
    }
}

/// A unary call's answer.
#[derive(Serialize, Deserialize)]
pub(crate) struct Answer {
    /// Headers set by the handler (and wrappers).
    pub(crate) metadata: Metadata,
    /// The response, in the request's content type.
    pub(crate) body: Body,
}

/// One item of a streaming call, either way. The stream's clean end is the sender finishing.
#[derive(Serialize, Deserialize)]
pub(crate) enum StreamItem {
    /// A message, in the call's content type.
    Data(Body),
    /// The other side failed; nothing follows.
    Error(ServiceError),
}

/// A content type on the wire: empty for bincode (the default, one byte), else its MIME name.
#[derive(Clone, Copy)]
pub(crate) struct WireContentType(pub(crate) ContentType);

impl Serialize for WireContentType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            ContentType::Bincode => serializer.serialize_str(""),
            other => serializer.serialize_str(other.as_str()),
        }
    }
}

impl<'de> Deserialize<'de> for WireContentType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        if name.is_empty() {
            return Ok(WireContentType(ContentType::Bincode));
        }
        ContentType::parse(&name)
            .map(WireContentType)
            .map_err(serde::de::Error::custom)
    }
}

/// The name of the actor serving `endpoint` of `service` on a node.
pub(crate) fn actor_name(service: &str, endpoint: &str) -> String {
    format!("{service}/{endpoint}")
}

/// Clamps a duration to whole milliseconds for the wire (at least 1 so that a tiny remaining time
/// is not read as "none").
pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}
