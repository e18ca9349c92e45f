//! An optional bound on an actor's mailbox.
//!
//! ractor's mailboxes are unbounded. An actor spawned with a capacity shares one of these counters
//! with every local [`Addr`](crate::Addr) to it: senders reserve a slot before they enqueue and the
//! actor frees it when it takes the message, so a full mailbox is refused at the sender with
//! [`Error::MailboxFull`](crate::Error::MailboxFull) instead of growing without limit.

use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug)]
pub(crate) struct MailboxBound {
    queued: AtomicUsize,
    capacity: usize,
}

impl MailboxBound {
    pub(crate) fn new(capacity: usize) -> Self {
        MailboxBound {
            queued: AtomicUsize::new(0),
            capacity,
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Reserves a slot; false when the mailbox is full.
    pub(crate) fn try_reserve(&self) -> bool {
        self.queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.capacity).then_some(n + 1)
            })
            .is_ok()
    }

    /// Frees a slot: the actor took a message, or an enqueue failed after reserving.
    pub(crate) fn release(&self) {
        self.queued.fetch_sub(1, Ordering::AcqRel);
    }
}
