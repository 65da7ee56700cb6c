//! Admission: may a call go now? One seam, two answerers.
//!
//! The engine asks with [`QuotaOp::Acquire`] and settles with `Release`, `Complete` and
//! `Feedback`. With [`QuotaMode::Shared`] a store answers them through the transport
//! (every process of an app shares its windows); otherwise [`LocalAdmission`] answers
//! the very same operations at once, in process. The engine has one path: it hands
//! every operation to [`Engine::quota_op`](super::Engine) and handles every answer in
//! `admission_answered`, whoever gave it.
//!
//! The one difference is time: the local answer comes within the same `drive`, so a
//! group whose call was admitted may admit its next call at once; a store's answer
//! comes later, so a group asks about one call at a time.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{
    Admission, AdmitId, GroupUsage, QuotaMode, QuotaOp, StoreTicket, UsageSource, WaitReason,
};
use crate::limits::{ApiGroup, Limits};
use crate::quota::{Quota, Ticket};
use crate::runtime::{Reservation, RunningTime};

/// A store that denies without a time (only calls in flight hold the budget, which it
/// cannot see end) is asked again after this long.
pub(crate) const STORE_HELD_POLL: Duration = Duration::from_secs(1);

/// The in-process answerer: every group's call windows, and hunting's running-time
/// budget, as the server counts them for one (tenant, app).
#[derive(Debug)]
pub(crate) struct LocalAdmission {
    quotas: BTreeMap<ApiGroup, Quota>,
    runtime: RunningTime,
}

/// What [`LocalAdmission`] admitted a call with (carried in a [`StoreTicket`]).
#[derive(Debug)]
struct LocalTicket {
    ticket: Ticket,
    reservation: Option<Reservation>,
}

impl LocalAdmission {
    /// The answerer for `limits`, each window widened by `margin`; `None` when a shared
    /// store answers instead.
    pub(crate) fn for_mode(mode: QuotaMode, limits: &Limits, margin: Duration) -> Option<Self> {
        (mode == QuotaMode::Local).then(|| LocalAdmission {
            quotas: ApiGroup::ALL
                .into_iter()
                .map(|g| (g, Quota::new(&limits.group(g).calls, margin)))
                .collect(),
            runtime: RunningTime::new(&limits.hunting.runtime, margin),
        })
    }

    /// Answers one operation as a store would: an `Acquire` returns its answer, the
    /// others return `None`.
    pub(crate) fn perform(&mut self, op: QuotaOp, now: Instant) -> Option<(AdmitId, Admission)> {
        match op {
            QuotaOp::Acquire {
                id,
                group,
                estimate,
            } => Some((id, self.acquire(group, estimate, now))),
            QuotaOp::Release { group, ticket } => {
                if let Some(t) = ticket.into_inner::<LocalTicket>() {
                    self.quota(group).release(t.ticket);
                    if let Some(r) = t.reservation {
                        self.runtime.cancel(r);
                    }
                }
                None
            }
            QuotaOp::Complete {
                ticket, running, ..
            } => {
                // The call stays counted in its windows; its reservation becomes a charge.
                if let Some(r) = ticket
                    .into_inner::<LocalTicket>()
                    .and_then(|t| t.reservation)
                {
                    self.runtime.complete(r, running, now);
                }
                None
            }
            QuotaOp::Feedback {
                group,
                retry_after,
                limit,
                runtime_exhausted,
            } => {
                if let Some(limit) = limit {
                    self.quota(group).handle_learned_limit(limit);
                }
                if let Some(w) = retry_after {
                    if runtime_exhausted {
                        self.runtime.handle_exhausted(now + w);
                    } else {
                        self.quota(group).handle_retry_at(now + w);
                    }
                }
                None
            }
        }
    }

    fn quota(&mut self, group: ApiGroup) -> &mut Quota {
        self.quotas
            .get_mut(&group)
            .expect("a quota exists for every group") // built from ApiGroup::ALL
    }

    fn acquire(&mut self, group: ApiGroup, estimate: Duration, now: Instant) -> Admission {
        let ticket = match self.quota(group).try_acquire(now) {
            Ok(t) => t,
            Err(denied) => {
                return Admission::Denied {
                    retry_after: Some(denied.retry_at.saturating_duration_since(now)),
                    reason: match denied.limit {
                        Some(l) => WaitReason::Calls(l),
                        None => WaitReason::ServerRetryTime,
                    },
                }
            }
        };
        let mut reservation = None;
        if group == ApiGroup::Hunting {
            match self.runtime.try_reserve(now, estimate) {
                Ok(r) => reservation = Some(r),
                Err(denied) => {
                    self.quota(group).release(ticket);
                    return Admission::Denied {
                        retry_after: denied.retry_at.map(|t| t.saturating_duration_since(now)),
                        reason: match (denied.limit, denied.retry_at) {
                            (Some(l), _) => WaitReason::Runtime(l),
                            (None, Some(_)) => WaitReason::RuntimeExhausted,
                            (None, None) => WaitReason::RuntimeHeld,
                        },
                    };
                }
            }
        }
        Admission::Admitted(StoreTicket::new(LocalTicket {
            ticket,
            reservation,
        }))
    }

    /// When each group blocked by the server's retry time may go again.
    pub(crate) fn timers(&self) -> impl Iterator<Item = Instant> + '_ {
        self.quotas.values().filter_map(Quota::blocked_until)
    }

    /// Usage of `group` at `now`; `active_calls` is the engine's count.
    pub(crate) fn usage(&self, group: ApiGroup, now: Instant, active_calls: usize) -> GroupUsage {
        let q = &self.quotas[&group];
        let hunting = group == ApiGroup::Hunting;
        GroupUsage {
            group,
            windows: q.usage(now),
            blocked_until: q.blocked_until().filter(|b| *b > now),
            runtime: if hunting {
                self.runtime
                    .limits()
                    .iter()
                    .map(|l| (*l, self.runtime.charged(l, now)))
                    .collect()
            } else {
                Vec::new()
            },
            runtime_reserved: if hunting {
                self.runtime.reserved()
            } else {
                Duration::ZERO
            },
            runtime_blocked_until: if hunting {
                self.runtime.blocked_until().filter(|b| *b > now)
            } else {
                None
            },
            in_flight: if hunting { self.runtime.in_flight() } else { 0 },
            active_calls,
            source: UsageSource::Engine,
        }
    }
}
