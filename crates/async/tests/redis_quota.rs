//! Two clients sharing one quota on a real Redis (`REDIS_URL`, default
//! `redis://127.0.0.1:6379`): skipped with a note when Redis does not answer, unless
//! `REDIS_REQUIRED=1`.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use defender_async::defender_redis::{redis, StoreConfig};
use defender_async::TokenProvider;
use defender_core::settings::BuildError;
use defender_core::token::Secret;
use defender_core::{Error, Limits};
use defender_emulator::WindowMode;

fn url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A connection, or `None` (with a note) when Redis is not there and `REDIS_REQUIRED` is
/// not set; with `REDIS_REQUIRED=1` a missing Redis fails the test.
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

fn prefix(test: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "test-async-{test}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
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

/// 16 callers on two clients bound to one Redis quota, at the server's exact limits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_share_a_redis_quota_at_exact_limits() {
    let Some(mut conn) = raw() else { return };
    let limits = Limits::parse("2021,incidents.calls=20/1s").expect("a valid spec");
    for mode in [WindowMode::Sliding, WindowMode::Fixed] {
        let emu = common::emulator(&limits, mode).await;
        let mut config = StoreConfig::new(url());
        config.prefix = prefix("exact");
        config.connect_timeout = Duration::from_secs(2);
        config.response_timeout = Duration::from_secs(2);
        let clients: Vec<_> = (0..2)
            .map(|_| {
                common::builder(&emu, &limits)
                    .redis_quota(config.clone())
                    .build()
                    .expect("the client builds")
            })
            .collect();
        common::list_concurrently(&clients, 16, 4).await;
        let stats = emu.stats();
        cleanup(&mut conn, &config.prefix);
        assert_eq!(stats.throttled, 0, "{mode:?}: zero 429s");
        assert_eq!(common::api_requests(&stats), 64, "{mode:?}");
    }
}

#[derive(Debug)]
struct Tokens;

#[async_trait::async_trait]
impl TokenProvider for Tokens {
    async fn token(&self, _scope: &str) -> Result<(Secret, Duration), Error> {
        Ok((Secret::new("t"), Duration::from_secs(3600)))
    }
}

/// The builder's typed errors: no tenant or app to name the quota, a URL that does not
/// parse (its password not repeated).
#[tokio::test]
async fn redis_quota_build_errors_are_typed() {
    let e = defender_async::Client::builder()
        .token_provider(Arc::new(Tokens))
        .redis_quota(StoreConfig::new(url()))
        .build()
        .unwrap_err();
    assert!(matches!(e, BuildError::SharedQuotaScope), "{e}");

    let e = defender_async::Client::builder()
        .tenant("t")
        .client_id("a")
        .client_secret("s")
        .redis_quota(StoreConfig::new("nope://user:hunter2@host"))
        .build()
        .unwrap_err();
    assert!(matches!(e, BuildError::QuotaStore { .. }), "{e:?}");
    assert!(!e.to_string().contains("hunter2"), "{e}");
    assert!(!format!("{e:?}").contains("hunter2"), "{e:?}");
}
