//! A quota store, as the blocking client drives it: a store operation runs in the thread
//! of a caller, and does not wait behind another caller's request. (Two clients sharing
//! one store, and a store that is down or panics, are conformance scenarios both clients
//! run.)

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use defender_blocking::{Admission, AdmitId, QuotaOp, QuotaStore, StoreTicket};
use defender_core::engine::WaitReason;
use defender_core::quota::{Quota, Ticket};
use defender_core::{ApiGroup, Limits};

use common::HoldServer;

/// The in-process quota of `defender-core` as a shared store: what Redis does, in memory.
#[derive(Debug)]
struct MemoryStore {
    quotas: Mutex<BTreeMap<ApiGroup, Quota>>,
    admitted: AtomicU64,
    released: AtomicU64,
    /// The first acquire is slow, and says when it starts.
    slow_first: Option<Mutex<mpsc::Sender<()>>>,
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
            slow_first: None,
        }
    }
}

impl QuotaStore for MemoryStore {
    fn perform(&self, op: QuotaOp) -> Option<(AdmitId, Admission)> {
        if let (QuotaOp::Acquire { .. }, Some(started)) = (&op, &self.slow_first) {
            if self.admitted.load(Ordering::SeqCst) == 0 {
                let _ = started.lock().unwrap().send(());
                // Long enough for the test's second call to queue behind this acquire.
                std::thread::sleep(Duration::from_millis(300));
            }
        }
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
                        retry_after: Some(denied.retry_at.saturating_duration_since(now)),
                        reason: denied
                            .limit
                            .map_or(WaitReason::ServerRetryTime, WaitReason::Calls),
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

/// A caller about to send its own request hands the store operation another call waits
/// for to that call's thread: the second call is admitted and answered while the first
/// is still inside HTTP (the server holds the first until the second is answered).
#[test]
fn a_store_operation_does_not_wait_behind_another_callers_request() {
    let server = HoldServer::start();
    let limits = Limits::parse("2021,incidents.calls=100/1s").expect("spec");
    let (started, first_acquire) = mpsc::channel();
    let mut store = MemoryStore::new(&limits, Duration::from_millis(20));
    store.slow_first = Some(Mutex::new(started));
    let store = Arc::new(store);
    let client = defender_blocking::Client::builder()
        .tenant("contoso")
        .client_id("app")
        .client_secret("secret")
        .base_url(&server.base)
        .login_url(&server.base)
        .limits_value(limits)
        .policy(defender_policy::StandardPolicy::standard().max_attempts(1))
        .quota_store(store.clone())
        .build()
        .expect("builds");
    let first = {
        let client = client.clone();
        std::thread::spawn(move || client.incidents().get(1u64))
    };
    first_acquire.recv().expect("the first acquire started");
    // Submitted while the first acquire is out: the store is asked for it only once the
    // first is answered, by the thread that then sends the first request.
    let second = client.incidents().get(2u64).expect("the second call");
    assert_eq!(second.incident_id, Some(2u64.into()));
    let first = first.join().expect("no panic").expect("the first call");
    assert_eq!(first.incident_id, Some(1u64.into()));
    assert_eq!(store.admitted.load(Ordering::SeqCst), 2);
}
