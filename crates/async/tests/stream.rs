//! Streamed hunts (`Client::hunt_stream`), what only the async client has: the stream's
//! type, and a stream dropped after one poll, its request in flight. The rest of the
//! streaming tests are conformance scenarios both clients run (`defender-testkit`,
//! `conformance::streams`).

use std::time::Duration;

use defender_async::{Client, HuntStream};
use defender_core::{ApiGroup, Limits};
use defender_emulator::{
    Emulator, EmulatorHandle, DEFAULT_CLIENT_ID, DEFAULT_SECRET, DEFAULT_TENANT,
};
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

/// The hunting group's usage: running time reserved, calls active.
async fn hunting_usage(client: &Client) -> (Duration, usize) {
    let usage = client.quota().await.expect("usage");
    let hunting = usage
        .iter()
        .find(|u| u.group == ApiGroup::Hunting)
        .expect("a hunting group");
    (hunting.runtime_reserved, hunting.active_calls)
}

#[test]
fn a_stream_is_send_and_unpin() {
    fn check<T: Send + Unpin + futures_util::stream::FusedStream>() {}
    check::<HuntStream>();
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
    let mut stream = client.hunt_stream(
        "DeviceProcessEvents | project ReportId, Timestamp, DeviceName, ProcessCommandLine | take 30000",
    );
    // Polled once: the request is on its way, no item yet.
    assert!(stream.next().now_or_never().is_none());
    drop(stream);
    let (reserved, active) = hunting_usage(&client).await;
    assert_eq!((reserved, active), (Duration::ZERO, 0));
    let r = client
        .hunt("DeviceProcessEvents | take 3")
        .await
        .expect("a hunt after the drop");
    assert_eq!(r.rows.len(), 3);
}
