//! The wire context: which node is encoding or decoding right now.
//!
//! serde gives `Serialize`/`Deserialize` no way to pass context, yet an [`Addr`](crate::Addr) must
//! know which node exports it and a decoded [`Reply`](crate::Reply) which node it answers through.
//! Whoever encodes or decodes (the node, or a peer link's read loop) sets a scoped, thread-local
//! guard; the handles' serde impls read it and fail with a clear error when none is set.

use std::cell::{Cell, RefCell};

use super::ContentType;
use crate::{Error, Node};

thread_local! {
    static CURRENT: RefCell<Option<WireContext>> = const { RefCell::new(None) };
    static MISSING: Cell<bool> = const { Cell::new(false) };
}

#[derive(Clone)]
pub(crate) struct WireContext {
    pub(crate) node: Node,
    pub(crate) content_type: ContentType,
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

pub(crate) fn enter(node: &Node, content_type: ContentType) -> ContextGuard {
    let next = WireContext {
        node: node.clone(),
        content_type,
    };
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
