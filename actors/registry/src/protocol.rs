//! The registry's typed protocol and the handle callers use.

use std::time::Duration;

use micro_runtime::{Addr, RemoteMessage, Reply, StreamReceiver, StreamSender, stream_channel};
use serde::{Deserialize, Serialize};

use crate::{Event, RegistryError, ServiceRecord};

/// What a registry actor takes. Every backend speaks it; callers use [`Registry`].
#[derive(Debug, Serialize, Deserialize)]
pub enum RegistryMsg {
    /// Adds or refreshes the service's nodes; with a TTL they expire unless registered again.
    Register {
        /// The service version and the nodes to register.
        service: ServiceRecord,
        /// How long the registration lives without a refresh, in milliseconds.
        ttl_ms: Option<u64>,
        /// The outcome.
        reply: Reply<Result<(), RegistryError>>,
    },
    /// Removes the service's listed nodes (the version goes when its last node does).
    Deregister {
        /// The service version and the nodes to remove.
        service: ServiceRecord,
        /// The outcome.
        reply: Reply<Result<(), RegistryError>>,
    },
    /// All versions of a service, with their nodes.
    Get {
        /// The service's name.
        name: String,
        /// The versions, or `NotFound`.
        reply: Reply<Result<Vec<ServiceRecord>, RegistryError>>,
    },
    /// Every service version.
    List {
        /// The versions.
        reply: Reply<Vec<ServiceRecord>>,
    },
    /// Streams changes (of one service, or all) from now on, in order.
    Watch {
        /// Only this service, or all.
        service: Option<String>,
        /// Where the events go.
        events: StreamSender<Event>,
    },
    /// The registrations made on this registry's own node (what it announces to others), as
    /// opposed to what it learned from other nodes.
    Local {
        /// The versions registered here, with the nodes registered here.
        reply: Reply<Vec<ServiceRecord>>,
    },
    /// Counters for diagnostics.
    Stats {
        /// The counters.
        reply: Reply<RegistryStats>,
    },
    /// Another node's registry says its own registrations changed (revision `rev`): fetch them
    /// again. Faster than waiting for the change to show in mDNS, which rate-limits
    /// re-announcements to one a second. A hint, like an announcement: the receiver records
    /// only the revision the node itself reports when asked ([`LocalAt`](RegistryMsg::LocalAt)).
    Changed {
        /// The node that changed (its id as a number).
        node: u128,
        /// Where it listens.
        addr: std::net::SocketAddr,
        /// Its new revision.
        rev: u64,
    },
    /// Like [`Local`](RegistryMsg::Local), with the revision those registrations are at: what
    /// an mDNS registry asks of another node, whose own word (over the authenticated runtime)
    /// is the only revision it records. Added after the first release: a registry that predates
    /// it refuses it as undecodable (`Codec`), and the asker falls back to `Local`.
    ///
    /// It sits before `Internal` on purpose: serde numbers variants on the wire without the
    /// skipped one, so this is wire variant 8 either way, and `Internal` stays without one.
    LocalAt {
        /// The revision and the registrations made here.
        reply: Reply<LocalState>,
    },
    /// A backend's message to itself (discoveries, timers). Never travels: it has no wire form.
    #[serde(skip)]
    #[doc(hidden)]
    Internal(crate::internal::Internal),
}

impl RemoteMessage for RegistryMsg {
    const TYPE_NAME: &'static str = "micro.registry.v1";
}

/// A registry's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryStats {
    /// Other nodes whose services this registry holds.
    pub peers: u64,
    /// Announcements that could not be read (a foreign or broken responder), ignored.
    pub malformed: u64,
    /// Fetches of another node's services that failed (it did not answer, or answered wrong).
    pub failed_fetches: u64,
}

/// A registry's own registrations and the revision they are at (the answer to
/// [`RegistryMsg::LocalAt`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalState {
    /// Bumped at every local change; 0 from a backend that keeps no revisions (memory).
    pub rev: u64,
    /// The versions registered here, with the nodes registered here.
    pub services: Vec<ServiceRecord>,
}

/// The default time to wait for a registry's answer.
const ASK: Duration = Duration::from_secs(5);

/// Events a watcher may have in flight before it is held back.
const WATCH_BUFFER: usize = 256;

/// A handle to a registry actor (local or remote), with async methods.
///
/// ```
/// use micro_registry::{MemoryRegistry, Registry, ServiceRecord, NodeRecord};
/// use micro_runtime::Node;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let node = Node::builder().start().await?;
/// let registry = Registry::new(node.spawn(MemoryRegistry::spec()).await?);
///
/// let greeter = ServiceRecord::new("greeter", "1.0.0").node(NodeRecord::new("greeter-1", "10.0.0.1:4000"));
/// registry.register(&greeter, None).await?;
/// assert_eq!(registry.get_service("greeter").await?, vec![greeter]);
/// node.shutdown().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Registry {
    addr: Addr<RegistryMsg>,
    timeout: Duration,
}

impl Registry {
    /// A handle for the registry actor at `addr`.
    pub fn new(addr: Addr<RegistryMsg>) -> Self {
        Registry { addr, timeout: ASK }
    }

    /// The same handle with another timeout for each request.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The registry actor's address.
    pub fn addr(&self) -> &Addr<RegistryMsg> {
        &self.addr
    }

    /// Registers (or refreshes) the service's nodes, expiring after `ttl` unless refreshed.
    pub async fn register(
        &self,
        service: &ServiceRecord,
        ttl: Option<Duration>,
    ) -> Result<(), RegistryError> {
        let ttl_ms = ttl.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
        let service = service.clone();
        self.addr
            .ask(
                |reply| RegistryMsg::Register {
                    service,
                    ttl_ms,
                    reply,
                },
                self.timeout,
            )
            .await?
    }

    /// Deregisters the service's nodes.
    pub async fn deregister(&self, service: &ServiceRecord) -> Result<(), RegistryError> {
        let service = service.clone();
        self.addr
            .ask(
                |reply| RegistryMsg::Deregister { service, reply },
                self.timeout,
            )
            .await?
    }

    /// All versions of the service `name`, with their nodes; `NotFound` if none.
    pub async fn get_service(&self, name: &str) -> Result<Vec<ServiceRecord>, RegistryError> {
        let name = name.to_owned();
        self.addr
            .ask(|reply| RegistryMsg::Get { name, reply }, self.timeout)
            .await?
    }

    /// Every registered service version.
    pub async fn list_services(&self) -> Result<Vec<ServiceRecord>, RegistryError> {
        Ok(self
            .addr
            .ask(|reply| RegistryMsg::List { reply }, self.timeout)
            .await?)
    }

    /// The registry's counters.
    pub async fn stats(&self) -> Result<RegistryStats, RegistryError> {
        Ok(self
            .addr
            .ask(|reply| RegistryMsg::Stats { reply }, self.timeout)
            .await?)
    }

    /// Changes to `service` (or to every service) from now on, in order. The stream ends if the
    /// registry goes away; a watcher that falls far behind is dropped (its stream ends too).
    pub fn watch(&self, service: Option<&str>) -> Result<StreamReceiver<Event>, RegistryError> {
        let (events, receiver) = stream_channel(WATCH_BUFFER);
        self.addr.send(RegistryMsg::Watch {
            service: service.map(str::to_owned),
            events,
        })?;
        Ok(receiver)
    }
}
