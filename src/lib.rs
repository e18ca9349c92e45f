//! # micro
//!
//! A framework for distributed systems in Rust, built as an actor runtime: every primitive (service
//! registry, pubsub broker, store, locks, config) and every service endpoint is a supervised actor
//! exchanging typed messages, and remote actors are transparent over QUIC.
//!
//! This crate is the front door users depend on: a facade over the crates that do the work, with
//! the names most programs need at its root and in [`prelude`].
//!
//! - [`runtime`] (`micro-runtime`): nodes, supervision, typed addresses, reply ports, remote
//!   actors over QUIC. Its items are also re-exported at the root ([`Node`], [`Addr`], …).
//! - [`service`] (`micro-service`): [`Service`] (typed endpoints run by supervised endpoint
//!   actors, registered and kept alive in the registry, stopped gracefully) and [`Client`]
//!   (resolve, select, call, with retries, deadlines, headers and streams), with [`Wrapper`]s
//!   around both. Its items are also re-exported at the root ([`Service`], [`CallOptions`], …).
//! - [`registry`] (`micro-registry`): service discovery, memory or mDNS.
//! - [`broker`] (`micro-broker`): pubsub, a broker actor on every node.
//!
//! # Features
//!
//! - `mdns` (default): the mDNS registry backend ([`registry::MdnsRegistry`]). Without it the
//!   registry has the memory backend only; services and clients are unaffected, since with no
//!   registry given they use the node's `"registry"` actor or start a memory one.
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
    new_trace_id, shape_id, shape_id_of,
};

/// The runtime: nodes, actors, supervision, typed addresses and reply ports, remote actors over
/// QUIC (the `micro-runtime` crate; its items are also at the root of `micro`).
pub mod runtime {
    #[doc(inline)]
    pub use micro_runtime::*;
}

/// Services: typed endpoints, the client, selection, retries, wrappers, streams (the
/// `micro-service` crate; its items are also at the root of `micro`).
pub mod service {
    #[doc(inline)]
    pub use micro_service::*;
}

/// Service discovery: the registry actor, its backends (memory, mDNS) and a watch-fed cache (the
/// `micro-registry` crate).
pub mod registry {
    #[doc(inline)]
    pub use micro_registry::*;
}

/// Pubsub: a broker actor on every node, queue groups, at-most-once or at-least-once delivery
/// (the `micro-broker` crate).
pub mod broker {
    #[doc(inline)]
    pub use micro_broker::*;
}

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
