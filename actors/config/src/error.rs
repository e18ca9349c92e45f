//! The config's error type.

use serde::{Deserialize, Serialize};

/// What can go wrong with config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ConfigError {
    /// Nothing is set at the path (and the type asked for does not take `null`).
    #[error("config: nothing set at {path:?}")]
    NotFound {
        /// The dotted path read.
        path: String,
    },
    /// The value at `path` is not a `expected`.
    #[error("config: {path:?} (set by {source_name}) is not a {expected}: {message}")]
    Decode {
        /// The dotted path of the value that did not fit (inside the one read).
        path: String,
        /// The Rust type asked for.
        expected: String,
        /// The source that set the value (or the sources below the path).
        source_name: String,
        /// What serde said.
        message: String,
    },
    /// A source could not be read or parsed (the config keeps its last good contents).
    #[error("config source {source_name}: {message}")]
    Source {
        /// The source's name (`file:/etc/app.toml`, `env:APP`, …).
        source_name: String,
        /// What went wrong.
        message: String,
    },
    /// A source, path or override is not well formed.
    #[error("config: invalid {0}")]
    Invalid(String),
    /// The config actor could not be reached.
    #[error("config unreachable: {0}")]
    Runtime(#[from] micro_runtime::Error),
}
