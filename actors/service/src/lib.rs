//! Services for micro: typed endpoints run by supervised actors, and the client that calls them.
//!
//! A [`Service`] is a named, versioned set of typed [`Endpoint`]s. Started on a node, it becomes a
//! supervisor with one endpoint actor per endpoint (reachable from other nodes), registers itself
//! in the node's registry and keeps the registration alive until it is stopped gracefully
//! ([`RunningService::stop`]: refuse new calls, deregister, drain, stop). A [`Client`] calls a
//! service by name: it resolves it in the registry (a watch-fed cache), selects a node
//! ([`Selector`], [`Filter`], ejection of failing nodes), and retries on another node what never
//! reached a handler ([`RetryPolicy`], [`RetryBudget`]), within one deadline ([`CallOptions`]).
//! Endpoints may stream in either direction ([`Incoming`], [`Outgoing`]); [`Wrapper`]s
//! ([`Logging`], [`Tracing`], [`Metrics`]) wrap calls on either side; every failure is a
//! [`ServiceError`] (id, HTTP-like code, detail) that reaches the caller unchanged.
//! Endpoints may also be declared as a trait with [`macro@service`]: a handler trait, its
//! registration ([`Service::handle`], [`ServiceHandler`]) and a typed client, with the request
//! and response JSON Schemas published in the registry.
//!
//! This crate stands on `micro-runtime` (nodes, actors, remote actors over QUIC),
//! `micro-registry` (discovery) and `micro-broker` (a service's subscribers). Applications
//! usually depend on the `micro` facade, which re-exports all of it; tools that only need
//! services (a CLI, a gateway) can depend on this crate alone.
//!
//! With no registry given ([`Service::registry`], [`ClientBuilder::registry`]), a service and a
//! client use the node's `"registry"` actor, starting a memory registry if the node has none.
//! The mDNS backend (feature `mdns`, on by default) is used only when asked for, e.g. with
//! `micro_registry::Registry::mdns`.
//!
//! ```no_run
//! use micro_runtime::Node;
//! use micro_service::{CallContext, Client, Endpoint, Service, ServiceError};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), ServiceError> {
//! let node = Node::builder().listen("127.0.0.1:0".parse().unwrap()).start().await?;
//! let greeter = Service::new("greeter")
//!     .version("1.0.0")
//!     .endpoint(
//!         Endpoint::unary("Greeter.Hello", |_: CallContext, name: String| async move {
//!             Ok::<_, ServiceError>(format!("Hello {name}"))
//!         })
//!         .idempotent(),
//!     )
//!     .start(&node)
//!     .await?;
//!
//! let client = Client::new(&node).await?;
//! let reply: String = client.call("greeter", "Greeter.Hello", &"Ada".to_owned()).await?;
//! assert_eq!(reply, "Hello Ada");
//!
//! greeter.stop().await?;
//! # Ok(()) }
//! ```

mod auth;
mod body;
mod client;
mod context;
mod error;
mod service;
mod shape;
mod stream;
mod typed;
mod wire;
mod wrapper;

pub use auth::{AUTHORIZATION_HEADER, Credentials};
pub use bytes::Bytes;
pub use client::{
    CallOptions, Client, ClientBuilder, ClientStreaming, Ejection, Filter, RetryBudget,
    RetryPolicy, Selector, WithHeaders,
};
pub use context::{CallContext, TRACE_ID_HEADER};
pub use error::ServiceError;
pub use micro_registry::Metadata;
pub use service::{
    Endpoint, EndpointStats, HEALTH_ENDPOINT, Health, IDEMPOTENT_KEY, MDNS_INTERFACES_ENV,
    MDNS_SERVICE_TYPE_ENV, NODE_NAME_KEY, REGISTRY_ENV, REQUEST_SCHEMA_KEY, RESPONSE_SCHEMA_KEY,
    RunningService, SHAPE_KEY, STATS_ENDPOINT, Service, ServiceStats, Shape,
};
pub use shape::{shape_id, shape_id_of};
pub use stream::{Incoming, Outgoing};
#[doc(hidden)]
pub use typed::__private;
pub use typed::ServiceHandler;

/// Turns a trait into a typed service: a handler trait, its registration and a typed client
/// (see the `micro-macros` crate and ARCHITECTURE.md's "Typed services").
pub use micro_macros::service;
pub use wrapper::{
    BoxFuture, EndpointMetrics, Logging, Metrics, Next, Request, Response, Tracing, Wrapper,
    new_trace_id,
};
