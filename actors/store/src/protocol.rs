//! The store's typed protocol: what every store backend answers, on one node or across nodes.

use micro_runtime::{RemoteMessage, Reply, StreamSender};
use serde::{Deserialize, Serialize};

use crate::engine::Direct;
use crate::{Query, Record, Scope, StoreError, StoreEvent, WriteOptions};

/// The name of a node's store actor (exposed to other nodes).
pub const STORE_NAME: &str = "store";

/// What a store actor takes (`micro.store.v1`). Callers use the [`Store`](crate::Store) handle.
/// Variants travel by index: new ones go last.
#[derive(Debug, Serialize, Deserialize)]
pub enum StoreMsg {
    /// The record at `key`, unless absent or expired.
    Read {
        /// Database and table.
        scope: Scope,
        /// The key.
        key: String,
        /// The record, or `None`.
        reply: Reply<Result<Option<Record>, StoreError>>,
    },
    /// The records a query selects (prefix, suffix, offset, limit, order).
    Scan {
        /// Database and table.
        scope: Scope,
        /// Which records.
        query: Query,
        /// The records.
        reply: Reply<Result<Vec<Record>, StoreError>>,
    },
    /// The keys a query selects.
    List {
        /// Database and table.
        scope: Scope,
        /// Which keys.
        query: Query,
        /// The keys.
        reply: Reply<Result<Vec<String>, StoreError>>,
    },
    /// Writes a record (creating its table if needed); answers the record's new version.
    Write {
        /// Database and table.
        scope: Scope,
        /// The record (its `version` is ignored).
        record: Record,
        /// TTL and compare-and-set.
        options: WriteOptions,
        /// The new version.
        reply: Reply<Result<u64, StoreError>>,
    },
    /// Deletes a record, if its version is `if_version` when given; answers whether it existed.
    Delete {
        /// Database and table.
        scope: Scope,
        /// The key.
        key: String,
        /// Compare-and-set: delete only if the stored version is this one.
        if_version: Option<u64>,
        /// Whether a record was deleted.
        reply: Reply<Result<bool, StoreError>>,
    },
    /// Streams the changes of a table whose key starts with `prefix`: first those kept since
    /// `from_revision` (when given), then live ones, in revision order with no gaps. The stream
    /// is cancelled (an error) when the watcher falls too far behind or the store stops; resume
    /// from the last revision seen plus one.
    Watch {
        /// Database and table.
        scope: Scope,
        /// Keys starting with this (empty: all).
        prefix: String,
        /// Replay changes from this revision on (inclusive).
        from_revision: Option<u64>,
        /// Where the events go.
        events: StreamSender<StoreEvent>,
    },
    /// The database's current revision (0 before its first change).
    Revision {
        /// The database (the table is ignored).
        scope: Scope,
        /// The revision.
        reply: Reply<Result<u64, StoreError>>,
    },
    /// The store actor's messages to itself and from a local handle. Never travels: it has no
    /// wire form.
    #[serde(skip)]
    #[doc(hidden)]
    Local(StoreCommand),
}

impl RemoteMessage for StoreMsg {
    const TYPE_NAME: &'static str = "micro.store.v1";
}

/// A store actor's command from its own node (timers, a local handle): opaque outside the crate.
pub struct StoreCommand(pub(crate) Command);

impl std::fmt::Debug for StoreCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("StoreCommand").field(&self.0).finish()
    }
}

/// What a [`StoreCommand`] asks.
#[derive(Debug)]
pub(crate) enum Command {
    /// Time to remove expired records.
    Sweep,
    /// The engine, for a local handle that reads it directly.
    Engine(Reply<Direct>),
}

/// A command wrapped as the store actor's message.
pub(crate) fn command(command: Command) -> StoreMsg {
    StoreMsg::Local(StoreCommand(command))
}

#[cfg(test)]
mod tests {
    use micro_runtime::ContentType;

    use super::*;

    #[test]
    fn a_local_command_never_travels() {
        assert!(
            ContentType::Bincode
                .encode(&command(Command::Sweep))
                .is_err()
        );
    }
}
