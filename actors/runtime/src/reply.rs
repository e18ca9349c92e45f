//! [`Reply`]: a one-shot reply port that can sit inside a message, and travel with it.

use std::cell::Cell;
use std::fmt;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::wire::context;
use crate::wire::frame::Frame;
use crate::{ContentType, Error, Node, NodeId};

/// A one-shot port for answering a request: put it in a message (`Get(Key, Reply<Option<V>>)`) and
/// [`Addr::ask`](crate::Addr::ask) waits for what the actor [`send`](Reply::send)s into it.
///
/// Dropping a `Reply` unanswered tells the asker ([`Error::ReplyDropped`]); it never hangs. The
/// port carries the asker's deadline so a handler can skip work nobody waits for.
///
/// A `Reply` serializes: asked across nodes, it arrives as a port that answers the asking node,
/// and forwarded to a third node it still answers its origin, straight from there — the third
/// node learns where the origin listens from the node that passed the port on, so the two need
/// not have been linked. Dropping a forwarded port unanswered tells the asker at once too.
pub struct Reply<T: Send + 'static> {
    slot: Cell<Port<T>>,
    deadline: Deadline,
}

/// A deadline in 8 bytes (nanoseconds after a process-wide epoch; 0 for none), because a port
/// sits in every message of its enum and ractor boxes each message.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Deadline(u64);

fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl Deadline {
    const NONE: Deadline = Deadline(0);

    fn at(instant: Instant) -> Self {
        let nanos = instant.saturating_duration_since(epoch()).as_nanos();
        Deadline(u64::try_from(nanos).unwrap_or(u64::MAX).max(1))
    }

    fn get(self) -> Option<Instant> {
        (self.0 != 0).then(|| epoch() + Duration::from_nanos(self.0))
    }
}

/// Where a reply port's answer goes: a local asker's oneshot, or a request on another node
/// (`Used` once answered, dropped or sent away).
#[derive(Default)]
enum Port<T: Send + 'static> {
    #[default]
    Used,
    Local(oneshot::Sender<Result<T, Error>>),
    /// Boxed: a port sits in every message of its enum, so keep it small.
    Remote(Box<RemoteReply<T>>),
}

struct RemoteReply<T> {
    via: Node,
    origin: NodeId,
    request: u64,
    content_type: ContentType,
    encode: EncodeAnswer<T>,
}

/// Encodes a value (an answer, a stream item) for the node it goes to.
pub(crate) type EncodeAnswer<T> = fn(&Node, NodeId, ContentType, &T) -> Result<Vec<u8>, Error>;

/// The [`EncodeAnswer`] of every port and sender that travelled: `value` encoded for `origin`.
pub(crate) fn encode_answer<T: Serialize>(
    node: &Node,
    origin: NodeId,
    content_type: ContentType,
    value: &T,
) -> Result<Vec<u8>, Error> {
    node.encode_for(origin, content_type, value)
        .map(|(bytes, _)| bytes)
}

impl<T> RemoteReply<T> {
    fn answer(self, outcome: Result<(ContentType, Vec<u8>), Error>) -> Result<(), Error> {
        self.via.send_frame(
            self.origin,
            Frame::Reply {
                request: self.request,
                outcome,
            },
        )
    }
}

/// What the asker awaits.
pub(crate) type Answer<T> = oneshot::Receiver<Result<T, Error>>;

impl<T: Send + 'static> Reply<T> {
    /// A port and the receiver its answer arrives on.
    pub(crate) fn channel(deadline: Option<Instant>) -> (Self, Answer<T>) {
        let (tx, rx) = oneshot::channel();
        let reply = Reply {
            slot: Cell::new(Port::Local(tx)),
            deadline: deadline.map_or(Deadline::NONE, Deadline::at),
        };
        (reply, rx)
    }

    /// Answers the request.
    ///
    /// Errors: [`Error::AskerGone`] when the asker stopped waiting; for a port from another node,
    /// the codec's error if the value cannot be encoded (the asker gets it too) or
    /// [`Error::NoRoute`] if the asker's node cannot be reached.
    pub fn send(self, value: T) -> Result<(), Error> {
        match self.slot.take() {
            Port::Used => Err(Error::ReplyUsed),
            Port::Local(tx) => tx.send(Ok(value)).map_err(|_| Error::AskerGone),
            Port::Remote(remote) => {
                let encoded =
                    (remote.encode)(&remote.via, remote.origin, remote.content_type, &value);
                let content_type = remote.content_type;
                match encoded {
                    Ok(body) => remote.answer(Ok((content_type, body))),
                    Err(err) => {
                        let _ = remote.answer(Err(err.clone()));
                        Err(err)
                    }
                }
            }
        }
    }

    /// When the asker stops waiting, if it said.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline.get()
    }

    /// Time left before the asker stops waiting, if it said.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline()
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Whether the asker has already stopped waiting.
    pub fn is_expired(&self) -> bool {
        self.deadline().is_some_and(|d| d <= Instant::now())
    }
}

impl<T: Send + 'static> Drop for Reply<T> {
    fn drop(&mut self) {
        // A local sender tells its receiver by being dropped; a remote port must say so.
        if let Port::Remote(remote) = self.slot.take()
            && !context::refusing()
        {
            let _ = remote.answer(Err(Error::ReplyDropped));
        }
    }
}

impl<T: Send + 'static> fmt::Debug for Reply<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reply")
            .field("deadline", &self.deadline())
            .finish_non_exhaustive()
    }
}

/// How a reply port travels: the asking node and its request id.
#[derive(Serialize, Deserialize)]
struct ReplyWire {
    origin: NodeId,
    request: u64,
    /// Milliseconds the asker still waits, if it said (a duration, not a clock reading, so nodes'
    /// clocks need not agree).
    remaining_ms: Option<u64>,
}

impl<T> Serialize for Reply<T>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    /// Encoding hands the port's duty to the encoded copy: this one is spent afterwards.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let remaining_ms = self
            .remaining()
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let wire = match self.slot.take() {
            Port::Used => return Err(serde::ser::Error::custom(Error::ReplyUsed)),
            Port::Local(tx) => {
                let ctx = match context::current_ser::<S::Error>() {
                    Ok(ctx) => ctx,
                    Err(err) => {
                        self.slot.set(Port::Local(tx));
                        return Err(err);
                    }
                };
                let request = ctx.node.pending().register(
                    &ctx.node,
                    self.deadline(),
                    ctx.peer,
                    Box::new(move |node: &Node, from, outcome| {
                        let result = outcome.and_then(|(content_type, body)| match from {
                            Some(from) => node.decode_from::<T>(from, content_type, body),
                            None => node.decode::<T>(content_type, body),
                        });
                        let _ = tx.send(result);
                    }),
                );
                context::record_request(request);
                ReplyWire {
                    origin: ctx.node.id(),
                    request,
                    remaining_ms,
                }
            }
            Port::Remote(remote) => ReplyWire {
                origin: remote.origin,
                request: remote.request,
                remaining_ms,
            },
        };
        wire.serialize(serializer)
    }
}

impl<'de, T> Deserialize<'de> for Reply<T>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = ReplyWire::deserialize(deserializer)?;
        let ctx = context::current::<D::Error>()?;
        // Passed on by a node other than the asker's: remember whom to ask the way to it.
        if let Some(from) = ctx.from
            && from != wire.origin
        {
            ctx.node.note_route(wire.origin, from);
        }
        Ok(Reply {
            slot: Cell::new(Port::Remote(Box::new(RemoteReply {
                via: ctx.node,
                origin: wire.origin,
                request: wire.request,
                content_type: ctx.content_type,
                encode: encode_answer::<T>,
            }))),
            deadline: wire.remaining_ms.map_or(Deadline::NONE, |ms| {
                Deadline::at(Instant::now() + Duration::from_millis(ms))
            }),
        })
    }
}
