//! What `#[micro::service]` builds on: [`ServiceHandler`], the registration of a typed handler,
//! and the hidden helpers the generated code calls.

use crate::Endpoint;

/// A typed handler that knows its endpoints: `#[micro::service] trait Inventory` generates
/// `InventoryServer<S>`, which implements this for any `S: Inventory`, and
/// [`Service::handle`](crate::Service::handle) adds them all in one call.
///
/// The endpoints are the same [`Endpoint::unary`], [`Endpoint::server_stream`],
/// [`Endpoint::client_stream`] and [`Endpoint::bidi_stream`] a closure would build, so a typed
/// service costs the same per call.
pub trait ServiceHandler {
    /// The endpoints, named `Trait.Method`.
    fn endpoints(self) -> Vec<Endpoint>;
}

/// Paths the generated code uses; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use std::sync::Arc;

    /// The JSON Schema of `T`, as JSON text (empty if it cannot be written, which a schema
    /// built by schemars never is).
    pub fn schema<T: schemars::JsonSchema>() -> String {
        serde_json::to_string(&schemars::schema_for!(T)).unwrap_or_default()
    }
}
