//! Tasks that end with their owner: [`AbortOnDrop`], and the helper tasks behind
//! [`Context::tick`](crate::Context::tick) and [`Context::forward`](crate::Context::forward),
//! which put ticks and a stream's items into an actor's own mailbox.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use ractor::ActorRef;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;

use crate::mailbox::MailboxBound;

/// A task that is aborted when this guard is dropped, so the task ends with whatever holds the
/// guard — an actor's state, a handle, a cache — even when that owner is dropped by a panic or a
/// kill rather than a graceful stop.
///
/// ```
/// use micro_runtime::AbortOnDrop;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let guard = AbortOnDrop::spawn(async {
///     loop {
///         tokio::time::sleep(std::time::Duration::from_secs(1)).await;
///     }
/// });
/// assert!(!guard.is_finished());
/// drop(guard); // the loop is aborted
/// # }
/// ```
#[must_use = "dropping an AbortOnDrop aborts its task at once"]
pub struct AbortOnDrop<T = ()>(JoinHandle<T>);

impl<T> AbortOnDrop<T> {
    /// Guards an already spawned task.
    pub fn new(handle: JoinHandle<T>) -> Self {
        AbortOnDrop(handle)
    }

    /// Spawns `future` on the current tokio runtime and guards it.
    ///
    /// # Panics
    /// Outside a tokio runtime, as [`tokio::spawn`] does.
    pub fn spawn<F>(future: F) -> Self
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        AbortOnDrop(tokio::spawn(future))
    }

    /// Whether the task has ended (finished, panicked or aborted).
    pub fn is_finished(&self) -> bool {
        self.0.is_finished()
    }

    /// Aborts the task now (dropping the guard does the same).
    pub fn abort(&self) {
        self.0.abort();
    }
}

impl<T> From<JoinHandle<T>> for AbortOnDrop<T> {
    fn from(handle: JoinHandle<T>) -> Self {
        AbortOnDrop(handle)
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> fmt::Debug for AbortOnDrop<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AbortOnDrop")
            .field("task", &self.0.id())
            .field("finished", &self.0.is_finished())
            .finish()
    }
}

/// An actor's own mailbox as its helper tasks see it: the incarnation's ractor handle and the
/// bound it shares with its local `Addr`s. It never follows a restart.
pub(crate) struct Mailbox<M> {
    actor: ActorRef<M>,
    bound: Arc<MailboxBound>,
}

/// The first and the longest wait for room in a full mailbox before trying again.
const FULL_WAIT: (Duration, Duration) = (Duration::from_millis(1), Duration::from_millis(100));

impl<M: Send + 'static> Mailbox<M> {
    pub(crate) fn new(actor: ActorRef<M>, bound: Arc<MailboxBound>) -> Self {
        Mailbox { actor, bound }
    }

    /// Reserves room for one message; false when the mailbox is full.
    fn reserve(&self) -> bool {
        self.bound.try_reserve()
    }

    /// Enqueues a message room was reserved for; false once the actor has stopped.
    fn enqueue(&self, msg: M) -> bool {
        let queued = self.actor.cast(msg).is_ok();
        if !queued {
            self.bound.release();
        }
        queued
    }

    /// Puts `msg` in the mailbox, waiting while it is full; false once the actor has stopped.
    async fn put(&self, msg: M) -> bool {
        let mut wait = FULL_WAIT.0;
        while !self.reserve() {
            if self.actor.get_status() == ractor::ActorStatus::Stopped {
                return false;
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(FULL_WAIT.1);
        }
        self.enqueue(msg)
    }
}

/// Puts `msg()` in the mailbox every `period` (the first after one period) until the actor stops.
/// A tick that finds the mailbox full is skipped; a late one is not made up in a burst.
pub(crate) fn tick<M, F>(mailbox: Mailbox<M>, period: Duration, mut msg: F) -> AbortOnDrop
where
    M: Send + 'static,
    F: FnMut() -> M + Send + 'static,
{
    // tokio's interval refuses a zero period.
    let period = period.max(Duration::from_millis(1));
    AbortOnDrop::spawn(async move {
        let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            if !mailbox.reserve() {
                tracing::trace!("tick skipped: the mailbox is full");
            } else if !mailbox.enqueue(msg()) {
                return;
            }
        }
    })
}

/// Puts each item of `stream` (through `f`; `None` skips it) in the mailbox, in order, until the
/// stream ends or the actor stops. While the mailbox is full the stream is not polled.
pub(crate) fn forward<M, S, F, R>(mailbox: Mailbox<M>, stream: S, mut f: F) -> AbortOnDrop
where
    M: Send + 'static,
    S: Stream + Send + 'static,
    F: FnMut(S::Item) -> R + Send + 'static,
    R: Into<Option<M>>,
{
    AbortOnDrop::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        loop {
            // Bound apart from the await below, so an item need not be `Send`.
            let Some(item) = stream.next().await else {
                return;
            };
            let msg: Option<M> = f(item).into();
            if let Some(msg) = msg
                && !mailbox.put(msg).await
            {
                return;
            }
        }
    })
}

/// A watch channel's values as a stream: the current one first, then each change; it ends when
/// the sender is dropped.
pub(crate) fn watch_stream<T>(rx: watch::Receiver<T>) -> impl Stream<Item = T> + Send + 'static
where
    T: Clone + Send + Sync + 'static,
{
    futures::stream::unfold((rx, true), |(mut rx, first)| async move {
        if !first && rx.changed().await.is_err() {
            return None;
        }
        let value = rx.borrow_and_update().clone();
        Some((value, (rx, false)))
    })
}

/// A broadcast channel's values as a stream, lags included (`Err(RecvError::Lagged(n))`); it ends
/// when the channel closes.
pub(crate) fn broadcast_stream<T>(
    rx: broadcast::Receiver<T>,
) -> impl Stream<Item = Result<T, broadcast::error::RecvError>> + Send + 'static
where
    T: Clone + Send + 'static,
{
    futures::stream::unfold(rx, |mut rx| async move {
        match rx.recv().await {
            Err(broadcast::error::RecvError::Closed) => None,
            received => Some((received, rx)),
        }
    })
}

/// An mpsc channel's values as a stream; it ends when every sender is dropped.
pub(crate) fn channel_stream<T>(rx: mpsc::Receiver<T>) -> impl Stream<Item = T> + Send + 'static
where
    T: Send + 'static,
{
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
}
