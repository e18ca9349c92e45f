//! The memory backend: the lease table kept in one actor's state, on one node. Other nodes of
//! the cluster share it through the exposed actor.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use micro_runtime::{Actor, ActorError, ChildSpec, Context, Node, Reply, StreamSender};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::leases::{Effects, Leases};
use crate::protocol::{Command, SyncCommand, tick};
use crate::{Lease, SYNC_NAME, Sync, SyncError, SyncMsg};

/// States queued for one observer before it counts as stuck and is dropped.
const OBSERVER_QUEUE: usize = 1024;

type Waiting = Reply<Result<Lease, SyncError>>;

/// The in-memory sync actor: glue around the lease table (a state machine with time passed in).
///
/// Limits: it is a single point of failure (its node's death loses every lease, and a lock
/// service that restarts empty may grant a name whose previous holder still believes it holds
/// it until that holder's `lost()` fires); fencing tokens are seeded from the wall clock
/// (microseconds since the Unix epoch) at every start, so they keep increasing across restarts
/// as long as the clock does not step back.
#[derive(Debug)]
pub struct MemorySync {
    leases: Leases<Waiting>,
    observers: HashMap<String, Vec<mpsc::Sender<Option<Lease>>>>,
    tick_every: Duration,
}

impl MemorySync {
    /// An empty lease table, checking expiries every 20 ms.
    pub fn new() -> Self {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2));
        MemorySync {
            leases: Leases::new(seed),
            observers: HashMap::new(),
            tick_every: Duration::from_millis(20),
        }
    }

    /// How often expired leases and waiters are handled (20 ms by default).
    #[must_use]
    pub fn tick_every(mut self, period: Duration) -> Self {
        self.tick_every = period;
        self
    }

    /// A child spec for a fresh memory sync actor named `"sync"`.
    pub fn spec() -> ChildSpec<MemorySync> {
        ChildSpec::new(MemorySync::new).named(SYNC_NAME)
    }

    /// Starts a memory sync actor on `node` (supervised by the node's root, named and exposed
    /// as `"sync"`, so other nodes can use it) and returns a handle to it.
    pub async fn start(node: &Node) -> Result<Sync, SyncError> {
        let addr = node.spawn(MemorySync::spec()).await?;
        node.expose::<SyncMsg>(SYNC_NAME)?;
        Ok(Sync::new(addr))
    }

    fn apply(&mut self, effects: Effects<Waiting>) {
        for (reply, outcome) in effects.answers {
            let granted = outcome.as_ref().ok().map(|l| (l.name.clone(), l.token));
            if reply.send(outcome).is_err()
                && let Some((name, token)) = granted
            {
                // The waiter is gone: give the lease back at once.
                tracing::debug!(%name, token, "grant undelivered, released");
                let (_, more) = self.leases.release(&name, token, Instant::now());
                self.apply(more);
            }
        }
        for (name, state) in effects.changes {
            if let Some(observers) = self.observers.get_mut(&name) {
                observers.retain(|o| o.try_send(state.clone()).is_ok());
                if observers.is_empty() {
                    self.observers.remove(&name);
                }
            }
        }
    }

    fn observe(&mut self, name: String, mut events: StreamSender<Option<Lease>>) {
        let (queue, mut rx) = mpsc::channel::<Option<Lease>>(OBSERVER_QUEUE);
        let _ = queue.try_send(self.leases.holder(&name, Instant::now()));
        // One task per observer, so a slow one never holds the actor up.
        tokio::spawn(async move {
            while let Some(state) = rx.recv().await {
                if events.send(state).await.is_err() {
                    return;
                }
            }
            let _ = events.finish().await;
        });
        self.observers.entry(name).or_default().push(queue);
    }
}

impl Default for MemorySync {
    fn default() -> Self {
        MemorySync::new()
    }
}

impl Actor for MemorySync {
    type Msg = SyncMsg;

    async fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        ctx.tick(self.tick_every, tick);
        Ok(())
    }

    async fn handle(&mut self, _ctx: &mut Context<Self>, msg: SyncMsg) -> Result<(), ActorError> {
        let now = Instant::now();
        match msg {
            SyncMsg::Acquire {
                name,
                holder,
                ttl_ms,
                wait_ms,
                reply,
            } => {
                let effects = self.leases.acquire(
                    &name,
                    holder,
                    Duration::from_millis(ttl_ms),
                    Duration::from_millis(wait_ms),
                    reply,
                    now,
                );
                self.apply(effects);
            }
            SyncMsg::Renew {
                name,
                token,
                ttl_ms,
                reply,
            } => {
                let _ =
                    reply.send(
                        self.leases
                            .renew(&name, token, Duration::from_millis(ttl_ms), now),
                    );
            }
            SyncMsg::Release { name, token, reply } => {
                let (result, effects) = self.leases.release(&name, token, now);
                let _ = reply.send(result);
                self.apply(effects);
            }
            SyncMsg::Holder { name, reply } => {
                let effects = self.leases.poll(now);
                self.apply(effects);
                let _ = reply.send(Ok(self.leases.holder(&name, now)));
            }
            SyncMsg::Observe { name, events } => self.observe(name, events),
            SyncMsg::Local(SyncCommand(Command::Tick)) => {
                let effects = self.leases.poll(now);
                self.apply(effects);
            }
        }
        Ok(())
    }
}
