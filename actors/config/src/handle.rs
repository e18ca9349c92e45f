//! The handle callers use: local or remote alike.

use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use micro_runtime::{Addr, Node, NodeId, StreamReceiver, stream_channel};
use serde::de::DeserializeOwned;

use crate::{ConfigBuilder, ConfigError, ConfigMsg, Entry, SourceError, SourceStatus};

/// The name the config actor runs and is exposed under on each node.
pub const CONFIG_NAME: &str = "config";

/// The default time to wait for the config actor's answer.
const ASK: Duration = Duration::from_secs(5);

/// Updates a watcher may have in flight before the actor's queue for it fills.
const WATCH_BUFFER: usize = 64;

/// A handle to a node's config actor (local or on another node), with typed reads and
/// watches.
///
/// ```no_run
/// use micro_config::Config;
/// use micro_runtime::Node;
/// use serde::Deserialize;
///
/// #[derive(Deserialize)]
/// struct Database { url: String, pool: u32 }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let node = Node::builder().start().await?;
/// let config = Config::builder()
///     .defaults(serde_json::json!({"database": {"url": "postgres://localhost/app", "pool": 4}}))
///     .file("/etc/app/config.toml")
///     .env("APP")
///     .overrides(std::env::args().skip(1))
///     .start(&node)
///     .await?;
/// let db: Database = config.get("database").await?;
/// let mut changes = config.watch::<Database>("database").await?;
/// while let Some(db) = changes.next().await {
///     let db = db?;
///     println!("database is now {} ({} connections)", db.url, db.pool);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Config {
    addr: Addr<ConfigMsg>,
    timeout: Duration,
}

impl Config {
    /// A builder for a node's config actor: add sources in merge order, then start it.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder::default()
    }

    /// A handle for the config actor at `addr`.
    pub fn new(addr: Addr<ConfigMsg>) -> Self {
        Config { addr, timeout: ASK }
    }

    /// The config actor running on `node`.
    pub fn local(node: &Node) -> Result<Config, ConfigError> {
        Ok(Config::new(node.lookup::<ConfigMsg>(CONFIG_NAME)?))
    }

    /// The config actor of node `peer` (asked first, so a node without one is an error here).
    pub async fn remote(node: &Node, peer: NodeId) -> Result<Config, ConfigError> {
        Ok(Config::new(
            node.lookup_remote::<ConfigMsg>(peer, CONFIG_NAME).await?,
        ))
    }

    /// The same handle with another timeout for each request.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The config actor's address.
    pub fn addr(&self) -> &Addr<ConfigMsg> {
        &self.addr
    }

    /// The entry at a dotted path: its JSON and the sources that set it.
    pub async fn entry(&self, path: &str) -> Result<Entry, ConfigError> {
        let path = path.to_owned();
        self.addr
            .ask(|reply| ConfigMsg::Get { path, reply }, self.timeout)
            .await?
    }

    /// The value at a dotted path (`"database"`, `"database.pool"`, `"servers.0"`) decoded as
    /// `T`. Nothing there is [`ConfigError::NotFound`] unless `T` takes `null` (an
    /// `Option`); a value that does not fit is [`ConfigError::Decode`], naming the path, the
    /// type and the source that set it.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ConfigError> {
        self.entry(path).await?.decode()
    }

    /// The whole tree decoded as `T`.
    pub async fn scan<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        self.get("").await
    }

    /// The value at `path` each time it changes from now on (the watch is in place when this
    /// returns): never for a change elsewhere, never twice for one change. A value that no
    /// longer decodes is an `Err` item (the stream goes on); the stream ends when the config
    /// actor goes away (also when it restarts: watch again), or if the watcher falls 1,024
    /// updates behind.
    pub async fn watch<T: DeserializeOwned>(&self, path: &str) -> Result<Watch<T>, ConfigError> {
        let (updates, receiver) = stream_channel(WATCH_BUFFER);
        let path = path.to_owned();
        self.addr
            .ask(
                |reply| ConfigMsg::Watch {
                    path,
                    updates,
                    reply,
                },
                self.timeout,
            )
            .await??;
        Ok(Watch {
            inner: receiver,
            _type: PhantomData,
        })
    }

    /// The sources' errors from now on: a file that no longer parses, one that went missing…
    /// (each is also logged as a warning; the config keeps the source's last good contents).
    pub async fn errors(&self) -> Result<StreamReceiver<SourceError>, ConfigError> {
        let (errors, receiver) = stream_channel(WATCH_BUFFER);
        self.addr
            .ask(|reply| ConfigMsg::Errors { errors, reply }, self.timeout)
            .await??;
        Ok(receiver)
    }

    /// Each source in merge order: its name, whether it loaded, its last error.
    pub async fn sources(&self) -> Result<Vec<SourceStatus>, ConfigError> {
        Ok(self
            .addr
            .ask(|reply| ConfigMsg::Sources { reply }, self.timeout)
            .await?)
    }
}

/// The changes of one path, typed (from [`Config::watch`]); also a `futures::Stream`.
#[derive(Debug)]
pub struct Watch<T> {
    inner: StreamReceiver<Entry>,
    _type: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Watch<T> {
    /// The next value, `None` once the config actor went away.
    pub async fn next(&mut self) -> Option<Result<T, ConfigError>> {
        futures::StreamExt::next(self).await
    }
}

impl<T: DeserializeOwned> Stream for Watch<T> {
    type Item = Result<T, ConfigError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner).poll_next(cx).map(|item| {
            item.map(|entry| match entry {
                Ok(entry) => entry.decode(),
                Err(err) => Err(ConfigError::Runtime(err)),
            })
        })
    }
}
