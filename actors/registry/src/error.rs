//! The registry's error type.

use serde::{Deserialize, Serialize};

/// What can go wrong with the registry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RegistryError {
    /// No service of that name is registered.
    #[error("service {0:?} not found")]
    NotFound(String),
    /// A registration is missing something it needs.
    #[error("invalid registration: {0}")]
    Invalid(String),
    /// The registry actor could not be reached.
    #[error("registry unreachable: {0}")]
    Runtime(#[from] micro_runtime::Error),
}
