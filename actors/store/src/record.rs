//! The store's data: records, the options of reads, writes and lists, and change events.

use std::time::Duration;

use micro_runtime::Metadata;
use serde::{Deserialize, Serialize};

/// The database a handle uses unless told otherwise (Go Micro's default).
pub const DEFAULT_DATABASE: &str = "micro";
/// The table a handle uses unless told otherwise (Go Micro's default).
pub const DEFAULT_TABLE: &str = "micro";

/// One record: a key, its value (bytes), metadata, when it expires, and its version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The key (unique in its table).
    pub key: String,
    /// The value (one byte string on the wire, not a sequence of numbers).
    #[serde(with = "bytes")]
    pub value: Vec<u8>,
    /// Strings that travel with the value (the typed helpers keep the content type here).
    pub metadata: Metadata,
    /// When the record expires, in milliseconds since the Unix epoch; `None` never. On a write,
    /// [`WriteOptions::ttl`] takes precedence.
    pub expiry: Option<u64>,
    /// The store's revision at the record's last write (set by the store; ignored on a write).
    /// Versions only grow, also across a delete and a new write of the same key.
    pub version: u64,
}

impl Record {
    /// A record with `key` and `value`, no metadata, no expiry.
    pub fn new(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Record {
            key: key.into(),
            value: value.into(),
            metadata: Metadata::new(),
            expiry: None,
            version: 0,
        }
    }

    /// The same record with one more metadata entry.
    #[must_use]
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// The same record expiring at `unix_ms` (milliseconds since the Unix epoch).
    #[must_use]
    pub fn with_expiry(mut self, unix_ms: u64) -> Self {
        self.expiry = Some(unix_ms);
        self
    }

    /// Whether the record has expired at `now` (milliseconds since the Unix epoch).
    pub fn expired_at(&self, now: u64) -> bool {
        self.expiry.is_some_and(|at| at <= now)
    }
}

/// Where a request goes: a database and a table in it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Scope {
    /// The database (a redb file, a PostgreSQL schema).
    pub database: String,
    /// The table.
    pub table: String,
}

impl Scope {
    /// The scope `database`/`table`.
    pub fn new(database: impl Into<String>, table: impl Into<String>) -> Self {
        Scope {
            database: database.into(),
            table: table.into(),
        }
    }
}

impl Default for Scope {
    fn default() -> Self {
        Scope::new(DEFAULT_DATABASE, DEFAULT_TABLE)
    }
}

/// The order of a read or list, by key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Order {
    /// Keys in ascending byte order.
    #[default]
    Ascending,
    /// Keys in descending byte order.
    Descending,
}

/// Which records a read or a list returns: those whose key starts with `prefix` and ends with
/// `suffix`, in `order`, skipping `offset`, at most `limit`.
///
/// A prefix is a range scan in every engine; a suffix is a filter over the (prefix's) range, so a
/// suffix alone scans the table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Query {
    /// Keys starting with this.
    pub prefix: Option<String>,
    /// Keys ending with this.
    pub suffix: Option<String>,
    /// At most this many.
    pub limit: Option<u64>,
    /// Skip this many first.
    pub offset: u64,
    /// Key order.
    pub order: Order,
}

impl Query {
    /// Every record, ascending.
    pub fn all() -> Self {
        Query::default()
    }

    /// Keys starting with `prefix`.
    pub fn prefix(prefix: impl Into<String>) -> Self {
        Query {
            prefix: Some(prefix.into()),
            ..Query::default()
        }
    }

    /// Only keys ending with `suffix` too.
    #[must_use]
    pub fn suffix(mut self, suffix: impl Into<String>) -> Self {
        self.suffix = Some(suffix.into());
        self
    }

    /// At most `limit` records.
    #[must_use]
    pub fn limit(mut self, limit: u64) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Skips the first `offset` records.
    #[must_use]
    pub fn offset(mut self, offset: u64) -> Self {
        self.offset = offset;
        self
    }

    /// In `order`.
    #[must_use]
    pub fn order(mut self, order: Order) -> Self {
        self.order = order;
        self
    }

    /// Whether `key` passes the prefix and suffix.
    pub fn matches(&self, key: &str) -> bool {
        self.prefix.as_deref().is_none_or(|p| key.starts_with(p))
            && self.suffix.as_deref().is_none_or(|s| key.ends_with(s))
    }
}

/// How a write is done: a TTL, and an optional compare-and-set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteOptions {
    /// The record expires this long after the store receives it (overrides
    /// [`Record::expiry`]), in milliseconds.
    pub ttl_ms: Option<u64>,
    /// Compare-and-set: write only if the stored version is this one (0: only if absent).
    pub if_version: Option<u64>,
}

impl WriteOptions {
    /// A plain write.
    pub fn new() -> Self {
        WriteOptions::default()
    }

    /// Expires `ttl` after the write.
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl_ms = Some(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        self
    }

    /// Writes only if the stored version is `version` (0: only if absent).
    #[must_use]
    pub fn if_version(mut self, version: u64) -> Self {
        self.if_version = Some(version);
        self
    }
}

/// What a change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// A record was written.
    Put,
    /// A record was deleted.
    Delete,
    /// A record expired and was removed.
    Expired,
}

/// One change in a database, at its revision. Revisions of a database grow by one per change,
/// so a watcher that saw revision `r` resumes from `r + 1` without gaps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreEvent {
    /// The database's revision of this change.
    pub revision: u64,
    /// The table.
    pub table: String,
    /// The key.
    pub key: String,
    /// What happened.
    pub kind: EventKind,
    /// The record as written (for `Put`) or as it was (for `Delete` and `Expired`).
    pub record: Record,
}

/// Serde for byte vectors as byte strings (what `serde_bytes` does): bincode copies them in one
/// go and JSON writes an array either way; both forms are read.
pub(crate) mod bytes {
    use serde::{Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(value: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(value)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        deserializer.deserialize_byte_buf(Visitor)
    }
}
