//! Ranged hunts (`Client::hunt_range`): a hunt dropped after its first window sends no
//! more windows, so no quota is spent on results nobody will read.

use std::time::{Duration, SystemTime};

use defender_async::{Client, RangeOptions, Split};
use defender_core::Limits;
use defender_emulator::{
    Emulator, EmulatorHandle, DEFAULT_CLIENT_ID, DEFAULT_SECRET, DEFAULT_TENANT,
};

/// One hunting call a second: the windows after the first wait in the client for quota.
const LIMITS: &str = "2021,hunting.calls=1/1s,hunting.runtime=none";

async fn emulator() -> EmulatorHandle {
    Emulator::builder()
        .limits(Limits::parse(LIMITS).expect("a valid spec"))
        .rows_per_table(50)
        .span_days(20)
        .incidents(5)
        .seed(11)
        .spawn()
        .await
        .expect("the emulator starts")
}

fn client(emulator: &EmulatorHandle) -> Client {
    let base = emulator.base_url();
    Client::builder()
        .tenant(DEFAULT_TENANT)
        .client_id(DEFAULT_CLIENT_ID)
        .client_secret(DEFAULT_SECRET)
        .base_url(&base)
        .login_url(&base)
        .limits(LIMITS)
        .expect("a valid spec")
        .build()
        .expect("the client builds")
}

/// Hunting calls the emulator received (admitted or not).
fn hunting_calls(emulator: &EmulatorHandle) -> u64 {
    let stats = emulator.stats();
    stats
        .keys
        .iter()
        .filter(|k| k.group == "hunting")
        .map(|k| k.requests)
        .sum()
}

/// Six windows, four at once: when the first is handed out, three more are waiting for
/// quota. Dropping the hunt then stops them: they are never sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_hunt_sends_no_more_windows() {
    let emu = emulator().await;
    let client = client(&emu);
    let now = SystemTime::now();
    let from = now - Duration::from_secs(3_600);
    let opts = RangeOptions {
        split: Split::Every(Duration::from_secs(600)),
        concurrency: 4,
        ..RangeOptions::default()
    };
    let query = "DeviceProcessEvents | where ReportId < 0";
    let mut hunt = client
        .hunt_range(query, from, now, Some(opts))
        .expect("the hunt starts");
    let first = hunt
        .next_window()
        .await
        .expect("a window")
        .expect("its rows");
    assert_eq!(first.start, from);
    let planned = hunt.progress().windows_total as u64;
    assert_eq!(planned, 6);
    drop(hunt);
    let at_drop = hunting_calls(&emu);
    // Long enough for the three waiting windows to have been admitted, one a second.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let later = hunting_calls(&emu);
    // One request may have been on the wire when the hunt was dropped; no more.
    assert!(
        later <= at_drop + 1 && later < planned,
        "{at_drop} hunting calls when the hunt was dropped, {later} after (of {planned} planned)"
    );
    // The client still works.
    let opts = RangeOptions {
        split: Split::Auto,
        ..opts
    };
    let mut again = client
        .hunt_range(query, from, now, Some(opts))
        .expect("the hunt starts");
    let w = again.next_window().await.expect("a window");
    assert!(w.is_ok(), "{w:?}");
}
