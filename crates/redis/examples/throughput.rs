//! Admissions per second from 16 concurrent callers on loopback, beside `PING`s.
//!
//! `cargo run --release -p defender-redis --example throughput` (needs Redis at
//! `REDIS_URL`, default `redis://127.0.0.1:6379`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use defender_core::limits::{ApiGroup, CallLimit};
use defender_core::quota::QuotaKey;
use defender_redis::{AcquireRequest, AsyncRedisQuotaStore, RedisQuotaStore, StoreConfig};

const CALLERS: usize = 16;
const RUN: Duration = Duration::from_secs(2);
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

fn config() -> StoreConfig {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let mut c = StoreConfig::new(url);
    c.prefix = format!("throughput-{}", std::process::id());
    c.response_timeout = Duration::from_secs(2);
    c
}

fn key() -> QuotaKey {
    QuotaKey::new("tenant", "app", ApiGroup::Incidents)
}

async fn run_async(store: Arc<AsyncRedisQuotaStore>, ping: bool) -> f64 {
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CALLERS {
        let (store, count) = (store.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            let key = key();
            let request = AcquireRequest::calls(&LIMITS, Duration::from_millis(500));
            while start.elapsed() < RUN {
                if ping {
                    store.ping().await.unwrap();
                    count.fetch_add(1, Ordering::Relaxed);
                } else if store.acquire(&key, &request).await.unwrap().is_admitted() {
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn run_threads(ping: bool) -> f64 {
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let threads: Vec<_> = (0..CALLERS)
        .map(|_| {
            let count = count.clone();
            std::thread::spawn(move || {
                let mut store = RedisQuotaStore::open(config()).unwrap();
                let key = key();
                let request = AcquireRequest::calls(&LIMITS, Duration::from_millis(500));
                while start.elapsed() < RUN {
                    if ping {
                        store.ping().unwrap();
                        count.fetch_add(1, Ordering::Relaxed);
                    } else if store.acquire(&key, &request).unwrap().is_admitted() {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let store = Arc::new(AsyncRedisQuotaStore::open(config()).unwrap());
    if let Err(e) = store.ping().await {
        eprintln!("no Redis: {e}");
        return;
    }
    let ping = run_async(store.clone(), true).await;
    let acquire = run_async(store.clone(), false).await;
    println!(
        "async, {CALLERS} tasks on one multiplexed connection: {acquire:.0} admissions/s, {ping:.0} PINGs/s (PING / admission throughput = {:.2})",
        ping / acquire
    );
    let ping = tokio::task::spawn_blocking(|| run_threads(true))
        .await
        .unwrap();
    let acquire = tokio::task::spawn_blocking(|| run_threads(false))
        .await
        .unwrap();
    println!(
        "blocking, {CALLERS} threads with a connection each: {acquire:.0} admissions/s, {ping:.0} PINGs/s (PING / admission throughput = {:.2})",
        ping / acquire
    );
    let mut raw = redis::Client::open(config().url)
        .unwrap()
        .get_connection()
        .unwrap();
    let keys = store.keys(&key());
    let _: () = redis::cmd("DEL")
        .arg(&keys.all()[..])
        .query(&mut raw)
        .unwrap();
}
