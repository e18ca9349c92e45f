//! The config actor: glue around [`Layers`] and [`Watches`] (the merge and who is told what)
//! and [`Debounce`] (when to re-read a file), owning the file watchers and remote sources.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use micro_runtime::{Actor, ActorError, ChildSpec, Context, Node, StreamSender};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::handle::CONFIG_NAME;
use crate::reload::Debounce;
use crate::source::{Kind, read_file};
use crate::tree::{Layers, Lookup, Watches, process_env};
use crate::{Config, ConfigError, ConfigMsg, Entry, Source, SourceError};

/// Updates queued for one watcher before it counts as stuck and is dropped.
const WATCHER_QUEUE: usize = 1024;

/// The first delay before a watched source whose watch ended is read again; it doubles to
/// [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// The actor's messages to itself.
#[derive(Debug)]
pub enum Internal {
    /// Something happened in the directory of file source `.0`.
    FileEvent(usize),
    /// Time to see whether a debounced file is due.
    Tick,
    /// A remote source (etcd, the store) has new contents, or failed.
    Remote(usize, Result<Value, String>),
}

/// Sets up a node's config actor: sources in merge order (later wins), then
/// [`start`](ConfigBuilder::start) or [`spec`](ConfigBuilder::spec).
#[derive(Debug, Clone)]
pub struct ConfigBuilder {
    sources: Vec<Source>,
    debounce: Duration,
}

impl Default for ConfigBuilder {
    fn default() -> Self {
        ConfigBuilder {
            sources: Vec::new(),
            debounce: Duration::from_millis(100),
        }
    }
}

impl ConfigBuilder {
    /// Adds a source above those added before (it wins over them).
    #[must_use]
    pub fn source(mut self, source: Source) -> Self {
        self.sources.push(source);
        self
    }

    /// Adds built-in values ([`Source::defaults`]).
    #[must_use]
    pub fn defaults(self, value: impl Serialize) -> Self {
        self.source(Source::defaults(value))
    }

    /// Adds a file ([`Source::file`]), hot-reloaded.
    #[must_use]
    pub fn file(self, path: impl Into<PathBuf>) -> Self {
        self.source(Source::file(path))
    }

    /// Adds environment variables under a prefix ([`Source::env`]).
    #[must_use]
    pub fn env(self, prefix: impl Into<String>) -> Self {
        self.source(Source::env(prefix))
    }

    /// Adds `a.b=c` overrides ([`Source::overrides`]).
    #[must_use]
    pub fn overrides<S: Into<String>>(self, pairs: impl IntoIterator<Item = S>) -> Self {
        self.source(Source::overrides(pairs))
    }

    /// How long a file must stay quiet after a change before it is read again (100 ms by
    /// default), so an editor's several writes are read once.
    #[must_use]
    pub fn debounce(mut self, quiet: Duration) -> Self {
        self.debounce = quiet;
        self
    }

    /// A child spec for the config actor, named and exposed as `"config"`. A restarted actor
    /// reads its sources again.
    pub fn spec(self) -> Result<ChildSpec<ConfigActor>, ConfigError> {
        let sources = self
            .sources
            .into_iter()
            .map(Source::checked)
            .collect::<Result<Vec<_>, _>>()?;
        let debounce = self.debounce;
        Ok(ChildSpec::new(move || ConfigActor::new(sources.clone(), debounce)).named(CONFIG_NAME))
    }

    /// Reads the sources (a file that is missing or does not parse is an error here), starts
    /// the config actor on `node` under its root and returns a handle.
    pub async fn start(self, node: &Node) -> Result<Config, ConfigError> {
        let spec = self.clone().spec()?;
        // Read once here, so a bad source is a precise error rather than a failed start.
        for source in &self.sources {
            if let Some(Err(err)) = source.clone().checked()?.load_now() {
                return Err(err);
            }
        }
        Ok(Config::new(node.spawn(spec).await?))
    }
}

/// A node's config actor (see [`Config`]). Started by [`ConfigBuilder`].
pub struct ConfigActor {
    sources: Vec<Source>,
    layers: Layers,
    watches: Watches,
    /// Watch id → the queue of its forwarding task.
    watchers: BTreeMap<u64, mpsc::Sender<Entry>>,
    errors: Vec<mpsc::Sender<SourceError>>,
    debounce: Debounce,
    /// Held for their lifetime: dropping one stops its watching.
    _file_watchers: Vec<notify::RecommendedWatcher>,
    /// Watched sources whose watch ended: when to read them again, and the delay used.
    retries: BTreeMap<usize, (Instant, Duration)>,
    #[cfg(feature = "etcd")]
    etcd: BTreeMap<usize, crate::etcd::EtcdClient>,
}

impl std::fmt::Debug for ConfigActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigActor")
            .field("layers", &self.layers)
            .field("watches", &self.watches)
            .finish_non_exhaustive()
    }
}

impl ConfigActor {
    fn new(sources: Vec<Source>, debounce: Duration) -> Self {
        Self::with_lookup(sources, debounce, process_env())
    }

    fn with_lookup(sources: Vec<Source>, debounce: Duration, lookup: Lookup) -> Self {
        let mut layers = Layers::new(lookup);
        for source in &sources {
            layers.push(source.name());
        }
        ConfigActor {
            sources,
            layers,
            watches: Watches::default(),
            watchers: BTreeMap::new(),
            errors: Vec::new(),
            debounce: Debounce::new(debounce),
            _file_watchers: Vec::new(),
            retries: BTreeMap::new(),
            #[cfg(feature = "etcd")]
            etcd: BTreeMap::new(),
        }
    }

    /// Applies a source's new contents and tells the watchers whose value changed.
    fn apply(&mut self, index: usize, value: Value) {
        if self.layers.set(index, value) {
            tracing::debug!(source = %self.layers.name(index), "config changed");
            self.notify();
        }
    }

    /// Records a source's failure: a warning, and the error streams.
    fn failed(&mut self, index: usize, message: String) {
        let source_name = self.layers.name(index).to_owned();
        tracing::warn!(source = %source_name, error = %message, "config source failed; keeping its last good contents");
        self.layers.fail(index, message.clone());
        let error = SourceError {
            source_name,
            message,
        };
        self.errors
            .retain(|queue| queue.try_send(error.clone()).is_ok());
    }

    fn notify(&mut self) {
        for (id, entry) in self.watches.changed(&self.layers) {
            let keep = self
                .watchers
                .get(&id)
                .is_some_and(|queue| match queue.try_send(entry) {
                    Ok(()) => true,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        tracing::warn!("dropping a config watcher that fell behind");
                        false
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                });
            if !keep {
                self.watchers.remove(&id);
                self.watches.remove(id);
            }
        }
    }

    /// Re-reads file source `index` (debounced: its directory was quiet long enough).
    fn reload_file(&mut self, index: usize) {
        let Some(Kind::File { path, format }) = self.sources.get(index).map(|s| &s.kind) else {
            return;
        };
        match read_file(path, *format) {
            Ok(Some(value)) => self.apply(index, value),
            // Empty: a write in progress (truncate, then write); the next event reads it.
            Ok(None) => tracing::debug!(path = %path.display(), "config file empty; waiting"),
            Err(message) => self.failed(index, message),
        }
    }

    /// Watches the directory of file source `index` (and of its target when it is a symlink
    /// into another directory); any event there re-reads the file once it is quiet.
    fn watch_file(
        &mut self,
        ctx: &mut Context<Self>,
        index: usize,
        path: &Path,
    ) -> Result<(), ConfigError> {
        use notify::Watcher;

        let (tx, rx) = mpsc::unbounded_channel::<()>();
        let mut watcher =
            notify::recommended_watcher(move |_event: notify::Result<notify::Event>| {
                let _ = tx.send(());
            })
            .map_err(|e| self.source_error(index, &e))?;
        let mut dirs = vec![parent(path)];
        if let Ok(target) = std::fs::canonicalize(path) {
            let dir = parent(&target);
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
        for dir in &dirs {
            watcher
                .watch(dir, notify::RecursiveMode::NonRecursive)
                .map_err(|e| self.source_error(index, &e))?;
        }
        let mut rx = rx;
        ctx.forward(
            futures::stream::poll_fn(move |cx| rx.poll_recv(cx)),
            move |()| ConfigMsg::Internal(Internal::FileEvent(index)),
        );
        self._file_watchers.push(watcher);
        Ok(())
    }

    fn source_error(&self, index: usize, err: &dyn std::fmt::Display) -> ConfigError {
        ConfigError::Source {
            source_name: self.layers.name(index).to_owned(),
            message: err.to_string(),
        }
    }

    fn spawn_queue<T: Send + 'static>(mut out: StreamSender<T>) -> mpsc::Sender<T> {
        let (queue, mut rx) = mpsc::channel::<T>(WATCHER_QUEUE);
        // One task per watcher, so a slow one (or one on a slow link) never holds the actor
        // up; it ends when the actor drops the queue or the receiver goes away.
        tokio::spawn(async move {
            while let Some(item) = rx.recv().await {
                if out.send(item).await.is_err() {
                    return;
                }
            }
            let _ = out.finish().await;
        });
        queue
    }
}

/// The directory holding `path` (`.` for a bare file name).
fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

impl Actor for ConfigActor {
    type Msg = ConfigMsg;

    async fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        let mut timers = false;
        for index in 0..self.sources.len() {
            let source = self.sources[index].clone();
            if let Kind::File { path, .. } = &source.kind {
                // Watch first, then read: a change in between is read again, not lost.
                self.watch_file(ctx, index, path)?;
            }
            match source.load_now() {
                Some(Ok(value)) => {
                    self.layers.set(index, value);
                }
                Some(Err(err)) => return Err(err.into()),
                None => self.start_remote(ctx, index).await?,
            }
            timers |= !matches!(
                source.kind,
                Kind::Defaults(_) | Kind::Env { .. } | Kind::Overrides(_)
            );
        }
        if timers {
            ctx.tick(self.debounce.check_every(), || {
                ConfigMsg::Internal(Internal::Tick)
            });
        }
        ctx.node().expose::<ConfigMsg>(CONFIG_NAME)?;
        tracing::debug!(sources = self.sources.len(), "config started");
        Ok(())
    }

    async fn handle(&mut self, ctx: &mut Context<Self>, msg: ConfigMsg) -> Result<(), ActorError> {
        match msg {
            ConfigMsg::Get { path, reply } => {
                let _ = reply.send(Ok(self.layers.entry(&path)));
            }
            ConfigMsg::Watch {
                path,
                updates,
                reply,
            } => {
                let id = self.watches.add(&path, &self.layers);
                self.watchers.insert(id, Self::spawn_queue(updates));
                let _ = reply.send(Ok(()));
            }
            ConfigMsg::Errors { errors, reply } => {
                self.errors.push(Self::spawn_queue(errors));
                let _ = reply.send(Ok(()));
            }
            ConfigMsg::Sources { reply } => {
                let _ = reply.send(self.layers.statuses());
            }
            ConfigMsg::Internal(Internal::FileEvent(index)) => {
                self.debounce.event(index, Instant::now());
            }
            ConfigMsg::Internal(Internal::Tick) => {
                let now = Instant::now();
                for index in self.debounce.due(now) {
                    self.reload_file(index);
                }
                if !self.retries.is_empty() {
                    self.retry_remotes(ctx, now).await;
                }
            }
            ConfigMsg::Internal(Internal::Remote(index, Ok(value))) => self.apply(index, value),
            ConfigMsg::Internal(Internal::Remote(index, Err(message))) => {
                // The watch ended: keep the last contents, read again later.
                self.failed(index, message);
                self.schedule_retry(index, Instant::now());
            }
        }
        Ok(())
    }
}

impl ConfigActor {
    /// Reads a watched source (the store, etcd) and forwards its changes into the mailbox.
    async fn start_remote(
        &mut self,
        ctx: &mut Context<Self>,
        index: usize,
    ) -> Result<(), ConfigError> {
        let Some(source) = self.sources.get(index).cloned() else {
            return Ok(());
        };
        let started =
            match &source.kind {
                Kind::Store { store, prefix } => crate::store::start(store, prefix).await,
                #[cfg(feature = "etcd")]
                Kind::Etcd { endpoints, prefix } => crate::etcd::start(endpoints, prefix)
                    .await
                    .map(|(value, client, changes)| {
                        self.etcd.insert(index, client);
                        (value, changes)
                    }),
                _ => return Ok(()),
            };
        let (value, changes) = started.map_err(|message| self.source_error(index, &message))?;
        self.apply(index, value);
        ctx.forward(changes, move |change| {
            ConfigMsg::Internal(Internal::Remote(index, change))
        });
        Ok(())
    }

    /// Reads again the watched sources whose retry is due.
    async fn retry_remotes(&mut self, ctx: &mut Context<Self>, now: Instant) {
        let due: Vec<usize> = self
            .retries
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(index, _)| *index)
            .collect();
        for index in due {
            match self.start_remote(ctx, index).await {
                Ok(()) => {
                    tracing::info!(source = %self.layers.name(index), "config source watched again");
                    self.retries.remove(&index);
                }
                Err(err) => {
                    let message = match err {
                        ConfigError::Source { message, .. } => message,
                        other => other.to_string(),
                    };
                    self.failed(index, message);
                    self.schedule_retry(index, Instant::now());
                }
            }
        }
    }

    /// A watched source's watch ended: read it again after a delay (1 s, doubling to 30 s).
    fn schedule_retry(&mut self, index: usize, now: Instant) {
        let delay = self
            .retries
            .get(&index)
            .map_or(RETRY_FIRST, |(_, delay)| (*delay * 2).min(RETRY_MAX));
        self.retries.insert(index, (now + delay, delay));
    }
}
