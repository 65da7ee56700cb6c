//! The quota shared by several processes through Redis (issue #8), end to end:
//! - four OS processes (the `quota-worker` binary) sharing one Redis and one emulator
//!   whose limits equal the client's, each trying to saturate the quota: zero 429s, no
//!   call lost, and the share of the theoretical maximum reached;
//! - a Redis stopped mid-run and started again (a private `redis-server` on a free port):
//!   `OnRedisError::Fail` fails calls with a typed error and sends nothing,
//!   `FallBackToLocal` keeps admitting from the local quota, and both use Redis again
//!   once it is back.
//!
//! Redis comes from `REDIS_URL` (default `redis://127.0.0.1:6379`); without one the tests
//! print SKIPPED, unless `REDIS_REQUIRED=1`, which makes them fail instead.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use defender_core::engine::{Call, UsageSource};
use defender_core::incidents::IncidentQuery;
use defender_core::{ApiGroup, Error, Limits};
use defender_emulator::{DEFAULT_CLIENT_ID, DEFAULT_SECRET, DEFAULT_TENANT};
use defender_policy::StandardPolicy;
use defender_redis::{AcquireRequest, OnRedisError, QuotaKey, RedisQuotaStore, StoreConfig};
use defender_testkit::conformance::Env;
use defender_testkit::redis::{pings, require_redis};

fn unique(name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("test-{name}-{}-{nanos}", std::process::id())
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

#[test]
fn four_processes_share_one_quota() {
    let Some(url) = require_redis() else { return };
    const PROCESSES: usize = 4;
    const CALLS: u64 = 50;
    const MAX: u64 = 40;
    let per = Duration::from_secs(4);
    let spec = format!("2021,incidents.calls={MAX}/4s");
    let limits = Limits::parse(&spec).expect("spec");
    let env = Env::start(|b| b.limits(limits.clone()));
    let prefix = unique("procs");
    // Every process starts at the same instant, after its own start-up.
    let start_at = unix_ms() + 2_000;
    let children: Vec<Child> = (0..PROCESSES)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_quota-worker"))
                .args(["--base-url", &env.emulator.base_url()])
                .args(["--redis", &url, "--prefix", &prefix, "--limits", &spec])
                .args(["--calls", &CALLS.to_string(), "--concurrency", "16"])
                .args(["--margin-ms", "100", "--start-at", &start_at.to_string()])
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("the worker starts")
        })
        .collect();
    let mut first = u64::MAX;
    let mut last = 0;
    let mut ok = 0;
    for child in children {
        let out = child.wait_with_output().expect("the worker ends");
        assert!(out.status.success(), "worker failed: {:?}", out.status);
        let line = String::from_utf8_lossy(&out.stdout);
        let v: serde_json::Value = serde_json::from_str(line.trim()).expect("one JSON line");
        assert_eq!(v["failed"], 0, "no call failed: {v}");
        ok += v["ok"].as_u64().expect("ok");
        first = first.min(v["first_ms"].as_u64().expect("first_ms"));
        last = last.max(v["last_ms"].as_u64().expect("last_ms"));
    }
    let total = PROCESSES as u64 * CALLS;
    assert_eq!(ok, total, "no call lost");
    let stats = env.emulator.stats();
    assert_eq!(stats.throttled, 0, "zero 429s across {PROCESSES} processes");
    // The server allows MAX calls in any window of `per`: the last of `total` calls can
    // start no earlier than (ceil(total / MAX) - 1) windows after the first.
    let ideal = per.as_millis() as u64 * (total.div_ceil(MAX) - 1);
    let elapsed = last - first;
    let share = ideal as f64 / elapsed as f64;
    eprintln!(
        "{PROCESSES} processes, {total} calls at {MAX}/4s: {elapsed} ms (ideal {ideal} ms): \
         {:.1}% of the maximum, {} 429s",
        share * 100.0,
        stats.throttled
    );
    assert!(
        share >= 0.95,
        "reached {:.1}% of the maximum",
        share * 100.0
    );
}

/// A private Redis server on a free port, killed on drop.
struct PrivateRedis {
    child: Option<Child>,
    port: u16,
}

impl PrivateRedis {
    /// `None` when `redis-server` is not installed (and REDIS_REQUIRED is not set).
    fn start(port: Option<u16>) -> Option<PrivateRedis> {
        let port = port.unwrap_or_else(|| {
            TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port()
        });
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                assert!(
                    std::env::var_os("REDIS_REQUIRED").is_none(),
                    "redis-server could not start ({e}) and REDIS_REQUIRED is set"
                );
                eprintln!("SKIPPED: redis-server could not start: {e}");
                return None;
            }
        };
        // Drain its log so it never blocks on a full pipe.
        if let Some(out) = child.stdout.take() {
            std::thread::spawn(move || for _ in BufReader::new(out).lines() {});
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !pings(&format!("127.0.0.1:{port}")) {
            assert!(Instant::now() < deadline, "redis-server answers PING");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(PrivateRedis {
            child: Some(child),
            port,
        })
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while pings(&format!("127.0.0.1:{}", self.port)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn list_call() -> Call {
    Call::ListIncidents(IncidentQuery {
        top: Some(1),
        ..Default::default()
    })
}

#[test]
fn redis_stopped_and_started_again() {
    if require_redis().is_none() {
        return;
    }
    let Some(mut redis) = PrivateRedis::start(None) else {
        return;
    };
    let limits = Limits::parse("2021,incidents.calls=1000/1m").expect("spec");
    let env = Env::start(|b| b.limits(limits.clone()));
    let prefix = unique("restart");
    let store_config = |on_error| {
        let mut c = StoreConfig::new(redis.url());
        c.prefix = prefix.clone();
        c.on_error = on_error;
        c.connect_timeout = Duration::from_millis(300);
        c.response_timeout = Duration::from_millis(300);
        c.reconnect_backoff = Duration::from_millis(50);
        c
    };
    let client = |on_error| {
        let _guard = env.rt.enter();
        defender_async::Client::builder()
            .tenant(DEFAULT_TENANT)
            .client_id(DEFAULT_CLIENT_ID)
            .client_secret(DEFAULT_SECRET)
            .base_url(env.emulator.base_url())
            .login_url(env.emulator.base_url())
            .limits_value(limits.clone())
            .policy(StandardPolicy::standard().with_max_wait(Duration::from_secs(5)))
            .redis_quota(store_config(on_error))
            .build()
            .expect("the client builds")
    };
    let failing = client(OnRedisError::Fail);
    let falling_back = client(OnRedisError::FallBackToLocal);
    let call = |c: &defender_async::Client| env.rt.block_on(c.call(list_call()));
    let shared_used = |url: String| -> u32 {
        let mut c = StoreConfig::new(url);
        c.prefix = prefix.clone();
        let mut s = RedisQuotaStore::open(c).expect("url");
        let key = QuotaKey::new(DEFAULT_TENANT, DEFAULT_CLIENT_ID, ApiGroup::Incidents);
        let u = s
            .usage(
                &key,
                &AcquireRequest::calls(&limits.incidents.calls, Duration::from_millis(500)),
            )
            .expect("usage");
        assert!(!u.local, "the usage came from Redis");
        u.calls.iter().map(|w| w.used).max().unwrap_or(0)
    };

    // Redis up: both clients admit through it.
    call(&failing).expect("admitted through Redis");
    call(&falling_back).expect("admitted through Redis");
    assert_eq!(shared_used(redis.url()), 2, "both calls counted in Redis");
    // The client's quota() asks the store it admits through: both clients' calls.
    let incidents = |c: &defender_async::Client| {
        env.rt
            .block_on(c.quota())
            .expect("the store reports usage")
            .into_iter()
            .find(|u| u.group == ApiGroup::Incidents)
            .expect("every group is reported")
    };
    let seen = incidents(&failing);
    assert_eq!(seen.source, UsageSource::Store, "{seen:?}");
    assert_eq!(
        seen.windows.iter().map(|w| w.used).max(),
        Some(2),
        "{seen:?}"
    );
    assert_eq!(seen.active_calls, 0, "{seen:?}");

    // Redis down.
    redis.stop();
    let before = env.emulator.stats().requests;
    match call(&failing) {
        Err(e @ Error::QuotaStore { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("unreachable"), "{msg}");
        }
        other => panic!("Fail: expected a QuotaStore error, got {other:?}"),
    }
    assert_eq!(
        env.emulator.stats().requests,
        before,
        "Fail sends nothing while the store is down"
    );
    for _ in 0..3 {
        call(&falling_back).expect("FallBackToLocal admits from the local quota");
    }
    assert_eq!(
        env.emulator.stats().requests,
        before + 3,
        "the fallback's calls went out"
    );
    // Its usage says it is the fallback's own count.
    let seen = incidents(&falling_back);
    assert_eq!(seen.source, UsageSource::StoreFallback, "{seen:?}");

    // Redis back on the same port (empty: the windows were lost, nothing else).
    let port = redis.port;
    drop(redis);
    let redis = PrivateRedis::start(Some(port)).expect("redis-server restarts");
    // The stores stop trying for at most 16 x 50 ms after the failures; let that pass.
    std::thread::sleep(Duration::from_secs(1));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match call(&failing) {
            Ok(_) => break,
            Err(Error::QuotaStore { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("the failing client recovers by itself: {e}"),
        }
    }
    call(&falling_back).expect("the falling-back client still works");
    // Both went through Redis again: the new server counts them.
    assert_eq!(shared_used(redis.url()), 2, "both clients use Redis again");
}

/// Issue 22 through Redis: a client that learns its margin sends it with each acquire,
/// and `quota()` (the store's usage) shows the widest margin of the app's processes: its
/// own learned one, then 500 ms once a process with a fixed 500 ms made a call, which
/// widens the learning client's windows as long as that call counts in them.
#[test]
fn the_widest_margin_of_the_processes_reaches_every_client() {
    let Some(url) = require_redis() else { return };
    let limits = Limits::parse("2021,incidents.calls=50/2s").expect("spec");
    let env = Env::start(|b| b.limits(limits.clone()));
    let mut store = StoreConfig::new(&url);
    store.prefix = unique("margins");
    let client = |learn: bool| {
        defender_blocking::Client::builder()
            .tenant(DEFAULT_TENANT)
            .client_id(DEFAULT_CLIENT_ID)
            .client_secret(DEFAULT_SECRET)
            .base_url(env.emulator.base_url())
            .login_url(env.emulator.base_url())
            .limits_value(limits.clone())
            .learn_margin(learn)
            .redis_quota(store.clone())
            .build()
            .expect("the client builds")
    };
    let incidents_margin = |c: &defender_blocking::Client| {
        let u = c.quota().expect("usage from the store");
        let g = u.iter().find(|g| g.group == ApiGroup::Incidents).unwrap();
        assert_eq!(g.source, UsageSource::Store);
        g.margin
    };
    let learning = client(true);
    for _ in 0..8 {
        learning.call(list_call()).expect("a listing");
    }
    let learned = incidents_margin(&learning);
    assert!(
        learned < Duration::from_millis(500),
        "loopback round trips bring the margin down: {learned:?}"
    );
    // Another process, on a fixed 500 ms (learning off), makes one call.
    let fixed = client(false);
    fixed.call(list_call()).expect("a listing");
    assert_eq!(incidents_margin(&learning), Duration::from_millis(500));
    // Its call leaves the 2 s window (and its 500 ms): the learned margin is back.
    std::thread::sleep(Duration::from_millis(2_600));
    assert!(incidents_margin(&learning) < Duration::from_millis(500));
    // Every key the store wrote expires with its windows.
}
