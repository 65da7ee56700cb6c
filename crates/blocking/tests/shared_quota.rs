//! A quota store shared by two clients (two engines, as two processes would have):
//! every call is admitted by the store, and the server never answers 429.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use defender_blocking::{Admission, AdmitId, QuotaOp, QuotaStore, StoreTicket};
use defender_core::quota::{Quota, Ticket};
use defender_core::{ApiGroup, Error, Limits};
use defender_emulator::WindowMode;

use common::Env;

/// The in-process quota of `defender-core` as a shared store: what Redis does, in memory.
#[derive(Debug)]
struct MemoryStore {
    quotas: Mutex<BTreeMap<ApiGroup, Quota>>,
    admitted: AtomicU64,
    released: AtomicU64,
}

impl MemoryStore {
    fn new(limits: &Limits, margin: Duration) -> MemoryStore {
        MemoryStore {
            quotas: Mutex::new(
                ApiGroup::ALL
                    .into_iter()
                    .map(|g| (g, Quota::new(&limits.group(g).calls, margin)))
                    .collect(),
            ),
            admitted: AtomicU64::new(0),
            released: AtomicU64::new(0),
        }
    }
}

impl QuotaStore for MemoryStore {
    fn perform(&self, op: QuotaOp) -> Option<(AdmitId, Admission)> {
        let mut quotas = self.quotas.lock().unwrap();
        let now = Instant::now();
        match op {
            QuotaOp::Acquire { id, group, .. } => {
                let quota = quotas.get_mut(&group).expect("every group has a quota");
                let answer = match quota.try_acquire(now) {
                    Ok(ticket) => {
                        self.admitted.fetch_add(1, Ordering::Relaxed);
                        Admission::Admitted(StoreTicket::new(ticket))
                    }
                    Err(denied) => Admission::Denied {
                        retry_after: denied.retry_at.saturating_duration_since(now),
                        reason: denied
                            .limit
                            .map_or_else(|| "the server's retry time".into(), |l| l.to_string()),
                    },
                };
                Some((id, answer))
            }
            QuotaOp::Release { group, ticket } => {
                self.released.fetch_add(1, Ordering::Relaxed);
                let ticket = ticket
                    .into_inner::<Ticket>()
                    .expect("a ticket of this store");
                quotas.get_mut(&group).expect("exists").release(ticket);
                None
            }
            QuotaOp::Feedback {
                group,
                retry_after,
                limit,
                ..
            } => {
                let quota = quotas.get_mut(&group).expect("exists");
                if let Some(limit) = limit {
                    quota.handle_learned_limit(limit);
                }
                if let Some(wait) = retry_after {
                    quota.handle_retry_at(now + wait);
                }
                None
            }
            _ => None,
        }
    }
}

/// A store that cannot decide (Redis down).
#[derive(Debug)]
struct DownStore;

impl QuotaStore for DownStore {
    fn perform(&self, op: QuotaOp) -> Option<(AdmitId, Admission)> {
        match op {
            QuotaOp::Acquire { id, .. } => Some((
                id,
                Admission::Unavailable("the store is down (test)".into()),
            )),
            _ => None,
        }
    }
}

#[test]
fn two_clients_sixteen_callers_one_store_exact_limits() {
    for mode in [WindowMode::Sliding, WindowMode::Fixed] {
        let limits = Limits::parse("2021,incidents.calls=20/1s").expect("spec");
        let env = Env::start(limits.clone(), mode);
        let store = Arc::new(MemoryStore::new(&limits, Duration::from_millis(500)));
        let clients: Vec<_> = (0..2)
            .map(|_| {
                env.builder(limits.clone())
                    .quota_store(store.clone())
                    .build()
                    .expect("builds")
            })
            .collect();
        let done = common::callers(&clients, 16, 4);
        assert_eq!(done, 64, "{mode:?}: every call succeeded");
        let stats = env.emulator.stats();
        assert_eq!(stats.throttled, 0, "{mode:?}: zero 429s: {stats:?}");
        assert_eq!(env.api_requests(), 64, "{mode:?}: each call sent once");
        assert_eq!(store.released.load(Ordering::Relaxed), 0);
        assert_eq!(
            store.admitted.load(Ordering::Relaxed),
            64,
            "{mode:?}: the store admitted every call"
        );
        env.rt.block_on(env.emulator.shutdown());
    }
}

#[test]
fn an_unavailable_store_is_a_typed_error_and_nothing_is_sent() {
    let limits = Limits::parse("2021").expect("spec");
    let env = Env::start(limits.clone(), WindowMode::Sliding);
    let client = env
        .builder(limits)
        .quota_store(Arc::new(DownStore))
        .build()
        .expect("builds");
    for _ in 0..3 {
        match client.hunt("AlertInfo | take 1") {
            Err(Error::QuotaStore { message }) => assert!(message.contains("down"), "{message}"),
            other => panic!("expected a QuotaStore error, got {other:?}"),
        }
        match client.incidents().get(1u64) {
            Err(Error::QuotaStore { .. }) => {}
            other => panic!("expected a QuotaStore error, got {other:?}"),
        }
    }
    assert_eq!(env.api_requests(), 0, "no API call was sent");
    env.rt.block_on(env.emulator.shutdown());
}
