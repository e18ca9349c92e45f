//! What a running service counts, and what its built-in `Debug.Health` and `Debug.Stats`
//! endpoints answer.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};

/// The built-in health endpoint every service answers.
pub const HEALTH_ENDPOINT: &str = "Debug.Health";
/// The built-in stats endpoint every service answers.
pub const STATS_ENDPOINT: &str = "Debug.Stats";

/// What `Debug.Health` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `"serving"`, or `"draining"` once the service is stopping.
    pub status: String,
    /// The service's name.
    pub service: String,
    /// Its version.
    pub version: String,
    /// The node it runs on (its id).
    pub node: String,
    /// Milliseconds since the service started.
    pub uptime_ms: u64,
}

/// What `Debug.Stats` answers: totals and one line per endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStats {
    /// The service's name.
    pub service: String,
    /// Its version.
    pub version: String,
    /// The node it runs on (its id).
    pub node: String,
    /// Milliseconds since the service started.
    pub uptime_ms: u64,
    /// Calls answered (successes and errors), over all endpoints.
    pub requests: u64,
    /// Calls answered with an error.
    pub errors: u64,
    /// Calls running now.
    pub in_flight: u64,
    /// Calls refused at once (over an endpoint's concurrency limit, or while draining).
    pub rejected: u64,
    /// Per endpoint.
    pub endpoints: Vec<EndpointStats>,
}

/// One endpoint's counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointStats {
    /// The endpoint's name.
    pub name: String,
    /// Calls answered.
    pub requests: u64,
    /// Calls answered with an error.
    pub errors: u64,
    /// Calls running now.
    pub in_flight: u64,
    /// Calls refused at once.
    pub rejected: u64,
}

/// One endpoint's live counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) in_flight: AtomicUsize,
    pub(crate) rejected: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self, name: &str) -> EndpointStats {
        EndpointStats {
            name: name.to_owned(),
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed) as u64,
            rejected: self.rejected.load(Ordering::Relaxed),
        }
    }
}

/// A service's calls in flight, for a graceful stop: refuse new calls, wait for running ones,
/// then cancel what is left.
///
/// A finished call wakes the waiter only once the service is closing: `close` stores the flag
/// and the waiter then reads the count, a call decrements the count and then reads the flag,
/// all `SeqCst`, so one of them sees the other (no wakeup is lost, and a serving service pays
/// no lock per call).
#[derive(Debug)]
pub(crate) struct Drain {
    closing: AtomicBool,
    in_flight: AtomicUsize,
    idle: Notify,
    abort: watch::Sender<bool>,
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            closing: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            abort: watch::Sender::new(false),
        }
    }
}

impl Drain {
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Whether the service is stopping (and refuses new calls).
    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    /// Starts a stop: new calls are refused from now on.
    pub(crate) fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
    }

    pub(crate) fn aborted(&self) -> watch::Receiver<bool> {
        self.abort.subscribe()
    }

    /// Waits until no call runs (true), or gives up after `timeout` (false).
    pub(crate) async fn wait_idle(&self, timeout: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let idle = self.idle.notified();
            if self.in_flight() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return self.in_flight() == 0;
            }
        }
    }

    /// Cancels every call still running.
    pub(crate) fn abort(&self) {
        self.abort.send_replace(true);
    }
}

/// What a call is counted in: its endpoint's counters and its service's drain.
pub(crate) trait Accounts {
    fn counters(&self) -> &Counters;
    fn drain(&self) -> &Drain;
}

impl<A: Accounts + ?Sized> Accounts for &A {
    fn counters(&self) -> &Counters {
        (**self).counters()
    }
    fn drain(&self) -> &Drain {
        (**self).drain()
    }
}

impl<A: Accounts + ?Sized> Accounts for std::sync::Arc<A> {
    fn counters(&self) -> &Counters {
        (**self).counters()
    }
    fn drain(&self) -> &Drain {
        (**self).drain()
    }
}

/// Held by a running call: counts it in its endpoint and its service until dropped. It reaches
/// the counters by reference while the call is served in place (no shared reference count is
/// touched per call), through an `Arc` once the call moves to a task of its own.
pub(crate) struct CallGuard<A: Accounts> {
    accounts: A,
}

impl<A: Accounts> CallGuard<A> {
    /// Admits a call, or says why not (the service is draining, or the endpoint is at its limit).
    pub(crate) fn admit(accounts: A, limit: usize) -> Result<Self, &'static str> {
        let (counters, drain) = (accounts.counters(), accounts.drain());
        if drain.is_closing() {
            counters.rejected.fetch_add(1, Ordering::Relaxed);
            return Err("the service is stopping");
        }
        if counters.in_flight.fetch_add(1, Ordering::AcqRel) >= limit {
            counters.in_flight.fetch_sub(1, Ordering::AcqRel);
            counters.rejected.fetch_add(1, Ordering::Relaxed);
            return Err("the endpoint is at its concurrency limit");
        }
        drain.in_flight.fetch_add(1, Ordering::SeqCst);
        Ok(CallGuard { accounts })
    }

    /// Counts the call's outcome.
    pub(crate) fn finished(&self, failed: bool) {
        let counters = self.accounts.counters();
        counters.requests.fetch_add(1, Ordering::Relaxed);
        if failed {
            counters.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl<T: Accounts + ?Sized> CallGuard<&T> {
    /// The same call, now reaching its counters through `accounts` (counted once still). Only a
    /// guard holding a reference hands over: forgetting it leaks nothing.
    pub(crate) fn hold_by<B: Accounts>(self, accounts: B) -> CallGuard<B> {
        std::mem::forget(self);
        CallGuard { accounts }
    }
}

impl<A: Accounts> Drop for CallGuard<A> {
    fn drop(&mut self) {
        self.accounts
            .counters()
            .in_flight
            .fetch_sub(1, Ordering::AcqRel);
        let drain = self.accounts.drain();
        // Notifying takes a lock: only a stop waits for it.
        if drain.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 && drain.is_closing() {
            drain.idle.notify_waiters();
        }
    }
}
