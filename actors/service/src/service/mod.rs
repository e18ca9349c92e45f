//! [`Service`]: a named, versioned set of endpoints, started on a node as a supervised tree of
//! endpoint actors and kept registered; [`RunningService`] stops it gracefully.

mod actor;
mod endpoint;
mod keeper;
mod stats;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use micro_broker::{Broker, BrokerError, SubscriberSpec, Subscription, SubscriptionStats};
use micro_registry::{MemoryRegistry, NodeRecord, Registry, RegistryMsg};
use micro_runtime::{ChildSpec, Node, Strategy, SupervisorRef, SupervisorSpec};
use tokio::time::Instant;

pub(crate) use actor::STREAM_BUFFER;
pub use endpoint::{Endpoint, Shape};
pub use stats::{EndpointStats, HEALTH_ENDPOINT, Health, STATS_ENDPOINT, ServiceStats};

use self::actor::{EndpointActor, EndpointShared};
use self::keeper::Keeper;
use self::stats::{Counters, Drain};
use crate::error::SERVER_ID;
use crate::wire::{EndpointMsg, actor_name};
use crate::{CallContext, Metadata, ServiceError, Wrapper};

/// Endpoint metadata key: `"true"` when the endpoint is idempotent.
pub const IDEMPOTENT_KEY: &str = "idempotent";
/// Endpoint metadata key: the endpoint's [`Shape`] (`unary`, `server`, `client`, `bidi`).
pub const SHAPE_KEY: &str = "stream";
/// Endpoint metadata key: the JSON Schema of the request type (typed services of
/// `#[micro::service]` only).
pub const REQUEST_SCHEMA_KEY: &str = "request_schema";
/// Endpoint metadata key: the JSON Schema of the response type (typed services of
/// `#[micro::service]` only).
pub const RESPONSE_SCHEMA_KEY: &str = "response_schema";
/// Service node metadata key: the node's name.
pub const NODE_NAME_KEY: &str = "node";

/// A service definition: name, version, metadata and typed endpoints, plus how it runs.
///
/// ```no_run
/// use micro_runtime::Node;
/// use micro_service::{CallContext, Endpoint, Service, ServiceError};
///
/// # #[tokio::main] async fn main() -> Result<(), ServiceError> {
/// let node = Node::builder().listen("127.0.0.1:0".parse().unwrap()).start().await?;
/// let greeter = Service::new("greeter")
///     .version("1.0.0")
///     .endpoint(Endpoint::unary("Greeter.Hello", |_: CallContext, name: String| async move {
///         Ok::<_, ServiceError>(format!("Hello {name}"))
///     }).idempotent())
///     .start(&node)
///     .await?;
/// // … until Ctrl-C or SIGTERM: deregister, drain, stop.
/// greeter.stop_on_signal().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Service {
    name: Arc<str>,
    version: String,
    metadata: Metadata,
    node_metadata: Metadata,
    endpoints: Vec<Endpoint>,
    subscribers: Vec<SubscriberSpec>,
    wrappers: Vec<Arc<dyn Wrapper>>,
    registry: Option<Registry>,
    broker: Option<Broker>,
    ttl: Duration,
    interval: Duration,
    drain_timeout: Duration,
    max_concurrent: usize,
    auth: Option<micro_auth::Auth>,
}

impl Service {
    /// A service named `name`, with no endpoints yet (besides the built-in `Debug.Health` and
    /// `Debug.Stats`).
    pub fn new(name: &str) -> Self {
        Service {
            name: name.into(),
            version: "latest".to_owned(),
            metadata: Metadata::new(),
            node_metadata: Metadata::new(),
            endpoints: Vec::new(),
            subscribers: Vec::new(),
            wrappers: Vec::new(),
            registry: None,
            broker: None,
            ttl: Duration::from_secs(30),
            interval: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
            max_concurrent: 1024,
            auth: None,
        }
    }

    /// Checks every call against the node's auth rules: one line for a whole service. A call
    /// carries its account's token (`Authorization: Bearer …`, see
    /// [`Credentials`](crate::Credentials)); a missing or bad token is no account; a call no rule
    /// grants is 401 without an account, 403 with one. `Debug.Health` is public by default. The
    /// handler sees the account in [`CallContext::account`]. `auth` must be the node's local
    /// handle ([`Auth::local`](micro_auth::Auth::local)), which verifies in place.
    #[must_use]
    pub fn auth(mut self, auth: micro_auth::Auth) -> Self {
        self.auth = Some(auth);
        self
    }

    /// Its version (default `"latest"`); clients can filter on it.
    #[must_use]
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// A metadata entry of the service version (shared by all its nodes: the last registration
    /// wins); clients can filter on it.
    #[must_use]
    pub fn meta(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// A metadata entry of this node's registration only (a zone, a shard…), unlike
    /// [`meta`](Service::meta), which is shared by every node of the version; clients can filter
    /// on it.
    #[must_use]
    pub fn node_meta(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.node_metadata.insert(key.into(), value.into());
        self
    }

    /// Adds an endpoint.
    #[must_use]
    pub fn endpoint(mut self, endpoint: Endpoint) -> Self {
        self.endpoints.push(endpoint);
        self
    }

    /// Adds every endpoint of a typed handler, e.g. the `InventoryServer` that
    /// `#[micro::service] trait Inventory` generates.
    #[must_use]
    pub fn handle(mut self, handler: impl crate::ServiceHandler) -> Self {
        self.endpoints.extend(handler.endpoints());
        self
    }

    /// Declares a subscriber (like Go Micro's `RegisterSubscriber`): it subscribes on the node's
    /// broker when the service starts, each handler in its own supervised actor, and
    /// unsubscribes when the service stops. A queue group in its options makes the service's
    /// replicas share the topic's messages instead of each getting all of them.
    #[must_use]
    pub fn subscriber(mut self, subscriber: SubscriberSpec) -> Self {
        self.subscribers.push(subscriber);
        self
    }

    /// The broker the subscribers use (default: the node's broker, started if there is none).
    #[must_use]
    pub fn broker(mut self, broker: Broker) -> Self {
        self.broker = Some(broker);
        self
    }

    /// Adds a handler wrapper (middleware); the first added runs outermost.
    #[must_use]
    pub fn wrap(mut self, wrapper: impl Wrapper) -> Self {
        self.wrappers.push(Arc::new(wrapper));
        self
    }

    /// The registry to register in. Without one, the node's actor named `"registry"` is used,
    /// and if there is none the default registry is started under that name: the mDNS registry
    /// on a node that listens (with the `mdns` feature; [`REGISTRY_ENV`]`=memory` turns it off,
    /// [`MDNS_INTERFACES_ENV`]`=loopback` keeps it on this machine, [`MDNS_SERVICE_TYPE_ENV`]
    /// sets its service type), so services and clients of several processes find each other
    /// with no configuration; a [`MemoryRegistry`] of the node otherwise.
    #[must_use]
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// How long the registration lives without a refresh (default 30 s), and how often it is
    /// refreshed (default 10 s).
    #[must_use]
    pub fn register_ttl(mut self, ttl: Duration, interval: Duration) -> Self {
        self.ttl = ttl;
        self.interval = interval.min(ttl);
        self
    }

    /// How long a stop waits for calls in flight before cancelling them (default 10 s).
    #[must_use]
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// The concurrency limit of endpoints that set none (default 1024 calls at once per node).
    #[must_use]
    pub fn max_concurrent(mut self, calls: usize) -> Self {
        self.max_concurrent = calls.max(1);
        self
    }

    /// Starts the service on `node`: spawns its endpoint actors under a supervisor named
    /// `service:<name>`, makes them reachable from other nodes, registers, and keeps the
    /// registration alive.
    pub async fn start(self, node: &Node) -> Result<RunningService, ServiceError> {
        let registry = match self.registry.clone() {
            Some(registry) => registry,
            None => default_registry(node).await?,
        };
        let started = Instant::now();
        let drain = Arc::new(Drain::default());
        let wrappers: Arc<[Arc<dyn Wrapper>]> = self.wrappers.clone().into();
        let mut endpoints = self.endpoints.clone();
        let shared_stats = Arc::new(std::sync::OnceLock::<Arc<StatsSource>>::new());
        endpoints.extend(builtin_endpoints(shared_stats.clone()));

        let mut counters = Vec::new();
        let mut supervisor =
            SupervisorSpec::new(Strategy::OneForOne).named(format!("service:{}", self.name));
        let mut names = Vec::new();
        for endpoint in &endpoints {
            let shared = Arc::new(EndpointShared {
                service: self.name.clone(),
                endpoint: endpoint.name.clone(),
                handler: endpoint.handler.clone(),
                limit: endpoint.max_concurrent.unwrap_or(self.max_concurrent),
                counters: Arc::new(Counters::default()),
                drain: drain.clone(),
                auth: self.auth.clone(),
                wrappers: if endpoint.name.starts_with("Debug.") {
                    Arc::from(Vec::new())
                } else {
                    wrappers.clone()
                },
            });
            counters.push((endpoint.name.clone(), shared.counters.clone()));
            let name = actor_name(&self.name, &endpoint.name);
            supervisor = supervisor
                .child(ChildSpec::new(move || EndpointActor(shared.clone())).named(name.clone()));
            names.push(name);
        }

        let registration = self.registration(node, &endpoints);
        let source = Arc::new(StatsSource {
            service: self.name.to_string(),
            version: self.version.clone(),
            node: node.id().to_string(),
            started,
            counters,
            drain: drain.clone(),
        });
        let _ = shared_stats.set(source.clone());

        let keeper = Keeper::new(
            registry.clone(),
            registration.clone(),
            self.ttl,
            self.interval,
        );
        supervisor = supervisor.child(
            ChildSpec::new(move || keeper.clone())
                .named(format!("service:{}/registration", self.name)),
        );
        let tree = node.spawn_supervisor(supervisor).await?;
        for name in &names {
            node.expose::<EndpointMsg>(name)?;
        }
        let subscriptions = match self.subscribe(node).await {
            Ok(subscriptions) => subscriptions,
            Err(err) => {
                stop_tree(node, &tree, &names).await;
                return Err(err);
            }
        };
        if let Err(err) = registry.register(&registration, Some(self.ttl)).await {
            unsubscribe(subscriptions).await;
            stop_tree(node, &tree, &names).await;
            return Err(err.into());
        }
        tracing::info!(service = %self.name, version = %self.version, node = %node.id(), endpoints = endpoints.len(), "service started");
        Ok(RunningService {
            inner: Arc::new(Running {
                node: node.clone(),
                registry,
                registration,
                tree,
                names,
                drain,
                drain_timeout: self.drain_timeout,
                stats: source,
                subscriptions: tokio::sync::Mutex::new(subscriptions),
                stopped: AtomicBool::new(false),
            }),
        })
    }

    /// Subscribes the declared subscribers; on a failure, undoes the ones made.
    async fn subscribe(&self, node: &Node) -> Result<Vec<Subscription>, ServiceError> {
        if self.subscribers.is_empty() {
            return Ok(Vec::new());
        }
        let broker = match self.broker.clone() {
            Some(broker) => broker,
            None => default_broker(node).await?,
        };
        let mut made = Vec::new();
        for subscriber in &self.subscribers {
            match broker.subscribe_spec(subscriber).await {
                Ok(subscription) => made.push(subscription),
                Err(err) => {
                    unsubscribe(made).await;
                    return Err(err.into());
                }
            }
        }
        Ok(made)
    }

    /// Starts the service, then runs until Ctrl-C or SIGTERM and stops gracefully.
    pub async fn run(self, node: &Node) -> Result<(), ServiceError> {
        self.start(node).await?.stop_on_signal().await
    }

    /// What the registry is told: the service, its endpoints with their type names, this node.
    fn registration(&self, node: &Node, endpoints: &[Endpoint]) -> micro_registry::ServiceRecord {
        let mut service = micro_registry::ServiceRecord::new(&*self.name, self.version.clone());
        service.metadata = self.metadata.clone();
        for endpoint in endpoints {
            let mut entry = micro_registry::EndpointRecord::new(
                &*endpoint.name,
                endpoint.request_type,
                endpoint.response_type,
            );
            entry.metadata.clone_from(&endpoint.metadata);
            entry
                .metadata
                .insert(IDEMPOTENT_KEY.to_owned(), endpoint.idempotent.to_string());
            entry
                .metadata
                .insert(SHAPE_KEY.to_owned(), endpoint.shape.as_str().to_owned());
            service.endpoints.push(entry);
        }
        let address = node.local_addr().map(|a| a.to_string()).unwrap_or_default();
        let mut instance = NodeRecord::new(node_key(node.id()), address);
        instance.metadata = self.node_metadata.clone();
        instance
            .metadata
            .insert(NODE_NAME_KEY.to_owned(), node.name().to_owned());
        service.nodes.push(instance);
        service
    }
}

/// How a node's id is written in a registration (all 128 bits, hex).
pub(crate) fn node_key(id: micro_runtime::NodeId) -> String {
    format!("{:032x}", id.as_u128())
}

/// The node's broker, started if there is none.
async fn default_broker(node: &Node) -> Result<Broker, ServiceError> {
    if let Ok(broker) = Broker::lookup(node).await {
        return Ok(broker);
    }
    match Broker::start(node).await {
        Ok(broker) => Ok(broker),
        // Someone else started it in the meantime.
        Err(BrokerError::Runtime(micro_runtime::Error::NameTaken(_))) => {
            Ok(Broker::lookup(node).await?)
        }
        Err(err) => Err(err.into()),
    }
}

async fn unsubscribe(subscriptions: Vec<Subscription>) {
    for subscription in subscriptions {
        let topic = subscription.topic().to_owned();
        if let Err(err) = subscription.unsubscribe().await {
            tracing::warn!(%topic, error = %err, "unsubscribing failed");
        }
    }
}

/// Environment variable choosing the default registry: `memory` (per node) or `mdns` (the
/// default for a node that listens, with the `mdns` feature).
pub const REGISTRY_ENV: &str = "MICRO_REGISTRY";
/// Environment variable choosing the default mDNS registry's interfaces: `all` (default) or
/// `loopback`.
pub const MDNS_INTERFACES_ENV: &str = "MICRO_MDNS_INTERFACES";
/// Environment variable choosing the default mDNS registry's service type (default
/// `_micro._udp.local.`): nodes see only nodes announcing the same type.
pub const MDNS_SERVICE_TYPE_ENV: &str = "MICRO_MDNS_SERVICE_TYPE";

/// The node's `"registry"` actor, or the default registry started under that name: mDNS on a
/// node that listens (with the `mdns` feature, unless [`REGISTRY_ENV`] says `memory`), a memory
/// registry otherwise, or when mDNS cannot start (a warning says why).
pub(crate) async fn default_registry(node: &Node) -> Result<Registry, ServiceError> {
    if let Ok(addr) = node.lookup::<RegistryMsg>("registry") {
        return Ok(Registry::new(addr));
    }
    let spawned = match default_mdns(node) {
        #[cfg(feature = "mdns")]
        Some(Ok(config)) => {
            let interfaces = std::env::var(MDNS_INTERFACES_ENV).unwrap_or_default();
            match node.spawn(micro_registry::MdnsRegistry::spec(config)).await {
                Ok(addr) => {
                    tracing::info!(
                        interfaces = if interfaces.is_empty() {
                            "all"
                        } else {
                            &interfaces
                        },
                        "started the default mDNS registry (set {REGISTRY_ENV}=memory for a \
                         registry of this node only)"
                    );
                    Ok(addr)
                }
                Err(micro_runtime::Error::NameTaken(name)) => {
                    Err(micro_runtime::Error::NameTaken(name))
                }
                Err(err) => {
                    tracing::warn!(error = %err, "the default mDNS registry did not start: \
                        using a memory registry of this node (other processes will not see it)");
                    node.spawn(MemoryRegistry::spec()).await
                }
            }
        }
        Some(Err(err)) => {
            tracing::warn!(error = %err, "the default mDNS registry's settings are invalid: \
                using a memory registry of this node");
            node.spawn(MemoryRegistry::spec()).await
        }
        None => node.spawn(MemoryRegistry::spec()).await,
    };
    match spawned {
        Ok(addr) => Ok(Registry::new(addr)),
        // Someone else started it in the meantime.
        Err(micro_runtime::Error::NameTaken(_)) => {
            Ok(Registry::new(node.lookup::<RegistryMsg>("registry")?))
        }
        Err(err) => Err(err.into()),
    }
}

/// The settings of the default mDNS registry, when the node should have one: it listens, the
/// `mdns` feature is on and [`REGISTRY_ENV`] does not say `memory`.
#[cfg(feature = "mdns")]
fn default_mdns(node: &Node) -> Option<Result<micro_registry::MdnsConfig, String>> {
    use micro_registry::{Interfaces, MdnsConfig};
    node.local_addr()?;
    let choice = std::env::var(REGISTRY_ENV).unwrap_or_default();
    match choice.trim().to_ascii_lowercase().as_str() {
        "" | "mdns" => {}
        "memory" => return None,
        other => {
            return Some(Err(format!(
                "{REGISTRY_ENV}={other:?}: expected `mdns` or `memory`"
            )));
        }
    }
    let mut config = MdnsConfig::default();
    match std::env::var(MDNS_INTERFACES_ENV)
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
        .as_str()
    {
        "" | "all" => {}
        "loopback" | "lo" => config = config.interfaces(Interfaces::Loopback),
        other => {
            return Some(Err(format!(
                "{MDNS_INTERFACES_ENV}={other:?}: expected `all` or `loopback`"
            )));
        }
    }
    if let Ok(service_type) = std::env::var(MDNS_SERVICE_TYPE_ENV)
        && !service_type.is_empty()
    {
        config = match config.service_type(&service_type) {
            Ok(config) => config,
            Err(err) => return Some(Err(err.to_string())),
        };
    }
    Some(Ok(config))
}

/// Without the `mdns` feature the default registry is always a memory one.
#[cfg(not(feature = "mdns"))]
fn default_mdns(_node: &Node) -> Option<Result<std::convert::Infallible, String>> {
    None
}

fn builtin_endpoints(stats: Arc<std::sync::OnceLock<Arc<StatsSource>>>) -> Vec<Endpoint> {
    let for_health = stats.clone();
    vec![
        Endpoint::unary(HEALTH_ENDPOINT, move |_: CallContext, (): ()| {
            let stats = for_health.get().cloned();
            async move {
                let stats =
                    stats.ok_or_else(|| ServiceError::unavailable(SERVER_ID, "starting"))?;
                Ok(stats.health())
            }
        })
        .idempotent(),
        Endpoint::unary(STATS_ENDPOINT, move |_: CallContext, (): ()| {
            let stats = stats.get().cloned();
            async move {
                let stats =
                    stats.ok_or_else(|| ServiceError::unavailable(SERVER_ID, "starting"))?;
                Ok(stats.snapshot())
            }
        })
        .idempotent(),
    ]
}

/// Reads a running service's counters.
struct StatsSource {
    service: String,
    version: String,
    node: String,
    started: Instant,
    counters: Vec<(Arc<str>, Arc<Counters>)>,
    drain: Arc<Drain>,
}

impl StatsSource {
    fn uptime_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn health(&self) -> Health {
        let status = if self.drain.is_closing() {
            "draining"
        } else {
            "serving"
        };
        Health {
            status: status.to_owned(),
            service: self.service.clone(),
            version: self.version.clone(),
            node: self.node.clone(),
            uptime_ms: self.uptime_ms(),
        }
    }

    fn snapshot(&self) -> ServiceStats {
        let endpoints: Vec<EndpointStats> = self
            .counters
            .iter()
            .map(|(name, counters)| counters.snapshot(name))
            .collect();
        ServiceStats {
            service: self.service.clone(),
            version: self.version.clone(),
            node: self.node.clone(),
            uptime_ms: self.uptime_ms(),
            requests: endpoints.iter().map(|e| e.requests).sum(),
            errors: endpoints.iter().map(|e| e.errors).sum(),
            in_flight: endpoints.iter().map(|e| e.in_flight).sum(),
            rejected: endpoints.iter().map(|e| e.rejected).sum(),
            endpoints,
        }
    }
}

/// A service running on a node. Cloning gives another handle to the same service.
#[derive(Clone)]
pub struct RunningService {
    inner: Arc<Running>,
}

struct Running {
    node: Node,
    registry: Registry,
    registration: micro_registry::ServiceRecord,
    tree: SupervisorRef,
    names: Vec<String>,
    drain: Arc<Drain>,
    drain_timeout: Duration,
    stats: Arc<StatsSource>,
    subscriptions: tokio::sync::Mutex<Vec<Subscription>>,
    stopped: AtomicBool,
}

impl std::fmt::Debug for RunningService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningService")
            .field("service", &self.inner.registration.name)
            .field("node", &self.inner.node.id())
            .finish_non_exhaustive()
    }
}

impl RunningService {
    /// What was registered.
    pub fn registration(&self) -> &micro_registry::ServiceRecord {
        &self.inner.registration
    }

    /// The service's counters now (what `Debug.Stats` answers).
    pub fn stats(&self) -> ServiceStats {
        self.inner.stats.snapshot()
    }

    /// Each declared subscriber's topic and counters (handled, dropped, crashed…), in
    /// declaration order; empty once the service stopped.
    pub async fn subscriber_stats(&self) -> Vec<(String, SubscriptionStats)> {
        self.inner
            .subscriptions
            .lock()
            .await
            .iter()
            .map(|s| (s.topic().to_owned(), s.stats()))
            .collect()
    }

    /// Stops gracefully: refuses new calls (503, which clients retry elsewhere), unsubscribes
    /// its subscribers, deregisters, waits up to the drain timeout for calls in flight, cancels
    /// what is left, and stops the endpoint actors. Calling it again does nothing.
    pub async fn stop(&self) -> Result<(), ServiceError> {
        let running = &self.inner;
        if running.stopped.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let name = &running.registration.name;
        running.drain.close();
        unsubscribe(std::mem::take(&mut *running.subscriptions.lock().await)).await;
        let deregistered = running.registry.deregister(&running.registration).await;
        if let Err(err) = &deregistered {
            tracing::warn!(service = %name, error = %err, "deregistering failed; the registration will expire");
        }
        let drained = running.drain.wait_idle(running.drain_timeout).await;
        if !drained {
            tracing::warn!(service = %name, in_flight = running.drain.in_flight(), "drain timeout: cancelling calls in flight");
            running.drain.abort();
            running.drain.wait_idle(Duration::from_secs(1)).await;
        }
        stop_tree(&running.node, &running.tree, &running.names).await;
        tracing::info!(service = %name, drained, "service stopped");
        Ok(())
    }

    /// Waits for Ctrl-C or SIGTERM, then [`stop`](RunningService::stop)s.
    pub async fn stop_on_signal(&self) -> Result<(), ServiceError> {
        wait_for_signal().await;
        tracing::info!(service = %self.inner.registration.name, "signal received: stopping");
        self.stop().await
    }
}

async fn stop_tree(node: &Node, tree: &SupervisorRef, names: &[String]) {
    for name in names {
        node.unexpose(name);
    }
    if let Ok(root) = node.root() {
        let _ = root.stop_child(tree.id()).await;
    }
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
