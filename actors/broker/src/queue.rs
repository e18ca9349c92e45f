//! A subscriber's queue: bounded, with the subscription's backpressure policy, shared by the
//! publishers (who push), the broker (which pushes what other nodes send) and the subscription's
//! actor (which pops). It lives outside the actor, so it survives the actor's restarts.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use micro_runtime::Addr;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::{Backpressure, BrokerError, Envelope, Redelivery};

/// What wakes a subscription's actor: there is something in its queue.
#[derive(Debug)]
pub(crate) enum SubMsg {
    /// Drain the queue.
    Drain,
}

/// One delivery waiting in a queue.
#[derive(Debug, Clone)]
pub(crate) struct Item {
    pub(crate) env: Arc<Envelope>,
    pub(crate) attempt: u32,
}

/// Who waits for a parked message to be taken (blocking backpressure).
pub(crate) enum Confirm {
    /// A publisher on this node, waiting on the other end.
    Local(oneshot::Sender<()>),
    /// A publisher on another node, waiting for the broker's answer.
    Remote(Arc<RemoteConfirm>),
}

/// Sends a remote publisher its answer.
type Answer = Box<dyn FnOnce(Result<(), BrokerError>) + Send>;

/// The answer a remote publisher waits for: sent once every blocking subscriber of this node took
/// the message, or at the first that could not.
pub(crate) struct RemoteConfirm {
    remaining: AtomicUsize,
    answer: Mutex<Option<Answer>>,
}

impl RemoteConfirm {
    pub(crate) fn new(answer: impl FnOnce(Result<(), BrokerError>) + Send + 'static) -> Arc<Self> {
        Arc::new(RemoteConfirm {
            // One for the broker itself, released once it has pushed to every target.
            remaining: AtomicUsize::new(1),
            answer: Mutex::new(Some(Box::new(answer))),
        })
    }

    pub(crate) fn expect_one(&self) {
        self.remaining.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn accepted(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.answer(Ok(()));
        }
    }

    pub(crate) fn rejected(&self, err: BrokerError) {
        self.answer(Err(err));
    }

    fn answer(&self, result: Result<(), BrokerError>) {
        let answer = lock(&self.answer).take();
        if let Some(answer) = answer {
            answer(result);
        }
    }
}

struct Waiter {
    item: Item,
    deadline: Instant,
    confirm: Confirm,
}

#[derive(Default)]
struct Inner {
    items: VecDeque<Item>,
    /// Messages waiting for room (blocking policy only), in arrival order.
    waiting: VecDeque<Waiter>,
    /// What the handler is working on: still set after a crash, so the restart can count it.
    in_flight: Option<Item>,
    closed: bool,
}

/// The outcome of a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    Queued,
    /// Waiting for room; the confirm will be answered.
    Parked,
    /// No room and nobody to wait (blocking policy).
    Full,
    Closed,
}

/// A subscription's counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) received: AtomicU64,
    pub(crate) handled: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) crashed: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) undecodable: AtomicU64,
    pub(crate) discarded: AtomicU64,
}

/// What a subscription has seen, for the user to read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionStats {
    /// Messages that entered the queue (redeliveries included).
    pub received: u64,
    /// Messages the handler took (returned `Ok`).
    pub handled: u64,
    /// Messages whose handler returned an error.
    pub failed: u64,
    /// Messages in hand when the handler panicked (the actor was restarted).
    pub crashed: u64,
    /// Messages pushed out of a full drop-oldest queue.
    pub dropped: u64,
    /// Publishes refused by a full blocking queue after the publisher's wait.
    pub rejected: u64,
    /// Payloads that did not decode into the subscriber's type.
    pub undecodable: u64,
    /// Messages still queued when the subscription closed.
    pub discarded: u64,
    /// Messages queued now.
    pub queued: u64,
}

/// A subscription's queue and identity.
pub(crate) struct SubQueue {
    pub(crate) id: u64,
    pub(crate) topic: String,
    pub(crate) group: Option<String>,
    pub(crate) policy: Backpressure,
    pub(crate) redelivery: Option<Redelivery>,
    inner: Mutex<Inner>,
    wake: Mutex<Option<Addr<SubMsg>>>,
    scheduled: AtomicBool,
    pub(crate) counters: Counters,
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing under these locks can panic half-way; a poisoned lock still holds sound data.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl SubQueue {
    pub(crate) fn new(
        id: u64,
        topic: String,
        group: Option<String>,
        policy: Backpressure,
        redelivery: Option<Redelivery>,
    ) -> Self {
        SubQueue {
            id,
            topic,
            group,
            policy,
            redelivery,
            inner: Mutex::new(Inner::default()),
            wake: Mutex::new(None),
            scheduled: AtomicBool::new(false),
            counters: Counters::default(),
        }
    }

    /// Pushes a delivery. With `park`, a blocking queue that is full keeps the message until
    /// there is room or the deadline passes, and answers the confirm.
    pub(crate) fn push(&self, item: Item, park: Option<(Instant, Confirm)>) -> Pushed {
        let mut inner = lock(&self.inner);
        if inner.closed {
            return Pushed::Closed;
        }
        let capacity = self.policy.capacity();
        match self.policy {
            Backpressure::DropOldest { .. } => {
                if inner.items.len() >= capacity {
                    inner.items.pop_front();
                    self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                }
                inner.items.push_back(item);
            }
            Backpressure::Block { .. } => {
                if inner.items.len() < capacity && inner.waiting.is_empty() {
                    inner.items.push_back(item);
                } else if let Some((deadline, confirm)) = park {
                    inner.waiting.push_back(Waiter {
                        item,
                        deadline,
                        confirm,
                    });
                    return Pushed::Parked;
                } else {
                    return Pushed::Full;
                }
            }
        }
        drop(inner);
        self.counters.received.fetch_add(1, Ordering::Relaxed);
        self.schedule();
        Pushed::Queued
    }

    /// Takes the next delivery for the handler (and lets a waiting one in).
    pub(crate) fn pop(&self) -> Option<Item> {
        let mut inner = lock(&self.inner);
        let item = inner.items.pop_front()?;
        let capacity = self.policy.capacity();
        let now = if inner.waiting.is_empty() {
            None
        } else {
            Some(Instant::now())
        };
        while let Some(now) = now
            && inner.items.len() < capacity
        {
            let Some(waiter) = inner.waiting.pop_front() else {
                break;
            };
            if waiter.deadline <= now {
                self.reject(waiter);
                continue;
            }
            let taken = match waiter.confirm {
                Confirm::Local(tx) => tx.send(()).is_ok(),
                Confirm::Remote(confirm) => {
                    confirm.accepted();
                    true
                }
            };
            if taken {
                inner.items.push_back(waiter.item);
                self.counters.received.fetch_add(1, Ordering::Relaxed);
            }
        }
        inner.in_flight = Some(item.clone());
        Some(item)
    }

    /// A waiter whose time ran out. A local publisher counts its own rejection when it stops
    /// waiting; a remote one is answered here.
    fn reject(&self, waiter: Waiter) {
        if let Confirm::Remote(confirm) = waiter.confirm {
            self.counters.rejected.fetch_add(1, Ordering::Relaxed);
            confirm.rejected(self.full_error());
        }
    }

    pub(crate) fn full_error(&self) -> BrokerError {
        let timeout = match self.policy {
            Backpressure::Block { timeout, .. } => timeout,
            Backpressure::DropOldest { .. } => std::time::Duration::ZERO,
        };
        BrokerError::Full {
            topic: self.topic.clone(),
            subscription: self.id,
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// Answers the waiters whose deadline passed (and forgets local ones that gave up).
    pub(crate) fn expire_waiters(&self, now: Instant) {
        let mut inner = lock(&self.inner);
        if inner.waiting.is_empty() {
            return;
        }
        let waiting = std::mem::take(&mut inner.waiting);
        for waiter in waiting {
            let gone = match &waiter.confirm {
                Confirm::Local(tx) => tx.is_closed(),
                Confirm::Remote(_) => false,
            };
            if gone {
                continue;
            }
            if waiter.deadline <= now {
                self.reject(waiter);
            } else {
                inner.waiting.push_back(waiter);
            }
        }
    }

    /// The handler finished the current delivery.
    pub(crate) fn done(&self) {
        lock(&self.inner).in_flight = None;
    }

    /// The delivery a crashed handler was working on, if any.
    pub(crate) fn take_in_flight(&self) -> Option<Item> {
        lock(&self.inner).in_flight.take()
    }

    pub(crate) fn len(&self) -> usize {
        lock(&self.inner).items.len()
    }

    pub(crate) fn is_closed(&self) -> bool {
        lock(&self.inner).closed
    }

    /// Closes the queue: what is queued is discarded (counted), waiting publishers are refused.
    pub(crate) fn close(&self) {
        let mut inner = lock(&self.inner);
        inner.closed = true;
        let discarded = inner.items.len() as u64;
        inner.items.clear();
        self.counters
            .discarded
            .fetch_add(discarded, Ordering::Relaxed);
        for waiter in std::mem::take(&mut inner.waiting) {
            if let Confirm::Remote(confirm) = waiter.confirm {
                confirm.rejected(BrokerError::Closed(format!("subscription {}", self.id)));
            }
        }
        *lock(&self.wake) = None;
    }

    /// The actor's incarnation that drains the queue (set at every start).
    pub(crate) fn set_waker(&self, addr: Addr<SubMsg>) {
        *lock(&self.wake) = Some(addr);
        // A fresh incarnation drains whatever is queued.
        self.scheduled.store(false, Ordering::Release);
        self.schedule();
    }

    /// Tells the actor there is work, unless it was already told.
    pub(crate) fn schedule(&self) {
        if !self.scheduled.swap(true, Ordering::AcqRel) {
            let wake = lock(&self.wake).clone();
            if let Some(addr) = wake {
                let _ = addr.send(SubMsg::Drain);
            }
        }
    }

    /// The actor starts draining: pushes from now on must wake it again.
    pub(crate) fn draining(&self) {
        self.scheduled.store(false, Ordering::Release);
    }

    pub(crate) fn stats(&self) -> SubscriptionStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SubscriptionStats {
            received: get(&c.received),
            handled: get(&c.handled),
            failed: get(&c.failed),
            crashed: get(&c.crashed),
            dropped: get(&c.dropped),
            rejected: get(&c.rejected),
            undecodable: get(&c.undecodable),
            discarded: get(&c.discarded),
            queued: self.len() as u64,
        }
    }
}
