//! A ranged hunt dropped after its first window sends no more windows, so no quota is
//! spent on results nobody will read.

use std::time::{Duration, SystemTime};

use defender_core::range::{RangeOptions, Split};
use defender_core::{Limits, Surface};

use super::{Driver, Env, WindowStream};

/// Six windows, four at once, one hunting call a second: when the first is handed out,
/// three more are waiting in the client for quota. Dropping the hunt then stops them:
/// they are never sent (one may have been on the wire), and the client still works.
pub fn a_dropped_hunt_sends_no_more_windows<D: Driver>() {
    let limits = Limits::parse("2021,hunting.calls=1/1s,hunting.runtime=none").expect("spec");
    let env = Env::start(|b| {
        b.limits(limits.clone())
            .rows_per_table(50)
            .span_days(20)
            .incidents(5)
            .seed(11)
    });
    let d = D::connect(&env.spec(Surface::DefenderXdr, limits), &env.rt);
    // Hunting calls the emulator received (admitted or not).
    let hunting_calls = || -> u64 {
        env.stats()
            .keys
            .iter()
            .filter(|k| k.group == "hunting")
            .map(|k| k.requests)
            .sum()
    };
    let now = SystemTime::now();
    let from = now - Duration::from_secs(3_600);
    let opts = RangeOptions {
        split: Split::Every(Duration::from_secs(600)),
        concurrency: 4,
        ..RangeOptions::default()
    };
    let query = "DeviceProcessEvents | where ReportId < 0";
    let mut hunt = d
        .open_range(query, from, now, opts)
        .expect("the hunt starts");
    let first = hunt.next().expect("a window").expect("its rows");
    assert_eq!(first.start, from, "{}", D::NAME);
    let planned = hunt.progress().windows_total as u64;
    assert_eq!(planned, 6, "{}", D::NAME);
    drop(hunt);
    let at_drop = hunting_calls();
    // Long enough for the three waiting windows to have been admitted, one a second.
    std::thread::sleep(Duration::from_secs(5));
    let later = hunting_calls();
    // One request may have been on the wire when the hunt was dropped; no more.
    assert!(
        later <= at_drop + 1 && later < planned,
        "{}: {at_drop} hunting calls when the hunt was dropped, {later} after (of {planned} planned)",
        D::NAME
    );
    // The client still works, and its quota was given back by the cancelled windows.
    let opts = RangeOptions {
        split: Split::Auto,
        ..opts
    };
    let w = d
        .open_range(query, from, now, opts)
        .expect("the hunt starts")
        .next()
        .expect("a window");
    assert!(w.is_ok(), "{}: {w:?}", D::NAME);
}
