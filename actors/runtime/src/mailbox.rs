//! An optional bound on an actor's mailbox.
//!
//! ractor's mailboxes are unbounded. Every actor shares one of these with the local
//! [`Addr`](crate::Addr)s to it. While it has no capacity (the default) it costs one relaxed load
//! per message and counts nothing. With a capacity — from the child spec, or set when the actor
//! is exposed to other nodes — senders reserve a slot before they enqueue and the actor frees it
//! when it takes the message, so a full mailbox is refused at the sender with
//! [`Error::MailboxFull`](crate::Error::MailboxFull) instead of growing without limit.

use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug, Default)]
pub(crate) struct MailboxBound {
    queued: AtomicUsize,
    /// 0 while unbounded.
    capacity: AtomicUsize,
}

impl MailboxBound {
    pub(crate) fn new(capacity: Option<usize>) -> Self {
        MailboxBound {
            queued: AtomicUsize::new(0),
            capacity: AtomicUsize::new(capacity.unwrap_or(0)),
        }
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
        capacity == 0
            || self
                .queued
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < capacity).then_some(n + 1)
                })
                .is_ok()
    }

    /// Frees a slot: the actor took a message, or an enqueue failed after reserving.
    #[inline(always)]
    pub(crate) fn release(&self) {
        if self.capacity() != 0 {
            let _ = self
                .queued
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        }
    }
}
