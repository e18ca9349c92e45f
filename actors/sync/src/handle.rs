//! The handle callers use: locks and elections on a sync actor, local or remote alike.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use micro_runtime::{AbortOnDrop, Addr, Node, NodeId, StreamReceiver, stream_channel};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::{Lease, SYNC_NAME, SyncError, SyncMsg};

/// The default time to wait for a sync actor's answer (on top of a lock's wait timeout).
const ASK: Duration = Duration::from_secs(5);

/// The default lease TTL of a leadership.
const ELECTION_TTL: Duration = Duration::from_secs(5);

/// States an observer may have in flight before it is held back.
const OBSERVE_BUFFER: usize = 64;

const LOCK_PREFIX: &str = "lock/";
const ELECTION_PREFIX: &str = "election/";

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A handle to a sync actor (local or on another node): distributed locks with fencing tokens,
/// and leader elections.
///
/// Named after Go Micro's `sync.Sync`; import it under another name (`use micro_sync::Sync as
/// Locks;`) where `std::marker::Sync` is also meant.
///
/// ```
/// use std::time::Duration;
/// use micro_runtime::Node;
/// use micro_sync::MemorySync;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let node = Node::builder().start().await?;
/// let sync = MemorySync::start(&node).await?;
///
/// let guard = sync.lock("invoices", Duration::from_secs(10), Duration::from_secs(1)).await?;
/// // Pass guard.token() to the resource, which refuses tokens lower than the highest it saw.
/// assert!(sync.try_lock("invoices", Duration::from_secs(10)).await?.is_none());
/// guard.unlock().await?;
/// node.shutdown().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Sync {
    addr: Addr<SyncMsg>,
    timeout: Duration,
    holder: Arc<str>,
    election_ttl: Duration,
}

impl Sync {
    /// A handle for the sync actor at `addr`.
    pub fn new(addr: Addr<SyncMsg>) -> Self {
        Sync {
            addr,
            timeout: ASK,
            holder: format!(
                "pid{}-{:08x}",
                std::process::id(),
                NodeId::random().as_u128() as u32
            )
            .into(),
            election_ttl: ELECTION_TTL,
        }
    }

    /// The sync actor running on `node` (named `"sync"`).
    pub fn lookup(node: &Node) -> Result<Self, SyncError> {
        Ok(Sync::new(node.lookup::<SyncMsg>(SYNC_NAME)?).holder(&node.id().to_string()))
    }

    /// The sync actor exposed on the node `peer` (a remote handle through `node`'s link).
    pub async fn remote(node: &Node, peer: NodeId) -> Result<Self, SyncError> {
        Ok(
            Sync::new(node.lookup_remote::<SyncMsg>(peer, SYNC_NAME).await?)
                .holder(&node.id().to_string()),
        )
    }

    /// The same handle with another timeout for each request (5 s by default; a lock's wait
    /// comes on top).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The same handle naming its leases' holder `holder` (what [`Lease::holder`] shows for
    /// locks; by default the process id and a random suffix, or the node's id).
    #[must_use]
    pub fn holder(mut self, holder: &str) -> Self {
        self.holder = holder.into();
        self
    }

    /// The same handle with another lease TTL for leaderships (5 s by default): a leader that
    /// dies is replaced within about this long.
    #[must_use]
    pub fn with_election_ttl(mut self, ttl: Duration) -> Self {
        self.election_ttl = ttl;
        self
    }

    /// The sync actor's address.
    pub fn addr(&self) -> &Addr<SyncMsg> {
        &self.addr
    }

    async fn acquire(
        &self,
        name: String,
        holder: String,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Held, SyncError> {
        let sent = Instant::now();
        let (ttl_ms, wait_ms) = (millis(ttl), millis(wait));
        let lease = self
            .addr
            .ask(
                |reply| SyncMsg::Acquire {
                    name,
                    holder,
                    ttl_ms,
                    wait_ms,
                    reply,
                },
                self.timeout + wait,
            )
            .await??;
        Ok(Held::start(self.clone(), lease, sent))
    }

    /// Acquires the lock `name` with a lease of `ttl`, waiting up to `wait` while another holds
    /// it (`Timeout` then). The lease is renewed while the guard lives; the guard releases the
    /// lock when dropped (best-effort, in the background) or with [`LockGuard::unlock`].
    pub async fn lock(
        &self,
        name: &str,
        ttl: Duration,
        wait: Duration,
    ) -> Result<LockGuard, SyncError> {
        let held = self
            .acquire(
                format!("{LOCK_PREFIX}{name}"),
                self.holder.to_string(),
                ttl,
                wait,
            )
            .await?;
        Ok(LockGuard { held })
    }

    /// Acquires the lock `name` if it is free; `None` if another holds it.
    pub async fn try_lock(
        &self,
        name: &str,
        ttl: Duration,
    ) -> Result<Option<LockGuard>, SyncError> {
        match self.lock(name, ttl, Duration::ZERO).await {
            Ok(guard) => Ok(Some(guard)),
            Err(SyncError::Timeout { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Campaigns in `election` as `candidate` until elected: the leadership is a lease with the
    /// handle's election TTL, renewed while held; its token is the term, strictly increasing
    /// across leaders. Cancel the future to stop campaigning.
    pub async fn campaign(&self, election: &str, candidate: &str) -> Result<Leadership, SyncError> {
        let name = format!("{ELECTION_PREFIX}{election}");
        loop {
            match self
                .acquire(
                    name.clone(),
                    candidate.to_owned(),
                    self.election_ttl,
                    Duration::from_secs(30),
                )
                .await
            {
                Ok(held) => return Ok(Leadership { held }),
                Err(SyncError::Timeout { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Who leads `election` now, if anyone.
    pub async fn leader(&self, election: &str) -> Result<Option<Leader>, SyncError> {
        let name = format!("{ELECTION_PREFIX}{election}");
        let lease = self
            .addr
            .ask(|reply| SyncMsg::Holder { name, reply }, self.timeout)
            .await??;
        Ok(lease.map(Leader::from))
    }

    /// Who leads `election`: the current leader (or `None`) first, then every change, in order.
    /// For candidates and onlookers alike. The stream ends if the sync actor goes away.
    pub fn observe(&self, election: &str) -> Result<LeaderStream, SyncError> {
        let (events, receiver) = stream_channel(OBSERVE_BUFFER);
        self.addr.send(SyncMsg::Observe {
            name: format!("{ELECTION_PREFIX}{election}"),
            events,
        })?;
        Ok(LeaderStream { receiver })
    }
}

/// The leader of an election, as [`Sync::observe`] and [`Sync::leader`] see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    /// The candidate that leads.
    pub candidate: String,
    /// Its term: strictly increasing across leaders of the election.
    pub term: u64,
}

impl From<Lease> for Leader {
    fn from(lease: Lease) -> Self {
        Leader {
            candidate: lease.holder,
            term: lease.token,
        }
    }
}

/// Who leads an election, change after change (from [`Sync::observe`]).
#[derive(Debug)]
pub struct LeaderStream {
    receiver: StreamReceiver<Option<Lease>>,
}

impl LeaderStream {
    /// The next state: `Some(Some(leader))`, `Some(None)` when no one leads, `None` when the
    /// stream ended (the sync actor went away, or its link was lost).
    pub async fn next(&mut self) -> Option<Option<Leader>> {
        match self.receiver.next().await {
            Some(Ok(state)) => Some(state.map(Leader::from)),
            Some(Err(e)) => {
                tracing::debug!(error = %e, "leader stream ended");
                None
            }
            None => None,
        }
    }
}

/// A granted lease, renewed in the background until released or lost.
#[derive(Debug)]
struct Held {
    sync: Sync,
    lease: Lease,
    lost: watch::Receiver<bool>,
    renewer: Option<AbortOnDrop>,
}

impl Held {
    fn start(sync: Sync, lease: Lease, sent: Instant) -> Held {
        let ttl = Duration::from_millis(lease.ttl_ms);
        // The grant happened no earlier than our send plus the time it waited there.
        let granted = sent + Duration::from_millis(lease.waited_ms);
        let (tx, lost) = watch::channel(false);
        let renewer = AbortOnDrop::spawn(renew(sync.addr.clone(), lease.clone(), ttl, granted, tx));
        Held {
            sync,
            lease,
            lost,
            renewer: Some(renewer),
        }
    }

    fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut lost = self.lost.clone();
        async move {
            // An error means the renewer ended without a word: treat it as lost.
            let _ = lost.wait_for(|l| *l).await;
        }
    }

    async fn release(mut self) -> Result<(), SyncError> {
        self.renewer.take();
        let (name, token) = (self.lease.name.clone(), self.lease.token);
        self.sync
            .addr
            .ask(
                |reply| SyncMsg::Release { name, token, reply },
                self.sync.timeout,
            )
            .await?
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.renewer.take().is_none() {
            return; // released explicitly
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // no runtime: the lease expires by its TTL
        };
        let (addr, timeout) = (self.sync.addr.clone(), self.sync.timeout);
        let (name, token) = (self.lease.name.clone(), self.lease.token);
        runtime.spawn(async move {
            let _ = addr
                .ask(|reply| SyncMsg::Release { name, token, reply }, timeout)
                .await;
        });
    }
}

/// The fraction of the TTL kept as a safety margin: `lost()` fires this much before the lease
/// can expire at the backend.
fn margin(ttl: Duration) -> Duration {
    (ttl / 10).max(Duration::from_millis(20)).min(ttl / 2)
}

/// Renews `lease` every third of its TTL; reports it lost at the latest at (the send time of the
/// last successful renewal + TTL − margin), or at once when the backend refuses a renewal.
async fn renew(
    addr: Addr<SyncMsg>,
    lease: Lease,
    ttl: Duration,
    granted: Instant,
    lost: watch::Sender<bool>,
) {
    let margin = margin(ttl);
    let mut valid_until = granted + ttl - margin;
    let mut next = granted + ttl / 3;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            () = tokio::time::sleep_until(valid_until) => break,
        }
        let sent = Instant::now();
        let (name, token, ttl_ms) = (lease.name.clone(), lease.token, lease.ttl_ms);
        let answer = addr
            .ask_until(
                |reply| SyncMsg::Renew {
                    name,
                    token,
                    ttl_ms,
                    reply,
                },
                valid_until,
            )
            .await;
        match answer {
            Ok(Ok(())) => {
                valid_until = sent + ttl - margin;
                next = sent + ttl / 3;
            }
            Ok(Err(e)) => {
                tracing::warn!(name = %lease.name, token, error = %e, "lease lost");
                break;
            }
            Err(e) => {
                // Unreachable for now: try again soon, until the lease's time is up.
                tracing::debug!(name = %lease.name, token, error = %e, "renewal failed");
                next = Instant::now() + (ttl / 20).max(Duration::from_millis(10));
            }
        }
    }
    tracing::debug!(name = %lease.name, token = lease.token, "lease reported lost");
    let _ = lost.send(true);
}

/// A held lock. Its lease is renewed in the background; it is released when the guard is
/// dropped (best-effort, in the background) or with [`unlock`](LockGuard::unlock).
#[derive(Debug)]
pub struct LockGuard {
    held: Held,
}

impl LockGuard {
    /// The fencing token: strictly increasing per lock name. Pass it with every write to the
    /// protected resource, which must refuse a token lower than the highest it has seen.
    pub fn token(&self) -> u64 {
        self.held.lease.token
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        self.held
            .lease
            .name
            .strip_prefix(LOCK_PREFIX)
            .unwrap_or(&self.held.lease.name)
    }

    /// Resolves when the lease is lost (a renewal refused, or none succeeded in time): at the
    /// latest at (send time of the last successful renewal + TTL − a safety margin of a tenth
    /// of the TTL), so before anyone else can be granted the lock. Stop using the resource then.
    pub fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        self.held.lost()
    }

    /// Whether the lease is known lost.
    pub fn is_lost(&self) -> bool {
        *self.held.lost.borrow()
    }

    /// Releases the lock now; `NotHeld` if its lease was already lost.
    pub async fn unlock(self) -> Result<(), SyncError> {
        self.held.release().await
    }
}

/// A won election. The leadership's lease is renewed in the background; dropping it resigns
/// (best-effort, in the background), as does [`resign`](Leadership::resign).
#[derive(Debug)]
pub struct Leadership {
    held: Held,
}

impl Leadership {
    /// The term: strictly increasing across the election's leaders (a fencing token).
    pub fn term(&self) -> u64 {
        self.held.lease.token
    }

    /// The candidate that won.
    pub fn candidate(&self) -> &str {
        &self.held.lease.holder
    }

    /// Resolves when the leadership is lost, under the same rule as [`LockGuard::lost`].
    pub fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        self.held.lost()
    }

    /// Whether the leadership is known lost.
    pub fn is_lost(&self) -> bool {
        *self.held.lost.borrow()
    }

    /// Gives the leadership up now: the next candidate is elected at once.
    pub async fn resign(self) -> Result<(), SyncError> {
        self.held.release().await
    }
}
