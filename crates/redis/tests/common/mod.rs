//! Helpers shared by the integration tests: the Redis URL, unique prefixes, cleanup.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use defender_redis::{RedisQuotaStore, StoreConfig};

/// `REDIS_URL`, default `redis://127.0.0.1:6379`.
pub fn url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A raw connection, or `None` (with a note) when Redis is not there and
/// `REDIS_REQUIRED` is not set; with `REDIS_REQUIRED=1` a missing Redis fails the test.
pub fn raw() -> Option<redis::Connection> {
    let conn = redis::Client::open(url())
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)));
    match conn {
        Ok(c) => Some(c),
        Err(e) if std::env::var_os("REDIS_REQUIRED").is_none() => {
            eprintln!(
                "SKIPPED: no Redis at {} ({e}); set REDIS_REQUIRED=1 to fail instead",
                url()
            );
            None
        }
        Err(e) => panic!("no Redis at {}: {e}", url()),
    }
}

/// A prefix no other test uses.
pub fn prefix(test: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "test-{test}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A config for the test Redis under a fresh prefix, with generous timeouts.
pub fn config(test: &str) -> StoreConfig {
    let mut c = StoreConfig::new(url());
    c.prefix = prefix(test);
    c.connect_timeout = Duration::from_secs(2);
    c.response_timeout = Duration::from_secs(2);
    c
}

pub fn store(config: &StoreConfig) -> RedisQuotaStore {
    RedisQuotaStore::open(config.clone()).expect("the URL parses")
}

/// Every key under `prefix`.
pub fn keys_under(conn: &mut redis::Connection, prefix: &str) -> Vec<String> {
    redis::cmd("KEYS")
        .arg(format!("{{{prefix}:*"))
        .query(conn)
        .unwrap()
}

/// Deletes every key under `prefix`.
pub fn cleanup(conn: &mut redis::Connection, prefix: &str) {
    let keys = keys_under(conn, prefix);
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL").arg(keys).query(conn).unwrap();
    }
}
