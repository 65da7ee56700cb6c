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

use super::*;
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
            // The margin is set on the quotas as it changes (`set_margin`).
            QuotaOp::Acquire {
                id,
                group,
                estimate,
                ..
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

    /// Widens or narrows every call window (a learned margin).
    pub(crate) fn set_margin(&mut self, margin: Duration) {
        for q in self.quotas.values_mut() {
            q.set_margin(margin);
        }
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
            margin: q.margin(),
            active_calls,
            clients: Vec::new(),
            source: UsageSource::Engine,
        }
    }
}

/// Admission as the engine runs it: one path for every answerer.
impl Engine {
    /// With a shared store: the store's answer to an [`QuotaOp::Acquire`].
    pub fn handle_admission(&mut self, id: AdmitId, answer: Admission, now: Instant) {
        self.advance(now);
        self.dirty = true;
        self.admission_answered(id, answer);
    }

    /// An answer to an `Acquire`, from the local admission or a store.
    pub(super) fn admission_answered(&mut self, id: AdmitId, answer: Admission) {
        let call = self
            .admitting
            .iter()
            .find(|(_, (a, _, _))| *a == id)
            .map(|(g, (_, c, _))| (*g, *c));
        let Some((group, call_id)) = call else {
            // Given up on (too late): a slot it admitted goes back. Otherwise unknown or
            // already answered (a transport bug): nothing to match it with.
            if let Some(group) = self.abandoned.remove(&id) {
                if let Admission::Admitted(ticket) = answer {
                    self.quota_op(QuotaOp::Release { group, ticket });
                }
            }
            return;
        };
        self.admitting.remove(&group);
        let waiting = self
            .calls
            .get(&call_id)
            .is_some_and(|c| matches!(c.phase, Phase::Admitting(a) if a == id));
        if !waiting {
            // The call was cancelled or failed meanwhile.
            if let Admission::Admitted(ticket) = answer {
                self.quota_op(QuotaOp::Release { group, ticket });
            }
            return;
        }
        match answer {
            Admission::Admitted(ticket) => {
                let reserved = group == ApiGroup::Hunting;
                let token = self.usable_token().map(|t| t.token.clone());
                let state = self.calls.get_mut(&call_id).expect("checked above");
                state.phase = Phase::Queued;
                match token {
                    Some(token) => {
                        self.dispatch(call_id, token.expose(), Hold { ticket, reserved })
                    }
                    None => {
                        // The token lapsed while the store decided: give the slot back and
                        // ask again once a token is there.
                        self.quota_op(QuotaOp::Release { group, ticket });
                    }
                }
            }
            Admission::Denied {
                retry_after,
                reason,
            } => {
                let retry_after = match (retry_after, &self.local) {
                    (Some(wait), _) => wait,
                    // Only this engine's calls in flight hold it: the end of one drives
                    // the engine again, and the group waits until then.
                    (None, Some(_)) => {
                        if let Some(c) = self.calls.get_mut(&call_id) {
                            c.phase = Phase::Queued;
                        }
                        return;
                    }
                    // A store without a time: ask it again shortly.
                    (None, None) => admission::STORE_HELD_POLL,
                };
                // Spreads the processes that share a store; one process needs none.
                let jitter = match self.local {
                    Some(_) => Duration::ZERO,
                    None => self.policy.admission_jitter(retry_after),
                };
                let retry_at = self.now + retry_after.max(Duration::from_millis(1)) + jitter;
                // Every queued call of the group waits for the same instant.
                let queued: Vec<CallId> = self
                    .calls
                    .iter()
                    .filter(|(_, c)| c.group == group)
                    .filter(|(_, c)| matches!(c.phase, Phase::Queued | Phase::Admitting(_)))
                    .map(|(id, _)| *id)
                    .collect();
                for id in queued {
                    if let Some(c) = self.calls.get_mut(&id) {
                        c.phase = Phase::Queued;
                        if c.not_before.is_some_and(|t| t >= retry_at) {
                            continue;
                        }
                    }
                    self.wait_or_fail(id, retry_at, reason.clone());
                }
            }
            Admission::Unavailable(message) => {
                self.calls.remove(&call_id);
                self.fail(call_id, Error::QuotaStore { message });
            }
        }
    }

    /// The one way to the quota: the in-process admission answers at once; otherwise the
    /// operation goes out to the shared store ([`Output::Quota`]).
    pub(super) fn quota_op(&mut self, op: QuotaOp) {
        let now = self.now;
        match self.local.as_mut() {
            Some(local) => {
                if let Some((id, answer)) = local.perform(op, now) {
                    self.admission_answered(id, answer);
                }
            }
            None => self.quota_ops.push_back(op),
        }
    }

    /// An admitted call that was not sent gives back its slot and reservation.
    pub(super) fn give_back(&mut self, state: CallState) {
        self.release(state.group, state.hold);
    }

    pub(super) fn release(&mut self, group: ApiGroup, hold: Option<Hold>) {
        if let Some(Hold { ticket, .. }) = hold {
            self.quota_op(QuotaOp::Release { group, ticket });
        }
    }

    /// A sent call's answer (or its failure) came: its reservation turns into a charge of
    /// what it ran. A ticket without a reservation needs nothing more: the call stays
    /// counted in its windows.
    pub(super) fn settle(&mut self, group: ApiGroup, hold: Option<Hold>, running: Duration) {
        if let Some(Hold {
            ticket,
            reserved: true,
        }) = hold
        {
            self.spent += running;
            self.quota_op(QuotaOp::Complete {
                group,
                ticket,
                running,
            });
        }
    }

    /// The reservation for the next hunting call: the longest recent running time.
    pub(super) fn runtime_estimate(&self) -> Duration {
        self.recent_runtimes
            .iter()
            .max()
            .copied()
            .unwrap_or(self.config.runtime_estimate)
    }

    pub(super) fn record_runtime(&mut self, running: Duration) {
        if self.recent_runtimes.len() == RECENT_RUNTIMES {
            self.recent_runtimes.pop_front();
        }
        self.recent_runtimes.push_back(running);
    }

    /// The call must wait until `retry_at`: within `max_wait` it waits (true is returned
    /// when it failed instead, so the group is not blocked by it).
    pub(super) fn wait_or_fail(
        &mut self,
        id: CallId,
        retry_at: Instant,
        reason: WaitReason,
    ) -> bool {
        let now = self.now;
        let max_wait = self.policy.max_wait();
        let state = self.calls.get_mut(&id).expect("caller holds a live id"); // only called for queued calls
        let total = retry_at.saturating_duration_since(state.queued_since);
        if total > max_wait {
            let group = state.group;
            self.calls.remove(&id);
            self.fail(
                id,
                Error::QuotaWait {
                    group,
                    retry_at,
                    wait: retry_at.saturating_duration_since(now),
                    max_wait,
                    reason,
                },
            );
            return true;
        }
        state.not_before = Some(retry_at);
        if state.announced_until != Some(retry_at) {
            state.announced_until = Some(retry_at);
            let group = state.group;
            self.events.push_back(Event::Waiting {
                id,
                group,
                until: retry_at,
                reason,
            });
        }
        false
    }
}
