//! The file backend on redb: one file per database (`<dir>/<database>.redb`), ACID, MVCC. Local
//! handles read through read transactions while the store actor writes; every write is one
//! transaction committed at the configured durability (durable by default), which holds the
//! record, the database's revision, the expiry index and the change history together.
//!
//! redb locks a file for the process that opens it, so files are opened once per process: a
//! process-wide table (canonical path → the open `Database`) gives a restarted actor, or a second
//! store on the same directory, the database already open.

use std::collections::HashMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use micro_runtime::{ChildSpec, Metadata, Node};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableError};
use serde::{Deserialize, Serialize};

use crate::actor::{StoreActor, StoreConfig};
use crate::engine::{Engine, check_name, check_version, prefix_end, select};
use crate::{EventKind, Order, Query, Record, Scope, Store, StoreError, StoreEvent};

/// The database's revision, under the key `"revision"`.
const META: TableDefinition<&str, u64> = TableDefinition::new("micro.meta");
/// (expiry, table, key): the records with an expiry, soonest first.
const EXPIRY: TableDefinition<(u64, &str, &str), ()> = TableDefinition::new("micro.expiry");
/// Revision → the change made (encoded [`StoredEvent`]).
const CHANGES: TableDefinition<u64, &[u8]> = TableDefinition::new("micro.changes");
/// The prefix of the redb table holding a store table's records.
const TABLE_PREFIX: &str = "t.";

/// When a commit is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// A write is acknowledged once its commit is on disk (fsync): it survives a crash of the
    /// process or the machine. The default.
    #[default]
    Immediate,
    /// A write is acknowledged once committed in memory; the store makes it durable with an
    /// empty durable commit at its next sweep (every [`StoreConfig::sweep_every`], 250 ms by
    /// default). A crash (of the process or the machine) loses the writes since the last
    /// durable commit; the file is never torn.
    Eventual,
}

/// Where and how a [`FileStore`] keeps its databases.
#[derive(Debug, Clone)]
pub struct FileConfig {
    /// The directory of the database files (created if missing).
    pub dir: PathBuf,
    /// When a commit counts as done.
    pub durability: Durability,
    /// Limits, history, sweeping.
    pub store: StoreConfig,
}

impl FileConfig {
    /// Databases in `dir`, durable commits, default limits.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileConfig {
            dir: dir.into(),
            durability: Durability::default(),
            store: StoreConfig::default(),
        }
    }

    /// With another durability.
    #[must_use]
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }
}

/// The file backend: a store actor over redb files.
#[derive(Debug, Clone, Copy)]
pub struct FileStore;

impl FileStore {
    /// A child spec for a file store named `"store"`. Files open at their first use: a locked or
    /// corrupt file is a typed error then (`Locked`, `Corrupt`), and the store goes on serving
    /// the other databases.
    pub fn spec(config: FileConfig) -> ChildSpec<StoreActor> {
        let engine = Arc::new(FileEngine::new(&config));
        StoreActor::spec(engine, config.store)
    }

    /// Starts a file store on `node` (supervised under its root, exposed as `"store"`) and
    /// returns a local handle, which reads the files directly.
    ///
    /// ```no_run
    /// use micro_store::{FileConfig, FileStore};
    /// use micro_runtime::Node;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let node = Node::builder().start().await?;
    /// let store = FileStore::start(&node, FileConfig::new("./data")).await?;
    /// store.table("orders").put("o-1", &42u32).await?;
    /// # Ok(()) }
    /// ```
    pub async fn start(node: &Node, config: FileConfig) -> Result<Store, StoreError> {
        StoreActor::start(node, FileStore::spec(config)).await
    }
}

/// A record as stored (its key is the table's key).
#[derive(Serialize, Deserialize)]
struct Stored {
    #[serde(with = "crate::record::bytes")]
    value: Vec<u8>,
    metadata: Metadata,
    expiry: Option<u64>,
    version: u64,
}

/// A change as stored in the history.
#[derive(Serialize, Deserialize)]
struct StoredEvent {
    table: String,
    kind: EventKind,
    record: Record,
}

fn encode<T: Serialize>(value: &T, key: &str) -> Result<Vec<u8>, StoreError> {
    bincode::serde::encode_to_vec(value, bincode::config::standard()).map_err(|e| {
        StoreError::Codec {
            action: "encode".into(),
            key: key.to_owned(),
            detail: e.to_string(),
        }
    })
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8], key: &str) -> Result<T, StoreError> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map(|(value, _)| value)
        .map_err(|e| StoreError::Codec {
            action: "decode".into(),
            key: key.to_owned(),
            detail: e.to_string(),
        })
}

fn record(key: &str, bytes: &[u8]) -> Result<Record, StoreError> {
    let stored: Stored = decode(bytes, key)?;
    Ok(Record {
        key: key.to_owned(),
        value: stored.value,
        metadata: stored.metadata,
        expiry: stored.expiry,
        version: stored.version,
    })
}

/// The databases this process has open, by canonical path (weakly: a file no store uses any
/// more is closed).
fn open_files() -> &'static Mutex<HashMap<PathBuf, Weak<Database>>> {
    static OPEN: OnceLock<Mutex<HashMap<PathBuf, Weak<Database>>>> = OnceLock::new();
    OPEN.get_or_init(Default::default)
}

/// Opens the redb file at `path`, or returns it if this process has it open already.
fn open(path: &Path) -> Result<Arc<Database>, StoreError> {
    let shown = path.display().to_string();
    let io = |e: std::io::Error| StoreError::Engine {
        database: shown.clone(),
        operation: "open".into(),
        detail: e.to_string(),
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let canonical = match path.file_name() {
        Some(name) => dir.canonicalize().map_err(io)?.join(name),
        None => path.to_path_buf(),
    };
    let mut files = open_files().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(db) = files.get(&canonical).and_then(Weak::upgrade) {
        return Ok(db);
    }
    let db = Database::create(&canonical).map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked {
            path: shown.clone(),
        },
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(detail)) => {
            StoreError::Corrupt {
                path: shown.clone(),
                detail,
            }
        }
        other => StoreError::Corrupt {
            path: shown.clone(),
            detail: other.to_string(),
        },
    })?;
    let db = Arc::new(db);
    files.retain(|_, weak| weak.strong_count() > 0);
    files.insert(canonical, Arc::downgrade(&db));
    Ok(db)
}

/// The redb engine: the open databases of one directory.
#[derive(Debug)]
pub(crate) struct FileEngine {
    dir: PathBuf,
    durability: redb::Durability,
    history: u64,
    databases: Mutex<HashMap<String, Arc<Database>>>,
    /// Whether commits were made that are not durable yet (with `Durability::Eventual`).
    pending: AtomicBool,
    /// Whether the files already in the directory were opened (so their expired records are
    /// swept even before anyone uses them).
    found: AtomicBool,
}

/// An engine error on `database` while doing `operation`.
fn fail(database: &str, operation: &str, e: impl std::fmt::Display) -> StoreError {
    let detail = e.to_string();
    if detail.contains("orrupt") {
        return StoreError::Corrupt {
            path: database.to_owned(),
            detail,
        };
    }
    StoreError::Engine {
        database: database.to_owned(),
        operation: operation.to_owned(),
        detail,
    }
}

impl FileEngine {
    pub(crate) fn new(config: &FileConfig) -> Self {
        FileEngine {
            dir: config.dir.clone(),
            durability: match config.durability {
                Durability::Immediate => redb::Durability::Immediate,
                Durability::Eventual => redb::Durability::None,
            },
            history: u64::try_from(config.store.history.max(1)).unwrap_or(u64::MAX),
            databases: Mutex::new(HashMap::new()),
            pending: AtomicBool::new(false),
            found: AtomicBool::new(false),
        }
    }

    /// The open database `name`, opening (or creating) its file on first use.
    fn database(&self, name: &str) -> Result<Arc<Database>, StoreError> {
        check_name("database", name)?;
        let mut databases = self.databases.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(db) = databases.get(name) {
            return Ok(db.clone());
        }
        let db = open(&self.dir.join(format!("{name}.redb")))?;
        databases.insert(name.to_owned(), db.clone());
        Ok(db)
    }

    /// Opens every database file already in the directory (once).
    fn open_existing(&self) {
        if self.found.swap(true, AtomicOrdering::Relaxed) {
            return;
        }
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "redb")
                && let Some(name) = path.file_stem().and_then(|s| s.to_str())
                && let Err(e) = self.database(name)
            {
                tracing::warn!(database = name, error = %e, "cannot open a store database");
            }
        }
    }

    /// Makes the commits of `Durability::Eventual` durable: an empty durable commit per open
    /// database, when there were any.
    fn flush(&self) -> Result<(), StoreError> {
        if !self.pending.swap(false, AtomicOrdering::Relaxed) {
            return Ok(());
        }
        for (name, db) in self.open_databases() {
            let f = |e: &dyn std::fmt::Display| fail(&name, "flush", e);
            let mut txn = db.begin_write().map_err(|e| f(&e))?;
            txn.set_durability(redb::Durability::Immediate)
                .map_err(|e| f(&e))?;
            txn.commit().map_err(|e| f(&e))?;
        }
        Ok(())
    }

    fn open_databases(&self) -> Vec<(String, Arc<Database>)> {
        let databases = self.databases.lock().unwrap_or_else(|e| e.into_inner());
        databases
            .iter()
            .map(|(name, db)| (name.clone(), db.clone()))
            .collect()
    }

    /// Runs `change` in one write transaction at the next revision(s), keeping the history
    /// bounded; commits at the configured durability.
    fn write_txn<T>(
        &self,
        database: &str,
        operation: &str,
        change: impl FnOnce(&redb::WriteTransaction, &mut Revision) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let db = self.database(database)?;
        let f = |e: &dyn std::fmt::Display| fail(database, operation, e);
        let mut txn = db.begin_write().map_err(|e| f(&e))?;
        txn.set_durability(self.durability).map_err(|e| f(&e))?;
        let current = {
            let meta = txn.open_table(META).map_err(|e| f(&e))?;
            meta.get("revision")
                .map_err(|e| f(&e))?
                .map_or(0, |v| v.value())
        };
        let mut revision = Revision {
            current,
            history: self.history,
            database: database.to_owned(),
        };
        let out = change(&txn, &mut revision)?;
        if revision.current != current {
            let mut meta = txn.open_table(META).map_err(|e| f(&e))?;
            meta.insert("revision", revision.current)
                .map_err(|e| f(&e))?;
        }
        txn.commit().map_err(|e| f(&e))?;
        if !matches!(self.durability, redb::Durability::Immediate) {
            self.pending.store(true, AtomicOrdering::Relaxed);
        }
        Ok(out)
    }
}

/// The revision counter inside one write transaction.
struct Revision {
    current: u64,
    history: u64,
    database: String,
}

impl Revision {
    /// Records `event` at the next revision in the history (dropping the one that falls out).
    fn log(
        &mut self,
        txn: &redb::WriteTransaction,
        table: &str,
        kind: EventKind,
        record: Record,
    ) -> Result<StoreEvent, StoreError> {
        let f = |e: &dyn std::fmt::Display| fail(&self.database, "log a change", e);
        self.current += 1;
        let stored = StoredEvent {
            table: table.to_owned(),
            kind,
            record,
        };
        let bytes = encode(&stored, &stored.record.key)?;
        let mut changes = txn.open_table(CHANGES).map_err(|e| f(&e))?;
        changes
            .insert(self.current, bytes.as_slice())
            .map_err(|e| f(&e))?;
        if self.current > self.history {
            changes
                .remove(self.current - self.history)
                .map_err(|e| f(&e))?;
        }
        Ok(StoreEvent {
            revision: self.current,
            table: stored.table,
            key: stored.record.key.clone(),
            kind,
            record: stored.record,
        })
    }
}

/// Removes `key` from `table` (and its expiry entry); the record removed.
fn remove(
    txn: &redb::WriteTransaction,
    scope: &Scope,
    key: &str,
) -> Result<Option<Record>, StoreError> {
    let f = |e: &dyn std::fmt::Display| fail(&scope.database, "delete", e);
    let name = format!("{TABLE_PREFIX}{}", scope.table);
    let def: TableDefinition<&str, &[u8]> = TableDefinition::new(&name);
    let mut table = txn.open_table(def).map_err(|e| f(&e))?;
    let old = match table.remove(key).map_err(|e| f(&e))? {
        Some(bytes) => record(key, bytes.value())?,
        None => return Ok(None),
    };
    drop(table);
    if let Some(at) = old.expiry {
        let mut expiry = txn.open_table(EXPIRY).map_err(|e| f(&e))?;
        expiry
            .remove((at, scope.table.as_str(), key))
            .map_err(|e| f(&e))?;
    }
    Ok(Some(old))
}

impl Engine for FileEngine {
    fn read(&self, scope: &Scope, key: &str, now: u64) -> Result<Option<Record>, StoreError> {
        let db = self.database(&scope.database)?;
        let f = |e: &dyn std::fmt::Display| fail(&scope.database, "read", e);
        let txn = db.begin_read().map_err(|e| f(&e))?;
        let name = format!("{TABLE_PREFIX}{}", scope.table);
        let def: TableDefinition<&str, &[u8]> = TableDefinition::new(&name);
        let table = match txn.open_table(def) {
            Ok(table) => table,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(f(&e)),
        };
        match table.get(key).map_err(|e| f(&e))? {
            Some(bytes) => Ok(Some(record(key, bytes.value())?).filter(|r| !r.expired_at(now))),
            None => Ok(None),
        }
    }

    fn scan(&self, scope: &Scope, query: &Query, now: u64) -> Result<Vec<Record>, StoreError> {
        let db = self.database(&scope.database)?;
        let f = |e: &dyn std::fmt::Display| fail(&scope.database, "scan", e);
        let txn = db.begin_read().map_err(|e| f(&e))?;
        let name = format!("{TABLE_PREFIX}{}", scope.table);
        let def: TableDefinition<&str, &[u8]> = TableDefinition::new(&name);
        let table = match txn.open_table(def) {
            Ok(table) => table,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(f(&e)),
        };
        let prefix = query.prefix.clone().unwrap_or_default();
        let end = prefix_end(&prefix);
        let bounds: (Bound<&str>, Bound<&str>) = (
            Bound::Included(prefix.as_str()),
            end.as_deref().map_or(Bound::Unbounded, Bound::Excluded),
        );
        let range = table.range::<&str>(bounds).map_err(|e| f(&e))?;
        let to_record = |item: Result<
            (redb::AccessGuard<'_, &str>, redb::AccessGuard<'_, &[u8]>),
            redb::StorageError,
        >| {
            let (k, v) = item.map_err(|e| f(&e))?;
            record(k.value(), v.value())
        };
        match query.order {
            Order::Ascending => select(range.map(to_record), query, now),
            Order::Descending => select(range.rev().map(to_record), query, now),
        }
    }

    fn write(
        &self,
        scope: &Scope,
        mut record: Record,
        if_version: Option<u64>,
        now: u64,
    ) -> Result<StoreEvent, StoreError> {
        self.write_txn(&scope.database, "write", |txn, revision| {
            let f = |e: &dyn std::fmt::Display| fail(&scope.database, "write", e);
            let name = format!("{TABLE_PREFIX}{}", scope.table);
            let def: TableDefinition<&str, &[u8]> = TableDefinition::new(&name);
            let old = {
                let table = txn.open_table(def).map_err(|e| f(&e))?;
                let bytes = table.get(record.key.as_str()).map_err(|e| f(&e))?;
                bytes
                    .map(|b| self::record(&record.key, b.value()))
                    .transpose()?
            };
            let live = old.as_ref().filter(|r| !r.expired_at(now));
            check_version(&record.key, live, if_version)?;
            let mut expiry = txn.open_table(EXPIRY).map_err(|e| f(&e))?;
            if let Some(at) = old.as_ref().and_then(|r| r.expiry) {
                expiry
                    .remove((at, scope.table.as_str(), record.key.as_str()))
                    .map_err(|e| f(&e))?;
            }
            record.version = revision.current + 1;
            if let Some(at) = record.expiry {
                expiry
                    .insert((at, scope.table.as_str(), record.key.as_str()), ())
                    .map_err(|e| f(&e))?;
            }
            drop(expiry);
            let stored = Stored {
                value: record.value.clone(),
                metadata: record.metadata.clone(),
                expiry: record.expiry,
                version: record.version,
            };
            let bytes = encode(&stored, &record.key)?;
            let mut table = txn.open_table(def).map_err(|e| f(&e))?;
            table
                .insert(record.key.as_str(), bytes.as_slice())
                .map_err(|e| f(&e))?;
            drop(table);
            revision.log(txn, &scope.table, EventKind::Put, record)
        })
    }

    fn delete(
        &self,
        scope: &Scope,
        key: &str,
        if_version: Option<u64>,
        now: u64,
    ) -> Result<Option<StoreEvent>, StoreError> {
        // A read first: deleting nothing commits nothing.
        let live = self.read(scope, key, now)?;
        check_version(key, live.as_ref(), if_version)?;
        if live.is_none() {
            return Ok(None);
        }
        self.write_txn(&scope.database, "delete", |txn, revision| {
            // Checked again inside the transaction: only the actor writes, but be exact.
            let Some(old) = remove(txn, scope, key)? else {
                return Ok(None);
            };
            if old.expired_at(now) || if_version.is_some_and(|v| v != old.version) {
                return Err(StoreError::Conflict {
                    key: key.to_owned(),
                    expected: if_version.unwrap_or(0),
                    found: old.version,
                });
            }
            revision
                .log(txn, &scope.table, EventKind::Delete, old)
                .map(Some)
        })
    }

    fn expire(&self, now: u64, max: usize) -> Result<Vec<(String, StoreEvent)>, StoreError> {
        self.open_existing();
        self.flush()?;
        let mut events = Vec::new();
        for (name, db) in self.open_databases() {
            if events.len() >= max {
                break;
            }
            let f = |e: &dyn std::fmt::Display| fail(&name, "sweep", e);
            // Find the candidates in a read transaction: most sweeps find nothing.
            let due: Vec<(u64, String, String)> = {
                let txn = db.begin_read().map_err(|e| f(&e))?;
                let index = match txn.open_table(EXPIRY) {
                    Ok(index) => index,
                    Err(TableError::TableDoesNotExist(_)) => continue,
                    Err(e) => return Err(f(&e)),
                };
                let upper = (now, "\u{10FFFF}", "\u{10FFFF}");
                let range = index.range(..=upper).map_err(|e| f(&e))?;
                let mut due = Vec::new();
                for item in range.take(max - events.len()) {
                    let (k, _) = item.map_err(|e| f(&e))?;
                    let (at, table, key) = k.value();
                    due.push((at, table.to_owned(), key.to_owned()));
                }
                due
            };
            if due.is_empty() {
                continue;
            }
            let swept = self.write_txn(&name, "sweep", |txn, revision| {
                let mut swept = Vec::new();
                for (at, table, key) in &due {
                    let scope = Scope::new(name.clone(), table.clone());
                    {
                        // The index entry goes whatever the record says now.
                        let mut expiry = txn.open_table(EXPIRY).map_err(|e| f(&e))?;
                        expiry
                            .remove((*at, table.as_str(), key.as_str()))
                            .map_err(|e| f(&e))?;
                    }
                    let current = {
                        let def_name = format!("{TABLE_PREFIX}{table}");
                        let def: TableDefinition<&str, &[u8]> = TableDefinition::new(&def_name);
                        let t = txn.open_table(def).map_err(|e| f(&e))?;
                        let bytes = t.get(key.as_str()).map_err(|e| f(&e))?;
                        bytes.map(|b| record(key, b.value())).transpose()?
                    };
                    if current.is_some_and(|r| r.expired_at(now))
                        && let Some(old) = remove(txn, &scope, key)?
                    {
                        swept.push(revision.log(txn, table, EventKind::Expired, old)?);
                    }
                }
                Ok(swept)
            })?;
            events.extend(swept.into_iter().map(|e| (name.clone(), e)));
        }
        Ok(events)
    }

    fn changes(&self, database: &str, from: u64) -> Result<Vec<StoreEvent>, StoreError> {
        let db = self.database(database)?;
        let f = |e: &dyn std::fmt::Display| fail(database, "read changes", e);
        let txn = db.begin_read().map_err(|e| f(&e))?;
        let revision = match txn.open_table(META) {
            Ok(meta) => meta
                .get("revision")
                .map_err(|e| f(&e))?
                .map_or(0, |v| v.value()),
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(f(&e)),
        };
        let changes = match txn.open_table(CHANGES) {
            Ok(changes) => changes,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(f(&e)),
        };
        let oldest = changes
            .first()
            .map_err(|e| f(&e))?
            .map_or(revision + 1, |(k, _)| k.value());
        if from < oldest && from <= revision && from > 0 {
            return Err(StoreError::Compacted {
                database: database.to_owned(),
                requested: from,
                oldest,
            });
        }
        let mut out = Vec::new();
        for item in changes.range(from..).map_err(|e| f(&e))? {
            let (k, v) = item.map_err(|e| f(&e))?;
            let stored: StoredEvent = decode(v.value(), "a change")?;
            out.push(StoreEvent {
                revision: k.value(),
                table: stored.table,
                key: stored.record.key.clone(),
                kind: stored.kind,
                record: stored.record,
            });
        }
        Ok(out)
    }

    fn revision(&self, database: &str) -> Result<u64, StoreError> {
        let db = self.database(database)?;
        let f = |e: &dyn std::fmt::Display| fail(database, "read the revision", e);
        let txn = db.begin_read().map_err(|e| f(&e))?;
        match txn.open_table(META) {
            Ok(meta) => Ok(meta
                .get("revision")
                .map_err(|e| f(&e))?
                .map_or(0, |v| v.value())),
            Err(TableError::TableDoesNotExist(_)) => Ok(0),
            Err(e) => Err(f(&e)),
        }
    }
}
