//! What a registry backend tells itself: timer ticks and (for mDNS) discoveries. Carried in
//! [`RegistryMsg::Backend`], which has no wire form, so none of it can come from the network.

use micro_runtime::NodeId;

use crate::RegistryMsg;
#[cfg(feature = "mdns")]
use crate::mdns::Fetched;

/// A backend's message to itself (opaque outside the crate).
#[derive(Debug)]
pub struct BackendMsg(pub(crate) Kind);

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
        addr: std::net::SocketAddr,
        rev: u64,
    },
    /// A goodbye for a node was seen on mDNS (a hint: anyone can send one).
    Removed { id: NodeId },
    /// An announcement could not be read.
    Malformed,
    /// The runtime lost the link to a node.
    Lost { id: NodeId },
    /// A fetch of a node's services ended (`token` tells which fetch).
    #[cfg(feature = "mdns")]
    Fetched {
        id: NodeId,
        token: u64,
        fetched: Result<Fetched, crate::RegistryError>,
    },
}

/// The message a backend ticks itself with to drop expired registrations.
pub(crate) fn sweep() -> RegistryMsg {
    RegistryMsg::Backend(BackendMsg(Kind::Sweep))
}
