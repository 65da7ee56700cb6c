//! What the front-ends share: the configuration, the outage state, the local fallback
//! and the clock override.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use defender_core::quota::QuotaKey;
use redis::{ErrorKind, RedisError, ServerErrorKind};

use crate::keys::KeyLayout;
use crate::local::Local;
use crate::{OnRedisError, StoreConfig, StoreError};

const NO_OVERRIDE: u64 = u64::MAX;

#[derive(Debug)]
struct Down {
    retry_at: Instant,
    backoff: Duration,
    last: RedisError,
}

#[derive(Debug)]
pub(crate) struct Common {
    pub(crate) config: StoreConfig,
    pub(crate) url: String,
    down: Mutex<Option<Down>>,
    local: Mutex<Local>,
    now_override: AtomicU64,
    /// Tickets are `{nonce}.{counter}`: unique across processes without a round trip.
    nonce: u64,
    counter: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded state stays consistent even if a holder panicked.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether an error means Redis is unreachable or not serving (as opposed to refusing
/// the script).
pub(crate) fn is_outage(e: &RedisError) -> bool {
    // An untrusted certificate comes as an IO error, but waiting will not fix it.
    !crate::connection::is_certificate_error(e)
        && (e.is_io_error()
            || e.is_timeout()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || matches!(
                e.kind(),
                ErrorKind::Server(
                    ServerErrorKind::BusyLoading
                        | ServerErrorKind::TryAgain
                        | ServerErrorKind::MasterDown
                        | ServerErrorKind::ClusterDown
                        | ServerErrorKind::ReadOnly
                )
            ))
}

/// 64 random bits: std's per-process random hash keys, mixed with the process id, the
/// time and an address.
fn nonce() -> u64 {
    use std::hash::{BuildHasher, Hash, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    std::process::id().hash(&mut h);
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
        .hash(&mut h);
    (&h as *const _ as usize).hash(&mut h);
    static STORES: AtomicU64 = AtomicU64::new(0);
    STORES.fetch_add(1, Ordering::Relaxed).hash(&mut h);
    h.finish()
}

impl Common {
    pub(crate) fn new(config: StoreConfig) -> Common {
        Common {
            url: config.redacted_url(),
            local: Mutex::new(Local::new(&config)),
            config,
            down: Mutex::new(None),
            now_override: AtomicU64::new(NO_OVERRIDE),
            nonce: nonce(),
            counter: AtomicU64::new(0),
        }
    }

    /// A ticket id no other store, in this process or another, makes: hex digits and a
    /// dot, then `/` and the client name when one is set, so the usage script can count
    /// each named process's calls from the members it already keeps (no command more
    /// per call).
    pub(crate) fn next_ticket(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        match &self.config.client_name {
            Some(name) => format!("{:x}.{n:x}/{name}", self.nonce),
            None => format!("{:x}.{n:x}", self.nonce),
        }
    }

    pub(crate) fn keys(&self, key: &QuotaKey) -> KeyLayout {
        KeyLayout::scoped(&self.config.prefix, key, self.config.runtime_scope)
    }

    pub(crate) fn now_override(&self) -> Option<u64> {
        match self.now_override.load(Ordering::Relaxed) {
            NO_OVERRIDE => None,
            n => Some(n),
        }
    }

    pub(crate) fn set_now_override(&self, now: Option<Duration>) {
        let v = now.map_or(NO_OVERRIDE, |d| crate::micros(d).min(NO_OVERRIDE - 1));
        self.now_override.store(v, Ordering::Relaxed);
    }

    /// `Err` while in the backoff after a failure: the caller does not touch Redis.
    pub(crate) fn gate(&self) -> Result<(), StoreError> {
        let down = lock(&self.down);
        match &*down {
            Some(d) => {
                let now = Instant::now();
                if now < d.retry_at {
                    Err(StoreError::Unavailable {
                        url: self.url.clone(),
                        retry_in: d.retry_at - now,
                        source: d.last.clone(),
                    })
                } else {
                    Ok(())
                }
            }
            None => Ok(()),
        }
    }

    pub(crate) fn succeeded(&self) {
        let mut down = lock(&self.down);
        if down.take().is_some() {
            tracing::info!(url = %self.url, "the shared quota store is reachable again");
        }
    }

    /// Records an outage; warns once per outage.
    pub(crate) fn failed(&self, e: RedisError) -> StoreError {
        let e = self.scrub(e);
        let mut down = lock(&self.down);
        let base = self.config.reconnect_backoff;
        let backoff = match &*down {
            Some(d) => (d.backoff * 2).min(base * 16),
            None => {
                let fallback = self.config.on_error == OnRedisError::FallBackToLocal;
                tracing::warn!(
                    url = %self.url,
                    error = %e,
                    fallback,
                    "the shared quota store is unreachable; {}",
                    if fallback {
                        "admitting from the local quota until it is back"
                    } else {
                        "calls fail until it is back"
                    }
                );
                base
            }
        };
        *down = Some(Down {
            retry_at: Instant::now() + backoff,
            backoff,
            last: e.clone(),
        });
        StoreError::Unavailable {
            url: self.url.clone(),
            retry_in: backoff,
            source: e,
        }
    }

    /// The outage path: the typed error, or the local quota's answer.
    pub(crate) fn fallback<T>(
        &self,
        err: StoreError,
        f: impl FnOnce(&mut Local, Option<u64>) -> T,
    ) -> Result<T, StoreError> {
        match self.config.on_error {
            OnRedisError::Fail => Err(err),
            OnRedisError::FallBackToLocal => Ok(f(&mut lock(&self.local), self.now_override())),
        }
    }

    /// Runs `f` on the local quota whatever the mode (feedback is kept locally too, so
    /// the fallback knows it when an outage starts).
    pub(crate) fn with_local<T>(&self, f: impl FnOnce(&mut Local, Option<u64>) -> T) -> T {
        f(&mut lock(&self.local), self.now_override())
    }

    /// `e` without any part of the URL's or the configured password.
    fn scrub(&self, e: RedisError) -> RedisError {
        let e = crate::scrub(&self.config.url, e);
        match &self.config.password {
            Some(pw) => crate::scrub_secret(pw.expose(), e),
            None => e,
        }
    }

    pub(crate) fn redis_error(&self, e: RedisError) -> StoreError {
        if crate::connection::is_certificate_error(&e) {
            return StoreError::UntrustedCertificate {
                url: self.url.clone(),
                source: self.scrub(e),
            };
        }
        let text = e.to_string();
        if e.kind() == ErrorKind::AuthenticationFailed
            || text.contains("NOAUTH")
            || text.contains("WRONGPASS")
        {
            return StoreError::Unauthorized {
                url: self.url.clone(),
                source: self.scrub(e),
            };
        }
        StoreError::Redis {
            url: self.url.clone(),
            source: self.scrub(e),
        }
    }
}
