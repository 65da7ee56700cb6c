//! Streamed hunts taken an item at a time: a stream dropped early cancels its call and
//! settles its running time without hanging anyone; a slow consumer of a large result
//! gets every row once, in order, and is not cut off by the request timeout; the body is
//! read no further ahead of the consumer than the socket buffers hold; a body broken
//! before any row is retried without a second schema.

use std::time::Duration;

use defender_core::engine::{Call, StreamItem, Value};
use defender_core::hunting::{HuntRequest, Row};
use defender_core::{ApiGroup, Error, Limits, Surface};
use defender_policy::StandardPolicy;

use super::{hunt, Driver, Env, ItemStream};
use crate::firehose::Firehose;

/// An emulator with `process_rows` rows in `DeviceProcessEvents`, every row within the
/// 30-day lookback, enforcing `limits`; and a client of it enforcing the same.
fn stream_env<D: Driver>(limits: &str, process_rows: usize) -> (Env, D) {
    let limits = Limits::parse(limits).expect("a valid spec");
    let env = Env::start(|b| {
        b.limits(limits.clone())
            .rows_per_table(50)
            .span_days(20)
            .table_rows("DeviceProcessEvents", process_rows)
            .incidents(5)
            .seed(11)
    });
    let d = D::connect(&env.spec(Surface::DefenderXdr, limits), &env.rt);
    (env, d)
}

/// API requests the emulator answered (token requests not counted).
pub(super) fn api_requests(env: &Env) -> u64 {
    env.stats().keys.iter().map(|k| k.requests).sum()
}

/// The hunting group's usage: running time reserved, calls active, running time charged
/// in the widest window.
pub(super) fn hunting_usage<D: Driver>(d: &D) -> (Duration, usize, Duration) {
    let usage = d.quota().expect("usage");
    let hunting = usage
        .iter()
        .find(|u| u.group == ApiGroup::Hunting)
        .expect("a hunting group");
    let charged = hunting
        .runtime
        .iter()
        .map(|(_, d)| *d)
        .max()
        .unwrap_or_default();
    (hunting.runtime_reserved, hunting.active_calls, charged)
}

fn row_of(item: Result<StreamItem, Error>) -> Option<Row> {
    match item.expect("no error") {
        StreamItem::Row(r) => Some(r),
        StreamItem::Schema(_) => None,
    }
}

/// The rows of a buffered hunt.
fn hunted_rows<D: Driver>(d: &D, query: &str) -> usize {
    match d.call(hunt(query)) {
        Ok(Value::Hunt(r)) => r.rows.len(),
        other => panic!("{}: a hunt: {other:?}", D::NAME),
    }
}

/// A runtime beside a server that needs none (the async client runs on it).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

/// A client of the firehose at `limits`, as `tune` adjusts its spec.
fn firehose_client<D: Driver>(
    server: &Firehose,
    rt: &tokio::runtime::Runtime,
    limits: &str,
    tune: impl FnOnce(&mut super::ClientSpec),
) -> D {
    let mut spec = super::ClientSpec {
        surface: Surface::DefenderXdr,
        base_url: server.base_url(),
        limits: Limits::parse(limits).expect("a valid spec"),
        policy: StandardPolicy::standard(),
        secret: "firehose".to_owned(),
        max_body_bytes: None,
        tokens: super::Tokens::Secret,
        store: super::Store::Local,
        timeout: None,
        anonymous: false,
    };
    tune(&mut spec);
    D::connect(&spec, rt)
}

/// A stream dropped before its first item sends nothing and holds nothing.
pub fn a_stream_dropped_before_its_first_item_sends_nothing<D: Driver>() {
    let (env, d) = stream_env::<D>("2021", 200);
    assert_eq!(hunted_rows(&d, "DeviceProcessEvents | take 1"), 1);
    let before = api_requests(&env);
    drop(d.open_stream("DeviceProcessEvents | take 5"));
    assert_eq!(api_requests(&env), before, "{}: nothing sent", D::NAME);
    let (reserved, active, _) = hunting_usage(&d);
    assert_eq!((reserved, active), (Duration::ZERO, 0), "{}", D::NAME);
}

/// A stream dropped mid-body cancels its call: its reservation is given back, the
/// running time of the cut-short query charged, and the client (which served other
/// callers while the stream was open) goes on, buffered and streamed.
pub fn a_stream_dropped_early_cancels_its_call_and_settles_its_running_time<D: Driver>() {
    let (_env, d) = stream_env::<D>("2021", 30_000);

    let mut stream = d.open_stream(
        "DeviceProcessEvents | project ReportId, Timestamp, DeviceName, ProcessCommandLine | take 30000",
    );
    let first: Vec<_> = stream.by_ref().take(11).collect();
    assert!(
        matches!(first[0], Ok(StreamItem::Schema(_))),
        "{}: the schema first",
        D::NAME
    );
    assert_eq!(first.into_iter().filter_map(row_of).count(), 10);
    let (reserved, active, _) = hunting_usage(&d);
    assert!(
        reserved > Duration::ZERO,
        "{}: the open stream holds a reservation",
        D::NAME
    );
    assert_eq!(active, 1, "{}", D::NAME);

    // Other callers work on the same client while the stream is open mid-body.
    let other = {
        let d = d.clone();
        std::thread::spawn(move || {
            for _ in 0..3 {
                assert_eq!(hunted_rows(&d, "DeviceNetworkEvents | take 2"), 2);
            }
        })
    };
    other.join().expect("the other caller did not panic");
    drop(stream);

    let (reserved, active, charged) = hunting_usage(&d);
    assert_eq!(
        reserved,
        Duration::ZERO,
        "{}: no reservation left behind",
        D::NAME
    );
    assert_eq!(active, 0, "{}: no call left behind", D::NAME);
    assert!(
        charged > Duration::ZERO,
        "{}: the cut-short query was charged",
        D::NAME
    );

    // The client still works, buffered and streamed.
    assert_eq!(hunted_rows(&d, "DeviceProcessEvents | take 3"), 3);
    let mut stream = d.open_stream("DeviceProcessEvents | take 4");
    assert_eq!(stream.by_ref().filter_map(row_of).count(), 4);
    assert_eq!(stream.summary().expect("a summary").rows, 4);
}

/// A slow consumer of 100,000 rows gets each once, in order, after one schema; the
/// stream stays ended; the summary says what came; nothing is left held.
pub fn a_slow_consumer_gets_every_row_of_a_large_result_once_in_order<D: Driver>() {
    const ROWS: usize = 100_000;
    let (_env, d) = stream_env::<D>("2021,hunting.rows=200000", ROWS);
    let mut stream = d.open_stream(
        "DeviceProcessEvents | project ReportId, Timestamp, DeviceName, ProcessCommandLine \
         | sort by ReportId asc | take 100000",
    );
    let mut schema = None;
    let mut next = 0usize;
    let mut last_id: Option<i64> = None;
    for item in stream.by_ref() {
        match item.expect("no error") {
            StreamItem::Schema(s) => {
                assert!(schema.is_none(), "{}: one schema", D::NAME);
                assert_eq!(next, 0, "{}: the schema before the rows", D::NAME);
                schema = Some(s);
            }
            StreamItem::Row(row) => {
                // `ReportId`s are distinct (generated rows 10000 + 8 i + (0..8), the planted
                // stories' rows above them): sorted ascending, each must exceed the last,
                // so no row comes twice or out of place.
                let id = row["ReportId"].as_i64().expect("a ReportId");
                assert!(
                    last_id.is_none_or(|l| id > l),
                    "row {next} in place: {id} after {last_id:?}"
                );
                last_id = Some(id);
                next += 1;
                if next % 5_000 == 0 {
                    // A slow consumer: the body waits for it.
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
    assert_eq!(next, ROWS, "{}", D::NAME);
    assert!(stream.next().is_none(), "{}: it stays ended", D::NAME);
    let summary = stream.summary().expect("a summary after success");
    assert_eq!(summary.rows, ROWS as u64);
    assert!(!summary.truncated);
    assert_eq!(summary.row_cap, Some(200_000));
    assert!(summary.schema.iter().any(|c| c.name == "ReportId"));
    let (reserved, active, _) = hunting_usage(&d);
    assert_eq!((reserved, active), (Duration::ZERO, 0), "{}", D::NAME);
}

/// 256 MiB of rows, far more than any socket buffer (and than the body size limit,
/// which streamed bodies are not held to): while the consumer holds 100 rows, the client
/// reads no further than the sockets buffer; dropped, it closes the connection.
pub fn a_stream_reads_no_further_ahead_than_the_socket_buffers<D: Driver>() {
    const ROWS: u64 = 1 << 20;
    let rt = runtime();
    let server = Firehose::start(ROWS, false);
    let d: D = firehose_client(
        &server,
        &rt,
        "2021,hunting.runtime=none,hunting.rows=none",
        |s| s.max_body_bytes = Some(1024 * 1024),
    );
    let mut stream = d.open_stream("Firehose");
    let rows: Vec<_> = stream.by_ref().take(101).filter_map(row_of).collect();
    assert_eq!(rows.len(), 100, "{}", D::NAME);
    assert_eq!(rows[99]["N"].as_i64(), Some(99));
    // The consumer pauses: a client that read ahead would now fill its memory.
    std::thread::sleep(Duration::from_millis(300));
    let written = server.written();
    assert!(
        written < 64 * 1024 * 1024,
        "{}: {written} bytes written while the consumer held 100 rows",
        D::NAME
    );
    drop(stream);
    assert!(
        !server.next_ended(),
        "{}: the connection closed on drop; the rest of the body was not read",
        D::NAME
    );
    let (reserved, active, _) = hunting_usage(&d);
    assert_eq!((reserved, active), (Duration::ZERO, 0), "{}", D::NAME);
}

/// The request timeout bounds each read of a streamed body, not the whole body: a
/// consumer that pauses longer than it mid-body gets every row.
pub fn a_consumer_slower_than_the_request_timeout_is_not_cut_off<D: Driver>() {
    // 4 MiB: the body is still arriving when the consumer pauses.
    const ROWS: u64 = 1 << 14;
    let rt = runtime();
    let server = Firehose::start(ROWS, false);
    let d: D = firehose_client(
        &server,
        &rt,
        "2021,hunting.runtime=none,hunting.rows=none",
        |s| s.policy = StandardPolicy::standard().with_request_timeout(Duration::from_secs(1)),
    );
    let mut stream = d.open_stream("Firehose");
    let mut n = 0i64;
    for item in stream.by_ref() {
        if let Some(row) = row_of(item) {
            assert_eq!(row["N"].as_i64(), Some(n), "{}", D::NAME);
            n += 1;
            if n == 100 {
                // Longer than the timeout, which bounds each read, not the whole body.
                std::thread::sleep(Duration::from_secs(2));
            }
        }
    }
    assert_eq!(n, ROWS as i64, "{}", D::NAME);
    assert_eq!(stream.summary().expect("a summary").rows, ROWS);
    assert!(server.next_ended(), "{}: whole", D::NAME);
}

/// A body cut right after its schema is retried; the schema is handed out once, though
/// both bodies had it, then every row.
pub fn a_body_broken_before_any_row_is_retried_without_a_second_schema<D: Driver>() {
    let rt = runtime();
    let server = Firehose::start(1_000, true);
    let d: D = firehose_client(&server, &rt, "2021", |s| {
        s.policy =
            StandardPolicy::standard().backoff(Duration::from_millis(1), Duration::from_millis(5))
    });
    let mut stream = d.open_stream("Firehose");
    let items: Vec<_> = stream
        .by_ref()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{}: retried, then whole: {e}", D::NAME));
    let schemas = items
        .iter()
        .filter(|i| matches!(i, StreamItem::Schema(_)))
        .count();
    assert_eq!(
        schemas,
        1,
        "{}: the schema once, though both bodies had it",
        D::NAME
    );
    assert!(matches!(items[0], StreamItem::Schema(_)));
    let ns: Vec<i64> = items
        .iter()
        .filter_map(|i| match i {
            StreamItem::Row(r) => r["N"].as_i64(),
            StreamItem::Schema(_) => None,
        })
        .collect();
    assert_eq!(ns, (0..1_000).collect::<Vec<_>>(), "{}", D::NAME);
    assert!(!server.next_ended(), "{}: cut short", D::NAME);
    assert!(server.next_ended(), "{}: whole", D::NAME);
    assert_eq!(stream.summary().expect("a summary").rows, 1_000);
}

/// A streamed hunt made as a call gives its summary, and holds nothing after.
pub fn a_streamed_call_gives_its_summary<D: Driver>() {
    let (_env, d) = stream_env::<D>("2021", 500);
    let call = Call::HuntStream(HuntRequest::new("DeviceProcessEvents | take 300"));
    match d.call(call) {
        Ok(Value::HuntStreamed(summary)) => assert_eq!(summary.rows, 300, "{}", D::NAME),
        other => panic!("{}: unexpected {other:?}", D::NAME),
    }
    let (reserved, active, _) = hunting_usage(&d);
    assert_eq!((reserved, active), (Duration::ZERO, 0), "{}", D::NAME);
}
