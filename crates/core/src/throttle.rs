//! Reading HTTP 429 responses: every signal there is.
//!
//! A throttled response may say when to come back in a `Retry-After` header (seconds or
//! an HTTP-date), in `retry-after-ms` / `x-ms-retry-after-ms`, in the body ("You can send
//! requests again in 8 seconds"), and may name the limit it enforced ("maximum allowed 45
//! per 00:01:00", a .NET TimeSpan). These functions are pure, take the wall clock as an
//! argument, and never panic on any bytes.
//!
//! ```
//! use defender_core::throttle::Throttle;
//! use http::HeaderMap;
//! use std::time::{Duration, UNIX_EPOCH};
//!
//! let body = br#"{"error":{"code":"429","message":"API calls quota exceeded! Maximum allowed 30 per 00:01:00 for the key Destination+TenantID+AppID. You can send requests again in 8 seconds.","target":"TENANT_ID"}}"#;
//! let t = Throttle::parse(&HeaderMap::new(), body, UNIX_EPOCH);
//! assert_eq!(t.retry_after, Some(Duration::from_secs(8)));
//! let limit = t.limit.unwrap();
//! assert_eq!((limit.max, limit.per), (30, Duration::from_secs(60)));
//! ```

use std::time::{Duration, SystemTime};

use http::HeaderMap;

use crate::error::ApiError;
use crate::limits::CallLimit;
/// The TimeSpans in throttling messages ("per 00:01:00") are read by [`crate::timefmt`].
pub use crate::timefmt::parse_timespan;

/// Everything a throttled response told us.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Throttle {
    /// How long to wait: the longest of all the waits the response gave.
    pub retry_after: Option<Duration>,
    /// The limit the server named, if it named one.
    pub limit: Option<CallLimit>,
    /// The server's error, if the body was an error envelope.
    pub error: Option<ApiError>,
    /// The body says the running-time (processing resources) budget is spent.
    pub runtime_exhausted: bool,
}

impl Throttle {
    /// Reads a 429 (or 503) response's headers and body.
    pub fn parse(headers: &HeaderMap, body: &[u8], wall_now: SystemTime) -> Throttle {
        let mut waits = Vec::new();
        if let Some(d) = retry_after_from_headers(headers, wall_now) {
            waits.push(d);
        }
        let error = ApiError::from_body(body);
        let message = match &error {
            Some(e) => e.message.clone(),
            None => String::from_utf8_lossy(body.get(..4096).unwrap_or(body)).into_owned(),
        };
        let parsed = parse_message(&message);
        waits.extend(parsed.again_in);
        Throttle {
            retry_after: waits.into_iter().max(),
            limit: parsed.limit,
            error,
            runtime_exhausted: parsed.runtime_exhausted,
        }
    }

    /// The server's message, or a generic one.
    pub fn message(&self) -> String {
        match &self.error {
            Some(e) if !e.message.is_empty() => e.message.clone(),
            _ => "too many requests".to_owned(),
        }
    }
}

/// The longest wait any retry header gives: `Retry-After` (delta-seconds, fractional
/// seconds, or HTTP-date), `retry-after-ms`, `x-ms-retry-after-ms`.
pub fn retry_after_from_headers(headers: &HeaderMap, wall_now: SystemTime) -> Option<Duration> {
    let mut best: Option<Duration> = None;
    let mut offer = |d: Option<Duration>| {
        if let Some(d) = d {
            best = Some(best.map_or(d, |b| b.max(d)));
        }
    };
    for v in headers.get_all("retry-after") {
        offer(v.to_str().ok().and_then(|s| parse_retry_after(s, wall_now)));
    }
    for name in ["retry-after-ms", "x-ms-retry-after-ms"] {
        for v in headers.get_all(name) {
            offer(
                v.to_str()
                    .ok()
                    .and_then(|s| parse_seconds(s.trim()).map(|d| d / 1000)),
            );
        }
    }
    best
}

/// Parses one `Retry-After` value: delta-seconds (`120`, also `1.5`) or an HTTP-date
/// (a date in the past means now).
pub fn parse_retry_after(value: &str, wall_now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Some(d) = parse_seconds(value) {
        return Some(d);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(wall_now).unwrap_or(Duration::ZERO))
}

/// Non-negative decimal seconds, capped at a year (a larger value is a bug of the sender).
fn parse_seconds(s: &str) -> Option<Duration> {
    if s.is_empty() || s.len() > 32 || !s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let secs: f64 = s.parse().ok()?;
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    Some(Duration::from_secs_f64(secs.min(365.0 * 86_400.0)))
}

fn parse_u64(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 12 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// What a throttling message says, in words.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageFacts {
    /// "maximum allowed N per hh:mm:ss".
    pub limit: Option<CallLimit>,
    /// "again in N seconds" (or minutes, or a TimeSpan).
    pub again_in: Option<Duration>,
    /// "exceeded processing resources": the running-time budget is spent.
    pub runtime_exhausted: bool,
}

/// Reads the facts out of a Defender throttling message, whatever its capitalisation.
pub fn parse_message(message: &str) -> MessageFacts {
    let lower = message.to_ascii_lowercase();
    let mut facts = MessageFacts {
        runtime_exhausted: lower.contains("processing resources") || lower.contains("cpu quota"),
        ..MessageFacts::default()
    };
    if let Some(pos) = lower.find("maximum allowed") {
        let mut words = lower[pos + "maximum allowed".len()..].split_whitespace();
        let max = words
            .next()
            .and_then(|w| parse_u64(w.trim_matches(|c: char| !c.is_ascii_digit())));
        let per = match (words.next(), words.next()) {
            (Some("per"), Some(span)) => {
                parse_timespan(span.trim_end_matches([',', ';'])).or_else(|| {
                    // "per 00:01:00." – a sentence's full stop after the span.
                    parse_timespan(span.trim_end_matches('.'))
                })
            }
            _ => None,
        };
        if let (Some(max), Some(per)) = (max, per) {
            if max > 0 && max <= u32::MAX as u64 && !per.is_zero() {
                facts.limit = Some(CallLimit {
                    max: max as u32,
                    per,
                });
            }
        }
    }
    if let Some(pos) = lower.find("again in") {
        let mut words = lower[pos + "again in".len()..].split_whitespace();
        if let Some(amount) = words.next() {
            let amount = amount.trim_end_matches(['.', ',']);
            facts.again_in = parse_timespan(amount).or_else(|| {
                let n = parse_seconds(amount)?;
                let unit = words.next().unwrap_or("seconds");
                let scale = if unit.starts_with("min") {
                    60
                } else if unit.starts_with("hour") {
                    3600
                } else if unit.starts_with("ms") || unit.starts_with("milli") {
                    return Some(n / 1000);
                } else {
                    1
                };
                n.checked_mul(scale)
            });
        }
    }
    facts
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use std::time::UNIX_EPOCH;

    fn limit(max: u32, secs: u64) -> Option<CallLimit> {
        Some(CallLimit {
            max,
            per: Duration::from_secs(secs),
        })
    }

    #[test]
    fn every_literal_body_from_api_facts() {
        let cases: [(&[u8], Option<CallLimit>, Option<Duration>); 4] = [
            (br#"{"error":{"code":"429","message":"API calls quota exceeded! maximum allowed 45 per 00:01:00","target":"x"}}"#, limit(45, 60), None),
            (br#"{"error":{"code":"429","message":"API calls quota exceeded! maximum allowed 1500 per 01:00:00","target":"x"}}"#, limit(1500, 3600), None),
            (br#"{"error":{"code":"429","message":"API calls quota exceeded! Maximum allowed 30 per 00:01:00 for the key Destination+TenantID+AppID. You can send requests again in 8 seconds.","target":"TENANT_ID"}}"#, limit(30, 60), Some(Duration::from_secs(8))),
            (br#"{"error":{"code":"TooManyRequests","message":"Please retry again later.","innerError":{"date":"2024-01-01T00:00:00","request-id":"r"}}}"#, None, None),
        ];
        for (body, l, wait) in cases {
            let t = Throttle::parse(&HeaderMap::new(), body, UNIX_EPOCH);
            assert_eq!(t.limit, l);
            assert_eq!(t.retry_after, wait);
            assert!(t.error.is_some());
        }
        let portal = parse_message("You have exceeded processing resources allocated to this tenant. You can run queries again in 00:12:30.");
        assert!(portal.runtime_exhausted);
        assert_eq!(portal.again_in, Some(Duration::from_secs(750)));
    }

    #[test]
    fn headers_take_the_longest_wait() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("3"));
        h.insert("x-ms-retry-after-ms", HeaderValue::from_static("4500"));
        assert_eq!(
            retry_after_from_headers(&h, now),
            Some(Duration::from_millis(4500))
        );
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        h.insert("retry-after", HeaderValue::from_str(&date).unwrap());
        assert_eq!(
            retry_after_from_headers(&h, now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("1.5", now),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            parse_retry_after(&httpdate::fmt_http_date(UNIX_EPOCH), now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("-1", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn body_and_header_combine() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("20"));
        let body =
            br#"{"error":{"code":"429","message":"You can send requests again in 8 seconds."}}"#;
        assert_eq!(
            Throttle::parse(&h, body, UNIX_EPOCH).retry_after,
            Some(Duration::from_secs(20))
        );
        let t = Throttle::parse(
            &HeaderMap::new(),
            b"not json at all; again in 2 minutes",
            UNIX_EPOCH,
        );
        assert_eq!(t.retry_after, Some(Duration::from_secs(120)));
        assert!(t.error.is_none());
    }

    #[test]
    fn timespans() {
        assert_eq!(parse_timespan("01:00:00"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_timespan("00:05"), Some(Duration::from_secs(300)));
        assert_eq!(
            parse_timespan("2.03:04:05.5"),
            Some(Duration::new(
                2 * 86_400 + 3 * 3600 + 4 * 60 + 5,
                500_000_000
            ))
        );
        for bad in [
            "",
            "-00:01:00",
            "1:2:3:4",
            "00:61:00",
            "aa:bb:cc",
            "00:00:00.",
            "99999999999999.00:00:00",
        ] {
            assert_eq!(parse_timespan(bad), None, "{bad}");
        }
    }
}
