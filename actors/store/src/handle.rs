//! The [`Store`] handle: async methods over a store actor, local or remote alike.

use std::time::Duration;

use micro_runtime::{Addr, ContentType, Node, NodeId, StreamReceiver, stream_channel};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::engine::Direct;
use crate::protocol::{Command, command};
use crate::{Query, Record, STORE_NAME, Scope, StoreError, StoreEvent, StoreMsg, WriteOptions};

/// The default time to wait for a store's answer.
const ASK: Duration = Duration::from_secs(5);

/// Events a watcher may have in flight before the sender waits.
const WATCH_BUFFER: usize = 256;

/// The metadata key under which the typed helpers keep a value's content type.
pub const CONTENT_TYPE: &str = "content-type";

/// A handle to a store (local or on another node), scoped to a database and a table.
///
/// Cheap to clone; [`database`](Store::database) and [`table`](Store::table) give handles on
/// other scopes of the same store. A handle from [`Store::local`] (or a backend's `start`)
/// reads the engine directly, without queueing behind writes; writes and watches always go
/// through the store actor, which orders them.
///
/// ```
/// use micro_store::{MemoryStore, Record, StoreConfig, StoreError};
/// use micro_runtime::Node;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let node = Node::builder().start().await?;
/// let store = MemoryStore::start(&node, StoreConfig::default()).await?;
///
/// // Compare-and-set: create only if absent (version 0), then update from what was read.
/// let version = store.write_if(Record::new("counter", "1"), 0).await?;
/// let stale = store.write_if(Record::new("counter", "9"), 0).await;
/// assert!(matches!(stale, Err(StoreError::Conflict { .. })));
/// store.write_if(Record::new("counter", "2"), version).await?;
/// assert_eq!(store.read("counter").await?.map(|r| r.value), Some(b"2".to_vec()));
/// node.shutdown().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Store {
    addr: Addr<StoreMsg>,
    scope: Scope,
    timeout: Duration,
    content_type: ContentType,
    direct: Option<Direct>,
}

impl Store {
    /// A handle for the store actor at `addr` (reads go through the actor).
    pub fn new(addr: Addr<StoreMsg>) -> Self {
        Store {
            addr,
            scope: Scope::default(),
            timeout: ASK,
            content_type: ContentType::Json,
            direct: None,
        }
    }

    /// A handle for the store running on `node` (named `"store"`), reading its engine directly.
    pub async fn local(node: &Node) -> Result<Self, StoreError> {
        let addr = node.lookup::<StoreMsg>(STORE_NAME)?;
        let direct = addr
            .ask(|reply| command(Command::Engine(reply)), ASK)
            .await?;
        let mut store = Store::new(addr);
        store.direct = Some(direct);
        Ok(store)
    }

    /// A handle for the store exposed by node `peer`, reached from `node` over QUIC.
    pub async fn remote(node: &Node, peer: NodeId) -> Result<Self, StoreError> {
        Ok(Store::new(
            node.lookup_remote::<StoreMsg>(peer, STORE_NAME).await?,
        ))
    }

    /// The store actor's address.
    pub fn addr(&self) -> &Addr<StoreMsg> {
        &self.addr
    }

    /// The database and table this handle uses.
    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// Whether reads go straight to the engine (a local handle) rather than through the actor.
    pub fn reads_directly(&self) -> bool {
        self.direct.is_some()
    }

    /// The same store, in database `database` (the table is kept).
    #[must_use]
    pub fn database(&self, database: &str) -> Self {
        let mut store = self.clone();
        store.scope.database = database.to_owned();
        store
    }

    /// The same store, in table `table` of this handle's database. The table is created by its
    /// first write; a name that cannot be a table is refused then (`InvalidName`).
    #[must_use]
    pub fn table(&self, table: &str) -> Self {
        let mut store = self.clone();
        store.scope.table = table.to_owned();
        store
    }

    /// The same handle with another timeout for each request.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The same handle with another content type for [`put`](Store::put) (JSON by default).
    #[must_use]
    pub fn with_content_type(mut self, content_type: ContentType) -> Self {
        self.content_type = content_type;
        self
    }

    /// The record at `key`, unless absent or expired.
    pub async fn read(&self, key: &str) -> Result<Option<Record>, StoreError> {
        if let Some(direct) = &self.direct {
            return direct.read(&self.scope, key);
        }
        let (scope, key) = (self.scope.clone(), key.to_owned());
        self.addr
            .ask(|reply| StoreMsg::Read { scope, key, reply }, self.timeout)
            .await?
    }

    /// The records `query` selects (prefix, suffix, offset, limit, order).
    pub async fn scan(&self, query: &Query) -> Result<Vec<Record>, StoreError> {
        if let Some(direct) = &self.direct {
            return direct.scan(&self.scope, query);
        }
        let (scope, query) = (self.scope.clone(), query.clone());
        self.addr
            .ask(
                |reply| StoreMsg::Scan {
                    scope,
                    query,
                    reply,
                },
                self.timeout,
            )
            .await?
    }

    /// The keys `query` selects.
    pub async fn list(&self, query: &Query) -> Result<Vec<String>, StoreError> {
        if let Some(direct) = &self.direct {
            return direct.list(&self.scope, query);
        }
        let (scope, query) = (self.scope.clone(), query.clone());
        self.addr
            .ask(
                |reply| StoreMsg::List {
                    scope,
                    query,
                    reply,
                },
                self.timeout,
            )
            .await?
    }

    /// Writes `record` (with its metadata and absolute expiry); its new version.
    pub async fn write(&self, record: Record) -> Result<u64, StoreError> {
        self.write_with(record, WriteOptions::new()).await
    }

    /// Writes `record` with options (a TTL, a compare-and-set); its new version.
    pub async fn write_with(
        &self,
        record: Record,
        options: WriteOptions,
    ) -> Result<u64, StoreError> {
        let scope = self.scope.clone();
        self.addr
            .ask(
                |reply| StoreMsg::Write {
                    scope,
                    record,
                    options,
                    reply,
                },
                self.timeout,
            )
            .await?
    }

    /// Compare-and-set: writes `record` only if the stored version is `version` (0: only if
    /// absent), else `Conflict`; its new version.
    pub async fn write_if(&self, record: Record, version: u64) -> Result<u64, StoreError> {
        self.write_with(record, WriteOptions::new().if_version(version))
            .await
    }

    /// Deletes `key`; whether it existed.
    pub async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        self.delete_with(key, None).await
    }

    /// Deletes `key` only if its version is `version`, else `Conflict`; whether it existed.
    pub async fn delete_if(&self, key: &str, version: u64) -> Result<bool, StoreError> {
        self.delete_with(key, Some(version)).await
    }

    async fn delete_with(&self, key: &str, if_version: Option<u64>) -> Result<bool, StoreError> {
        let (scope, key) = (self.scope.clone(), key.to_owned());
        self.addr
            .ask(
                |reply| StoreMsg::Delete {
                    scope,
                    key,
                    if_version,
                    reply,
                },
                self.timeout,
            )
            .await?
    }

    /// The value at `key` decoded as `T` (in the content type it was put with).
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        Ok(self.get_versioned(key).await?.map(|(value, _)| value))
    }

    /// The value at `key` decoded as `T`, with its version (for [`put_if`](Store::put_if)).
    pub async fn get_versioned<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<(T, u64)>, StoreError> {
        let Some(record) = self.read(key).await? else {
            return Ok(None);
        };
        let content_type = match record.metadata.get(CONTENT_TYPE) {
            Some(name) => ContentType::parse(name).map_err(|e| codec("decode", key, e))?,
            None => self.content_type,
        };
        let value = content_type
            .decode(&record.value)
            .map_err(|e| codec("decode", key, e))?;
        Ok(Some((value, record.version)))
    }

    /// Writes `value` at `key`, encoded in the handle's content type; its new version.
    pub async fn put<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<u64, StoreError> {
        self.write(self.encode(key, value)?).await
    }

    /// [`put`](Store::put) only if the stored version is `version` (0: only if absent).
    pub async fn put_if<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        version: u64,
    ) -> Result<u64, StoreError> {
        self.write_if(self.encode(key, value)?, version).await
    }

    fn encode<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<Record, StoreError> {
        let bytes = self
            .content_type
            .encode(value)
            .map_err(|e| codec("encode", key, e))?;
        Ok(Record::new(key, bytes).with_metadata(CONTENT_TYPE, self.content_type.as_str()))
    }

    /// The database's current revision (0 before its first change).
    pub async fn revision(&self) -> Result<u64, StoreError> {
        let scope = self.scope.clone();
        self.addr
            .ask(|reply| StoreMsg::Revision { scope, reply }, self.timeout)
            .await?
    }

    /// Changes to this table's keys starting with `prefix`: those kept since `from_revision`
    /// (inclusive) when given, then live ones, in revision order without gaps. The stream ends
    /// with an error when the watcher fell too far behind, the link was lost or the store
    /// stopped: watch again from the last revision seen plus one. A revision older than the
    /// history kept ends it at once with the `Compacted` error's text.
    pub fn watch(
        &self,
        prefix: &str,
        from_revision: Option<u64>,
    ) -> Result<StreamReceiver<StoreEvent>, StoreError> {
        let (events, receiver) = stream_channel(WATCH_BUFFER);
        self.addr.send(StoreMsg::Watch {
            scope: self.scope.clone(),
            prefix: prefix.to_owned(),
            from_revision,
            events,
        })?;
        Ok(receiver)
    }
}

fn codec(action: &str, key: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Codec {
        action: action.to_owned(),
        key: key.to_owned(),
        detail: e.to_string(),
    }
}
