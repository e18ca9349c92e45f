//! Outbox batching and credit, as state machines free of I/O: the deliveries queued for one peer
//! and how they are cut into frames (in order), the sender's flow-control window, and the
//! receiver's count that decides when to send credit back.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};

use micro_runtime::NodeId;

use crate::protocol::Dispatch;

/// Deliveries queued for one peer that one frame carries at most.
pub(crate) const MAX_BATCH: usize = 512;
/// Payload bytes one frame carries at most (more only for a single large message).
pub(crate) const MAX_BATCH_BYTES: usize = 1 << 20;
/// A receiving broker confirms every this many deliveries from a peer.
pub(crate) const CREDIT_EVERY: u64 = 512;

/// Deliveries queued for one peer, in publish order.
#[derive(Default)]
pub(crate) struct Outbox {
    queued: VecDeque<Dispatch>,
}

impl Outbox {
    /// Queues a delivery; returns whether a full batch is now waiting (its publisher may send
    /// it at once).
    pub(crate) fn push(&mut self, delivery: Dispatch) -> bool {
        self.queued.push_back(delivery);
        self.queued.len() >= MAX_BATCH
    }

    /// The next frame's deliveries, oldest first: at most [`MAX_BATCH`] of them and
    /// [`MAX_BATCH_BYTES`] of payload (always at least one). Empty when nothing is queued.
    pub(crate) fn next_batch(&mut self) -> Vec<Dispatch> {
        let mut bytes = 0;
        let mut take = 0;
        for delivery in self.queued.iter().take(MAX_BATCH) {
            bytes += delivery.envelope.body.len();
            if take > 0 && bytes > MAX_BATCH_BYTES {
                break;
            }
            take += 1;
        }
        self.queued.drain(..take).collect()
    }
}

/// The sender's flow-control window to one peer, in deliveries: how many were sent and how many
/// the peer confirmed (lock-free: publishers check it on every remote publish).
#[derive(Default)]
pub(crate) struct Window {
    sent: AtomicU64,
    confirmed: AtomicU64,
}

impl Window {
    /// One more delivery handed to the outbox.
    pub(crate) fn sent_one(&self) {
        self.sent.fetch_add(1, Ordering::AcqRel);
    }

    /// The peer has received `received` deliveries in all (an older, smaller count is ignored).
    pub(crate) fn confirm(&self, received: u64) {
        self.confirmed.fetch_max(received, Ordering::AcqRel);
    }

    /// Deliveries sent and not yet confirmed.
    pub(crate) fn in_flight(&self) -> u64 {
        self.sent
            .load(Ordering::Acquire)
            .saturating_sub(self.confirmed.load(Ordering::Acquire))
    }
}

/// The receiver's count of deliveries from each peer (kept across broker restarts), which says
/// when to send credit.
#[derive(Default)]
pub(crate) struct CreditCounter {
    received: HashMap<NodeId, u64>,
}

impl CreditCounter {
    /// `n` more deliveries arrived from `from`: the count to send back as credit, when it
    /// crossed a multiple of [`CREDIT_EVERY`].
    pub(crate) fn received(&mut self, from: NodeId, n: u64) -> Option<u64> {
        let count = self.received.entry(from).or_insert(0);
        let before = *count;
        *count += n;
        (before / CREDIT_EVERY != *count / CREDIT_EVERY).then_some(*count)
    }

    /// Forgets a peer that went down.
    pub(crate) fn forget(&mut self, node: NodeId) {
        self.received.remove(&node);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::Envelope;

    fn delivery(id: u64, bytes: usize) -> Dispatch {
        Dispatch {
            envelope: Arc::new(Envelope {
                origin: NodeId::from_u128(1),
                id,
                topic: "t".into(),
                content_type: "application/octet-stream".into(),
                headers: Default::default(),
                body: vec![0; bytes],
            }),
            subs: vec![1],
            attempt: 1,
            confirm: None,
        }
    }

    fn ids(batch: &[Dispatch]) -> Vec<u64> {
        batch.iter().map(|d| d.envelope.id).collect()
    }

    #[test]
    fn batches_leave_in_order_and_at_most_max_batch_long() {
        let mut outbox = Outbox::default();
        let full: Vec<bool> = (0..1100).map(|id| outbox.push(delivery(id, 8))).collect();
        assert_eq!(
            full.iter().position(|f| *f),
            Some(MAX_BATCH - 1),
            "full at 512"
        );
        let (a, b, c) = (
            outbox.next_batch(),
            outbox.next_batch(),
            outbox.next_batch(),
        );
        assert_eq!((a.len(), b.len(), c.len()), (512, 512, 76));
        let all: Vec<u64> = [a, b, c].iter().flat_map(|batch| ids(batch)).collect();
        assert_eq!(all, (0..1100).collect::<Vec<_>>(), "publish order kept");
        assert!(outbox.next_batch().is_empty());
    }

    #[test]
    fn a_batch_holds_a_mebibyte_unless_one_message_is_larger() {
        let mut outbox = Outbox::default();
        outbox.push(delivery(1, 2 << 20));
        outbox.push(delivery(2, 600 << 10));
        outbox.push(delivery(3, 600 << 10));
        assert_eq!(
            ids(&outbox.next_batch()),
            vec![1],
            "a large message goes alone"
        );
        assert_eq!(ids(&outbox.next_batch()), vec![2]);
        assert_eq!(ids(&outbox.next_batch()), vec![3]);
    }

    #[test]
    fn the_window_counts_deliveries_until_the_peer_confirms_them() {
        let window = Window::default();
        (0..1000).for_each(|_| window.sent_one());
        assert_eq!(window.in_flight(), 1000);
        window.confirm(512);
        assert_eq!(window.in_flight(), 488);
        window.confirm(100);
        assert_eq!(window.in_flight(), 488, "an older credit changes nothing");
    }

    #[test]
    fn credit_goes_back_every_credit_every_deliveries_per_peer() {
        let (a, b) = (NodeId::from_u128(2), NodeId::from_u128(3));
        let mut counter = CreditCounter::default();
        assert_eq!(counter.received(a, 511), None);
        assert_eq!(counter.received(b, 300), None);
        assert_eq!(counter.received(a, 1), Some(512));
        assert_eq!(
            counter.received(a, 600),
            Some(1112),
            "one credit per frame crossing"
        );
        assert_eq!(counter.received(a, 100), None);
        counter.forget(a);
        assert_eq!(counter.received(a, 512), Some(512), "counted afresh");
    }
}
