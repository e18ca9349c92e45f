//! Service discovery for micro: the registry as a supervised actor.
//!
//! The protocol ([`RegistryMsg`]) follows Go Micro's data model — services with versions,
//! metadata, endpoints and nodes — and every backend is an actor that speaks it: register with a
//! TTL, deregister, get a service, list, and watch changes. Callers use the [`Registry`] handle;
//! [`RegistryCache`] keeps a watch-fed copy so resolving a name does not wait on the network.
//!
//! The mDNS backend's own messages between registries are [`PeerMsg`]s, carried by
//! [`RegistryMsg::Peer`]; other backends drop them. Each backend's logic is a state machine
//! free of I/O with time passed in (the memory store and its watchers, the mDNS backend's local
//! registrations and view of the other nodes), unit-tested without nodes; the actors are glue.
//!
//! Backends: [`MemoryRegistry`] (one node, or several nodes of one process sharing it) and
//! [`MdnsRegistry`] (nodes find each other on the local network and fetch each other's services
//! over the runtime; behind the `mdns` feature, on by default).

mod backend;
mod cache;
mod error;
#[cfg(feature = "mdns")]
mod mdns;
mod memory;
mod model;
mod protocol;

pub use cache::RegistryCache;
pub use error::RegistryError;
#[cfg(feature = "mdns")]
pub use mdns::{Interfaces, MdnsConfig, MdnsRegistry};
pub use memory::MemoryRegistry;
#[allow(deprecated)]
pub use model::{Endpoint, Service, ServiceNode};
pub use model::{EndpointRecord, Event, EventKind, Metadata, NodeRecord, ServiceRecord};
pub use protocol::{LocalState, MdnsStats, PeerMsg, Registry, RegistryMsg, RegistryStats};
