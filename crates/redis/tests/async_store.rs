//! The async store: atomicity across tasks and stores, and Redis unreachable.
#![cfg(feature = "async")]

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use defender_core::limits::{ApiGroup, CallLimit};
use defender_core::quota::QuotaKey;
use defender_redis::{AcquireRequest, AsyncRedisQuotaStore, OnRedisError, StoreConfig, StoreError};

const HOUR: Duration = Duration::from_secs(3600);

fn key() -> QuotaKey {
    QuotaKey::new("tenant-a", "app-1", ApiGroup::Incidents)
}

fn unreachable(on_error: OnRedisError) -> StoreConfig {
    let mut c = StoreConfig::new("redis://127.0.0.1:1");
    c.on_error = on_error;
    c.reconnect_backoff = Duration::from_millis(50);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_never_admit_more_than_the_limit() {
    let Some(mut raw) = common::raw() else {
        return;
    };
    let config = common::config("tasks");
    const LIMIT: u32 = 37;
    // Two stores (two "processes"), 16 tasks each, one multiplexed connection per store.
    let stores = [
        Arc::new(AsyncRedisQuotaStore::open(config.clone()).unwrap()),
        Arc::new(AsyncRedisQuotaStore::open(config.clone()).unwrap()),
    ];
    let admitted = Arc::new(AtomicU32::new(0));
    let mut tasks = Vec::new();
    for i in 0..32 {
        let (store, admitted) = (stores[i % 2].clone(), admitted.clone());
        tasks.push(tokio::spawn(async move {
            let limits = [
                CallLimit {
                    max: LIMIT,
                    per: HOUR,
                },
                CallLimit {
                    max: 1000,
                    per: Duration::from_secs(60),
                },
            ];
            let req = AcquireRequest::calls(&limits, Duration::ZERO);
            for _ in 0..10 {
                if store.acquire(&key(), &req).await.unwrap().is_admitted() {
                    admitted.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(admitted.load(Ordering::Relaxed), LIMIT);
    common::cleanup(&mut raw, &config.prefix);
}

#[tokio::test]
async fn unreachable_redis_async() {
    let store = AsyncRedisQuotaStore::open(unreachable(OnRedisError::Fail)).unwrap();
    let limits = [CallLimit { max: 1, per: HOUR }];
    let req = AcquireRequest::calls(&limits, Duration::ZERO);
    assert!(matches!(
        store.acquire(&key(), &req).await,
        Err(StoreError::Unavailable { .. })
    ));
    let store = AsyncRedisQuotaStore::open(unreachable(OnRedisError::FallBackToLocal)).unwrap();
    assert!(store.acquire(&key(), &req).await.unwrap().is_admitted());
    assert!(!store.acquire(&key(), &req).await.unwrap().is_admitted());
}
