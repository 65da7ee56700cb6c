//! The calendar and the formats of `timefmt` against references far simpler than they
//! are: counting days one month at a time, reading back what was written, and
//! `httpdate`'s own HTTP-dates.

use std::time::{Duration, UNIX_EPOCH};

use defender_core::timefmt::{
    civil_from_days, days_from_civil, format_http_date, format_http_date_ms, format_rfc3339,
    format_timespan, parse_datetime_ticks, parse_rfc3339, parse_rfc3339_ms, parse_timespan,
    parse_timespan_ticks, write_rfc3339_ticks, write_timespan_ticks, Fraction, TICKS_PER_SEC,
};
use proptest::prelude::*;

/// Days since 1970-01-01, counted a year and then a month at a time.
fn reference_days(y: i64, m: u32, d: u32) -> i64 {
    let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let year_len = |y: i64| if leap(y) { 366 } else { 365 };
    let month_len = |y: i64, m: u32| match m {
        2 if leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    let mut days: i64 = 0;
    if y >= 1970 {
        days += (1970..y).map(year_len).sum::<i64>();
    } else {
        days -= (y..1970).map(year_len).sum::<i64>();
    }
    days += (1..m).map(|m| month_len(y, m)).sum::<i64>();
    days + i64::from(d) - 1
}

/// Every day from 0001-01-01 to 9999-12-31, walked one at a time: a calendar bug that
/// touches a single day in 400 years (a sampled test would miss it) fails here.
#[test]
fn every_day_of_years_1_to_9999() {
    let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let (mut y, mut m, mut d) = (1i64, 1u32, 1u32);
    let mut z = reference_days(1, 1, 1);
    while y <= 9999 {
        assert_eq!(civil_from_days(z), (y, m, d), "day {z}");
        assert_eq!(days_from_civil(y, m, d), z, "{y}-{m}-{d}");
        let len = match m {
            2 if leap(y) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        (y, m, d) = match (d == len, m == 12) {
            (false, _) => (y, m, d + 1),
            (true, false) => (y, m + 1, 1),
            (true, true) => (y + 1, 1, 1),
        };
        z += 1;
    }
    assert_eq!(z, reference_days(10_000, 1, 1));
}

fn date() -> impl Strategy<Value = (i64, u32, u32)> {
    (1i64..=9999, 1u32..=12, 1u32..=31).prop_filter_map("a real date", |(y, m, d)| {
        let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let len = match m {
            2 if leap => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        (d <= len).then_some((y, m, d))
    })
}

/// Ticks from 0001-01-01 to 9999-12-31T23:59:59.9999999.
const FIRST_TICK: i64 = -62_135_596_800 * TICKS_PER_SEC;
const LAST_TICK: i64 = 253_402_300_800 * TICKS_PER_SEC - 1;

proptest! {
    #[test]
    fn civil_arithmetic_counts_days((y, m, d) in date()) {
        let days = days_from_civil(y, m, d);
        prop_assert_eq!(days, reference_days(y, m, d));
        prop_assert_eq!(civil_from_days(days), (y, m, d));
    }

    #[test]
    fn the_next_day_is_the_next_date(days in -719_162i64..2_932_896) {
        let (y, m, d) = civil_from_days(days);
        let (ny, nm, nd) = civil_from_days(days + 1);
        let next = if nd == 1 { (ny, nm) == if m == 12 { (y + 1, 1) } else { (y, m + 1) } }
            else { (ny, nm, nd) == (y, m, d + 1) };
        prop_assert!(next, "{:?} then {:?}", (y, m, d), (ny, nm, nd));
    }

    #[test]
    fn rfc3339_ticks_round_trip(ticks in FIRST_TICK..=LAST_TICK) {
        for f in [Fraction::Trimmed, Fraction::Ticks] {
            let mut s = String::new();
            write_rfc3339_ticks(&mut s, ticks, f);
            prop_assert_eq!(parse_datetime_ticks(&s), Some(ticks), "{}", s);
            let ms = ticks.div_euclid(TICKS_PER_SEC / 1000);
            prop_assert_eq!(parse_rfc3339_ms(&s), Some(ms), "{}", s);
        }
        let mut s = String::new();
        write_rfc3339_ticks(&mut s, ticks, Fraction::Millis);
        prop_assert_eq!(
            parse_datetime_ticks(&s),
            Some(ticks - ticks.rem_euclid(TICKS_PER_SEC / 1000))
        );
    }

    #[test]
    fn rfc3339_system_time_round_trip(secs in 0u64..253_402_300_800, ticks in 0u32..10_000_000) {
        let t = UNIX_EPOCH + Duration::new(secs, ticks * 100);
        prop_assert_eq!(parse_rfc3339(&format_rfc3339(t)), Some(t));
    }

    #[test]
    fn timespan_round_trip(ticks in -(1i64 << 62)..(1i64 << 62)) {
        for f in [Fraction::Trimmed, Fraction::Ticks] {
            let mut s = String::new();
            write_timespan_ticks(&mut s, ticks, f);
            prop_assert_eq!(parse_timespan_ticks(&s), Some(ticks), "{}", s);
        }
        let d = Duration::new(ticks.unsigned_abs() / 10_000_000, (ticks.unsigned_abs() % 10_000_000) as u32 * 100);
        prop_assert_eq!(parse_timespan(&format_timespan(d)), Some(d));
    }

    #[test]
    fn http_dates_agree_with_httpdate(ms in 0i64..253_402_300_800_000) {
        let t = UNIX_EPOCH + Duration::from_millis(ms as u64);
        prop_assert_eq!(format_http_date(t), httpdate_reference(ms));
        prop_assert_eq!(format_http_date_ms(ms), httpdate_reference(ms));
    }
}

/// The HTTP-date the calendar above writes: weekday from the day count (1970-01-01 was a
/// Thursday), date from `civil_from_days`.
fn httpdate_reference(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let secs = ms.rem_euclid(86_400_000) / 1000;
    let (y, m, d) = civil_from_days(days);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][days.rem_euclid(7) as usize];
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(m - 1) as usize];
    format!(
        "{weekday}, {d:02} {month} {y:04} {:02}:{:02}:{:02} GMT",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}
