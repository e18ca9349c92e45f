//! The auth's error type.

use serde::{Deserialize, Serialize};

/// What can go wrong with auth. It crosses nodes inside replies, so it holds text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum AuthError {
    /// An account id that cannot be one (empty, too long, with a control character).
    #[error("invalid account id {0:?}")]
    InvalidId(String),
    /// The id and secret do not name an account (nothing says which was wrong).
    #[error("invalid credentials for {0:?}")]
    InvalidCredentials(String),
    /// A token that is missing, malformed, tampered, expired, foreign-signed or revoked.
    #[error("invalid token")]
    InvalidToken,
    /// The account exists already.
    #[error("account {0:?} exists")]
    Exists(String),
    /// The signing key could not be read, written or made.
    #[error("signing key {path}: {detail}")]
    Key {
        /// The key file (or `"memory"`).
        path: String,
        /// What failed.
        detail: String,
    },
    /// The store failed.
    #[error("auth store: {0}")]
    Store(String),
    /// The auth actor could not be reached.
    #[error("auth unreachable: {0}")]
    Runtime(#[from] micro_runtime::Error),
}

impl From<micro_store::StoreError> for AuthError {
    fn from(error: micro_store::StoreError) -> Self {
        AuthError::Store(error.to_string())
    }
}
