//! The two ends of a streaming call, the same on both sides: [`Outgoing`] sends typed messages,
//! [`Incoming`] receives them. A clean end is the sender finishing; an error ends a stream too.

use std::any::type_name;
use std::fmt;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use micro_runtime::{ContentType, StreamReceiver, StreamSender};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::ServiceError;
use crate::body::Body;
use crate::error::CLIENT_ID;
use crate::shape::{response_tail, shape_id_of};
use crate::wire::StreamItem;

/// A stream sender shared between a handler and the server task that ends the stream after it.
pub(crate) type SharedSender = Arc<Mutex<Option<StreamSender<StreamItem>>>>;

/// Sends the messages of a stream: requests on the client, responses in a handler.
///
/// Backpressure holds end to end: [`send`](Outgoing::send) waits while the other side is behind.
/// [`finish`](Outgoing::finish) ends the stream cleanly (so does dropping it on the client);
/// [`cancel`](Outgoing::cancel) ends it with an error on the other side. In a handler the
/// stream ends when the handler returns, with its error if it failed.
pub struct Outgoing<T> {
    sender: SharedSender,
    content_type: ContentType,
    id: Arc<str>,
    /// In a handler: the response type the caller reads, checked at the first send.
    check: Option<ResponseCheck>,
    _message: PhantomData<fn(&T)>,
}

/// The shape id of the response type a stream's caller reads, and the endpoint's name.
struct ResponseCheck {
    expected: u64,
    endpoint: Arc<str>,
}

impl<T> fmt::Debug for Outgoing<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outgoing")
            .field("id", &self.id)
            .field("content_type", &self.content_type)
            .finish_non_exhaustive()
    }
}

impl<T: Serialize> Outgoing<T> {
    pub(crate) fn new(sender: SharedSender, content_type: ContentType, id: Arc<str>) -> Self {
        Outgoing {
            sender,
            content_type,
            id,
            check: None,
            _message: PhantomData,
        }
    }

    /// Checks the first message sent against `expected`, the shape id of the type the caller
    /// reads: a message of another type ends the stream with a 400 naming the handler's type
    /// and the id, which the caller's [`Incoming`] turns into its decode error naming both.
    pub(crate) fn checked_against(mut self, expected: u64, endpoint: Arc<str>) -> Self {
        self.check = Some(ResponseCheck { expected, endpoint });
        self
    }

    /// Sends one message, waiting while the receiver is behind. Fails with 499 once the other
    /// side closed or cancelled the stream, or 503 if its node was lost. (The message is encoded
    /// before the wait, so it need not outlive the call.)
    pub fn send(
        &mut self,
        message: &T,
    ) -> impl std::future::Future<Output = Result<(), ServiceError>> + Send + '_ {
        let mismatch = self.check.take().and_then(|check| {
            let got = shape_id_of(message)?;
            (got != check.expected).then(|| {
                ServiceError::bad_request(
                    &*self.id,
                    format!(
                        "{} answers {}, {}",
                        check.endpoint,
                        type_name::<T>(),
                        response_tail(check.expected)
                    ),
                )
            })
        });
        let body = Body::encode(self.content_type, message)
            .map_err(|e| ServiceError::bad_request(&*self.id, e.to_string()));
        async move {
            if let Some(err) = mismatch {
                // The caller learns it from the stream, whatever the handler does next.
                close(&self.sender, Err(err.clone())).await;
                return Err(err);
            }
            let body = body?;
            let mut sender = self.sender.lock().await;
            match sender.as_mut() {
                Some(tx) => tx
                    .send(StreamItem::Data(body))
                    .await
                    .map_err(|e| stream_error(&self.id, e)),
                None => Err(ServiceError::new(&*self.id, 499, "the stream has ended")),
            }
        }
    }

    /// Ends the stream cleanly: the other side sees its end after the messages already sent.
    pub async fn finish(self) -> Result<(), ServiceError> {
        let taken = self.sender.lock().await.take();
        match taken {
            Some(tx) => tx.finish().await.map_err(|e| stream_error(&self.id, e)),
            None => Ok(()),
        }
    }

    /// Ends the stream with an error on the other side (a 499 carrying `reason`).
    pub async fn cancel(self, reason: &str) {
        if let Some(tx) = self.sender.lock().await.take() {
            tx.cancel(reason);
        }
    }
}

/// Ends a shared stream after its handler: with the handler's error, or cleanly.
pub(crate) async fn close(sender: &SharedSender, outcome: Result<(), ServiceError>) {
    let taken = sender.lock().await.take();
    if let Some(mut tx) = taken {
        if let Err(err) = outcome {
            let _ = tx.send(StreamItem::Error(err)).await;
        }
        let _ = tx.finish().await;
    }
}

/// Receives the messages of a stream: responses on the client, requests in a handler. It is a
/// `futures::Stream` too, for `StreamExt` combinators.
///
/// [`recv`](Incoming::recv) yields messages until the sender finishes (`None`); an error (the
/// other side failed or cancelled, the deadline passed, its node was lost) ends the stream.
/// Dropping it tells the sender, whose next send fails.
pub struct Incoming<T> {
    receiver: StreamReceiver<StreamItem>,
    content_type: ContentType,
    deadline: Option<Instant>,
    /// The deadline's timer, made on the first poll that waits (for the `Stream` impl).
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    id: Arc<str>,
    ended: bool,
    /// On the client: the shape id of `T` it sent when the stream opened, to name a refusal.
    response_id: Option<u64>,
    _message: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for Incoming<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Incoming")
            .field("id", &self.id)
            .field("content_type", &self.content_type)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl<T: DeserializeOwned> Incoming<T> {
    pub(crate) fn new(
        receiver: StreamReceiver<StreamItem>,
        content_type: ContentType,
        deadline: Option<Instant>,
        id: Arc<str>,
    ) -> Self {
        Incoming {
            receiver,
            content_type,
            deadline,
            timer: None,
            id,
            ended: false,
            response_id: None,
            _message: PhantomData,
        }
    }

    /// Notes that the stream opened saying it reads `T` as shape id `id`.
    pub(crate) fn reading_as(mut self, id: Option<u64>) -> Self {
        self.response_id = id;
        self
    }

    /// The handler's refusal of `T` (its first response was of another type) as this side's
    /// decode error, naming both types; any other error as it came.
    fn name_response(&self, mut err: ServiceError) -> ServiceError {
        if let Some(id) = self.response_id
            && err.code == 400
            && let Some(head) = err.detail.strip_suffix(&response_tail(id))
        {
            err = ServiceError::internal(CLIENT_ID, format!("{head}not {}", type_name::<T>()));
        }
        err
    }

    /// The next message; `None` once the sender finished. After an error, `None`.
    pub async fn recv(&mut self) -> Option<Result<T, ServiceError>> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Polls for the next message (what [`recv`](Incoming::recv) and the `Stream` impl do).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<T, ServiceError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let next = match Pin::new(&mut self.receiver).poll_next(cx) {
            Poll::Ready(next) => next,
            Poll::Pending => {
                let Some(deadline) = self.deadline else {
                    return Poll::Pending;
                };
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.ended = true;
                return Poll::Ready(Some(Err(ServiceError::timeout(
                    &*self.id,
                    "the stream's deadline passed",
                ))));
            }
        };
        let item = match next {
            None => {
                self.ended = true;
                return Poll::Ready(None);
            }
            Some(Ok(StreamItem::Data(body))) => self
                .content_type
                .decode(&body)
                .map_err(|e| ServiceError::bad_request(&*self.id, e.to_string())),
            Some(Ok(StreamItem::Error(err))) => Err(self.name_response(err)),
            Some(Err(err)) => Err(stream_error(&self.id, err)),
        };
        if item.is_err() {
            self.ended = true;
        }
        Poll::Ready(Some(item))
    }

    /// Every message until the end, or the first error.
    pub async fn collect(mut self) -> Result<Vec<T>, ServiceError> {
        let mut all = Vec::new();
        while let Some(item) = self.recv().await {
            all.push(item?);
        }
        Ok(all)
    }
}

impl<T: DeserializeOwned> Stream for Incoming<T> {
    type Item = Result<T, ServiceError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_recv(cx)
    }
}

/// A transport failure on a stream, as a service error.
fn stream_error(id: &str, err: micro_runtime::Error) -> ServiceError {
    let mut mapped = ServiceError::from(err);
    mapped.id = id.to_owned();
    mapped
}
