//! [`CallContext`]: what a handler knows about the call it serves.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::Metadata;
use crate::wire::Headers;

/// The header that carries a call's trace id across nodes (see [`Tracing`](crate::Tracing)).
pub const TRACE_ID_HEADER: &str = "Micro-Trace-Id";

/// The call a handler serves: its service and endpoint, the caller's headers, the deadline, and
/// headers to send back.
///
/// ```
/// use micro_service::{CallContext, ServiceError};
///
/// async fn hello(ctx: CallContext, name: String) -> Result<String, ServiceError> {
///     let lang = ctx.header("lang").unwrap_or("en").to_owned();
///     ctx.set_header("served-in", lang.clone());
///     Ok(if lang == "fr" { format!("Bonjour {name}") } else { format!("Hello {name}") })
/// }
/// ```
#[derive(Debug, Clone)]
pub struct CallContext {
    /// One allocation per call, shared by the clones the handler adapter keeps.
    call: Arc<Call>,
}

#[derive(Debug)]
struct Call {
    service: Arc<str>,
    endpoint: Arc<str>,
    metadata: Headers,
    deadline: Option<Instant>,
    reply_metadata: Mutex<Headers>,
    /// The caller's account, from a valid token on a service with auth.
    account: Option<Arc<micro_auth::Account>>,
    /// The calling node, as its link's mutual TLS proved it.
    peer: Option<micro_runtime::NodeId>,
}

impl CallContext {
    pub(crate) fn new(
        service: Arc<str>,
        endpoint: Arc<str>,
        metadata: Headers,
        deadline: Option<Instant>,
    ) -> Self {
        CallContext {
            call: Arc::new(Call {
                service,
                endpoint,
                metadata,
                deadline,
                reply_metadata: Mutex::default(),
                account: None,
                peer: None,
            }),
        }
    }

    /// The same context with the caller's account (set once, before the handler sees it).
    #[must_use]
    pub(crate) fn with_caller(
        mut self,
        account: Option<Arc<micro_auth::Account>>,
        peer: Option<micro_runtime::NodeId>,
    ) -> Self {
        if let Some(call) = Arc::get_mut(&mut self.call) {
            call.account = account;
            call.peer = peer;
        }
        self
    }

    /// The node the call came from, as the mutual TLS of its link proved it (its certificate's
    /// node id); `None` for a call from this node.
    pub fn peer(&self) -> Option<micro_runtime::NodeId> {
        self.call.peer
    }

    /// The caller's account, verified from the token the call carried, on a service with auth
    /// ([`Service::auth`](crate::Service::auth)); `None` for a call without a valid token
    /// (allowed by a public rule) or on a service without auth.
    pub fn account(&self) -> Option<&micro_auth::Account> {
        self.call.account.as_deref()
    }

    /// The service's name.
    pub fn service(&self) -> &str {
        &self.call.service
    }

    /// The endpoint's name, e.g. `"Greeter.Hello"`.
    pub fn endpoint(&self) -> &str {
        &self.call.endpoint
    }

    /// The caller's headers.
    pub fn metadata(&self) -> &Metadata {
        self.call.metadata.get()
    }

    /// One of the caller's headers.
    pub fn header(&self, key: &str) -> Option<&str> {
        self.call.metadata.get().get(key).map(String::as_str)
    }

    /// The call's trace id, if the caller (or a [`Tracing`](crate::Tracing) wrapper) set one.
    pub fn trace_id(&self) -> Option<&str> {
        self.header(TRACE_ID_HEADER)
    }

    /// When the caller stops waiting; the handler is cancelled then.
    pub fn deadline(&self) -> Option<Instant> {
        self.call.deadline
    }

    /// Time left before the deadline.
    pub fn remaining(&self) -> Option<Duration> {
        self.call
            .deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Sets a header on the response (unary calls; a stream's responses carry no headers).
    pub fn set_header(&self, key: impl Into<String>, value: impl Into<String>) {
        if let Ok(mut headers) = self.call.reply_metadata.lock() {
            headers.insert(key.into(), value.into());
        }
    }

    /// The response headers set so far (taken by the server when the handler returns).
    pub(crate) fn take_reply_metadata(&self) -> Headers {
        self.call
            .reply_metadata
            .lock()
            .map(|mut headers| std::mem::take(&mut *headers))
            .unwrap_or_default()
    }
}
