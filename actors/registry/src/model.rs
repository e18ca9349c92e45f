//! Go Micro's data model: a service has a name, a version, metadata, endpoints and nodes.

use serde::{Deserialize, Serialize};

pub use micro_runtime::Metadata;

/// One version of a service, with the nodes that run it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Service {
    /// The service's name, e.g. `"greeter"`.
    pub name: String,
    /// Its version, e.g. `"1.2.0"` (empty when unversioned).
    pub version: String,
    /// Free-form metadata.
    pub metadata: Metadata,
    /// What it answers.
    pub endpoints: Vec<Endpoint>,
    /// Where it runs.
    pub nodes: Vec<ServiceNode>,
}

/// One endpoint of a service.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Endpoint {
    /// E.g. `"Greeter.Hello"`.
    pub name: String,
    /// The request's type name.
    pub request: String,
    /// The response's type name.
    pub response: String,
    /// Free-form metadata.
    pub metadata: Metadata,
}

/// One running instance of a service.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ServiceNode {
    /// Unique among the service's nodes.
    pub id: String,
    /// Where to reach it (for micro: the node's address).
    pub address: String,
    /// Free-form metadata.
    pub metadata: Metadata,
}

impl Service {
    /// A service with a name and version, no endpoints and no nodes yet.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Service {
            name: name.into(),
            version: version.into(),
            ..Service::default()
        }
    }

    /// Adds an endpoint.
    pub fn endpoint(mut self, endpoint: Endpoint) -> Self {
        self.endpoints.push(endpoint);
        self
    }

    /// Adds a node.
    pub fn node(mut self, node: ServiceNode) -> Self {
        self.nodes.push(node);
        self
    }

    /// Adds a metadata entry.
    pub fn meta(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }
}

impl Endpoint {
    /// An endpoint with its request and response type names.
    pub fn new(
        name: impl Into<String>,
        request: impl Into<String>,
        response: impl Into<String>,
    ) -> Self {
        Endpoint {
            name: name.into(),
            request: request.into(),
            response: response.into(),
            metadata: Metadata::new(),
        }
    }
}

impl ServiceNode {
    /// A node with its id and address.
    pub fn new(id: impl Into<String>, address: impl Into<String>) -> Self {
        ServiceNode {
            id: id.into(),
            address: address.into(),
            metadata: Metadata::new(),
        }
    }
}

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
    pub service: Service,
}
