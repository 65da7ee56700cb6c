//! The in-process fallback: a `Quota` and a `RunningTime` per key.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use defender_core::limits::{CallLimit, RuntimeLimit};
use defender_core::quota::{Quota, QuotaKey};
use defender_core::runtime::RunningTime;

use crate::{
    AcquireRequest, Admission, CallWindowUsage, Denied, DenyReason, RuntimeWindowUsage,
    StoreConfig, Ticket, TicketInner, Usage,
};

/// How often to retry when only local queries in flight hold the running-time budget.
const IN_FLIGHT_POLL: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Entry {
    configured: bool,
    quota: Quota,
    runtime: RunningTime,
    learned: Vec<CallLimit>,
    blocked: Option<Instant>,
    runtime_blocked: Option<Instant>,
}

#[derive(Debug)]
pub(crate) struct Local {
    base: Instant,
    share: u32,
    exhausted_default: Duration,
    wait_cap: Duration,
    entries: HashMap<QuotaKey, Entry>,
}

impl Entry {
    fn empty() -> Entry {
        Entry {
            configured: false,
            quota: Quota::new(&[], Duration::ZERO),
            runtime: RunningTime::new(&[], Duration::ZERO),
            learned: Vec::new(),
            blocked: None,
            runtime_blocked: None,
        }
    }
}

impl Local {
    pub(crate) fn new(config: &StoreConfig) -> Local {
        Local {
            base: Instant::now(),
            share: config.fallback_share.max(1),
            exhausted_default: config.runtime_exhausted_default,
            wait_cap: config.wait_cap(),
            entries: HashMap::new(),
        }
    }

    fn now(&self, over: Option<u64>) -> Instant {
        match over {
            Some(us) => self.base + Duration::from_micros(us),
            None => Instant::now(),
        }
    }

    fn share_call(&self, l: CallLimit) -> CallLimit {
        CallLimit {
            max: (l.max / self.share).max(1),
            per: l.per,
        }
    }

    fn entry(&mut self, key: &QuotaKey, req: Option<&AcquireRequest<'_>>) -> &mut Entry {
        let share = self.share;
        let share_call = |l: &CallLimit| CallLimit {
            max: (l.max / share).max(1),
            per: l.per,
        };
        let e = self.entries.entry(key.clone()).or_insert_with(Entry::empty);
        if let Some(req) = req.filter(|_| !e.configured) {
            let calls: Vec<CallLimit> = req.calls.iter().map(share_call).collect();
            let runtime: Vec<RuntimeLimit> = req
                .runtime
                .iter()
                .map(|r| RuntimeLimit {
                    budget: r.budget / share,
                    per: r.per,
                })
                .collect();
            e.quota = Quota::new(&calls, req.margin);
            e.runtime = RunningTime::new(&runtime, req.margin);
            for l in &e.learned {
                e.quota.handle_learned_limit(*l);
            }
            if let Some(b) = e.blocked {
                e.quota.handle_retry_at(b);
            }
            if let Some(b) = e.runtime_blocked {
                e.runtime.handle_exhausted(b);
            }
            e.configured = true;
        }
        e
    }

    pub(crate) fn acquire(
        &mut self,
        key: &QuotaKey,
        req: &AcquireRequest<'_>,
        over: Option<u64>,
    ) -> Admission {
        let now = self.now(over);
        let e = self.entry(key, Some(req));
        let call = e.quota.check(now).err();
        let runtime = e.runtime.check(now).err();
        if call.is_none() && runtime.is_none() {
            let reserve = !req.runtime.is_empty() && !req.estimate.is_zero();
            let (Ok(ticket), Ok(reservation)) = (
                e.quota.try_acquire(now),
                if reserve {
                    e.runtime.try_reserve(now, req.estimate).map(Some)
                } else {
                    Ok(None)
                },
            ) else {
                unreachable!("checked just before at the same instant")
            };
            defender_core::telemetry::record_store_fallback(key.group);
            return Admission::Admitted(Ticket {
                inner: TicketInner::Local {
                    ticket,
                    reservation,
                },
            });
        }
        let mut worst: Option<(Instant, DenyReason)> = None;
        if let Some(d) = call {
            let reason = d
                .limit
                .map_or(DenyReason::RetryAfter, DenyReason::CallWindow);
            worst = Some((d.retry_at, reason));
        }
        if let Some(d) = runtime {
            let (at, reason) = match (d.retry_at, d.limit) {
                (Some(at), Some(l)) => (at, DenyReason::RuntimeWindow(l)),
                (Some(at), None) => (at, DenyReason::RuntimeExhausted),
                (None, Some(l)) => (now + IN_FLIGHT_POLL, DenyReason::RuntimeInFlight(l)),
                (None, None) => (now + IN_FLIGHT_POLL, DenyReason::RuntimeExhausted),
            };
            if worst.is_none_or(|(w, _)| at > w) {
                worst = Some((at, reason));
            }
        }
        let (at, reason) = worst.unwrap_or((now, DenyReason::RetryAfter));
        Admission::Denied(Denied {
            retry_after: at.saturating_duration_since(now),
            reason,
        })
    }

    pub(crate) fn release(&mut self, key: &QuotaKey, ticket: &Ticket) {
        if let TicketInner::Local {
            ticket,
            reservation,
        } = &ticket.inner
        {
            if let Some(e) = self.entries.get_mut(key) {
                e.quota.release(*ticket);
                if let Some(r) = reservation {
                    e.runtime.cancel(*r);
                }
            }
        }
    }

    pub(crate) fn complete(
        &mut self,
        key: &QuotaKey,
        ticket: &Ticket,
        actual: Duration,
        over: Option<u64>,
    ) {
        let now = self.now(over);
        let reservation = match &ticket.inner {
            TicketInner::Local { reservation, .. } => *reservation,
            TicketInner::Redis { .. } => None,
        };
        let e = self.entry(key, None);
        e.runtime.complete(
            reservation.unwrap_or(defender_core::runtime::Reservation {
                amount: Duration::ZERO,
            }),
            actual,
            now,
        );
    }

    pub(crate) fn feedback(
        &mut self,
        key: &QuotaKey,
        retry_after: Option<Duration>,
        learned: Option<CallLimit>,
        runtime_exhausted: bool,
        over: Option<u64>,
    ) {
        let now = self.now(over);
        // The same caps as the scripts: no server wait longer than `max_server_wait`.
        let (wait, learned) = crate::cap_feedback(
            self.wait_cap,
            self.exhausted_default,
            retry_after,
            learned,
            runtime_exhausted,
        );
        let learned = learned.map(|l| self.share_call(l));
        let e = self.entry(key, None);
        if let Some(wait) = wait {
            let until = now + wait;
            if runtime_exhausted {
                e.runtime_blocked = e.runtime_blocked.max(Some(until));
                e.runtime.handle_exhausted(until);
            } else {
                e.blocked = e.blocked.max(Some(until));
                e.quota.handle_retry_at(until);
            }
        }
        if let Some(l) = learned {
            e.learned.push(l);
            e.quota.handle_learned_limit(l);
        }
    }

    pub(crate) fn usage(
        &mut self,
        key: &QuotaKey,
        req: &AcquireRequest<'_>,
        over: Option<u64>,
    ) -> Usage {
        let now = self.now(over);
        let e = self.entry(key, Some(req));
        let until =
            |b: Option<Instant>| b.map_or(Duration::ZERO, |b| b.saturating_duration_since(now));
        Usage {
            calls: e
                .quota
                .usage(now)
                .into_iter()
                .map(|u| CallWindowUsage {
                    limit: u.limit,
                    used: u.used,
                    next_free_in: u.next_free.saturating_duration_since(now),
                })
                .collect(),
            runtime: e
                .runtime
                .limits()
                .iter()
                .map(|l| RuntimeWindowUsage {
                    limit: *l,
                    charged: e.runtime.charged(l, now),
                })
                .collect(),
            reserved: e.runtime.reserved(),
            in_flight: 0,
            blocked_for: until(e.quota.blocked_until()),
            runtime_blocked_for: until(e.runtime_blocked),
            local: true,
            clients: Vec::new(),
            margin: req.margin,
        }
    }
}
