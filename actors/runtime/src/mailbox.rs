//! An optional bound on an actor's mailbox.
//!
//! ractor's mailboxes are unbounded. Every actor shares one of these with the local
//! [`Addr`](crate::Addr)s to it. While it has no capacity (the default) it costs one relaxed load
//! per message and counts nothing. With a capacity — from the child spec, or set when the actor
//! is exposed to other nodes — senders reserve a slot before they enqueue and the actor frees it
//! when it takes the message, so a full mailbox is refused at the sender with
//! [`Error::MailboxFull`](crate::Error::MailboxFull) instead of growing without limit.
//!
//! A named actor's mailbox is counted from its start even without a capacity (`tracked`), so
//! the count is exact: a remote message may then be handled inline, in the link's reading task,
//! when the count says the mailbox is empty (see [`InlineTarget`]).

use std::any::Any;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};

#[derive(Default)]
pub(crate) struct MailboxBound {
    queued: AtomicUsize,
    /// 0 while unbounded.
    capacity: AtomicUsize,
    /// Counted from the start whatever the capacity (named actors), so `queued` is exact.
    tracked: bool,
    /// The incarnation's inline handler: a `Weak<dyn InlineTarget<M>>` for its message type.
    inline: OnceLock<Box<dyn Any + Send + Sync>>,
}

impl std::fmt::Debug for MailboxBound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailboxBound")
            .field("queued", &self.queued)
            .field("capacity", &self.capacity)
            .field("tracked", &self.tracked)
            .finish_non_exhaustive()
    }
}

/// What can take a remote message inline, in the reading task, instead of through the mailbox.
pub(crate) trait InlineTarget<M>: Send + Sync {
    /// Handles `msg` now if the actor is idle and its mailbox empty; gives it back otherwise.
    fn try_inline(self: Arc<Self>, msg: M) -> Result<(), M>;
}

impl MailboxBound {
    pub(crate) fn new(capacity: Option<usize>) -> Self {
        MailboxBound {
            queued: AtomicUsize::new(0),
            capacity: AtomicUsize::new(capacity.unwrap_or(0)),
            tracked: false,
            inline: OnceLock::new(),
        }
    }

    /// A mailbox counted from the start (see the module docs), for actors with a name.
    pub(crate) fn tracked(capacity: Option<usize>) -> Self {
        MailboxBound {
            tracked: true,
            ..MailboxBound::new(capacity)
        }
    }

    /// Whether messages are counted (a capacity, or tracked from the start).
    #[inline(always)]
    fn counting(&self) -> bool {
        self.tracked || self.capacity() != 0
    }

    /// Whether nothing is queued, as far as an exact count can tell (false when not tracked).
    #[inline]
    pub(crate) fn known_empty(&self) -> bool {
        self.tracked && self.queued.load(Ordering::Acquire) == 0
    }

    /// Offers the incarnation's inline handler (once, when it has started).
    pub(crate) fn set_inline<M: 'static>(&self, target: Weak<dyn InlineTarget<M>>) {
        if self.tracked {
            let _ = self.inline.set(Box::new(target));
        }
    }

    /// The inline handler for messages of type `M`, while the incarnation lives.
    #[inline]
    pub(crate) fn inline<M: 'static>(&self) -> Option<Arc<dyn InlineTarget<M>>> {
        self.inline
            .get()?
            .downcast_ref::<Weak<dyn InlineTarget<M>>>()?
            .upgrade()
    }

    #[inline(always)]
    pub(crate) fn capacity(&self) -> usize {
        self.capacity.load(Ordering::Relaxed)
    }

    /// Bounds an unbounded mailbox (an existing bound is kept). Messages already queued were not
    /// counted, so the bound is approximate until they drain.
    pub(crate) fn bound_if_unbounded(&self, capacity: usize) {
        let _ =
            self.capacity
                .compare_exchange(0, capacity.max(1), Ordering::AcqRel, Ordering::Relaxed);
    }

    /// Reserves a slot; false when the mailbox is full.
    #[inline(always)]
    pub(crate) fn try_reserve(&self) -> bool {
        let capacity = self.capacity();
        if capacity == 0 {
            if self.tracked {
                self.queued.fetch_add(1, Ordering::AcqRel);
            }
            return true;
        }
        self.queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < capacity).then_some(n + 1)
            })
            .is_ok()
    }

    /// Frees a slot: the actor took a message, or an enqueue failed after reserving.
    #[inline(always)]
    pub(crate) fn release(&self) {
        if self.counting() {
            let _ = self
                .queued
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        }
    }
}
