//! Services for micro: typed endpoints run by supervised actors, and the client that calls them.

mod body;
mod client;
mod context;
mod error;
mod service;
mod stream;
mod wire;
mod wrapper;

pub use bytes::Bytes;
pub use client::{
    CallOptions, Client, ClientBuilder, ClientStreaming, Ejection, Filter, RetryBudget,
    RetryPolicy, Selector, WithHeaders,
};
pub use context::{CallContext, TRACE_ID_HEADER};
pub use error::ServiceError;
pub use micro_registry::Metadata;
pub use service::{
    Endpoint, EndpointStats, HEALTH_ENDPOINT, Health, IDEMPOTENT_KEY, NODE_NAME_KEY,
    RunningService, SHAPE_KEY, STATS_ENDPOINT, Service, ServiceStats, Shape,
};
pub use stream::{Incoming, Outgoing};
pub use wrapper::{
    BoxFuture, EndpointMetrics, Logging, Metrics, Next, Request, Response, Tracing, Wrapper,
    new_trace_id,
};
