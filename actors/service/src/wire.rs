//! What a client sends an endpoint actor, and what comes back: the service layer's protocol on
//! top of the runtime.
//!
//! The envelope is encoded by the runtime (bincode); the request and response bodies inside it
//! are encoded in the caller's content type, which the server answers in, so a JSON caller gets
//! JSON back and a bincode caller bincode, from the same handler. Bodies are [`Body`]s: a small
//! one travels in place inside its message, with no allocation of its own on either node.

use std::time::Duration;

use micro_runtime::{CallData, ContentType, RemoteMessage, Reply, StreamSender};
use serde::ser::SerializeTupleVariant;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::time::Instant;

use crate::body::Body;
use crate::context::TRACE_ID_HEADER;
use crate::{Metadata, ServiceError};

/// A message for an endpoint actor.
///
/// The caller's headers, trace id and (for a stream) deadline are its `call` data, which the
/// runtime carries in the frame's envelope (in the message itself locally); in the body `call`
/// is a unit, no bytes in bincode, so the body's layout is the one nodes before it wrote and read.
#[derive(Serialize, Deserialize)]
pub(crate) enum EndpointMsg {
    /// A unary call: one request, one answer.
    Call {
        head: Head,
        body: Body,
        reply: Reply<Result<Answer, ServiceError>>,
        #[serde(default)]
        call: CallData,
    },
    /// Opens a stream: the caller's sender for responses goes in; the server's sender for
    /// requests comes back.
    Open {
        head: Head,
        responses: StreamSender<StreamItem>,
        reply: Reply<Result<StreamSender<StreamItem>, ServiceError>>,
        #[serde(default)]
        call: CallData,
    },
}

/// A call's data as the client sends it: its headers, the trace id of a [`TRACE_ID_HEADER`] in
/// the form [`new_trace_id`](crate::new_trace_id) makes (16 to 32 lowercase hex digits, no
/// leading zero past 16) as the envelope's trace id, and the deadline if given. Nothing is
/// allocated when there are no headers.
pub(crate) fn call_data(metadata: &Metadata, deadline: Option<Instant>) -> CallData {
    let mut call = CallData::new();
    call.deadline = deadline;
    for (key, value) in metadata {
        match trace_id_of(key, value) {
            Some(id) if call.trace_id.is_none() => call.trace_id = Some(id),
            _ => call.headers.push((key.clone(), value.clone())),
        }
    }
    call
}

/// The call-data header in which a stream's caller sends the shape id of the response type it
/// reads (16 hex digits): the call data has one type id, the request's, and a stream has two
/// types. Taken out before the handler sees the headers. An older node shows it to the handler
/// as a header (and checks nothing); a call from an older node has none (nothing is checked).
pub(crate) const RESPONSE_TYPE_HEADER: &str = "micro-response-type";

/// Adds the response type's shape id to a stream's call data ([`RESPONSE_TYPE_HEADER`]).
pub(crate) fn put_response_type(call: &mut CallData, id: u64) {
    call.headers
        .push((RESPONSE_TYPE_HEADER.to_owned(), format!("{id:016x}")));
}

/// Takes the response type's shape id out of a stream's call data, if the caller sent one.
pub(crate) fn take_response_type(call: &mut CallData) -> Option<u64> {
    let at = call
        .headers
        .iter()
        .position(|(key, _)| key == RESPONSE_TYPE_HEADER)?;
    let (_, value) = call.headers.remove(at);
    u64::from_str_radix(&value, 16).ok()
}

/// A trace id header that formats back to the same text as `{:016x}`.
fn trace_id_of(key: &str, value: &str) -> Option<u128> {
    let canonical = key == TRACE_ID_HEADER
        && (16..=32).contains(&value.len())
        && value
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        && (value.len() == 16 || !value.starts_with('0'));
    canonical
        .then(|| u128::from_str_radix(value, 16).ok())
        .flatten()
}

/// The headers a handler sees: the call data's (its trace id as [`TRACE_ID_HEADER`]), or those
/// of a head an older node sent.
pub(crate) fn headers_of(call: CallData, head: Headers) -> Headers {
    if call.headers.is_empty() && call.trace_id.is_none() {
        return head;
    }
    let mut headers = head;
    for (key, value) in call.headers {
        headers.insert(key, value);
    }
    if let Some(id) = call.trace_id {
        headers.insert(TRACE_ID_HEADER.to_owned(), format!("{id:016x}"));
    }
    headers
}

impl RemoteMessage for EndpointMsg {
    const TYPE_NAME: &'static str = "micro.service.Endpoint";
}

/// The body's content type. On the wire a bincode head is one byte (variant `Plain`); any other
/// is `Full(content type, headers, timeout_ms)` with no headers and no timeout — headers and
/// deadline travel as the message's call data — a form nodes from before that still read. A
/// `Full` head from such a node still decodes, with its headers and timeout.
pub(crate) struct Head {
    /// How the bodies are encoded, both ways.
    pub(crate) content_type: WireContentType,
    /// Headers in the head: only from a node that sent them there (before call data).
    pub(crate) metadata: Headers,
    /// Time left when the call was sent, in the head: only from a node that sent it there.
    pub(crate) timeout_ms: Option<u64>,
}

impl Head {
    /// The head of a call in `content_type`.
    pub(crate) fn new(content_type: ContentType) -> Head {
        Head {
            content_type: WireContentType(content_type),
            metadata: Headers::default(),
            timeout_ms: None,
        }
    }

    pub(crate) fn timeout(&self) -> Option<Duration> {
        self.timeout_ms.map(Duration::from_millis)
    }

    fn is_plain(&self) -> bool {
        self.content_type.0 == ContentType::Bincode
            && self.metadata.0.is_none()
            && self.timeout_ms.is_none()
    }
}

impl Serialize for Head {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.is_plain() {
            return serializer.serialize_unit_variant("Head", 0, "Plain");
        }
        let mut full = serializer.serialize_tuple_variant("Head", 1, "Full", 3)?;
        full.serialize_field(&self.content_type)?;
        full.serialize_field(&self.metadata)?;
        full.serialize_field(&self.timeout_ms)?;
        full.end()
    }
}

/// [`Head`] as it is read.
#[derive(Deserialize)]
#[serde(rename = "Head")]
enum HeadWire {
    Plain,
    Full(WireContentType, Headers, Option<u64>),
}

impl<'de> Deserialize<'de> for Head {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match HeadWire::deserialize(deserializer)? {
            HeadWire::Plain => Head {
                content_type: WireContentType(ContentType::Bincode),
                metadata: Headers::default(),
                timeout_ms: None,
            },
            HeadWire::Full(content_type, metadata, timeout_ms) => Head {
                content_type,
                metadata,
                timeout_ms,
            },
        })
    }
}

/// A unary call's answer. On the wire an answer without headers — most — is variant `Body`
/// with the body alone; one with headers is `Full(headers, body)`.
pub(crate) struct Answer {
    /// Headers set by the handler (and wrappers).
    pub(crate) metadata: Headers,
    /// The response, in the request's content type.
    pub(crate) body: Body,
}

impl Serialize for Answer {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.metadata.0.is_none() {
            return serializer.serialize_newtype_variant("Answer", 0, "Body", &self.body);
        }
        let mut full = serializer.serialize_tuple_variant("Answer", 1, "Full", 2)?;
        full.serialize_field(&self.metadata)?;
        full.serialize_field(&self.body)?;
        full.end()
    }
}

/// [`Answer`] as it is read.
#[derive(Deserialize)]
#[serde(rename = "Answer")]
enum AnswerWire {
    Body(Body),
    Full(Headers, Body),
}

impl<'de> Deserialize<'de> for Answer {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match AnswerWire::deserialize(deserializer)? {
            AnswerWire::Body(body) => Answer {
                metadata: Headers::default(),
                body,
            },
            AnswerWire::Full(metadata, body) => Answer { metadata, body },
        })
    }
}

/// Headers as the service layer carries them: nothing at all when there are none — most calls —
/// so that making, cloning and dropping them costs nothing. On the wire, a map like
/// [`Metadata`].
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Headers(Option<Metadata>);

/// The headers of a call that has none, to lend out.
static NO_HEADERS: Metadata = Metadata::new();

impl Headers {
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
        // An empty map allocates nothing.
        Metadata::deserialize(deserializer).map(Headers::from)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn head(content_type: ContentType, metadata: &[(&str, &str)], timeout_ms: Option<u64>) -> Head {
        let mut headers = Headers::default();
        for (k, v) in metadata {
            headers.insert((*k).to_owned(), (*v).to_owned());
        }
        Head {
            content_type: WireContentType(content_type),
            metadata: headers,
            timeout_ms,
        }
    }

    fn round_trip<T: Serialize + serde::de::DeserializeOwned>(
        codec: ContentType,
        value: &T,
    ) -> (T, usize) {
        let bytes = codec.encode(value).unwrap();
        (codec.decode(&bytes).unwrap(), bytes.len())
    }

    #[test]
    fn the_usual_head_is_one_byte_and_any_other_keeps_every_field() {
        let (plain, len) = round_trip(ContentType::Bincode, &head(ContentType::Bincode, &[], None));
        assert_eq!(len, 1);
        assert!(plain.is_plain());
        for codec in [ContentType::Bincode, ContentType::Json] {
            for sent in [
                head(ContentType::Json, &[], None),
                head(ContentType::Bincode, &[("lang", "fr")], None),
                head(ContentType::Bincode, &[], Some(250)),
                head(ContentType::Json, &[("a", "1"), ("b", "2")], Some(7)),
            ] {
                let (read, _) = round_trip(codec, &sent);
                assert!(read.content_type.0 == sent.content_type.0);
                assert_eq!(read.metadata, sent.metadata);
                assert_eq!(read.timeout_ms, sent.timeout_ms);
            }
        }
    }

    #[test]
    fn an_answer_carries_its_headers_only_when_it_has_some() {
        let body = Body::copy_from_slice(b"hello");
        let bare = Answer {
            metadata: Headers::default(),
            body: body.clone(),
        };
        let mut headers = Headers::default();
        headers.insert("served-in".to_owned(), "fr".to_owned());
        let full = Answer {
            metadata: headers.clone(),
            body: body.clone(),
        };
        for codec in [ContentType::Bincode, ContentType::Json] {
            let (read, bare_len) = round_trip(codec, &bare);
            assert_eq!(
                (read.metadata, read.body),
                (Headers::default(), body.clone())
            );
            let (read, full_len) = round_trip(codec, &full);
            assert_eq!((read.metadata, read.body), (headers.clone(), body.clone()));
            assert!(bare_len < full_len);
        }
    }

    #[test]
    fn a_new_head_is_read_by_older_nodes_and_an_older_full_head_still_decodes() {
        /// The head as nodes before call data wrote and read it.
        #[derive(Serialize, Deserialize)]
        #[serde(rename = "Head")]
        enum OlderHead {
            Plain,
            Full(String, Metadata, Option<u64>),
        }
        for codec in [ContentType::Bincode, ContentType::Json] {
            // What a node sends now, an older node reads: headers and timeout travel elsewhere.
            let bytes = codec.encode(&Head::new(ContentType::Json)).unwrap();
            let older: OlderHead = codec.decode(&bytes).unwrap();
            assert!(
                matches!(&older, OlderHead::Full(ct, headers, None) if ct == "application/json" && headers.is_empty())
            );
            let bytes = codec.encode(&Head::new(ContentType::Bincode)).unwrap();
            assert!(matches!(codec.decode(&bytes).unwrap(), OlderHead::Plain));

            // What an older node sends, a node reads now, headers and timeout included.
            let mut headers = Metadata::new();
            headers.insert("lang".into(), "fr".into());
            let bytes = codec
                .encode(&OlderHead::Full(String::new(), headers.clone(), Some(250)))
                .unwrap();
            let head: Head = codec.decode(&bytes).unwrap();
            assert!(head.content_type.0 == ContentType::Bincode);
            assert_eq!(head.metadata.get(), &headers);
            assert_eq!(head.timeout_ms, Some(250));
        }
    }

    #[test]
    fn call_data_moves_a_trace_id_header_to_the_trace_id_and_back() {
        let mut metadata = Metadata::new();
        metadata.insert("tenant".into(), "acme".into());
        metadata.insert(TRACE_ID_HEADER.into(), "feedfacecafebeef".into());
        let call = call_data(&metadata, None);
        assert_eq!(call.trace_id, Some(0xfeed_face_cafe_beef));
        assert_eq!(call.headers, vec![("tenant".into(), "acme".into())]);
        assert_eq!(headers_of(call, Headers::default()).get(), &metadata);

        // A trace id that would not format back the same stays a header.
        for odd in [
            "FEEDFACECAFEBEEF",
            "abc",
            "0feedfacecafebeef",
            "not hex at all!!",
        ] {
            let mut metadata = Metadata::new();
            metadata.insert(TRACE_ID_HEADER.into(), odd.into());
            let call = call_data(&metadata, None);
            assert_eq!(call.trace_id, None, "{odd}");
            assert_eq!(headers_of(call, Headers::default()).get(), &metadata);
        }

        // No headers: nothing to carry.
        assert!(call_data(&Metadata::new(), None).is_empty());
    }

    #[test]
    fn a_head_of_an_unknown_variant_is_refused() {
        let bytes = ContentType::Bincode.encode(&7u32).unwrap();
        assert!(ContentType::Bincode.decode::<Head>(&bytes).is_err());
    }
}
