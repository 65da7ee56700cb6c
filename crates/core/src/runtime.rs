//! The running-time budget of advanced hunting.
//!
//! The service charges each query's execution time against per-hour and per-day budgets
//! (the 2021 terms: 10 minutes per hour, 4 hours per day). [`RunningTime`] reserves an
//! estimate for every query in flight, debits the real `Stats.ExecutionTime` when the
//! response arrives, and refuses new queries while any window's budget is spent:
//! a query is admitted only while `charged + reserved < budget` in every window, so the
//! budget is overdrawn by at most what the queries in flight exceed their reservation.
//!
//! ```
//! use defender_core::runtime::RunningTime;
//! use defender_core::RuntimeLimit;
//! use std::time::{Duration, Instant};
//!
//! # #[allow(clippy::disallowed_methods)]
//! let t0 = Instant::now();
//! let hour = Duration::from_secs(3600);
//! let mut rt = RunningTime::new(&[RuntimeLimit { budget: Duration::from_secs(60), per: hour }], Duration::ZERO);
//! let r = rt.try_reserve(t0, Duration::from_secs(1)).unwrap();
//! rt.complete(r, Duration::from_secs(61), t0);           // the query ran long
//! let denied = rt.try_reserve(t0, Duration::from_secs(1)).unwrap_err();
//! assert_eq!(denied.retry_at, Some(t0 + hour));          // when its charge leaves the window
//! ```

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::limits::RuntimeLimit;

/// The running-time budget of one (tenant, app).
#[derive(Debug, Clone)]
pub struct RunningTime {
    limits: Vec<RuntimeLimit>,
    margin: Duration,
    /// (when charged, how much), oldest first.
    charges: VecDeque<(Instant, Duration)>,
    reserved: Duration,
    in_flight: u32,
    blocked_until: Option<Instant>,
    spent_total: Duration,
}

/// A reservation held by a query in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    /// The amount reserved.
    pub amount: Duration,
}

/// A refusal: the budget is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeDenied {
    /// When enough charges leave their windows; `None` when only queries in flight hold
    /// the budget (retry when one completes).
    pub retry_at: Option<Instant>,
    /// The window that binds.
    pub limit: Option<RuntimeLimit>,
}

impl RunningTime {
    /// A budget enforcing every window in `limits`, each widened by `margin`.
    pub fn new(limits: &[RuntimeLimit], margin: Duration) -> RunningTime {
        RunningTime {
            limits: limits
                .iter()
                .filter(|l| !l.per.is_zero())
                .copied()
                .collect(),
            margin,
            charges: VecDeque::new(),
            reserved: Duration::ZERO,
            in_flight: 0,
            blocked_until: None,
            spent_total: Duration::ZERO,
        }
    }

    /// The windows enforced.
    pub fn limits(&self) -> &[RuntimeLimit] {
        &self.limits
    }

    /// Running time charged in the window of `limit` ending at `now`.
    pub fn charged(&self, limit: &RuntimeLimit, now: Instant) -> Duration {
        let span = limit.per + self.margin;
        self.charges
            .iter()
            .filter(|(t, _)| *t + span > now)
            .map(|(_, d)| *d)
            .sum()
    }

    /// Everything charged since this budget was made.
    pub fn spent_total(&self) -> Duration {
        self.spent_total
    }

    /// Reserved for queries in flight.
    pub fn reserved(&self) -> Duration {
        self.reserved
    }

    /// Queries in flight holding a reservation.
    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    /// Until when the server said the budget is spent (it may lie in the past).
    pub fn blocked_until(&self) -> Option<Instant> {
        self.blocked_until
    }

    /// Checks without reserving.
    pub fn check(&self, now: Instant) -> Result<(), RuntimeDenied> {
        if let Some(until) = self.blocked_until.filter(|u| *u > now) {
            return Err(RuntimeDenied {
                retry_at: Some(until),
                limit: None,
            });
        }
        let mut worst: Option<RuntimeDenied> = None;
        for limit in &self.limits {
            let span = limit.per + self.margin;
            let mut used = self.charged(limit, now) + self.reserved;
            if used < limit.budget {
                continue;
            }
            // Walk charges oldest first until enough have left the window.
            let mut retry_at = None;
            for (t, d) in self.charges.iter().filter(|(t, _)| *t + span > now) {
                used = used.saturating_sub(*d);
                if used < limit.budget {
                    retry_at = Some(*t + span);
                    break;
                }
            }
            let denial = RuntimeDenied {
                retry_at,
                limit: Some(*limit),
            };
            worst = match (worst, retry_at) {
                (None, _) => Some(denial),
                (Some(w), Some(r)) if w.retry_at.is_some_and(|wr| r > wr) => Some(denial),
                (Some(_), None) => Some(denial),
                (w, _) => w,
            };
        }
        match worst {
            Some(d) => Err(d),
            None => Ok(()),
        }
    }

    /// Reserves `estimate` for a query about to be sent, if the budget allows one more.
    pub fn try_reserve(
        &mut self,
        now: Instant,
        estimate: Duration,
    ) -> Result<Reservation, RuntimeDenied> {
        self.prune(now);
        self.check(now)?;
        self.reserved += estimate;
        self.in_flight += 1;
        Ok(Reservation { amount: estimate })
    }

    /// The query finished: release its reservation and charge what it really used.
    pub fn complete(&mut self, reservation: Reservation, actual: Duration, now: Instant) {
        self.cancel(reservation);
        if !actual.is_zero() {
            // Keep the log sorted even if a caller's clock went backwards.
            let at = self.charges.back().map_or(now, |(t, _)| (*t).max(now));
            self.charges.push_back((at, actual));
            self.spent_total += actual;
        }
    }

    /// The query was never run (not sent, refused, throttled): release its reservation.
    pub fn cancel(&mut self, reservation: Reservation) {
        self.reserved = self.reserved.saturating_sub(reservation.amount);
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// The server said the budget is spent until `until`.
    pub fn handle_exhausted(&mut self, until: Instant) {
        if self.blocked_until.is_none_or(|b| until > b) {
            self.blocked_until = Some(until);
        }
    }

    fn prune(&mut self, now: Instant) {
        let longest = self.limits.iter().map(|l| l.per).max().unwrap_or_default() + self.margin;
        while self
            .charges
            .front()
            .is_some_and(|(t, _)| *t + longest <= now)
        {
            self.charges.pop_front();
        }
        if self.blocked_until.is_some_and(|b| b <= now) {
            self.blocked_until = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::disallowed_methods)] // tests need one real instant to count from
    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn reservations_hold_the_budget() {
        let t = t0();
        let mut rt = RunningTime::new(
            &[RuntimeLimit {
                budget: Duration::from_secs(10),
                per: Duration::from_secs(3600),
            }],
            Duration::ZERO,
        );
        let a = rt.try_reserve(t, Duration::from_secs(6)).unwrap();
        let b = rt.try_reserve(t, Duration::from_secs(6)).unwrap();
        let denied = rt.try_reserve(t, Duration::from_secs(1)).unwrap_err();
        assert_eq!(denied.retry_at, None, "only queries in flight hold it");
        rt.complete(a, Duration::from_secs(2), t);
        rt.cancel(b);
        assert_eq!(rt.reserved(), Duration::ZERO);
        let c = rt.try_reserve(t, Duration::from_secs(1)).unwrap();
        rt.complete(c, Duration::from_secs(9), t + Duration::from_secs(5));
        let denied = rt
            .try_reserve(t + Duration::from_secs(6), Duration::from_secs(1))
            .unwrap_err();
        // 2 s + 9 s charged; once the first (2 s at t) leaves, 9 s < 10 s.
        assert_eq!(denied.retry_at, Some(t + Duration::from_secs(3600)));
        assert!(rt
            .try_reserve(t + Duration::from_secs(3600), Duration::ZERO)
            .is_ok());
        assert_eq!(rt.spent_total(), Duration::from_secs(11));
    }
}
