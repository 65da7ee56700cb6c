//! Exact sliding-window call quotas.
//!
//! A [`Quota`] enforces every call window of one API group at once: a call is admitted
//! only when, for every window of `max` calls per `per`, fewer than `max` admitted calls
//! lie in the last `per + margin`. The safety margin absorbs network jitter: the server
//! sees our calls shifted by their latency, and a margin at least as wide as the spread
//! of latencies keeps every server-side window, sliding or fixed, within its limit.
//!
//! ```
//! use defender_core::quota::Quota;
//! use defender_core::CallLimit;
//! use std::time::{Duration, Instant};
//!
//! # #[allow(clippy::disallowed_methods)]
//! let t0 = Instant::now();
//! let mut q = Quota::new(&[CallLimit { max: 2, per: Duration::from_secs(60) }], Duration::ZERO);
//! assert!(q.try_acquire(t0).is_ok());
//! assert!(q.try_acquire(t0).is_ok());
//! let denied = q.try_acquire(t0).unwrap_err();
//! assert_eq!(denied.retry_at, t0 + Duration::from_secs(60));
//! assert!(q.try_acquire(denied.retry_at).is_ok());
//! ```

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::limits::CallLimit;

/// The call quota of one (tenant, app, API group).
#[derive(Debug, Clone)]
pub struct Quota {
    windows: Vec<Window>,
    margin: Duration,
    blocked_until: Option<Instant>,
    last_now: Option<Instant>,
}

#[derive(Debug, Clone)]
struct Window {
    limit: CallLimit,
    /// Admitted instants still inside `per + margin`, oldest first.
    log: VecDeque<Instant>,
}

/// Proof that a call was admitted; give it back with [`Quota::release`] if the call is
/// never sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    /// When the call was admitted.
    pub at: Instant,
}

/// A denial: the earliest instant at which the call would be admitted, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denied {
    /// The earliest instant that would succeed (absent other calls).
    pub retry_at: Instant,
    /// The window that binds, or `None` when the server's retry time binds.
    pub limit: Option<CallLimit>,
}

/// The usage of one window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowUsage {
    /// The window.
    pub limit: CallLimit,
    /// Calls admitted in it now.
    pub used: u32,
    /// When the next call could go (now, if `used < max`).
    pub next_free: Instant,
}

impl Quota {
    /// A quota enforcing every window in `limits`, each widened by `margin`.
    pub fn new(limits: &[CallLimit], margin: Duration) -> Quota {
        Quota {
            windows: limits
                .iter()
                .filter(|l| l.max > 0 && !l.per.is_zero())
                .map(|&limit| Window {
                    limit,
                    log: VecDeque::new(),
                })
                .collect(),
            margin,
            blocked_until: None,
            last_now: None,
        }
    }

    /// The windows enforced, including limits learned from the server.
    pub fn limits(&self) -> impl Iterator<Item = CallLimit> + '_ {
        self.windows.iter().map(|w| w.limit)
    }

    /// The safety margin added to every window.
    pub fn margin(&self) -> Duration {
        self.margin
    }

    /// The server's retry time, while it lies ahead.
    pub fn blocked_until(&self) -> Option<Instant> {
        self.blocked_until
    }

    /// Time never goes backwards inside the quota: an earlier `now` is read as the latest.
    fn clamp(&mut self, now: Instant) -> Instant {
        let now = match self.last_now {
            Some(last) if last > now => last,
            _ => now,
        };
        self.last_now = Some(now);
        now
    }

    /// Checks without admitting.
    pub fn check(&self, now: Instant) -> Result<(), Denied> {
        let now = self.last_now.map_or(now, |l| l.max(now));
        let mut worst: Option<Denied> = None;
        if let Some(until) = self.blocked_until {
            if until > now {
                worst = Some(Denied {
                    retry_at: until,
                    limit: None,
                });
            }
        }
        for w in &self.windows {
            let span = w.limit.per + self.margin;
            // Entries whose window has passed no longer count.
            let live = w.log.len() - w.log.partition_point(|&t| t + span <= now);
            let max = w.limit.max as usize;
            if live >= max {
                // The call is admitted once the (live - max + 1)-th oldest live entry expires.
                let expired = w.log.len() - live;
                let retry_at = w.log[expired + live - max] + span;
                if worst.is_none_or(|d| retry_at > d.retry_at) {
                    worst = Some(Denied {
                        retry_at,
                        limit: Some(w.limit),
                    });
                }
            }
        }
        match worst {
            Some(d) => Err(d),
            None => Ok(()),
        }
    }

    /// Admits a call at `now` if every window allows it; otherwise says when to retry.
    pub fn try_acquire(&mut self, now: Instant) -> Result<Ticket, Denied> {
        let now = self.clamp(now);
        self.prune(now);
        self.check(now)?;
        for w in &mut self.windows {
            w.log.push_back(now);
        }
        Ok(Ticket { at: now })
    }

    /// Gives back a ticket whose call was never sent.
    pub fn release(&mut self, ticket: Ticket) {
        for w in &mut self.windows {
            if let Some(pos) = w.log.iter().rposition(|&t| t == ticket.at) {
                w.log.remove(pos);
            }
        }
    }

    /// The server said not to call before `until` (a 429's retry time).
    pub fn handle_retry_at(&mut self, until: Instant) {
        if self.blocked_until.is_none_or(|b| until > b) {
            self.blocked_until = Some(until);
        }
    }

    /// The server named a limit ("maximum allowed 45 per 00:01:00"): adopt it when it is
    /// tighter than ours, or add it when we had no window of that length.
    pub fn handle_learned_limit(&mut self, limit: CallLimit) {
        if limit.max == 0 || limit.per.is_zero() {
            return;
        }
        match self.windows.iter_mut().find(|w| w.limit.per == limit.per) {
            Some(w) if w.limit.max > limit.max => w.limit.max = limit.max,
            Some(_) => {}
            None => self.windows.push(Window {
                limit,
                log: VecDeque::new(),
            }),
        }
    }

    /// Usage of every window at `now`.
    pub fn usage(&self, now: Instant) -> Vec<WindowUsage> {
        let now = self.last_now.map_or(now, |l| l.max(now));
        self.windows
            .iter()
            .map(|w| {
                let span = w.limit.per + self.margin;
                let start = w.log.partition_point(|&t| t + span <= now);
                let live = w.log.len() - start;
                let max = w.limit.max as usize;
                let next_free = if live >= max {
                    w.log[start + live - max] + span
                } else {
                    now
                };
                WindowUsage {
                    limit: w.limit,
                    used: live as u32,
                    next_free,
                }
            })
            .collect()
    }

    fn prune(&mut self, now: Instant) {
        let margin = self.margin;
        for w in &mut self.windows {
            let span = w.limit.per + margin;
            while w.log.front().is_some_and(|&t| t + span <= now) {
                w.log.pop_front();
            }
        }
        if self.blocked_until.is_some_and(|b| b <= now) {
            self.blocked_until = None;
        }
    }
}

/// Whose quota: Microsoft counts per application and tenant, and per API group.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QuotaKey {
    /// The tenant.
    pub tenant: String,
    /// The application (client) id.
    pub app: String,
    /// The API group.
    pub group: crate::limits::ApiGroup,
}

impl QuotaKey {
    /// The key of `app` in `tenant` for `group`.
    pub fn new(tenant: &str, app: &str, group: crate::limits::ApiGroup) -> QuotaKey {
        QuotaKey {
            tenant: tenant.to_owned(),
            app: app.to_owned(),
            group,
        }
    }
}

/// A quota per [`QuotaKey`], made on first use from the limits given.
#[derive(Debug, Clone, Default)]
pub struct Quotas {
    margin: Duration,
    quotas: std::collections::HashMap<QuotaKey, Quota>,
}

impl Quotas {
    /// An empty set whose quotas use `margin`.
    pub fn new(margin: Duration) -> Quotas {
        Quotas {
            margin,
            quotas: Default::default(),
        }
    }

    /// The quota of `key`, made from `limits` if it does not exist yet.
    pub fn get_or_insert(&mut self, key: &QuotaKey, limits: &[CallLimit]) -> &mut Quota {
        let margin = self.margin;
        self.quotas
            .entry(key.clone())
            .or_insert_with(|| Quota::new(limits, margin))
    }

    /// Admits a call of `key` at `now` when all its windows allow it.
    pub fn try_acquire(
        &mut self,
        key: &QuotaKey,
        limits: &[CallLimit],
        now: Instant,
    ) -> Result<Ticket, Denied> {
        self.get_or_insert(key, limits).try_acquire(now)
    }

    /// The quota of `key`, if it was used.
    pub fn get(&self, key: &QuotaKey) -> Option<&Quota> {
        self.quotas.get(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::disallowed_methods)] // tests need one real instant to count from
    fn t0() -> Instant {
        Instant::now()
    }

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn every_window_binds() {
        let t = t0();
        let mut q = Quota::new(
            &[
                CallLimit { max: 3, per: MIN },
                CallLimit {
                    max: 4,
                    per: 10 * MIN,
                },
            ],
            Duration::ZERO,
        );
        for _ in 0..3 {
            q.try_acquire(t).unwrap();
        }
        let d = q.try_acquire(t).unwrap_err();
        assert_eq!(d.retry_at, t + MIN);
        q.try_acquire(t + MIN).unwrap();
        let d = q.try_acquire(t + MIN).unwrap_err();
        assert_eq!(d.retry_at, t + 10 * MIN);
        assert_eq!(d.limit.unwrap().max, 4);
    }

    #[test]
    fn margin_widens_windows() {
        let t = t0();
        let mut q = Quota::new(
            &[CallLimit { max: 1, per: MIN }],
            Duration::from_millis(500),
        );
        q.try_acquire(t).unwrap();
        assert_eq!(
            q.try_acquire(t + MIN).unwrap_err().retry_at,
            t + MIN + Duration::from_millis(500)
        );
    }

    #[test]
    fn release_and_feedback() {
        let t = t0();
        let mut q = Quota::new(&[CallLimit { max: 1, per: MIN }], Duration::ZERO);
        let ticket = q.try_acquire(t).unwrap();
        q.release(ticket);
        q.try_acquire(t).unwrap();
        q.handle_retry_at(t + 5 * MIN);
        assert_eq!(
            q.try_acquire(t + 2 * MIN).unwrap_err(),
            Denied {
                retry_at: t + 5 * MIN,
                limit: None
            }
        );
        q.handle_learned_limit(CallLimit {
            max: 2,
            per: Duration::from_secs(1),
        });
        assert_eq!(q.limits().count(), 2);
        q.handle_learned_limit(CallLimit { max: 1, per: MIN });
        q.handle_learned_limit(CallLimit { max: 10, per: MIN });
        assert_eq!(q.limits().next().unwrap().max, 1);
    }

    #[test]
    fn usage_reports_next_free() {
        let t = t0();
        let mut q = Quota::new(&[CallLimit { max: 2, per: MIN }], Duration::ZERO);
        q.try_acquire(t).unwrap();
        q.try_acquire(t + Duration::from_secs(10)).unwrap();
        let u = q.usage(t + Duration::from_secs(20));
        assert_eq!(u[0].used, 2);
        assert_eq!(u[0].next_free, t + MIN);
    }
}
