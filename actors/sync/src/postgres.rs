//! The PostgreSQL backend: a leases table, tokens from a sequence, expiry by the database's
//! clock. The actor is glue: each request is one statement; waiters and observers are polled.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use deadpool_postgres::{Pool, Runtime};
use micro_runtime::{Actor, ActorError, ChildSpec, Context, Node, Reply, StreamSender};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_postgres::NoTls;

use crate::protocol::{Command, SyncCommand, tick};
use crate::{Lease, SYNC_NAME, Sync, SyncError, SyncMsg};

const ENGINE: &str = "postgres";

/// States queued for one observer before it counts as stuck and is dropped.
const OBSERVER_QUEUE: usize = 1024;

/// Where and how the PostgreSQL backend keeps its leases.
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    url: String,
    table: String,
    pool_size: usize,
    poll_every: Duration,
}

impl PostgresConfig {
    /// The database at `url` (`postgres://user@host:port/db`), table `micro_sync_leases`.
    pub fn new(url: impl Into<String>) -> Self {
        PostgresConfig {
            url: url.into(),
            table: "micro_sync_leases".to_owned(),
            pool_size: 4,
            poll_every: Duration::from_millis(50),
        }
    }

    /// The leases table's name (may be schema-qualified, `schema.table`); the token sequence is
    /// `<table>_token`. Letters, digits, `_` and one `.` only.
    #[must_use]
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// How many connections the pool keeps (4 by default).
    #[must_use]
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size.max(1);
        self
    }

    /// How often waiters retry and observers are refreshed (50 ms by default).
    #[must_use]
    pub fn poll_every(mut self, period: Duration) -> Self {
        self.poll_every = period;
        self
    }

    fn valid_table(&self) -> Result<(), SyncError> {
        let ok = !self.table.is_empty()
            && self.table.split('.').count() <= 2
            && self.table.split('.').all(|part| {
                !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            });
        if ok {
            Ok(())
        } else {
            Err(SyncError::Invalid(format!("table name {:?}", self.table)))
        }
    }
}

/// The SQL the backend issues (public so the bench can issue the same statements raw).
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct Statements {
    /// Creates the table and the sequence.
    pub create: String,
    /// `$1` name, `$2` holder, `$3` TTL in ms → the grant's token (no row: held).
    pub acquire: String,
    /// `$1` name, `$2` token, `$3` TTL in ms → 1 row updated, or 0: not held.
    pub renew: String,
    /// `$1` name, `$2` token → 1 row expired now, or 0: not held.
    pub release: String,
    /// `$1` name → holder, token, TTL left in ms.
    pub holder: String,
}

impl Statements {
    /// The statements for `table`.
    pub fn new(table: &str) -> Self {
        let seq = format!("{table}_token");
        Statements {
            create: format!(
                "CREATE TABLE IF NOT EXISTS {table} (name text PRIMARY KEY, holder text NOT NULL, \
                 token bigint NOT NULL, expires timestamptz NOT NULL); \
                 CREATE SEQUENCE IF NOT EXISTS {seq}"
            ),
            // The token is drawn under the row's lock (the update path), never below the last
            // one: a value drawn before waiting on a concurrent insert could be lower. Released
            // rows stay (expired), so a name's last token is always there to compare with.
            acquire: format!(
                "INSERT INTO {table} AS l (name, holder, token, expires) \
                 VALUES ($1, $2, nextval('{seq}'), now() + $3::bigint * interval '1 millisecond') \
                 ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, \
                 token = GREATEST(nextval('{seq}'), l.token + 1), \
                 expires = EXCLUDED.expires WHERE l.expires <= now() RETURNING l.token"
            ),
            renew: format!(
                "UPDATE {table} SET expires = now() + $3::bigint * interval '1 millisecond' \
                 WHERE name = $1 AND token = $2 AND expires > now()"
            ),
            release: format!(
                "UPDATE {table} SET expires = now() WHERE name = $1 AND token = $2 AND expires > now()"
            ),
            holder: format!(
                "SELECT holder, token, (extract(epoch FROM expires - now()) * 1000)::bigint \
                 FROM {table} WHERE name = $1 AND expires > now()"
            ),
        }
    }
}

/// The pool and the statements: what a request needs, cloned out of the actor before it awaits.
#[derive(Clone)]
struct Db {
    pool: Pool,
    sql: Statements,
}

impl Db {
    async fn try_acquire(
        &self,
        name: &str,
        holder: &str,
        ttl_ms: u64,
    ) -> Result<Option<u64>, SyncError> {
        let client = self.pool.get().await.map_err(pg)?;
        let stmt = client.prepare_cached(&self.sql.acquire).await.map_err(pg)?;
        let row = client
            .query_opt(&stmt, &[&name, &holder, &ms(ttl_ms)])
            .await
            .map_err(pg)?;
        Ok(row.map(|r| r.get::<_, i64>(0).unsigned_abs()))
    }

    async fn change(
        &self,
        sql: &str,
        name: &str,
        token: u64,
        ttl_ms: Option<u64>,
    ) -> Result<(), SyncError> {
        let client = self.pool.get().await.map_err(pg)?;
        let stmt = client.prepare_cached(sql).await.map_err(pg)?;
        let token_param = i64::try_from(token).map_err(|_| SyncError::NotHeld {
            name: name.to_owned(),
            token,
        })?;
        let rows = match ttl_ms {
            Some(ttl) => {
                client
                    .execute(&stmt, &[&name, &token_param, &ms(ttl)])
                    .await
            }
            None => client.execute(&stmt, &[&name, &token_param]).await,
        }
        .map_err(pg)?;
        if rows == 1 {
            Ok(())
        } else {
            Err(SyncError::NotHeld {
                name: name.to_owned(),
                token,
            })
        }
    }

    async fn holder(&self, name: &str) -> Result<Option<Lease>, SyncError> {
        let client = self.pool.get().await.map_err(pg)?;
        let stmt = client.prepare_cached(&self.sql.holder).await.map_err(pg)?;
        let row = client.query_opt(&stmt, &[&name]).await.map_err(pg)?;
        Ok(row.map(|r| Lease {
            name: name.to_owned(),
            holder: r.get(0),
            token: r.get::<_, i64>(1).unsigned_abs(),
            ttl_ms: r.get::<_, i64>(2).unsigned_abs(),
            waited_ms: 0,
        }))
    }
}

/// The last state told to a name's observers, and their queues.
type Observed = (Option<Lease>, Vec<mpsc::Sender<Option<Lease>>>);

struct Waiter {
    holder: String,
    ttl_ms: u64,
    since: Instant,
    deadline: Instant,
    reply: Reply<Result<Lease, SyncError>>,
}

/// The PostgreSQL sync actor. Its guarantees are in the crate docs.
pub struct PostgresSync {
    config: PostgresConfig,
    sql: Statements,
    db: Option<Db>,
    waiters: HashMap<String, VecDeque<Waiter>>,
    observers: HashMap<String, Observed>,
}

impl std::fmt::Debug for PostgresSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSync")
            .field("table", &self.config.table)
            .field("waiting", &self.waiters.len())
            .finish_non_exhaustive()
    }
}

fn pg(e: impl std::fmt::Display) -> SyncError {
    SyncError::backend(ENGINE, e)
}

fn ms(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl PostgresSync {
    /// A sync actor on the database `config` names (it connects when it starts).
    pub fn new(config: PostgresConfig) -> Self {
        let sql = Statements::new(&config.table);
        PostgresSync {
            config,
            sql,
            db: None,
            waiters: HashMap::new(),
            observers: HashMap::new(),
        }
    }

    /// A child spec named `"sync"`.
    pub fn spec(config: PostgresConfig) -> ChildSpec<PostgresSync> {
        ChildSpec::new(move || PostgresSync::new(config.clone())).named(SYNC_NAME)
    }

    /// Starts a PostgreSQL sync actor on `node` (supervised, named and exposed as `"sync"`);
    /// fails if the database cannot be reached or the table cannot be created.
    pub async fn start(node: &Node, config: PostgresConfig) -> Result<Sync, SyncError> {
        config.valid_table()?;
        let addr = node.spawn(PostgresSync::spec(config)).await?;
        node.expose::<SyncMsg>(SYNC_NAME)?;
        Ok(Sync::new(addr))
    }

    fn db(&self) -> Result<Db, SyncError> {
        self.db.clone().ok_or_else(|| pg("not connected"))
    }

    /// Serves the first waiter of each name if the name is free, and times out late ones.
    async fn serve_waiters(&mut self, only: Option<&str>) {
        let Ok(db) = self.db() else { return };
        let names: Vec<String> = match only {
            Some(name) => vec![name.to_owned()],
            None => self.waiters.keys().cloned().collect(),
        };
        for name in names {
            let Some(mut queue) = self.waiters.remove(&name) else {
                continue;
            };
            let now = Instant::now();
            let (late, kept): (VecDeque<Waiter>, VecDeque<Waiter>) =
                queue.into_iter().partition(|w| w.deadline <= now);
            queue = kept;
            for w in late {
                let waited_ms = u64::try_from((now - w.since).as_millis()).unwrap_or(u64::MAX);
                let _ = w.reply.send(Err(SyncError::Timeout {
                    name: name.clone(),
                    waited_ms,
                }));
            }
            while let Some(first) = queue.front() {
                match db.try_acquire(&name, &first.holder, first.ttl_ms).await {
                    Ok(Some(token)) => {
                        let Some(w) = queue.pop_front() else { break };
                        let waited_ms =
                            u64::try_from(w.since.elapsed().as_millis()).unwrap_or(u64::MAX);
                        let lease = Lease {
                            name: name.clone(),
                            holder: w.holder,
                            token,
                            ttl_ms: w.ttl_ms,
                            waited_ms,
                        };
                        if w.reply.send(Ok(lease)).is_err() {
                            let _ = db.change(&db.sql.release, &name, token, None).await;
                            continue;
                        }
                        break;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(%name, error = %e, "acquiring for a waiter failed");
                        break;
                    }
                }
            }
            if !queue.is_empty() {
                self.waiters.insert(name, queue);
            }
        }
    }

    async fn refresh_observers(&mut self) {
        let Ok(db) = self.db() else { return };
        let names: Vec<String> = self.observers.keys().cloned().collect();
        for name in names {
            let Ok(state) = db.holder(&name).await else {
                continue;
            };
            if let Some((last, senders)) = self.observers.get_mut(&name) {
                let same = match (&*last, &state) {
                    (Some(a), Some(b)) => a.token == b.token,
                    (None, None) => true,
                    _ => false,
                };
                if !same {
                    *last = state.clone();
                    senders.retain(|s| s.try_send(state.clone()).is_ok());
                }
                if senders.is_empty() {
                    self.observers.remove(&name);
                }
            }
        }
    }

    async fn observe(&mut self, name: String, mut events: StreamSender<Option<Lease>>) {
        let (queue, mut rx) = mpsc::channel::<Option<Lease>>(OBSERVER_QUEUE);
        let state = match self.db() {
            Ok(db) => db.holder(&name).await.unwrap_or(None),
            Err(_) => None,
        };
        let _ = queue.try_send(state.clone());
        tokio::spawn(async move {
            while let Some(state) = rx.recv().await {
                if events.send(state).await.is_err() {
                    return;
                }
            }
            let _ = events.finish().await;
        });
        let entry = self
            .observers
            .entry(name)
            .or_insert_with(|| (state, Vec::new()));
        entry.1.push(queue);
    }
}

impl Actor for PostgresSync {
    type Msg = SyncMsg;

    async fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        self.config
            .valid_table()
            .map_err(|e| ActorError::from(e.to_string()))?;
        let mut cfg = deadpool_postgres::Config::new();
        cfg.url = Some(self.config.url.clone());
        cfg.pool = Some(deadpool_postgres::PoolConfig::new(self.config.pool_size));
        let pool = cfg
            .create_pool(Some(Runtime::Tokio1), NoTls)
            .map_err(|e| ActorError::from(format!("postgres pool: {e}")))?;
        let client = pool
            .get()
            .await
            .map_err(|e| ActorError::from(format!("postgres connect: {e}")))?;
        // Two nodes creating the table at once: serialise on an advisory lock.
        let create = format!(
            "SELECT pg_advisory_lock(7170017); {} ; SELECT pg_advisory_unlock(7170017)",
            self.sql.create
        );
        client
            .batch_execute(&create)
            .await
            .map_err(|e| ActorError::from(format!("postgres create {}: {e}", self.config.table)))?;
        drop(client);
        self.db = Some(Db {
            pool,
            sql: self.sql.clone(),
        });
        ctx.tick(self.config.poll_every, tick);
        Ok(())
    }

    async fn handle(&mut self, _ctx: &mut Context<Self>, msg: SyncMsg) -> Result<(), ActorError> {
        // Connected in `started`, before any message is handled.
        let db = self.db()?;
        match msg {
            SyncMsg::Acquire {
                name,
                holder,
                ttl_ms,
                wait_ms,
                reply,
            } => {
                if name.is_empty() || ttl_ms == 0 {
                    let _ = reply.send(Err(SyncError::Invalid(
                        "a lease needs a name and a TTL above zero".to_owned(),
                    )));
                    return Ok(());
                }
                let queued = self.waiters.get(&name).is_some_and(|q| !q.is_empty());
                let now = Instant::now();
                let outcome = if queued {
                    Ok(None)
                } else {
                    db.try_acquire(&name, &holder, ttl_ms).await
                };
                match outcome {
                    Ok(Some(token)) => {
                        let lease = Lease {
                            name: name.clone(),
                            holder,
                            token,
                            ttl_ms,
                            waited_ms: 0,
                        };
                        if reply.send(Ok(lease)).is_err() {
                            let _ = db.change(&db.sql.release, &name, token, None).await;
                        }
                        if self.observers.contains_key(&name) {
                            self.refresh_observers().await;
                        }
                    }
                    Ok(None) if wait_ms == 0 => {
                        let _ = reply.send(Err(SyncError::Timeout { name, waited_ms: 0 }));
                    }
                    Ok(None) => self.waiters.entry(name).or_default().push_back(Waiter {
                        holder,
                        ttl_ms,
                        since: now,
                        deadline: now + Duration::from_millis(wait_ms),
                        reply,
                    }),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            SyncMsg::Renew {
                name,
                token,
                ttl_ms,
                reply,
            } => {
                let sql = db.sql.renew.clone();
                let _ = reply.send(db.change(&sql, &name, token, Some(ttl_ms)).await);
            }
            SyncMsg::Release { name, token, reply } => {
                let sql = db.sql.release.clone();
                let result = db.change(&sql, &name, token, None).await;
                let _ = reply.send(result);
                if self.waiters.contains_key(&name) {
                    self.serve_waiters(Some(&name)).await;
                }
                if self.observers.contains_key(&name) {
                    self.refresh_observers().await;
                }
            }
            SyncMsg::Holder { name, reply } => {
                let _ = reply.send(db.holder(&name).await);
            }
            SyncMsg::Observe { name, events } => self.observe(name, events).await,
            SyncMsg::Local(SyncCommand(Command::Tick)) => {
                if !self.waiters.is_empty() {
                    self.serve_waiters(None).await;
                }
                if !self.observers.is_empty() {
                    self.refresh_observers().await;
                }
            }
        }
        Ok(())
    }
}
