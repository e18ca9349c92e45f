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
    pub(crate) metadata: Headers,
    /// Time left when the call was sent (the server counts its deadline from arrival). A unary
    /// call leaves it out: its reply port carries the same deadline.
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
    pub(crate) metadata: Headers,
    /// The response, in the request's content type.
    pub(crate) body: Body,
}

/// Headers as the service layer carries them: nothing at all when there are none — most calls —
/// so that making, cloning and dropping them costs nothing. On the wire, a map like
/// [`Metadata`].
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Headers(Option<Metadata>);

/// The headers of a call that has none, to lend out.
static NO_HEADERS: Metadata = Metadata::new();

impl Headers {
    /// A copy of `metadata` (nothing to copy when it is empty).
    pub(crate) fn copy_of(metadata: &Metadata) -> Headers {
        Headers((!metadata.is_empty()).then(|| metadata.clone()))
    }

    pub(crate) fn get(&self) -> &Metadata {
        self.0.as_ref().unwrap_or(&NO_HEADERS)
    }

    pub(crate) fn insert(&mut self, key: String, value: String) {
        self.0.get_or_insert_default().insert(key, value);
    }

    pub(crate) fn into_metadata(self) -> Metadata {
        self.0.unwrap_or_default()
    }
}

impl From<Metadata> for Headers {
    fn from(metadata: Metadata) -> Headers {
        Headers((!metadata.is_empty()).then_some(metadata))
    }
}

impl Serialize for Headers {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.get().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Headers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(HeadersVisitor)
    }
}

struct HeadersVisitor;

impl<'de> serde::de::Visitor<'de> for HeadersVisitor {
    type Value = Headers;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a map of headers")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Headers, A::Error> {
        let mut headers = Headers::default();
        while let Some((key, value)) = map.next_entry::<String, String>()? {
            headers.insert(key, value);
        }
        Ok(headers)
    }
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
