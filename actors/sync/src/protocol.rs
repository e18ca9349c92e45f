//! The sync primitive's typed protocol (`micro.sync.v1`): what every backend answers.

use micro_runtime::{RemoteMessage, Reply, StreamSender};
use serde::{Deserialize, Serialize};

use crate::SyncError;

/// The well-known name of a node's sync actor (exposed to other nodes).
pub const SYNC_NAME: &str = "sync";

/// A lease on a name, as granted: who holds it, with which fencing token, for how long.
///
/// Locks and elections are both leases on names; the [`Sync`](crate::Sync) handle keeps them
/// apart by prefixing the name (`lock/…`, `election/…`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The lease's name (with the handle's prefix).
    pub name: String,
    /// Who holds it (the holder or candidate string the caller gave).
    pub holder: String,
    /// The fencing token: strictly increasing per name across grants. For an election it is the
    /// term.
    pub token: u64,
    /// The lease's time to live, in milliseconds: it expires unless renewed within it.
    pub ttl_ms: u64,
    /// How long the request waited at the backend before the grant, in milliseconds (rounded
    /// down): the caller adds it to the time it sent the request for a safe lower bound of the
    /// grant's time.
    pub waited_ms: u64,
}

/// What a sync actor takes: one variant per operation, every backend answers all of them.
/// Callers use the [`Sync`](crate::Sync) handle.
///
/// On the wire (`micro.sync.v1`) variants travel by index: new ones go last, before
/// [`Local`](SyncMsg::Local), which never travels.
#[derive(Debug, Serialize, Deserialize)]
pub enum SyncMsg {
    /// Acquires the lease on `name` for `holder`, waiting up to `wait_ms` while another holds
    /// it (0: try once). Waiters are served in arrival order.
    Acquire {
        /// The lease's name.
        name: String,
        /// Who asks.
        holder: String,
        /// The lease's time to live, in milliseconds.
        ttl_ms: u64,
        /// How long to wait for it, in milliseconds.
        wait_ms: u64,
        /// The grant, or `Timeout`.
        reply: Reply<Result<Lease, SyncError>>,
    },
    /// Extends the lease with `token` by `ttl_ms` from now; `NotHeld` if it is gone.
    Renew {
        /// The lease's name.
        name: String,
        /// The fencing token of the grant.
        token: u64,
        /// The new time to live, in milliseconds.
        ttl_ms: u64,
        /// The outcome.
        reply: Reply<Result<(), SyncError>>,
    },
    /// Gives the lease with `token` up (the next waiter gets it at once); `NotHeld` if it is
    /// gone.
    Release {
        /// The lease's name.
        name: String,
        /// The fencing token of the grant.
        token: u64,
        /// The outcome.
        reply: Reply<Result<(), SyncError>>,
    },
    /// Who holds `name` now, if anyone.
    Holder {
        /// The lease's name.
        name: String,
        /// The current lease.
        reply: Reply<Result<Option<Lease>, SyncError>>,
    },
    /// Streams who holds `name`: the current state first, then every change, in order.
    Observe {
        /// The lease's name.
        name: String,
        /// Where the states go.
        events: StreamSender<Option<Lease>>,
    },
    /// A backend's message to itself (timers). Never travels: it has no wire form.
    #[serde(skip)]
    #[doc(hidden)]
    Local(SyncCommand),
}

impl RemoteMessage for SyncMsg {
    const TYPE_NAME: &'static str = "micro.sync.v1";
}

/// A backend's message to itself (opaque outside the crate).
#[derive(Debug)]
pub struct SyncCommand(pub(crate) Command);

#[derive(Debug)]
pub(crate) enum Command {
    /// Time to expire leases and waiters.
    Tick,
}

pub(crate) fn tick() -> SyncMsg {
    SyncMsg::Local(SyncCommand(Command::Tick))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use micro_runtime::ContentType;

    use super::*;

    #[test]
    fn a_backends_own_message_never_travels() {
        assert!(ContentType::Bincode.encode(&tick()).is_err());
    }
}
