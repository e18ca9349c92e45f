//! The lease table: who holds which name, until when, who waits, which token comes next. A state
//! machine free of I/O: every method takes `now`, and returns what to tell whom.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use crate::{Lease, SyncError};

/// What the actor must do after a step: answer waiters, tell observers.
#[derive(Debug)]
pub(crate) struct Effects<W> {
    /// Answers to waiters (`reply`, outcome).
    pub(crate) answers: Vec<(W, Result<Lease, SyncError>)>,
    /// Names whose holder changed, with the new state.
    pub(crate) changes: Vec<(String, Option<Lease>)>,
}

impl<W> Default for Effects<W> {
    fn default() -> Self {
        Effects {
            answers: Vec::new(),
            changes: Vec::new(),
        }
    }
}

#[derive(Debug)]
struct Held {
    lease: Lease,
    expires: Instant,
}

#[derive(Debug)]
struct Waiter<W> {
    holder: String,
    ttl: Duration,
    since: Instant,
    deadline: Instant,
    reply: W,
}

#[derive(Debug)]
struct Entry<W> {
    held: Option<Held>,
    waiters: VecDeque<Waiter<W>>,
}

impl<W> Default for Entry<W> {
    fn default() -> Self {
        Entry {
            held: None,
            waiters: VecDeque::new(),
        }
    }
}

/// The leases of one sync actor. `W` is what answers a waiter (a reply port).
#[derive(Debug)]
pub(crate) struct Leases<W> {
    next_token: u64,
    entries: HashMap<String, Entry<W>>,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl<W> Leases<W> {
    /// An empty table whose first token is `first_token` (at least 1).
    pub(crate) fn new(first_token: u64) -> Self {
        Leases {
            next_token: first_token.max(1),
            entries: HashMap::new(),
        }
    }

    fn grant(
        &mut self,
        name: &str,
        holder: String,
        ttl: Duration,
        waited: Duration,
        now: Instant,
    ) -> Lease {
        let token = self.next_token;
        self.next_token += 1;
        let lease = Lease {
            name: name.to_owned(),
            holder,
            token,
            ttl_ms: millis(ttl),
            waited_ms: millis(waited),
        };
        let entry = self.entries.entry(name.to_owned()).or_default();
        entry.held = Some(Held {
            lease: lease.clone(),
            expires: now + ttl,
        });
        lease
    }

    /// Asks for `name`: granted at once if free (or its lease expired), else queued until
    /// `now + wait` (refused at once when `wait` is zero).
    pub(crate) fn acquire(
        &mut self,
        name: &str,
        holder: String,
        ttl: Duration,
        wait: Duration,
        reply: W,
        now: Instant,
    ) -> Effects<W> {
        let mut effects = self.poll(now);
        if name.is_empty() || ttl.is_zero() {
            effects.answers.push((
                reply,
                Err(SyncError::Invalid(
                    "a lease needs a name and a TTL above zero".to_owned(),
                )),
            ));
            return effects;
        }
        let entry = self.entries.entry(name.to_owned()).or_default();
        if entry.held.is_none() && entry.waiters.is_empty() {
            let lease = self.grant(name, holder, ttl, Duration::ZERO, now);
            effects.changes.push((name.to_owned(), Some(lease.clone())));
            effects.answers.push((reply, Ok(lease)));
        } else if wait.is_zero() {
            effects.answers.push((
                reply,
                Err(SyncError::Timeout {
                    name: name.to_owned(),
                    waited_ms: 0,
                }),
            ));
        } else {
            entry.waiters.push_back(Waiter {
                holder,
                ttl,
                since: now,
                deadline: now + wait,
                reply,
            });
        }
        effects
    }

    /// Extends the lease with `token` to `now + ttl`.
    pub(crate) fn renew(
        &mut self,
        name: &str,
        token: u64,
        ttl: Duration,
        now: Instant,
    ) -> Result<(), SyncError> {
        let held = self
            .entries
            .get_mut(name)
            .and_then(|e| e.held.as_mut())
            .filter(|h| h.lease.token == token && h.expires > now);
        match held {
            Some(held) => {
                held.expires = now + ttl;
                held.lease.ttl_ms = millis(ttl);
                Ok(())
            }
            None => Err(SyncError::NotHeld {
                name: name.to_owned(),
                token,
            }),
        }
    }

    /// Gives up the lease with `token`; the next waiter gets it.
    pub(crate) fn release(
        &mut self,
        name: &str,
        token: u64,
        now: Instant,
    ) -> (Result<(), SyncError>, Effects<W>) {
        let held = self.entries.get_mut(name).filter(|e| {
            e.held
                .as_ref()
                .is_some_and(|h| h.lease.token == token && h.expires > now)
        });
        let result = match held {
            Some(entry) => {
                entry.held = None;
                Ok(())
            }
            None => Err(SyncError::NotHeld {
                name: name.to_owned(),
                token,
            }),
        };
        let mut effects = self.poll(now);
        if result.is_ok() && !effects.changes.iter().any(|(n, _)| n == name) {
            effects.changes.push((name.to_owned(), None));
        }
        (result, effects)
    }

    /// The current lease on `name`, if any (and not expired at `now`).
    pub(crate) fn holder(&self, name: &str, now: Instant) -> Option<Lease> {
        self.entries
            .get(name)
            .and_then(|e| e.held.as_ref())
            .filter(|h| h.expires > now)
            .map(|h| h.lease.clone())
    }

    /// Expires leases and waiters whose time passed, and grants free names to their first waiter.
    pub(crate) fn poll(&mut self, now: Instant) -> Effects<W> {
        let mut effects = Effects::default();
        let mut grants = Vec::new();
        self.entries.retain(|name, entry| {
            let mut expired = false;
            if entry.held.as_ref().is_some_and(|h| h.expires <= now) {
                entry.held = None;
                expired = true;
            }
            // Waiters past their deadline are told so, wherever they stand in the queue.
            let mut kept = VecDeque::with_capacity(entry.waiters.len());
            for waiter in entry.waiters.drain(..) {
                if waiter.deadline <= now {
                    effects.answers.push((
                        waiter.reply,
                        Err(SyncError::Timeout {
                            name: name.clone(),
                            waited_ms: millis(now - waiter.since),
                        }),
                    ));
                } else {
                    kept.push_back(waiter);
                }
            }
            entry.waiters = kept;
            if entry.held.is_none() {
                match entry.waiters.pop_front() {
                    Some(waiter) => grants.push((name.clone(), waiter)),
                    None if expired => effects.changes.push((name.clone(), None)),
                    None => {}
                }
            }
            entry.held.is_some()
                || !entry.waiters.is_empty()
                || grants.last().is_some_and(|(n, _)| n == name)
        });
        for (name, waiter) in grants {
            let lease = self.grant(&name, waiter.holder, waiter.ttl, now - waiter.since, now);
            effects.changes.push((name, Some(lease.clone())));
            effects.answers.push((waiter.reply, Ok(lease)));
        }
        effects
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const TTL: Duration = Duration::from_secs(10);

    fn granted(effects: &Effects<u32>, reply: u32) -> Option<u64> {
        effects
            .answers
            .iter()
            .find(|(r, _)| *r == reply)
            .and_then(|(_, outcome)| outcome.as_ref().ok().map(|l| l.token))
    }

    #[test]
    fn a_free_name_is_granted_and_a_held_one_queues_in_order() {
        let mut leases = Leases::new(1);
        let t0 = Instant::now();
        let a = leases.acquire("x", "a".into(), TTL, Duration::ZERO, 1, t0);
        assert_eq!(granted(&a, 1), Some(1));
        assert_eq!(a.changes.len(), 1);
        // Try-lock on a held name: refused at once.
        let b = leases.acquire("x", "b".into(), TTL, Duration::ZERO, 2, t0);
        assert!(matches!(b.answers[0].1, Err(SyncError::Timeout { .. })));
        // Two waiters queue; release hands over to the first.
        assert!(
            leases
                .acquire("x", "c".into(), TTL, TTL, 3, t0)
                .answers
                .is_empty()
        );
        assert!(
            leases
                .acquire("x", "d".into(), TTL, TTL, 4, t0)
                .answers
                .is_empty()
        );
        let (ok, effects) = leases.release("x", 1, t0 + Duration::from_secs(1));
        assert!(ok.is_ok());
        assert_eq!(granted(&effects, 3), Some(2));
        let lease = effects.answers[0].1.as_ref().unwrap();
        assert_eq!((lease.holder.as_str(), lease.waited_ms), ("c", 1000));
        assert_eq!(leases.holder("x", t0).unwrap().holder, "c");
    }

    #[test]
    fn a_lease_expires_unless_renewed_and_its_token_is_refused_after() {
        let mut leases = Leases::new(7);
        let t0 = Instant::now();
        leases.acquire("x", "a".into(), TTL, Duration::ZERO, 1, t0);
        leases
            .renew("x", 7, TTL, t0 + Duration::from_secs(9))
            .unwrap();
        assert!(leases.poll(t0 + Duration::from_secs(18)).changes.is_empty());
        let gone = leases.poll(t0 + Duration::from_secs(19));
        assert_eq!(gone.changes, vec![("x".to_owned(), None)]);
        assert!(matches!(
            leases.renew("x", 7, TTL, t0 + Duration::from_secs(20)),
            Err(SyncError::NotHeld { token: 7, .. })
        ));
        assert!(
            leases
                .release("x", 7, t0 + Duration::from_secs(20))
                .0
                .is_err()
        );
        // The next grant has a higher token.
        let again = leases.acquire(
            "x",
            "b".into(),
            TTL,
            Duration::ZERO,
            2,
            t0 + Duration::from_secs(20),
        );
        assert_eq!(granted(&again, 2), Some(8));
    }

    #[test]
    fn an_expired_lease_goes_to_the_waiter_and_late_waiters_time_out() {
        let mut leases = Leases::new(1);
        let t0 = Instant::now();
        leases.acquire("x", "a".into(), TTL, Duration::ZERO, 1, t0);
        leases.acquire("x", "short".into(), TTL, Duration::from_secs(5), 2, t0);
        leases.acquire("x", "long".into(), TTL, Duration::from_secs(60), 3, t0);
        let at5 = leases.poll(t0 + Duration::from_secs(5));
        assert!(matches!(
            at5.answers[..],
            [(
                2,
                Err(SyncError::Timeout {
                    waited_ms: 5000,
                    ..
                })
            )]
        ));
        let at10 = leases.poll(t0 + TTL);
        assert_eq!(granted(&at10, 3), Some(2));
        assert_eq!(at10.changes.len(), 1);
        // A stale token cannot release the new holder's lease.
        assert!(leases.release("x", 1, t0 + TTL).0.is_err());
        assert_eq!(leases.holder("x", t0 + TTL).unwrap().token, 2);
    }

    #[test]
    fn invalid_requests_are_refused() {
        let mut leases = Leases::new(1);
        let e = leases.acquire("", "a".into(), TTL, Duration::ZERO, 1, Instant::now());
        assert!(matches!(e.answers[0].1, Err(SyncError::Invalid(_))));
        let e = leases.acquire(
            "x",
            "a".into(),
            Duration::ZERO,
            Duration::ZERO,
            1,
            Instant::now(),
        );
        assert!(matches!(e.answers[0].1, Err(SyncError::Invalid(_))));
    }
}
