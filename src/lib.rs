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
//! - [`service`](mod@service) (`micro-service`): [`Service`] (typed endpoints run by supervised endpoint
//!   actors, registered and kept alive in the registry, stopped gracefully) and [`Client`]
//!   (resolve, select, call, with retries, deadlines, headers and streams), with [`Wrapper`]s
//!   around both. Its items are also re-exported at the root ([`Service`], [`CallOptions`], …).
//! - [`registry`] (`micro-registry`): service discovery, memory or mDNS.
//! - [`broker`] (`micro-broker`): pubsub, a broker actor on every node.
//! - [`store`] (`micro-store`): a data store with versions, compare-and-set and revisioned
//!   watches, on memory, redb files or PostgreSQL (feature `postgres`).
//! - [`sync`] (`micro-sync`): distributed locks with fencing tokens and leader election, on
//!   memory, PostgreSQL (feature `postgres`) or etcd (feature `etcd`).
//! - [`config`] (`micro-config`): layered, typed, hot-reloaded configuration, a config actor on
//!   every node that other nodes can read and watch.
//!
//! # Features
//!
//! - `mdns` (default): the mDNS registry backend ([`registry::MdnsRegistry`]), which a node that
//!   listens starts by default when no registry runs under `"registry"` (unless
//!   `MICRO_REGISTRY=memory`). Without it the registry has the memory backend only, and services
//!   and clients start a memory one.
//! - `postgres`: the PostgreSQL backends of the store and sync (`store::PostgresStore`,
//!   `sync::PostgresSync`).
//! - `etcd`: the etcd backend of sync (`sync::EtcdSync`) and the config's etcd source
//!   (`config::Source::etcd`); its build runs `protoc`.
//! - `logging` (default): [`logging::init`], one line that prints the framework's logs (and
//!   your own `tracing` events) to stderr, filtered by `RUST_LOG`.
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
    Incoming, Logging, MDNS_INTERFACES_ENV, MDNS_SERVICE_TYPE_ENV, Metadata, Metrics,
    NODE_NAME_KEY, Next, Outgoing, REGISTRY_ENV, REQUEST_SCHEMA_KEY, RESPONSE_SCHEMA_KEY, Request,
    Response, RetryBudget, RetryPolicy, RunningService, SHAPE_KEY, STATS_ENDPOINT, Selector,
    Service, ServiceError, ServiceHandler, ServiceStats, Shape, TRACE_ID_HEADER, Tracing,
    WithHeaders, Wrapper, new_trace_id, shape_id, shape_id_of,
};

/// Turns a trait into a typed service: a handler trait to implement, its registration
/// (`Service::handle(InventoryServer::new(...))`) and a typed client (`InventoryClient`). See
/// ARCHITECTURE.md's "Typed services" for what it generates, naming and shapes.
///
/// ```no_run
/// use micro::{CallContext, Client, Node, Service, ServiceError};
/// use schemars::JsonSchema;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, JsonSchema)]
/// struct ReserveRequest { item: String, count: u32 }
///
/// #[derive(Serialize, Deserialize, JsonSchema)]
/// struct ReserveReply { left: u32 }
///
/// #[micro::service]
/// trait Inventory {
///     /// Reserves `count` of `item`: endpoint `Inventory.Reserve`.
///     async fn reserve(&self, ctx: CallContext, req: ReserveRequest)
///         -> Result<ReserveReply, ServiceError>;
/// }
///
/// struct Warehouse;
///
/// impl Inventory for Warehouse {
///     async fn reserve(&self, _: CallContext, req: ReserveRequest)
///         -> Result<ReserveReply, ServiceError> {
///         Ok(ReserveReply { left: 10 - req.count })
///     }
/// }
///
/// # #[tokio::main] async fn main() -> Result<(), ServiceError> {
/// let node = Node::builder().listen("127.0.0.1:0".parse().unwrap()).start().await?;
/// // One call registers every endpoint of the trait.
/// let _running = Service::new(InventoryClient::SERVICE)
///     .handle(InventoryServer::new(Warehouse))
///     .start(&node)
///     .await?;
/// let client = Client::new(&node).await?;
/// let inventory = InventoryClient::new(&client);
/// let reply = inventory.reserve(&ReserveRequest { item: "widget".into(), count: 3 }).await?;
/// assert_eq!(reply.left, 7);
/// # Ok(()) }
/// ```
pub use micro_service::service;

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

/// The data store: read, write, delete, list with prefix, suffix, limit and offset, TTLs,
/// databases and tables; versions, compare-and-set and revisioned watches (the `micro-store`
/// crate).
pub mod store {
    #[doc(inline)]
    pub use micro_store::*;
}

/// Distributed locks with fencing tokens and leader election: the sync actor, its backends
/// (memory; PostgreSQL and etcd behind the `postgres` and `etcd` features) and the `Sync`
/// handle (the `micro-sync` crate).
pub mod sync {
    #[doc(inline)]
    pub use micro_sync::*;
}

/// Config: sources merged in order (defaults, files, etcd, env, overrides), typed reads, watches
/// and hot reload (the `micro-config` crate).
pub mod config {
    #[doc(inline)]
    pub use micro_config::*;
}

/// Auth: accounts, Ed25519-signed tokens verified on any node, and Go Micro's rules, enforced
/// on a service by [`Service::auth`] (the `micro-auth` crate).
pub mod auth {
    #[doc(inline)]
    pub use micro_auth::*;
    pub use micro_service::{AUTHORIZATION_HEADER, Credentials};
}

/// Logs to stderr, filtered by `RUST_LOG` (the `logging` feature, on by default).
///
/// The framework logs through [`tracing`](https://docs.rs/tracing) and installs nothing itself:
/// without a subscriber, its warnings (a peer refused, a node of another cluster ignored, a
/// service deregistered…) go nowhere. Call [`logging::init`] first thing in `main`:
///
/// ```
/// micro::logging::init();
/// // RUST_LOG=info, RUST_LOG=debug, RUST_LOG=micro_service=debug,warn… (default: warn)
/// ```
///
/// Without `RUST_LOG` only warnings and errors are printed, so a program (every example here)
/// prints its own output and nothing else; `RUST_LOG=info` shows what the framework does
/// (nodes listening, services registered, peers connected).
#[cfg(feature = "logging")]
pub mod logging {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    /// What is logged when `RUST_LOG` is not set: warnings and errors only, so that a
    /// program's own output is all it prints until asked for more (`RUST_LOG=info`).
    pub const DEFAULT_FILTER: &str = "warn";

    /// Installs a subscriber printing to stderr, filtered by `RUST_LOG` (its syntax is
    /// tracing-subscriber's `EnvFilter`: `debug`, `micro_runtime=debug,warn`…), or at
    /// [`DEFAULT_FILTER`] when it is unset or does not parse. Does nothing when a subscriber is
    /// already installed, so calling it twice (or from tests) is harmless.
    pub fn init() {
        let _ = try_init();
    }

    /// [`init`], telling whether the subscriber was installed: an error when another global
    /// subscriber was already set.
    pub fn try_init() -> Result<(), tracing_subscriber::util::TryInitError> {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_FILTER));
        tracing_subscriber::registry()
            .with(filter)
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .try_init()
    }
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
