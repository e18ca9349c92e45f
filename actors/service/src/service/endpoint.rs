//! [`Endpoint`]: one typed handler of a service — unary, or one of the three streaming shapes —
//! and the adapters that turn it into bytes in, bytes out.

use std::any::type_name;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use micro_runtime::{ContentType, StreamReceiver};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::body::Body;
use crate::shape::{mismatch_tail, shape_id};
use crate::stream::SharedSender;
use crate::wire::{Answer, StreamItem};
use crate::{BoxFuture, CallContext, Incoming, Outgoing, ServiceError};

/// The shape of an endpoint's calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One request, one response.
    Unary,
    /// One request, a stream of responses.
    ServerStream,
    /// A stream of requests, one response.
    ClientStream,
    /// Streams both ways.
    Bidi,
}

impl Shape {
    /// How the registry describes it (endpoint metadata `stream`).
    pub fn as_str(self) -> &'static str {
        match self {
            Shape::Unary => "unary",
            Shape::ServerStream => "server",
            Shape::ClientStream => "client",
            Shape::Bidi => "bidi",
        }
    }
}

/// A unary handler, an encoded body in and an encoded answer out.
pub(crate) trait UnaryHandler: Send + Sync + 'static {
    /// `type_id` is the shape id of the caller's request type, when it sent one: checked
    /// against the handler's before the body is decoded.
    fn call(
        &self,
        ctx: CallContext,
        content_type: ContentType,
        type_id: Option<u64>,
        body: Body,
    ) -> BoxFuture<'static, Result<Answer, ServiceError>>;
}

/// A streaming handler of any shape, over raw streams.
pub(crate) trait StreamHandler: Send + Sync + 'static {
    /// `response_id` is the shape id of the response type the caller reads, when it sent one:
    /// checked against the handler's first response.
    fn open(
        &self,
        ctx: CallContext,
        content_type: ContentType,
        requests: StreamReceiver<StreamItem>,
        responses: SharedSender,
        response_id: Option<u64>,
    ) -> BoxFuture<'static, Result<(), ServiceError>>;

    /// The request type's shape id (`None`: not checked) and name, checked when a stream opens
    /// against the id the caller sent.
    fn request(&self) -> (Option<u64>, &'static str);
}

#[derive(Clone)]
pub(crate) enum Handler {
    Unary(Arc<dyn UnaryHandler>),
    Stream(Arc<dyn StreamHandler>),
}

/// One endpoint of a [`Service`](crate::Service): a name like `"Greeter.Hello"`, an async
/// handler from a typed request to a typed response (or a [`ServiceError`]), and options.
///
/// ```
/// use micro_service::{CallContext, Endpoint, ServiceError};
///
/// let hello = Endpoint::unary("Greeter.Hello", |_ctx: CallContext, name: String| async move {
///     Ok::<_, ServiceError>(format!("Hello {name}"))
/// })
/// .idempotent();
/// assert_eq!(hello.name(), "Greeter.Hello");
/// ```
#[derive(Clone)]
pub struct Endpoint {
    pub(crate) name: Arc<str>,
    pub(crate) shape: Shape,
    pub(crate) handler: Handler,
    pub(crate) request_type: &'static str,
    pub(crate) response_type: &'static str,
    pub(crate) idempotent: bool,
    pub(crate) max_concurrent: Option<usize>,
    /// Extra entries of the endpoint's registry record (the service macro's JSON Schemas).
    pub(crate) metadata: micro_registry::Metadata,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("name", &self.name)
            .field("shape", &self.shape)
            .field("request", &self.request_type)
            .field("response", &self.response_type)
            .field("idempotent", &self.idempotent)
            .field("max_concurrent", &self.max_concurrent)
            .field("metadata", &self.metadata)
            .finish()
    }
}

impl Endpoint {
    fn new<Req, Resp>(name: &str, shape: Shape, handler: Handler) -> Self {
        Endpoint {
            name: name.into(),
            shape,
            handler,
            request_type: type_name::<Req>(),
            response_type: type_name::<Resp>(),
            idempotent: false,
            max_concurrent: None,
            metadata: micro_registry::Metadata::new(),
        }
    }

    /// A unary endpoint: `handler(ctx, request)` answers one request with one response.
    ///
    /// A call that carries its request type's [shape id](crate::shape_id) (what
    /// [`Client::call`](crate::Client::call) sends in a binary codec) is checked before
    /// decoding: another type is refused with 400 naming the type expected, and the handler
    /// does not run.
    pub fn unary<Req, Resp, F, Fut>(name: &str, handler: F) -> Self
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        F: Fn(CallContext, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, ServiceError>> + Send + 'static,
    {
        Self::unary_with_error(name, handler)
    }

    /// [`unary`](Self::unary) with a handler whose error is any type that converts into a
    /// [`ServiceError`] (`impl From<MyError> for ServiceError`), e.g. an `async fn` returning
    /// `Result<_, MyError>`.
    pub fn unary_with_error<Req, Resp, F, Fut, E>(name: &str, handler: F) -> Self
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        F: Fn(CallContext, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, E>> + Send + 'static,
        E: Into<ServiceError> + 'static,
    {
        let typed = TypedUnary {
            handler,
            request_id: shape_id::<Req>(),
            _types: PhantomData::<fn(Req) -> Result<Resp, E>>,
        };
        Self::new::<Req, Resp>(name, Shape::Unary, Handler::Unary(Arc::new(typed)))
    }

    /// A server-streaming endpoint: `handler(ctx, request, responses)` sends any number of
    /// responses to one request; the stream ends when it returns (with its error, if any).
    pub fn server_stream<Req, Resp, F, Fut>(name: &str, handler: F) -> Self
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        F: Fn(CallContext, Req, Outgoing<Resp>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), ServiceError>> + Send + 'static,
    {
        Self::server_stream_with_error(name, handler)
    }

    /// [`server_stream`](Self::server_stream) with a handler whose error is any type that converts into a
    /// [`ServiceError`] (`impl From<MyError> for ServiceError`), e.g. an `async fn` returning
    /// `Result<_, MyError>`.
    pub fn server_stream_with_error<Req, Resp, F, Fut, E>(name: &str, handler: F) -> Self
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        F: Fn(CallContext, Req, Outgoing<Resp>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<ServiceError> + 'static,
    {
        let handler = Arc::new(handler);
        let endpoint = Self::bidi_stream(
            name,
            move |ctx: CallContext, mut requests: Incoming<Req>, responses: Outgoing<Resp>| {
                let handler = handler.clone();
                async move {
                    let request = match requests.recv().await {
                        Some(request) => request?,
                        None => {
                            return Err(ServiceError::bad_request(
                                ctx.service(),
                                "the stream carried no request",
                            ));
                        }
                    };
                    handler(ctx, request, responses).await.map_err(Into::into)
                }
            },
        );
        Endpoint {
            shape: Shape::ServerStream,
            ..endpoint
        }
    }

    /// A client-streaming endpoint: `handler(ctx, requests)` reads a stream of requests and
    /// answers with one response.
    pub fn client_stream<Req, Resp, F, Fut>(name: &str, handler: F) -> Self
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        F: Fn(CallContext, Incoming<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, ServiceError>> + Send + 'static,
    {
        Self::client_stream_with_error(name, handler)
    }

    /// [`client_stream`](Self::client_stream) with a handler whose error is any type that converts into a
    /// [`ServiceError`] (`impl From<MyError> for ServiceError`), e.g. an `async fn` returning
    /// `Result<_, MyError>`.
    pub fn client_stream_with_error<Req, Resp, F, Fut, E>(name: &str, handler: F) -> Self
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        F: Fn(CallContext, Incoming<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, E>> + Send + 'static,
        E: Into<ServiceError> + 'static,
    {
        let handler = Arc::new(handler);
        let endpoint = Self::bidi_stream(
            name,
            move |ctx: CallContext, requests: Incoming<Req>, mut responses: Outgoing<Resp>| {
                let handler = handler.clone();
                async move {
                    let response = handler(ctx, requests).await.map_err(Into::into)?;
                    responses.send(&response).await
                }
            },
        );
        Endpoint {
            shape: Shape::ClientStream,
            ..endpoint
        }
    }

    /// A bidirectional endpoint: `handler(ctx, requests, responses)` reads and sends as it
    /// likes; the response stream ends when it returns.
    pub fn bidi_stream<Req, Resp, F, Fut>(name: &str, handler: F) -> Self
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        F: Fn(CallContext, Incoming<Req>, Outgoing<Resp>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), ServiceError>> + Send + 'static,
    {
        Self::bidi_stream_with_error(name, handler)
    }

    /// [`bidi_stream`](Self::bidi_stream) with a handler whose error is any type that converts into a
    /// [`ServiceError`] (`impl From<MyError> for ServiceError`), e.g. an `async fn` returning
    /// `Result<_, MyError>`.
    pub fn bidi_stream_with_error<Req, Resp, F, Fut, E>(name: &str, handler: F) -> Self
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        F: Fn(CallContext, Incoming<Req>, Outgoing<Resp>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<ServiceError> + 'static,
    {
        let handler = Arc::new(handler);
        let open = move |ctx: CallContext, ct, requests, responses: SharedSender, expected| {
            let id: Arc<str> = ctx.service().into();
            let incoming = Incoming::<Req>::new(requests, ct, ctx.deadline(), id.clone());
            let mut outgoing = Outgoing::<Resp>::new(responses, ct, id);
            if let Some(expected) = expected {
                outgoing = outgoing.checked_against(expected, ctx.endpoint().into());
            }
            let run = handler(ctx, incoming, outgoing);
            Box::pin(async move { run.await.map_err(Into::into) }) as BoxFuture<'static, _>
        };
        let handler = TypedStream {
            open,
            request_id: shape_id::<Req>(),
            request_type: type_name::<Req>(),
        };
        Self::new::<Req, Resp>(name, Shape::Bidi, Handler::Stream(Arc::new(handler)))
    }

    /// Marks the endpoint idempotent: calling it twice does no more harm than once, so a client
    /// may retry it on another node even when it cannot know whether the first attempt ran.
    #[must_use]
    pub fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self
    }

    /// At most `calls` at once on each node; past it, callers get 503 (retryable elsewhere).
    #[must_use]
    pub fn max_concurrent(mut self, calls: usize) -> Self {
        self.max_concurrent = Some(calls.max(1));
        self
    }

    /// Adds `key = value` to this endpoint's registry record, next to its shape and idempotent
    /// mark (which this cannot override). `#[micro::service]` publishes its request and response
    /// JSON Schemas this way ([`REQUEST_SCHEMA_KEY`](crate::REQUEST_SCHEMA_KEY),
    /// [`RESPONSE_SCHEMA_KEY`](crate::RESPONSE_SCHEMA_KEY)).
    #[must_use]
    pub fn meta(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// The endpoint's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its shape.
    pub fn shape(&self) -> Shape {
        self.shape
    }
}

struct TypedUnary<F, Types> {
    handler: F,
    /// The request type's shape id, computed once.
    request_id: Option<u64>,
    _types: PhantomData<Types>,
}

/// The 400 for a request whose type's shape id is not the endpoint's: it names the type the
/// endpoint expects and the id it got; the client, which knows its type's name, puts that name
/// in place of the id ([`mismatch_tail`]).
fn type_mismatch(ctx: &CallContext, expected: &str, got: u64) -> ServiceError {
    request_mismatch(ctx.service(), ctx.endpoint(), expected, got)
}

/// [`type_mismatch`] for a service and endpoint by name (a stream is refused before it has a
/// context).
pub(crate) fn request_mismatch(
    service: &str,
    endpoint: &str,
    expected: &str,
    got: u64,
) -> ServiceError {
    ServiceError::bad_request(
        service,
        format!("{endpoint} expects {expected}, {}", mismatch_tail(got)),
    )
}

impl<Req, Resp, F, Fut, E> UnaryHandler for TypedUnary<F, fn(Req) -> Result<Resp, E>>
where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
    F: Fn(CallContext, Req) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Resp, E>> + Send + 'static,
    E: Into<ServiceError> + 'static,
{
    fn call(
        &self,
        ctx: CallContext,
        content_type: ContentType,
        type_id: Option<u64>,
        body: Body,
    ) -> BoxFuture<'static, Result<Answer, ServiceError>> {
        if let (Some(got), Some(expected)) = (type_id, self.request_id)
            && got != expected
        {
            let err = type_mismatch(&ctx, type_name::<Req>(), got);
            return Box::pin(std::future::ready(Err(err)));
        }
        let request: Req = match content_type.decode(&body) {
            Ok(request) => request,
            Err(err) => {
                let err = ServiceError::bad_request(ctx.service(), err.to_string());
                return Box::pin(std::future::ready(Err(err)));
            }
        };
        let answer = (self.handler)(ctx.clone(), request);
        Box::pin(async move {
            let response = answer.await.map_err(Into::into)?;
            let body = Body::encode(content_type, &response)
                .map_err(|e| ServiceError::internal(ctx.service(), e.to_string()))?;
            Ok(Answer {
                metadata: ctx.take_reply_metadata(),
                body,
            })
        })
    }
}

/// A streaming handler over raw streams, with its request type's id and name.
struct TypedStream<F> {
    open: F,
    /// The request type's shape id, computed once.
    request_id: Option<u64>,
    request_type: &'static str,
}

impl<F> StreamHandler for TypedStream<F>
where
    F: Fn(
            CallContext,
            ContentType,
            StreamReceiver<StreamItem>,
            SharedSender,
            Option<u64>,
        ) -> BoxFuture<'static, Result<(), ServiceError>>
        + Send
        + Sync
        + 'static,
{
    fn open(
        &self,
        ctx: CallContext,
        content_type: ContentType,
        requests: StreamReceiver<StreamItem>,
        responses: SharedSender,
        response_id: Option<u64>,
    ) -> BoxFuture<'static, Result<(), ServiceError>> {
        (self.open)(ctx, content_type, requests, responses, response_id)
    }

    fn request(&self) -> (Option<u64>, &'static str) {
        (self.request_id, self.request_type)
    }
}
