//! Two clients sharing one quota on Redis (`REDIS_URL`, default
//! `redis://127.0.0.1:6379`): zero 429s at the server's exact limits. Skipped with a note
//! when Redis does not answer, unless `REDIS_REQUIRED=1`.
#![cfg(feature = "redis")]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use defender_blocking::defender_redis::{redis, StoreConfig};
use defender_core::settings::BuildError;
use defender_core::Limits;
use defender_emulator::WindowMode;

use common::Env;

fn url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A connection for cleanup, or `None` (with a note) when Redis is not there and
/// `REDIS_REQUIRED` is not set.
fn raw() -> Option<redis::Connection> {
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

/// A config under a prefix no other test uses.
fn config(test: &str) -> StoreConfig {
    static N: AtomicU64 = AtomicU64::new(0);
    let mut c = StoreConfig::new(url());
    c.prefix = format!(
        "test-blocking-{test}-{}-{}",
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
        .unwrap();
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL").arg(keys).query(conn).unwrap();
    }
}

#[test]
fn two_clients_share_one_redis_quota_at_exact_limits() {
    let Some(mut conn) = raw() else { return };
    for mode in [WindowMode::Sliding, WindowMode::Fixed] {
        let limits = Limits::parse("2021,incidents.calls=20/1s").expect("spec");
        let env = Env::start(limits.clone(), mode);
        let store = config("exact");
        let clients: Vec<_> = (0..2)
            .map(|_| {
                env.builder(limits.clone())
                    .redis_quota(store.clone())
                    .build()
                    .expect("builds")
            })
            .collect();
        let done = common::callers(&clients, 16, 4);
        assert_eq!(done, 64, "{mode:?}: every call succeeded");
        let stats = env.emulator.stats();
        assert_eq!(stats.throttled, 0, "{mode:?}: zero 429s: {stats:?}");
        assert_eq!(env.api_requests(), 64, "{mode:?}: each call sent once");
        cleanup(&mut conn, &store.prefix);
        env.rt.block_on(env.emulator.shutdown());
    }
}

#[test]
fn redis_quota_build_errors_are_typed() {
    let limits = Limits::parse("2021").expect("spec");
    let env = Env::start(limits.clone(), WindowMode::Sliding);
    // A URL that does not parse; its password never reaches the message.
    let e = env
        .builder(limits.clone())
        .redis_quota(StoreConfig::new("http://user:hunter2@:::nonsense"))
        .build()
        .unwrap_err();
    match &e {
        BuildError::QuotaStore { message } => {
            assert!(!message.contains("hunter2"), "{message}")
        }
        other => panic!("expected a typed store error, got {other:?}"),
    }
    // The quota is named by tenant and app: a token provider alone does not say them.
    #[derive(Debug)]
    struct Tokens;
    impl defender_blocking::TokenProvider for Tokens {
        fn token(
            &self,
            _: &str,
        ) -> Result<(defender_core::token::Secret, Duration), defender_core::Error> {
            unreachable!("never called")
        }
    }
    let e = defender_blocking::Client::builder()
        .base_url(env.emulator.base_url())
        .token_provider(std::sync::Arc::new(Tokens))
        .redis_quota(StoreConfig::new(url()))
        .build()
        .unwrap_err();
    assert!(matches!(e, BuildError::SharedQuotaScope), "{e:?}");
    env.rt.block_on(env.emulator.shutdown());
}
