//! Every date and time rule of the workspace, in one place: RFC 3339 / ISO 8601 UTC
//! timestamps as the APIs write them (`2024-02-01T08:00:00Z`,
//! `2020-08-30T06:38:35.7664356Z`), the .NET TimeSpan (`1.02:03:04.5000000`), ISO 8601
//! durations (`P7D`), HTTP-dates, and the proleptic Gregorian calendar under them.
//!
//! Three callers count time three ways, so each rule takes the one it needs: the clients a
//! [`SystemTime`], the emulator unix milliseconds (`*_ms`), the KQL engine 100 ns ticks
//! since the Unix epoch, as .NET and Kusto do (`*_ticks`, [`TICKS_PER_SEC`]). The calendar
//! arithmetic is written by hand (Howard Hinnant's `days_from_civil`) and checked against
//! counting days one by one; HTTP-dates are [`httpdate`]'s.
//!
//! ```
//! use defender_core::timefmt::{format_rfc3339, parse_rfc3339};
//! use std::time::{Duration, UNIX_EPOCH};
//! let t = UNIX_EPOCH + Duration::from_secs(1_706_774_400);
//! assert_eq!(format_rfc3339(t), "2024-02-01T08:00:00Z");
//! assert_eq!(parse_rfc3339("2024-02-01T08:00:00Z"), Some(t));
//! assert_eq!(parse_rfc3339("2024-02-01"), Some(t - Duration::from_secs(8 * 3600)));
//! ```

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// 100 ns ticks in a second: the resolution of .NET's `DateTime` and Kusto's `datetime`.
pub const TICKS_PER_SEC: i64 = 10_000_000;
/// 100 ns ticks in a millisecond.
pub const TICKS_PER_MS: i64 = 10_000;
/// 100 ns ticks in a day.
pub const TICKS_PER_DAY: i64 = 86_400 * TICKS_PER_SEC;

/// How many digits of a fraction of a second a formatter writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fraction {
    /// Up to 7 (100 ns), without trailing zeros, none when zero: `08:00:00.5`, `08:00:00`.
    Trimmed,
    /// Always 3: `08:00:00.500`, `08:00:00.000` (what the emulator's JSON shows).
    Millis,
    /// 7 when not zero, none when zero: `00:00:01.5000000`, `00:00:01` (.NET's `c` format).
    Ticks,
}

/// Formats a wall-clock time as `YYYY-MM-DDTHH:MM:SS[.fffffff]Z` (fraction only when not
/// zero, to 100 ns like .NET). Times before 1970 are written as the epoch.
pub fn format_rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut out = String::with_capacity(28);
    write_rfc3339_parts(
        &mut out,
        d.as_secs() as i64,
        d.subsec_nanos() / 100,
        Fraction::Trimmed,
    );
    out
}

/// Formats unix milliseconds as `2024-01-02T03:04:05.678Z` (always with milliseconds).
pub fn format_rfc3339_ms(unix_ms: i64) -> String {
    let mut out = String::with_capacity(24);
    write_rfc3339_parts(
        &mut out,
        unix_ms.div_euclid(1000),
        (unix_ms.rem_euclid(1000) * TICKS_PER_MS) as u32,
        Fraction::Millis,
    );
    out
}

/// Writes 100 ns ticks since the Unix epoch (negative before 1970) as
/// `YYYY-MM-DDTHH:MM:SS[.f]Z`.
pub fn write_rfc3339_ticks(out: &mut String, ticks: i64, fraction: Fraction) {
    write_rfc3339_parts(
        out,
        ticks.div_euclid(TICKS_PER_SEC),
        ticks.rem_euclid(TICKS_PER_SEC) as u32,
        fraction,
    );
}

/// Parses `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM[:SS[.f+]]` with `Z`, `+HH:MM`, `+HHMM`, `+HH` or
/// no zone (UTC), also with a space or `t` instead of `T`. A second of 60 (a leap second)
/// is the first of the next minute. `None` for anything else or before 1970.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    if s.trim().len() > 40 {
        return None;
    }
    let p = Timestamp::parse(s).filter(Timestamp::is_rfc3339)?;
    let secs = u64::try_from(p.secs).ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, p.nanos))
}

/// [`parse_rfc3339`] to unix milliseconds (the fraction cut to them); before 1970 is fine.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let p = Timestamp::parse(s).filter(Timestamp::is_rfc3339)?;
    Some(p.secs * 1000 + i64::from(p.nanos / 1_000_000))
}

/// Parses what Kusto's `datetime(..)` documents in ISO 8601 form: `2024-01-01`,
/// `2024-01-01T08:00`, `2024-01-01 08:00:00`, a fraction of up to 7 digits, an optional
/// trailing `Z`; no offsets, no leap second. Returns 100 ns ticks since the Unix epoch.
pub fn parse_datetime_ticks(s: &str) -> Option<i64> {
    let p = Timestamp::parse(s)?;
    let plain = !p.offset && !p.lower_case && !p.leap_second && p.fraction_digits <= 7;
    plain.then(|| p.secs * TICKS_PER_SEC + i64::from(p.nanos / 100))
}

/// Formats a duration as a .NET TimeSpan: `hh:mm:ss`, with `d.` for days and
/// `.fffffff` when there is a fraction of a second (`00:01:00`, `1.00:00:00`).
pub fn format_timespan(d: Duration) -> String {
    let mut out = String::with_capacity(16);
    write_timespan_parts(
        &mut out,
        false,
        d.as_secs(),
        d.subsec_nanos() / 100,
        Fraction::Ticks,
    );
    out
}

/// Writes signed 100 ns ticks as a TimeSpan: `[-][d.]hh:mm:ss[.f]`.
pub fn write_timespan_ticks(out: &mut String, ticks: i64, fraction: Fraction) {
    let t = ticks.unsigned_abs();
    let tps = TICKS_PER_SEC as u64;
    write_timespan_parts(out, ticks < 0, t / tps, (t % tps) as u32, fraction);
}

/// Parses a .NET TimeSpan: `[-][d.]hh:mm:ss[.fffffff]` (also `hh:mm`). Negative spans are
/// refused; hours may pass 23 and the fraction may have up to 9 digits (service messages
/// write `00:00:19.0468750`).
///
/// ```
/// use defender_core::timefmt::parse_timespan;
/// use std::time::Duration;
/// assert_eq!(parse_timespan("00:01:00"), Some(Duration::from_secs(60)));
/// assert_eq!(parse_timespan("1.00:00:00"), Some(Duration::from_secs(86_400)));
/// assert_eq!(parse_timespan("00:00:19.0468750"), Some(Duration::from_nanos(19_046_875_000)));
/// ```
pub fn parse_timespan(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.len() > 40 {
        return None;
    }
    let c = Clock::parse(s)?;
    if c.negative {
        return None;
    }
    Some(Duration::new(c.secs()?, c.nanos))
}

/// Parses a TimeSpan in .NET's `c` form to signed 100 ns ticks: `[-][d.]hh:mm[:ss[.f]]`
/// with hours 0-23 and a fraction only after seconds (rounded to the nearest tick).
pub fn parse_timespan_ticks(s: &str) -> Option<i64> {
    let c = Clock::parse(s.trim())?;
    if c.hours > 23 || (c.has_fraction && !c.has_seconds) {
        return None;
    }
    let secs = i64::try_from(c.secs()?).ok()?;
    let ticks = secs
        .checked_mul(TICKS_PER_SEC)?
        .checked_add(i64::from((c.nanos + 50) / 100))?;
    Some(if c.negative { -ticks } else { ticks })
}

/// Parses an ISO 8601 duration such as `P30D`, `PT1H`, `P1DT2H30M`, `P2W`, `PT0.5S`.
/// Years and months count as 365 and 30 days; the result is cut to milliseconds.
pub fn parse_iso_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let rest = s.strip_prefix(['P', 'p'])?;
    if rest.is_empty() {
        return None;
    }
    let mut in_time = false;
    let mut total_ms: f64 = 0.0;
    let mut num = String::new();
    let mut any = false;
    for c in rest.chars() {
        match c {
            'T' | 't' if num.is_empty() && !in_time => in_time = true,
            '0'..='9' | '.' | ',' => num.push(if c == ',' { '.' } else { c }),
            unit => {
                let v: f64 = num.parse().ok()?;
                num.clear();
                let per_ms = match (in_time, unit.to_ascii_uppercase()) {
                    (false, 'Y') => 365.0 * 86_400_000.0,
                    (false, 'M') => 30.0 * 86_400_000.0,
                    (false, 'W') => 7.0 * 86_400_000.0,
                    (false, 'D') => 86_400_000.0,
                    (true, 'H') => 3_600_000.0,
                    (true, 'M') => 60_000.0,
                    (true, 'S') => 1000.0,
                    _ => return None,
                };
                total_ms += v * per_ms;
                any = true;
            }
        }
    }
    // 1e15 ms is about 31,700 years: anything longer is a typo, not a window.
    if !num.is_empty() || !any || !total_ms.is_finite() || total_ms > 1e15 {
        return None;
    }
    Some(Duration::from_millis(total_ms as u64))
}

/// Formats a time as an HTTP-date (`Sun, 06 Nov 1994 08:49:37 GMT`, RFC 9110 §5.6.7), with
/// [`httpdate`]. Times outside 1970..=9999, which that format cannot hold, are clamped.
pub fn format_http_date(t: SystemTime) -> String {
    // 9999-12-31T23:59:59Z, the last second of a four-digit year.
    let last = UNIX_EPOCH + Duration::from_secs(253_402_300_799);
    httpdate::fmt_http_date(t.clamp(UNIX_EPOCH, last))
}

/// [`format_http_date`] of unix milliseconds.
pub fn format_http_date_ms(unix_ms: i64) -> String {
    format_http_date(UNIX_EPOCH + Duration::from_millis(unix_ms.max(0) as u64))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm). The
/// date is not checked: day 0 of March is the last of February.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date `(year, month, day)` of a day count since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Whether `y` is a Gregorian leap year.
pub fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

/// Days in month `m` (1-12) of year `y`.
pub fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

fn write_rfc3339_parts(out: &mut String, secs: i64, frac_ticks: u32, fraction: Fraction) {
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    );
    write_fraction(out, frac_ticks, fraction);
    out.push('Z');
}

fn write_timespan_parts(out: &mut String, neg: bool, secs: u64, frac: u32, fraction: Fraction) {
    let (days, sod) = (secs / 86_400, secs % 86_400);
    if neg {
        out.push('-');
    }
    if days > 0 {
        let _ = write!(out, "{days}.");
    }
    let _ = write!(
        out,
        "{:02}:{:02}:{:02}",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    );
    write_fraction(out, frac, fraction);
}

fn write_fraction(out: &mut String, ticks: u32, fraction: Fraction) {
    match fraction {
        Fraction::Millis => {
            let _ = write!(out, ".{:03}", ticks / 10_000);
        }
        _ if ticks == 0 => {}
        Fraction::Ticks => {
            let _ = write!(out, ".{ticks:07}");
        }
        Fraction::Trimmed => {
            let digits = format!("{ticks:07}");
            out.push('.');
            out.push_str(digits.trim_end_matches('0'));
        }
    }
}

/// A timestamp as read, with the liberties it took, so each dialect can refuse its own.
struct Timestamp {
    /// Seconds since the Unix epoch, the zone applied.
    secs: i64,
    nanos: u32,
    fraction_digits: usize,
    /// A zone after a date without a time (`2024-01-01Z`).
    zone_on_date: bool,
    offset: bool,
    lower_case: bool,
    leap_second: bool,
}

impl Timestamp {
    /// `YYYY-MM-DD[(T|t| )HH:MM[:SS[.f+]]][Z|z|(+|-)HH[[:]MM]]`, the date checked.
    fn parse(s: &str) -> Option<Timestamp> {
        let s = s.trim();
        let (y, rest) = digits(s, 4)?;
        let (mo, rest) = digits(rest.strip_prefix('-')?, 2)?;
        let (d, rest) = digits(rest.strip_prefix('-')?, 2)?;
        let (mo, d) = (mo as u32, d as u32);
        if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) {
            return None;
        }
        let mut p = Timestamp {
            secs: days_from_civil(y, mo, d) * 86_400,
            nanos: 0,
            fraction_digits: 0,
            zone_on_date: false,
            offset: false,
            lower_case: false,
            leap_second: false,
        };
        let mut rest = rest;
        if let Some(t) = rest.strip_prefix(['T', 't', ' ']) {
            p.lower_case = rest.starts_with('t');
            let (hh, t) = digits(t, 2)?;
            let (mm, t) = digits(t.strip_prefix(':')?, 2)?;
            let (ss, t, with_seconds) = match t.strip_prefix(':') {
                Some(t) => {
                    let (ss, t) = digits(t, 2)?;
                    (ss, t, true)
                }
                None => (0, t, false),
            };
            rest = t;
            // A fraction only after seconds: `08:00.5` is refused (as a bad zone).
            if let Some(f) = t.strip_prefix('.').filter(|_| with_seconds) {
                let n = f.bytes().take_while(u8::is_ascii_digit).count();
                if n == 0 {
                    return None;
                }
                let frac = &f[..n.min(9)];
                p.nanos = frac.parse::<u32>().ok()? * 10u32.pow(9 - frac.len() as u32);
                p.fraction_digits = n;
                rest = &f[n..];
            }
            if hh > 23 || mm > 59 || ss > 60 {
                return None;
            }
            p.leap_second = ss == 60;
            p.secs += hh * 3600 + mm * 60 + ss;
        } else {
            p.zone_on_date = !rest.is_empty();
        }
        match rest {
            "" | "Z" => {}
            "z" => p.lower_case = true,
            zone => {
                let sign = match zone.as_bytes()[0] {
                    b'+' => 1,
                    b'-' => -1,
                    _ => return None,
                };
                let (zh, z) = digits(&zone[1..], 2)?;
                let zm = match z.strip_prefix(':').unwrap_or(z) {
                    "" if z.is_empty() => 0,
                    z => match digits(z, 2)? {
                        (zm, "") => zm,
                        _ => return None,
                    },
                };
                p.offset = true;
                p.secs -= sign * (zh * 3600 + zm * 60);
            }
        }
        Some(p)
    }

    /// The API's grammar: a zone only after a time.
    fn is_rfc3339(&self) -> bool {
        !self.zone_on_date
    }
}

/// The clock form of a TimeSpan, `[-][d.]hh:mm[:ss][.f{1,9}]`, as read.
struct Clock {
    negative: bool,
    days: u64,
    hours: u64,
    minutes: u64,
    seconds: u64,
    nanos: u32,
    /// Whether seconds, and a fraction, were written.
    has_seconds: bool,
    has_fraction: bool,
}

impl Clock {
    fn parse(s: &str) -> Option<Clock> {
        let (negative, s) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let (days, rest) = match (s.find('.'), s.find(':')) {
            (Some(dot), Some(colon)) if dot < colon => (parse_u64(&s[..dot])?, &s[dot + 1..]),
            _ => (0, s),
        };
        let (hms, frac) = match rest.split_once('.') {
            Some((hms, frac)) => (hms, Some(frac)),
            None => (rest, None),
        };
        let parts: Vec<&str> = hms.split(':').collect();
        let (hours, minutes, seconds, has_seconds) = match parts.as_slice() {
            [h, m] => (parse_u64(h)?, parse_u64(m)?, 0, false),
            [h, m, s] => (parse_u64(h)?, parse_u64(m)?, parse_u64(s)?, true),
            _ => return None,
        };
        if minutes >= 60 || seconds >= 60 {
            return None;
        }
        let nanos = match frac {
            Some(f) if !f.is_empty() && f.len() <= 9 && f.bytes().all(|b| b.is_ascii_digit()) => {
                let n: u32 = f.parse().ok()?;
                n * 10u32.pow(9 - f.len() as u32)
            }
            Some(_) => return None,
            None => 0,
        };
        Some(Clock {
            negative,
            days,
            hours,
            minutes,
            seconds,
            nanos,
            has_seconds,
            has_fraction: frac.is_some(),
        })
    }

    /// Whole seconds, `None` on overflow.
    fn secs(&self) -> Option<u64> {
        self.days
            .checked_mul(86_400)?
            .checked_add(self.hours.checked_mul(3600)?)?
            .checked_add(self.minutes * 60 + self.seconds)
    }
}

fn parse_u64(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 12 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `n` ASCII digits at the start of `s`, and what follows.
fn digits(s: &str, n: usize) -> Option<(i64, &str)> {
    if s.len() < n || !s.as_bytes()[..n].iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some((s[..n].parse().ok()?, &s[n..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_values() {
        let t = parse_rfc3339("2020-08-30T06:38:35.7664356Z").unwrap();
        assert_eq!(format_rfc3339(t), "2020-08-30T06:38:35.7664356Z");
        assert_eq!(
            parse_rfc3339("2024-02-29T00:00:00+01:00"),
            parse_rfc3339("2024-02-28T23:00:00Z")
        );
        for bad in [
            "2023-02-29",
            "2024-13-01",
            "x024-01-01",
            "2024-01-01T25:00",
            "2024-01-01T00:00:00Q",
            "1969-12-31",
            "2024-01-01T00:00:00.",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn rfc3339_ms_round_trip() {
        for ms in [
            0i64,
            1_704_067_200_000,
            1_709_251_199_999,
            -86_400_000,
            951_782_400_000,
        ] {
            assert_eq!(parse_rfc3339_ms(&format_rfc3339_ms(ms)), Some(ms), "{ms}");
        }
        assert_eq!(
            format_rfc3339_ms(1_704_067_200_000),
            "2024-01-01T00:00:00.000Z"
        );
        assert_eq!(parse_rfc3339_ms("2024-01-01"), Some(1_704_067_200_000));
        assert_eq!(
            parse_rfc3339_ms("2024-01-01T01:00:00+01:00"),
            Some(1_704_067_200_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2020-08-30T06:38:35.7664356Z"),
            Some(parse_rfc3339_ms("2020-08-30T06:38:35Z").unwrap() + 766)
        );
        assert_eq!(parse_rfc3339_ms("2024-13-01"), None);
        assert_eq!(parse_rfc3339_ms("nope"), None);
    }

    #[test]
    fn impossible_dates_are_refused_by_every_parser() {
        for bad in ["2023-02-29", "2024-04-31", "2024-00-10", "2024-01-00"] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
            assert_eq!(parse_rfc3339_ms(bad), None, "{bad}");
            assert_eq!(parse_datetime_ticks(bad), None, "{bad}");
        }
        assert!(parse_rfc3339_ms("2024-02-29").is_some());
    }

    #[test]
    fn datetime_ticks_take_only_the_plain_forms() {
        let day = parse_datetime_ticks("2024-01-01").unwrap();
        assert_eq!(day, 1_704_067_200 * TICKS_PER_SEC);
        assert_eq!(parse_datetime_ticks("2024-01-01Z"), Some(day));
        assert_eq!(parse_datetime_ticks("2024-01-01 00:00"), Some(day));
        assert_eq!(
            parse_datetime_ticks("2024-01-01T00:00:00.1234567Z"),
            Some(day + 1_234_567)
        );
        assert_eq!(
            parse_datetime_ticks("0001-01-01"),
            Some(-62_135_596_800 * TICKS_PER_SEC)
        );
        for refused in [
            "2024-01-01t00:00:00Z",
            "2024-01-01T00:00:00z",
            "2024-01-01T00:00:00+01:00",
            "2024-01-01T23:59:60Z",
            "2024-01-01T00:00:00.12345678Z",
            "2024-01-01T00:00.5",
        ] {
            assert_eq!(parse_datetime_ticks(refused), None, "{refused}");
        }
        // The API takes what Kusto's literal does not, and the other way round.
        assert!(parse_rfc3339("2024-01-01T00:00:00+01:00").is_some());
        assert!(parse_rfc3339("2024-01-01Z").is_none());
    }

    #[test]
    fn formats_of_a_fraction() {
        let t = 1_704_067_200 * TICKS_PER_SEC + 5_000_000;
        let mut s = String::new();
        for f in [Fraction::Trimmed, Fraction::Millis, Fraction::Ticks] {
            write_rfc3339_ticks(&mut s, t, f);
            s.push(' ');
            write_timespan_ticks(&mut s, -t % TICKS_PER_DAY, f);
            s.push(' ');
        }
        assert_eq!(
            s,
            "2024-01-01T00:00:00.5Z -00:00:00.5 \
             2024-01-01T00:00:00.500Z -00:00:00.500 \
             2024-01-01T00:00:00.5000000Z -00:00:00.5000000 "
        );
    }

    #[test]
    fn http_date() {
        assert_eq!(
            format_http_date_ms(784_111_777_000),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
        assert_eq!(format_http_date_ms(-1), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(
            format_http_date(UNIX_EPOCH + Duration::from_secs(u32::MAX as u64 * 100)),
            "Fri, 31 Dec 9999 23:59:59 GMT"
        );
    }

    #[test]
    fn iso_durations() {
        assert_eq!(
            parse_iso_duration("P30D"),
            Some(Duration::from_secs(30 * 86_400))
        );
        assert_eq!(
            parse_iso_duration("PT1H30M"),
            Some(Duration::from_secs(5400))
        );
        assert_eq!(
            parse_iso_duration("P1DT1S"),
            Some(Duration::from_secs(86_401))
        );
        assert_eq!(
            parse_iso_duration("PT0.5S"),
            Some(Duration::from_millis(500))
        );
        assert_eq!(parse_iso_duration("P"), None);
        assert_eq!(parse_iso_duration("30D"), None);
        assert_eq!(parse_iso_duration("P1H"), None);
    }

    #[test]
    fn timespans() {
        assert_eq!(format_timespan(Duration::from_secs(60)), "00:01:00");
        assert_eq!(format_timespan(Duration::from_secs(3600)), "01:00:00");
        assert_eq!(format_timespan(Duration::from_secs(86_400)), "1.00:00:00");
        assert_eq!(
            format_timespan(Duration::from_millis(1500)),
            "00:00:01.5000000"
        );
        assert_eq!(
            parse_timespan_ticks("-1.00:30:00"),
            Some(-(TICKS_PER_DAY + 1800 * TICKS_PER_SEC))
        );
        assert_eq!(parse_timespan_ticks("00:00:01.5"), Some(15_000_000));
        assert_eq!(parse_timespan_ticks("00:00:00.00000005"), Some(1));
        assert_eq!(
            parse_timespan("24:00:00"),
            Some(Duration::from_secs(86_400))
        );
        assert_eq!(parse_timespan_ticks("24:00:00"), None);
        assert_eq!(parse_timespan_ticks("00:05.5"), None);
    }

    proptest! {
        #[test]
        fn round_trip(secs in 0u64..8_000_000_000, ticks in 0u32..10_000_000) {
            let t = UNIX_EPOCH + Duration::new(secs, ticks * 100);
            prop_assert_eq!(parse_rfc3339(&format_rfc3339(t)), Some(t));
        }

        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _ = parse_rfc3339(&s);
            let _ = parse_rfc3339_ms(&s);
            let _ = parse_datetime_ticks(&s);
            let _ = parse_timespan(&s);
            let _ = parse_timespan_ticks(&s);
            let _ = parse_iso_duration(&s);
        }
    }
}
