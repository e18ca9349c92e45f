//! The config's typed protocol (`micro.config.v1`).

use micro_runtime::{RemoteMessage, Reply, StreamSender};
use serde::{Deserialize, Serialize};

use crate::{ConfigError, Entry};

/// What the config actor takes. Callers use [`Config`](crate::Config).
///
/// Variants travel by index: new ones go last, after those that exist.
#[derive(Debug, Serialize, Deserialize)]
pub enum ConfigMsg {
    /// The value at a dotted path (`""` for the whole tree), with its sources.
    Get {
        /// The dotted path.
        path: String,
        /// The entry.
        reply: Reply<Result<Entry, ConfigError>>,
    },
    /// Streams the value at `path` each time it changes, from now on (never for a change
    /// elsewhere, never twice for one change). Answered once the watch is in place.
    Watch {
        /// The dotted path.
        path: String,
        /// Where the new entries go.
        updates: StreamSender<Entry>,
        /// Answered once the watch is registered.
        reply: Reply<Result<(), ConfigError>>,
    },
    /// Streams the sources' errors (an invalid file, a lost etcd watch…) from now on.
    Errors {
        /// Where the errors go.
        errors: StreamSender<SourceError>,
        /// Answered once the stream is registered.
        reply: Reply<Result<(), ConfigError>>,
    },
    /// Each source: its name, whether it loaded, its last error.
    Sources {
        /// The statuses, in merge order.
        reply: Reply<Vec<SourceStatus>>,
    },
    /// The actor's messages to itself (file events, ticks, remote sources' changes). Never
    /// travels: it has no wire form.
    #[doc(hidden)]
    #[serde(skip)]
    Internal(crate::actor::Internal),
}

impl RemoteMessage for ConfigMsg {
    const TYPE_NAME: &'static str = "micro.config.v1";
}

/// A source that failed to load or reload (the config keeps that source's last good
/// contents).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceError {
    /// The source's name (`file:/etc/app.toml`, …).
    pub source_name: String,
    /// What went wrong.
    pub message: String,
}

impl From<SourceError> for ConfigError {
    fn from(err: SourceError) -> Self {
        ConfigError::Source {
            source_name: err.source_name,
            message: err.message,
        }
    }
}

/// One source's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceStatus {
    /// The source's name.
    pub name: String,
    /// Whether it has contents (it loaded at least once).
    pub loaded: bool,
    /// Its last error, cleared by a good load.
    pub error: Option<String>,
}
