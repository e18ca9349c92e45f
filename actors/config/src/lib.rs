//! Config for micro: layered, typed, hot-reloaded configuration, served by a config actor on
//! every node.
//!
//! A node's config actor (supervised, named and exposed as `"config"`) merges its sources **in
//! the order they were added, later ones winning** leaf by leaf (objects merge key by key;
//! scalars and arrays replace). The documented order, which [`ConfigBuilder`]'s users are
//! expected to follow, is:
//!
//! | rank | source | |
//! |---|---|---|
//! | 1 (lowest) | defaults | [`Source::defaults`]: a serde value or struct |
//! | 2 | files | [`Source::file`]: JSON, TOML, YAML by extension, hot-reloaded |
//! | 3 | store | [`Source::store`]: a prefix in a `micro-store` table, watched |
//! | 4 | etcd | [`Source::etcd`] (feature `etcd`): a prefix, watched |
//! | 5 | env | [`Source::env`]: `<PREFIX>_A__B=x` sets `a.b` |
//! | 6 (highest) | overrides | [`Source::overrides`]: `a.b=c` pairs, e.g. from the command line |
//!
//! Strings may refer to the environment: `${VAR}` (empty when unset) and `${VAR:-default}`
//! (the default when unset or empty); `$${` is a literal `${`.
//!
//! [`Config`] is the handle, the same for the local actor and another node's: typed reads
//! ([`Config::get`], [`Config::scan`]) whose errors name the path, the type expected and the
//! source that set the value, and watches ([`Config::watch`]) that yield only when the value at
//! their path changed, once per change.
//!
//! # Hot reload
//!
//! Each file's *directory* is watched (through `notify`), and any event there re-reads the file
//! once the directory has been quiet for the debounce delay (100 ms by default). That survives
//! how files really change: editors that write a new file and rename it over the old one,
//! truncate-then-write (an empty file is taken for a write in progress), delete-then-recreate,
//! and Kubernetes' ConfigMap volumes, which swap a `..data` symlink to a new directory. A file
//! that no longer parses (or went missing) keeps the last good contents, is logged as a
//! warning and reported on [`Config::errors`]; fixing it applies it.
//!
//! ```no_run
//! use micro_config::Config;
//! use micro_runtime::Node;
//! use serde::Deserialize;
//!
//! #[derive(Debug, Deserialize)]
//! struct Http { port: u16, workers: usize }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let node = Node::builder().start().await?;
//! let config = Config::builder()
//!     .defaults(serde_json::json!({"http": {"port": 8080, "workers": 4}}))
//!     .file("app.yaml")
//!     .env("APP") // APP_HTTP__PORT=9000
//!     .start(&node)
//!     .await?;
//! let http: Http = config.get("http").await?;
//! let mut changes = config.watch::<Http>("http").await?;
//! if let Some(http) = changes.next().await {
//!     println!("http is now {:?}", http?);
//! }
//! # Ok(()) }
//! ```

mod actor;
mod error;
#[cfg(feature = "etcd")]
mod etcd;
mod handle;
mod protocol;
mod reload;
mod source;
mod store;
mod tree;

pub use actor::{ConfigActor, ConfigBuilder};
pub use error::ConfigError;
pub use handle::{CONFIG_NAME, Config, Watch};
pub use protocol::{ConfigMsg, SourceError, SourceStatus};
pub use source::{Format, Source};
pub use tree::Entry;
