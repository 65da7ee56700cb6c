//! # defender-policy
//!
//! Ready-made answers to the questions the engine of `defender-core` asks: how long to
//! wait for quota before failing (`max_wait`), whether and when to retry a 5xx, a 408, a
//! 429 or a network failure (exponential backoff with full jitter, seeded differently in
//! every process unless seeded explicitly for reproducible tests), when a call's deadline has passed, and how many retries a client may
//! spend at all (a retry budget, as in the AWS SDKs, so a failing service is not
//! hammered).
//!
//! ```
//! use defender_policy::StandardPolicy;
//! use defender_core::policy::{Failure, FailureKind, Policy, Retry};
//! use defender_core::ApiGroup;
//! use std::time::Duration;
//!
//! let mut p = StandardPolicy::standard().max_attempts(3).seed(7);
//! let failure = |attempt| Failure {
//!     group: ApiGroup::Hunting, attempt, kind: FailureKind::Server(503),
//!     server_wait: None, elapsed: Duration::ZERO, idempotent: true,
//! };
//! assert!(matches!(p.retry(&failure(1)), Retry::After(d) if d <= Duration::from_secs(1)));
//! assert_eq!(p.retry(&failure(3)), Retry::Stop);          // three attempts made: stop
//! assert_eq!(StandardPolicy::fail_fast().max_wait(), Duration::ZERO);
//! ```

#![forbid(unsafe_code)]

use std::time::Duration;

use defender_core::policy::{Failure, FailureKind, Policy, Retry, Truncation};
use defender_core::{ApiGroup, TransportErrorKind};

/// The standard policy: full-jitter exponential backoff, a retry budget, `max_wait`,
/// optional deadlines.
#[derive(Debug, Clone)]
pub struct StandardPolicy {
    max_wait: Duration,
    max_attempts: u32,
    base: Duration,
    cap: Duration,
    deadline: Option<Duration>,
    request_timeout: Option<Duration>,
    truncation: Truncation,
    budget: RetryBudget,
    rng: SplitMix64,
}

impl Default for StandardPolicy {
    fn default() -> Self {
        StandardPolicy::standard()
    }
}

impl StandardPolicy {
    /// Waits up to 5 minutes for quota; 5 attempts; backoff from 500 ms to 30 s.
    pub fn standard() -> StandardPolicy {
        StandardPolicy {
            max_wait: Duration::from_secs(300),
            max_attempts: 5,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(30),
            deadline: None,
            request_timeout: None,
            truncation: Truncation::Flag,
            budget: RetryBudget::new(500, 5, 10, 1),
            rng: SplitMix64(entropy()),
        }
    }

    /// For batch jobs: waits up to a day for quota (the longest documented window), 10
    /// attempts, backoff up to 2 minutes.
    pub fn patient() -> StandardPolicy {
        StandardPolicy {
            max_wait: Duration::from_secs(86_400),
            max_attempts: 10,
            cap: Duration::from_secs(120),
            ..StandardPolicy::standard()
        }
    }

    /// For interactive use: never waits for quota (fails at once with the retry time) and
    /// never retries.
    pub fn fail_fast() -> StandardPolicy {
        StandardPolicy {
            max_wait: Duration::ZERO,
            max_attempts: 1,
            ..StandardPolicy::standard()
        }
    }

    /// Sets how long a call may wait for quota.
    pub fn with_max_wait(mut self, d: Duration) -> StandardPolicy {
        self.max_wait = d;
        self
    }

    /// Sets the number of attempts (at least 1).
    pub fn max_attempts(mut self, n: u32) -> StandardPolicy {
        self.max_attempts = n.max(1);
        self
    }

    /// Sets the backoff's base and cap.
    pub fn backoff(mut self, base: Duration, cap: Duration) -> StandardPolicy {
        self.base = base;
        self.cap = cap.max(base);
        self
    }

    /// Sets a deadline for every call, from submission.
    pub fn with_deadline(mut self, d: Option<Duration>) -> StandardPolicy {
        self.deadline = d;
        self
    }

    /// Sets the timeout of one HTTP attempt (default: 240 s hunting, 60 s incidents).
    pub fn with_request_timeout(mut self, d: Duration) -> StandardPolicy {
        self.request_timeout = Some(d);
        self
    }

    /// Sets what to do with a result at the row cap.
    pub fn with_truncation(mut self, t: Truncation) -> StandardPolicy {
        self.truncation = t;
        self
    }

    /// Sets the retry budget.
    pub fn budget(mut self, budget: RetryBudget) -> StandardPolicy {
        self.budget = budget;
        self
    }

    /// Seeds the jitter.
    pub fn seed(mut self, seed: u64) -> StandardPolicy {
        self.rng = SplitMix64(seed);
        self
    }

    /// The full-jitter backoff before attempt `attempt + 1`: uniform in
    /// `[0, min(cap, base * 2^(attempt-1))]`.
    pub fn backoff_for(&mut self, attempt: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let ceiling = exp.min(self.cap);
        let nanos = ceiling.as_nanos().min(u64::MAX as u128) as u64;
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.rng.next() % (nanos + 1))
    }
}

impl Policy for StandardPolicy {
    fn max_wait(&self) -> Duration {
        self.max_wait
    }

    fn retry(&mut self, failure: &Failure) -> Retry {
        if failure.attempt >= self.max_attempts {
            return Retry::Stop;
        }
        if let Some(deadline) = self.deadline {
            if failure.elapsed >= deadline {
                return Retry::Stop;
            }
        }
        let cost = match failure.kind {
            FailureKind::Transport(TransportErrorKind::Timeout) => self.budget.timeout_cost,
            // A 429 with a retry time is the server telling us when; it costs nothing
            // extra and needs no jitter beyond the engine's margin.
            FailureKind::Throttled if failure.server_wait.is_some() => 0,
            _ => self.budget.retry_cost,
        };
        if !self.budget.try_spend(cost) {
            return Retry::Stop;
        }
        match (failure.kind, failure.server_wait) {
            (FailureKind::Throttled, Some(wait)) => Retry::After(wait),
            // Without a retry time, a 429 means "a while": at least a second.
            (FailureKind::Throttled, None) => Retry::After(
                self.backoff_for(failure.attempt)
                    .max(Duration::from_secs(1)),
            ),
            (_, server) => Retry::After(
                self.backoff_for(failure.attempt)
                    .max(server.unwrap_or_default()),
            ),
        }
    }

    fn on_success(&mut self) {
        self.budget.refund();
    }

    /// Uniform in `[0, min(wait / 10, 50 ms)]`.
    fn admission_jitter(&mut self, wait: Duration) -> Duration {
        let spread = (wait / 10).min(Duration::from_millis(50));
        let nanos = spread.as_nanos() as u64;
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.rng.next() % (nanos + 1))
    }

    fn deadline(&self, _group: ApiGroup) -> Option<Duration> {
        self.deadline
    }

    fn request_timeout(&self, group: ApiGroup) -> Duration {
        self.request_timeout
            .unwrap_or_else(|| defender_core::policy::default_request_timeout(group))
    }

    fn truncation(&self) -> Truncation {
        self.truncation
    }
}

/// A token bucket of retries: each retry spends tokens, each success refunds some, so
/// a service that keeps failing stops being retried while one that recovers is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryBudget {
    capacity: u32,
    tokens: u32,
    retry_cost: u32,
    timeout_cost: u32,
    refund: u32,
}

impl RetryBudget {
    /// A full bucket of `capacity`; a retry costs `retry_cost` (`timeout_cost` after a
    /// timeout); a success refunds `refund`.
    pub fn new(capacity: u32, retry_cost: u32, timeout_cost: u32, refund: u32) -> RetryBudget {
        RetryBudget {
            capacity,
            tokens: capacity,
            retry_cost,
            timeout_cost,
            refund,
        }
    }

    /// Tokens left.
    pub fn tokens(&self) -> u32 {
        self.tokens
    }

    fn try_spend(&mut self, cost: u32) -> bool {
        if self.tokens >= cost {
            self.tokens -= cost;
            true
        } else {
            false
        }
    }

    fn refund(&mut self) {
        self.tokens = (self.tokens + self.refund).min(self.capacity);
    }
}

/// A seed that differs between processes (and policies): the standard library's random
/// hash keys. Processes of one app that jittered alike would retry in lockstep; seed a
/// policy explicitly ([`StandardPolicy::seed`]) for reproducible runs.
fn entropy() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish()
}

/// A tiny seeded generator (SplitMix64): deterministic jitter without a `rand` dependency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next number.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn failure(attempt: u32, kind: FailureKind, server_wait: Option<Duration>) -> Failure {
        Failure {
            group: ApiGroup::Incidents,
            attempt,
            kind,
            server_wait,
            elapsed: Duration::ZERO,
            idempotent: true,
        }
    }

    #[test]
    fn budget_stops_a_failing_service() {
        let mut p = StandardPolicy::standard()
            .max_attempts(100)
            .budget(RetryBudget::new(10, 5, 10, 1));
        let f = failure(1, FailureKind::Server(500), None);
        assert!(matches!(p.retry(&f), Retry::After(_)));
        assert!(matches!(p.retry(&f), Retry::After(_)));
        assert_eq!(p.retry(&f), Retry::Stop);
        for _ in 0..5 {
            p.on_success();
        }
        assert!(matches!(p.retry(&f), Retry::After(_)));
    }

    #[test]
    fn server_wait_is_honoured() {
        let mut p = StandardPolicy::standard();
        let w = Duration::from_secs(8);
        assert_eq!(
            p.retry(&failure(1, FailureKind::Throttled, Some(w))),
            Retry::After(w)
        );
        assert!(
            matches!(p.retry(&failure(1, FailureKind::Throttled, None)), Retry::After(d) if d >= Duration::from_secs(1))
        );
        let mut late = StandardPolicy::standard().with_deadline(Some(Duration::from_secs(1)));
        let mut f = failure(1, FailureKind::Server(503), None);
        f.elapsed = Duration::from_secs(2);
        assert_eq!(late.retry(&f), Retry::Stop);
        assert_eq!(
            StandardPolicy::fail_fast().retry(&failure(1, FailureKind::Server(503), None)),
            Retry::Stop
        );
    }

    #[test]
    fn same_seed_same_jitter() {
        let mut a = StandardPolicy::standard().seed(42);
        let mut b = StandardPolicy::standard().seed(42);
        let xs: Vec<_> = (1..10).map(|i| a.backoff_for(i)).collect();
        let ys: Vec<_> = (1..10).map(|i| b.backoff_for(i)).collect();
        assert_eq!(xs, ys);
        assert!(xs.iter().collect::<std::collections::HashSet<_>>().len() > 1);
    }

    proptest! {
        #[test]
        fn backoff_stays_within_full_jitter_bounds(seed: u64, attempt in 1u32..64) {
            let mut p = StandardPolicy::standard().seed(seed);
            let d = p.backoff_for(attempt);
            let ceiling = Duration::from_millis(500).saturating_mul(1 << (attempt - 1).min(20)).min(Duration::from_secs(30));
            prop_assert!(d <= ceiling);
        }
    }
}
