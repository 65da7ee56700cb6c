//! The 429 body, `Retry-After` and TimeSpan parsers never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, UNIX_EPOCH};

fuzz_target!(|data: &[u8]| {
    let wall = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let split = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let (header, body) = data.split_at(split);
    let mut headers = http::HeaderMap::new();
    if let Ok(v) = http::HeaderValue::from_bytes(header) {
        headers.insert("retry-after", v.clone());
        headers.insert("retry-after-ms", v.clone());
        headers.insert("x-ms-retry-after-ms", v);
    }
    let _ = defender_core::throttle::Throttle::parse(&headers, body, wall);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = defender_core::throttle::parse_retry_after(s, wall);
        let _ = defender_core::throttle::parse_timespan(s);
        let _ = defender_core::throttle::parse_message(s);
    }
});
