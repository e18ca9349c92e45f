//! What a registry backend tells itself: timer ticks and (for mDNS) discoveries. Carried in
//! [`RegistryMsg::Internal`], which has no wire form, so none of it can come from the network.

use std::net::SocketAddr;

use micro_runtime::{Addr, NodeId};

use crate::{RegistryError, RegistryMsg, ServiceRecord};

/// A backend's message to itself (opaque outside the crate).
#[derive(Debug)]
pub struct Internal(pub(crate) Kind);

#[derive(Debug)]
// Without the `mdns` feature only the memory backend's `Sweep` is made.
#[cfg_attr(not(feature = "mdns"), allow(dead_code))]
pub(crate) enum Kind {
    /// Time to drop expired registrations.
    Sweep,
    /// mDNS resolved a node's announcement (or the node told us directly): a hint, `rev` is
    /// what the announcer claims.
    Resolved {
        id: NodeId,
        addr: SocketAddr,
        rev: u64,
    },
    /// A goodbye for a node was seen on mDNS (a hint: anyone can send one).
    Removed { id: NodeId },
    /// An announcement could not be read.
    Malformed,
    /// The runtime lost the link to a node.
    Lost { id: NodeId },
    /// A fetch of a node's services ended (`token` tells which fetch).
    Fetched {
        id: NodeId,
        token: u64,
        fetched: Result<Fetched, RegistryError>,
    },
}

/// What a node's registry said of itself: its revision (`None` from a registry that predates
/// [`RegistryMsg::LocalAt`]) and its registrations; its registry's address, and where the node
/// listens (as its link knows it).
#[derive(Debug)]
#[cfg_attr(not(feature = "mdns"), allow(dead_code))]
pub(crate) struct Fetched {
    pub(crate) rev: Option<u64>,
    pub(crate) services: Vec<ServiceRecord>,
    pub(crate) registry: Addr<RegistryMsg>,
    pub(crate) addr: SocketAddr,
}

/// The message a backend ticks itself with to drop expired registrations.
pub(crate) fn sweep() -> RegistryMsg {
    RegistryMsg::Internal(Internal(Kind::Sweep))
}
