//! Date and time helpers without a date-time crate: RFC 3339 / ISO 8601 timestamps,
//! ISO 8601 durations, .NET TimeSpans and HTTP-dates, all over unix milliseconds.

use std::time::Duration;

const MS_PER_DAY: i64 = 86_400_000;

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Formats unix milliseconds as `2024-01-02T03:04:05.678Z` (always with milliseconds).
pub fn format_rfc3339(unix_ms: i64) -> String {
    let days = unix_ms.div_euclid(MS_PER_DAY);
    let ms_of_day = unix_ms.rem_euclid(MS_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    let secs = ms_of_day / 1000;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60,
        ms_of_day % 1000
    )
}

/// Formats unix milliseconds as an HTTP-date (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub fn format_http_date(unix_ms: i64) -> String {
    let days = unix_ms.div_euclid(MS_PER_DAY);
    let secs = unix_ms.rem_euclid(MS_PER_DAY) / 1000;
    let (y, m, d) = civil_from_days(days);
    // 1970-01-01 was a Thursday.
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

fn digits(s: &str, n: usize) -> Option<(i64, &str)> {
    if s.len() < n || !s.as_bytes()[..n].iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some((s[..n].parse().ok()?, &s[n..]))
}

fn expect(s: &str, c: char) -> Option<&str> {
    s.strip_prefix(c)
}

/// Parses an ISO 8601 / RFC 3339 timestamp: `2024-01-01`, `2024-01-01T00:00:00Z`,
/// fractional seconds, and `+hh:mm` / `-hh:mm` offsets. A missing zone means UTC.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let s = s.trim();
    let (y, rest) = digits(s, 4)?;
    let (mo, rest) = digits(expect(rest, '-')?, 2)?;
    let (d, rest) = digits(expect(rest, '-')?, 2)?;
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    let mut ms = days_from_civil(y, mo as u32, d as u32) * MS_PER_DAY;
    if rest.is_empty() {
        return Some(ms);
    }
    let rest = rest.strip_prefix(['T', 't', ' '])?;
    let (h, rest) = digits(rest, 2)?;
    let (mi, rest) = digits(expect(rest, ':')?, 2)?;
    let (sec, mut rest) = match rest.strip_prefix(':') {
        Some(r) => digits(r, 2)?,
        None => (0, rest),
    };
    if h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    ms += ((h * 60 + mi) * 60 + sec) * 1000;
    if let Some(r) = rest.strip_prefix('.') {
        let n = r.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        let frac = &r[..n.min(3)];
        let v: i64 = frac.parse().ok()?;
        ms += v * 10i64.pow(3 - frac.len() as u32);
        rest = &r[n..];
    }
    match rest {
        "" | "Z" | "z" => Some(ms),
        _ => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (oh, r) = digits(&rest[1..], 2)?;
            let (om, r) = digits(r.strip_prefix(':').unwrap_or(r), 2)?;
            if !r.is_empty() {
                return None;
            }
            Some(ms - sign * (oh * 60 + om) * 60_000)
        }
    }
}

/// Parses an ISO 8601 duration such as `P30D`, `PT1H`, `P1DT2H30M`, `P2W`, `PT0.5S`.
/// Years and months count as 365 and 30 days.
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
    if !num.is_empty() || !any || !total_ms.is_finite() || total_ms > 1e15 {
        return None;
    }
    Some(Duration::from_millis(total_ms as u64))
}

/// Formats a duration as a .NET TimeSpan: `hh:mm:ss`, with `d.` for days and
/// `.fffffff` when there is a fraction of a second (`00:01:00`, `1.00:00:00`).
pub fn format_timespan(d: Duration) -> String {
    let secs = d.as_secs();
    let (days, h, m, s) = (
        secs / 86_400,
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60,
    );
    let mut out = if days > 0 {
        format!("{days}.{h:02}:{m:02}:{s:02}")
    } else {
        format!("{h:02}:{m:02}:{s:02}")
    };
    let ticks = d.subsec_nanos() / 100;
    if ticks > 0 {
        out.push_str(&format!(".{ticks:07}"));
    }
    out
}

/// Whole seconds, rounded up; at least 1 for any positive duration.
pub fn ceil_secs(d: Duration) -> u64 {
    let s = d.as_secs();
    if d.subsec_nanos() > 0 {
        s + 1
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip() {
        for ms in [
            0i64,
            1_704_067_200_000,
            1_709_251_199_999,
            -86_400_000,
            951_782_400_000,
        ] {
            assert_eq!(parse_rfc3339(&format_rfc3339(ms)), Some(ms), "{ms}");
        }
        assert_eq!(
            format_rfc3339(1_704_067_200_000),
            "2024-01-01T00:00:00.000Z"
        );
        assert_eq!(parse_rfc3339("2024-01-01"), Some(1_704_067_200_000));
        assert_eq!(
            parse_rfc3339("2024-01-01T01:00:00+01:00"),
            Some(1_704_067_200_000)
        );
        assert_eq!(
            parse_rfc3339("2020-08-30T06:38:35.7664356Z"),
            Some(parse_rfc3339("2020-08-30T06:38:35Z").unwrap() + 766)
        );
        assert_eq!(parse_rfc3339("2024-13-01"), None);
        assert_eq!(parse_rfc3339("nope"), None);
    }

    #[test]
    fn http_date() {
        assert_eq!(
            format_http_date(784_111_777_000),
            "Sun, 06 Nov 1994 08:49:37 GMT"
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
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(8)), 8);
    }
}
