//! A quota shared by two clients (two engines, as two processes would have): through a
//! store in memory and through Redis, at the server's exact limits; a store that cannot
//! decide or panics; the typed errors of a Redis quota that cannot be built; a token
//! provider serving many callers.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use defender_core::engine::{
    Admission, AdmitId, Call, QuotaOp, StoreTicket, UsageSource, WaitReason,
};
use defender_core::hunting::HuntRequest;
use defender_core::incidents::{IncidentId, IncidentQuery};
use defender_core::quota::{Quota, Ticket};
use defender_core::settings::BuildError;
use defender_core::{ApiGroup, Error, Limits, Surface};
use defender_emulator::WindowMode;
use defender_redis::{redis, StoreConfig};

use super::streams::api_requests;
use super::{Driver, EmulatorTokens, Env, Store, SyncStore, Tokens};

/// The in-process quota of `defender-core` as a shared store: what Redis does, in memory.
#[derive(Debug)]
pub struct MemoryStore {
    quotas: Mutex<BTreeMap<ApiGroup, Quota>>,
    admitted: AtomicU64,
    released: AtomicU64,
}

impl MemoryStore {
    /// One quota per group, for `limits` with `margin`.
    pub fn new(limits: &Limits, margin: Duration) -> MemoryStore {
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

impl SyncStore for MemoryStore {
    fn perform(&self, op: QuotaOp) -> Option<(AdmitId, Admission)> {
        let mut quotas = self.quotas.lock().expect("not poisoned");
        let now = Instant::now();
        match op {
            QuotaOp::Acquire { id, group, .. } => {
                let quota = quotas.get_mut(&group).expect("every group has a quota");
                let answer = match quota.try_acquire(now) {
                    Ok(ticket) => {
                        self.admitted.fetch_add(1, Ordering::SeqCst);
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
                self.released.fetch_add(1, Ordering::SeqCst);
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

impl SyncStore for DownStore {
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

/// A store that panics (a bug in the caller's store).
#[derive(Debug)]
struct PanickingStore;

impl SyncStore for PanickingStore {
    fn perform(&self, _: QuotaOp) -> Option<(AdmitId, Admission)> {
        panic!("the store broke (expected by the test)")
    }
}

fn exact() -> Limits {
    Limits::parse("2021,incidents.calls=20/1s").expect("a valid spec")
}

/// `threads` callers, caller `t` on `clients[t % clients.len()]`, each making `calls`
/// one-incident listings that must all succeed. Returns how many succeeded.
fn callers<D: Driver>(clients: &[D], threads: usize, calls: usize) -> u32 {
    let done = Arc::new(AtomicU32::new(0));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let d = clients[t % clients.len()].clone();
            let done = done.clone();
            std::thread::spawn(move || {
                for i in 0..calls {
                    let call = Call::ListIncidents(IncidentQuery {
                        top: Some(1),
                        ..Default::default()
                    });
                    d.call(call)
                        .unwrap_or_else(|e| panic!("{} caller {t} call {i}: {e}", D::NAME));
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("no caller panicked");
    }
    done.load(Ordering::Relaxed)
}

/// 16 callers on two clients sharing one store in memory, at the server's exact limits,
/// in both window modes: every call succeeds, the server throttles nothing, each call is
/// sent once, and every call was admitted by the store (none given back).
pub fn two_clients_share_one_store_at_exact_limits<D: Driver>() {
    for mode in [WindowMode::Sliding, WindowMode::Fixed] {
        let limits = exact();
        let env = Env::start(|b| b.limits(limits.clone()).window_mode(mode));
        let store = Arc::new(MemoryStore::new(&limits, Duration::from_millis(500)));
        let mut spec = env.spec(Surface::DefenderXdr, limits);
        spec.store = Store::Shared(store.clone());
        let clients: Vec<_> = (0..2).map(|_| D::connect(&spec, &env.rt)).collect();
        let done = callers(&clients, 16, 4);
        assert_eq!(done, 64, "{} {mode:?}: every call succeeded", D::NAME);
        let stats = env.stats();
        assert_eq!(
            stats.throttled,
            0,
            "{} {mode:?}: zero 429s: {stats:?}",
            D::NAME
        );
        assert_eq!(
            api_requests(&env),
            64,
            "{} {mode:?}: each call sent once",
            D::NAME
        );
        assert_eq!(
            store.released.load(Ordering::SeqCst),
            0,
            "{} {mode:?}",
            D::NAME
        );
        assert_eq!(
            store.admitted.load(Ordering::SeqCst),
            64,
            "{} {mode:?}: the store admitted every call sent",
            D::NAME
        );
        // quota() asks the store; this one does not report usage, so the client shows
        // its own calls only (none left), and says so.
        let usage = clients[0].quota().expect("the client's own view");
        for u in &usage {
            assert_eq!(u.source, UsageSource::Engine, "{} {u:?}", D::NAME);
            assert!(u.windows.is_empty(), "{} {u:?}", D::NAME);
            assert_eq!(u.active_calls, 0, "{} {u:?}", D::NAME);
        }
    }
}

/// A store that cannot decide fails each call (hunt, incident, listing) with a typed
/// error saying so, and nothing is sent; a panicking store fails the call it was asked
/// about with a typed error (naming the panic, where the client catches it), sends
/// nothing, and the client stays usable.
pub fn an_unavailable_store_fails_the_call_and_sends_nothing<D: Driver>() {
    let limits = exact();
    let env = Env::start(|b| b.limits(limits.clone()));
    let mut spec = env.spec(Surface::DefenderXdr, limits);
    spec.store = Store::Shared(Arc::new(DownStore));
    let d = D::connect(&spec, &env.rt);
    let hunt = || Call::Hunt(HuntRequest::new("AlertInfo | take 1"));
    for _ in 0..3 {
        for call in [
            hunt(),
            Call::GetIncident(IncidentId::from(1u64)),
            Call::ListIncidents(IncidentQuery::default()),
        ] {
            match d.call(call) {
                Err(Error::QuotaStore { message }) => {
                    assert!(message.contains("down"), "{}: {message}", D::NAME)
                }
                other => panic!("{}: expected a QuotaStore error, got {other:?}", D::NAME),
            }
        }
    }
    assert_eq!(api_requests(&env), 0, "{}: no API call was sent", D::NAME);

    spec.store = Store::Shared(Arc::new(PanickingStore));
    // Both clients catch the panic and fail the call at once; were one to lose it, its
    // call would wait out the store timeout, short here so that it shows as a failure.
    spec.timeout = Some(Duration::from_secs(2));
    let d = D::connect(&spec, &env.rt);
    for _ in 0..2 {
        match d.call(hunt()) {
            Err(Error::QuotaStore { message }) => {
                assert!(message.contains("panicked"), "{}: {message}", D::NAME)
            }
            other => panic!("{}: expected a QuotaStore error, got {other:?}", D::NAME),
        }
    }
    assert_eq!(api_requests(&env), 0, "{}: no API call was sent", D::NAME);
}

/// A Redis config under a prefix no other test uses.
fn redis_config(url: &str, client: &str) -> StoreConfig {
    static N: AtomicU64 = AtomicU64::new(0);
    let mut c = StoreConfig::new(url);
    c.prefix = format!(
        "test-{client}-exact-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    c.connect_timeout = Duration::from_secs(2);
    c.response_timeout = Duration::from_secs(2);
    c
}

fn cleanup(conn: &mut redis::Connection, prefix: &str) {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{{{prefix}:*"))
        .query(conn)
        .expect("KEYS");
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL").arg(keys).query(conn).expect("DEL");
    }
}

/// 16 callers on two clients bound to one Redis quota, at the server's exact limits, in
/// both window modes: every call succeeds, zero 429s, each call sent once. Skipped with a
/// note when no Redis answers, unless `REDIS_REQUIRED` is set.
pub fn two_clients_share_a_redis_quota_at_exact_limits<D: Driver>() {
    let Some(url) = crate::redis::require_redis() else {
        return;
    };
    let mut conn = redis::Client::open(url.as_str())
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
        .unwrap_or_else(|e| panic!("a connection to {url}: {e}"));
    let limits = exact();
    for mode in [WindowMode::Sliding, WindowMode::Fixed] {
        let env = Env::start(|b| b.limits(limits.clone()).window_mode(mode));
        let config = redis_config(&url, D::NAME);
        let mut spec = env.spec(Surface::DefenderXdr, limits.clone());
        spec.store = Store::Redis(Box::new(config.clone()));
        let clients: Vec<_> = (0..2).map(|_| D::connect(&spec, &env.rt)).collect();
        let done = callers(&clients, 16, 4);
        let stats = env.stats();
        // quota() asks Redis (the window here is a second long, so its count is
        // checked exactly in tests/shared_quota.rs): never over the limit, and none of
        // the calls is this client's any more.
        let usage = clients[0].quota();
        cleanup(&mut conn, &config.prefix);
        let usage = usage.unwrap_or_else(|e| panic!("{}: usage from Redis: {e}", D::NAME));
        let incidents = usage.iter().find(|u| u.group == ApiGroup::Incidents);
        let windows = incidents.map(|u| u.windows.as_slice()).unwrap_or_default();
        assert!(
            !windows.is_empty() && windows.iter().all(|w| w.used <= w.limit.max),
            "{} {mode:?}: {usage:?}",
            D::NAME
        );
        for u in &usage {
            assert_eq!(u.source, UsageSource::Store, "{} {u:?}", D::NAME);
            assert_eq!(u.active_calls, 0, "{} {u:?}", D::NAME);
        }
        assert_eq!(done, 64, "{} {mode:?}: every call succeeded", D::NAME);
        assert_eq!(
            stats.throttled,
            0,
            "{} {mode:?}: zero 429s: {stats:?}",
            D::NAME
        );
        assert_eq!(
            api_requests(&env),
            64,
            "{} {mode:?}: each call sent once",
            D::NAME
        );
    }
}

/// The builder's typed errors for a Redis quota (no Redis needed): a URL that does not
/// parse is a `QuotaStore` error that never repeats its password (in its message or its
/// debug form); a client naming no tenant or app (its tokens from a provider) cannot name
/// a shared quota.
pub fn redis_quota_build_errors_are_typed<D: Driver>() {
    let env = Env::start(|b| b);
    for url in [
        "nope://user:hunter2@host",
        "http://user:hunter2@:::nonsense",
    ] {
        let mut spec = env.spec(Surface::DefenderXdr, Limits::parse("2021").expect("spec"));
        spec.store = Store::Redis(Box::new(StoreConfig::new(url)));
        match D::build(&spec, &env.rt) {
            Err(e @ BuildError::QuotaStore { .. }) => {
                assert!(!e.to_string().contains("hunter2"), "{}: {e}", D::NAME);
                assert!(!format!("{e:?}").contains("hunter2"), "{}: {e:?}", D::NAME);
            }
            Err(e) => panic!("{} {url}: expected a typed store error, got {e:?}", D::NAME),
            Ok(_) => panic!("{} {url}: built", D::NAME),
        }
    }
    let mut spec = env.spec(Surface::DefenderXdr, Limits::parse("2021").expect("spec"));
    spec.anonymous = true;
    spec.tokens = Tokens::Fixed("t".into());
    spec.store = Store::Redis(Box::new(StoreConfig::new(crate::redis::redis_url())));
    match D::build(&spec, &env.rt) {
        Err(BuildError::SharedQuotaScope) => {}
        Err(e) => panic!("{}: expected SharedQuotaScope, got {e:?}", D::NAME),
        Ok(_) => panic!("{}: built without a tenant or app", D::NAME),
    }
}

/// A token provider (here a broker fetching from the emulator's token endpoint) is asked
/// once for many callers: 8 threads of 3 calls each all succeed on one fetch, each call
/// sent once.
pub fn a_token_provider_serves_many_callers_with_one_fetch<D: Driver>() {
    let limits = Limits::parse("2021,incidents.calls=1000/1m").expect("spec");
    let env = Env::start(|b| b.limits(limits.clone()).window_mode(WindowMode::Sliding));
    let provider = Arc::new(EmulatorTokens::new(&env.emulator.base_url()));
    let mut spec = env.spec(Surface::DefenderXdr, limits);
    spec.anonymous = true;
    spec.tokens = Tokens::Provider(provider.clone());
    let d = D::connect(&spec, &env.rt);
    assert_eq!(callers(&[d], 8, 3), 24, "{}: every call succeeded", D::NAME);
    assert_eq!(provider.fetches(), 1, "{}: one fetch for all", D::NAME);
    assert_eq!(api_requests(&env), 24, "{}", D::NAME);
}
