//! RFC 3339 / ISO 8601 UTC timestamps, as the APIs write them (`2024-02-01T08:00:00Z`,
//! `2020-08-30T06:38:35.7664356Z`), without a date-time dependency.
//!
//! ```
//! use defender_core::timefmt::{format_rfc3339, parse_rfc3339};
//! use std::time::{Duration, UNIX_EPOCH};
//! let t = UNIX_EPOCH + Duration::from_secs(1_706_774_400);
//! assert_eq!(format_rfc3339(t), "2024-02-01T08:00:00Z");
//! assert_eq!(parse_rfc3339("2024-02-01T08:00:00Z"), Some(t));
//! assert_eq!(parse_rfc3339("2024-02-01"), Some(t - Duration::from_secs(8 * 3600)));
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Formats a wall-clock time as `YYYY-MM-DDTHH:MM:SS[.fffffff]Z` (fraction only when not
/// zero, to 100 ns like .NET). Times before 1970 are written as the epoch.
pub fn format_rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (y, m, day) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    let (hh, mm, ss) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    let ticks = d.subsec_nanos() / 100;
    if ticks == 0 {
        format!("{y:04}-{m:02}-{day:02}T{hh:02}:{mm:02}:{ss:02}Z")
    } else {
        let frac = format!("{ticks:07}");
        format!(
            "{y:04}-{m:02}-{day:02}T{hh:02}:{mm:02}:{ss:02}.{}Z",
            frac.trim_end_matches('0')
        )
    }
}

/// Parses `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM[:SS[.f+]]` with `Z`, `+HH:MM` or no zone (UTC),
/// also with a space instead of `T`. `None` for anything else or before 1970.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let b = s.as_bytes();
    if b.len() < 10 || b.len() > 40 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) {
        return None;
    }
    let mut secs = days_from_civil(y, mo, d) * 86_400;
    let mut nanos = 0u32;
    let mut rest = &s[10..];
    if !rest.is_empty() {
        if !(rest.starts_with('T') || rest.starts_with('t') || rest.starts_with(' '))
            || rest.len() < 6
        {
            return None;
        }
        let t = &rest[1..];
        let tb = t.as_bytes();
        if tb.get(2) != Some(&b':') {
            return None;
        }
        let hh = num2(t.get(0..2)?)?;
        let mm = num2(t.get(3..5)?)?;
        let mut used = 5;
        let mut ss = 0;
        if tb.get(5) == Some(&b':') {
            ss = num2(t.get(6..8)?)?;
            used = 8;
            if tb.get(8) == Some(&b'.') {
                let digits = t[9..].bytes().take_while(u8::is_ascii_digit).count();
                if digits == 0 {
                    return None;
                }
                let frac = &t[9..9 + digits.min(9)];
                nanos = frac.parse::<u32>().ok()? * 10u32.pow(9 - frac.len() as u32);
                used = 9 + digits;
            }
        }
        if hh > 23 || mm > 59 || ss > 60 {
            return None;
        }
        secs += hh * 3600 + mm * 60 + ss;
        rest = &t[used..];
        match rest {
            "" | "Z" | "z" => {}
            zone => {
                let sign = match zone.as_bytes()[0] {
                    b'+' => 1,
                    b'-' => -1,
                    _ => return None,
                };
                let zone = &zone[1..];
                let (zh, zm) = match zone.len() {
                    5 if zone.as_bytes()[2] == b':' => {
                        (num2(zone.get(0..2)?)?, num2(zone.get(3..5)?)?)
                    }
                    4 => (num2(zone.get(0..2)?)?, num2(zone.get(2..4)?)?),
                    2 => (num2(zone)?, 0),
                    _ => return None,
                };
                secs -= sign * (zh * 3600 + zm * 60);
            }
        }
    }
    if secs < 0 {
        return None;
    }
    Some(UNIX_EPOCH + Duration::new(secs as u64, nanos))
}

fn num2(s: &str) -> Option<i64> {
    if s.len() == 2 && s.bytes().all(|c| c.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

// Howard Hinnant's days_from_civil / civil_from_days.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
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

    proptest! {
        #[test]
        fn round_trip(secs in 0u64..8_000_000_000, ticks in 0u32..10_000_000) {
            let t = UNIX_EPOCH + Duration::new(secs, ticks * 100);
            prop_assert_eq!(parse_rfc3339(&format_rfc3339(t)), Some(t));
        }

        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _ = parse_rfc3339(&s);
        }
    }
}
