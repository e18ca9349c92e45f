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

    use serde::Serialize;
    use serde::de::DeserializeOwned;

    use crate::{CallOptions, Client, ClientStreaming, Incoming, Outgoing, ServiceError};

    /// [`Client::stream`] for a typed client, whose request type is `Deserialize` too: its
    /// shape id is sent as the stream opens, so a handler of another request type refuses it.
    pub async fn stream<Req, Resp>(
        client: &Client,
        service: &str,
        endpoint: &str,
        options: CallOptions,
    ) -> Result<(Outgoing<Req>, Incoming<Resp>), ServiceError>
    where
        Req: Serialize + DeserializeOwned,
        Resp: DeserializeOwned,
    {
        client
            .open_stream(service, endpoint, options, crate::shape_id::<Req>())
            .await
    }

    /// [`Client::client_stream`] for a typed client, as [`stream`].
    pub async fn client_stream<Req, Resp>(
        client: &Client,
        service: &str,
        endpoint: &str,
        options: CallOptions,
    ) -> Result<ClientStreaming<Req, Resp>, ServiceError>
    where
        Req: Serialize + DeserializeOwned,
        Resp: DeserializeOwned,
    {
        client
            .client_stream_typed(service, endpoint, options, crate::shape_id::<Req>())
            .await
    }

    /// The JSON Schema of `T`, as JSON text (empty if it cannot be written, which a schema
    /// built by schemars never is).
    pub fn schema<T: schemars::JsonSchema>() -> String {
        serde_json::to_string(&schemars::schema_for!(T)).unwrap_or_default()
    }
}
