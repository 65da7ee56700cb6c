//! The store on real Redis: atomicity under concurrency, expiry, the bound on the sets,
//! isolation between keys, feedback, and Redis unreachable.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use defender_core::limits::{ApiGroup, CallLimit, RuntimeLimit};
use defender_core::quota::QuotaKey;
use defender_redis::{
    AcquireRequest, Admission, DenyReason, OnRedisError, RedisQuotaStore, RuntimeScope,
    StoreConfig, StoreError,
};

const HOUR: Duration = Duration::from_secs(3600);

fn key() -> QuotaKey {
    QuotaKey::new("tenant-a", "app-1", ApiGroup::Incidents)
}

#[test]
fn threads_never_admit_more_than_the_limit() {
    let Some(mut raw) = common::raw() else {
        return;
    };
    let config = common::config("threads");
    const THREADS: usize = 16;
    const LIMIT: u32 = 50;
    let admitted = Arc::new(AtomicU32::new(0));
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let (config, admitted, barrier) = (config.clone(), admitted.clone(), barrier.clone());
            std::thread::spawn(move || {
                // Each thread is a process of its own: its own store and connection.
                let mut store = common::store(&config);
                store.ping().unwrap();
                let limits = [CallLimit {
                    max: LIMIT,
                    per: HOUR,
                }];
                let req = AcquireRequest::calls(&limits, Duration::from_millis(500));
                barrier.wait();
                for _ in 0..20 {
                    if store.acquire(&key(), &req).unwrap().is_admitted() {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(admitted.load(Ordering::Relaxed), LIMIT);
    let keys = defender_redis::KeyLayout::new(&config.prefix, &key());
    let card: u32 = redis::cmd("ZCARD")
        .arg(&keys.calls)
        .query(&mut raw)
        .unwrap();
    assert_eq!(card, LIMIT);
    common::cleanup(&mut raw, &config.prefix);
}

#[test]
fn keys_expire_and_sets_stay_bounded() {
    let Some(mut raw) = common::raw() else {
        return;
    };
    let config = common::config("expiry");
    let mut store = common::store(&config);
    let keys = store.keys(&key());
    // Virtual time: 100 acquires 50 ms apart against 5 per second.
    let limits = [CallLimit {
        max: 5,
        per: Duration::from_secs(1),
    }];
    let req = AcquireRequest::calls(&limits, Duration::from_millis(100));
    let mut admitted = 0;
    for i in 0..100u64 {
        store.set_now_override(Some(Duration::from_millis(1_000_000 + i * 50)));
        admitted += u32::from(store.acquire(&key(), &req).unwrap().is_admitted());
        let card: u32 = redis::cmd("ZCARD")
            .arg(&keys.calls)
            .query(&mut raw)
            .unwrap();
        assert!(card <= 5, "the set holds {card} after trimming");
    }
    // 5 s of virtual time, 1.1 s windows: 5 per window.
    assert!((20..=25).contains(&admitted), "{admitted}");
    let pttl: i64 = redis::cmd("PTTL").arg(&keys.calls).query(&mut raw).unwrap();
    assert!(
        (1..=1101).contains(&pttl),
        "calls expire with the window: {pttl}"
    );
    // An acquire writes only its process's margin into the state, which expires with the
    // window too.
    let state: Vec<String> = redis::cmd("HKEYS")
        .arg(&keys.state)
        .query(&mut raw)
        .unwrap();
    assert!(
        state.len() == 1 && state[0].starts_with('m'),
        "an acquire writes only its margin: {state:?}"
    );
    let pttl: i64 = redis::cmd("PTTL").arg(&keys.state).query(&mut raw).unwrap();
    assert!((1..=1101).contains(&pttl), "the margin expires: {pttl}");
    store
        .feedback(&key(), Some(Duration::from_secs(30)), None, false)
        .unwrap();
    let pttl: i64 = redis::cmd("PTTL").arg(&keys.state).query(&mut raw).unwrap();
    assert!(
        (29_000..=30_001).contains(&pttl),
        "state lasts as its block: {pttl}"
    );

    // Real time: a 150 ms window is gone from Redis soon after.
    store.set_now_override(None);
    let short = [CallLimit {
        max: 3,
        per: Duration::from_millis(150),
    }];
    let other = QuotaKey::new("tenant-a", "app-1", ApiGroup::Hunting);
    let runtime = [RuntimeLimit {
        budget: Duration::from_secs(1),
        per: Duration::from_millis(100),
    }];
    let mut config = config.clone();
    config.reservation_lease = Duration::from_millis(200);
    let mut store = common::store(&config);
    let t = store
        .acquire(
            &other,
            &AcquireRequest::calls(&short, Duration::ZERO)
                .runtime(&runtime)
                .estimate(Duration::from_millis(10)),
        )
        .unwrap()
        .ticket()
        .unwrap();
    store
        .complete(&other, &t, Duration::from_millis(5))
        .unwrap();
    // calls, charges (the completed reservation's set emptied and went) and the state
    // with this process's margin.
    let hunting = |raw: &mut redis::Connection| {
        common::keys_under(raw, &config.prefix)
            .into_iter()
            .filter(|k| k.contains(":hunting:"))
            .count()
    };
    assert_eq!(hunting(&mut raw), 3);
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(hunting(&mut raw), 0, "the hunting key's data expired");
    common::cleanup(&mut raw, &config.prefix);
}

#[test]
fn tenants_apps_and_groups_are_separate() {
    let Some(mut raw) = common::raw() else {
        return;
    };
    let config = common::config("isolation");
    let mut store = common::store(&config);
    let limits = [CallLimit { max: 1, per: HOUR }];
    let req = AcquireRequest::calls(&limits, Duration::ZERO);
    let mut all = Vec::new();
    for tenant in ["t1", "t2", "t:1"] {
        for app in ["a1", "a2"] {
            for group in ApiGroup::ALL {
                all.push(QuotaKey::new(tenant, app, group));
            }
        }
    }
    for k in &all {
        assert!(store.acquire(k, &req).unwrap().is_admitted(), "{k:?}");
    }
    // Feedback on one key touches no other.
    store
        .feedback(
            &all[0],
            Some(HOUR),
            Some(CallLimit {
                max: 1,
                per: Duration::from_secs(1),
            }),
            false,
        )
        .unwrap();
    for k in &all {
        let d = *store.acquire(k, &req).unwrap().denied().unwrap();
        if k == &all[0] {
            assert_eq!(d.reason, DenyReason::RetryAfter);
        } else {
            assert!(
                matches!(d.reason, DenyReason::CallWindow(_)),
                "{k:?}: {d:?}"
            );
        }
    }
    common::cleanup(&mut raw, &config.prefix);
}

#[test]
fn feedback_is_shared_between_processes() {
    let Some(mut raw) = common::raw() else {
        return;
    };
    let config = common::config("feedback");
    let mut a = common::store(&config);
    let mut b = common::store(&config);
    let limits = [CallLimit {
        max: 45,
        per: Duration::from_secs(60),
    }];
    let req = AcquireRequest::calls(&limits, Duration::ZERO);
    for s in [&a, &b] {
        s.set_now_override(Some(Duration::from_secs(1_000)));
    }
    // A learned "maximum allowed 2 per 00:01:00" seen by one process binds the other.
    a.feedback(
        &key(),
        None,
        Some(CallLimit {
            max: 2,
            per: Duration::from_secs(60),
        }),
        false,
    )
    .unwrap();
    assert!(b.acquire(&key(), &req).unwrap().is_admitted());
    assert!(a.acquire(&key(), &req).unwrap().is_admitted());
    let d = *b.acquire(&key(), &req).unwrap().denied().unwrap();
    assert_eq!(
        d.reason,
        DenyReason::CallWindow(CallLimit {
            max: 2,
            per: Duration::from_secs(60)
        })
    );
    assert_eq!(d.retry_after, Duration::from_secs(60));
    // A looser learned limit does not loosen it.
    b.feedback(
        &key(),
        None,
        Some(CallLimit {
            max: 40,
            per: Duration::from_secs(60),
        }),
        false,
    )
    .unwrap();
    let u = a.usage(&key(), &req).unwrap();
    assert_eq!(u.calls.len(), 1);
    assert_eq!(u.calls[0].limit.max, 2);
    assert_eq!(u.calls[0].used, 2);
    assert_eq!(u.calls[0].next_free_in, Duration::from_secs(60));
    // A retry time: the later one wins.
    a.feedback(&key(), Some(Duration::from_secs(90)), None, false)
        .unwrap();
    b.feedback(&key(), Some(Duration::from_secs(30)), None, false)
        .unwrap();
    let d = *b.acquire(&key(), &req).unwrap().denied().unwrap();
    assert_eq!(d.retry_after, Duration::from_secs(90));
    assert_eq!(d.reason, DenyReason::RetryAfter);
    // Running time spent, no retry time: the default block applies to hunting.
    let hunt = QuotaKey::new("tenant-a", "app-1", ApiGroup::Hunting);
    a.feedback(&hunt, None, None, true).unwrap();
    let d = *b.acquire(&hunt, &req).unwrap().denied().unwrap();
    assert_eq!(d.reason, DenyReason::RuntimeExhausted);
    assert_eq!(d.retry_after, config.runtime_exhausted_default);
    assert_eq!(
        b.usage(&hunt, &req).unwrap().runtime_blocked_for,
        config.runtime_exhausted_default
    );
    common::cleanup(&mut raw, &config.prefix);
}

#[test]
fn the_widest_margin_of_the_processes_wins_while_its_calls_count() {
    let Some(mut raw) = common::raw() else {
        return;
    };
    let config = common::config("margins");
    let (mut bad, mut good) = (common::store(&config), common::store(&config));
    let limits = [CallLimit {
        max: 1,
        per: Duration::from_secs(10),
    }];
    let ms = Duration::from_millis;
    let (wide, narrow) = (
        AcquireRequest::calls(&limits, ms(600)),
        AcquireRequest::calls(&limits, ms(20)),
    );
    let at = |s: &RedisQuotaStore, t: Duration| s.set_now_override(Some(t));
    let t0 = Duration::from_secs(5_000);
    // A process on a bad link (600 ms) makes the window's one call.
    at(&bad, t0);
    assert!(bad.acquire(&key(), &wide).unwrap().is_admitted());
    // The other, with 20 ms of its own, sees the window widened by the 600 ms.
    at(&good, t0 + ms(10_100));
    let d = *good.acquire(&key(), &narrow).unwrap().denied().unwrap();
    assert_eq!(d.retry_after, ms(500));
    let u = good.usage(&key(), &narrow).unwrap();
    assert_eq!((u.margin, u.calls[0].used), (ms(600), 1));
    // Once that call left even the widened window, its own margin is back.
    at(&good, t0 + ms(10_600));
    assert!(good.acquire(&key(), &narrow).unwrap().is_admitted());
    at(&good, t0 + ms(10_700));
    assert_eq!(good.usage(&key(), &narrow).unwrap().margin, ms(20));
    // Its own call needs only 20 ms more than the window.
    at(&good, t0 + ms(20_630));
    assert!(good.acquire(&key(), &narrow).unwrap().is_admitted());
    // The bad link's process, asking with its own margin, is refused for the full 600 ms.
    at(&bad, t0 + ms(30_640));
    let d = *bad.acquire(&key(), &wide).unwrap().denied().unwrap();
    assert_eq!(d.retry_after, ms(590));
    // A process that left is forgotten at the next admitted call after its calls left
    // the longest window: its field is gone from the state hash.
    let keys = defender_redis::KeyLayout::new(&config.prefix, &key());
    let fields: Vec<String> = redis::cmd("HKEYS")
        .arg(&keys.state)
        .query(&mut raw)
        .unwrap();
    assert_eq!(
        fields.iter().filter(|f| f.starts_with('m')).count(),
        1,
        "{fields:?}"
    );
    common::cleanup(&mut raw, &config.prefix);
}

#[test]
fn release_gives_the_slot_back_and_lapsed_reservations_free_the_budget() {
    let Some(mut raw) = common::raw() else {
        return;
    };
    let mut config = common::config("release");
    config.reservation_lease = Duration::from_secs(120);
    let mut store = common::store(&config);
    store.set_now_override(Some(Duration::from_secs(5_000)));
    let hunt = QuotaKey::new("tenant-a", "app-1", ApiGroup::Hunting);
    let calls = [CallLimit {
        max: 1,
        per: Duration::from_secs(60),
    }];
    let runtime = [RuntimeLimit {
        budget: Duration::from_secs(10),
        per: HOUR,
    }];
    let req = AcquireRequest::calls(&calls, Duration::ZERO)
        .runtime(&runtime)
        .estimate(Duration::from_secs(20));
    let t = store.acquire(&hunt, &req).unwrap().ticket().unwrap();
    store.release(&hunt, &t).unwrap();
    let t = store.acquire(&hunt, &req).unwrap().ticket().unwrap();
    store.set_now_override(Some(Duration::from_secs(5_060)));
    // The process holding `t` died: its reservation lapses at 5_120.
    let d = *store.acquire(&hunt, &req).unwrap().denied().unwrap();
    assert_eq!(d.retry_after, Duration::from_secs(60));
    assert_eq!(d.reason, DenyReason::RuntimeInFlight(runtime[0]));
    let u = store.usage(&hunt, &req).unwrap();
    assert_eq!((u.reserved, u.in_flight), (Duration::from_secs(20), 1));
    store.set_now_override(Some(Duration::from_secs(5_120)));
    assert!(store.acquire(&hunt, &req).unwrap().is_admitted());
    drop(t);
    common::cleanup(&mut raw, &config.prefix);
}

fn unreachable(on_error: OnRedisError) -> StoreConfig {
    let mut c = StoreConfig::new("redis://127.0.0.1:1");
    c.on_error = on_error;
    c.reconnect_backoff = Duration::from_millis(50);
    c
}

#[test]
fn unreachable_redis_fails_with_a_typed_error() {
    let mut store = RedisQuotaStore::open(unreachable(OnRedisError::Fail)).unwrap();
    let limits = [CallLimit { max: 3, per: HOUR }];
    let err = store
        .acquire(&key(), &AcquireRequest::calls(&limits, Duration::ZERO))
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("127.0.0.1:1") && msg.contains("FallBackToLocal"),
        "{msg}"
    );
    // In the backoff it does not even try; after it, it tries again.
    let err = store.feedback(&key(), Some(HOUR), None, false).unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }));
    std::thread::sleep(Duration::from_millis(60));
    assert!(store.ping().is_err());
    assert!(matches!(
        RedisQuotaStore::open(StoreConfig::new("nope://x")),
        Err(StoreError::InvalidUrl { .. })
    ));
}

/// A cluster none of whose nodes answers is an outage like a single Redis: a typed
/// error, or the local quota; and the configuration errors say what is wrong.
#[test]
fn an_unreachable_cluster_is_an_outage() {
    let limits = [CallLimit { max: 3, per: HOUR }];
    let req = AcquireRequest::calls(&limits, Duration::ZERO);
    for on_error in [OnRedisError::Fail, OnRedisError::FallBackToLocal] {
        let mut c = StoreConfig::new("redis+cluster://127.0.0.1:1,127.0.0.1:2");
        c.on_error = on_error;
        let mut store = RedisQuotaStore::open(c.clone()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let a = defender_redis::AsyncRedisQuotaStore::open(c).unwrap();
        for answer in [
            store.acquire(&key(), &req),
            rt.block_on(a.acquire(&key(), &req)),
        ] {
            match on_error {
                OnRedisError::Fail => {
                    let e = answer.unwrap_err();
                    assert!(matches!(e, StoreError::Unavailable { .. }), "{e:?}");
                }
                _ => assert!(answer.unwrap().ticket().unwrap().is_local()),
            }
        }
    }
    let invalid = |url: &str| {
        let e = RedisQuotaStore::open(StoreConfig::new(url)).unwrap_err();
        assert!(matches!(e, StoreError::InvalidUrl { .. }), "{url}: {e:?}");
        e.to_string()
    };
    assert!(invalid("redis+cluster://127.0.0.1:1/2").contains("database 0"));
    assert!(invalid("redis+cluster://").contains("at least one node"));
    // The CA: only for TLS, and it must be a readable PEM file.
    let with_ca = |url: &str, ca: &str| {
        let mut c = StoreConfig::new(url);
        c.extra_ca = Some(ca.into());
        let e = RedisQuotaStore::open(c).unwrap_err();
        assert!(matches!(e, StoreError::Tls { .. }), "{e:?}");
        e.to_string()
    };
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    assert!(with_ca("redis://127.0.0.1:1", manifest).contains("use rediss://"));
    assert!(with_ca("redis+cluster://127.0.0.1:1", manifest).contains("rediss+cluster://"));
    assert!(with_ca("rediss://127.0.0.1:1", "/no/such/ca.pem").contains("could not be read"));
    assert!(with_ca("rediss://127.0.0.1:1", manifest).contains("no PEM certificate"));
    let bad = std::env::temp_dir().join(format!("bad-ca-{}.pem", std::process::id()));
    std::fs::write(
        &bad,
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let e = with_ca("rediss://127.0.0.1:1", &bad.to_string_lossy());
    let _ = std::fs::remove_file(&bad);
    assert!(e.contains("could not be used"), "{e}");
    // `#insecure` (no certificate check) is not compiled in.
    let e = invalid("rediss://127.0.0.1:1/#insecure");
    assert!(e.contains("insecure"), "{e}");
}

#[test]
fn unreachable_redis_falls_back_to_the_local_quota() {
    let mut config = unreachable(OnRedisError::FallBackToLocal);
    config.fallback_share = 2;
    let mut store = RedisQuotaStore::open(config).unwrap();
    store.set_now_override(Some(Duration::from_secs(100)));
    let limits = [CallLimit {
        max: 6,
        per: Duration::from_secs(60),
    }];
    let req = AcquireRequest::calls(&limits, Duration::ZERO);
    // Half of 6 per minute for this process.
    let tickets: Vec<_> = (0..3)
        .map(|_| store.acquire(&key(), &req).unwrap().ticket().unwrap())
        .collect();
    assert!(tickets.iter().all(|t| t.is_local()));
    let d = *store.acquire(&key(), &req).unwrap().denied().unwrap();
    assert_eq!(d.retry_after, Duration::from_secs(60));
    store.release(&key(), &tickets[0]).unwrap();
    assert!(store.acquire(&key(), &req).unwrap().is_admitted());
    // Feedback holds locally too.
    store
        .feedback(&key(), Some(Duration::from_secs(300)), None, false)
        .unwrap();
    store.set_now_override(Some(Duration::from_secs(200)));
    let d = *store.acquire(&key(), &req).unwrap().denied().unwrap();
    assert_eq!(
        (d.retry_after, d.reason),
        (Duration::from_secs(200), DenyReason::RetryAfter)
    );
    assert!(store.usage(&key(), &req).unwrap().local);
}

/// A connection killed under the store (as by a Redis restart) is replaced on the next
/// call; the windows survive because they live in Redis.
#[test]
fn a_killed_connection_is_replaced() {
    let Some(mut raw) = common::raw() else {
        return;
    };
    let mut config = common::config("reconnect");
    config.client_name = Some(config.prefix.clone());
    let mut store = common::store(&config);
    let limits = [CallLimit { max: 2, per: HOUR }];
    let req = AcquireRequest::calls(&limits, Duration::ZERO);
    assert!(store.acquire(&key(), &req).unwrap().is_admitted());
    kill_clients_on(&mut raw, &config.prefix);
    assert!(store.acquire(&key(), &req).unwrap().is_admitted());
    assert!(matches!(
        store.acquire(&key(), &req).unwrap(),
        Admission::Denied(_)
    ));
    common::cleanup(&mut raw, &config.prefix);
}

/// Kills the store's connection, found by its client name.
fn kill_clients_on(raw: &mut redis::Connection, name: &str) {
    let list: String = redis::cmd("CLIENT").arg("LIST").query(raw).unwrap();
    let mut killed = 0;
    for line in list.lines() {
        let field = |f: &str| {
            line.split(' ')
                .find_map(|kv| kv.strip_prefix(f).and_then(|v| v.strip_prefix('=')))
                .unwrap_or("")
                .to_owned()
        };
        if field("name") == name {
            let _: () = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("ID")
                .arg(field("id"))
                .query(raw)
                .unwrap();
            killed += 1;
        }
    }
    assert_eq!(killed, 1, "one connection named {name} in {list}");
}

/// What a hostile or broken 429 says, in Defender's words: a wait and a "limit" of 273
/// years.
const POISON: &str = "API calls quota exceeded! maximum allowed 1 per 99999.00:00:00. \
                      You can send requests again in 99999.00:00:00.";
const DAY: Duration = Duration::from_secs(86_400);

fn poison() -> (Duration, CallLimit) {
    let facts = defender_core::throttle::parse_message(POISON);
    let (Some(wait), Some(limit)) = (facts.again_in, facts.limit) else {
        panic!("the parser reads both: {facts:?}")
    };
    assert_eq!(wait, 99_999 * DAY);
    assert_eq!(limit.per, 99_999 * DAY);
    (wait, limit)
}

/// Nothing the server says blocks the processes of a tenant for longer than
/// `max_server_wait` (a day): the wait is cut to a day and the learned
/// one-call-per-273-years limit is ignored, so after the day calls go at the configured
/// limit again.
#[test]
fn a_poisoned_429_blocks_every_process_for_at_most_a_day() {
    let Some(mut raw) = common::raw() else {
        return;
    };
    let config = common::config("poison");
    assert_eq!(config.max_server_wait, DAY);
    let (mut a, mut b) = (common::store(&config), common::store(&config));
    let t0 = Duration::from_secs(1_000_000);
    for s in [&a, &b] {
        s.set_now_override(Some(t0));
    }
    let limits = [CallLimit {
        max: 3,
        per: Duration::from_secs(60),
    }];
    let req = AcquireRequest::calls(&limits, Duration::ZERO);
    let (wait, limit) = poison();
    a.feedback(&key(), Some(wait), Some(limit), false).unwrap();
    let d = *b.acquire(&key(), &req).unwrap().denied().unwrap();
    assert_eq!((d.retry_after, d.reason), (DAY, DenyReason::RetryAfter));
    let u = b.usage(&key(), &req).unwrap();
    assert_eq!(u.blocked_for, DAY);
    assert_eq!(u.calls.len(), 1, "no learned window: {u:?}");
    let keys = b.keys(&key());
    let stored: u64 = redis::cmd("HGET")
        .arg(&keys.state)
        .arg("b")
        .query(&mut raw)
        .unwrap();
    assert_eq!(stored, (t0 + DAY).as_micros() as u64);
    let pttl: i64 = redis::cmd("PTTL").arg(&keys.state).query(&mut raw).unwrap();
    assert!(pttl <= 2 * DAY.as_millis() as i64, "{pttl}");
    // A day later: the configured 3 per minute, not 1 per 273 years.
    for s in [&a, &b] {
        s.set_now_override(Some(t0 + DAY));
    }
    for _ in 0..3 {
        assert!(b.acquire(&key(), &req).unwrap().is_admitted());
    }
    let d = *a.acquire(&key(), &req).unwrap().denied().unwrap();
    assert_eq!(d.reason, DenyReason::CallWindow(limits[0]));
    assert_eq!(d.retry_after, Duration::from_secs(60));
    // The running-time path: the same cap.
    let hunt = QuotaKey::new("tenant-a", "app-1", ApiGroup::Hunting);
    a.feedback(&hunt, Some(wait), None, true).unwrap();
    let d = *b.acquire(&hunt, &req).unwrap().denied().unwrap();
    assert_eq!(
        (d.retry_after, d.reason),
        (DAY, DenyReason::RuntimeExhausted)
    );
    assert_eq!(b.usage(&hunt, &req).unwrap().runtime_blocked_for, DAY);
    // A shorter cap is honoured as configured.
    let mut short = config.clone();
    short.max_server_wait = Duration::from_secs(3600);
    let c = common::store(&short);
    let mut c = c;
    c.set_now_override(Some(t0 + DAY));
    let other = QuotaKey::new("tenant-b", "app-1", ApiGroup::Incidents);
    c.feedback(&other, Some(wait), Some(limit), false).unwrap();
    let d = *c.acquire(&other, &req).unwrap().denied().unwrap();
    assert_eq!(d.retry_after, Duration::from_secs(3600));
    common::cleanup(&mut raw, &config.prefix);
}

/// The cap holds inside the scripts: a years-long block or learned limit written by a
/// process with another cap, or by an older version that had none (written here by
/// hand), ends within a day of the first acquire that sees it.
#[test]
fn the_scripts_cap_what_other_processes_wrote() {
    let Some(mut raw) = common::raw() else {
        return;
    };
    let config = common::config("poison-other");
    let mut reckless = config.clone();
    reckless.max_server_wait = 100_000 * DAY;
    let (mut careful, mut other) = (common::store(&config), common::store(&reckless));
    let t0 = Duration::from_secs(2_000_000);
    for s in [&careful, &other] {
        s.set_now_override(Some(t0));
    }
    let limits = [CallLimit {
        max: 2,
        per: Duration::from_secs(60),
    }];
    let req = AcquireRequest::calls(&limits, Duration::ZERO);
    let (wait, limit) = poison();
    // Another config: it writes what it was told.
    other
        .feedback(&key(), Some(wait), Some(limit), false)
        .unwrap();
    // An older version: a block, a running-time block and a learned limit, by hand.
    let keys = careful.keys(&key());
    let forever = (t0 + wait).as_micros() as u64;
    let _: () = redis::cmd("HSET")
        .arg(&keys.state)
        .arg(format!("l{}", (50_000 * DAY).as_micros()))
        .arg(1)
        .query(&mut raw)
        .unwrap();
    // The running-time block is the tenant's, in its own hash.
    let _: () = redis::cmd("HSET")
        .arg(&keys.runtime_state)
        .arg("rb")
        .arg(forever)
        .query(&mut raw)
        .unwrap();
    let d = *careful.acquire(&key(), &req).unwrap().denied().unwrap();
    assert_eq!((d.retry_after, d.reason), (DAY, DenyReason::RetryAfter));
    // Healed in Redis: every process now reads a day, whatever its cap.
    let state: std::collections::HashMap<String, u64> = redis::cmd("HGETALL")
        .arg(&keys.state)
        .query(&mut raw)
        .unwrap();
    let until = (t0 + DAY).as_micros() as u64;
    assert_eq!(state.get("b"), Some(&until), "{state:?}");
    let rstate: std::collections::HashMap<String, u64> = redis::cmd("HGETALL")
        .arg(&keys.runtime_state)
        .query(&mut raw)
        .unwrap();
    assert_eq!(rstate.get("rb"), Some(&until), "{rstate:?}");
    assert!(
        state.keys().all(|k| !k.starts_with('l')),
        "learned limits of more than a day are dropped: {state:?}"
    );
    let pttl: i64 = redis::cmd("PTTL").arg(&keys.state).query(&mut raw).unwrap();
    assert!(
        (0..=2 * DAY.as_millis() as i64 + 1).contains(&pttl),
        "{pttl}"
    );
    let d = *other.acquire(&key(), &req).unwrap().denied().unwrap();
    assert_eq!(d.retry_after, DAY);
    for s in [&careful, &other] {
        s.set_now_override(Some(t0 + DAY));
    }
    assert!(other.acquire(&key(), &req).unwrap().is_admitted());
    assert!(careful.acquire(&key(), &req).unwrap().is_admitted());
    let d = *careful.acquire(&key(), &req).unwrap().denied().unwrap();
    assert_eq!(d.reason, DenyReason::CallWindow(limits[0]));
    // Feedback also heals a block it finds too long, rather than keeping it.
    let _: () = redis::cmd("HSET")
        .arg(&keys.state)
        .arg("b")
        .arg(forever)
        .query(&mut raw)
        .unwrap();
    careful
        .feedback(&key(), Some(Duration::from_secs(5)), None, false)
        .unwrap();
    let b: u64 = redis::cmd("HGET")
        .arg(&keys.state)
        .arg("b")
        .query(&mut raw)
        .unwrap();
    assert_eq!(b, (t0 + 2 * DAY).as_micros() as u64);
    common::cleanup(&mut raw, &config.prefix);
}

/// The local fallback applies the same caps.
#[test]
fn the_local_fallback_caps_server_waits_too() {
    let mut config = unreachable(OnRedisError::FallBackToLocal);
    config.fallback_share = 1;
    let mut store = RedisQuotaStore::open(config).unwrap();
    let t0 = Duration::from_secs(100);
    store.set_now_override(Some(t0));
    let limits = [CallLimit {
        max: 3,
        per: Duration::from_secs(60),
    }];
    let req = AcquireRequest::calls(&limits, Duration::ZERO);
    let (wait, limit) = poison();
    store
        .feedback(&key(), Some(wait), Some(limit), false)
        .unwrap();
    let d = *store.acquire(&key(), &req).unwrap().denied().unwrap();
    assert_eq!((d.retry_after, d.reason), (DAY, DenyReason::RetryAfter));
    let u = store.usage(&key(), &req).unwrap();
    assert!(u.local);
    assert_eq!(u.blocked_for, DAY);
    assert_eq!(u.calls.len(), 1, "no learned window: {u:?}");
    store.set_now_override(Some(t0 + DAY));
    for _ in 0..3 {
        assert!(store.acquire(&key(), &req).unwrap().is_admitted());
    }
    let d = *store.acquire(&key(), &req).unwrap().denied().unwrap();
    assert_eq!(d.reason, DenyReason::CallWindow(limits[0]));
    let hunt = QuotaKey::new("tenant-a", "app-1", ApiGroup::Hunting);
    store.feedback(&hunt, Some(wait), None, true).unwrap();
    let d = *store.acquire(&hunt, &req).unwrap().denied().unwrap();
    assert_eq!(
        (d.retry_after, d.reason),
        (DAY, DenyReason::RuntimeExhausted)
    );
}

/// No run of three characters of a password reaches a message: the config's `Debug`, the
/// errors of opening a store (the redis crate's URL errors included), the errors of an
/// unreachable one. Passwords hold `/`, `?`, `#`, `:` and `@`, encoded or not.
#[test]
fn passwords_never_reach_messages() {
    let cases = [
        ("redis://user:pa/ss@127.0.0.1:1/0", "pa/ss"),
        ("redis://:a/b/c@127.0.0.1:1", "a/b/c"),
        ("redis://user:p@ss/w?rd#x@127.0.0.1:1/0", "p@ss/w?rd#x"),
        (
            "redis://user:6379?protocol=Kx7Wv@127.0.0.1:1",
            "6379?protocol=Kx7Wv",
        ),
        ("redis://user:Zq:W%40x9@127.0.0.1:1", "Zq:W%40x9"),
        ("redis://user:Kq3Wz9", "Kq3Wz9"),
        ("redis://user:Kq3/Wz9", "Kq3/Wz9"),
        ("redis+unix:///tmp/no-such.sock?db=0&pass=Tg5Yh2", "Tg5Yh2"),
        ("redis://:Wx9%2Fq@[::1]:1", "Wx9%2Fq"),
        ("user:Hn4Jk8@127.0.0.1:1", "Hn4Jk8"),
        ("redis://Mv2Bn7@127.0.0.1:1/0", "Mv2Bn7"),
        ("http://user:Hq8Nt2x@:::nonsense", "Hq8Nt2x"),
        ("rediss://:Ts7Lk3@127.0.0.1:1", "Ts7Lk3"),
        ("redis+cluster://:Cl5Tr8@127.0.0.1:1,127.0.0.1:2", "Cl5Tr8"),
        ("rediss+cluster://u:Rc2Qm6@127.0.0.1:1", "Rc2Qm6"),
        ("redis+cluster://u:Bd4Xp1@127.0.0.1:1/3", "Bd4Xp1"),
        // The password given apart from the URL (DEFENDER_QUOTA_STORE_PASSWORD).
        ("field:Fq9Vb3", "Fq9Vb3"),
    ];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let limits = [CallLimit { max: 3, per: HOUR }];
    let req = AcquireRequest::calls(&limits, Duration::ZERO);
    for (url, password) in cases {
        let mut config = match url.strip_prefix("field:") {
            Some(pw) => {
                let mut c = StoreConfig::new("rediss://127.0.0.1:1");
                c.password = Some(defender_redis::StorePassword::new(pw));
                c
            }
            None => StoreConfig::new(url),
        };
        config.reconnect_backoff = Duration::from_millis(1);
        let mut texts = vec![format!("{config:?}"), config.redacted_url()];
        let mut error = |e: StoreError| {
            texts.push(e.to_string());
            texts.push(format!("{e:?}"));
        };
        match RedisQuotaStore::open(config.clone()) {
            Err(e) => error(e),
            Ok(mut store) => {
                error(store.acquire(&key(), &req).unwrap_err());
                std::thread::sleep(Duration::from_millis(5));
                error(store.ping().unwrap_err());
                error(store.feedback(&key(), Some(HOUR), None, false).unwrap_err());
            }
        }
        match defender_redis::AsyncRedisQuotaStore::open(config) {
            Err(e) => error(e),
            Ok(store) => error(rt.block_on(store.acquire(&key(), &req)).unwrap_err()),
        }
        let chars: Vec<char> = password.chars().collect();
        for w in chars.windows(3) {
            let w: String = w.iter().collect();
            for t in &texts {
                assert!(!t.contains(&w), "{url}: {w:?} of the password in {t}");
            }
        }
    }
}

/// Workers that spell the tenant and app ids differently (case, braces, whitespace, a
/// domain name's case) share one budget in Redis.
#[test]
fn every_spelling_of_an_app_shares_one_budget() {
    let Some(mut raw) = common::raw() else {
        return;
    };
    let config = common::config("spelling");
    let (mut a, mut b) = (common::store(&config), common::store(&config));
    let limits = [CallLimit { max: 4, per: HOUR }];
    let req = AcquireRequest::calls(&limits, Duration::ZERO);
    let spellings = [
        (
            "72F988BF-86F1-41AF-91AB-2D7CD011DB47",
            "Contoso.OnMicrosoft.com",
        ),
        (
            "72f988bf-86f1-41af-91ab-2d7cd011db47",
            "contoso.onmicrosoft.com",
        ),
        (
            "{72F988BF-86F1-41AF-91AB-2D7CD011DB47}",
            " CONTOSO.onmicrosoft.COM ",
        ),
        (
            " 72f988bf86f141af91ab2d7cd011db47\n",
            "contoso.onmicrosoft.com.",
        ),
    ];
    for (i, (app, tenant)) in spellings.iter().enumerate() {
        let store = if i % 2 == 0 { &mut a } else { &mut b };
        let key = QuotaKey::new(tenant, app, ApiGroup::Incidents);
        assert!(store.acquire(&key, &req).unwrap().is_admitted(), "{key:?}");
    }
    // The budget of 4 is spent, whatever the spelling; the binding the clients use agrees.
    let binding = defender_redis::Binding::new(
        "CONTOSO.ONMICROSOFT.COM",
        "(72F988BF-86F1-41AF-91AB-2D7CD011DB47)",
        defender_core::Limits::default(),
        Duration::ZERO,
    );
    let key = binding.key(ApiGroup::Incidents);
    assert_eq!(
        key,
        QuotaKey::new(spellings[1].1, spellings[1].0, ApiGroup::Incidents)
    );
    let d = *a.acquire(&key, &req).unwrap().denied().unwrap();
    assert_eq!(d.reason, DenyReason::CallWindow(limits[0]));
    assert_eq!(
        common::keys_under(&mut raw, &config.prefix).len(),
        2,
        "one set of calls and one state (the margins) in Redis"
    );
    common::cleanup(&mut raw, &config.prefix);
}

/// Running time is the tenant's (Microsoft allocates hunting CPU per tenant): what one app
/// spends, the other app of the tenant cannot; calls stay per app; another tenant and
/// [`RuntimeScope::App`] keep their own budgets.
#[test]
fn the_apps_of_a_tenant_share_one_running_time_budget() {
    let Some(mut raw) = common::raw() else {
        return;
    };
    let calls = [CallLimit {
        max: 1,
        per: Duration::from_secs(60),
    }];
    let runtime = [RuntimeLimit {
        budget: Duration::from_secs(10),
        per: HOUR,
    }];
    let req = AcquireRequest::calls(&calls, Duration::ZERO)
        .runtime(&runtime)
        .estimate(Duration::from_secs(1));
    let one = QuotaKey::new("tenant-a", "app-1", ApiGroup::Hunting);
    let two = QuotaKey::new("tenant-a", "app-2", ApiGroup::Hunting);
    let elsewhere = QuotaKey::new("tenant-b", "app-2", ApiGroup::Hunting);
    let t0 = Duration::from_secs(9_000);

    // Default: per tenant.
    let config = common::config("tenant-runtime");
    assert_eq!(config.runtime_scope, RuntimeScope::Tenant);
    let (mut a, mut b) = (common::store(&config), common::store(&config));
    for s in [&a, &b] {
        s.set_now_override(Some(t0));
    }
    let t = a.acquire(&one, &req).unwrap().ticket().unwrap();
    a.complete(&one, &t, Duration::from_secs(15)).unwrap();
    // Another process, the other app: the tenant's budget is spent.
    let d = *b.acquire(&two, &req).unwrap().denied().unwrap();
    assert_eq!(d.reason, DenyReason::RuntimeWindow(runtime[0]));
    assert_eq!(d.retry_after, HOUR);
    let u = b.usage(&two, &req).unwrap();
    assert_eq!(u.runtime[0].charged, Duration::from_secs(15));
    // Its calls are its own: the refusal took no slot, and app-1's full window is not
    // app-2's.
    assert_eq!(u.calls[0].used, 0);
    let calls_only = AcquireRequest::calls(&calls, Duration::ZERO);
    assert_eq!(
        a.acquire(&one, &calls_only)
            .unwrap()
            .denied()
            .unwrap()
            .reason,
        DenyReason::CallWindow(calls[0])
    );
    assert!(b.acquire(&two, &calls_only).unwrap().is_admitted());
    // Another tenant has a budget of its own.
    assert!(b.acquire(&elsewhere, &req).unwrap().is_admitted());
    // A running-time 429 seen by one app blocks the tenant's other apps too ...
    let later = t0 + 2 * HOUR;
    for s in [&a, &b] {
        s.set_now_override(Some(later));
    }
    a.feedback(&one, Some(Duration::from_secs(900)), None, true)
        .unwrap();
    let d = *b.acquire(&two, &req).unwrap().denied().unwrap();
    assert_eq!(
        (d.reason, d.retry_after),
        (DenyReason::RuntimeExhausted, Duration::from_secs(900))
    );
    // ... but not another tenant; a call block stays the app's.
    assert!(b.acquire(&elsewhere, &req).unwrap().is_admitted());
    // Every key of a tenant carries the tenant's hash tag (one cluster slot).
    let tag = format!("{{{}:tenant-a}}:", config.prefix);
    let keys = common::keys_under(&mut raw, &config.prefix);
    let tenant_a: Vec<_> = keys.iter().filter(|k| k.contains(":tenant-a}")).collect();
    assert!(!tenant_a.is_empty());
    assert!(tenant_a.iter().all(|k| k.starts_with(&tag)), "{tenant_a:?}");
    common::cleanup(&mut raw, &config.prefix);

    // The switch: each app has its own running time.
    let mut config = common::config("app-runtime");
    config.runtime_scope = RuntimeScope::App;
    let (mut a, mut b) = (common::store(&config), common::store(&config));
    for s in [&a, &b] {
        s.set_now_override(Some(t0));
    }
    let t = a.acquire(&one, &req).unwrap().ticket().unwrap();
    a.complete(&one, &t, Duration::from_secs(15)).unwrap();
    let later = t0 + Duration::from_secs(60);
    for s in [&a, &b] {
        s.set_now_override(Some(later));
    }
    assert_eq!(
        a.acquire(&one, &req).unwrap().denied().unwrap().reason,
        DenyReason::RuntimeWindow(runtime[0])
    );
    let t = b.acquire(&two, &req).unwrap().ticket().unwrap();
    b.complete(&two, &t, Duration::from_secs(1)).unwrap();
    assert_eq!(
        b.usage(&two, &req).unwrap().runtime[0].charged,
        Duration::from_secs(1)
    );
    // A running-time 429 of one app is that app's.
    a.feedback(&one, Some(Duration::from_secs(900)), None, true)
        .unwrap();
    assert_eq!(
        a.usage(&one, &req).unwrap().runtime_blocked_for,
        Duration::from_secs(900)
    );
    assert_eq!(
        b.usage(&two, &req).unwrap().runtime_blocked_for,
        Duration::ZERO
    );
    b.set_now_override(Some(later + Duration::from_secs(60)));
    assert!(b.acquire(&two, &req).unwrap().is_admitted());
    common::cleanup(&mut raw, &config.prefix);
}

#[test]
fn usage_counts_each_named_process_in_the_longest_window() {
    let Some(mut raw) = common::raw() else {
        return;
    };
    let config = common::config("names");
    let named = |name: Option<&str>| {
        let mut c = config.clone();
        c.client_name = name.map(str::to_owned);
        let store = common::store(&c);
        store.set_now_override(Some(Duration::from_secs(9_000)));
        store
    };
    // Three "processes": two named ones (one name with a ':' and a '/', which a name
    // may hold) and one without a name.
    let mut a = named(Some("sync-worker"));
    let mut b = named(Some("hunt:ns/b"));
    let mut anonymous = named(None);
    let k = key();
    let calls = [
        CallLimit {
            max: 100,
            per: Duration::from_secs(60),
        },
        CallLimit {
            max: 1000,
            per: HOUR,
        },
    ];
    let req = AcquireRequest::calls(&calls, Duration::ZERO);
    let mut tickets = Vec::new();
    for (store, n) in [(&mut a, 3), (&mut b, 2), (&mut anonymous, 4)] {
        for _ in 0..n {
            tickets.push(store.acquire(&k, &req).unwrap().ticket().unwrap());
        }
    }
    // A released call gives its slot back, and leaves the name's count too.
    b.release(&k, &tickets[3]).unwrap();
    let u = anonymous.usage(&k, &req).unwrap();
    assert_eq!(u.calls[0].used, 8);
    assert_eq!(
        u.clients,
        vec![("sync-worker".to_owned(), 3), ("hunt:ns/b".to_owned(), 1)]
    );
    // Past the 1-minute window the hour still holds them: the longest window counts.
    anonymous.set_now_override(Some(Duration::from_secs(9_000 + 61)));
    let u = anonymous.usage(&k, &req).unwrap();
    assert_eq!((u.calls[0].used, u.calls[1].used), (0, 8));
    assert_eq!(u.clients.len(), 2);
    // Past the hour nothing is left to attribute.
    anonymous.set_now_override(Some(Duration::from_secs(9_000 + 3_601)));
    assert!(anonymous.usage(&k, &req).unwrap().clients.is_empty());
    common::cleanup(&mut raw, &config.prefix);
}
