//! # micro
//!
//! A framework for distributed systems in Rust, built as an actor runtime: every primitive (service
//! registry, pubsub broker, store, locks, config) and every service endpoint is a supervised actor
//! exchanging typed messages, and remote actors are transparent over QUIC.
//!
//! This crate is the front door. It holds services — [`Service`] (typed endpoints run by
//! supervised endpoint actors, registered and kept alive in the registry, stopped gracefully) and
//! [`Client`] (resolve, select, call, with retries, deadlines, headers and streams) with
//! [`Wrapper`]s around both — and re-exports what they stand on: the runtime
//! ([`micro_runtime`]: nodes, supervision, typed addresses, reply ports, remote actors over
//! QUIC), the registry ([`registry`]) and the broker ([`broker`]).
//!
//! ```
//! use micro::prelude::*;
//! use std::time::Duration;
//!
//! #[derive(Default)]
//! struct Counter(u64);
//!
//! enum CounterMsg { Add(u64), Get(Reply<u64>) }
//!
//! impl Actor for Counter {
//!     type Msg = CounterMsg;
//!     async fn handle(&mut self, _ctx: &mut Context<Self>, msg: CounterMsg) -> Result<(), ActorError> {
//!         match msg {
//!             CounterMsg::Add(n) => self.0 += n,
//!             CounterMsg::Get(reply) => { let _ = reply.send(self.0); }
//!         }
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), micro::Error> {
//! let node = Node::builder().name("demo").start().await?;
//! let counter = node.spawn(ChildSpec::new(Counter::default).named("counter")).await?;
//! counter.send(CounterMsg::Add(2))?;
//! assert_eq!(counter.ask(CounterMsg::Get, Duration::from_secs(1)).await?, 2);
//! node.shutdown().await?;
//! # Ok(()) }
//! ```

pub use micro_runtime::*;

pub use micro_service::{
    BoxFuture, Bytes, CallContext, CallOptions, Client, ClientBuilder, ClientStreaming, Ejection,
    Endpoint, EndpointMetrics, EndpointStats, Filter, HEALTH_ENDPOINT, Health, IDEMPOTENT_KEY,
    Incoming, Logging, Metadata, Metrics, NODE_NAME_KEY, Next, Outgoing, Request, Response,
    RetryBudget, RetryPolicy, RunningService, SHAPE_KEY, STATS_ENDPOINT, Selector, Service,
    ServiceError, ServiceStats, Shape, TRACE_ID_HEADER, Tracing, WithHeaders, Wrapper,
    new_trace_id,
};

/// Service discovery: the registry actor, its backends (memory, mDNS) and a watch-fed cache.
pub use micro_registry as registry;

/// Pubsub: a broker actor on every node, queue groups, at-most-once or at-least-once delivery.
pub use micro_broker as broker;

/// The names most programs need, for `use micro::prelude::*`.
pub mod prelude {
    pub use crate::{
        CallContext, CallOptions, Client, Endpoint, Incoming, Outgoing, Selector, Service,
        ServiceError,
    };
    pub use micro_runtime::{
        Actor, ActorError, Addr, Backoff, ChildSpec, Context, Error, ExitReason, Intensity, Node,
        RemoteMessage, Reply, Restart, Strategy, SupervisionEvent, SupervisorRef, SupervisorSpec,
    };
}

/// The README's examples are compiled and run as doc tests, so the tour stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
