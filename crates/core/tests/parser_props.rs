//! Parsers never panic on any input, and round-trip what they write.

use std::time::{Duration, UNIX_EPOCH};

use defender_core::hunting::HuntResponse;
use defender_core::incidents::IncidentPage;
use defender_core::limits::{format_duration, parse_duration, Limits};
use defender_core::throttle::{parse_message, parse_retry_after, parse_timespan, Throttle};
use defender_core::{ApiGroup, CallLimit};
use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;

fn limit() -> impl Strategy<Value = CallLimit> {
    (1u32..100_000, 1u64..200_000).prop_map(|(max, secs)| CallLimit {
        max,
        per: Duration::from_secs(secs),
    })
}

fn timespan(d: Duration) -> String {
    let s = d.as_secs();
    let (days, h, m, sec) = (s / 86_400, (s % 86_400) / 3600, (s % 3600) / 60, s % 60);
    if days > 0 {
        format!("{days}.{h:02}:{m:02}:{sec:02}")
    } else {
        format!("{h:02}:{m:02}:{sec:02}")
    }
}

proptest! {
    #[test]
    fn throttle_never_panics(body in prop::collection::vec(any::<u8>(), 0..400), header in "\\PC{0,40}") {
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&header) {
            h.insert("retry-after", v.clone());
            h.insert("x-ms-retry-after-ms", v);
        }
        let _ = Throttle::parse(&h, &body, UNIX_EPOCH);
        let _ = parse_retry_after(&header, UNIX_EPOCH);
        let _ = parse_timespan(&header);
        let _ = parse_message(&String::from_utf8_lossy(&body));
    }

    #[test]
    fn messages_in_any_case_round_trip(l in limit(), wait in 1u64..100_000, upper in any::<bool>()) {
        let msg = format!("API calls quota exceeded! maximum allowed {} per {} for the key X. You can send requests again in {} seconds.", l.max, timespan(l.per), wait);
        let msg = if upper { msg.to_uppercase() } else { msg };
        let body = serde_json::json!({"error": {"code": "429", "message": msg, "target": "t"}}).to_string();
        let t = Throttle::parse(&HeaderMap::new(), body.as_bytes(), UNIX_EPOCH);
        prop_assert_eq!(t.limit, Some(l));
        prop_assert_eq!(t.retry_after, Some(Duration::from_secs(wait)));
    }

    #[test]
    fn decoders_never_panic(body in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = HuntResponse::from_slice(&body);
        let _ = serde_json::from_slice::<IncidentPage>(&body);
    }

    #[test]
    fn truncated_bodies_are_errors_not_panics(cut in 0usize..200) {
        let full = br#"{"Stats":{"ExecutionTime":1.5},"Schema":[{"Name":"a","Type":"String"}],"Results":[{"a":"x"},{"a":"y"}]}"#;
        let cut = cut.min(full.len() - 1);
        prop_assert!(HuntResponse::from_slice(&full[..cut]).is_err());
    }

    #[test]
    fn limits_parser_never_panics(spec in "[a-z0-9.,=/ _]{0,60}") {
        let _ = Limits::parse(&spec);
        let _ = parse_duration(&spec);
    }

    #[test]
    fn limits_round_trip(
        calls in prop::collection::vec((1u32..5000, 1u64..100_000), 0..4),
        rows in proptest::option::of(1u64..1_000_000),
    ) {
        let mut l = Limits::default();
        l.hunting.calls = calls.into_iter().map(|(max, s)| CallLimit { max, per: Duration::from_secs(s) }).collect();
        l.hunting.rows = rows;
        let back = Limits::parse(&l.to_spec()).unwrap();
        prop_assert_eq!(back.group(ApiGroup::Hunting), l.group(ApiGroup::Hunting));
        prop_assert_eq!(back, l);
    }

    #[test]
    fn durations_round_trip(ms in 0u64..10_000_000_000) {
        let d = Duration::from_millis(ms);
        prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
    }
}
