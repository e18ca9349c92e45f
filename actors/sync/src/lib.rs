//! Distributed locks and leader election for micro: the sync primitive as a supervised actor.
//!
//! The protocol ([`SyncMsg`], `micro.sync.v1`) is a lease table: acquire a name for a holder
//! with a TTL (waiting in line, or not), renew, release, ask who holds it, observe changes. Every
//! grant carries a **fencing token**, strictly increasing per name. The [`Sync`] handle builds
//! locks ([`Sync::lock`], [`Sync::try_lock`] → [`LockGuard`]) and elections ([`Sync::campaign`]
//! → [`Leadership`], [`Sync::observe`], [`Sync::leader`]) on it, the same whether the actor is on
//! this node or another: the guard renews its lease in the background, reports its loss
//! ([`LockGuard::lost`]) and releases it when dropped.
//!
//! The lease logic is a state machine free of I/O, with time passed in, unit-tested without
//! nodes; the actors are glue.
//!
//! Backends: [`MemorySync`] (one node; other nodes share it through the exposed actor), and
//! `PostgresSync` (feature `postgres`) on a database many processes share, and `EtcdSync`
//! (feature `etcd`) on an etcd cluster.
//!
//! # Guarantees
//!
//! **What the fencing token protects.** A lease is a promise with a deadline, and a process can
//! be paused (GC, swap, a stopped VM, `SIGSTOP`) for longer than its TTL and wake up still
//! believing it holds the lock. No lock service can prevent that; the token makes it harmless
//! where the resource takes part: send the token with every write, and have the resource refuse
//! a token lower than the highest it has accepted. A holder whose lease expired and was granted
//! to someone else then has its late writes refused.
//!
//! **When a holder learns it lost the lease.** The guard renews every third of the TTL. Its
//! `lost()` fires at the latest at (the time the last successful renewal — or the acquisition —
//! was *sent* + TTL − a safety margin of a tenth of the TTL, at least 20 ms), or at once when
//! the backend refuses a renewal. The backend counts the TTL from when it *received* the
//! request, which is later; so, with clocks that run at the same rate, the old holder is told
//! before anyone else can be granted the name. The margin absorbs rate differences and
//! scheduling delays.
//!
//! **How long two holders may overlap.** Without pauses, never: the next grant comes after the
//! backend's expiry, which comes after the holder's `lost()`. A holder paused for longer than
//! the margin may still act after `lost()` should have fired (it cannot run the code that would
//! notice); from the backend's expiry until it wakes up, two processes believe they hold the
//! lock. That window is exactly what fencing tokens close.
//!
//! **What a paused process sees.** On waking, its renewer finds the deadline passed and fires
//! `lost()` before any further renewal; or a renewal is refused with `NotHeld` because the lease
//! expired (and the name may be held by another with a higher token). It never gets its lease
//! back: it must acquire again, with a new token.
//!
//! ## Memory backend
//!
//! One actor on one node holds the table. A holder node that dies or is cut off stops renewing
//! and its lease expires after the TTL; the next waiter is granted at once then. The sync
//! actor's own node is a single point of failure: if it stops, every lease is gone, and the
//! holders' renewals fail, so their `lost()` fires by the rule above. If it is restarted (by
//! its supervisor, or the node), it starts empty and may grant a name while the old holder
//! still runs until its `lost()`: up to a TTL of overlap; tokens stay increasing across restarts
//! because they are seeded from the wall clock (microseconds since the epoch).
//!
//! ## PostgreSQL backend (feature `postgres`)
//!
//! A leases table (`name`, `holder`, `token`, `expires`) and a sequence. Acquiring is one
//! conditional upsert: it succeeds only when the name has no row or its row's `expires` has
//! passed; the token is drawn from the sequence under the row's lock and never below the row's
//! last token + 1, so tokens increase per name across restarts of every process and of the
//! database (the sequence and the rows are durable). Expiry is by the database's clock
//! (`now()`), never a caller's: clocks of the application machines do not matter, only the
//! rates at which they and the database's run. Renewal and release are conditional updates on
//! (name, token); a released row is expired in place, not deleted. Every sync actor on the
//! database (one per node) serves its waiters by retrying every 50 ms (`poll_every`) and at
//! once after a release it made itself; waiters on different nodes are not served in a global
//! order. Observers are refreshed on the same period.
//!
//! A holder that crashes or is cut off from the database stops renewing and loses the lease by
//! TTL, its `lost()` firing first. The database is the single point of truth: while it is down
//! nobody acquires, and holders' renewals fail, so their `lost()` fires by the rule above; a
//! failover to a replica that lost recent commits may forget a grant (use synchronous
//! replication if that matters), and the fencing token is what protects the resource then.
//!
//! ## etcd backend (feature `etcd`)
//!
//! Each grant is an etcd lease with the caller's TTL rounded up to whole seconds (etcd may raise
//! a short TTL to its minimum, about 2 s): never shorter than the guard assumes. Locks use
//! etcd's Lock API, elections its Election API; the token is the revision at which the lock was
//! acquired, or the leader key's creation revision, both from etcd's single, durable revision
//! counter, so they increase per name across restarts of everything. Renewal is a keep-alive
//! of the lease, release its revocation. etcd's own consensus (Raft) makes a grant survive the
//! loss of a minority of etcd members; a partitioned minority member refuses writes.
//!
//! A holder that dies or is cut off from etcd stops its keep-alives and the lease expires by
//! TTL, `lost()` firing first. The actor that granted a lease keeps its etcd lease id: if that
//! actor restarts, its holders' next renewal is refused (`NotHeld`) and they see `lost()`; the
//! etcd leases then expire by TTL. Waiting is done by etcd (waiters in creation order).

mod error;
#[cfg(feature = "etcd")]
mod etcd;
mod handle;
mod leases;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
mod protocol;

pub use error::SyncError;
#[cfg(feature = "etcd")]
pub use etcd::{EtcdConfig, EtcdSync};
pub use handle::{Leader, LeaderStream, Leadership, LockGuard, Sync};
pub use memory::MemorySync;
#[cfg(feature = "postgres")]
pub use postgres::{PostgresConfig, PostgresSync, Statements};
pub use protocol::{Lease, SYNC_NAME, SyncCommand, SyncMsg};
