//! The Lua scripts against reference models, on virtual time (the scripts' now override):
//!
//! - every operation against a brute-force model written here (a list of admitted
//!   instants counted window by window, plus reservations and charges);
//! - call-only sequences against `defender_core::quota::Quota` itself.
//!
//! Each case runs on real Redis under its own prefix and asserts the same decisions:
//! admit or deny, the wait to the microsecond, and the reason. Against the brute-force
//! model, two processes (two stores) share the key and each acquire brings a margin of
//! its own (as a learned margin does): the widest one a process published while its
//! calls still count in a window widens that window for everyone.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use defender_core::limits::{ApiGroup, CallLimit, RuntimeLimit};
use defender_core::quota::{Quota, QuotaKey};
use defender_redis::{AcquireRequest, Admission, DenyReason, RedisQuotaStore, Ticket};
use proptest::prelude::*;

const T0: u64 = 10_000_000_000; // virtual µs since the epoch
const LEASE: u64 = 30_000_000;
const EXHAUSTED_DEFAULT: u64 = 7_000_000;
/// The margin of a process on a bad link.
const WIDE: Duration = Duration::from_millis(600);

#[derive(Debug, Clone)]
enum Op {
    Acquire {
        estimate_ms: u64,
        /// Which of the two processes asks.
        process: usize,
        /// Whether it asks with the wide margin instead of the setup's.
        wide: bool,
    },
    Release(usize),
    Complete(usize, u64),
    Feedback {
        retry_after_ms: Option<u64>,
        learned: Option<(u32, u64)>,
        runtime: bool,
    },
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u64..4, 0usize..2, proptest::bool::weighted(0.3)).prop_map(|(e, process, wide)| Op::Acquire {
            estimate_ms: e * 1000,
            process,
            wide,
        }),
        1 => any::<usize>().prop_map(Op::Release),
        2 => (any::<usize>(), 0u64..5).prop_map(|(i, a)| Op::Complete(i, a * 700)),
        1 => (
            proptest::option::of(1u64..8000),
            proptest::option::weighted(0.5, (1u32..4, prop_oneof![Just(1u64), Just(3), Just(20)])),
            any::<bool>()
        )
            .prop_map(|(retry_after_ms, learned, runtime)| Op::Feedback {
                retry_after_ms,
                learned,
                runtime
            }),
        5 => prop_oneof![0u64..300, 300u64..4000, Just(10_000)].prop_map(Op::Advance),
    ]
}

#[derive(Debug, Clone)]
struct Setup {
    calls: Vec<CallLimit>,
    runtime: Vec<RuntimeLimit>,
    margin: Duration,
}

fn setup() -> impl Strategy<Value = Setup> {
    let call =
        (1u32..5, prop_oneof![Just(1u64), Just(3), Just(10)]).prop_map(|(max, s)| CallLimit {
            max,
            per: Duration::from_secs(s),
        });
    let rt = (1u64..8, prop_oneof![Just(5u64), Just(20)]).prop_map(|(b, s)| RuntimeLimit {
        budget: Duration::from_millis(b * 700),
        per: Duration::from_secs(s),
    });
    (
        proptest::collection::vec(call, 0..3),
        proptest::collection::vec(rt, 0..3),
        prop_oneof![Just(0u64), Just(250)],
    )
        .prop_map(|(mut calls, mut runtime, margin)| {
            // One window per period, as the limits parser gives them.
            calls.sort_by_key(|c| c.per);
            calls.dedup_by_key(|c| c.per);
            runtime.sort_by_key(|r| r.per);
            runtime.dedup_by_key(|r| r.per);
            Setup {
                calls,
                runtime,
                margin: Duration::from_millis(margin),
            }
        })
}

fn us(d: Duration) -> u64 {
    d.as_micros() as u64
}

/// What the model or the store decided.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Decision {
    Admitted,
    Denied(u64, DenyReason),
}

/// The brute-force reference model.
#[derive(Debug, Default)]
struct Model {
    /// (admitted at, ticket number)
    calls: Vec<(u64, usize)>,
    /// (ticket, at, amount)
    res: Vec<(usize, u64, u64)>,
    /// (at, amount)
    charges: Vec<(u64, u64)>,
    blocked: u64,
    rblocked: u64,
    learned: BTreeMap<u64, u32>,
    /// The margin each process published at its latest admitted call: (margin, at).
    margins: BTreeMap<usize, (u64, u64)>,
}

impl Model {
    fn windows(&self, s: &Setup) -> Vec<(u32, u64)> {
        let mut w: Vec<(u32, u64)> = s.calls.iter().map(|c| (c.max, us(c.per))).collect();
        for (&per, &max) in &self.learned {
            match w.iter_mut().find(|x| x.1 == per) {
                Some(x) => x.0 = x.0.min(max),
                None => w.push((max, per)),
            }
        }
        w
    }

    fn acquire(
        &mut self,
        s: &Setup,
        now: u64,
        ticket: usize,
        estimate: u64,
        (process, m): (usize, u64),
    ) -> Decision {
        let wins = self.windows(s);
        // A window of `per` is widened by `m`, or by a wider margin a process published
        // while its calls may still lie in such a window.
        let published: Vec<(u64, u64)> = self.margins.values().copied().collect();
        let span = move |per: u64| {
            published
                .iter()
                .filter(|&&(mg, at)| now - at <= per + mg)
                .map(|&(mg, _)| mg)
                .fold(m, u64::max)
                + per
        };
        if let Some(longest) = wins.iter().map(|w| span(w.1)).max() {
            self.calls
                .retain(|c| c.0 > now.saturating_sub(longest) || now < longest);
        }
        let mut worst: Option<(u64, DenyReason)> = None;
        let consider = |at: u64, why: DenyReason, worst: &mut Option<(u64, DenyReason)>| {
            if worst.is_none_or(|(w, _)| at > w) {
                *worst = Some((at, why));
            }
        };
        for &(max, per) in &wins {
            let span = span(per);
            let mut live: Vec<u64> = self
                .calls
                .iter()
                .map(|c| c.0)
                .filter(|&t| t + span > now)
                .collect();
            live.sort();
            if live.len() >= max as usize {
                let free = live[live.len() - max as usize] + span;
                consider(
                    free,
                    DenyReason::CallWindow(CallLimit {
                        max,
                        per: Duration::from_micros(per),
                    }),
                    &mut worst,
                );
            }
        }
        if self.blocked > now {
            consider(self.blocked, DenyReason::RetryAfter, &mut worst);
        }
        if !s.runtime.is_empty() {
            let rlongest = s.runtime.iter().map(|r| span(us(r.per))).max().unwrap();
            self.charges.retain(|c| c.0 + rlongest > now);
            self.res.retain(|r| r.1 + LEASE > now);
            let reserved: u64 = self.res.iter().map(|r| r.2).sum();
            for r in &s.runtime {
                let span = span(us(r.per));
                let budget = us(r.budget);
                let inside: Vec<(u64, u64)> = self
                    .charges
                    .iter()
                    .filter(|c| c.0 + span > now)
                    .copied()
                    .collect();
                let mut used = reserved + inside.iter().map(|c| c.1).sum::<u64>();
                if used < budget {
                    continue;
                }
                // (when it stops counting, amount, is a reservation)
                let mut ev: Vec<(u64, u64, bool)> =
                    inside.iter().map(|c| (c.0 + span, c.1, false)).collect();
                ev.extend(self.res.iter().map(|x| (x.1 + LEASE, x.2, true)));
                ev.sort_by_key(|e| (e.0, e.2));
                for e in ev {
                    used -= e.1;
                    if used < budget {
                        let why = if e.2 {
                            DenyReason::RuntimeInFlight(*r)
                        } else {
                            DenyReason::RuntimeWindow(*r)
                        };
                        consider(e.0, why, &mut worst);
                        break;
                    }
                }
            }
        }
        if self.rblocked > now {
            consider(self.rblocked, DenyReason::RuntimeExhausted, &mut worst);
        }
        if let Some((at, why)) = worst {
            return Decision::Denied(at - now, why);
        }
        if !wins.is_empty() {
            self.calls.push((now, ticket));
        }
        if !s.runtime.is_empty() && estimate > 0 {
            self.res.push((ticket, now, estimate));
        }
        // Publish this process's margin; forget a process whose calls left every window.
        let hold = wins
            .iter()
            .map(|w| w.1)
            .chain(s.runtime.iter().map(|r| us(r.per)))
            .max();
        if let Some(hold) = hold {
            self.margins
                .retain(|&p, &mut (mg, at)| p == process || now - at <= hold + mg);
            self.margins.insert(process, (m, now));
        }
        Decision::Admitted
    }

    fn release(&mut self, ticket: usize) {
        self.calls.retain(|c| c.1 != ticket);
        self.res.retain(|r| r.0 != ticket);
    }

    fn complete(&mut self, now: u64, ticket: usize, actual: u64) {
        self.res.retain(|r| r.0 != ticket);
        if actual > 0 {
            self.charges.push((now, actual));
        }
    }

    fn feedback(
        &mut self,
        now: u64,
        retry_after: Option<u64>,
        learned: Option<(u32, u64)>,
        rt: bool,
    ) {
        let retry_after = retry_after.or(rt.then_some(EXHAUSTED_DEFAULT));
        if let Some(ra) = retry_after {
            let b = if rt {
                &mut self.rblocked
            } else {
                &mut self.blocked
            };
            *b = (*b).max(now + ra);
        }
        if let Some((max, per)) = learned {
            let e = self.learned.entry(per).or_insert(max);
            *e = (*e).min(max);
        }
    }
}

fn decision(a: &Admission) -> Decision {
    match a {
        Admission::Admitted(_) => Decision::Admitted,
        Admission::Denied(d) => Decision::Denied(us(d.retry_after), d.reason),
    }
}

fn store(test: &str) -> (RedisQuotaStore, String) {
    let mut config = common::config(test);
    config.reservation_lease = Duration::from_micros(LEASE);
    config.runtime_exhausted_default = Duration::from_micros(EXHAUSTED_DEFAULT);
    let prefix = config.prefix.clone();
    (common::store(&config), prefix)
}

fn run_against_model(setup: &Setup, ops: &[Op]) -> Result<(), TestCaseError> {
    let Some(mut raw) = common::raw() else {
        return Ok(());
    };
    let (store, prefix) = store("model");
    // A second process on the same keys: a store of its own (its own ticket prefix).
    let mut stores = [common::store(store.config()), store];
    let key = QuotaKey::new("tenant", "app", ApiGroup::Hunting);
    let mut model = Model::default();
    let mut now = T0;
    // (ticket, model number)
    let mut live: Vec<(Ticket, usize)> = Vec::new();
    let mut next = 0;
    let result = (|| {
        for (step, op) in ops.iter().enumerate() {
            for store in &stores {
                store.set_now_override(Some(Duration::from_micros(now)));
            }
            let store = &mut stores[0];
            match op {
                Op::Acquire {
                    estimate_ms,
                    process,
                    wide,
                } => {
                    let margin = if *wide { WIDE } else { setup.margin };
                    let req = AcquireRequest::calls(&setup.calls, margin)
                        .runtime(&setup.runtime)
                        .estimate(Duration::from_millis(*estimate_ms));
                    let got = stores[*process].acquire(&key, &req).unwrap();
                    let want =
                        model.acquire(setup, now, next, estimate_ms * 1000, (*process, us(margin)));
                    prop_assert_eq!(&decision(&got), &want, "step {} {:?}", step, op);
                    if let Admission::Admitted(t) = got {
                        prop_assert_eq!(t.admitted_at(), Some(Duration::from_micros(now)));
                        live.push((t, next));
                        next += 1;
                    }
                }
                Op::Release(i) if !live.is_empty() => {
                    let (t, n) = live.remove(i % live.len());
                    store.release(&key, &t).unwrap();
                    model.release(n);
                }
                Op::Complete(i, actual_ms) if !live.is_empty() => {
                    let (t, n) = live.remove(i % live.len());
                    store
                        .complete(&key, &t, Duration::from_millis(*actual_ms))
                        .unwrap();
                    model.complete(now, n, actual_ms * 1000);
                }
                Op::Release(_) | Op::Complete(..) => {}
                Op::Feedback {
                    retry_after_ms,
                    learned,
                    runtime,
                } => {
                    let l = learned.map(|(max, s)| CallLimit {
                        max,
                        per: Duration::from_secs(s),
                    });
                    store
                        .feedback(&key, retry_after_ms.map(Duration::from_millis), l, *runtime)
                        .unwrap();
                    model.feedback(
                        now,
                        retry_after_ms.map(|m| m * 1000),
                        learned.map(|(m, s)| (m, s * 1_000_000)),
                        *runtime,
                    );
                }
                Op::Advance(ms) => now += ms * 1000,
            }
        }
        Ok(())
    })();
    common::cleanup(&mut raw, &prefix);
    result
}

fn run_against_core(
    calls: &[CallLimit],
    margin: Duration,
    ops: &[Op],
) -> Result<(), TestCaseError> {
    let Some(mut raw) = common::raw() else {
        return Ok(());
    };
    let (mut store, prefix) = store("core");
    let key = QuotaKey::new("tenant", "app", ApiGroup::Incidents);
    #[allow(clippy::disallowed_methods)]
    let base = Instant::now();
    let at = |us: u64| base + Duration::from_micros(us - T0);
    let mut quota = Quota::new(calls, margin);
    let mut now = T0;
    let mut live: Vec<(Ticket, defender_core::quota::Ticket)> = Vec::new();
    let result = (|| {
        for (step, op) in ops.iter().enumerate() {
            store.set_now_override(Some(Duration::from_micros(now)));
            match op {
                Op::Acquire { .. } => {
                    let got = store
                        .acquire(&key, &AcquireRequest::calls(calls, margin))
                        .unwrap();
                    let want = quota.try_acquire(at(now));
                    match (&got, want) {
                        (Admission::Admitted(t), Ok(ct)) => live.push((t.clone(), ct)),
                        (Admission::Denied(d), Err(cd)) => {
                            prop_assert_eq!(
                                d.retry_after,
                                cd.retry_at - at(now),
                                "step {} {:?}",
                                step,
                                op
                            );
                            let reason = cd
                                .limit
                                .map_or(DenyReason::RetryAfter, DenyReason::CallWindow);
                            prop_assert_eq!(d.reason, reason);
                        }
                        (got, want) => {
                            prop_assert!(false, "step {step}: redis {got:?}, core {want:?}")
                        }
                    }
                }
                Op::Release(i) | Op::Complete(i, _) if !live.is_empty() => {
                    let (t, ct) = live.remove(i % live.len());
                    store.release(&key, &t).unwrap();
                    quota.release(ct);
                }
                Op::Release(_) | Op::Complete(..) => {}
                Op::Feedback {
                    retry_after_ms,
                    learned,
                    ..
                } => {
                    let l = learned.map(|(max, s)| CallLimit {
                        max,
                        per: Duration::from_secs(s),
                    });
                    store
                        .feedback(&key, retry_after_ms.map(Duration::from_millis), l, false)
                        .unwrap();
                    if let Some(ms) = retry_after_ms {
                        quota.handle_retry_at(at(now) + Duration::from_millis(*ms));
                    }
                    if let Some(l) = l {
                        quota.handle_learned_limit(l);
                    }
                }
                Op::Advance(ms) => now += ms * 1000,
            }
        }
        Ok(())
    })();
    common::cleanup(&mut raw, &prefix);
    result
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn scripts_match_the_reference_model(setup in setup(), ops in proptest::collection::vec(op(), 1..60)) {
        run_against_model(&setup, &ops)?;
    }

    #[test]
    fn call_windows_match_core_quota(setup in setup(), ops in proptest::collection::vec(op(), 1..60)) {
        // With no window at all, core's `Quota::release` (which finds a call by its
        // instant) may remove another call admitted at the same instant once a learned
        // window exists; the store removes exactly the ticket's entry.
        prop_assume!(!setup.calls.is_empty());
        run_against_core(&setup.calls, setup.margin, &ops)?;
    }
}

/// A hand-written sequence, so a failure of the basics reads plainly.
#[test]
fn a_hunting_day_by_hand() {
    let Some(mut raw) = common::raw() else {
        return;
    };
    let (mut store, prefix) = store("hand");
    let key = QuotaKey::new("t", "a", ApiGroup::Hunting);
    let calls = [CallLimit {
        max: 2,
        per: Duration::from_secs(60),
    }];
    let runtime = [RuntimeLimit {
        budget: Duration::from_secs(10),
        per: Duration::from_secs(3600),
    }];
    let req = AcquireRequest::calls(&calls, Duration::ZERO)
        .runtime(&runtime)
        .estimate(Duration::from_secs(6));
    store_now(&store, 0);
    let a = store.acquire(&key, &req).unwrap().ticket().unwrap();
    assert_eq!(a.reserved(), Duration::from_secs(6));
    let b = store.acquire(&key, &req).unwrap().ticket().unwrap();
    // Two calls in the minute and 12 s reserved of 10: the call window binds (free at
    // 60 s); the reservations would lapse sooner (their 30 s lease).
    let d = *store.acquire(&key, &req).unwrap().denied().unwrap();
    assert_eq!(d.retry_after, Duration::from_secs(60));
    assert_eq!(d.reason, DenyReason::CallWindow(calls[0]));
    store_now(&store, 10);
    store.complete(&key, &a, Duration::from_secs(9)).unwrap();
    store.release(&key, &b).unwrap();
    let u = store.usage(&key, &req).unwrap();
    assert_eq!(u.runtime[0].charged, Duration::from_secs(9));
    assert_eq!(u.reserved, Duration::ZERO);
    assert_eq!(u.calls[0].used, 1);
    assert_eq!(u.calls[0].next_free_in, Duration::ZERO);
    let c = store.acquire(&key, &req).unwrap().ticket().unwrap();
    let d = *store.acquire(&key, &req).unwrap().denied().unwrap();
    assert_eq!(d.retry_after, Duration::from_secs(50), "{d:?}");
    store.complete(&key, &c, Duration::from_secs(2)).unwrap();
    // 11 s charged of 10: free when the first charge (at 10 s) leaves, at 3610 s.
    store_now(&store, 100);
    let d = *store.acquire(&key, &req).unwrap().denied().unwrap();
    assert_eq!(d.retry_after, Duration::from_secs(3510));
    assert_eq!(d.reason, DenyReason::RuntimeWindow(runtime[0]));
    common::cleanup(&mut raw, &prefix);
}

fn store_now(store: &RedisQuotaStore, s: u64) {
    store.set_now_override(Some(Duration::from_micros(T0 + s * 1_000_000)));
}
