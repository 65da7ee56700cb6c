//! Scalar functions whose work is plain text or calendar arithmetic: `datetime_diff`,
//! `format_datetime`, `substring`, `indexof`, `countof`, `ipv4_is_private` and
//! `base64_decode_tostring`. Pure functions over Rust values, so each can be tested
//! against a hand-computed answer.

use defender_core::timefmt::{civil_from_days, days_from_civil, days_in_month};

use crate::value::{TICKS_PER_DAY, TICKS_PER_SEC};

/// `datetime_diff(part, a, b)`: how many `part` boundaries lie between `b` and `a`
/// (positive when `a` is later). `None` for an unknown part.
pub(crate) fn datetime_diff(part: &str, a: i64, b: i64) -> Option<i64> {
    let floor_diff = |unit: i64| a.div_euclid(unit) - b.div_euclid(unit);
    let ym = |t: i64| {
        let (y, m, _) = civil_from_days(t.div_euclid(TICKS_PER_DAY));
        (y, i64::from(m))
    };
    let ((ya, ma), (yb, mb)) = (ym(a), ym(b));
    Some(match part.to_ascii_lowercase().as_str() {
        "year" => ya - yb,
        "quarter" => (ya * 4 + (ma - 1) / 3) - (yb * 4 + (mb - 1) / 3),
        "month" => (ya * 12 + ma) - (yb * 12 + mb),
        // Weeks start on Sunday; 1970-01-01 was a Thursday.
        "week" => {
            let w = |t: i64| (t.div_euclid(TICKS_PER_DAY) + 4).div_euclid(7);
            w(a) - w(b)
        }
        "day" => floor_diff(TICKS_PER_DAY),
        "hour" => floor_diff(3_600 * TICKS_PER_SEC),
        "minute" => floor_diff(60 * TICKS_PER_SEC),
        "second" => floor_diff(TICKS_PER_SEC),
        "millisecond" => floor_diff(TICKS_PER_SEC / 1_000),
        "microsecond" => floor_diff(10),
        "nanosecond" => a.checked_sub(b)?.checked_mul(100)?,
        _ => return None,
    })
}

/// `datetime_add(part, amount, t)`: calendar parts keep the day of the month where it
/// exists (and clamp to the month's last day otherwise).
pub(crate) fn datetime_add(part: &str, amount: i64, t: i64) -> Option<i64> {
    let unit = |u: i64| amount.checked_mul(u).and_then(|d| t.checked_add(d));
    let months = |m: i64| {
        let (y, mo, d) = civil_from_days(t.div_euclid(TICKS_PER_DAY));
        let total = y.checked_mul(12)? + i64::from(mo) - 1 + m;
        let (ny, nm) = (total.div_euclid(12), (total.rem_euclid(12) + 1) as u32);
        let day = days_from_civil(ny, nm, d.min(days_in_month(ny, nm)));
        day.checked_mul(TICKS_PER_DAY)?
            .checked_add(t.rem_euclid(TICKS_PER_DAY))
    };
    match part.to_ascii_lowercase().as_str() {
        "year" => months(amount.checked_mul(12)?),
        "quarter" => months(amount.checked_mul(3)?),
        "month" => months(amount),
        "week" => unit(7 * TICKS_PER_DAY),
        "day" => unit(TICKS_PER_DAY),
        "hour" => unit(3_600 * TICKS_PER_SEC),
        "minute" => unit(60 * TICKS_PER_SEC),
        "second" => unit(TICKS_PER_SEC),
        "millisecond" => unit(TICKS_PER_SEC / 1_000),
        "microsecond" => unit(10),
        "nanosecond" => Some(t.checked_add(amount / 100)?),
        _ => None,
    }
}

/// `format_datetime(t, format)` with the documented specifiers (`yyyy`, `yy`, `MM`, `M`,
/// `dd`, `d`, `HH`, `H`, `hh`, `h`, `mm`, `m`, `ss`, `s`, `f`... up to 7, `tt`); any
/// other character is copied.
pub(crate) fn format_datetime(t: i64, format: &str) -> String {
    let (y, mo, d) = civil_from_days(t.div_euclid(TICKS_PER_DAY));
    let sod = t.rem_euclid(TICKS_PER_DAY) / TICKS_PER_SEC;
    let frac = t.rem_euclid(TICKS_PER_SEC);
    let (h, mi, s) = (sod / 3_600, sod / 60 % 60, sod % 60);
    let h12 = if h % 12 == 0 { 12 } else { h % 12 };
    let chars: Vec<char> = format.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let run = chars[i..].iter().take_while(|x| **x == c).count();
        let piece = match (c, run) {
            ('y', 4..) => format!("{y:04}"),
            ('y', 2 | 3) => format!("{:02}", y.rem_euclid(100)),
            ('y', _) => format!("{}", y.rem_euclid(100)),
            ('M', 2..) => format!("{mo:02}"),
            ('M', _) => format!("{mo}"),
            ('d', 2..) => format!("{d:02}"),
            ('d', _) => format!("{d}"),
            ('H', 2..) => format!("{h:02}"),
            ('H', _) => format!("{h}"),
            ('h', 2..) => format!("{h12:02}"),
            ('h', _) => format!("{h12}"),
            ('m', 2..) => format!("{mi:02}"),
            ('m', _) => format!("{mi}"),
            ('s', 2..) => format!("{s:02}"),
            ('s', _) => format!("{s}"),
            ('f' | 'F', n) => {
                let n = n.min(7);
                let digits = format!("{frac:07}");
                digits[..n].to_string()
            }
            ('t', _) => (if h < 12 { "AM" } else { "PM" }).to_string(),
            (c, n) => std::iter::repeat_n(c, n).collect(),
        };
        out.push_str(&piece);
        i += run;
    }
    out
}

/// Characters `[start, start + len)` of `text` (a negative start counts from the end,
/// as in Kusto; out-of-range parts are cut).
pub(crate) fn substring(text: &str, start: i64, len: Option<i64>) -> String {
    let n = text.chars().count() as i64;
    let start = if start < 0 {
        (n + start).max(0)
    } else {
        start.min(n)
    };
    let end = match len {
        Some(l) if l < 0 => start,
        Some(l) => start.saturating_add(l).min(n),
        None => n,
    };
    text.chars()
        .skip(start as usize)
        .take((end - start).max(0) as usize)
        .collect()
}

/// The character index of the first `lookup` in `text` at or after `start`, -1 when
/// absent; `None` (null) for a start outside the text.
pub(crate) fn indexof(text: &str, lookup: &str, start: i64) -> Option<i64> {
    let n = text.chars().count() as i64;
    let start = if start < 0 { n + start } else { start };
    if start < 0 || start > n {
        return None;
    }
    let byte = text
        .char_indices()
        .nth(start as usize)
        .map_or(text.len(), |(b, _)| b);
    Some(
        text[byte..]
            .find(lookup)
            .map_or(-1, |i| start + text[byte..byte + i].chars().count() as i64),
    )
}

/// Occurrences of `needle` in `text`, overlapping ones included (`countof("aaa", "aa")`
/// is 2); 0 for an empty needle.
pub(crate) fn countof(text: &str, needle: &str) -> i64 {
    if needle.is_empty() {
        return 0;
    }
    let mut n = 0;
    let mut from = 0;
    while let Some(i) = text[from..].find(needle) {
        n += 1;
        let at = from + i;
        from = at + text[at..].chars().next().map_or(1, char::len_utf8);
    }
    n
}

/// Whether a dotted IPv4 address is in 10/8, 172.16/12 or 192.168/16; `None` when it
/// is not an IPv4 address.
pub(crate) fn ipv4_is_private(ip: &str) -> Option<bool> {
    let ip = ip.split('/').next().unwrap_or(ip);
    let o: Vec<u8> = ip
        .split('.')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [a, b, _, _] = o[..] else { return None };
    Some(a == 10 || (a == 172 && (16..32).contains(&b)) || (a == 192 && b == 168))
}

/// Standard base64 (with or without padding); `None` if anything else appears.
pub(crate) fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' | b'-' => Some(62),
        b'/' | b'_' => Some(63),
        _ => None,
    };
    let body = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in body.bytes() {
        acc = (acc << 6) | u32::from(val(c)?);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::parse_datetime;

    fn t(s: &str) -> i64 {
        parse_datetime(s).unwrap()
    }

    #[test]
    fn datetime_diff_counts_boundaries() {
        let a = t("2024-03-01 00:00:00");
        let b = t("2023-12-31 23:59:59");
        assert_eq!(datetime_diff("year", a, b), Some(1));
        assert_eq!(datetime_diff("quarter", a, b), Some(1));
        assert_eq!(datetime_diff("month", a, b), Some(3));
        assert_eq!(datetime_diff("day", a, b), Some(61));
        assert_eq!(datetime_diff("hour", a, b), Some(60 * 24 + 1));
        assert_eq!(
            datetime_diff("second", a, b),
            Some(61 * 86_400 - 86_400 + 1)
        );
        assert_eq!(datetime_diff("day", b, a), Some(-61));
        // 2024-03-02 is a Saturday, 2024-03-03 a Sunday: one week boundary.
        assert_eq!(
            datetime_diff("week", t("2024-03-03"), t("2024-03-02")),
            Some(1)
        );
        assert_eq!(
            datetime_diff("week", t("2024-03-09"), t("2024-03-03")),
            Some(0)
        );
        assert_eq!(datetime_diff("fortnight", a, b), None);
        assert_eq!(datetime_diff("Minute", a, a - 1), Some(1));
    }

    #[test]
    fn datetime_add_parts() {
        let x = t("2024-01-31 10:00:00");
        assert_eq!(datetime_add("month", 1, x), Some(t("2024-02-29 10:00:00")));
        assert_eq!(datetime_add("month", -2, x), Some(t("2023-11-30 10:00:00")));
        assert_eq!(
            datetime_add("year", 1, t("2024-02-29")),
            Some(t("2025-02-28"))
        );
        assert_eq!(
            datetime_add("quarter", 1, x),
            Some(t("2024-04-30 10:00:00"))
        );
        assert_eq!(datetime_add("day", -31, x), Some(t("2023-12-31 10:00:00")));
        assert_eq!(datetime_add("hour", 14, x), Some(t("2024-02-01 00:00:00")));
        assert_eq!(datetime_add("week", 1, x), Some(t("2024-02-07 10:00:00")));
        assert_eq!(datetime_add("eon", 1, x), None);
        assert_eq!(datetime_add("day", i64::MAX, x), None);
    }

    #[test]
    fn format_datetime_specifiers() {
        let x = t("2024-07-05 14:03:09.1234567");
        assert_eq!(
            format_datetime(x, "yyyy-MM-dd HH:mm:ss"),
            "2024-07-05 14:03:09"
        );
        assert_eq!(format_datetime(x, "yy/M/d h:m:s tt"), "24/7/5 2:3:9 PM");
        assert_eq!(format_datetime(x, "fff"), "123");
        assert_eq!(format_datetime(x, "ffffffff"), "1234567");
        assert_eq!(format_datetime(t("2024-01-01"), "hh tt"), "12 AM");
    }

    #[test]
    fn substring_indexof_countof() {
        assert_eq!(substring("abcdef", 1, Some(2)), "bc");
        assert_eq!(substring("abcdef", 4, None), "ef");
        assert_eq!(substring("abcdef", 4, Some(100)), "ef");
        assert_eq!(substring("abcdef", -2, None), "ef");
        assert_eq!(substring("abc", 9, Some(2)), "");
        assert_eq!(substring("äöü", 1, Some(1)), "ö");
        assert_eq!(indexof("abcabc", "c", 0), Some(2));
        assert_eq!(indexof("abcabc", "c", 3), Some(5));
        assert_eq!(indexof("abc", "z", 0), Some(-1));
        assert_eq!(indexof("äbc", "c", 0), Some(2));
        assert_eq!(indexof("abc", "a", 9), None);
        assert_eq!(countof("aaa", "aa"), 2);
        assert_eq!(countof("The cat sat", "at"), 2);
        assert_eq!(countof("abc", ""), 0);
    }

    #[test]
    fn ipv4_and_base64() {
        assert_eq!(ipv4_is_private("10.1.2.3"), Some(true));
        assert_eq!(ipv4_is_private("172.31.0.1"), Some(true));
        assert_eq!(ipv4_is_private("172.32.0.1"), Some(false));
        assert_eq!(ipv4_is_private("192.168.0.1/24"), Some(true));
        assert_eq!(ipv4_is_private("8.8.8.8"), Some(false));
        assert_eq!(ipv4_is_private("not an ip"), None);
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGVsbG8").unwrap(), b"hello");
        assert!(base64_decode("a$b").is_none());
    }
}
