//! Retries: which failures may be retried, how long to wait between attempts, and a budget that
//! keeps retries from multiplying load when a whole service is failing.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// How a client retries a call on another node.
///
/// A call is retried when it was never sent (no route, the node refused it: overload or
/// draining), and when its outcome is unknown (the link broke after sending) only if the
/// endpoint is idempotent. Errors that a handler returned are never retried. Each retry waits a
/// jittered exponential backoff (the first goes at once to another node), stays within the call's
/// deadline, and takes a token from the client's [`RetryBudget`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (default 3).
    pub max_retries: u32,
    /// Backoff before the second retry (default 10 ms); it doubles each time after.
    pub backoff: Duration,
    /// The longest backoff (default 200 ms).
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(200),
        }
    }
}

impl RetryPolicy {
    /// No retries.
    pub fn none() -> Self {
        RetryPolicy {
            max_retries: 0,
            ..Self::default()
        }
    }

    /// The wait before retry number `retry` (1-based): none for the first, then jittered
    /// exponential (uniform between half and all of the base).
    pub(crate) fn delay(&self, retry: u32) -> Duration {
        if retry <= 1 {
            return Duration::ZERO;
        }
        let factor = 1u32.checked_shl(retry - 2).unwrap_or(u32::MAX);
        let base = self.backoff.saturating_mul(factor).min(self.max_backoff);
        base.mul_f64(0.5 + rand::random::<f64>() * 0.5)
    }
}

/// Limits retries to a fraction of calls (like Finagle's retry budget): each call deposits
/// `ratio` of a token, each retry withdraws one; a reserve of `per_second` tokens a second
/// lets a quiet client still retry. When a service is down, retries stay near `ratio` of the
/// load instead of multiplying it by the retry count. Lock-free: every call deposits, so it
/// must cost no more than an atomic add.
#[derive(Debug)]
pub struct RetryBudget {
    /// Thousandths of a token per call.
    ratio: i64,
    /// Thousandths of a token per millisecond of quiet (= tokens per second).
    per_ms: i64,
    /// The most the budget holds, in thousandths.
    cap: i64,
    tokens: AtomicI64,
    /// When the time-based refill last ran, in ms after `epoch`.
    refilled_ms: AtomicU64,
    epoch: Instant,
}

/// A whole token, in the budget's thousandths.
const TOKEN: i64 = 1000;

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget::new(0.2, 10.0)
    }
}

impl RetryBudget {
    /// A budget of `ratio` retries per call plus `per_second` retries a second.
    pub fn new(ratio: f64, per_second: f64) -> Self {
        let ratio = (ratio.max(0.0) * TOKEN as f64) as i64;
        let per_second = per_second.max(0.0);
        let cap = ((per_second * 10.0)
            .max(100.0 * ratio as f64 / TOKEN as f64)
            .max(1.0)
            * TOKEN as f64) as i64;
        RetryBudget {
            ratio,
            per_ms: per_second as i64,
            cap,
            tokens: AtomicI64::new((per_second * TOKEN as f64) as i64),
            refilled_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// A call was made.
    pub(crate) fn deposit(&self) {
        // A full budget (the usual case) costs a load, not a write to a line every caller shares.
        if self.ratio == 0 || self.tokens.load(Ordering::Relaxed) >= self.cap {
            return;
        }
        if self.tokens.fetch_add(self.ratio, Ordering::Relaxed) + self.ratio > self.cap {
            self.tokens.fetch_min(self.cap, Ordering::Relaxed);
        }
    }

    /// Takes a token for a retry; false when the budget is spent.
    pub(crate) fn withdraw(&self) -> bool {
        let now_ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.refilled_ms.load(Ordering::Relaxed);
        if now_ms > last
            && self
                .refilled_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let quiet = i64::try_from(now_ms - last).unwrap_or(i64::MAX);
            let refill = quiet.saturating_mul(self.per_ms);
            if self
                .tokens
                .fetch_add(refill, Ordering::Relaxed)
                .saturating_add(refill)
                > self.cap
            {
                self.tokens.fetch_min(self.cap, Ordering::Relaxed);
            }
        }
        self.tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                (t >= TOKEN).then(|| t - TOKEN)
            })
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_allows_a_fraction_of_calls_as_retries() {
        // No time-based reserve: only deposits count.
        let budget = RetryBudget::new(0.2, 0.0);
        assert!(!budget.withdraw(), "an empty budget refuses");
        for _ in 0..50 {
            budget.deposit();
        }
        let granted = (0..50).filter(|_| budget.withdraw()).count();
        assert_eq!(granted, 10, "a fifth of 50 calls");
    }

    #[test]
    fn the_reserve_refills_with_time_and_the_budget_is_capped() {
        let budget = RetryBudget::new(0.0, 10.0);
        let granted = (0..100).filter(|_| budget.withdraw()).count();
        assert!(
            (10..=11).contains(&granted),
            "the first second's reserve: {granted}"
        );
        std::thread::sleep(Duration::from_millis(300));
        let later = (0..100).filter(|_| budget.withdraw()).count();
        assert!(
            (2..=5).contains(&later),
            "about 3 tokens after 300 ms: {later}"
        );

        let capped = RetryBudget::new(1.0, 0.0);
        for _ in 0..10_000 {
            capped.deposit();
        }
        assert_eq!((0..10_000).filter(|_| capped.withdraw()).count(), 100);
    }

    #[test]
    fn backoff_starts_at_once_then_grows_within_bounds() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.delay(1), Duration::ZERO);
        for (retry, base) in [(2, 10), (3, 20), (4, 40), (9, 200)] {
            let d = policy.delay(retry);
            let base = Duration::from_millis(base);
            assert!(d >= base / 2 && d <= base, "retry {retry}: {d:?}");
        }
    }
}
