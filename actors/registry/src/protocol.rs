//! The registry's typed protocol and the handle callers use.

use std::time::Duration;

use micro_runtime::{Addr, RemoteMessage, Reply, StreamReceiver, StreamSender, stream_channel};
use serde::{Deserialize, Serialize};

use crate::{Event, RegistryError, ServiceRecord};

/// What a registry actor takes: the user protocol, which every backend speaks. Callers use
/// [`Registry`].
///
/// A backend answers the six requests and nothing else; [`Peer`](RegistryMsg::Peer) carries the
/// mDNS backend's own protocol between mDNS registries (other backends drop it), and
/// [`Backend`](RegistryMsg::Backend) a backend's messages to itself, which never travel.
///
/// On the wire (`micro.registry.v1`) the variants keep the indices they always had: `Register`
/// 0, `Deregister` 1, `Get` 2, `List` 3, `Watch` 4, `Stats` 6; the peer messages travel at
/// theirs (see [`PeerMsg`]), so registries of before and after the split understand each other.
#[derive(Debug)]
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
    /// Counters for diagnostics.
    Stats {
        /// The counters.
        reply: Reply<RegistryStats>,
    },
    /// A message of the mDNS backend's protocol between registries. Backends without peers
    /// drop it (an ask among them gets `ReplyDropped`).
    Peer(PeerMsg),
    /// A backend's message to itself (discoveries, timers). Never travels: it has no wire form.
    #[doc(hidden)]
    Backend(crate::backend::BackendMsg),
}

/// What mDNS registries say to one another (carried in [`RegistryMsg::Peer`]): a node's own
/// registrations, fetched by the others, and the hint that they changed.
///
/// Wire indices inside `micro.registry.v1` (where they always were): `Registrations` 5
/// (`Local` before), `Changed` 7, `Snapshot` 8 (`LocalAt` before), `Stats` 9 (new).
#[derive(Debug)]
pub enum PeerMsg {
    /// The registrations made on this registry's own node (what it announces to others), as
    /// opposed to what it learned from other nodes. What registries from before
    /// [`Snapshot`](PeerMsg::Snapshot) are asked.
    Registrations {
        /// The versions registered here, with the nodes registered here.
        reply: Reply<Vec<ServiceRecord>>,
    },
    /// Another node's registry says its own registrations changed (revision `rev`): fetch them
    /// again. Faster than waiting for the change to show in mDNS, which rate-limits
    /// re-announcements to one a second. A hint, like an announcement: the receiver records
    /// only the revision the node itself reports when asked ([`Snapshot`](PeerMsg::Snapshot)).
    Changed {
        /// The node that changed (its id as a number).
        node: u128,
        /// Where it listens.
        addr: std::net::SocketAddr,
        /// Its new revision.
        rev: u64,
    },
    /// Like [`Registrations`](PeerMsg::Registrations), with the revision those registrations
    /// are at: what an mDNS registry asks of another node, whose own word (over the
    /// authenticated runtime) is the only revision it records. A registry that predates it
    /// refuses it as undecodable (`Codec`), and the asker falls back to `Registrations`.
    Snapshot {
        /// The revision and the registrations made here.
        reply: Reply<LocalState>,
    },
    /// The mDNS backend's counters (a registry that predates it refuses it as undecodable).
    Stats {
        /// The counters.
        reply: Reply<MdnsStats>,
    },
}

impl From<PeerMsg> for RegistryMsg {
    fn from(msg: PeerMsg) -> Self {
        RegistryMsg::Peer(msg)
    }
}

/// `RegistryMsg` as it travels, borrowed: the variants in their wire order.
#[derive(Serialize)]
#[serde(rename = "RegistryMsg")]
enum WireRef<'a> {
    Register {
        service: &'a ServiceRecord,
        ttl_ms: &'a Option<u64>,
        reply: &'a Reply<Result<(), RegistryError>>,
    },
    Deregister {
        service: &'a ServiceRecord,
        reply: &'a Reply<Result<(), RegistryError>>,
    },
    Get {
        name: &'a String,
        reply: &'a Reply<Result<Vec<ServiceRecord>, RegistryError>>,
    },
    List {
        reply: &'a Reply<Vec<ServiceRecord>>,
    },
    Watch {
        service: &'a Option<String>,
        events: &'a StreamSender<Event>,
    },
    Local {
        reply: &'a Reply<Vec<ServiceRecord>>,
    },
    Stats {
        reply: &'a Reply<RegistryStats>,
    },
    Changed {
        node: &'a u128,
        addr: &'a std::net::SocketAddr,
        rev: &'a u64,
    },
    LocalAt {
        reply: &'a Reply<LocalState>,
    },
    MdnsStats {
        reply: &'a Reply<MdnsStats>,
    },
}

/// `RegistryMsg` as it travels, owned (the same variants as [`WireRef`]).
#[derive(Deserialize)]
#[serde(rename = "RegistryMsg")]
enum Wire {
    Register {
        service: ServiceRecord,
        ttl_ms: Option<u64>,
        reply: Reply<Result<(), RegistryError>>,
    },
    Deregister {
        service: ServiceRecord,
        reply: Reply<Result<(), RegistryError>>,
    },
    Get {
        name: String,
        reply: Reply<Result<Vec<ServiceRecord>, RegistryError>>,
    },
    List {
        reply: Reply<Vec<ServiceRecord>>,
    },
    Watch {
        service: Option<String>,
        events: StreamSender<Event>,
    },
    Local {
        reply: Reply<Vec<ServiceRecord>>,
    },
    Stats {
        reply: Reply<RegistryStats>,
    },
    Changed {
        node: u128,
        addr: std::net::SocketAddr,
        rev: u64,
    },
    LocalAt {
        reply: Reply<LocalState>,
    },
    MdnsStats {
        reply: Reply<MdnsStats>,
    },
}

impl Serialize for RegistryMsg {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let wire = match self {
            RegistryMsg::Register {
                service,
                ttl_ms,
                reply,
            } => WireRef::Register {
                service,
                ttl_ms,
                reply,
            },
            RegistryMsg::Deregister { service, reply } => WireRef::Deregister { service, reply },
            RegistryMsg::Get { name, reply } => WireRef::Get { name, reply },
            RegistryMsg::List { reply } => WireRef::List { reply },
            RegistryMsg::Watch { service, events } => WireRef::Watch { service, events },
            RegistryMsg::Stats { reply } => WireRef::Stats { reply },
            RegistryMsg::Peer(PeerMsg::Registrations { reply }) => WireRef::Local { reply },
            RegistryMsg::Peer(PeerMsg::Changed { node, addr, rev }) => {
                WireRef::Changed { node, addr, rev }
            }
            RegistryMsg::Peer(PeerMsg::Snapshot { reply }) => WireRef::LocalAt { reply },
            RegistryMsg::Peer(PeerMsg::Stats { reply }) => WireRef::MdnsStats { reply },
            RegistryMsg::Backend(_) => {
                return Err(serde::ser::Error::custom(
                    "a registry backend's own message never travels",
                ));
            }
        };
        wire.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for RegistryMsg {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match Wire::deserialize(deserializer)? {
            Wire::Register {
                service,
                ttl_ms,
                reply,
            } => RegistryMsg::Register {
                service,
                ttl_ms,
                reply,
            },
            Wire::Deregister { service, reply } => RegistryMsg::Deregister { service, reply },
            Wire::Get { name, reply } => RegistryMsg::Get { name, reply },
            Wire::List { reply } => RegistryMsg::List { reply },
            Wire::Watch { service, events } => RegistryMsg::Watch { service, events },
            Wire::Stats { reply } => RegistryMsg::Stats { reply },
            Wire::Local { reply } => PeerMsg::Registrations { reply }.into(),
            Wire::Changed { node, addr, rev } => PeerMsg::Changed { node, addr, rev }.into(),
            Wire::LocalAt { reply } => PeerMsg::Snapshot { reply }.into(),
            Wire::MdnsStats { reply } => PeerMsg::Stats { reply }.into(),
        })
    }
}

impl RemoteMessage for RegistryMsg {
    const TYPE_NAME: &'static str = "micro.registry.v1";
}

/// A registry's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryStats {
    /// Other nodes whose services this registry holds (0 for a backend that replicates
    /// nothing).
    pub peers: u64,
    /// The mDNS backend's [`MdnsStats::malformed`], still filled for callers of before the
    /// split (0 from other backends).
    #[deprecated(note = "mDNS's own counter: read `Registry::mdns_stats`")]
    pub malformed: u64,
    /// The mDNS backend's [`MdnsStats::failed_fetches`], still filled for callers of before
    /// the split (0 from other backends).
    #[deprecated(note = "mDNS's own counter: read `Registry::mdns_stats`")]
    pub failed_fetches: u64,
}

/// The mDNS backend's counters (the answer to [`PeerMsg::Stats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MdnsStats {
    /// Other nodes whose services this registry holds.
    pub peers: u64,
    /// Announcements that could not be read (a foreign or broken responder), ignored.
    pub malformed: u64,
    /// Fetches of another node's services that failed (it did not answer, or answered wrong).
    pub failed_fetches: u64,
}

/// A registry's own registrations and the revision they are at (the answer to
/// [`PeerMsg::Snapshot`]).
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

    /// The mDNS backend's counters ([`PeerMsg::Stats`]); another backend drops the ask
    /// (`ReplyDropped`).
    pub async fn mdns_stats(&self) -> Result<MdnsStats, RegistryError> {
        Ok(self
            .addr
            .ask(|reply| PeerMsg::Stats { reply }.into(), self.timeout)
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

#[cfg(test)]
mod tests {
    use micro_runtime::ContentType;

    use super::*;

    #[test]
    fn peer_messages_travel_where_they_always_did() {
        // `Changed` was wire variant 7 of `micro.registry.v1` before the split, and still is.
        let changed: RegistryMsg = PeerMsg::Changed {
            node: 5,
            addr: "127.0.0.1:4000".parse().unwrap(),
            rev: 9,
        }
        .into();
        let bytes = ContentType::Bincode.encode(&changed).unwrap();
        assert_eq!(bytes[0], 7);
        let back: RegistryMsg = ContentType::Bincode.decode(&bytes).unwrap();
        assert!(matches!(
            back,
            RegistryMsg::Peer(PeerMsg::Changed {
                node: 5,
                rev: 9,
                ..
            })
        ));
        let json = ContentType::Json.encode(&changed).unwrap();
        assert!(
            String::from_utf8(json)
                .unwrap()
                .starts_with(r#"{"Changed":"#)
        );
    }

    #[test]
    fn a_backends_own_message_never_travels() {
        let sweep = crate::backend::sweep();
        assert!(ContentType::Bincode.encode(&sweep).is_err());
    }
}
