//! One shared admission (one EVALSHA round trip) beside a bare `PING` on the same
//! connection, in the same run. Needs Redis at `REDIS_URL` (default
//! `redis://127.0.0.1:6379`); prints a note and exits when it is not there.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use defender_core::limits::{ApiGroup, CallLimit};
use defender_core::quota::QuotaKey;
use defender_redis::{AcquireRequest, RedisQuotaStore, StoreConfig};

fn url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

// Windows wide enough never to deny, short enough that the set stays small.
const LIMITS: [CallLimit; 2] = [
    CallLimit {
        max: 10_000_000,
        per: Duration::from_secs(1),
    },
    CallLimit {
        max: 20_000_000,
        per: Duration::from_secs(2),
    },
];

fn store() -> Option<RedisQuotaStore> {
    let mut config = StoreConfig::new(url());
    config.prefix = format!("bench-{}", std::process::id());
    config.response_timeout = Duration::from_secs(2);
    let mut store = RedisQuotaStore::open(config).ok()?;
    store.ping().ok()?;
    Some(store)
}

fn main() {
    let Some(mut store) = store() else {
        eprintln!("no Redis at {}: benchmark skipped", url());
        return;
    };
    let key = QuotaKey::new("bench-tenant", "bench-app", ApiGroup::Incidents);
    let request = AcquireRequest::calls(&LIMITS, Duration::from_millis(500));

    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group("admission");
    group.bench_function("ping", |b| b.iter(|| black_box(store.ping().unwrap())));
    group.bench_function("acquire (EVALSHA, 2 windows)", |b| {
        b.iter(|| black_box(store.acquire(&key, &request).unwrap()))
    });
    group.finish();
    c.final_summary();

    // The ratio, interleaved so both see the same machine load.
    let rounds = 20;
    let per_round = 1_000;
    let (mut ping, mut acquire) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..per_round {
            black_box(store.ping().unwrap());
        }
        ping += t.elapsed();
        let t = Instant::now();
        for _ in 0..per_round {
            black_box(store.acquire(&key, &request).unwrap());
        }
        acquire += t.elapsed();
    }
    let n = (rounds * per_round) as u32;
    println!(
        "ratio: PING {:?}/op, acquire {:?}/op, acquire / PING = {:.2}",
        ping / n,
        acquire / n,
        acquire.as_secs_f64() / ping.as_secs_f64()
    );
    let mut raw = redis::Client::open(url())
        .unwrap()
        .get_connection()
        .unwrap();
    let keys = store.keys(&key);
    let _: () = redis::cmd("DEL")
        .arg(&keys.all()[..])
        .query(&mut raw)
        .unwrap();
}
