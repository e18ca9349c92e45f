//! Networking between nodes: identities and trust (QUIC mutual TLS), the endpoint, and peer links.

mod config;
mod endpoint;
mod link;
mod replies;
pub(crate) mod tls;

pub use config::{PeerEvent, PeerInfo};
pub use tls::{ClusterCa, NodeCredentials};

pub(crate) use config::NetConfig;
pub(crate) use endpoint::{CLOSE_GRACE, CLOSE_SHUTDOWN, Net, accept_loop};
pub(crate) use link::{ReadBudget, STREAM_ITEMS, attach, link_for, read_body, shrink};

#[cfg(test)]
mod tests;
