//! Go Micro's data model: a service has a name, a version, metadata, endpoints and nodes.

use serde::{Deserialize, Serialize};

pub use micro_runtime::Metadata;

/// One version of a service, with the nodes that run it: the registry's record of a service
/// (not to be confused with `micro::Service`, a running service).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ServiceRecord {
    /// The service's name, e.g. `"greeter"`.
    pub name: String,
    /// Its version, e.g. `"1.2.0"` (empty when unversioned).
    pub version: String,
    /// Free-form metadata.
    pub metadata: Metadata,
    /// What it answers.
    pub endpoints: Vec<EndpointRecord>,
    /// Where it runs.
    pub nodes: Vec<NodeRecord>,
}

/// One endpoint of a service, as the registry records it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EndpointRecord {
    /// E.g. `"Greeter.Hello"`.
    pub name: String,
    /// The request's type name.
    pub request: String,
    /// The response's type name.
    pub response: String,
    /// Free-form metadata.
    pub metadata: Metadata,
}

/// One running instance of a service, as the registry records it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Unique among the service's nodes.
    pub id: String,
    /// Where to reach it (for micro: the node's address).
    pub address: String,
    /// Free-form metadata.
    pub metadata: Metadata,
}

impl ServiceRecord {
    /// A service with a name and version, no endpoints and no nodes yet.
    #[must_use]
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        ServiceRecord {
            name: name.into(),
            version: version.into(),
            ..ServiceRecord::default()
        }
    }

    /// Adds an endpoint.
    #[must_use]
    pub fn endpoint(mut self, endpoint: EndpointRecord) -> Self {
        self.endpoints.push(endpoint);
        self
    }

    /// Adds a node.
    #[must_use]
    pub fn node(mut self, node: NodeRecord) -> Self {
        self.nodes.push(node);
        self
    }

    /// Adds a metadata entry.
    #[must_use]
    pub fn meta(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }
}

impl EndpointRecord {
    /// An endpoint with its request and response type names.
    pub fn new(
        name: impl Into<String>,
        request: impl Into<String>,
        response: impl Into<String>,
    ) -> Self {
        EndpointRecord {
            name: name.into(),
            request: request.into(),
            response: response.into(),
            metadata: Metadata::new(),
        }
    }
}

impl NodeRecord {
    /// A node with its id and address.
    pub fn new(id: impl Into<String>, address: impl Into<String>) -> Self {
        NodeRecord {
            id: id.into(),
            address: address.into(),
            metadata: Metadata::new(),
        }
    }
}

/// The registry's record of a service: the old name of [`ServiceRecord`].
#[deprecated(note = "renamed `ServiceRecord` (`micro::Service` is a running service)")]
pub type Service = ServiceRecord;

/// The registry's record of an endpoint: the old name of [`EndpointRecord`].
#[deprecated(note = "renamed `EndpointRecord` (`micro::Endpoint` is a service's endpoint)")]
pub type Endpoint = EndpointRecord;

/// The registry's record of a service's node: the old name of [`NodeRecord`].
#[deprecated(note = "renamed `NodeRecord`, like the other records")]
pub type ServiceNode = NodeRecord;

/// What changed in the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// A service version appeared.
    Create,
    /// A service version changed: nodes came, went or were updated.
    Update,
    /// A service version is gone (its last node deregistered or expired).
    Delete,
}

/// A change, with the service version as it is after it (for `Delete`, as it was).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// The service version concerned.
    pub service: ServiceRecord,
}
