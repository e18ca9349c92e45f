//! Frames: what links carry between nodes, their byte layout, and the link seam.
//!
//! An in-process link (see [`super::loopback`]) passes `Frame` values; the QUIC link writes them
//! with [`Frame::encode`] and reads them with [`Frame::decode`]. Either way bodies are bytes from a
//! codec, so a frame that crosses an in-process link has been through exactly the encoding a
//! network imposes. The layout is specified in ARCHITECTURE.md ("Wire format").

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::ContentType;
use super::call::CallData;
use crate::{ActorId, Error, ExitReason, NodeId};

/// The actor a frame is for, on its node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) enum Target {
    /// One incarnation of an actor, by id, on one incarnation of its node (ids restart with the
    /// process, so the node's incarnation tells an old address from a new actor).
    Id(ActorId, u64),
    /// Whatever incarnation holds the name when the frame arrives.
    Name(Arc<str>),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Id(id, _) => write!(f, "{id}"),
            Target::Name(name) => write!(f, "{name:?}"),
        }
    }
}

/// Header fields that travel with a message: the request id of a reply port inside it, and the
/// message's [`CallData`] (deadline, trace id, headers), which layers above the runtime set.
/// Newer versions append fields here; an older node ignores what follows the fields it knows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Envelope {
    /// The request id of the reply port inside the body, if any: lets the receiver refuse an
    /// ask it cannot deliver with a typed error instead of leaving the asker to time out.
    pub(crate) request: Option<u64>,
    /// Milliseconds the caller still waits ([`CallData::deadline`]).
    pub(crate) deadline_ms: Option<u64>,
    /// The trace this message belongs to ([`CallData::trace_id`]).
    pub(crate) trace_id: Option<u128>,
    /// Headers ([`CallData::headers`]).
    pub(crate) metadata: Vec<(String, String)>,
    /// The id of the type the message carries ([`CallData::type_id`]). Appended: nodes that
    /// know the rolling-upgrade rule ignore it; a header without it (from an older node) is
    /// read as `None`.
    pub(crate) type_id: Option<u64>,
}

/// The envelope as nodes wrote it before `type_id` was appended.
#[derive(Deserialize)]
struct EnvelopeV0 {
    request: Option<u64>,
    deadline_ms: Option<u64>,
    trace_id: Option<u128>,
    metadata: Vec<(String, String)>,
}

impl From<EnvelopeV0> for Envelope {
    fn from(old: EnvelopeV0) -> Self {
        Envelope {
            request: old.request,
            deadline_ms: old.deadline_ms,
            trace_id: old.trace_id,
            metadata: old.metadata,
            type_id: None,
        }
    }
}

impl Envelope {
    /// Nothing at all.
    pub(crate) const EMPTY: Envelope = Envelope {
        request: None,
        deadline_ms: None,
        trace_id: None,
        metadata: Vec::new(),
        type_id: None,
    };

    /// The call data it carries; the deadline is read against this node's clock (only when
    /// there is one).
    pub(crate) fn into_call(self) -> CallData {
        let mut call = CallData::new();
        call.deadline = self
            .deadline_ms
            .map(|ms| tokio::time::Instant::now() + std::time::Duration::from_millis(ms));
        call.trace_id = self.trace_id;
        call.headers = self.metadata;
        call.type_id = self.type_id;
        call
    }
}

/// Why a watched actor is gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Down {
    /// The actor's incarnation ended, with its reason.
    Exited(ExitReason),
    /// The actor was not running when the watch was set.
    NotRunning,
    /// Its node was lost (link closed or silent past the idle timeout) or shut down.
    NodeLost,
}

/// Link-level messages between two nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Control {
    /// May `name` be reached from outside with messages of `type_name`?
    Lookup {
        id: u64,
        name: String,
        type_name: String,
    },
    LookupResult {
        id: u64,
        result: Result<(), Error>,
    },
    /// Tell me (under `watch`) when `target` stops.
    Watch {
        watch: u64,
        target: Target,
    },
    Unwatch {
        watch: u64,
    },
    Down {
        watch: u64,
        down: Down,
    },
    /// Where does `node` listen? Sent to the peer that passed on a handle naming a node this
    /// one has no address for.
    Locate {
        id: u64,
        node: NodeId,
    },
    /// The answer to `Locate`: the address this node knows for it, if any.
    Located {
        id: u64,
        addr: Option<SocketAddr>,
    },
}

#[derive(Debug)]
pub(crate) enum Frame {
    /// A message for an actor.
    Deliver {
        to: Target,
        /// The message's declared, stable type name, checked before decoding.
        type_name: Cow<'static, str>,
        content_type: ContentType,
        envelope: Envelope,
        body: Vec<u8>,
    },
    /// The answer to a [`Reply`](crate::Reply) that travelled, for the asker's node.
    Reply {
        request: u64,
        outcome: Result<(ContentType, Vec<u8>), Error>,
    },
    Control(Control),
}

/// A frame read off the wire, borrowing its strings and body from the read buffer (no copies on
/// the receiving path).
#[derive(Debug)]
pub(crate) enum FrameView<'a> {
    Deliver {
        to: TargetRef<'a>,
        type_name: &'a str,
        content_type: ContentType,
        envelope: Envelope,
        body: &'a [u8],
    },
    Reply {
        request: u64,
        outcome: Result<(ContentType, &'a [u8]), Error>,
    },
    Control(Control),
}

/// [`Target`] as read off the wire (same encoding), borrowing the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub(crate) enum TargetRef<'a> {
    Id(ActorId, u64),
    Name(&'a str),
}

impl std::fmt::Display for TargetRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TargetRef::Id(id, _) => write!(f, "{id}"),
            TargetRef::Name(name) => write!(f, "{name:?}"),
        }
    }
}

impl Frame {
    /// The frame as a view, for delivery.
    pub(crate) fn view(&self) -> FrameView<'_> {
        match self {
            Frame::Deliver {
                to,
                type_name,
                content_type,
                envelope,
                body,
            } => FrameView::Deliver {
                to: match to {
                    Target::Id(id, incarnation) => TargetRef::Id(*id, *incarnation),
                    Target::Name(name) => TargetRef::Name(name),
                },
                type_name,
                content_type: *content_type,
                envelope: envelope.clone(),
                body,
            },
            Frame::Reply { request, outcome } => FrameView::Reply {
                request: *request,
                outcome: match outcome {
                    Ok((ct, body)) => Ok((*ct, body)),
                    Err(err) => Err(err.clone()),
                },
            },
            Frame::Control(control) => FrameView::Control(control.clone()),
        }
    }
}

/// A way to get frames to one peer node.
pub(crate) trait PeerLink: Send + Sync {
    fn send(&self, frame: Frame) -> Result<(), Error>;
}

const KIND_DELIVER: u8 = 1;
const KIND_REPLY: u8 = 2;
const KIND_CONTROL: u8 = 3;

/// Bytes before the header: length (u32), kind (u8), header length (u16).
pub(crate) const PREFIX: usize = 4;

#[derive(Serialize, Deserialize)]
struct DeliverHeader<'a> {
    #[serde(borrow)]
    to: Cow<'a, Target>,
    type_name: Cow<'a, str>,
    content_type: Cow<'a, str>,
    envelope: Cow<'a, Envelope>,
}

#[derive(Deserialize)]
struct DeliverHeaderRef<'a> {
    #[serde(borrow)]
    to: TargetRef<'a>,
    type_name: &'a str,
    content_type: &'a str,
    envelope: Envelope,
}

/// A Deliver header from a node that wrote the envelope without `type_id`.
#[derive(Deserialize)]
struct DeliverHeaderRefV0<'a> {
    #[serde(borrow)]
    to: TargetRef<'a>,
    type_name: &'a str,
    content_type: &'a str,
    envelope: EnvelopeV0,
}

impl<'a> From<DeliverHeaderRefV0<'a>> for DeliverHeaderRef<'a> {
    fn from(old: DeliverHeaderRefV0<'a>) -> Self {
        DeliverHeaderRef {
            to: old.to,
            type_name: old.type_name,
            content_type: old.content_type,
            envelope: old.envelope.into(),
        }
    }
}

#[derive(Deserialize)]
struct ReplyHeaderRef<'a> {
    request: u64,
    #[serde(borrow)]
    outcome: Result<&'a str, Error>,
}

#[derive(Serialize, Deserialize)]
struct ReplyHeader<'a> {
    request: u64,
    /// The body's content type, or why there is no answer.
    outcome: Result<Cow<'a, str>, Error>,
}

fn header_codec() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<{ u16::MAX as usize }>()
}

fn malformed(what: &str, err: impl std::fmt::Display) -> Error {
    Error::Protocol(format!("malformed {what}: {err}"))
}

impl Frame {
    /// About the frame's encoded size (a little over, for common frames): the capacity to
    /// reserve for [`encode`](Self::encode), which otherwise grows its buffer several times.
    pub(crate) fn size_hint(&self) -> usize {
        // The envelope's numbers (a trace id included), enum tags and length varints.
        const SLACK: usize = 56;
        let parts = match self {
            Frame::Deliver {
                to,
                type_name,
                content_type,
                envelope,
                body,
            } => {
                let to = match to {
                    Target::Id(..) => 20,
                    Target::Name(name) => name.len(),
                };
                let metadata: usize = envelope
                    .metadata
                    .iter()
                    .map(|(k, v)| k.len() + v.len() + 4)
                    .sum();
                to + type_name.len() + content_type.as_str().len() + metadata + body.len()
            }
            Frame::Reply { outcome, .. } => match outcome {
                Ok((content_type, body)) => content_type.as_str().len() + body.len(),
                Err(_) => 128,
            },
            Frame::Control(_) => 64,
        };
        PREFIX + 3 + SLACK + parts
    }

    /// Appends the frame to `out`: `len:u32be kind:u8 header_len:u16be header body`, where `len`
    /// counts everything after itself.
    pub(crate) fn encode(&self, out: &mut Vec<u8>, max_frame: usize) -> Result<(), Error> {
        let start = out.len();
        let result = self.encode_at(out, start, max_frame);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    /// Writes the prefix as placeholders, the header straight into `out`, the body, then fills in
    /// the lengths.
    fn encode_at(&self, out: &mut Vec<u8>, start: usize, max_frame: usize) -> Result<(), Error> {
        out.extend_from_slice(&[0; PREFIX + 3]);
        let (kind, body): (u8, &[u8]) = match self {
            Frame::Deliver {
                to,
                type_name,
                content_type,
                envelope,
                body,
            } => {
                let header = DeliverHeader {
                    to: Cow::Borrowed(to),
                    type_name: Cow::Borrowed(type_name),
                    content_type: Cow::Borrowed(content_type.as_str()),
                    envelope: Cow::Borrowed(envelope),
                };
                encode_header(&header, out)?;
                (KIND_DELIVER, body)
            }
            Frame::Reply { request, outcome } => {
                let (outcome, body): (Result<Cow<'_, str>, Error>, &[u8]) = match outcome {
                    Ok((ct, body)) => (Ok(Cow::Borrowed(ct.as_str())), body),
                    Err(err) => (Err(err.clone()), &[]),
                };
                let header = ReplyHeader {
                    request: *request,
                    outcome,
                };
                encode_header(&header, out)?;
                (KIND_REPLY, body)
            }
            Frame::Control(control) => {
                encode_header(control, out)?;
                (KIND_CONTROL, &[])
            }
        };
        let header_len = out.len() - start - PREFIX - 3;
        let len = 1 + 2 + header_len + body.len();
        if len > max_frame {
            return Err(Error::FrameTooLarge {
                size: len,
                limit: max_frame,
            });
        }
        let header_len = u16::try_from(header_len).map_err(|_| Error::FrameTooLarge {
            size: header_len,
            limit: u16::MAX as usize,
        })?;
        out.extend_from_slice(body);
        out[start..start + PREFIX].copy_from_slice(&(len as u32).to_be_bytes());
        out[start + PREFIX] = kind;
        out[start + PREFIX + 1..start + PREFIX + 3].copy_from_slice(&header_len.to_be_bytes());
        Ok(())
    }

    /// Decodes a frame from what follows its length prefix, into an owned frame.
    #[cfg(test)]
    pub(crate) fn decode(frame: &[u8]) -> Result<Frame, Error> {
        Ok(match FrameView::decode(frame)? {
            FrameView::Deliver {
                to,
                type_name,
                content_type,
                envelope,
                body,
            } => Frame::Deliver {
                to: match to {
                    TargetRef::Id(id, incarnation) => Target::Id(id, incarnation),
                    TargetRef::Name(name) => Target::Name(name.into()),
                },
                type_name: Cow::Owned(type_name.to_owned()),
                content_type,
                envelope,
                body: body.to_vec(),
            },
            FrameView::Reply { request, outcome } => Frame::Reply {
                request,
                outcome: outcome.map(|(ct, body)| (ct, body.to_vec())),
            },
            FrameView::Control(control) => Frame::Control(control),
        })
    }
}

impl<'a> FrameView<'a> {
    /// Decodes a frame from what follows its length prefix, borrowing from it.
    pub(crate) fn decode(frame: &'a [u8]) -> Result<FrameView<'a>, Error> {
        let [kind, h0, h1, rest @ ..] = frame else {
            return Err(Error::Protocol(format!(
                "truncated frame of {} bytes",
                frame.len()
            )));
        };
        let header_len = u16::from_be_bytes([*h0, *h1]) as usize;
        if rest.len() < header_len {
            return Err(Error::Protocol(format!(
                "frame header of {header_len} bytes in a frame of {}",
                frame.len()
            )));
        }
        let (header, body) = rest.split_at(header_len);
        match *kind {
            KIND_DELIVER => {
                // Fields a newer version appended to the envelope are skipped (rolling upgrades).
                // A header that ends before `type_id` comes from an older node.
                let h: DeliverHeaderRef<'a> = match decode_header_prefix(header, "deliver header") {
                    Ok(h) => h,
                    Err(err) => decode_header::<DeliverHeaderRefV0<'a>>(header, "deliver header")
                        .map(DeliverHeaderRef::from)
                        .map_err(|_| err)?,
                };
                Ok(FrameView::Deliver {
                    to: h.to,
                    type_name: h.type_name,
                    content_type: ContentType::parse(h.content_type)?,
                    envelope: h.envelope,
                    body,
                })
            }
            KIND_REPLY => {
                let h: ReplyHeaderRef<'a> = match decode_header(header, "reply header") {
                    Ok(h) => h,
                    // An answer this node cannot read (an error variant from a newer version,
                    // say) still ends its ask at once, rather than at its timeout.
                    Err(err) => match decode_header_prefix::<u64>(header, "reply header") {
                        Ok(request) => {
                            return Ok(FrameView::Reply {
                                request,
                                outcome: Err(err),
                            });
                        }
                        Err(_) => return Err(err),
                    },
                };
                let outcome = match h.outcome {
                    Ok(ct) => Ok((ContentType::parse(ct)?, body)),
                    Err(err) => Err(err),
                };
                Ok(FrameView::Reply {
                    request: h.request,
                    outcome,
                })
            }
            KIND_CONTROL => Ok(FrameView::Control(decode_header(header, "control frame")?)),
            other => Err(Error::Protocol(format!("unknown frame kind {other}"))),
        }
    }
}

fn encode_header<T: Serialize>(header: &T, out: &mut Vec<u8>) -> Result<(), Error> {
    bincode::serde::encode_into_std_write(header, out, header_codec())
        .map(|_| ())
        .map_err(|e| malformed("header", e))
}

/// Decodes a header that may be followed by fields this node does not know.
fn decode_header_prefix<'a, T: Deserialize<'a>>(bytes: &'a [u8], what: &str) -> Result<T, Error> {
    bincode::serde::borrow_decode_from_slice(bytes, header_codec())
        .map(|(value, _)| value)
        .map_err(|e| malformed(what, e))
}

fn decode_header<'a, T: Deserialize<'a>>(bytes: &'a [u8], what: &str) -> Result<T, Error> {
    match bincode::serde::borrow_decode_from_slice(bytes, header_codec()) {
        Ok((value, used)) if used == bytes.len() => Ok(value),
        Ok((_, used)) => Err(malformed(
            what,
            format!("{} trailing bytes", bytes.len() - used),
        )),
        Err(e) => Err(malformed(what, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(frame: &Frame) -> Frame {
        let mut out = Vec::new();
        frame.encode(&mut out, 1 << 20).unwrap();
        let len = u32::from_be_bytes(out[..4].try_into().unwrap()) as usize;
        assert_eq!(len, out.len() - 4);
        Frame::decode(&out[4..]).unwrap()
    }

    #[test]
    fn size_hints_cover_common_frames() {
        let frames = [
            Frame::Deliver {
                to: Target::Name("bench/Bench.Echo".into()),
                type_name: Cow::Borrowed("micro.service.Endpoint"),
                content_type: ContentType::Bincode,
                envelope: Envelope {
                    request: Some(u64::MAX),
                    deadline_ms: Some(u64::MAX),
                    trace_id: Some(u128::MAX),
                    metadata: vec![("tenant".into(), "acme".into())],
                    type_id: Some(u64::MAX),
                },
                body: vec![7; 300],
            },
            Frame::Deliver {
                to: Target::Id(ActorId(u64::MAX), u64::MAX),
                type_name: Cow::Borrowed("t"),
                content_type: ContentType::Json,
                envelope: Envelope::default(),
                body: Vec::new(),
            },
            Frame::Reply {
                request: u64::MAX,
                outcome: Ok((ContentType::Bincode, vec![1; 40])),
            },
        ];
        for frame in frames {
            let mut out = Vec::new();
            frame.encode(&mut out, 1 << 20).unwrap();
            assert!(
                frame.size_hint() >= out.len(),
                "hint {} < {} bytes",
                frame.size_hint(),
                out.len()
            );
        }
    }

    #[test]
    fn frames_round_trip() {
        let deliver = Frame::Deliver {
            to: Target::Name("kv".into()),
            type_name: Cow::Borrowed("test.Kv"),
            content_type: ContentType::Json,
            envelope: Envelope {
                request: Some(7),
                deadline_ms: Some(1500),
                trace_id: Some(42),
                metadata: vec![("user".into(), "ada".into())],
                type_id: Some(0x0123_4567_89ab_cdef),
            },
            body: b"{\"x\":1}".to_vec(),
        };
        let Frame::Deliver {
            to,
            type_name,
            content_type,
            envelope,
            body,
        } = round_trip(&deliver)
        else {
            panic!("not a deliver frame")
        };
        assert_eq!(to, Target::Name("kv".into()));
        assert_eq!(type_name, "test.Kv");
        assert_eq!(content_type, ContentType::Json);
        assert_eq!(envelope.request, Some(7));
        assert_eq!(
            envelope.metadata,
            vec![("user".to_owned(), "ada".to_owned())]
        );
        assert_eq!(envelope.type_id, Some(0x0123_4567_89ab_cdef));
        assert_eq!(body, b"{\"x\":1}");

        let reply = Frame::Reply {
            request: 9,
            outcome: Err(Error::Unavailable("kv".into())),
        };
        assert!(matches!(
            round_trip(&reply),
            Frame::Reply {
                request: 9,
                outcome: Err(Error::Unavailable(_))
            }
        ));
        let control = Frame::Control(Control::Down {
            watch: 3,
            down: Down::NodeLost,
        });
        assert!(matches!(
            round_trip(&control),
            Frame::Control(Control::Down {
                watch: 3,
                down: Down::NodeLost
            })
        ));
    }

    #[test]
    fn locate_control_frames_are_appended_variants() {
        // Control variants travel by index: Locate and Located come after Down (4).
        let mut out = Vec::new();
        let locate = Frame::Control(Control::Locate {
            id: 7,
            node: NodeId::from_u128(1),
        });
        locate.encode(&mut out, 1024).unwrap();
        assert_eq!(out, [0, 0, 0, 6, KIND_CONTROL, 0, 3, 5, 7, 1]);
        assert!(matches!(
            round_trip(&locate),
            Frame::Control(Control::Locate { id: 7, .. })
        ));
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 4000));
        let located = Frame::Control(Control::Located {
            id: 7,
            addr: Some(addr),
        });
        out.clear();
        located.encode(&mut out, 1024).unwrap();
        assert_eq!(&out[7..10], [6, 7, 1], "variant, id, Some");
        assert!(matches!(
            round_trip(&located),
            Frame::Control(Control::Located { id: 7, addr: Some(a) }) if a == addr
        ));
    }

    #[test]
    fn what_a_newer_version_adds_is_skipped_or_ends_its_ask() {
        // Fields appended to a deliver frame's envelope are ignored.
        let deliver = Frame::Deliver {
            to: Target::Name("kv".into()),
            type_name: Cow::Borrowed("test.Kv"),
            content_type: ContentType::Bincode,
            envelope: Envelope {
                request: Some(7),
                ..Envelope::default()
            },
            body: vec![1, 2],
        };
        let mut out = Vec::new();
        deliver.encode(&mut out, 1024).unwrap();
        let header_len = u16::from_be_bytes([out[5], out[6]]);
        out.splice(
            7 + usize::from(header_len)..7 + usize::from(header_len),
            [9, 9],
        );
        out[5..7].copy_from_slice(&(header_len + 2).to_be_bytes());
        let Frame::Deliver { envelope, body, .. } = Frame::decode(&out[4..]).unwrap() else {
            panic!("not a deliver frame")
        };
        assert_eq!((envelope.request, body), (Some(7), vec![1, 2]));

        // An answer whose error this node does not know (variant 200) still ends its ask.
        let reply = [KIND_REPLY, 0, 3, 9, 1, 200];
        assert!(matches!(
            Frame::decode(&reply),
            Ok(Frame::Reply {
                request: 9,
                outcome: Err(Error::Protocol(_))
            })
        ));

        // An unknown frame kind or control variant is refused (the reader skips it by its
        // length and goes on).
        assert!(matches!(
            Frame::decode(&[4, 0, 1, 0]),
            Err(Error::Protocol(_))
        ));
        assert!(matches!(
            Frame::decode(&[KIND_CONTROL, 0, 2, 200, 1]),
            Err(Error::Protocol(_))
        ));
    }

    #[test]
    fn call_data_fills_the_envelope_and_empty_costs_nothing() {
        let empty = Envelope::default();
        let mut with_none = Vec::new();
        bincode::serde::encode_into_std_write(&empty, &mut with_none, header_codec()).unwrap();
        assert_eq!(
            with_none,
            [0, 0, 0, 0, 0],
            "five bytes: four as before, no type id"
        );
        let call = CallData::new()
            .with_type_id(7)
            .with_trace_id(42)
            .with_header("tenant", "acme");
        crate::wire::context::put_call(&call);
        let envelope = crate::wire::context::take_envelope();
        assert_eq!(envelope.trace_id, Some(42));
        assert_eq!(envelope.type_id, Some(7));
        assert_eq!(envelope.metadata, vec![("tenant".into(), "acme".into())]);
        assert_eq!(envelope.into_call(), call);
        assert_eq!(crate::wire::context::take_envelope(), Envelope::default());
    }

    #[test]
    fn a_deliver_header_from_before_the_type_id_reads_as_none() {
        // An older node's envelope ends after `metadata`: cut the type id's `None` byte off.
        let deliver = Frame::Deliver {
            to: Target::Name("kv".into()),
            type_name: Cow::Borrowed("test.Kv"),
            content_type: ContentType::Bincode,
            envelope: Envelope {
                request: Some(7),
                trace_id: Some(42),
                ..Envelope::default()
            },
            body: vec![1, 2],
        };
        let mut out = Vec::new();
        deliver.encode(&mut out, 1024).unwrap();
        let header_len = u16::from_be_bytes([out[5], out[6]]);
        let type_id_at = 7 + usize::from(header_len) - 1;
        assert_eq!(
            out[type_id_at], 0,
            "the type id's None is the header's last byte"
        );
        out.remove(type_id_at);
        out[5..7].copy_from_slice(&(header_len - 1).to_be_bytes());
        let Frame::Deliver { envelope, body, .. } = Frame::decode(&out[4..]).unwrap() else {
            panic!("not a deliver frame")
        };
        assert_eq!(envelope.request, Some(7));
        assert_eq!(envelope.trace_id, Some(42));
        assert_eq!(envelope.type_id, None);
        assert_eq!(body, vec![1, 2]);
    }

    #[test]
    fn garbage_is_a_protocol_error_not_a_panic() {
        for junk in [
            &[][..],
            &[1],
            &[1, 0, 9, 1, 2],
            &[9, 0, 0],
            &[1, 0, 3, 0xff, 0xff, 0xff],
            &[3, 0, 1, 0xff],
        ] {
            assert!(
                matches!(
                    Frame::decode(junk),
                    Err(Error::Protocol(_)) | Err(Error::UnknownContentType(_))
                ),
                "{junk:?}"
            );
        }
    }

    #[test]
    fn oversized_frames_are_refused_at_encode() {
        let big = Frame::Deliver {
            to: Target::Id(ActorId(1), 0),
            type_name: Cow::Borrowed("t"),
            content_type: ContentType::Bincode,
            envelope: Envelope::default(),
            body: vec![0; 2048],
        };
        assert!(matches!(
            big.encode(&mut Vec::new(), 1024),
            Err(Error::FrameTooLarge { limit: 1024, .. })
        ));
    }
}
