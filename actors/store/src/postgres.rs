//! The PostgreSQL backend: each database a schema, each table a table (created on first write),
//! with the database's revision in a one-row table and its recent changes in a change table,
//! all written in one transaction. The SQL is what CockroachDB also accepts, except the watch's
//! `LISTEN`/`NOTIFY`: a store learns of other writers' changes by notification, and polls the
//! change table on its tick besides, so a lost notification only delays an event.
//!
//! Reads and writes run on a pool of connections (deadpool), as tasks of their own, so the
//! store actor's mailbox never caps throughput; the actor orders what watchers see by reading
//! the change table in revision order.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use micro_runtime::{Actor, ActorError, ChildSpec, Context, Metadata, Node, StreamSender};
use tokio_postgres::error::SqlState;
use tokio_postgres::{AsyncMessage, NoTls, Row};

use crate::actor::{StoreConfig, Watchers};
use crate::engine::{
    BoxFuture, Clock, Limits, Reader, check_name, check_scope, check_version, prefix_end, select,
};
use crate::protocol::{Command, StoreCommand, command};
use crate::{
    EventKind, Order, Query, Record, STORE_NAME, Scope, Store, StoreError, StoreEvent, StoreMsg,
    WriteOptions,
};

/// The channel store changes are notified on (the payload is the database).
const CHANNEL: &str = "micro_store";
/// The one-row table holding a database's revision.
const META: &str = "micro_store_meta";
/// The table of a database's recent changes.
const CHANGES: &str = "micro_store_changes";

/// Where and how a [`PostgresStore`] keeps its databases.
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    /// The connection string (`postgres://user@host:5432/db`).
    pub url: String,
    /// Connections in the pool.
    pub pool_size: usize,
    /// How long a request waits for a free connection (or a new one).
    pub connect_timeout: Duration,
    /// Limits, history, sweeping (the sweep tick also polls the change tables of watched
    /// databases).
    pub store: StoreConfig,
}

impl PostgresConfig {
    /// The server at `url`, 16 connections.
    pub fn new(url: impl Into<String>) -> Self {
        PostgresConfig {
            url: url.into(),
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
            store: StoreConfig::default(),
        }
    }
}

/// The PostgreSQL backend (feature `postgres`).
#[derive(Debug, Clone, Copy)]
pub struct PostgresStore;

impl PostgresStore {
    /// A child spec for a PostgreSQL store named `"store"`. Connections are made when needed:
    /// a server that is down makes requests fail with `Unavailable` until it is back.
    pub fn spec(config: PostgresConfig) -> Result<ChildSpec<PostgresActor>, StoreError> {
        let engine = Arc::new(PgEngine::new(&config)?);
        let mailbox = config.store.mailbox;
        Ok(ChildSpec::new(move || PostgresActor {
            engine: engine.clone(),
            config: config.clone(),
            watchers: Watchers::default(),
            seen: HashMap::new(),
            listener: None,
        })
        .named(STORE_NAME)
        .mailbox(mailbox))
    }

    /// Starts a PostgreSQL store on `node` (supervised, exposed as `"store"`) and returns a
    /// local handle, which reads through the pool directly.
    ///
    /// ```no_run
    /// use micro_store::{PostgresConfig, PostgresStore};
    /// use micro_runtime::Node;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let node = Node::builder().start().await?;
    /// let config = PostgresConfig::new("postgres://postgres@127.0.0.1:5432/test");
    /// let store = PostgresStore::start(&node, config).await?;
    /// store.table("orders").put("o-1", &42u32).await?;
    /// # Ok(()) }
    /// ```
    pub async fn start(node: &Node, config: PostgresConfig) -> Result<Store, StoreError> {
        node.spawn(PostgresStore::spec(config)?).await?;
        node.expose::<StoreMsg>(STORE_NAME)?;
        Store::local(node).await
    }
}

fn quote(name: &str) -> String {
    format!("\"{name}\"")
}

/// A server error as the store's: a lost or refused connection is `Unavailable` (retry), the
/// rest an engine failure naming the database and the operation.
fn pg_error(database: &str, operation: &str, e: &tokio_postgres::Error) -> StoreError {
    if e.is_closed() || e.code().is_none() {
        StoreError::Unavailable(format!("{operation} on {database:?}: {e}"))
    } else {
        let detail = match e.as_db_error() {
            Some(db) => format!("{}: {}", db.code().code(), db.message()),
            None => e.to_string(),
        };
        StoreError::engine(database, operation, detail)
    }
}

fn missing(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(&SqlState::UNDEFINED_TABLE) | Some(&SqlState::INVALID_SCHEMA_NAME)
    )
}

/// The pool and what every request needs.
#[derive(Debug)]
pub(crate) struct PgEngine {
    pool: Pool,
    clock: Clock,
    limits: Limits,
    history: i64,
    /// Databases and tables known to exist (created by this process or seen).
    ensured: Mutex<HashSet<(String, String)>>,
}

impl PgEngine {
    fn new(config: &PostgresConfig) -> Result<Self, StoreError> {
        let pg: tokio_postgres::Config = config
            .url
            .parse()
            .map_err(|e| StoreError::Unavailable(format!("bad PostgreSQL URL: {e}")))?;
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(config.connect_timeout))
            .create_timeout(Some(config.connect_timeout))
            .build()
            .map_err(|e| StoreError::Unavailable(format!("cannot build the pool: {e}")))?;
        Ok(PgEngine {
            pool,
            clock: Clock::new(),
            limits: config.store.limits,
            history: i64::try_from(config.store.history.max(1)).unwrap_or(i64::MAX),
            ensured: Mutex::new(HashSet::new()),
        })
    }

    async fn client(&self, database: &str) -> Result<deadpool_postgres::Client, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreError::Unavailable(format!("no connection for {database:?}: {e}")))
    }

    fn is_ensured(&self, database: &str, table: &str) -> bool {
        let ensured = self.ensured.lock().unwrap_or_else(|e| e.into_inner());
        ensured.contains(&(database.to_owned(), table.to_owned()))
    }

    fn mark(&self, database: &str, table: &str) {
        let mut ensured = self.ensured.lock().unwrap_or_else(|e| e.into_inner());
        ensured.insert((database.to_owned(), table.to_owned()));
    }

    fn tables(&self) -> Vec<(String, String)> {
        let ensured = self.ensured.lock().unwrap_or_else(|e| e.into_inner());
        ensured.iter().filter(|(_, t)| t != META).cloned().collect()
    }

    /// Creates the database's schema, revision and change tables if missing.
    async fn ensure_database(&self, database: &str) -> Result<(), StoreError> {
        if self.is_ensured(database, META) {
            return Ok(());
        }
        let db = quote(database);
        let sql = format!(
            "CREATE SCHEMA IF NOT EXISTS {db};
             CREATE TABLE IF NOT EXISTS {db}.{META} (id INT PRIMARY KEY, revision BIGINT NOT NULL);
             INSERT INTO {db}.{META} (id, revision) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
             CREATE TABLE IF NOT EXISTS {db}.{CHANGES} (revision BIGINT PRIMARY KEY, tbl TEXT NOT NULL, \
               key TEXT NOT NULL, kind SMALLINT NOT NULL, value BYTEA NOT NULL, metadata TEXT NOT NULL, \
               expiry BIGINT, version BIGINT NOT NULL);"
        );
        self.create(database, &sql).await?;
        self.mark(database, META);
        Ok(())
    }

    /// Creates the table (and its database) if missing: Go Micro's "created on first write".
    async fn ensure_table(&self, scope: &Scope) -> Result<(), StoreError> {
        if self.is_ensured(&scope.database, &scope.table) {
            return Ok(());
        }
        if scope.table == META || scope.table == CHANGES {
            return Err(StoreError::InvalidName {
                what: "table".into(),
                name: scope.table.clone(),
            });
        }
        self.ensure_database(&scope.database).await?;
        let (db, t) = (quote(&scope.database), quote(&scope.table));
        let index = quote(&format!("{}_expiry", scope.table));
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {db}.{t} (key TEXT COLLATE \"C\" PRIMARY KEY, value BYTEA NOT NULL, \
               metadata TEXT NOT NULL, expiry BIGINT, version BIGINT NOT NULL);
             CREATE INDEX IF NOT EXISTS {index} ON {db}.{t} (expiry);"
        );
        self.create(&scope.database, &sql).await?;
        self.mark(&scope.database, &scope.table);
        Ok(())
    }

    /// Runs DDL, once more if a concurrent creator raced it (`IF NOT EXISTS` is not atomic in
    /// PostgreSQL).
    async fn create(&self, database: &str, sql: &str) -> Result<(), StoreError> {
        let client = self.client(database).await?;
        match client.batch_execute(sql).await {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => client
                .batch_execute(sql)
                .await
                .map_err(|e| pg_error(database, "create tables", &e)),
            Err(e) => Err(pg_error(database, "create tables", &e)),
        }
    }

    async fn read(&self, scope: &Scope, key: &str) -> Result<Option<Record>, StoreError> {
        check_scope(scope)?;
        self.limits.check_key(key)?;
        let now = self.now();
        let client = self.client(&scope.database).await?;
        let sql = format!(
            "SELECT key, value, metadata, expiry, version FROM {}.{} WHERE key = $1 AND (expiry IS NULL OR expiry > $2)",
            quote(&scope.database),
            quote(&scope.table)
        );
        let f = |e: tokio_postgres::Error| pg_error(&scope.database, "read", &e);
        let statement = match client.prepare_cached(&sql).await {
            Ok(s) => s,
            Err(e) if missing(&e) => return Ok(None),
            Err(e) => return Err(f(e)),
        };
        let rows = client.query(&statement, &[&key, &now]).await.map_err(f)?;
        rows.first().map(to_record).transpose()
    }

    async fn scan(&self, scope: &Scope, query: &Query) -> Result<Vec<Record>, StoreError> {
        check_scope(scope)?;
        let now = self.now();
        let client = self.client(&scope.database).await?;
        let prefix = query.prefix.clone().unwrap_or_default();
        let end = prefix_end(&prefix);
        let order = match query.order {
            Order::Ascending => "ASC",
            Order::Descending => "DESC",
        };
        // A suffix filters here, after the range: the offset and limit then apply here too.
        let paged = query.suffix.is_none();
        let mut sql = format!(
            "SELECT key, value, metadata, expiry, version FROM {}.{} WHERE key >= $1 AND (expiry IS NULL OR expiry > $2)",
            quote(&scope.database),
            quote(&scope.table)
        );
        if end.is_some() {
            sql.push_str(" AND key < $3");
        }
        sql.push_str(&format!(" ORDER BY key {order}"));
        let limit = query
            .limit
            .map_or(i64::MAX, |l| i64::try_from(l).unwrap_or(i64::MAX));
        let offset = i64::try_from(query.offset).unwrap_or(i64::MAX);
        let n = if end.is_some() { 4 } else { 3 };
        if paged {
            sql.push_str(&format!(" LIMIT ${n} OFFSET ${}", n + 1));
        }
        let f = |e: tokio_postgres::Error| pg_error(&scope.database, "scan", &e);
        let statement = match client.prepare_cached(&sql).await {
            Ok(s) => s,
            Err(e) if missing(&e) => return Ok(Vec::new()),
            Err(e) => return Err(f(e)),
        };
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&prefix, &now];
        if let Some(end) = &end {
            params.push(end);
        }
        if paged {
            params.push(&limit);
            params.push(&offset);
        }
        let rows = client.query(&statement, &params).await.map_err(f)?;
        let records = rows.iter().map(to_record);
        if paged {
            records.collect()
        } else {
            select(records, query, u64::try_from(now).unwrap_or(0))
        }
    }

    fn now(&self) -> i64 {
        i64::try_from(self.clock.now()).unwrap_or(i64::MAX)
    }

    /// Writes in one transaction: the next revision (the revision row's lock orders writers, so
    /// revisions commit in order), the compare-and-set, the record, the change.
    async fn write(
        &self,
        scope: &Scope,
        mut record: Record,
        options: &WriteOptions,
    ) -> Result<u64, StoreError> {
        check_scope(scope)?;
        self.limits.check_record(&record)?;
        let now = self.now();
        if let Some(ttl) = options.ttl_ms {
            record.expiry = Some(u64::try_from(now).unwrap_or(0).saturating_add(ttl));
        }
        self.ensure_table(scope).await?;
        let db = &scope.database;
        let f = |e: tokio_postgres::Error| pg_error(db, "write", &e);
        let (d, t) = (quote(db), quote(&scope.table));
        let mut client = self.client(db).await?;
        let bump = client
            .prepare_cached(&format!(
                "UPDATE {d}.{META} SET revision = revision + 1 WHERE id = 1 RETURNING revision"
            ))
            .await
            .map_err(f)?;
        let current = client
            .prepare_cached(&format!(
                "SELECT key, value, metadata, expiry, version FROM {d}.{t} WHERE key = $1"
            ))
            .await
            .map_err(f)?;
        let upsert = client
            .prepare_cached(&format!(
                "INSERT INTO {d}.{t} (key, value, metadata, expiry, version) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, metadata = excluded.metadata, \
                 expiry = excluded.expiry, version = excluded.version"
            ))
            .await
            .map_err(f)?;
        let (log, trim, notify) = self.change_statements(&client, db).await?;
        let txn = client.transaction().await.map_err(f)?;
        let revision: i64 = txn.query_one(&bump, &[]).await.map_err(f)?.get(0);
        let stored = txn
            .query_opt(&current, &[&record.key])
            .await
            .map_err(f)?
            .map(|row| to_record(&row))
            .transpose()?
            .filter(|r| !r.expired_at(u64::try_from(now).unwrap_or(0)));
        check_version(&record.key, stored.as_ref(), options.if_version)?;
        record.version = u64::try_from(revision).unwrap_or(0);
        let metadata = metadata_text(&record.metadata);
        let expiry = record.expiry.map(|e| i64::try_from(e).unwrap_or(i64::MAX));
        txn.execute(
            &upsert,
            &[&record.key, &record.value, &metadata, &expiry, &revision],
        )
        .await
        .map_err(f)?;
        txn.execute(
            &log,
            &[
                &revision,
                &scope.table,
                &record.key,
                &kind_code(EventKind::Put),
                &record.value,
                &metadata,
                &expiry,
                &revision,
            ],
        )
        .await
        .map_err(f)?;
        txn.execute(&trim, &[&(revision - self.history)])
            .await
            .map_err(f)?;
        txn.execute(&notify, &[&CHANNEL, db]).await.map_err(f)?;
        txn.commit().await.map_err(f)?;
        Ok(record.version)
    }

    async fn change_statements(
        &self,
        client: &deadpool_postgres::Client,
        db: &str,
    ) -> Result<
        (
            tokio_postgres::Statement,
            tokio_postgres::Statement,
            tokio_postgres::Statement,
        ),
        StoreError,
    > {
        let f = |e: tokio_postgres::Error| pg_error(db, "log a change", &e);
        let d = quote(db);
        let log = client
            .prepare_cached(&format!(
                "INSERT INTO {d}.{CHANGES} (revision, tbl, key, kind, value, metadata, expiry, version) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            ))
            .await
            .map_err(f)?;
        let trim = client
            .prepare_cached(&format!("DELETE FROM {d}.{CHANGES} WHERE revision <= $1"))
            .await
            .map_err(f)?;
        // PostgreSQL only: CockroachDB has no NOTIFY (its watch would poll).
        let notify = client
            .prepare_cached("SELECT pg_notify($1, $2)")
            .await
            .map_err(f)?;
        Ok((log, trim, notify))
    }

    async fn delete(
        &self,
        scope: &Scope,
        key: &str,
        if_version: Option<u64>,
    ) -> Result<bool, StoreError> {
        check_scope(scope)?;
        self.limits.check_key(key)?;
        let now = self.now();
        let db = &scope.database;
        let f = |e: tokio_postgres::Error| pg_error(db, "delete", &e);
        let (d, t) = (quote(db), quote(&scope.table));
        let mut client = self.client(db).await?;
        let bump = match client
            .prepare_cached(&format!(
                "UPDATE {d}.{META} SET revision = revision + 1 WHERE id = 1 RETURNING revision"
            ))
            .await
        {
            Ok(s) => s,
            Err(e) if missing(&e) => {
                return check_version(key, None, if_version).map(|()| false);
            }
            Err(e) => return Err(f(e)),
        };
        let remove = match client
            .prepare_cached(&format!(
                "DELETE FROM {d}.{t} WHERE key = $1 RETURNING key, value, metadata, expiry, version"
            ))
            .await
        {
            Ok(s) => s,
            Err(e) if missing(&e) => {
                return check_version(key, None, if_version).map(|()| false);
            }
            Err(e) => return Err(f(e)),
        };
        let (log, trim, notify) = self.change_statements(&client, db).await?;
        let txn = client.transaction().await.map_err(f)?;
        let revision: i64 = txn.query_one(&bump, &[]).await.map_err(f)?.get(0);
        let old = txn
            .query_opt(&remove, &[&key])
            .await
            .map_err(f)?
            .map(|row| to_record(&row))
            .transpose()?;
        let live = old
            .as_ref()
            .filter(|r| !r.expired_at(u64::try_from(now).unwrap_or(0)));
        check_version(key, live, if_version)?;
        let Some(old) = live else {
            // Nothing (live) to delete: roll back, the revision is not spent.
            return Ok(false);
        };
        let metadata = metadata_text(&old.metadata);
        let expiry = old.expiry.map(|e| i64::try_from(e).unwrap_or(i64::MAX));
        let version = i64::try_from(old.version).unwrap_or(i64::MAX);
        txn.execute(
            &log,
            &[
                &revision,
                &scope.table,
                &key,
                &kind_code(EventKind::Delete),
                &old.value,
                &metadata,
                &expiry,
                &version,
            ],
        )
        .await
        .map_err(f)?;
        txn.execute(&trim, &[&(revision - self.history)])
            .await
            .map_err(f)?;
        txn.execute(&notify, &[&CHANNEL, db]).await.map_err(f)?;
        txn.commit().await.map_err(f)?;
        Ok(true)
    }

    /// Removes up to `max` expired records of the tables this process knows, through each
    /// table's expiry index; each removal is a change at its own revision.
    async fn expire(&self, max: usize) -> Result<Vec<String>, StoreError> {
        let now = self.now();
        let mut changed = Vec::new();
        let limit = i64::try_from(max).unwrap_or(i64::MAX);
        for (database, table) in self.tables() {
            let f = |e: tokio_postgres::Error| pg_error(&database, "sweep", &e);
            let (d, t) = (quote(&database), quote(&table));
            let mut client = self.client(&database).await?;
            let due = client
                .prepare_cached(&format!("SELECT 1 FROM {d}.{t} WHERE expiry <= $1 LIMIT 1"))
                .await
                .map_err(f)?;
            if client.query_opt(&due, &[&now]).await.map_err(f)?.is_none() {
                continue;
            }
            let lock = client
                .prepare_cached(&format!(
                    "SELECT revision FROM {d}.{META} WHERE id = 1 FOR UPDATE"
                ))
                .await
                .map_err(f)?;
            let remove = client
                .prepare_cached(&format!(
                    "DELETE FROM {d}.{t} WHERE key IN (SELECT key FROM {d}.{t} WHERE expiry <= $1 \
                     ORDER BY expiry LIMIT $2) RETURNING key, value, metadata, expiry, version"
                ))
                .await
                .map_err(f)?;
            let set = client
                .prepare_cached(&format!("UPDATE {d}.{META} SET revision = $1 WHERE id = 1"))
                .await
                .map_err(f)?;
            let (log, trim, notify) = self.change_statements(&client, &database).await?;
            let txn = client.transaction().await.map_err(f)?;
            let mut revision: i64 = txn.query_one(&lock, &[]).await.map_err(f)?.get(0);
            let rows = txn.query(&remove, &[&now, &limit]).await.map_err(f)?;
            for row in &rows {
                let old = to_record(row)?;
                revision += 1;
                let metadata = metadata_text(&old.metadata);
                let expiry = old.expiry.map(|e| i64::try_from(e).unwrap_or(i64::MAX));
                let version = i64::try_from(old.version).unwrap_or(i64::MAX);
                txn.execute(
                    &log,
                    &[
                        &revision,
                        &table,
                        &old.key,
                        &kind_code(EventKind::Expired),
                        &old.value,
                        &metadata,
                        &expiry,
                        &version,
                    ],
                )
                .await
                .map_err(f)?;
            }
            txn.execute(&set, &[&revision]).await.map_err(f)?;
            txn.execute(&trim, &[&(revision - self.history)])
                .await
                .map_err(f)?;
            txn.execute(&notify, &[&CHANNEL, &database])
                .await
                .map_err(f)?;
            txn.commit().await.map_err(f)?;
            if !rows.is_empty() {
                changed.push(database.clone());
            }
        }
        Ok(changed)
    }

    /// The database's changes from `from` on; `Compacted` when older than the history.
    async fn changes(&self, database: &str, from: u64) -> Result<Vec<StoreEvent>, StoreError> {
        self.ensure_database(database).await?;
        let f = |e: tokio_postgres::Error| pg_error(database, "read changes", &e);
        let d = quote(database);
        let client = self.client(database).await?;
        let head = client
            .prepare_cached(&format!(
                "SELECT m.revision, (SELECT min(revision) FROM {d}.{CHANGES}) FROM {d}.{META} m WHERE m.id = 1"
            ))
            .await
            .map_err(f)?;
        let row = client.query_one(&head, &[]).await.map_err(f)?;
        let revision = u64::try_from(row.get::<_, i64>(0)).unwrap_or(0);
        let oldest = row
            .get::<_, Option<i64>>(1)
            .map_or(revision + 1, |r| u64::try_from(r).unwrap_or(0));
        if from < oldest && from <= revision && from > 0 {
            return Err(StoreError::Compacted {
                database: database.to_owned(),
                requested: from,
                oldest,
            });
        }
        let list = client
            .prepare_cached(&format!(
                "SELECT revision, tbl, key, kind, value, metadata, expiry, version FROM {d}.{CHANGES} \
                 WHERE revision >= $1 ORDER BY revision"
            ))
            .await
            .map_err(f)?;
        let from = i64::try_from(from).unwrap_or(i64::MAX);
        let rows = client.query(&list, &[&from]).await.map_err(f)?;
        rows.iter()
            .map(|row| {
                let key: String = row.get(2);
                let record = Record {
                    key: key.clone(),
                    value: row.get(4),
                    metadata: parse_metadata(row.get(5)),
                    expiry: row
                        .get::<_, Option<i64>>(6)
                        .map(|e| u64::try_from(e).unwrap_or(0)),
                    version: u64::try_from(row.get::<_, i64>(7)).unwrap_or(0),
                };
                Ok(StoreEvent {
                    revision: u64::try_from(row.get::<_, i64>(0)).unwrap_or(0),
                    table: row.get(1),
                    key,
                    kind: kind_of(row.get(3)),
                    record,
                })
            })
            .collect()
    }

    async fn revision(&self, database: &str) -> Result<u64, StoreError> {
        check_name("database", database)?;
        let client = self.client(database).await?;
        let f = |e: tokio_postgres::Error| pg_error(database, "read the revision", &e);
        let statement = match client
            .prepare_cached(&format!(
                "SELECT revision FROM {}.{META} WHERE id = 1",
                quote(database)
            ))
            .await
        {
            Ok(s) => s,
            Err(e) if missing(&e) => return Ok(0),
            Err(e) => return Err(f(e)),
        };
        let row = client.query_opt(&statement, &[]).await.map_err(f)?;
        Ok(row.map_or(0, |r| u64::try_from(r.get::<_, i64>(0)).unwrap_or(0)))
    }
}

fn kind_code(kind: EventKind) -> i16 {
    match kind {
        EventKind::Put => 0,
        EventKind::Delete => 1,
        EventKind::Expired => 2,
    }
}

fn kind_of(code: i16) -> EventKind {
    match code {
        1 => EventKind::Delete,
        2 => EventKind::Expired,
        _ => EventKind::Put,
    }
}

fn metadata_text(metadata: &Metadata) -> String {
    serde_json::to_string(metadata).unwrap_or_else(|_| "{}".to_owned())
}

fn parse_metadata(text: &str) -> Metadata {
    serde_json::from_str(text).unwrap_or_default()
}

fn to_record(row: &Row) -> Result<Record, StoreError> {
    Ok(Record {
        key: row.get(0),
        value: row.get(1),
        metadata: parse_metadata(row.get(2)),
        expiry: row
            .get::<_, Option<i64>>(3)
            .map(|e| u64::try_from(e).unwrap_or(0)),
        version: u64::try_from(row.get::<_, i64>(4)).unwrap_or(0),
    })
}

impl Reader for PgEngine {
    fn read<'a>(
        &'a self,
        scope: &'a Scope,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Record>, StoreError>> {
        Box::pin(PgEngine::read(self, scope, key))
    }

    fn scan<'a>(
        &'a self,
        scope: &'a Scope,
        query: &'a Query,
    ) -> BoxFuture<'a, Result<Vec<Record>, StoreError>> {
        Box::pin(PgEngine::scan(self, scope, query))
    }
}

/// The PostgreSQL store actor: requests run as tasks on the pool; the actor keeps the watchers
/// and feeds them from the change tables, in revision order.
#[derive(Debug)]
pub struct PostgresActor {
    engine: Arc<PgEngine>,
    config: PostgresConfig,
    watchers: Watchers,
    /// Per watched database, the last revision told to watchers.
    seen: HashMap<String, u64>,
    /// The connection that listens for notifications (its messages are forwarded to the
    /// actor); dropped when lost, made again at the next tick.
    listener: Option<tokio_postgres::Client>,
}

impl PostgresActor {
    /// Connects the listening connection, if it is not up.
    async fn listen(&mut self, ctx: &mut Context<Self>) {
        if self.listener.as_ref().is_some_and(|c| !c.is_closed()) {
            return;
        }
        self.listener = None;
        let connected = tokio::time::timeout(
            self.config.connect_timeout,
            tokio_postgres::connect(&self.config.url, NoTls),
        )
        .await;
        let (client, mut connection) = match connected {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "store cannot listen for changes yet");
                return;
            }
            Err(_) => return,
        };
        let messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        ctx.forward(messages, |message| match message {
            Ok(AsyncMessage::Notification(n)) => {
                Some(command(Command::Changed(n.payload().to_owned())))
            }
            _ => None,
        });
        if let Err(e) = client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
            tracing::debug!(error = %e, "store cannot listen for changes yet");
            return;
        }
        self.listener = Some(client);
    }

    /// Tells watchers of `database` what changed since they were last told.
    async fn poll(&mut self, database: &str) {
        let Some(&seen) = self.seen.get(database) else {
            return;
        };
        match self.engine.changes(database, seen + 1).await {
            Ok(events) => {
                for event in events {
                    if event.revision > seen {
                        self.seen.insert(database.to_owned(), event.revision);
                        self.watchers.publish(database, &event);
                    }
                }
            }
            Err(e) => tracing::debug!(%database, error = %e, "cannot read the store's changes"),
        }
    }

    async fn watch(
        &mut self,
        scope: Scope,
        prefix: String,
        from_revision: Option<u64>,
        events: StreamSender<StoreEvent>,
    ) {
        if let Err(e) = check_scope(&scope) {
            events.cancel(&e.to_string());
            return;
        }
        let database = scope.database.clone();
        if !self.seen.contains_key(&database) {
            if let Err(e) = self.engine.ensure_database(&database).await {
                events.cancel(&e.to_string());
                return;
            }
            match self.engine.revision(&database).await {
                Ok(revision) => {
                    self.seen.insert(database.clone(), revision);
                }
                Err(e) => {
                    events.cancel(&e.to_string());
                    return;
                }
            }
        }
        // Bring the other watchers up to date first, so the replay ends where live events start.
        self.poll(&database).await;
        let seen = self.seen.get(&database).copied().unwrap_or(0);
        let replay = match from_revision {
            Some(from) => match self.engine.changes(&database, from).await {
                Ok(events) => events.into_iter().filter(|e| e.revision <= seen).collect(),
                Err(e) => {
                    events.cancel(&e.to_string());
                    return;
                }
            },
            None => Vec::new(),
        };
        self.watchers.watch(scope, prefix, replay, events);
    }
}

impl Actor for PostgresActor {
    type Msg = StoreMsg;

    async fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        ctx.tick(self.config.store.sweep_every, || command(Command::Sweep));
        self.listen(ctx).await;
        Ok(())
    }

    async fn handle(&mut self, ctx: &mut Context<Self>, msg: StoreMsg) -> Result<(), ActorError> {
        let engine = self.engine.clone();
        match msg {
            StoreMsg::Read { scope, key, reply } => {
                tokio::spawn(async move {
                    let _ = reply.send(engine.read(&scope, &key).await);
                });
            }
            StoreMsg::Scan {
                scope,
                query,
                reply,
            } => {
                tokio::spawn(async move {
                    let _ = reply.send(engine.scan(&scope, &query).await);
                });
            }
            StoreMsg::List {
                scope,
                query,
                reply,
            } => {
                tokio::spawn(async move {
                    let keys = engine
                        .scan(&scope, &query)
                        .await
                        .map(|records| records.into_iter().map(|r| r.key).collect());
                    let _ = reply.send(keys);
                });
            }
            StoreMsg::Write {
                scope,
                record,
                options,
                reply,
            } => {
                let me = ctx.addr();
                tokio::spawn(async move {
                    let result = engine.write(&scope, record, &options).await;
                    if result.is_ok() {
                        let _ = me.send(command(Command::Changed(scope.database)));
                    }
                    let _ = reply.send(result);
                });
            }
            StoreMsg::Delete {
                scope,
                key,
                if_version,
                reply,
            } => {
                let me = ctx.addr();
                tokio::spawn(async move {
                    let result = engine.delete(&scope, &key, if_version).await;
                    if matches!(result, Ok(true)) {
                        let _ = me.send(command(Command::Changed(scope.database)));
                    }
                    let _ = reply.send(result);
                });
            }
            StoreMsg::Watch {
                scope,
                prefix,
                from_revision,
                events,
            } => self.watch(scope, prefix, from_revision, events).await,
            StoreMsg::Revision { scope, reply } => {
                tokio::spawn(async move {
                    let _ = reply.send(engine.revision(&scope.database).await);
                });
            }
            StoreMsg::Local(StoreCommand(Command::Sweep)) => {
                match self.engine.expire(self.config.store.sweep_batch).await {
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "sweeping expired records failed"),
                }
                self.listen(ctx).await;
                let watched: Vec<String> = self.seen.keys().cloned().collect();
                for database in watched {
                    if self.watchers.watches(&database) {
                        self.poll(&database).await;
                    } else {
                        self.seen.remove(&database);
                    }
                }
            }
            StoreMsg::Local(StoreCommand(Command::Changed(database))) => {
                self.poll(&database).await;
            }
            StoreMsg::Local(StoreCommand(Command::Engine(reply))) => {
                let _ = reply.send(self.engine.clone() as Arc<dyn Reader>);
            }
        }
        Ok(())
    }
}
