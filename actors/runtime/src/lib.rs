//! The actor runtime under micro: [`Node`]s, supervised [`Actor`]s with OTP-style restart
//! strategies, typed location-transparent [`Addr`]esses and [`Reply`] ports that can travel
//! between nodes.
//!
//! Start a [`Node`], spawn actors from [`ChildSpec`]s (or whole trees from [`SupervisorSpec`]s),
//! and talk to them through [`Addr::send`] and [`Addr::ask`]. See the crate `micro` for the
//! services built on top.

mod actor;
mod addr;
mod directory;
mod error;
mod id;
mod mailbox;
mod metadata;
mod net;
mod node;
mod reply;
mod stream;
mod supervisor;
mod task;
mod watch;
mod wire;

/// The concurrent maps on the runtime's paths: keyed by ids it makes and names its users
/// give, looked up several times per message, so hashed with FxHash rather than SipHash.
type FastMap<K, V> = dashmap::DashMap<K, V, rustc_hash::FxBuildHasher>;

pub use actor::{Actor, ActorError, Context, ExitReason};
pub use addr::Addr;
pub use error::{Error, Result};
pub use id::{ActorId, NodeId};
pub use metadata::Metadata;
pub use net::{ClusterCa, NodeCredentials, PeerEvent, PeerInfo};
pub use node::{Node, NodeBuilder, NodeStatus};
pub use reply::Reply;
pub use stream::{StreamReceiver, StreamSender, stream_channel};
pub use supervisor::{
    Backoff, Child, ChildInfo, ChildSpec, Intensity, Restart, Strategy, SupervisionEvent,
    SupervisorRef, SupervisorSpec,
};
pub use task::AbortOnDrop;
pub use watch::Watch;
pub use wire::{CallData, Codec, ContentType, CustomCodec, Down, RemoteMessage, register_codec};
