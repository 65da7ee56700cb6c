//! Ranged hunts (`Client::hunt_range`): a hunt dropped after its first window sends no
//! more windows, so no quota is spent on results nobody will read.

use std::time::{Duration, Instant, SystemTime};

use defender_blocking::{Client, RangeOptions, Split};
use defender_core::Limits;
use defender_emulator::{
    Emulator, EmulatorHandle, DEFAULT_CLIENT_ID, DEFAULT_SECRET, DEFAULT_TENANT,
};

/// One hunting call a second: the windows after the first wait in the client for quota.
const LIMITS: &str = "2021,hunting.calls=1/1s,hunting.runtime=none";

/// An emulator on its own runtime (dropped first: it stops with its handle).
struct Env {
    emulator: EmulatorHandle,
    _rt: tokio::runtime::Runtime,
}

impl Env {
    fn start() -> Env {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let emulator = rt
            .block_on(
                Emulator::builder()
                    .limits(Limits::parse(LIMITS).expect("a valid spec"))
                    .rows_per_table(50)
                    .span_days(20)
                    .incidents(5)
                    .seed(11)
                    .spawn(),
            )
            .expect("the emulator starts");
        Env { emulator, _rt: rt }
    }

    fn client(&self) -> Client {
        let base = self.emulator.base_url();
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
    fn hunting_calls(&self) -> u64 {
        let stats = self.emulator.stats();
        stats
            .keys
            .iter()
            .filter(|k| k.group == "hunting")
            .map(|k| k.requests)
            .sum()
    }
}

/// Six windows, four at once: when the first is handed out, three more are waiting for
/// quota. Dropping the hunt then stops them: they are never sent.
#[test]
fn a_dropped_hunt_sends_no_more_windows() {
    let env = Env::start();
    let client = env.client();
    let now = SystemTime::now();
    let from = now - Duration::from_secs(3_600);
    let opts = RangeOptions {
        split: Split::Every(Duration::from_secs(600)),
        concurrency: 4,
        ..RangeOptions::default()
    };
    let mut hunt = client
        .hunt_range(
            "DeviceProcessEvents | where ReportId < 0",
            from,
            now,
            Some(opts),
        )
        .expect("the hunt starts");
    let first = hunt.next().expect("a window").expect("its rows");
    assert_eq!(first.start, from);
    let planned = hunt.progress().windows_total as u64;
    assert_eq!(planned, 6);
    drop(hunt);
    let at_drop = env.hunting_calls();
    // Long enough for the three waiting windows to have been admitted, one a second.
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(250));
    }
    let later = env.hunting_calls();
    // One request may have been on the wire when the hunt was dropped; no more.
    assert!(
        later <= at_drop + 1 && later < planned,
        "{at_drop} hunting calls when the hunt was dropped, {later} after (of {planned} planned)"
    );
    // The client still works, and its quota was given back by the cancelled windows.
    let again = client
        .hunt_range(
            "DeviceProcessEvents | where ReportId < 0",
            from,
            now,
            Some(RangeOptions {
                split: Split::Auto,
                ..opts
            }),
        )
        .expect("the hunt starts")
        .next()
        .expect("a window");
    assert!(again.is_ok(), "{again:?}");
}
