//! Retries: which failures may be retried, how long to wait between attempts, and a budget that
//! keeps retries from multiplying load when a whole service is failing.

use std::sync::Mutex;
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
/// load instead of multiplying it by the retry count.
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    per_second: f64,
    cap: f64,
    state: Mutex<BudgetState>,
}

#[derive(Debug)]
struct BudgetState {
    tokens: f64,
    refilled: Instant,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget::new(0.2, 10.0)
    }
}

impl RetryBudget {
    /// A budget of `ratio` retries per call plus `per_second` retries a second.
    pub fn new(ratio: f64, per_second: f64) -> Self {
        let ratio = ratio.max(0.0);
        let per_second = per_second.max(0.0);
        let cap = (per_second * 10.0).max(100.0 * ratio).max(1.0);
        RetryBudget {
            ratio,
            per_second,
            cap,
            state: Mutex::new(BudgetState {
                tokens: per_second,
                refilled: Instant::now(),
            }),
        }
    }

    /// A call was made.
    pub(crate) fn deposit(&self) {
        if self.ratio == 0.0 {
            return;
        }
        if let Ok(mut state) = self.state.lock() {
            state.tokens = (state.tokens + self.ratio).min(self.cap);
        }
    }

    /// Takes a token for a retry; false when the budget is spent.
    pub(crate) fn withdraw(&self) -> bool {
        let Ok(mut state) = self.state.lock() else {
            return false;
        };
        let now = Instant::now();
        let refill = now.duration_since(state.refilled).as_secs_f64() * self.per_second;
        state.tokens = (state.tokens + refill).min(self.cap);
        state.refilled = now;
        if state.tokens >= 1.0 {
            state.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}
