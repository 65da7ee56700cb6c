//! Advanced hunting: the cost model, Graph's `Timespan`, and the response bodies.

use std::time::Duration;

use defender_emulator_kql::{JsonStyle, QueryOutput};
use serde_json::json;

use defender_core::timefmt::{format_timespan, parse_iso_duration, parse_rfc3339_ms};

/// How the emulator turns a query's work into simulated execution time.
///
/// `execution time = base + rows_scanned * per_row + operators * per_operator`
///
/// `rows_scanned` is the number of source-table rows inside the lookback window and
/// `operators` the number of `|` pipeline operators. The time is reported in
/// `Stats.ExecutionTime` (seconds) and charged against every `hunting.runtime` window of
/// the (tenant, app). The defaults (50 ms + 2 µs per row + 10 ms per operator) make a
/// scan of a million rows cost about two seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CostModel {
    /// Fixed cost of every query.
    pub base: Duration,
    /// Cost per scanned row.
    pub per_row: Duration,
    /// Cost per pipeline operator.
    pub per_operator: Duration,
}

impl Default for CostModel {
    fn default() -> Self {
        CostModel {
            base: Duration::from_millis(50),
            per_row: Duration::from_micros(2),
            per_operator: Duration::from_millis(10),
        }
    }
}

impl CostModel {
    /// The simulated execution time of a query that scanned `rows` rows through
    /// `operators` operators.
    pub fn cost(&self, rows: u64, operators: u32) -> Duration {
        let rows_ns = self.per_row.as_nanos().saturating_mul(u128::from(rows));
        let ops_ns = self.per_operator.as_nanos() * u128::from(operators);
        let total = self.base.as_nanos() + rows_ns + ops_ns;
        Duration::from_nanos(total.min(u128::from(u64::MAX)) as u64)
    }
}

/// A parsed Graph `Timespan`: the window `[start, end]` in unix ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timespan {
    /// Start, unix ms.
    pub start_ms: i64,
    /// End, unix ms.
    pub end_ms: i64,
}

/// Parses `P7D` (ending now), a single start time (from then until now), `start/end`,
/// `P30D/end` or `start/P1D` (GD security-security-runhuntingquery.md).
pub fn parse_timespan(s: &str, now_ms: i64) -> Result<Timespan, String> {
    let bad = || {
        format!(
            "Invalid Timespan '{s}': use an ISO 8601 duration (P7D), a start time (2024-02-01T08:00:00Z), an interval (2024-02-01T08:00:00Z/2024-02-15T08:00:00Z) or a duration and an end (P30D/2024-02-15T08:00:00Z)"
        )
    };
    let dur = |d: &str| parse_iso_duration(d).map(|d| d.as_millis() as i64);
    let (start, end) = match s.trim().split_once('/') {
        None => match parse_rfc3339_ms(s.trim()) {
            Some(start) => (start, now_ms),
            None => {
                let d = dur(s).ok_or_else(bad)?;
                (now_ms - d, now_ms)
            }
        },
        Some((a, b)) => match (parse_rfc3339_ms(a), parse_rfc3339_ms(b)) {
            (Some(a), Some(b)) => (a, b),
            (None, Some(b)) => (b - dur(a).ok_or_else(bad)?, b),
            (Some(a), None) => (a, a + dur(b).ok_or_else(bad)?),
            (None, None) => return Err(bad()),
        },
    };
    if end < start {
        return Err(format!(
            "Invalid Timespan '{s}': the end is before the start"
        ));
    }
    Ok(Timespan {
        start_ms: start,
        end_ms: end,
    })
}

/// The response header that carries what a query did that the real service would have
/// done differently offline (e.g. `externaldata`, never fetched, returns its declared
/// columns with no rows).
///
/// Neither the Defender hunting APIs (`Stats`, `Schema`, `Results`) nor Graph's
/// `huntingQueryResults` (`schema`, `results`) document a field for warnings, so the
/// emulator adds none to the body, whose shape stays the service's; it sets this
/// header on the 200 instead, once per query, with every warning.
pub const WARNING_HEADER: &str = "x-emulator-warning";

/// The most bytes [`warning_header`] writes (a header is not a place for a document).
const WARNING_HEADER_MAX: usize = 1024;

/// The value of [`WARNING_HEADER`] for a query's `warnings`, or `None` when it has none:
/// the warnings joined by `"; "`, anything but printable ASCII written `?` (a header
/// value is ASCII), at most 1,024 bytes (cut with `...`).
pub fn warning_header(warnings: &[String]) -> Option<String> {
    if warnings.is_empty() {
        return None;
    }
    let mut v: String = warnings
        .join("; ")
        .chars()
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '?'
            }
        })
        .collect();
    if v.len() > WARNING_HEADER_MAX {
        v.truncate(WARNING_HEADER_MAX - 3);
        v.push_str("...");
    }
    Some(v)
}

/// The XDR `Stats` object for a query.
pub fn stats_json(exec: Duration, out: &QueryOutput, body_bytes: usize) -> serde_json::Value {
    let cpu = format_timespan(exec.mul_f64(4.0));
    json!({
        "ExecutionTime": (exec.as_secs_f64() * 1e6).round() / 1e6,
        "resource_usage": {
            "cache": {
                "memory": {"hits": out.operators, "misses": 1, "total": out.operators + 1},
                "disk": {"hits": 0, "misses": 0, "total": 0},
                "shards": {"hot": {"hitbytes": 0, "missbytes": 0, "retrievebytes": 0}, "cold": {"hitbytes": 0, "missbytes": 0, "retrievebytes": 0}, "bypassbytes": 0}
            },
            "cpu": {"user": cpu, "kernel": "00:00:00", "total cpu": cpu},
            "memory": {"peak_per_node": 1_048_576 + out.rows_scanned * 64}
        },
        "input_dataset_statistics": {"extents": {"total": 1, "scanned": 1}, "rows": {"total": out.rows_scanned, "scanned": out.rows_scanned}},
        "dataset_statistics": [{"table_row_count": out.rows.len(), "table_size": body_bytes}]
    })
}

/// Which hunting surface answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HuntShape {
    /// `Stats`, `Schema`, `Results`.
    Xdr,
    /// `Schema`, `Results`.
    Mde,
    /// `schema`, `results`.
    Graph,
}

/// The response body of a successful query, or `None` when it would be larger than
/// `max_bytes` (found out without writing all of it).
pub fn body(
    shape: HuntShape,
    out: &QueryOutput,
    exec: Duration,
    max_bytes: usize,
) -> Option<Vec<u8>> {
    let json = |style| {
        let mut b = Vec::new();
        out.write_json_within(style, &mut b, max_bytes).then_some(b)
    };
    Some(match shape {
        HuntShape::Mde => json(JsonStyle::Defender)?,
        HuntShape::Graph => json(JsonStyle::Graph)?,
        HuntShape::Xdr => {
            let rest = json(JsonStyle::Defender)?;
            let stats = serde_json::to_vec(&stats_json(exec, out, rest.len())).unwrap_or_default();
            let mut body = Vec::with_capacity(rest.len() + stats.len() + 16);
            body.extend_from_slice(b"{\"Stats\":");
            body.extend_from_slice(&stats);
            body.push(b',');
            body.extend_from_slice(rest.get(1..).unwrap_or_default());
            body
        }
    })
    .filter(|b| b.len() <= max_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warning_header_is_printable_ascii_and_bounded() {
        assert_eq!(warning_header(&[]), None);
        let w = warning_header(&["a".to_string(), "b\u{e9}\n".to_string()]);
        assert_eq!(w.as_deref(), Some("a; b??"));
        let long = warning_header(&["x".repeat(5000)]).unwrap();
        assert_eq!(long.len(), WARNING_HEADER_MAX);
        assert!(long.ends_with("..."));
    }

    #[test]
    fn cost_model() {
        let c = CostModel::default();
        assert_eq!(c.cost(0, 0), Duration::from_millis(50));
        assert_eq!(c.cost(1_000_000, 2), Duration::from_millis(2070));
    }

    #[test]
    fn timespans() {
        let now = 1_704_067_200_000;
        let t = parse_timespan("P7D", now).unwrap();
        assert_eq!((t.start_ms, t.end_ms), (now - 7 * 86_400_000, now));
        let t = parse_timespan("2024-01-01T00:00:00Z/2024-01-02T00:00:00Z", now).unwrap();
        assert_eq!(t.end_ms - t.start_ms, 86_400_000);
        let t = parse_timespan("P1D/2024-01-01T00:00:00Z", 0).unwrap();
        assert_eq!(t.end_ms, now);
        let t = parse_timespan("2023-12-31T00:00:00Z", now).unwrap();
        assert_eq!((t.start_ms, t.end_ms), (now - 86_400_000, now));
        assert!(parse_timespan("yesterday", now).is_err());
        assert!(parse_timespan("2024-01-02T00:00:00Z/2024-01-01T00:00:00Z", now).is_err());
    }
}
