//! Property tests of the quota and the running-time budget against naive references:
//! a `Vec` of admitted instants counted by brute force.

use std::time::{Duration, Instant};

use defender_core::quota::{Quota, QuotaKey, Quotas};
use defender_core::runtime::RunningTime;
use defender_core::{ApiGroup, CallLimit, RuntimeLimit};
use proptest::prelude::*;

#[allow(clippy::disallowed_methods)] // one real instant to count from
fn t0() -> Instant {
    Instant::now()
}

/// Brute force: the most admitted instants in any half-open window of length `per`.
fn worst_window(admitted: &[Instant], per: Duration) -> usize {
    admitted
        .iter()
        .map(|start| {
            admitted
                .iter()
                .filter(|t| **t >= *start && **t < *start + per)
                .count()
        })
        .max()
        .unwrap_or(0)
}

fn limits() -> impl Strategy<Value = Vec<CallLimit>> {
    prop::collection::vec((1u32..6, 1u64..40), 1..4).prop_map(|v| {
        v.into_iter()
            .map(|(max, secs)| CallLimit {
                max,
                per: Duration::from_secs(secs),
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// No window of any configured span ever holds more admitted calls than its limit
    /// (widened by the margin), and a call denied "not before t" is admitted at t.
    #[test]
    fn windows_never_overflow(
        limits in limits(),
        margin_ms in 0u64..2000,
        steps in prop::collection::vec((0u64..5000, any::<bool>()), 1..200),
    ) {
        let start = t0();
        let margin = Duration::from_millis(margin_ms);
        let mut q = Quota::new(&limits, margin);
        let mut now = start;
        let mut admitted = Vec::new();
        for (dt, retry_at_denial) in steps {
            now += Duration::from_millis(dt);
            match q.try_acquire(now) {
                Ok(t) => admitted.push(t.at),
                Err(denied) => {
                    prop_assert!(denied.retry_at > now);
                    if retry_at_denial {
                        now = denied.retry_at;
                        let t = q.try_acquire(now);
                        prop_assert!(t.is_ok(), "denied until {:?} but refused then", denied.retry_at - start);
                        admitted.push(t.unwrap().at);
                    }
                }
            }
        }
        for l in &limits {
            prop_assert!(worst_window(&admitted, l.per + margin) <= l.max as usize);
        }
    }

    /// A margin that changes between admissions (a learned one, never above the margin
    /// the quota was made with) decides exactly as a naive log counted by brute force
    /// with the margin of the moment.
    #[test]
    fn a_changing_margin_decides_as_the_naive_log(
        limits in limits(),
        ceiling_ms in 0u64..2000,
        steps in prop::collection::vec((0u64..5000, prop::option::of(0u64..2000)), 1..200),
    ) {
        let start = t0();
        let ceiling = Duration::from_millis(ceiling_ms);
        let mut q = Quota::new(&limits, ceiling);
        let mut margin = ceiling;
        let mut now = start;
        let mut log: Vec<Instant> = Vec::new();
        for (dt, new_margin) in steps {
            now += Duration::from_millis(dt);
            if let Some(m) = new_margin {
                margin = Duration::from_millis(m).min(ceiling);
                q.set_margin(margin);
            }
            let naive_admits = limits.iter().all(|l| {
                log.iter().filter(|t| **t + l.per + margin > now).count() < l.max as usize
            });
            let got = q.try_acquire(now);
            prop_assert_eq!(got.is_ok(), naive_admits, "at {:?} with margin {:?}", now - start, margin);
            if let Ok(t) = got {
                log.push(t.at);
            }
        }
    }

    /// A denial is exact: one nanosecond earlier than its retry time is still refused.
    #[test]
    fn retry_time_is_the_earliest(limits in limits(), gaps in prop::collection::vec(0u64..3000, 1..60)) {
        let mut q = Quota::new(&limits, Duration::ZERO);
        let mut now = t0();
        for g in gaps {
            now += Duration::from_millis(g);
            if let Err(d) = q.try_acquire(now) {
                let before = d.retry_at - Duration::from_nanos(1);
                prop_assert!(q.check(before).is_err());
                prop_assert!(q.check(d.retry_at).is_ok());
            }
        }
    }

    /// Tenants, apps and API groups never affect each other.
    #[test]
    fn keys_are_independent(ops in prop::collection::vec((0usize..4, 0u64..2000), 1..200)) {
        let lim = [CallLimit { max: 3, per: Duration::from_secs(10) }];
        let keys = [
            QuotaKey::new("t1", "a", ApiGroup::Hunting),
            QuotaKey::new("t1", "a", ApiGroup::Incidents),
            QuotaKey::new("t2", "a", ApiGroup::Hunting),
            QuotaKey::new("t1", "b", ApiGroup::Hunting),
        ];
        let mut shared = Quotas::new(Duration::ZERO);
        let mut alone: Vec<Quota> = keys.iter().map(|_| Quota::new(&lim, Duration::ZERO)).collect();
        let mut now = t0();
        for (k, dt) in ops {
            now += Duration::from_millis(dt);
            let a = shared.try_acquire(&keys[k], &lim, now).is_ok();
            let b = alone[k].try_acquire(now).is_ok();
            prop_assert_eq!(a, b);
        }
    }

    /// Sequential queries: the running-time budget is never overdrawn by more than one
    /// query's actual time, in any window.
    #[test]
    fn budget_overdrawn_by_at_most_one_query(
        budget_s in 5u64..60,
        per_s in 60u64..600,
        queries in prop::collection::vec((0u64..30_000, 0u64..20_000), 1..150),
    ) {
        let limit = RuntimeLimit { budget: Duration::from_secs(budget_s), per: Duration::from_secs(per_s) };
        let mut rt = RunningTime::new(&[limit], Duration::ZERO);
        let mut now = t0();
        let mut charged: Vec<(Instant, Duration)> = Vec::new();
        let mut largest = Duration::ZERO;
        for (gap, ran_ms) in queries {
            now += Duration::from_millis(gap);
            let ran = Duration::from_millis(ran_ms);
            let r = match rt.try_reserve(now, Duration::from_secs(1)) {
                Ok(r) => r,
                Err(d) => {
                    let Some(at) = d.retry_at else { continue };
                    prop_assert!(at > now);
                    now = at;
                    rt.try_reserve(now, Duration::from_secs(1)).expect("admitted at its retry time")
                }
            };
            now += ran;
            rt.complete(r, ran, now);
            charged.push((now, ran));
            largest = largest.max(ran);
        }
        for (end, _) in &charged {
            let in_window: Duration = charged
                .iter()
                .filter(|(t, _)| *t <= *end && *t + limit.per > *end)
                .map(|(_, d)| *d)
                .sum();
            prop_assert!(in_window <= limit.budget + largest, "{:?} > {:?} + {:?}", in_window, limit.budget, largest);
        }
    }
}
