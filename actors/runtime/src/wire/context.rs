//! The wire context: which node is encoding or decoding right now.
//!
//! serde gives `Serialize`/`Deserialize` no way to pass context, yet an [`Addr`](crate::Addr) must
//! know which node exports it and a decoded [`Reply`](crate::Reply) which node it answers through.
//! Whoever encodes or decodes (the node, or a peer link's read loop) sets a scoped, thread-local
//! guard; the handles' serde impls read it and fail with a clear error when none is set.

use std::cell::{Cell, RefCell};

use super::ContentType;
use super::call::CallData;
use super::frame::Envelope;
use crate::{Error, Node, NodeId};

thread_local! {
    static CURRENT: RefCell<Option<WireContext>> = const { RefCell::new(None) };
    static MISSING: Cell<bool> = const { Cell::new(false) };
    /// The envelope of the message being encoded for a link: what its handles and call data
    /// put there.
    static OUTBOUND: RefCell<Envelope> = const { RefCell::new(Envelope::EMPTY) };
    /// The call data of the message being delivered, until its `CallData` field takes it.
    static INBOUND: RefCell<Option<CallData>> = const { RefCell::new(None) };
    static REFUSING: Cell<bool> = const { Cell::new(false) };
}

/// Runs an inbound delivery. Reply ports dropped inside it (because the message was refused)
/// stay silent: the node answers the asker with the typed reason instead of "reply dropped".
pub(crate) fn delivering<R>(f: impl FnOnce() -> R) -> R {
    let outer = REFUSING.with(|r| r.replace(true));
    let result = f();
    REFUSING.with(|r| r.set(outer));
    result
}

/// Whether a reply port dropped now belongs to a message being refused.
pub(crate) fn refusing() -> bool {
    REFUSING.with(|r| r.get())
}

#[derive(Clone)]
pub(crate) struct WireContext {
    pub(crate) node: Node,
    pub(crate) content_type: ContentType,
    /// The node the encoded bytes are for, when encoding for a link (reply ports registered
    /// while encoding fail fast if that link is lost).
    pub(crate) peer: Option<NodeId>,
    /// The node the decoded bytes came from, when decoding what a link delivered: a handle that
    /// names a third node was passed on by it, so it is the one to ask where that node is.
    pub(crate) from: Option<NodeId>,
}

/// Notes the request id of a reply port encoded in the current message.
pub(crate) fn record_request(request: u64) {
    OUTBOUND.with(|e| e.borrow_mut().request = Some(request));
}

/// Puts a message's call data in the envelope of the current message (the deadline as the time
/// left now).
pub(crate) fn put_call(call: &CallData) {
    let deadline_ms = call.deadline.map(|deadline| {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        u64::try_from(left.as_millis()).unwrap_or(u64::MAX)
    });
    OUTBOUND.with(|e| {
        let mut envelope = e.borrow_mut();
        envelope.deadline_ms = deadline_ms;
        envelope.trace_id = call.trace_id;
        envelope.metadata.clone_from(&call.headers);
        envelope.type_id = call.type_id;
    });
}

/// Takes the envelope filled while encoding the current message.
pub(crate) fn take_envelope() -> Envelope {
    OUTBOUND.with(|e| std::mem::take(&mut *e.borrow_mut()))
}

/// Runs `f` (the decoding of a delivered message) with the call data of its frame's envelope
/// on offer to a `CallData` field inside; what no field took is dropped afterwards.
pub(crate) fn with_inbound<R>(envelope: Envelope, f: impl FnOnce() -> R) -> R {
    let call = envelope.into_call();
    if call.is_empty() {
        return f();
    }
    let outer = INBOUND.with(|c| c.replace(Some(call)));
    let result = f();
    INBOUND.with(|c| c.replace(outer));
    result
}

/// The call data of the message being delivered (empty outside a delivery, or once taken).
/// The node the message being decoded came from over a link (its certificate's id), if any.
pub(crate) fn current_from() -> Option<NodeId> {
    CURRENT.with(|c| c.borrow().as_ref().and_then(|ctx| ctx.from))
}

pub(crate) fn take_call() -> CallData {
    INBOUND.with(|c| c.take()).unwrap_or_default()
}

/// Restores the previous context when dropped (contexts nest: decoding a reply may encode).
pub(crate) struct ContextGuard {
    previous: Option<WireContext>,
}

impl Drop for ContextGuard {
    fn drop(&mut self) {
        let previous = self.previous.take();
        CURRENT.with(|c| *c.borrow_mut() = previous);
    }
}

pub(crate) fn enter(node: &Node, content_type: ContentType, peer: Option<NodeId>) -> ContextGuard {
    enter_with(WireContext {
        node: node.clone(),
        content_type,
        peer,
        from: None,
    })
}

/// Enters a context for decoding what `from` sent.
pub(crate) fn enter_from(node: &Node, content_type: ContentType, from: NodeId) -> ContextGuard {
    enter_with(WireContext {
        node: node.clone(),
        content_type,
        peer: None,
        from: Some(from),
    })
}

fn enter_with(next: WireContext) -> ContextGuard {
    let previous = CURRENT.with(|c| c.borrow_mut().replace(next));
    ContextGuard { previous }
}

/// The current context, or the serde error that explains its absence.
pub(crate) fn current<E: serde::de::Error>() -> Result<WireContext, E> {
    current_or_missing().ok_or_else(|| E::custom(Error::NoWireContext))
}

/// Same as [`current`] for serializers.
pub(crate) fn current_ser<E: serde::ser::Error>() -> Result<WireContext, E> {
    current_or_missing().ok_or_else(|| E::custom(Error::NoWireContext))
}

fn current_or_missing() -> Option<WireContext> {
    let ctx = CURRENT.with(|c| c.borrow().clone());
    if ctx.is_none() {
        MISSING.with(|m| m.set(true));
    }
    ctx
}

pub(crate) fn clear_missing() {
    MISSING.with(|m| m.set(false));
}

/// Turns a codec error caused by a missing context into [`Error::NoWireContext`].
pub(crate) fn explain(err: Error) -> Error {
    if MISSING.with(|m| m.replace(false)) {
        Error::NoWireContext
    } else {
        err
    }
}
