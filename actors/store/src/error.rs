//! The store's error type.

use serde::{Deserialize, Serialize};

/// What can go wrong with the store. Every variant names what failed; it crosses nodes inside
/// replies, so it holds text rather than the engines' own error types.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum StoreError {
    /// A key is empty or longer than the store's limit.
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey {
        /// The key (cut to 64 characters).
        key: String,
        /// Why it was refused.
        reason: String,
    },
    /// A value (or its metadata) is larger than the store's limit.
    #[error("value of {key:?} too large: {size} bytes, the limit is {limit}")]
    ValueTooLarge {
        /// The record's key.
        key: String,
        /// Its size in bytes.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A database or table name that cannot be one: names are 1 to 63 ASCII letters, digits
    /// and underscores, not starting with a digit.
    #[error("invalid {what} name {name:?}")]
    InvalidName {
        /// `"database"` or `"table"`.
        what: String,
        /// The name given.
        name: String,
    },
    /// A compare-and-set found another version than the one expected (0 means "absent").
    #[error("version conflict on {key:?}: expected {expected}, found {found}")]
    Conflict {
        /// The record's key.
        key: String,
        /// The version the caller expected.
        expected: u64,
        /// The version stored (0 when the record is absent).
        found: u64,
    },
    /// A watch asked to start at a revision older than the change history kept.
    #[error("revision {requested} of {database:?} was compacted; the oldest kept is {oldest}")]
    Compacted {
        /// The database.
        database: String,
        /// The revision asked for.
        requested: u64,
        /// The oldest revision still kept.
        oldest: u64,
    },
    /// A stored value could not be encoded or decoded (typed helpers, or a damaged record).
    #[error("cannot {action} {key:?}: {detail}")]
    Codec {
        /// `"encode"` or `"decode"`.
        action: String,
        /// The record's key.
        key: String,
        /// What the codec said.
        detail: String,
    },
    /// The database file is open in another process (redb locks it).
    #[error("database file {path} is locked by another process")]
    Locked {
        /// The file.
        path: String,
    },
    /// The database file is damaged or not a redb file.
    #[error("database file {path} is corrupt: {detail}")]
    Corrupt {
        /// The file.
        path: String,
        /// What the engine said.
        detail: String,
    },
    /// The engine failed (I/O, a lost connection, a refused statement).
    #[error("store engine failed on {database:?} ({operation}): {detail}")]
    Engine {
        /// The database.
        database: String,
        /// What was being done.
        operation: String,
        /// What the engine said.
        detail: String,
    },
    /// The engine is unreachable (PostgreSQL down, its pool empty): retry later.
    #[error("store engine unavailable: {0}")]
    Unavailable(String),
    /// The store actor could not be reached.
    #[error("store unreachable: {0}")]
    Runtime(#[from] micro_runtime::Error),
}
