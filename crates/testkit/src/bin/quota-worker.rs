//! One worker process of the multi-process test (`tests/multiprocess.rs`): an async
//! client sharing its quota through Redis, trying to saturate it. It waits until a
//! common start instant, makes `--calls` incident calls with `--concurrency` in flight,
//! and prints one JSON line: calls that succeeded and failed, the first errors, and the
//! wall-clock span of its calls (Unix milliseconds).
//!
//! ```text
//! quota-worker --base-url http://127.0.0.1:PORT --redis redis://127.0.0.1:6379 \
//!     --prefix test-123 --limits 2021,incidents.calls=40/4s --calls 50 --concurrency 16 \
//!     [--margin-ms 100] [--start-at UNIX_MS] [--on-error fail|local] [--ca PATH]
//! ```
//!
//! The store's password, if any, comes from `DEFENDER_QUOTA_STORE_PASSWORD`. The JSON
//! line also has `last_ok_ms` (when the last successful call ended) and `store_errors`
//! (calls that failed because the quota store could not answer).

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use defender_core::engine::Call;
use defender_core::incidents::IncidentQuery;
use defender_core::Limits;
use defender_emulator::{DEFAULT_CLIENT_ID, DEFAULT_SECRET, DEFAULT_TENANT};
use defender_policy::StandardPolicy;
use defender_redis::{OnRedisError, StoreConfig};
use futures_util::stream::{self, StreamExt};

fn unix_ms(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut opts: HashMap<String, String> = HashMap::new();
    let mut it = args.iter();
    while let Some(k) = it.next() {
        let Some(name) = k.strip_prefix("--") else {
            eprintln!("quota-worker: unexpected argument {k}");
            return ExitCode::from(2);
        };
        let Some(v) = it.next() else {
            eprintln!("quota-worker: --{name} needs a value");
            return ExitCode::from(2);
        };
        opts.insert(name.to_owned(), v.clone());
    }
    let get = |k: &str| opts.get(k).cloned();
    let (Some(base), Some(redis), Some(prefix), Some(spec)) =
        (get("base-url"), get("redis"), get("prefix"), get("limits"))
    else {
        eprintln!("quota-worker: --base-url, --redis, --prefix and --limits are required");
        return ExitCode::from(2);
    };
    let num = |k: &str, d: u64| get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(d);
    let calls = num("calls", 50) as usize;
    let concurrency = num("concurrency", 16) as usize;
    let margin = Duration::from_millis(num("margin-ms", 100));
    let start_at = num("start-at", 0);
    let limits = match Limits::parse(&spec) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("quota-worker: {e}");
            return ExitCode::from(2);
        }
    };
    let mut store = StoreConfig::new(redis).password_from_env();
    store.prefix = prefix;
    store.extra_ca = get("ca").map(Into::into);
    store.on_error = match get("on-error").as_deref() {
        Some("local") => OnRedisError::FallBackToLocal,
        _ => OnRedisError::Fail,
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(async move {
        let client = match defender_async::Client::builder()
            .tenant(DEFAULT_TENANT)
            .client_id(DEFAULT_CLIENT_ID)
            .client_secret(DEFAULT_SECRET)
            .base_url(&base)
            .login_url(&base)
            .limits_value(limits)
            .margin(margin)
            .policy(StandardPolicy::standard().with_max_wait(Duration::from_secs(600)))
            .redis_quota(store)
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                eprintln!("quota-worker: {e}");
                return ExitCode::from(2);
            }
        };
        let now = unix_ms(SystemTime::now());
        if u128::from(start_at) > now {
            tokio::time::sleep(Duration::from_millis((u128::from(start_at) - now) as u64)).await;
        }
        let first = unix_ms(SystemTime::now());
        let results: Vec<_> = stream::iter(0..calls)
            .map(|_| {
                let client = client.clone();
                async move {
                    let r = client
                        .call(Call::ListIncidents(IncidentQuery {
                            top: Some(1),
                            ..Default::default()
                        }))
                        .await;
                    (r, unix_ms(SystemTime::now()))
                }
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        let last = unix_ms(SystemTime::now());
        let ok = results.iter().filter(|(r, _)| r.is_ok()).count();
        let last_ok = results
            .iter()
            .filter(|(r, _)| r.is_ok())
            .map(|(_, at)| *at)
            .max()
            .unwrap_or(0);
        let store_errors = results
            .iter()
            .filter(|(r, _)| matches!(r, Err(defender_core::Error::QuotaStore { .. })))
            .count();
        let errors: Vec<String> = results
            .iter()
            .filter_map(|(r, _)| r.as_ref().err().map(|e| e.to_string()))
            .take(5)
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "ok": ok,
                "failed": results.len() - ok,
                "errors": errors,
                "first_ms": first as u64,
                "last_ms": last as u64,
                "last_ok_ms": last_ok as u64,
                "store_errors": store_errors,
            })
        );
        ExitCode::SUCCESS
    })
}
