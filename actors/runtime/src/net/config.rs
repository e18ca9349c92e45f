//! How a node takes part in the network, and what it tells about its peers.

use std::net::SocketAddr;
use std::time::Duration;

use super::tls::NodeCredentials;
use crate::{Backoff, NodeId};

/// Network settings of a node, set through [`NodeBuilder`](crate::NodeBuilder).
#[derive(Clone)]
pub(crate) struct NetConfig {
    pub(crate) listen: SocketAddr,
    pub(crate) credentials: Option<NodeCredentials>,
    /// Largest frame sent or accepted.
    pub(crate) max_frame: usize,
    pub(crate) keep_alive: Duration,
    /// A peer silent this long is lost.
    pub(crate) idle_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) redial: Backoff,
    /// Redials after a loss before the link gives up (a later send dials again).
    pub(crate) redial_attempts: u32,
    /// Bytes queued towards one peer before sends to it fail with `Unavailable`.
    pub(crate) outbound_limit: usize,
    /// Messages an exposed or exported actor may have queued before messages from other nodes
    /// are refused as `Unavailable` (unless its child spec set a mailbox bound).
    pub(crate) inbound_capacity: usize,
}

impl NetConfig {
    pub(crate) fn new(listen: SocketAddr) -> Self {
        NetConfig {
            listen,
            credentials: None,
            max_frame: 16 * 1024 * 1024,
            keep_alive: Duration::from_millis(250),
            idle_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(5),
            redial: Backoff::exponential(Duration::from_millis(50), Duration::from_secs(2)),
            redial_attempts: 10,
            outbound_limit: 64 * 1024 * 1024,
            inbound_capacity: 65_536,
        }
    }
}

/// A change in who this node is linked with.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerEvent {
    /// A link to a peer came up (first contact, a reconnect, or a new incarnation of it).
    Up {
        /// The peer's node id (bound to its certificate).
        node: NodeId,
        /// Its incarnation: new at every start of the peer.
        incarnation: u64,
        /// Its name.
        name: String,
        /// Where it listens.
        addr: SocketAddr,
    },
    /// The link to a peer was lost: closed, or silent past the idle timeout.
    Down {
        /// The peer.
        node: NodeId,
        /// What ended the link.
        reason: String,
    },
}

/// What this node knows of another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Its node id.
    pub node: NodeId,
    /// Its name, once linked.
    pub name: String,
    /// Its incarnation, once linked.
    pub incarnation: u64,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Whether a link to it is up now.
    pub connected: bool,
}
