//! The store actor: glue between the protocol and an engine. It validates requests, resolves
//! TTLs against its clock, applies writes, deletes and sweeps, and tells watchers of each change
//! in revision order. Local handles read the engine directly (see [`Direct`]).

use std::sync::Arc;
use std::time::Duration;

use micro_runtime::{Actor, ActorError, ChildSpec, Context, Node, StreamSender};
use tokio::sync::mpsc;

use crate::engine::{Clock, Direct, Engine, Limits, check_scope};
use crate::memory::MemoryEngine;
use crate::protocol::{Command, StoreCommand, command};
use crate::{STORE_NAME, Scope, Store, StoreError, StoreEvent, StoreMsg};

/// Events queued for one watcher beyond its replay before it counts as too slow and its
/// stream is cancelled (it resumes from its last revision).
const WATCHER_QUEUE: usize = 4096;

/// How a store behaves, whatever its engine.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Limits on keys and values.
    pub limits: Limits,
    /// Changes kept per database for watchers that resume (`from_revision`).
    pub history: usize,
    /// How often expired records are swept.
    pub sweep_every: Duration,
    /// At most this many records removed per sweep.
    pub sweep_batch: usize,
    /// The store actor's mailbox capacity.
    pub mailbox: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            limits: Limits::default(),
            history: 10_000,
            sweep_every: Duration::from_millis(250),
            sweep_batch: 1_000,
            mailbox: 1 << 16,
        }
    }
}

/// The store actor, on any embedded engine ([`MemoryStore`], [`FileStore`).
#[derive(Debug)]
pub struct StoreActor {
    direct: Direct,
    config: StoreConfig,
    watchers: Watchers,
}

impl StoreActor {
    pub(crate) fn new(engine: Arc<dyn Engine>, clock: Clock, config: StoreConfig) -> Self {
        StoreActor {
            direct: Direct {
                engine,
                clock,
                limits: config.limits,
            },
            config,
            watchers: Watchers::default(),
        }
    }

    /// A child spec named `"store"` whose every incarnation uses `engine`.
    pub(crate) fn spec(engine: Arc<dyn Engine>, config: StoreConfig) -> ChildSpec<StoreActor> {
        let clock = Clock::new();
        let mailbox = config.mailbox;
        ChildSpec::new(move || StoreActor::new(engine.clone(), clock, config.clone()))
            .named(STORE_NAME)
            .mailbox(mailbox)
    }

    /// Spawns `spec` under the node's root, exposes it, and returns a local handle.
    pub(crate) async fn start(
        node: &Node,
        spec: ChildSpec<StoreActor>,
    ) -> Result<Store, StoreError> {
        node.spawn(spec).await?;
        node.expose::<StoreMsg>(STORE_NAME)?;
        Store::local(node).await
    }

    fn engine(&self) -> &dyn Engine {
        self.direct.engine.as_ref()
    }

    fn write(
        &mut self,
        scope: Scope,
        mut record: crate::Record,
        options: crate::WriteOptions,
    ) -> Result<u64, StoreError> {
        check_scope(&scope)?;
        self.config.limits.check_record(&record)?;
        let now = self.direct.clock.now();
        if let Some(ttl) = options.ttl_ms {
            record.expiry = Some(now.saturating_add(ttl));
        }
        let event = self
            .engine()
            .write(&scope, record, options.if_version, now)?;
        let version = event.record.version;
        self.watchers.publish(&scope.database, &event);
        Ok(version)
    }

    fn delete(
        &mut self,
        scope: Scope,
        key: &str,
        if_version: Option<u64>,
    ) -> Result<bool, StoreError> {
        check_scope(&scope)?;
        self.config.limits.check_key(key)?;
        let now = self.direct.clock.now();
        match self.engine().delete(&scope, key, if_version, now)? {
            Some(event) => {
                self.watchers.publish(&scope.database, &event);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn sweep(&mut self) {
        let now = self.direct.clock.now();
        match self.engine().expire(now, self.config.sweep_batch) {
            Ok(events) => {
                for (database, event) in events {
                    tracing::debug!(%database, table = %event.table, key = %event.key, "record expired");
                    self.watchers.publish(&database, &event);
                }
            }
            Err(e) => tracing::warn!(error = %e, "sweeping expired records failed"),
        }
    }

    fn watch(
        &mut self,
        scope: Scope,
        prefix: String,
        from_revision: Option<u64>,
        events: StreamSender<StoreEvent>,
    ) {
        let replay = match check_scope(&scope).and_then(|()| match from_revision {
            Some(from) => self.engine().changes(&scope.database, from),
            None => Ok(Vec::new()),
        }) {
            Ok(changes) => changes,
            Err(e) => {
                events.cancel(&e.to_string());
                return;
            }
        };
        let replay: Vec<StoreEvent> = replay
            .into_iter()
            .filter(|e| e.table == scope.table && e.key.starts_with(&prefix))
            .collect();
        let (queue, rx) = mpsc::channel(replay.len() + WATCHER_QUEUE);
        for event in replay {
            // Room was made for the whole replay.
            let _ = queue.try_send(event);
        }
        tokio::spawn(feed(rx, events));
        self.watchers.add(Watcher {
            scope,
            prefix,
            queue,
        });
    }
}

/// Feeds one watcher's stream from its queue, so a slow watcher never holds the store up. The
/// queue closes when the store drops the watcher (it fell behind) or stops: the stream is then
/// cancelled, and the watcher resumes from its last revision.
async fn feed(mut rx: mpsc::Receiver<StoreEvent>, mut events: StreamSender<StoreEvent>) {
    while let Some(event) = rx.recv().await {
        if events.send(event).await.is_err() {
            return;
        }
    }
    events.cancel("the store ended this watch (it fell behind, or the store stopped): resume from the last revision seen");
}

/// The watchers and what each wants. Never waits: a watcher whose queue is full is dropped.
#[derive(Debug, Default)]
struct Watchers {
    list: Vec<Watcher>,
}

#[derive(Debug)]
struct Watcher {
    scope: Scope,
    prefix: String,
    queue: mpsc::Sender<StoreEvent>,
}

impl Watchers {
    fn add(&mut self, watcher: Watcher) {
        self.list.push(watcher);
    }

    fn publish(&mut self, database: &str, event: &StoreEvent) {
        self.list.retain(|w| {
            if w.scope.database != database
                || w.scope.table != event.table
                || !event.key.starts_with(&w.prefix)
            {
                return !w.queue.is_closed();
            }
            match w.queue.try_send(event.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(%database, table = %event.table, "dropping a store watcher that fell behind");
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
    }
}

impl Actor for StoreActor {
    type Msg = StoreMsg;

    async fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        ctx.tick(self.config.sweep_every, || command(Command::Sweep));
        // Whatever expired while the store was down goes now.
        self.sweep();
        Ok(())
    }

    async fn handle(&mut self, _ctx: &mut Context<Self>, msg: StoreMsg) -> Result<(), ActorError> {
        match msg {
            StoreMsg::Read { scope, key, reply } => {
                let _ = reply.send(self.direct.read(&scope, &key));
            }
            StoreMsg::Scan {
                scope,
                query,
                reply,
            } => {
                let _ = reply.send(self.direct.scan(&scope, &query));
            }
            StoreMsg::List {
                scope,
                query,
                reply,
            } => {
                let _ = reply.send(self.direct.list(&scope, &query));
            }
            StoreMsg::Write {
                scope,
                record,
                options,
                reply,
            } => {
                let _ = reply.send(self.write(scope, record, options));
            }
            StoreMsg::Delete {
                scope,
                key,
                if_version,
                reply,
            } => {
                let _ = reply.send(self.delete(scope, &key, if_version));
            }
            StoreMsg::Watch {
                scope,
                prefix,
                from_revision,
                events,
            } => self.watch(scope, prefix, from_revision, events),
            StoreMsg::Revision { scope, reply } => {
                let revision = crate::engine::check_name("database", &scope.database)
                    .and_then(|()| self.engine().revision(&scope.database));
                let _ = reply.send(revision);
            }
            StoreMsg::Local(StoreCommand(Command::Sweep)) => self.sweep(),
            StoreMsg::Local(StoreCommand(Command::Engine(reply))) => {
                let _ = reply.send(self.direct.clone());
            }
        }
        Ok(())
    }
}

/// The memory backend: records in this process's memory, kept across restarts of the store
/// actor (not of the node). The default store of a node.
#[derive(Debug, Clone, Copy)]
pub struct MemoryStore;

impl MemoryStore {
    /// A child spec for a memory store named `"store"`.
    pub fn spec(config: StoreConfig) -> ChildSpec<StoreActor> {
        let engine = Arc::new(MemoryEngine::new(config.history));
        StoreActor::spec(engine, config)
    }

    /// Starts a memory store on `node` (supervised under its root, exposed as `"store"`) and
    /// returns a local handle.
    ///
    /// ```
    /// use micro_store::{MemoryStore, StoreConfig};
    /// use micro_runtime::Node;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let node = Node::builder().start().await?;
    /// let store = MemoryStore::start(&node, StoreConfig::default()).await?;
    /// let orders = store.table("orders");
    /// orders.put("o-1", &42u32).await?;
    /// assert_eq!(orders.get::<u32>("o-1").await?, Some(42));
    /// node.shutdown().await?;
    /// # Ok(()) }
    /// ```
    pub async fn start(node: &Node, config: StoreConfig) -> Result<Store, StoreError> {
        StoreActor::start(node, MemoryStore::spec(config)).await
    }
}
