//! A quota shared by two clients (two engines, as two processes would have) through a
//! `QuotaStore`: an in-memory store over the engine's own `Quota`, against the emulator.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use defender_async::{async_trait, Admission, AdmitId, QuotaOp, QuotaStore, StoreTicket};
use defender_core::engine::Call;
use defender_core::incidents::IncidentQuery;
use defender_core::quota::{Quota, Ticket};
use defender_core::{ApiGroup, Error, Limits};
use defender_emulator::WindowMode;

/// One quota per group behind a mutex, as one Redis would hold it for many processes.
#[derive(Debug)]
struct MemoryStore {
    quotas: Mutex<BTreeMap<ApiGroup, Quota>>,
    admissions: AtomicUsize,
    releases: AtomicUsize,
}

impl MemoryStore {
    fn new(limits: &Limits, margin: Duration) -> MemoryStore {
        let quotas = ApiGroup::ALL
            .into_iter()
            .map(|g| (g, Quota::new(&limits.group(g).calls, margin)))
            .collect();
        MemoryStore {
            quotas: Mutex::new(quotas),
            admissions: AtomicUsize::new(0),
            releases: AtomicUsize::new(0),
        }
    }
}

#[async_trait]
impl QuotaStore for MemoryStore {
    async fn perform(&self, op: QuotaOp) -> Option<(AdmitId, Admission)> {
        let now = Instant::now();
        let mut quotas = self.quotas.lock().unwrap();
        match op {
            QuotaOp::Acquire { id, group, .. } => {
                let quota = quotas.get_mut(&group).expect("every group");
                let answer = match quota.try_acquire(now) {
                    Ok(ticket) => {
                        self.admissions.fetch_add(1, Ordering::SeqCst);
                        Admission::Admitted(StoreTicket::new(ticket))
                    }
                    Err(denied) => Admission::Denied {
                        retry_after: denied.retry_at.saturating_duration_since(now),
                        reason: denied
                            .limit
                            .map_or("the server's retry time".into(), |l| l.to_string()),
                    },
                };
                Some((id, answer))
            }
            QuotaOp::Release { group, ticket } => {
                if let Some(t) = ticket.into_inner::<Ticket>() {
                    quotas.get_mut(&group).expect("every group").release(t);
                    self.releases.fetch_add(1, Ordering::SeqCst);
                }
                None
            }
            QuotaOp::Feedback {
                group,
                retry_after,
                limit,
                ..
            } => {
                let quota = quotas.get_mut(&group).expect("every group");
                if let Some(l) = limit {
                    quota.handle_learned_limit(l);
                }
                if let Some(w) = retry_after {
                    quota.handle_retry_at(now + w);
                }
                None
            }
            _ => None,
        }
    }
}

/// Answers every admission with "unavailable".
#[derive(Debug)]
struct DownStore;

#[async_trait]
impl QuotaStore for DownStore {
    async fn perform(&self, op: QuotaOp) -> Option<(AdmitId, Admission)> {
        match op {
            QuotaOp::Acquire { id, .. } => {
                Some((id, Admission::Unavailable("the store is down".into())))
            }
            _ => None,
        }
    }
}

fn exact() -> Limits {
    Limits::parse("2021,incidents.calls=20/1s").expect("a valid spec")
}

/// 16 callers on two clients sharing one store, at the server's exact limits: every call
/// succeeds, the server throttles nothing, and every call was admitted by the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_share_one_store_at_exact_limits() {
    for mode in [WindowMode::Sliding, WindowMode::Fixed] {
        let limits = exact();
        let emu = common::emulator(&limits, mode).await;
        let store = Arc::new(MemoryStore::new(&limits, Duration::from_millis(500)));
        let clients: Vec<_> = (0..2)
            .map(|_| {
                common::builder(&emu, &limits)
                    .quota_store(store.clone())
                    .build()
                    .expect("the client builds")
            })
            .collect();
        common::list_concurrently(&clients, 16, 4).await;
        let stats = emu.stats();
        assert_eq!(stats.throttled, 0, "{mode:?}: zero 429s");
        assert_eq!(
            common::api_requests(&stats),
            64,
            "{mode:?}: each call sent once"
        );
        assert_eq!(
            store.admissions.load(Ordering::SeqCst) - store.releases.load(Ordering::SeqCst),
            64,
            "{mode:?}: the store admitted every call sent"
        );
        assert_eq!(store.releases.load(Ordering::SeqCst), 0, "{mode:?}");
    }
}

/// A store that cannot decide fails the call with a typed error, and nothing is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unavailable_store_fails_the_call_and_sends_nothing() {
    let limits = exact();
    let emu = common::emulator(&limits, WindowMode::Sliding).await;
    let client = common::builder(&emu, &limits)
        .quota_store(Arc::new(DownStore))
        .build()
        .expect("the client builds");
    for _ in 0..3 {
        match client
            .call(Call::ListIncidents(IncidentQuery::default()))
            .await
        {
            Err(Error::QuotaStore { message }) => assert!(message.contains("down"), "{message}"),
            other => panic!("expected QuotaStore, got {other:?}"),
        }
    }
    assert_eq!(
        common::api_requests(&emu.stats()),
        0,
        "no API call was sent"
    );
}
