//! The clients' metrics (feature `metrics`) against what the emulator counted: one
//! scripted run per client under a limit tighter than the client believes, so 429s and
//! waits happen, and then every counter is checked against the emulator's own stats.
//!
//! The recorder is global, so one test runs both clients in turn (a test binary of its
//! own keeps other tests' calls out of it) and compares what each run added.

use std::collections::HashMap;

use defender_core::engine::Call;
use defender_core::hunting::HuntRequest;
use defender_core::incidents::{IncidentId, IncidentQuery};
use defender_core::telemetry as t;
use defender_core::{Error, Limits, Surface};
use defender_testkit::conformance::{AsyncDriver, BlockingDriver, Driver, Env};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::{CompositeKey, MetricKind};

/// Every metric's value, keyed by kind, name and sorted labels; histograms as their
/// samples.
#[derive(Debug, Default)]
struct Values(HashMap<MetricId, Value>);

/// A metric's kind, name and sorted labels.
type MetricId = (MetricKind, String, Vec<(String, String)>);

#[derive(Debug, Clone)]
enum Value {
    Counter(u64),
    Gauge(f64),
    Histogram(Vec<f64>),
}

fn read(s: &Snapshotter) -> Values {
    let mut out = Values::default();
    for (key, _, _, value) in s.snapshot().into_vec() {
        let key: CompositeKey = key;
        let (kind, key) = key.into_parts();
        let mut labels: Vec<(String, String)> = key
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        labels.sort();
        let v = match value {
            DebugValue::Counter(c) => Value::Counter(c),
            DebugValue::Gauge(g) => Value::Gauge(g.into_inner()),
            DebugValue::Histogram(h) => {
                Value::Histogram(h.into_iter().map(|x| x.into_inner()).collect())
            }
        };
        out.0.insert((kind, key.name().to_owned(), labels), v);
    }
    out
}

impl Values {
    /// The sum of a counter over every series whose labels include `with`, less what
    /// `before` had.
    fn counter(&self, before: &Values, name: &str, with: &[(&str, &str)]) -> u64 {
        let sum = |v: &Values| -> u64 {
            v.series(MetricKind::Counter, name, with)
                .map(|x| match x {
                    Value::Counter(c) => *c,
                    _ => 0,
                })
                .sum()
        };
        sum(self) - sum(before)
    }

    /// The samples of a histogram over every series whose labels include `with`, less
    /// the first `n` that `before` had (the debugging recorder keeps every sample).
    fn samples(&self, before: &Values, name: &str, with: &[(&str, &str)]) -> Vec<f64> {
        let mut out = Vec::new();
        for ((kind, n, labels), v) in &self.0 {
            if *kind != MetricKind::Histogram || n != name || !has(labels, with) {
                continue;
            }
            let Value::Histogram(h) = v else { continue };
            let seen = match before.0.get(&(*kind, n.clone(), labels.clone())) {
                Some(Value::Histogram(b)) => b.len(),
                _ => 0,
            };
            out.extend(h.iter().skip(seen));
        }
        out
    }

    fn gauge(&self, name: &str, with: &[(&str, &str)]) -> Option<f64> {
        self.series(MetricKind::Gauge, name, with)
            .find_map(|x| match x {
                Value::Gauge(g) => Some(*g),
                _ => None,
            })
    }

    fn series<'a>(
        &'a self,
        kind: MetricKind,
        name: &'a str,
        with: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Value> + 'a {
        self.0
            .iter()
            .filter(move |((k, n, labels), _)| *k == kind && n == name && has(labels, with))
            .map(|(_, v)| v)
    }
}

fn has(labels: &[(String, String)], with: &[(&str, &str)]) -> bool {
    with.iter()
        .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
}

/// The scripted run: 6 hunts against 2 per 3 s that the client does not know about (one
/// 429 teaches it, the rest wait), 2 incident pages and one incident that does not
/// exist.
fn scripted_run<D: Driver>(s: &Snapshotter) {
    let before = read(s);
    let server = Limits::parse("2021,hunting.calls=2/3s").expect("spec");
    let env = Env::start(|b| b.limits(server));
    let client = Limits::parse(
        "2021,hunting.calls=1000/1m,incidents.calls=1000/1m,alerts.calls=1000/1m,hunting.runtime=none",
    )
    .expect("spec");
    let d = D::connect(&env.spec(Surface::DefenderXdr, client), &env.rt);
    for i in 0..6 {
        d.call(Call::Hunt(HuntRequest::new("AlertInfo | take 1")))
            .unwrap_or_else(|e| panic!("{} hunt {i}: {e}", D::NAME));
    }
    for _ in 0..2 {
        d.call(Call::ListIncidents(IncidentQuery::default()))
            .unwrap_or_else(|e| panic!("{} incidents: {e}", D::NAME));
    }
    let missing = d.call(Call::GetIncident(IncidentId::from(987_654_321u64)));
    assert!(matches!(missing, Err(Error::NotFound(_))), "{missing:?}");
    let stats = env.stats();
    let after = read(s);
    let name = D::NAME;

    // Calls by group and outcome: what the script made.
    let calls = |with: &[(&str, &str)]| after.counter(&before, t::CALLS, with);
    assert_eq!(
        calls(&[(t::GROUP, "hunting"), (t::OUTCOME, "ok")]),
        6,
        "{name}"
    );
    assert_eq!(
        calls(&[(t::GROUP, "incidents"), (t::OUTCOME, "ok")]),
        2,
        "{name}"
    );
    assert_eq!(
        calls(&[(t::GROUP, "incidents"), (t::OUTCOME, "not_found")]),
        1,
        "{name}"
    );
    assert_eq!(calls(&[]), 9, "{name}: no other outcome");

    // 429s: what the emulator refused, as counted and as request durations.
    assert!(
        stats.throttled >= 1,
        "{name}: the tight limit was hit: {stats:?}"
    );
    assert_eq!(
        after.counter(&before, t::THROTTLED, &[]),
        stats.throttled,
        "{name}"
    );
    let throttled = after.samples(&before, t::REQUEST_DURATION, &[(t::STATUS, "429")]);
    assert_eq!(throttled.len() as u64, stats.throttled, "{name}");

    // One request duration per HTTP request the emulator answered, token requests apart.
    let api: u64 = stats.keys.iter().map(|k| k.requests).sum();
    let by_group = |g: &str| {
        after
            .samples(&before, t::REQUEST_DURATION, &[(t::GROUP, g)])
            .len() as u64
    };
    assert_eq!(
        by_group("hunting") + by_group("incidents"),
        api,
        "{name}: {stats:?}"
    );
    assert_eq!(by_group("token"), stats.tokens_issued, "{name}");
    assert_eq!(
        stats.requests,
        api + stats.tokens_issued,
        "{name}: nothing else was sent"
    );
    let all = after.samples(&before, t::REQUEST_DURATION, &[(t::SERVER, "127.0.0.1")]);
    assert_eq!(
        all.len() as u64,
        stats.requests,
        "{name}: every request names its server"
    );
    assert!(
        all.iter().all(|d| *d >= 0.0 && *d < 30.0),
        "{name}: {all:?}"
    );
    let posts = after.samples(&before, t::REQUEST_DURATION, &[(t::METHOD, "POST")]);
    assert_eq!(
        posts.len() as u64,
        6 + stats.throttled + stats.tokens_issued,
        "{name}"
    );

    // Tokens fetched.
    assert_eq!(
        after.counter(&before, t::TOKENS, &[]),
        stats.tokens_issued,
        "{name}"
    );

    // Waits: the 429's retry time, then the limit it taught.
    let waits = after.samples(&before, t::QUOTA_WAIT, &[(t::GROUP, "hunting")]);
    assert!(!waits.is_empty(), "{name}: hunts waited");
    assert!(
        waits.iter().all(|w| *w > 0.0 && *w <= 3.6),
        "{name}: {waits:?}"
    );
    let asked = after.samples(&before, t::QUOTA_WAIT, &[(t::REASON, "server_asked")]);
    assert_eq!(
        asked.len() as u64,
        stats.throttled,
        "{name}: one wait per 429"
    );

    // Running time charged: what the emulator charged (it rounds nothing; we count ms).
    let charged_ms = after.counter(&before, t::RUNTIME_CHARGED, &[]) as f64;
    let emulator_ms: f64 = stats
        .keys
        .iter()
        .map(|k| k.runtime_charged_seconds * 1000.0)
        .sum();
    assert!(emulator_ms > 0.0, "{name}: {stats:?}");
    assert!(
        (charged_ms - emulator_ms).abs() <= 6.0,
        "{name}: charged {charged_ms} ms, the emulator {emulator_ms} ms"
    );

    // Gauges after the last answer: the learned hunting window and the incidents one.
    assert_eq!(
        after.gauge(t::QUOTA_LIMIT, &[(t::GROUP, "hunting"), (t::WINDOW, "3s")]),
        Some(2.0),
        "{name}: the limit the 429 taught"
    );
    assert_eq!(
        after.gauge(
            t::QUOTA_LIMIT,
            &[(t::GROUP, "incidents"), (t::WINDOW, "1m")]
        ),
        Some(1000.0),
        "{name}"
    );
    let used = after
        .gauge(t::QUOTA_USED, &[(t::GROUP, "incidents"), (t::WINDOW, "1m")])
        .expect("incidents used");
    assert_eq!(used, 3.0, "{name}: three incident calls in the last minute");
    assert_eq!(
        after.gauge(t::ACTIVE_CALLS, &[(t::GROUP, "hunting")]),
        Some(0.0),
        "{name}"
    );
    assert_eq!(
        after.counter(&before, t::STORE_FALLBACKS, &[]),
        0,
        "{name}: no store"
    );
}

#[test]
fn metrics_match_what_the_emulator_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this binary");
    t::describe();
    scripted_run::<AsyncDriver>(&snapshotter);
    scripted_run::<BlockingDriver>(&snapshotter);
}
