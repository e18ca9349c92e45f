//! Typed streams between actors, on one node or across nodes over one QUIC stream each: the base
//! of streaming RPC.
//!
//! [`stream_channel`] makes a bounded sender/receiver pair. The sender may travel inside a
//! [`RemoteMessage`](crate::RemoteMessage) to another node; there it writes its items to a QUIC
//! stream of the link back to the receiver's node, where a task decodes them into the receiver's
//! bounded queue. Backpressure holds end to end: when the receiver falls behind its queue fills,
//! the task stops reading, QUIC flow control stops the sender, and [`StreamSender::send`] waits.
//! Either end can cancel: dropping the receiver makes the sender's next `send` fail with
//! [`Error::StreamClosed`]; [`StreamSender::cancel`] ends the receiver's stream with
//! [`Error::StreamCancelled`]. Finishing (or dropping) the sender ends it cleanly.
//!
//! For a bidirectional stream, each side sends the other a sender. Receivers do not travel.

use std::cell::Cell;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::mpsc;

use crate::net::{ReadBudget, STREAM_ITEMS, read_body, shrink};
use crate::wire::context;
use crate::{ContentType, Error, Node, NodeId};

/// QUIC application code with which the receiving side stops a typed stream.
const RECEIVER_GONE: u32 = 2;
/// In place of an item's length: the sender cancelled; a u16-length reason follows. (In-band
/// rather than a QUIC reset, which would discard items already sent, and could even discard the
/// stream's header, leaving the receiver unaware.)
const CANCEL_MARK: u32 = u32::MAX;

type Item<T> = Result<T, Error>;

/// Makes a typed stream: a sender and a receiver with room for `capacity` items in between.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), micro_runtime::Error> {
/// let (mut tx, mut rx) = micro_runtime::stream_channel::<u32>(16);
/// tokio::spawn(async move {
///     for i in 0..3 {
///         tx.send(i).await?;
///     }
///     tx.finish().await
/// });
/// let mut got = Vec::new();
/// while let Some(item) = rx.recv().await {
///     got.push(item?);
/// }
/// assert_eq!(got, [0, 1, 2]);
/// # Ok(()) }
/// ```
pub fn stream_channel<T: Send + 'static>(capacity: usize) -> (StreamSender<T>, StreamReceiver<T>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (
        StreamSender {
            slot: Cell::new(SenderEnd::Local(tx)),
        },
        StreamReceiver { rx },
    )
}

/// The receiving end of a typed stream: yields items until the sender finishes (`None`), or an
/// error if it cancelled or its node was lost. Dropping it cancels the stream for the sender.
pub struct StreamReceiver<T> {
    rx: mpsc::Receiver<Item<T>>,
}

impl<T> StreamReceiver<T> {
    /// The next item; `None` once the sender finished.
    pub async fn recv(&mut self) -> Option<Result<T, Error>> {
        self.rx.recv().await
    }
}

impl<T> Stream for StreamReceiver<T> {
    type Item = Result<T, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl<T> fmt::Debug for StreamReceiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamReceiver").finish_non_exhaustive()
    }
}

/// The sending end of a typed stream. It can travel inside a message to another node.
pub struct StreamSender<T: Send + 'static> {
    slot: Cell<SenderEnd<T>>,
}

/// Where a stream sender's items go: the receiver's local queue, or a stream to the node that
/// holds the receiver.
#[derive(Default)]
enum SenderEnd<T: Send + 'static> {
    /// Sent away (encoded), finished or cancelled.
    #[default]
    Spent,
    Local(mpsc::Sender<Item<T>>),
    Remote(Box<RemoteSender<T>>),
}

struct RemoteSender<T> {
    via: Node,
    origin: NodeId,
    stream: u64,
    content_type: ContentType,
    encode: crate::reply::EncodeAnswer<T>,
    /// Opened with the first item.
    send: Option<quinn::SendStream>,
    /// The link's frame limit, known once open.
    max_frame: usize,
}

impl<T> RemoteSender<T> {
    async fn open(&mut self) -> Result<&mut quinn::SendStream, Error> {
        if self.send.is_none() {
            tracing::debug!(origin = %self.origin, stream = self.stream, "opening a typed stream");
            let link = self
                .via
                .net()?
                .links
                .get(&self.origin)
                .map(|link| link.value().clone())
                .ok_or_else(|| Error::NoRoute(self.origin.to_string()))?;
            let conn = link
                .connection()
                .ok_or_else(|| Error::NoRoute(self.origin.to_string()))?;
            self.max_frame = link.max_frame();
            let mut send = conn
                .open_uni()
                .await
                .map_err(|e| Error::NodeLost(e.to_string()))?;
            tracing::debug!(stream = self.stream, id = %send.id(), "typed stream open");
            let name = self.content_type.as_str().as_bytes();
            let mut header = Vec::with_capacity(10 + name.len());
            header.push(STREAM_ITEMS);
            header.extend_from_slice(&self.stream.to_be_bytes());
            header.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
            header.extend_from_slice(&name[..name.len().min(255)]);
            send.write_all(&header).await.map_err(write_error)?;
            self.send = Some(send);
        }
        self.send
            .as_mut()
            .ok_or_else(|| Error::StreamClosed("not open".to_owned()))
    }
}

fn write_error(err: quinn::WriteError) -> Error {
    match err {
        quinn::WriteError::Stopped(_) => Error::StreamClosed("the receiver went away".to_owned()),
        other => Error::NodeLost(other.to_string()),
    }
}

impl<T: Send + 'static> StreamSender<T> {
    /// Sends one item, waiting while the receiver's queue is full.
    ///
    /// Errors: [`Error::StreamClosed`] once the receiver is gone (dropped, or the stream was
    /// finished or cancelled from this side), [`Error::NodeLost`] if its node is lost, a codec error
    /// if the item does not encode.
    pub async fn send(&mut self, item: T) -> Result<(), Error> {
        match self.slot.get_mut() {
            SenderEnd::Spent => Err(Error::StreamClosed("already finished".to_owned())),
            SenderEnd::Local(tx) => tx
                .send(Ok(item))
                .await
                .map_err(|_| Error::StreamClosed("the receiver went away".to_owned())),
            SenderEnd::Remote(remote) => {
                let body = (remote.encode)(&remote.via, remote.origin, remote.content_type, &item)?;
                remote.open().await?;
                if body.len() > remote.max_frame {
                    return Err(Error::FrameTooLarge {
                        size: body.len(),
                        limit: remote.max_frame,
                    });
                }
                let send = remote.open().await?;
                let mut frame = Vec::with_capacity(4 + body.len());
                frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
                frame.extend_from_slice(&body);
                send.write_all(&frame).await.map_err(write_error)?;
                // QUIC buffers generously, so writes rarely wait: give the runtime a turn now and
                // then, or a fast producer starves the connection's own tasks.
                tokio::task::consume_budget().await;
                Ok(())
            }
        }
    }

    /// Ends the stream cleanly: the receiver gets `None` after the items sent.
    pub async fn finish(self) -> Result<(), Error> {
        match self.slot.take() {
            SenderEnd::Spent | SenderEnd::Local(_) => Ok(()),
            SenderEnd::Remote(mut remote) => {
                let send = remote.open().await?;
                send.finish()
                    .map_err(|_| Error::StreamClosed("already closed".to_owned()))
            }
        }
    }

    /// Ends the stream abnormally: the receiver gets [`Error::StreamCancelled`] (items already
    /// delivered stay delivered; items in flight over the network may be lost).
    pub fn cancel(self, reason: &str) {
        match self.slot.take() {
            SenderEnd::Spent => {}
            SenderEnd::Local(tx) => {
                let err = Error::StreamCancelled(reason.to_owned());
                if let Err(mpsc::error::TrySendError::Full(item)) = tx.try_send(Err(err)) {
                    tokio::spawn(async move {
                        let _ = tx.send(item).await;
                    });
                }
            }
            SenderEnd::Remote(mut remote) => {
                let reason = reason.as_bytes();
                let reason = &reason[..reason.len().min(u16::MAX as usize)];
                let mut mark = Vec::with_capacity(6 + reason.len());
                mark.extend_from_slice(&CANCEL_MARK.to_be_bytes());
                mark.extend_from_slice(&(reason.len() as u16).to_be_bytes());
                mark.extend_from_slice(reason);
                tokio::spawn(async move {
                    if let Ok(send) = remote.open().await {
                        let _ = send.write_all(&mark).await;
                        let _ = send.finish();
                    }
                });
            }
        }
    }
}

impl<T: Send + 'static> Drop for StreamSender<T> {
    /// Dropping finishes the stream, like [`StreamSender::finish`].
    fn drop(&mut self) {
        if let SenderEnd::Remote(mut remote) = self.slot.take() {
            match remote.send.as_mut() {
                Some(send) => {
                    let _ = send.finish();
                }
                None if tokio::runtime::Handle::try_current().is_ok() => {
                    tokio::spawn(async move {
                        if let Ok(send) = remote.open().await {
                            let _ = send.finish();
                        }
                    });
                }
                None => {}
            }
        }
    }
}

impl<T: Send + 'static> fmt::Debug for StreamSender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamSender").finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct SenderWire {
    origin: NodeId,
    stream: u64,
}

impl<T> Serialize for StreamSender<T>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    /// Encoding hands the stream to the encoded copy: this sender is spent afterwards.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let wire = match self.slot.take() {
            SenderEnd::Spent => {
                return Err(serde::ser::Error::custom(Error::StreamClosed(
                    "the sender was already used".to_owned(),
                )));
            }
            SenderEnd::Local(tx) => {
                let ctx = match context::current_ser::<S::Error>() {
                    Ok(ctx) => ctx,
                    Err(err) => {
                        self.slot.set(SenderEnd::Local(tx));
                        return Err(err);
                    }
                };
                let stream = ctx.node.next_id();
                ctx.node
                    .streams()
                    .insert(stream, (ctx.peer, Box::new(Inbound { tx })));
                SenderWire {
                    origin: ctx.node.id(),
                    stream,
                }
            }
            SenderEnd::Remote(remote) if remote.send.is_none() => SenderWire {
                origin: remote.origin,
                stream: remote.stream,
            },
            SenderEnd::Remote(remote) => {
                self.slot.set(SenderEnd::Remote(remote));
                return Err(serde::ser::Error::custom(Error::StreamClosed(
                    "a sender that has started sending cannot be forwarded".to_owned(),
                )));
            }
        };
        wire.serialize(serializer)
    }
}

impl<'de, T> Deserialize<'de> for StreamSender<T>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = SenderWire::deserialize(deserializer)?;
        let ctx = context::current::<D::Error>()?;
        Ok(StreamSender {
            slot: Cell::new(SenderEnd::Remote(Box::new(RemoteSender {
                via: ctx.node,
                origin: wire.origin,
                stream: wire.stream,
                content_type: ctx.content_type,
                encode: crate::reply::encode_answer::<T>,
                send: None,
                max_frame: usize::MAX,
            }))),
        })
    }
}

/// The receiving node's side of a typed stream whose sender travelled: decodes items into the
/// receiver's queue.
pub(crate) trait StreamInbound: Send + Sync {
    fn pump<'a>(
        self: Box<Self>,
        node: &'a Node,
        recv: BufReader<quinn::RecvStream>,
        content_type: ContentType,
        max_frame: usize,
        budget: ReadBudget,
    ) -> futures::future::BoxFuture<'a, ()>;

    /// The sender's node was lost before it opened the stream.
    fn lost(self: Box<Self>, err: Error);
}

struct Inbound<T> {
    tx: mpsc::Sender<Item<T>>,
}

impl<T: DeserializeOwned + Send + 'static> StreamInbound for Inbound<T> {
    fn pump<'a>(
        self: Box<Self>,
        node: &'a Node,
        mut recv: BufReader<quinn::RecvStream>,
        content_type: ContentType,
        max_frame: usize,
        budget: ReadBudget,
    ) -> futures::future::BoxFuture<'a, ()> {
        Box::pin(async move {
            let tx = self.tx;
            let mut buf = Vec::new();
            loop {
                let len = tokio::select! {
                    len = recv.read_u32() => len,
                    () = tx.closed() => {
                        let _ = recv.get_mut().stop(RECEIVER_GONE.into());
                        return;
                    }
                };
                let len = match len {
                    Ok(CANCEL_MARK) => {
                        let reason = read_reason(&mut recv).await;
                        let _ = tx.send(Err(Error::StreamCancelled(reason))).await;
                        return;
                    }
                    Ok(len) => len as usize,
                    Err(err) => {
                        // A clean finish ends between items; anything else is an abnormal end.
                        if let Some(end) = abnormal_end(&err) {
                            let _ = tx.send(Err(end)).await;
                        }
                        return;
                    }
                };
                if len > max_frame {
                    let _ = tx
                        .send(Err(Error::FrameTooLarge {
                            size: len,
                            limit: max_frame,
                        }))
                        .await;
                    let _ = recv.get_mut().stop(RECEIVER_GONE.into());
                    return;
                }
                // Memory grows as the item's bytes arrive, under the connection's budget.
                let item = match read_body(&mut recv, len, &mut buf, &budget).await {
                    Ok(true) => {
                        let item = node.decode::<T>(content_type, &recv.buffer()[..len]);
                        recv.consume(len);
                        item
                    }
                    Ok(false) => {
                        let item = node.decode::<T>(content_type, &buf);
                        shrink(&mut buf);
                        item
                    }
                    Err(err) => {
                        let end = abnormal_end(&err).unwrap_or_else(|| {
                            Error::Protocol("stream ended inside an item".to_owned())
                        });
                        let _ = tx.send(Err(end)).await;
                        return;
                    }
                };
                if tx.send(item).await.is_err() {
                    let _ = recv.get_mut().stop(RECEIVER_GONE.into());
                    return;
                }
            }
        })
    }

    fn lost(self: Box<Self>, err: Error) {
        let _ = self.tx.try_send(Err(err));
    }
}

async fn read_content_type(recv: &mut BufReader<quinn::RecvStream>) -> Result<ContentType, Error> {
    let len = recv
        .read_u8()
        .await
        .map_err(|e| Error::Protocol(e.to_string()))?;
    let mut name = vec![0; len as usize];
    recv.read_exact(&mut name)
        .await
        .map_err(|e| Error::Protocol(e.to_string()))?;
    ContentType::parse(&String::from_utf8_lossy(&name))
}

async fn read_reason(recv: &mut BufReader<quinn::RecvStream>) -> String {
    let Ok(len) = recv.read_u16().await else {
        return "cancelled".to_owned();
    };
    let mut reason = vec![0; len as usize];
    match recv.read_exact(&mut reason).await {
        Ok(_) => String::from_utf8_lossy(&reason).into_owned(),
        Err(_) => "cancelled".to_owned(),
    }
}

/// What a read error means for the receiver: `None` for a clean finish.
fn abnormal_end(err: &std::io::Error) -> Option<Error> {
    if err.kind() == std::io::ErrorKind::UnexpectedEof {
        return None;
    }
    match err.kind() {
        std::io::ErrorKind::ConnectionReset => Some(Error::StreamCancelled(
            "the sender's stream was reset".to_owned(),
        )),
        _ => Some(Error::NodeLost(err.to_string())),
    }
}

/// A typed stream arrived from `peer`: hand it to the receiver it was made for.
pub(crate) async fn accept(
    node: &Node,
    peer: NodeId,
    mut recv: BufReader<quinn::RecvStream>,
    max_frame: usize,
    budget: ReadBudget,
) {
    let Ok(stream) = recv.read_u64().await else {
        return;
    };
    let content_type = match read_content_type(&mut recv).await {
        Ok(ct) => ct,
        Err(err) => {
            tracing::warn!(%peer, stream, error = %err, "refused a typed stream");
            node.count_refusal();
            if let Some((_, (_, inbound))) = node.streams().remove(&stream) {
                inbound.lost(err);
            }
            let _ = recv.get_mut().stop(RECEIVER_GONE.into());
            return;
        }
    };
    tracing::debug!(%peer, stream, "typed stream opened");
    match node.streams().remove(&stream) {
        Some((_, (_, inbound))) => {
            inbound
                .pump(node, recv, content_type, max_frame, budget)
                .await
        }
        None => {
            tracing::warn!(%peer, stream, "refused a typed stream nobody waits for");
            node.count_refusal();
            let _ = recv.get_mut().stop(RECEIVER_GONE.into());
        }
    }
}
