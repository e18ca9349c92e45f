//! The wire context: which node is encoding or decoding right now.
//!
//! serde gives `Serialize`/`Deserialize` no way to pass context, yet an [`Addr`](crate::Addr) must
//! know which node exports it and a decoded [`Reply`](crate::Reply) which node it answers through.
//! Whoever encodes or decodes (the node, or a peer link's read loop) sets a scoped, thread-local
//! guard; the handles' serde impls read it and fail with a clear error when none is set.

use std::cell::{Cell, RefCell};

use super::ContentType;
use crate::{Error, Node, NodeId};

thread_local! {
    static CURRENT: RefCell<Option<WireContext>> = const { RefCell::new(None) };
    static MISSING: Cell<bool> = const { Cell::new(false) };
    static REQUEST: Cell<Option<u64>> = const { Cell::new(None) };
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
    REQUEST.with(|r| r.set(Some(request)));
}

/// Takes the request id noted while encoding the current message.
pub(crate) fn take_request() -> Option<u64> {
    REQUEST.with(|r| r.take())
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
