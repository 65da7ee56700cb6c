//! Advanced hunting: the request and the response of every surface.
//!
//! Defender XDR answers `{"Stats", "Schema", "Results"}`, Defender for Endpoint only
//! `Schema` and `Results`, Graph `{"schema", "results"}` with `name`/`type` columns (some
//! samples use `Name`/`Type`): all are read by one decoder. Unknown fields are kept.
//!
//! ```
//! use defender_core::hunting::HuntResponse;
//! let body = br#"{"schema":[{"name":"FileName","type":"String"}],"results":[{"FileName":"conhost.exe"}],"@odata.context":"x"}"#;
//! let r = HuntResponse::from_slice(body).unwrap();
//! assert_eq!(r.schema[0].name, "FileName");
//! assert_eq!(r.results[0]["FileName"], "conhost.exe");
//! assert!(r.extra.contains_key("@odata.context"));
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One result row: column name to value.
pub type Row = Map<String, Value>;

/// The hunting request body: `{"Query": "...", "Timespan": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HuntRequest {
    /// The KQL query.
    #[serde(rename = "Query", alias = "query")]
    pub query: String,
    /// Graph only: an ISO 8601 duration or interval (`P30D`, `start/end`, `P30D/end`).
    #[serde(
        rename = "Timespan",
        alias = "timespan",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub timespan: Option<String>,
}

impl HuntRequest {
    /// A request for `query`.
    pub fn new(query: impl Into<String>) -> HuntRequest {
        HuntRequest {
            query: query.into(),
            timespan: None,
        }
    }

    /// With a Graph `Timespan`. Only Graph takes one: on the other surfaces the engine
    /// refuses the call (`Error::Unsupported`) rather than drop it; use
    /// [`HuntRequest::scoped`] to put the range into the query there.
    pub fn with_timespan(mut self, timespan: impl Into<String>) -> HuntRequest {
        self.timespan = Some(timespan.into());
        self
    }

    /// A request for `query` over `[from, to)` on `surface`: Graph gets a `Timespan`
    /// (`start/end`); Defender XDR and Defender for Endpoint, which take none, get the
    /// range in the query, bound by the same rule as a ranged hunt
    /// ([`range`](crate::range)): `let _start = datetime(..); let _end = datetime(..);`
    /// before it, and `| where Timestamp >= _start and Timestamp < _end` after its
    /// table (after any leading comments and `let` statements; after the operands of a
    /// `union`), unless the query filters on `_start` and `_end` itself. A query this
    /// cannot bind (`search`, `print`...) is refused with what to write instead. On
    /// Graph, a query that names `_start` and `_end` gets them bound too.
    ///
    /// ```
    /// use defender_core::hunting::HuntRequest;
    /// use defender_core::Surface;
    /// use std::time::{Duration, UNIX_EPOCH};
    /// let (from, to) = (UNIX_EPOCH + Duration::from_secs(1_700_000_000), UNIX_EPOCH + Duration::from_secs(1_700_003_600));
    /// let r = HuntRequest::scoped(Surface::DefenderXdr, "let n = 5;\nAlertInfo | take n", from, to).unwrap();
    /// assert!(r.query.starts_with("let _start = datetime(2023-11-14T22:13:20"));
    /// assert!(r.query.ends_with("let n = 5;\nAlertInfo | where Timestamp >= _start and Timestamp < _end | take n"));
    /// assert!(r.timespan.is_none());
    /// let g = HuntRequest::scoped(Surface::Graph, "AlertInfo | take 5", from, to).unwrap();
    /// assert_eq!(g.query, "AlertInfo | take 5");
    /// assert!(g.timespan.unwrap().contains('/'));
    /// assert!(HuntRequest::scoped(Surface::DefenderXdr, "search \"x\"", from, to).is_err());
    /// ```
    pub fn scoped(
        surface: crate::Surface,
        query: &str,
        from: std::time::SystemTime,
        to: std::time::SystemTime,
    ) -> Result<HuntRequest, crate::Error> {
        use crate::range::{bind, bind_template, names_window};
        use crate::timefmt::format_rfc3339;
        if from >= to {
            return Err(crate::Error::InvalidRequest(
                "the time range is empty: its start must be before its end".into(),
            ));
        }
        if surface == crate::Surface::Graph {
            let query = match names_window(query) {
                true => bind(query.trim(), from, to),
                false => query.to_owned(),
            };
            return Ok(HuntRequest::new(query).with_timespan(format!(
                "{}/{}",
                format_rfc3339(from),
                format_rfc3339(to)
            )));
        }
        let template = bind_template(query).map_err(|e| {
            crate::Error::InvalidRequest(format!(
                "{surface} takes no Timespan, so the range goes into the query: {e}"
            ))
        })?;
        Ok(HuntRequest::new(bind(&template, from, to)))
    }
}

/// A column of the result schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    /// The column's name.
    #[serde(rename = "Name", alias = "name")]
    pub name: String,
    /// The column's type (`DateTime`, `String`, `Int64`, ...).
    #[serde(rename = "Type", alias = "type", default)]
    pub kind: String,
}

/// Execution statistics (Defender XDR only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Stats {
    /// Seconds the query ran: what the running-time budget is charged.
    #[serde(
        rename = "ExecutionTime",
        alias = "executionTime",
        alias = "execution_time",
        default
    )]
    pub execution_time: Option<f64>,
    /// `resource_usage`, `dataset_statistics` and whatever else the service sends.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Stats {
    /// The execution time as a duration, when it is a sane number.
    pub fn execution_duration(&self) -> Option<Duration> {
        self.execution_time
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| Duration::from_secs_f64(s.min(1e9)))
    }
}

/// The hunting response of any surface.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct HuntResponse {
    /// Statistics, when the surface sends them.
    #[serde(
        rename = "Stats",
        alias = "stats",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub stats: Option<Stats>,
    /// The columns.
    #[serde(rename = "Schema", alias = "schema", default)]
    pub schema: Vec<Column>,
    /// The rows.
    #[serde(rename = "Results", alias = "results", default)]
    pub results: Vec<Row>,
    /// Fields nobody documented.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl HuntResponse {
    /// Decodes a response body.
    pub fn from_slice(body: &[u8]) -> Result<HuntResponse, serde_json::Error> {
        serde_json::from_slice(body)
    }
}

/// A hunting result as the clients hand it out.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HuntResult {
    /// The columns, in order.
    pub schema: Vec<Column>,
    /// The rows.
    pub rows: Vec<Row>,
    /// The service's statistics, when it sent them.
    pub stats: Option<Stats>,
    /// The running time charged for this query (the `ExecutionTime`, or the time the
    /// call took when the surface reports none).
    pub running_time: Duration,
    /// The result has as many rows as the row cap: the service may have cut it, silently.
    pub truncated: bool,
    /// The row cap in force.
    pub row_cap: Option<u64>,
}

impl HuntResult {
    /// Builds a result from a decoded response, flagging truncation at `row_cap`.
    pub fn from_response(
        resp: HuntResponse,
        row_cap: Option<u64>,
        running_time: Duration,
    ) -> HuntResult {
        let truncated = row_cap.is_some_and(|cap| resp.results.len() as u64 >= cap);
        HuntResult {
            schema: resp.schema,
            rows: resp.results,
            stats: resp.stats,
            running_time,
            truncated,
            row_cap,
        }
    }
}

/// The end of a streamed hunting result (its rows went to the caller as they arrived).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HuntSummary {
    /// The columns, in order.
    pub schema: Vec<Column>,
    /// How many rows were handed out.
    pub rows: u64,
    /// The service's statistics, when it sent them.
    pub stats: Option<Stats>,
    /// The running time charged for this query.
    pub running_time: Duration,
    /// The result has as many rows as the row cap: the service may have cut it, silently.
    pub truncated: bool,
    /// The row cap in force.
    pub row_cap: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_xdr_response() {
        let body = br#"{"Stats": {"ExecutionTime": 4.621215,
           "resource_usage": {"cache": {"memory": {"hits": 0, "misses": 0, "total": 0}, "disk": {}},
                              "cpu": {"user": "00:00:19.0468750", "kernel": "00:00:00.0156250", "total cpu": "00:00:19.0625000"},
                              "memory": {"peak_per_node": 236822432}},
           "dataset_statistics": [{"table_row_count": 2, "table_size": 102}]},
 "Schema": [{"Name": "Timestamp", "Type": "DateTime"}, {"Name": "FileName", "Type": "String"}],
 "Results": [{"Timestamp": "2020-08-30T06:38:35.7664356Z", "FileName": "conhost.exe"}]}"#;
        let r = HuntResponse::from_slice(body).unwrap();
        let stats = r.stats.as_ref().unwrap();
        assert_eq!(
            stats.execution_duration(),
            Some(Duration::from_secs_f64(4.621215))
        );
        assert!(stats.extra.contains_key("resource_usage"));
        assert_eq!(
            r.schema[1],
            Column {
                name: "FileName".into(),
                kind: "String".into()
            }
        );
        let res = HuntResult::from_response(r, Some(1), Duration::ZERO);
        assert!(
            res.truncated,
            "a result of exactly the cap is treated as cut"
        );
    }

    #[test]
    fn request_bodies() {
        let body =
            serde_json::to_string(&HuntRequest::new("T | take 1").with_timespan("P7D")).unwrap();
        assert_eq!(body, r#"{"Query":"T | take 1","Timespan":"P7D"}"#);
        assert_eq!(
            serde_json::to_string(&HuntRequest::new("x")).unwrap(),
            r#"{"Query":"x"}"#
        );
    }

    #[test]
    fn bad_stats_never_fail() {
        let r =
            HuntResponse::from_slice(br#"{"Stats":{"ExecutionTime":-3},"Schema":[],"Results":[]}"#)
                .unwrap();
        assert_eq!(r.stats.unwrap().execution_duration(), None);
        assert!(
            HuntResponse::from_slice(br#"{"Schema":[{"Name":"a"}],"Results":[{"a":1}"#).is_err()
        );
    }
}
