//! Wrappers (middleware) around calls, on the client and on handlers: a chain of [`Wrapper`]s,
//! each deciding whether and how to call the [`Next`] one. Built in: [`Logging`], [`Tracing`]
//! (a trace id carried in the headers, so one call's spans link across nodes) and [`Metrics`].

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use micro_runtime::ContentType;
use tokio::time::Instant;
use tracing::Instrument;

use crate::{Metadata, ServiceError, TRACE_ID_HEADER};

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A call as wrappers see it: names, headers and the encoded body.
#[derive(Debug, Clone)]
pub struct Request {
    /// The service called.
    pub service: Arc<str>,
    /// The endpoint called, e.g. `"Greeter.Hello"`.
    pub endpoint: Arc<str>,
    /// How the body is encoded (the response comes back in the same).
    pub content_type: ContentType,
    /// Headers.
    pub metadata: Metadata,
    /// The encoded request.
    pub body: Bytes,
    /// When the caller stops waiting.
    pub deadline: Option<Instant>,
}

/// A call's answer as wrappers see it.
#[derive(Debug, Clone, Default)]
pub struct Response {
    /// Headers set by the handler and wrappers.
    pub metadata: Metadata,
    /// The encoded response, in the request's content type.
    pub body: Bytes,
}

/// Middleware around unary calls: on a [`Client`](crate::Client) it wraps the whole call
/// (retries included); on a [`Service`](crate::Service) it wraps each handler call. Wrappers run
/// in the order they were added, the first outermost.
///
/// ```
/// use micro_service::{BoxFuture, Next, Request, Response, ServiceError, Wrapper};
///
/// /// Refuses calls without an `authorization` header.
/// struct RequireAuth;
///
/// impl Wrapper for RequireAuth {
///     fn call<'a>(&'a self, request: Request, next: Next<'a>) -> BoxFuture<'a, Result<Response, ServiceError>> {
///         Box::pin(async move {
///             if !request.metadata.contains_key("authorization") {
///                 return Err(ServiceError::unauthorized(&*request.service, "no token"));
///             }
///             next.run(request).await
///         })
///     }
/// }
/// ```
pub trait Wrapper: Send + Sync + 'static {
    /// Handles `request`, usually by passing it (changed or not) to `next`.
    fn call<'a>(
        &'a self,
        request: Request,
        next: Next<'a>,
    ) -> BoxFuture<'a, Result<Response, ServiceError>>;
}

impl std::fmt::Debug for dyn Wrapper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Wrapper")
    }
}

/// The innermost step of a chain: the handler, or the client's send.
pub(crate) type Inner<'a> =
    dyn Fn(Request) -> BoxFuture<'a, Result<Response, ServiceError>> + Send + Sync + 'a;

/// The rest of a wrapper chain.
pub struct Next<'a> {
    rest: &'a [Arc<dyn Wrapper>],
    inner: &'a Inner<'a>,
}

impl<'a> Next<'a> {
    pub(crate) fn new(chain: &'a [Arc<dyn Wrapper>], inner: &'a Inner<'a>) -> Self {
        Next { rest: chain, inner }
    }

    /// Runs the rest of the chain.
    pub fn run(self, request: Request) -> BoxFuture<'a, Result<Response, ServiceError>> {
        match self.rest.split_first() {
            Some((wrapper, rest)) => wrapper.call(
                request,
                Next {
                    rest,
                    inner: self.inner,
                },
            ),
            None => (self.inner)(request),
        }
    }
}

impl fmt::Debug for Next<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Next")
            .field("wrappers_left", &self.rest.len())
            .finish()
    }
}

/// Logs each call (service, endpoint, duration, outcome) as a `tracing` event: `debug` on
/// success, `warn` on error.
#[derive(Debug, Clone, Copy, Default)]
pub struct Logging;

impl Wrapper for Logging {
    fn call<'a>(
        &'a self,
        request: Request,
        next: Next<'a>,
    ) -> BoxFuture<'a, Result<Response, ServiceError>> {
        Box::pin(async move {
            let service = request.service.clone();
            let endpoint = request.endpoint.clone();
            let started = Instant::now();
            let outcome = next.run(request).await;
            let micros = started.elapsed().as_micros();
            match &outcome {
                Ok(_) => tracing::debug!(%service, %endpoint, micros, "call ok"),
                Err(err) => {
                    tracing::warn!(%service, %endpoint, micros, code = err.code, error = %err, "call failed")
                }
            }
            outcome
        })
    }
}

/// Gives every call a trace id carried in the [`TRACE_ID_HEADER`] header, and runs it inside a
/// span holding that id: on the client a `micro.call` span (a new id unless the caller set one),
/// on the server a `micro.handle` span with the caller's id, which it also returns in the
/// response headers. One call's spans on every node share the id.
#[derive(Debug, Clone, Copy)]
pub struct Tracing {
    side: Side,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Server,
}

impl Tracing {
    /// For a [`Client`](crate::Client).
    pub fn client() -> Self {
        Tracing { side: Side::Client }
    }

    /// For a [`Service`](crate::Service).
    pub fn server() -> Self {
        Tracing { side: Side::Server }
    }
}

/// A fresh random trace id: 16 hex digits.
pub fn new_trace_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

impl Wrapper for Tracing {
    fn call<'a>(
        &'a self,
        mut request: Request,
        next: Next<'a>,
    ) -> BoxFuture<'a, Result<Response, ServiceError>> {
        let trace_id = request
            .metadata
            .entry(TRACE_ID_HEADER.to_owned())
            .or_insert_with(new_trace_id)
            .clone();
        let span = match self.side {
            Side::Client => {
                tracing::info_span!("micro.call", service = %request.service, endpoint = %request.endpoint, trace_id = %trace_id)
            }
            Side::Server => {
                tracing::info_span!("micro.handle", service = %request.service, endpoint = %request.endpoint, trace_id = %trace_id)
            }
        };
        let side = self.side;
        Box::pin(
            async move {
                let mut outcome = next.run(request).await;
                if side == Side::Server
                    && let Ok(response) = &mut outcome
                {
                    response
                        .metadata
                        .entry(TRACE_ID_HEADER.to_owned())
                        .or_insert(trace_id);
                }
                outcome
            }
            .instrument(span),
        )
    }
}

/// Counts calls per endpoint: requests, errors and total latency. Clone it to read what it
/// counted while it is installed.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    endpoints: Arc<Mutex<HashMap<Arc<str>, Arc<Counters>>>>,
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    errors: AtomicU64,
    micros: AtomicU64,
}

/// What [`Metrics`] counted for one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointMetrics {
    /// `service/endpoint`.
    pub name: String,
    /// Calls seen.
    pub requests: u64,
    /// Calls that ended in an error.
    pub errors: u64,
    /// Their total duration, in microseconds.
    pub total_micros: u64,
}

impl Metrics {
    /// A fresh set of counters.
    pub fn new() -> Self {
        Self::default()
    }

    /// What was counted so far, by endpoint name.
    pub fn snapshot(&self) -> Vec<EndpointMetrics> {
        let endpoints = self.endpoints.lock().map(|e| e.clone()).unwrap_or_default();
        let mut all: Vec<EndpointMetrics> = endpoints
            .iter()
            .map(|(name, c)| EndpointMetrics {
                name: name.to_string(),
                requests: c.requests.load(Ordering::Relaxed),
                errors: c.errors.load(Ordering::Relaxed),
                total_micros: c.micros.load(Ordering::Relaxed),
            })
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    fn counters(&self, request: &Request) -> Arc<Counters> {
        let name: Arc<str> = format!("{}/{}", request.service, request.endpoint).into();
        match self.endpoints.lock() {
            Ok(mut endpoints) => endpoints.entry(name).or_default().clone(),
            Err(_) => Arc::default(),
        }
    }
}

impl Wrapper for Metrics {
    fn call<'a>(
        &'a self,
        request: Request,
        next: Next<'a>,
    ) -> BoxFuture<'a, Result<Response, ServiceError>> {
        let counters = self.counters(&request);
        Box::pin(async move {
            let started = Instant::now();
            let outcome = next.run(request).await;
            let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            counters.requests.fetch_add(1, Ordering::Relaxed);
            counters.micros.fetch_add(micros, Ordering::Relaxed);
            if outcome.is_err() {
                counters.errors.fetch_add(1, Ordering::Relaxed);
            }
            outcome
        })
    }
}
