//! The data store for micro: a supervised store actor with Go Micro's operations (read, write,
//! delete, list with prefix, suffix, limit, offset; databases and tables; TTLs) and more:
//! every record has a version, [`Store::write_if`] is compare-and-set, and each database has a
//! revision that [`Store::watch`] streams changes by, resuming without gaps.
//!
//! The [`Store`] handle is the same for a store on this node or on another one (the actor is
//! exposed as `"store"`). Backends: [`MemoryStore`] (the default), [`FileStore`] on redb (one
//! file per database, durable commits by default), and `PostgresStore` behind the `postgres`
//! feature.
//!
//! ```
//! use micro_store::{MemoryStore, Query, Record, StoreConfig, WriteOptions};
//! use micro_runtime::Node;
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let node = Node::builder().start().await?;
//! let store = MemoryStore::start(&node, StoreConfig::default()).await?;
//!
//! let users = store.table("users");
//! users.write(Record::new("user/1", "ada").with_metadata("role", "admin")).await?;
//! users.write_with(Record::new("session/1", "token"), WriteOptions::new().ttl(Duration::from_secs(60))).await?;
//! assert_eq!(users.list(&Query::prefix("user/")).await?, ["user/1"]);
//! node.shutdown().await?;
//! # Ok(()) }
//! ```

// Layers, each importing only those above it: error, record → engine → protocol → memory,
// file → actor → handle.
mod actor;
mod engine;
mod error;
mod file;
mod handle;
mod memory;
mod protocol;
mod record;

pub use actor::{MemoryStore, StoreActor, StoreConfig};
pub use engine::Limits;
pub use error::StoreError;
pub use file::{Durability, FileConfig, FileStore};
pub use handle::{CONTENT_TYPE, Store};
pub use protocol::{STORE_NAME, StoreCommand, StoreMsg};
pub use record::{
    DEFAULT_DATABASE, DEFAULT_TABLE, EventKind, Order, Query, Record, Scope, StoreEvent,
    WriteOptions,
};
