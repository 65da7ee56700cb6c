//! The shared quota on the Redis teams run in production (issue 21), each test on private
//! `redis-server`s it starts on free ports of 127.0.0.1 and kills at its end:
//! - TLS (`rediss://`, a CA and a certificate made by the test, a password): both clients
//!   admit through it; a certificate not signed by a trusted root, or for another name,
//!   is refused with an error that says so; the password never shows.
//! - A three-primary Redis Cluster (`redis+cluster://`): four processes share one quota
//!   with zero 429s and nothing lost; all keys of one quota share a slot and tenants
//!   land in different slots.
//! - A replica promoted while four processes run (its link cut for a while, so the
//!   primary's newest admissions are not replicated; then the primary killed and
//!   `CLUSTER FAILOVER TAKEOVER`): every call ends, the over-admission (the 429s the
//!   emulator answers) stays within the documented bound (the admissions of the lag),
//!   and the processes carry on against the new primary.
//! - Both clients through a TLS cluster (`rediss+cluster://`).
//!
//! Without `redis-server` the tests print SKIPPED, unless `REDIS_REQUIRED=1`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use defender_core::engine::Call;
use defender_core::incidents::IncidentQuery;
use defender_core::{ApiGroup, Error, Limits};
use defender_emulator::{DEFAULT_CLIENT_ID, DEFAULT_SECRET, DEFAULT_TENANT};
use defender_policy::StandardPolicy;
use defender_redis::{
    AcquireRequest, KeyLayout, QuotaKey, RedisQuotaStore, StoreConfig, StorePassword,
};
use defender_testkit::conformance::Env;
use defender_testkit::redis::{RedisServer, ServerOptions, TestCerts, TestCluster};

/// A password shaped as an Azure Cache access key (`/`, `+`, `=` included).
const PASSWORD: &str = "Zq7/Kx9+pW3vT8=";

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

/// API requests the emulator answered (token requests not counted).
fn api_requests(env: &Env) -> u64 {
    env.emulator.stats().keys.iter().map(|k| k.requests).sum()
}

fn list_call() -> Call {
    Call::ListIncidents(IncidentQuery {
        top: Some(1),
        ..Default::default()
    })
}

fn async_client(env: &Env, limits: &Limits, store: StoreConfig) -> defender_async::Client {
    let _guard = env.rt.enter();
    defender_async::Client::builder()
        .tenant(DEFAULT_TENANT)
        .client_id(DEFAULT_CLIENT_ID)
        .client_secret(DEFAULT_SECRET)
        .base_url(env.emulator.base_url())
        .login_url(env.emulator.base_url())
        .limits_value(limits.clone())
        .policy(StandardPolicy::standard().with_max_wait(Duration::from_secs(5)))
        .redis_quota(store)
        .build()
        .expect("the async client builds")
}

fn blocking_client(env: &Env, limits: &Limits, store: StoreConfig) -> defender_blocking::Client {
    defender_blocking::Client::builder()
        .tenant(DEFAULT_TENANT)
        .client_id(DEFAULT_CLIENT_ID)
        .client_secret(DEFAULT_SECRET)
        .base_url(env.emulator.base_url())
        .login_url(env.emulator.base_url())
        .limits_value(limits.clone())
        .policy(StandardPolicy::standard().with_max_wait(Duration::from_secs(5)))
        .redis_quota(store)
        .build()
        .expect("the blocking client builds")
}

/// The calls counted in the shared windows of the emulator's app.
fn shared_used(store: StoreConfig, limits: &Limits) -> u32 {
    let mut s = RedisQuotaStore::open(store).expect("the store opens");
    let key = QuotaKey::new(DEFAULT_TENANT, DEFAULT_CLIENT_ID, ApiGroup::Incidents);
    let u = s
        .usage(
            &key,
            &AcquireRequest::calls(&limits.incidents.calls, Duration::from_millis(500)),
        )
        .expect("usage");
    assert!(!u.local, "the usage came from Redis");
    u.calls.iter().map(|w| w.used).max().unwrap_or(0)
}

#[test]
fn tls_both_clients_admit_and_untrusted_certificates_are_refused() {
    let certs = TestCerts::generate(&["localhost"]);
    let Some(server) = RedisServer::start(&ServerOptions {
        tls: Some(&certs),
        password: Some(PASSWORD),
        ..Default::default()
    }) else {
        return;
    };
    let limits = Limits::parse("2021,incidents.calls=1000/1m").expect("spec");
    let env = Env::start(|b| b.limits(limits.clone()));
    let prefix = unique("tls");
    let config = |url: String, ca: bool| {
        let mut c = StoreConfig::new(url);
        c.prefix = prefix.clone();
        c.password = Some(StorePassword::new(PASSWORD));
        c.extra_ca = ca.then(|| certs.ca());
        c.connect_timeout = Duration::from_secs(2);
        c.response_timeout = Duration::from_secs(2);
        c
    };
    // The certificate names localhost: the URL must too.
    let trusted = config(format!("rediss://localhost:{}", server.port), true);
    assert!(!format!("{trusted:?}").contains(PASSWORD), "{trusted:?}");

    // Both clients admit through rediss://, with the extra CA and the password.
    let a = async_client(&env, &limits, trusted.clone());
    env.rt
        .block_on(a.call(list_call()))
        .expect("the async client admits through rediss://");
    let b = blocking_client(&env, &limits, trusted.clone());
    b.call(list_call())
        .expect("the blocking client admits through rediss://");
    assert_eq!(shared_used(trusted.clone(), &limits), 2, "both counted");

    // Refused, with a clear error and nothing sent: a certificate no trusted root signed
    // (no CA given), and a trusted one for another name (127.0.0.1 is not in it).
    let refused = [
        (
            "no CA",
            config(format!("rediss://localhost:{}", server.port), false),
        ),
        (
            "wrong name",
            config(format!("rediss://127.0.0.1:{}", server.port), true),
        ),
    ];
    for (what, store) in refused {
        let before = api_requests(&env);
        let async_err = env
            .rt
            .block_on(async_client(&env, &limits, store.clone()).call(list_call()))
            .expect_err(what);
        let blocking_err = blocking_client(&env, &limits, store.clone())
            .call(list_call())
            .expect_err(what);
        for e in [async_err, blocking_err] {
            let msg = e.to_string();
            assert!(matches!(e, Error::QuotaStore { .. }), "{what}: {e:?}");
            assert!(msg.contains("not trusted"), "{what}: {msg}");
            assert!(
                msg.contains("--quota-store-ca"),
                "{what}: says what to do: {msg}"
            );
            assert!(!msg.contains(PASSWORD), "{what}: {msg}");
        }
        assert_eq!(api_requests(&env), before, "{what}: nothing sent");
        let mut s = RedisQuotaStore::open(store).expect("opens");
        let e = s.ping().expect_err(what);
        assert!(
            matches!(e, defender_redis::StoreError::UntrustedCertificate { .. }),
            "{what}: {e:?}"
        );
    }

    // A wrong password: an authentication error that quotes neither password.
    let mut wrong = trusted.clone();
    wrong.password = Some(StorePassword::new("Wr0ng/Key+="));
    let e = RedisQuotaStore::open(wrong)
        .expect("opens")
        .ping()
        .expect_err("a wrong password is refused");
    let msg = e.to_string();
    assert!(msg.contains("password"), "says what to do: {msg}");
    assert!(!msg.contains("Wr0ng") && !msg.contains(PASSWORD), "{msg}");

    // The password in the environment (DEFENDER_QUOTA_STORE_PASSWORD), as the CLI and
    // the worker read it, in a process of its own; nothing it prints holds the password.
    for (pw, ok) in [(PASSWORD, true), ("Wr0ng/Key+=", false)] {
        let out = Command::new(env!("CARGO_BIN_EXE_quota-worker"))
            .args(["--base-url", &env.emulator.base_url()])
            .args(["--redis", &format!("rediss://localhost:{}", server.port)])
            .args([
                "--prefix",
                &prefix,
                "--limits",
                "2021,incidents.calls=1000/1m",
            ])
            .args(["--calls", "3", "--concurrency", "1"])
            .arg("--ca")
            .arg(certs.ca())
            .env(defender_redis::PASSWORD_ENV, pw)
            .env("RUST_LOG", "trace")
            .output()
            .expect("the worker runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        assert!(!text.contains(pw) && !text.contains("Wr0ng"), "{text}");
        let v: serde_json::Value =
            serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim())
                .expect("one JSON line");
        if ok {
            assert_eq!(v["ok"], 3, "{v}");
        } else {
            assert_eq!(v["store_errors"], 3, "{v}");
            assert!(text.contains("password"), "{text}");
        }
    }
    assert_eq!(
        shared_used(trusted, &limits),
        5,
        "the worker's calls counted"
    );
}

/// Worker processes, killed on drop (a failed assertion leaves none behind).
struct Workers(Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Four `quota-worker` processes.
fn run_workers(
    env: &Env,
    url: &str,
    prefix: &str,
    spec: &str,
    calls: u64,
    start_at: u64,
) -> Workers {
    Workers(
        (0..4)
            .map(|_| {
                Command::new(env!("CARGO_BIN_EXE_quota-worker"))
                    .args(["--base-url", &env.emulator.base_url()])
                    .args(["--redis", url, "--prefix", prefix, "--limits", spec])
                    .args(["--calls", &calls.to_string(), "--concurrency", "8"])
                    .args(["--margin-ms", "100", "--start-at", &start_at.to_string()])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit())
                    .spawn()
                    .expect("the worker starts")
            })
            .collect(),
    )
}

/// Waits for every worker (at most `limit` in all), and parses its line; a worker still
/// running then is a call that stalled.
fn collect(mut workers: Workers, limit: Duration) -> Vec<serde_json::Value> {
    use std::io::Read;
    let deadline = Instant::now() + limit;
    let mut lines = Vec::new();
    for child in &mut workers.0 {
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "a worker did not end within {limit:?}: a call stalled"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "worker failed: {status:?}");
        let mut out = String::new();
        child
            .stdout
            .take()
            .expect("piped")
            .read_to_string(&mut out)
            .expect("the worker's line");
        lines.push(serde_json::from_str(out.trim()).expect("one JSON line"));
    }
    lines
}

#[test]
fn four_processes_share_one_quota_through_a_cluster() {
    let Some(cluster) = TestCluster::start(3, 0) else {
        return;
    };
    let prefix = unique("cluster");

    // Every key of one quota in one slot; tenants in different slots.
    let slots = |tenant: &str, app: &str| -> Vec<u16> {
        let k = KeyLayout::new(&prefix, &QuotaKey::new(tenant, app, ApiGroup::Hunting));
        [k.calls, k.reservations, k.charges, k.state, k.runtime_state]
            .iter()
            .map(|key| cluster.slot(key))
            .collect()
    };
    let t1 = slots("tenant-one", "app-a");
    assert!(t1.iter().all(|s| *s == t1[0]), "one slot per quota: {t1:?}");
    let t1b = slots("tenant-one", "app-b");
    assert_eq!(t1b[0], t1[0], "every app of a tenant in the tenant's slot");
    let t2 = slots("tenant-two", "app-a");
    assert!(t2.iter().all(|s| *s == t2[0]), "{t2:?}");
    assert_ne!(t1[0], t2[0], "tenants land in different slots");
    let tenants: std::collections::BTreeSet<u16> = (0..8)
        .map(|i| slots(&format!("tenant-{i}"), "app")[0])
        .collect();
    assert!(tenants.len() >= 7, "tenants spread over slots: {tenants:?}");
    let owners: std::collections::BTreeSet<u16> =
        tenants.iter().map(|s| cluster.owner(*s).0).collect();
    assert!(
        owners.len() >= 2,
        "tenants spread over primaries: {owners:?}"
    );

    const CALLS: u64 = 30;
    const MAX: u64 = 30;
    let per = Duration::from_secs(2);
    let spec = format!("2021,incidents.calls={MAX}/2s");
    let limits = Limits::parse(&spec).expect("spec");
    let env = Env::start(|b| b.limits(limits.clone()));
    let started = Instant::now();
    let start_at = unix_ms() + 2_000;
    let children = run_workers(&env, &cluster.url(), &prefix, &spec, CALLS, start_at);
    let lines = collect(children, Duration::from_secs(60));
    let (mut ok, mut first, mut last) = (0, u64::MAX, 0);
    for v in &lines {
        assert_eq!(v["failed"], 0, "no call failed: {v}");
        ok += v["ok"].as_u64().expect("ok");
        first = first.min(v["first_ms"].as_u64().expect("first_ms"));
        last = last.max(v["last_ms"].as_u64().expect("last_ms"));
    }
    let total = 4 * CALLS;
    assert_eq!(ok, total, "no call lost");
    let stats = env.emulator.stats();
    assert_eq!(
        stats.throttled, 0,
        "zero 429s across 4 processes: {stats:?}"
    );
    let ideal = per.as_millis() as u64 * (total.div_ceil(MAX) - 1);
    let share = ideal as f64 / (last - first) as f64;
    eprintln!(
        "cluster: 4 processes, {total} calls at {MAX}/2s: {} ms (ideal {ideal} ms, {:.1}%), \
         0 429s, test {:?}",
        last - first,
        share * 100.0,
        started.elapsed()
    );
    // The margin (100 ms per window) alone costs 5%; leave room for a loaded machine.
    assert!(
        share >= 0.85,
        "reached {:.1}% of the maximum",
        share * 100.0
    );

    // Both clients in this process too (a fresh emulator, whose windows the workers have
    // not filled): each call counted once in the cluster's windows.
    let env = Env::start(|b| b.limits(limits.clone()));
    let mut store = StoreConfig::new(cluster.url());
    store.prefix = unique("cluster-clients");
    blocking_client(&env, &limits, store.clone())
        .call(list_call())
        .expect("the blocking client admits through the cluster");
    assert_eq!(
        shared_used(store.clone(), &limits),
        1,
        "the blocking call counted"
    );
    env.rt
        .block_on(async_client(&env, &limits, store.clone()).call(list_call()))
        .expect("the async client admits through the cluster");
    assert_eq!(
        shared_used(store, &limits),
        2,
        "both counted in the cluster"
    );

    // The keys are on the primary that serves the tenant's slot, not elsewhere.
    let key = KeyLayout::new(
        &prefix,
        &QuotaKey::new(DEFAULT_TENANT, DEFAULT_CLIENT_ID, ApiGroup::Incidents),
    );
    let (owner, _) = cluster.owner(cluster.slot(&key.calls));
    for n in &cluster.nodes {
        let exists = cluster.query(n.port, &["EXISTS", &key.calls]);
        let want = if n.port == owner { "1" } else { "error" };
        assert!(exists.starts_with(want), "node {}: {exists}", n.port);
    }
}

#[test]
fn a_replica_promoted_while_four_processes_run() {
    let Some(mut cluster) = TestCluster::start(3, 1) else {
        return;
    };
    let prefix = unique("failover");
    const CALLS: u64 = 30;
    const MAX: u64 = 20;
    let spec = format!("2021,incidents.calls={MAX}/2s");
    let limits = Limits::parse(&spec).expect("spec");
    let env = Env::start(|b| b.limits(limits.clone()));
    let key = KeyLayout::new(
        &prefix,
        &QuotaKey::new(DEFAULT_TENANT, DEFAULT_CLIENT_ID, ApiGroup::Incidents),
    );
    let (old_primary, replica) = cluster.owner(cluster.slot(&key.calls));
    let replica = replica.expect("the primary has a replica");
    let started = Instant::now();
    let start_at = unix_ms() + 2_000;
    let children = run_workers(&env, &cluster.url(), &prefix, &spec, CALLS, start_at);

    // Replication lag, made long enough to matter: the replica's link to the primary is
    // cut and cannot come back (a wrong `masterauth`), while the primary goes on
    // admitting. The admissions of that lag are what the failover loses.
    // Saturating workers send in bursts, one per window (at about 0, 2.1, 4.2 s): the lag
    // holds the second, and the failover comes soon after it, well before its window
    // ends.
    let lag_from = Duration::from_millis(start_at - unix_ms() + 1_500);
    std::thread::sleep(lag_from);
    let reply = cluster.query(replica, &["CONFIG", "SET", "masterauth", "cut-the-link"]);
    assert_eq!(reply, "OK", "masterauth");
    let sent_before_lag = api_requests(&env);
    let cut = cluster.query(old_primary, &["CLIENT", "KILL", "TYPE", "replica"]);
    assert_eq!(cut, "1", "the replica's link is cut");
    std::thread::sleep(Duration::from_millis(1_100));
    // Then the primary dies (SIGKILL) and its replica takes over at once (TAKEOVER: no
    // agreement with the other primaries awaited), as a managed Redis's failover does.
    let failover_at = unix_ms();
    let dead = cluster
        .nodes
        .iter_mut()
        .find(|n| n.port == old_primary)
        .expect("the primary is a node");
    dead.stop();
    let lag_admissions = api_requests(&env) - sent_before_lag;
    let reply = cluster.query(replica, &["CLUSTER", "FAILOVER", "TAKEOVER"]);
    assert_eq!(reply, "OK", "the replica accepts the takeover");
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster.owner(cluster.slot(&key.calls)).0 != replica {
        assert!(Instant::now() < deadline, "the replica becomes the primary");
        std::thread::sleep(Duration::from_millis(20));
    }
    let promoted_in = unix_ms() - failover_at;
    // The workers wait for the windows the old primary told them of; a process that
    // asks now sees the new primary's windows, without the lost admissions: a fifth
    // client, in this process, calls at once. Its over-admitted calls are what the
    // server refuses (429s), and the engine retries them.
    let fifth = blocking_client(&env, &limits, {
        let mut c = StoreConfig::new(cluster.url());
        c.prefix = prefix.clone();
        c
    });
    for _ in 0..3 {
        // It competes with four saturating workers: a call may end waiting too long.
        match fifth.call(list_call()) {
            Ok(_) | Err(Error::QuotaWait { .. }) => {}
            Err(e) => panic!("the fifth client's call: {e}"),
        }
    }

    // Every call ends (a stalled one would hold its worker past the limit).
    let lines = collect(children, Duration::from_secs(90));
    let (mut ok, mut failed, mut last_ok) = (0, 0, 0);
    for v in &lines {
        ok += v["ok"].as_u64().expect("ok");
        failed += v["failed"].as_u64().expect("failed");
        last_ok = last_ok.max(v["last_ok_ms"].as_u64().expect("last_ok_ms"));
        // A call that fails does so because the store could not answer, typed.
        assert_eq!(v["failed"], v["store_errors"], "only store errors: {v}");
    }
    let stats = env.emulator.stats();
    eprintln!(
        "failover: {lag_admissions} calls sent during the 1.1 s of replication lag; \
         promoted in {promoted_in} ms; {ok} calls ok, {failed} failed (store unavailable), \
         {} 429s (over-admission); test {:?}",
        stats.throttled,
        started.elapsed()
    );
    assert_eq!(ok + failed, 4 * CALLS, "every call ended");
    assert!(
        stats.throttled > 0,
        "the lost admissions showed as over-admission"
    );
    // The documented bound (README, "Failover"): the failover forgets at most the
    // admissions of the replication lag, and each lets at most one call too many
    // through (a call the server then refuses with a 429, retried by the engine).
    assert!(
        lag_admissions > 0,
        "the lag held admissions: the bound was tested"
    );
    assert!(
        stats.throttled <= lag_admissions,
        "over-admission {} beyond the bound of {lag_admissions}",
        stats.throttled
    );
    // The processes carried on against the new primary.
    assert!(
        last_ok > failover_at + promoted_in,
        "calls succeeded after the promotion"
    );
    assert!(ok >= 4 * CALLS * 3 / 4, "most calls succeeded: {ok}");
    let new_primary = cluster.query(replica, &["ZCARD", &key.calls]);
    let count: u64 = new_primary
        .trim()
        .parse()
        .expect("ZCARD on the new primary");
    assert!(count > 0, "the new primary holds the windows");
}

#[test]
fn both_clients_through_a_tls_cluster() {
    let certs = TestCerts::generate(&["127.0.0.1"]);
    let Some(cluster) = TestCluster::start_with(3, 0, Some(&certs)) else {
        return;
    };
    let url = cluster.url();
    assert!(url.starts_with("rediss+cluster://"), "{url}");
    let limits = Limits::parse("2021,incidents.calls=1000/1m").expect("spec");
    let env = Env::start(|b| b.limits(limits.clone()));
    let mut store = StoreConfig::new(url);
    store.prefix = unique("tls-cluster");
    store.extra_ca = Some(certs.ca());
    blocking_client(&env, &limits, store.clone())
        .call(list_call())
        .expect("the blocking client admits through rediss+cluster://");
    env.rt
        .block_on(async_client(&env, &limits, store.clone()).call(list_call()))
        .expect("the async client admits through rediss+cluster://");
    assert_eq!(shared_used(store.clone(), &limits), 2, "both counted");
    // Without the CA: refused as untrusted, not as an outage.
    store.extra_ca = None;
    let e = RedisQuotaStore::open(store)
        .expect("opens")
        .ping()
        .expect_err("untrusted");
    assert!(
        matches!(e, defender_redis::StoreError::UntrustedCertificate { .. }),
        "{e:?}"
    );
}
