//! The sync primitive's error type.

use serde::{Deserialize, Serialize};

/// What can go wrong with a lock or an election.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum SyncError {
    /// The lock (or leadership) was not acquired within the wait timeout.
    #[error("{name:?} is held by another holder: not acquired within {waited_ms} ms")]
    Timeout {
        /// The lock or election.
        name: String,
        /// How long the caller waited, in milliseconds.
        waited_ms: u64,
    },
    /// The lease behind this token is gone (expired, released, or taken over): a renewal or a
    /// release with it is refused.
    #[error("the lease on {name:?} with token {token} is no longer held")]
    NotHeld {
        /// The lock or election.
        name: String,
        /// The fencing token of the lost lease.
        token: u64,
    },
    /// The request is malformed (an empty name, a zero TTL, …).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The backend's engine (PostgreSQL, etcd) failed or could not be reached.
    #[error("{engine} backend: {detail}")]
    Backend {
        /// Which engine.
        engine: String,
        /// What it said.
        detail: String,
    },
    /// The sync actor could not be reached.
    #[error("sync actor unreachable: {0}")]
    Runtime(#[from] micro_runtime::Error),
}

impl SyncError {
    #[cfg_attr(not(any(feature = "postgres", feature = "etcd")), allow(dead_code))]
    pub(crate) fn backend(engine: &str, detail: impl std::fmt::Display) -> Self {
        SyncError::Backend {
            engine: engine.to_owned(),
            detail: detail.to_string(),
        }
    }
}
