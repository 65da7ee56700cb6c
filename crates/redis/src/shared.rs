//! The store bound to one app registration: what the clients run for the engine's
//! [`QuotaOp`]s (see `defender_core::engine::QuotaMode::Shared`).

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use defender_core::engine::{
    self, AdmitId, GroupUsage, QuotaOp, StoreTicket, UsageSource, WaitReason,
};
use defender_core::limits::{ApiGroup, Limits};
use defender_core::quota::QuotaKey;

use crate::{AcquireRequest, Admission, RedisQuotaStore, StoreError, Ticket, Usage};

/// One app registration's quota in a store: its tenant and app id (the key), the limits
/// and the margin every process of the app enforces.
#[derive(Debug, Clone)]
pub struct Binding {
    /// The tenant id.
    pub tenant: String,
    /// The app (client) id.
    pub app: String,
    /// The limits enforced (the configured windows; learned ones come from the store).
    pub limits: Limits,
    /// Added to every window, as in the in-process quota.
    pub margin: Duration,
    /// When running time is held by queries in flight (perhaps in another process), the
    /// store cannot know when they complete: the engine asks again after at most this
    /// long rather than at the reservations' lease (default 1 s).
    pub in_flight_poll: Duration,
}

impl Binding {
    /// A binding.
    pub fn new(
        tenant: impl Into<String>,
        app: impl Into<String>,
        limits: Limits,
        margin: Duration,
    ) -> Binding {
        Binding {
            tenant: tenant.into(),
            app: app.into(),
            limits,
            margin,
            in_flight_poll: Duration::from_secs(1),
        }
    }

    /// The key of `group`.
    pub fn key(&self, group: ApiGroup) -> QuotaKey {
        QuotaKey::new(&self.tenant, &self.app, group)
    }

    /// What an acquire of `group` checks, with `estimate` reserved (hunting).
    pub fn request(&self, group: ApiGroup, estimate: Duration) -> AcquireRequest<'_> {
        AcquireRequest::group(self.limits.group(group), self.margin).estimate(estimate)
    }

    /// What a usage of `group` asks: with no margin of its own, so the answer's
    /// [`Usage::margin`](crate::Usage::margin) is the widest one a process published
    /// while its calls count in a window (zero when no process has a call in one).
    fn usage_request(&self, group: ApiGroup) -> AcquireRequest<'_> {
        AcquireRequest::group(self.limits.group(group), Duration::ZERO)
    }
}

/// The engine's view of a store's answer.
pub(crate) fn to_engine(
    answer: Result<Admission, StoreError>,
    in_flight_poll: Duration,
) -> engine::Admission {
    match answer {
        Ok(Admission::Admitted(ticket)) => engine::Admission::Admitted(StoreTicket::new(ticket)),
        Ok(Admission::Denied(d)) => {
            use crate::DenyReason as D;
            let (retry_after, reason) = match d.reason {
                D::CallWindow(l) => (d.retry_after, WaitReason::Calls(l)),
                D::RetryAfter => (d.retry_after, WaitReason::ServerRetryTime),
                D::RuntimeWindow(l) => (d.retry_after, WaitReason::Runtime(l)),
                // A completion, here or in another process, may free it any time.
                D::RuntimeInFlight(_) => {
                    (d.retry_after.min(in_flight_poll), WaitReason::RuntimeHeld)
                }
                D::RuntimeExhausted => (d.retry_after, WaitReason::RuntimeExhausted),
            };
            engine::Admission::Denied {
                retry_after: Some(retry_after),
                reason,
            }
        }
        Err(e) => engine::Admission::Unavailable(e.to_string()),
    }
}

/// The store's usage of `group`, read at `now`, as the engine shows usage.
pub(crate) fn to_usage(group: ApiGroup, u: Usage, now: Instant) -> GroupUsage {
    let ahead = |d: Duration| (!d.is_zero()).then(|| now + d);
    GroupUsage {
        group,
        windows: u
            .calls
            .iter()
            .map(|w| defender_core::quota::WindowUsage {
                limit: w.limit,
                used: w.used,
                next_free: now + w.next_free_in,
            })
            .collect(),
        blocked_until: ahead(u.blocked_for),
        runtime: u.runtime.iter().map(|r| (r.limit, r.charged)).collect(),
        runtime_reserved: u.reserved,
        runtime_blocked_until: ahead(u.runtime_blocked_for),
        in_flight: u.in_flight,
        margin: u.margin,
        active_calls: 0,
        clients: u.clients,
        source: if u.local {
            UsageSource::StoreFallback
        } else {
            UsageSource::Store
        },
    }
}

/// A settle operation failed: the call already went (or never will), so it is not
/// failed; the windows it touched lapse by themselves.
pub(crate) fn settle_failed(op: &'static str, group: ApiGroup, e: &StoreError) {
    tracing::warn!(op, %group, error = %e, "the shared quota store missed an update");
}

pub(crate) fn ticket(t: StoreTicket) -> Option<Ticket> {
    let t = t.into_inner::<Ticket>();
    if t.is_none() {
        tracing::warn!("a quota ticket from another store was handed to the Redis store");
    }
    t
}

/// A blocking store bound to one app: answers the engine's [`QuotaOp`]s. Cheap to share
/// between threads (one connection behind a mutex: admissions are one round trip each).
#[derive(Debug)]
pub struct SharedQuota {
    store: Mutex<RedisQuotaStore>,
    binding: Binding,
}

impl SharedQuota {
    /// Binds `store` to one app.
    pub fn new(store: RedisQuotaStore, binding: Binding) -> SharedQuota {
        SharedQuota {
            store: Mutex::new(store),
            binding,
        }
    }

    /// The binding.
    pub fn binding(&self) -> &Binding {
        &self.binding
    }

    /// Usage of every group of the bound app, as every process shares it (its
    /// `active_calls` are zero: the store does not know a client's own calls). Its
    /// `margin` is the widest one a process of the app published while its calls count
    /// in a window, zero when none has: a client adds its own
    /// ([`GroupUsage::with_own_calls`]).
    pub fn usage(&self) -> Result<Vec<GroupUsage>, StoreError> {
        let b = &self.binding;
        let mut store = self.store.lock().unwrap_or_else(PoisonError::into_inner);
        ApiGroup::ALL
            .into_iter()
            .map(|group| {
                let u = store.usage(&b.key(group), &b.usage_request(group))?;
                Ok(to_usage(group, u, Instant::now()))
            })
            .collect()
    }

    /// Runs `f` on the store.
    pub fn with_store<R>(&self, f: impl FnOnce(&mut RedisQuotaStore) -> R) -> R {
        f(&mut self.store.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Performs one operation; an `Acquire` returns the answer for
    /// `Engine::handle_admission`, the others return `None`.
    pub fn perform(&self, op: QuotaOp) -> Option<(AdmitId, engine::Admission)> {
        let b = &self.binding;
        let mut store = self.store.lock().unwrap_or_else(PoisonError::into_inner);
        match op {
            QuotaOp::Acquire {
                id,
                group,
                estimate,
                margin,
            } => {
                let answer =
                    store.acquire(&b.key(group), &b.request(group, estimate).margin(margin));
                Some((id, to_engine(answer, b.in_flight_poll)))
            }
            QuotaOp::Release { group, ticket } => {
                if let Some(t) = self::ticket(ticket) {
                    if let Err(e) = store.release(&b.key(group), &t) {
                        settle_failed("release", group, &e);
                    }
                }
                None
            }
            QuotaOp::Complete {
                group,
                ticket,
                running,
            } => {
                if let Some(t) = self::ticket(ticket) {
                    if let Err(e) = store.complete(&b.key(group), &t, running) {
                        settle_failed("complete", group, &e);
                    }
                }
                None
            }
            QuotaOp::Feedback {
                group,
                retry_after,
                limit,
                runtime_exhausted,
            } => {
                if let Err(e) = store.feedback(&b.key(group), retry_after, limit, runtime_exhausted)
                {
                    settle_failed("feedback", group, &e);
                }
                None
            }
            _ => None,
        }
    }
}

/// An async store bound to one app: answers the engine's [`QuotaOp`]s. Share it in an
/// `Arc`; its scripts are pipelined on one multiplexed connection.
#[cfg(feature = "async")]
#[derive(Debug)]
pub struct AsyncSharedQuota {
    store: crate::AsyncRedisQuotaStore,
    binding: Binding,
}

#[cfg(feature = "async")]
impl AsyncSharedQuota {
    /// Binds `store` to one app.
    pub fn new(store: crate::AsyncRedisQuotaStore, binding: Binding) -> AsyncSharedQuota {
        AsyncSharedQuota { store, binding }
    }

    /// The binding.
    pub fn binding(&self) -> &Binding {
        &self.binding
    }

    /// The store.
    pub fn store(&self) -> &crate::AsyncRedisQuotaStore {
        &self.store
    }

    /// Usage of every group of the bound app, as every process shares it (its
    /// `active_calls` are zero: the store does not know a client's own calls). Its
    /// `margin` is the widest one a process of the app published while its calls count
    /// in a window, zero when none has: a client adds its own
    /// ([`GroupUsage::with_own_calls`]).
    pub async fn usage(&self) -> Result<Vec<GroupUsage>, StoreError> {
        let b = &self.binding;
        let mut all = Vec::new();
        for group in ApiGroup::ALL {
            let u = self
                .store
                .usage(&b.key(group), &b.usage_request(group))
                .await?;
            all.push(to_usage(group, u, Instant::now()));
        }
        Ok(all)
    }

    /// Performs one operation; an `Acquire` returns the answer for
    /// `Engine::handle_admission`, the others return `None`.
    pub async fn perform(&self, op: QuotaOp) -> Option<(AdmitId, engine::Admission)> {
        let b = &self.binding;
        let store = &self.store;
        match op {
            QuotaOp::Acquire {
                id,
                group,
                estimate,
                margin,
            } => {
                let answer = store
                    .acquire(&b.key(group), &b.request(group, estimate).margin(margin))
                    .await;
                Some((id, to_engine(answer, b.in_flight_poll)))
            }
            QuotaOp::Release { group, ticket } => {
                if let Some(t) = self::ticket(ticket) {
                    if let Err(e) = store.release(&b.key(group), &t).await {
                        settle_failed("release", group, &e);
                    }
                }
                None
            }
            QuotaOp::Complete {
                group,
                ticket,
                running,
            } => {
                if let Some(t) = self::ticket(ticket) {
                    if let Err(e) = store.complete(&b.key(group), &t, running).await {
                        settle_failed("complete", group, &e);
                    }
                }
                None
            }
            QuotaOp::Feedback {
                group,
                retry_after,
                limit,
                runtime_exhausted,
            } => {
                if let Err(e) = store
                    .feedback(&b.key(group), retry_after, limit, runtime_exhausted)
                    .await
                {
                    settle_failed("feedback", group, &e);
                }
                None
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Denied, DenyReason};
    use defender_core::limits::{CallLimit, RuntimeLimit};

    fn denied(answer: engine::Admission) -> Duration {
        match answer {
            engine::Admission::Denied {
                retry_after: Some(wait),
                ..
            } => wait,
            other => panic!("expected a denial, got {other:?}"),
        }
    }

    #[test]
    fn in_flight_denials_are_polled_others_kept_exact() {
        let poll = Duration::from_secs(1);
        let lease = Duration::from_secs(600);
        let runtime = RuntimeLimit {
            budget: Duration::from_secs(3600),
            per: Duration::from_secs(3600),
        };
        let in_flight = Ok(Admission::Denied(Denied {
            retry_after: lease,
            reason: DenyReason::RuntimeInFlight(runtime),
        }));
        assert_eq!(denied(to_engine(in_flight, poll)), poll);
        let window = Ok(Admission::Denied(Denied {
            retry_after: Duration::from_secs(42),
            reason: DenyReason::CallWindow(CallLimit {
                max: 45,
                per: Duration::from_secs(60),
            }),
        }));
        assert_eq!(denied(to_engine(window, poll)), Duration::from_secs(42));
    }
}
