//! Streamed hunts (`Client::hunt_stream`): a stream dropped early cancels its call and
//! settles its running time without hanging anyone; a slow consumer of a large result
//! gets every row once, in order, and is not cut off by the request timeout; and the
//! body is read no further ahead of the consumer than the socket buffers hold.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use defender_async::{Client, ClientBuilder, HuntStream, StreamItem};
use defender_core::{ApiGroup, Limits};
use defender_emulator::{
    Emulator, EmulatorHandle, DEFAULT_CLIENT_ID, DEFAULT_SECRET, DEFAULT_TENANT,
};
use defender_policy::StandardPolicy;
use futures_util::{FutureExt, StreamExt};

async fn emulator(limits: &str, process_rows: usize) -> EmulatorHandle {
    Emulator::builder()
        .limits(Limits::parse(limits).expect("a valid spec"))
        .rows_per_table(50)
        // Every row within the 30-day lookback.
        .span_days(20)
        .table_rows("DeviceProcessEvents", process_rows)
        .incidents(5)
        .seed(11)
        .spawn()
        .await
        .expect("the emulator starts")
}

fn client(emulator: &EmulatorHandle, limits: &str) -> Client {
    let base = emulator.base_url();
    Client::builder()
        .tenant(DEFAULT_TENANT)
        .client_id(DEFAULT_CLIENT_ID)
        .client_secret(DEFAULT_SECRET)
        .base_url(&base)
        .login_url(&base)
        .limits(limits)
        .expect("a valid spec")
        .build()
        .expect("the client builds")
}

fn api_requests(emulator: &EmulatorHandle) -> u64 {
    emulator.stats().keys.iter().map(|k| k.requests).sum()
}

/// The hunting group's usage: running time reserved, calls active, running time charged
/// in the widest window.
async fn hunting_usage(client: &Client) -> (Duration, usize, Duration) {
    let usage = client.quota().await.expect("usage");
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

fn row_of(item: Result<StreamItem, defender_core::Error>) -> Option<defender_core::hunting::Row> {
    match item.expect("no error") {
        StreamItem::Row(r) => Some(r),
        StreamItem::Schema(_) => None,
    }
}

/// Rows of a stream, until its end.
async fn rows(stream: &mut HuntStream) -> Vec<defender_core::hunting::Row> {
    let mut rows = Vec::new();
    while let Some(item) = stream.next().await {
        rows.extend(row_of(item));
    }
    rows
}

#[test]
fn a_stream_is_send_and_unpin() {
    fn check<T: Send + Unpin + futures_util::stream::FusedStream>() {}
    check::<HuntStream>();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_dropped_before_its_first_item_sends_nothing() {
    let emu = emulator("2021", 200).await;
    let client = client(&emu, "2021");
    client
        .hunt("DeviceProcessEvents | take 1")
        .await
        .expect("a hunt");
    let before = api_requests(&emu);
    drop(client.hunt_stream("DeviceProcessEvents | take 5"));
    assert_eq!(api_requests(&emu), before, "nothing sent");
    let (reserved, active, _) = hunting_usage(&client).await;
    assert_eq!((reserved, active), (Duration::ZERO, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_dropped_early_cancels_its_call_and_settles_its_running_time() {
    let emu = emulator("2021", 30_000).await;
    let client = client(&emu, "2021");

    let mut stream = client.hunt_stream("DeviceProcessEvents | take 30000");
    let first: Vec<_> = stream.by_ref().take(11).collect().await;
    assert!(
        matches!(first[0], Ok(StreamItem::Schema(_))),
        "the schema first"
    );
    assert_eq!(first.into_iter().filter_map(row_of).count(), 10);
    let (reserved, active, _) = hunting_usage(&client).await;
    assert!(
        reserved > Duration::ZERO,
        "the open stream holds a reservation"
    );
    assert_eq!(active, 1);

    // Other callers work on the same client while the stream is open mid-body.
    let other = {
        let client = client.clone();
        tokio::spawn(async move {
            for _ in 0..3 {
                let r = client
                    .hunt("DeviceNetworkEvents | take 2")
                    .await
                    .expect("the other caller's hunt");
                assert_eq!(r.rows.len(), 2);
            }
        })
    };
    other.await.expect("the other caller did not panic");
    drop(stream);

    let (reserved, active, charged) = hunting_usage(&client).await;
    assert_eq!(reserved, Duration::ZERO, "no reservation left behind");
    assert_eq!(active, 0, "no call left behind");
    assert!(charged > Duration::ZERO, "the cut-short query was charged");

    // The client still works, buffered and streamed.
    let r = client
        .hunt("DeviceProcessEvents | take 3")
        .await
        .expect("a hunt after the drop");
    assert_eq!(r.rows.len(), 3);
    let mut stream = client.hunt_stream("DeviceProcessEvents | take 4");
    assert_eq!(rows(&mut stream).await.len(), 4);
    assert_eq!(stream.summary().expect("a summary").rows, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_dropped_while_its_request_is_in_flight_settles() {
    let emu = emulator("2021", 30_000).await;
    let client = client(&emu, "2021");
    // A token first, so the stream's first poll sends its request.
    client
        .hunt("DeviceProcessEvents | take 1")
        .await
        .expect("a hunt");
    let mut stream = client.hunt_stream("DeviceProcessEvents | take 30000");
    // Polled once: the request is on its way, no item yet.
    assert!(stream.next().now_or_never().is_none());
    drop(stream);
    let (reserved, active, _) = hunting_usage(&client).await;
    assert_eq!((reserved, active), (Duration::ZERO, 0));
    let r = client
        .hunt("DeviceProcessEvents | take 3")
        .await
        .expect("a hunt after the drop");
    assert_eq!(r.rows.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_gets_every_row_of_a_large_result_once_in_order() {
    const ROWS: usize = 100_000;
    let limits = "2021,hunting.rows=200000";
    let emu = emulator(limits, ROWS).await;
    let client = client(&emu, limits);
    let mut stream = client.hunt_stream("DeviceProcessEvents | sort by ReportId asc | take 100000");
    let mut schema = None;
    let mut next = 0usize;
    while let Some(item) = stream.next().await {
        match item.expect("no error") {
            StreamItem::Schema(s) => {
                assert!(schema.is_none(), "one schema");
                assert_eq!(next, 0, "the schema before the rows");
                schema = Some(s);
            }
            StreamItem::Row(row) => {
                // The emulator's `ReportId` of the table's row i is 10000 + 8 i + (0..8):
                // in ascending order, row i must be the table's row i.
                let id = row["ReportId"].as_i64().expect("a ReportId");
                assert_eq!((id - 10_000) / 8, next as i64, "row {next} in place");
                next += 1;
                if next % 5_000 == 0 {
                    // A slow consumer: the body waits for it.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
    assert_eq!(next, ROWS);
    assert!(stream.next().await.is_none(), "it stays ended");
    let summary = stream.summary().expect("a summary after success");
    assert_eq!(summary.rows, ROWS as u64);
    assert!(!summary.truncated);
    assert_eq!(summary.row_cap, Some(200_000));
    assert!(summary.schema.iter().any(|c| c.name == "ReportId"));
    let (reserved, active, _) = hunting_usage(&client).await;
    assert_eq!((reserved, active), (Duration::ZERO, 0));
}

/// A server whose hunting body is `rows` rows of 256 bytes, written as fast as the
/// socket takes them; it counts the bytes written.
struct Firehose {
    base: String,
    written: Arc<AtomicU64>,
    /// For each hunting request: whether its whole body was written.
    ended: mpsc::Receiver<bool>,
}

const ROW_BYTES: usize = 256;

impl Firehose {
    /// With `cut_first`, the first hunting body ends right after the schema (its
    /// `Content-Length` promised all rows); later ones are whole.
    fn start(rows: u64, cut_first: bool) -> Firehose {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a local port");
        let base = format!("http://{}", listener.local_addr().expect("an address"));
        let written = Arc::new(AtomicU64::new(0));
        let counter = written.clone();
        let (tx, ended) = mpsc::channel();
        let hunts = Arc::new(AtomicU64::new(0));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let (counter, tx, hunts) = (counter.clone(), tx.clone(), hunts.clone());
                std::thread::spawn(move || {
                    let cut = cut_first.then_some(&*hunts);
                    if let Some(whole) = firehose(conn, rows, &counter, cut) {
                        let _ = tx.send(whole);
                    }
                });
            }
        });
        Firehose {
            base,
            written,
            ended,
        }
    }

    fn builder(&self) -> ClientBuilder {
        Client::builder()
            .tenant(DEFAULT_TENANT)
            .client_id(DEFAULT_CLIENT_ID)
            .client_secret("firehose")
            .base_url(&self.base)
            .login_url(&self.base)
    }

    /// Whether the next hunting body was written whole (blocks this worker thread).
    fn next_ended(&self) -> bool {
        tokio::task::block_in_place(|| self.ended.recv().expect("a hunt's answer ended"))
    }
}

/// Answers one request; for a hunt, whether its whole body was written.
fn firehose(
    conn: TcpStream,
    rows: u64,
    written: &AtomicU64,
    cut: Option<&AtomicU64>,
) -> Option<bool> {
    match answer(conn, rows, written, cut) {
        Ok(hunt) => hunt.then_some(true),
        Err(_) => Some(false),
    }
}

/// Ok(true) after a whole hunting body, Ok(false) after a token.
fn answer(
    conn: TcpStream,
    rows: u64,
    written: &AtomicU64,
    cut: Option<&AtomicU64>,
) -> std::io::Result<bool> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut length = 0;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header)?;
        if header.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = header.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut request = vec![0; length];
    reader.read_exact(&mut request)?;
    let mut out = conn;
    let head = |len: u64| {
        format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len}\r\nconnection: close\r\n\r\n")
    };
    if line.contains("/oauth2/v2.0/token") {
        let token = br#"{"access_token":"firehose","expires_in":3599}"#;
        out.write_all(head(token.len() as u64).as_bytes())?;
        out.write_all(token)?;
        return Ok(false);
    }
    let start =
        br#"{"Schema":[{"Name":"N","Type":"Int64"},{"Name":"Text","Type":"String"}],"Results":["#;
    let end = b"]}";
    // Every row is ROW_BYTES long: `{"N":<i, padded>,"Text":"xx..."}` and a comma.
    let row = |i: u64| {
        let text = "x".repeat(ROW_BYTES - 29);
        let mut r = format!(r#"{{"N":{i:<12},"Text":"{text}"}}"#);
        r.push(if i + 1 == rows { ' ' } else { ',' });
        assert_eq!(r.len(), ROW_BYTES);
        r
    };
    let total = start.len() as u64 + rows * ROW_BYTES as u64 + end.len() as u64;
    out.write_all(head(total).as_bytes())?;
    out.write_all(start)?;
    if cut.is_some_and(|hunts| hunts.fetch_add(1, Ordering::SeqCst) == 0) {
        return Err(std::io::ErrorKind::ConnectionAborted.into());
    }
    for i in 0..rows {
        out.write_all(row(i).as_bytes())?;
        written.fetch_add(ROW_BYTES as u64, Ordering::SeqCst);
    }
    out.write_all(end)?;
    Ok(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_reads_no_further_ahead_than_the_socket_buffers() {
    // 256 MiB of rows: far more than any socket buffer (and than the body size limit,
    // which streamed bodies are not held to).
    const ROWS: u64 = 1 << 20;
    let server = Firehose::start(ROWS, false);
    let client = server
        .builder()
        .limits("2021,hunting.runtime=none,hunting.rows=none")
        .expect("a valid spec")
        .max_body_bytes(1024 * 1024)
        .build()
        .expect("the client builds");
    let mut stream = client.hunt_stream("Firehose");
    let rows: Vec<_> = stream
        .by_ref()
        .take(101)
        .filter_map(|item| async { row_of(item) })
        .collect()
        .await;
    assert_eq!(rows.len(), 100);
    assert_eq!(rows[99]["N"].as_i64(), Some(99));
    // The consumer pauses: a client that read ahead would now fill its memory.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let written = server.written.load(Ordering::SeqCst);
    assert!(
        written < 64 * 1024 * 1024,
        "{written} bytes written while the consumer held 100 rows"
    );
    drop(stream);
    assert!(
        !server.next_ended(),
        "the connection closed on drop; the rest of the body was not read"
    );
    let (reserved, active, _) = hunting_usage(&client).await;
    assert_eq!((reserved, active), (Duration::ZERO, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_slower_than_the_request_timeout_is_not_cut_off() {
    // 4 MiB: the body is still arriving when the consumer pauses.
    const ROWS: u64 = 1 << 14;
    let server = Firehose::start(ROWS, false);
    let client = server
        .builder()
        .limits("2021,hunting.runtime=none,hunting.rows=none")
        .expect("a valid spec")
        .policy(StandardPolicy::standard().with_request_timeout(Duration::from_secs(1)))
        .build()
        .expect("the client builds");
    let mut stream = client.hunt_stream("Firehose");
    let mut n = 0i64;
    while let Some(item) = stream.next().await {
        if let Some(row) = row_of(item) {
            assert_eq!(row["N"].as_i64(), Some(n));
            n += 1;
            if n == 100 {
                // Longer than the timeout, which bounds each read, not the whole body.
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
    assert_eq!(n, ROWS as i64);
    assert_eq!(stream.summary().expect("a summary").rows, ROWS);
    assert!(server.next_ended(), "whole");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_broken_before_any_row_is_retried_without_a_second_schema() {
    let server = Firehose::start(1_000, true);
    let client = server
        .builder()
        .limits("2021")
        .expect("a valid spec")
        .policy(
            StandardPolicy::standard().backoff(Duration::from_millis(1), Duration::from_millis(5)),
        )
        .build()
        .expect("the client builds");
    let mut stream = client.hunt_stream("Firehose");
    let mut items = Vec::new();
    while let Some(item) = stream.next().await {
        items.push(item.expect("retried, then whole"));
    }
    let schemas = items
        .iter()
        .filter(|i| matches!(i, StreamItem::Schema(_)))
        .count();
    assert_eq!(schemas, 1, "the schema once, though both bodies had it");
    assert!(matches!(items[0], StreamItem::Schema(_)));
    let ns: Vec<i64> = items
        .iter()
        .filter_map(|i| match i {
            StreamItem::Row(r) => r["N"].as_i64(),
            StreamItem::Schema(_) => None,
        })
        .collect();
    assert_eq!(ns, (0..1_000).collect::<Vec<_>>());
    assert!(!server.next_ended(), "cut short");
    assert!(server.next_ended(), "whole");
    assert_eq!(stream.summary().expect("a summary").rows, 1_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_call_gives_its_summary() {
    let emu = emulator("2021", 500).await;
    let client = client(&emu, "2021");
    let call = defender_core::engine::Call::HuntStream(defender_core::hunting::HuntRequest::new(
        "DeviceProcessEvents | take 300",
    ));
    match client.call(call).await.expect("the call") {
        defender_core::engine::Value::HuntStreamed(summary) => assert_eq!(summary.rows, 300),
        other => panic!("unexpected {other:?}"),
    }
    let (reserved, active, _) = hunting_usage(&client).await;
    assert_eq!((reserved, active), (Duration::ZERO, 0));
}
