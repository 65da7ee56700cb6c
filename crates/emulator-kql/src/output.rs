//! Query results and their JSON forms.

use std::io::Write as _;

use crate::value::{format_datetime, format_timespan, DataType, Value};

/// One result column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Column name.
    pub name: String,
    /// The type name the hunting API puts in `Schema` (`"DateTime"`, `"String"`, `"Int64"`...).
    pub type_name: &'static str,
    /// The same type as an enum.
    pub data_type: DataType,
}

/// Which JSON shape to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonStyle {
    /// Defender XDR / Defender for Endpoint: `{"Schema":[{"Name","Type"}],"Results":[..]}`.
    Defender,
    /// Microsoft Graph `runHuntingQuery`: `{"schema":[{"name","type"}],"results":[..]}`.
    Graph,
}

/// The result of [`run`](crate::run).
///
/// `rows_scanned` and `operators` exist so the emulator can derive a simulated execution
/// time (and CPU usage for quota accounting) from the work a query did.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryOutput {
    /// Result columns.
    pub schema: Vec<Column>,
    /// Result rows, values in `schema` order.
    pub rows: Vec<Vec<Value>>,
    /// Rows read from the source table after the lookback cut (rows older than the
    /// hunting window are not read, as if the service had pruned them).
    pub rows_scanned: u64,
    /// Number of pipeline operators (`| where`, `| project`, ...); `let` statements and
    /// the table reference do not count.
    pub operators: u32,
    /// True when the result had more than `row_cap` rows and was cut (silently, as the
    /// real service does; clients should also treat exactly `row_cap` rows as truncated).
    pub truncated: bool,
    /// What the emulator did differently from the service because it is offline (for
    /// example, `externaldata` returns its declared columns with no rows).
    pub warnings: Vec<String>,
}

/// A value as `serde_json`: datetimes as ISO-8601 UTC strings, timespans as
/// `d.hh:mm:ss.fffffff`, non-finite reals as the strings `NaN`, `Infinity`, `-Infinity`.
pub fn value_to_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Null => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) => J::from(*i),
        Value::Real(f) => serde_json::Number::from_f64(*f)
            .map(J::Number)
            .unwrap_or_else(|| J::String(v.to_text())),
        Value::Str(s) => J::String(s.to_string()),
        Value::DateTime(_) | Value::TimeSpan(_) => J::String(v.to_text()),
        Value::Dynamic(j) => (**j).clone(),
    }
}

impl QueryOutput {
    /// Row `i` as a JSON object keyed by column name. Panics if `i` is out of range.
    pub fn row_json(&self, i: usize) -> serde_json::Map<String, serde_json::Value> {
        self.schema
            .iter()
            .zip(&self.rows[i])
            .map(|(c, v)| (c.name.clone(), value_to_json(v)))
            .collect()
    }

    /// The whole response body as a `serde_json::Value` (slower than [`write_json`](Self::write_json)).
    pub fn to_json(&self, style: JsonStyle) -> serde_json::Value {
        let (schema, results, name, ty) = keys(style);
        let schema_json: Vec<serde_json::Value> = self
            .schema
            .iter()
            .map(|c| {
                let mut m = serde_json::Map::new();
                m.insert(name.to_string(), c.name.clone().into());
                m.insert(ty.to_string(), c.type_name.into());
                serde_json::Value::Object(m)
            })
            .collect();
        let rows: Vec<serde_json::Value> = (0..self.rows.len())
            .map(|i| serde_json::Value::Object(self.row_json(i)))
            .collect();
        let mut m = serde_json::Map::new();
        m.insert(schema.to_string(), schema_json.into());
        m.insert(results.to_string(), rows.into());
        serde_json::Value::Object(m)
    }

    /// Appends the response body to `out`, writing bytes directly (no intermediate
    /// `serde_json::Value`): `{"Schema":[...],"Results":[...]}` or the Graph shape.
    pub fn write_json(&self, style: JsonStyle, out: &mut Vec<u8>) {
        self.write_json_within(style, out, usize::MAX);
    }

    /// [`write_json`](Self::write_json), but stops as soon as `out` holds more than
    /// `max_bytes` (checked after every row) and returns `false`: a result over a size
    /// cap is refused without first being written out whole.
    pub fn write_json_within(&self, style: JsonStyle, out: &mut Vec<u8>, max_bytes: usize) -> bool {
        let (schema, results, name, ty) = keys(style);
        out.extend_from_slice(b"{\"");
        out.extend_from_slice(schema.as_bytes());
        out.extend_from_slice(b"\":[");
        for (i, c) in self.schema.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let _ = write!(out, "{{\"{name}\":");
            write_str(out, &c.name);
            let _ = write!(out, ",\"{ty}\":\"{}\"}}", c.type_name);
        }
        out.extend_from_slice(b"],\"");
        out.extend_from_slice(results.as_bytes());
        out.extend_from_slice(b"\":[");
        // Pre-escape the keys once.
        let keys: Vec<Vec<u8>> = self
            .schema
            .iter()
            .map(|c| {
                let mut k = Vec::new();
                write_str(&mut k, &c.name);
                k.push(b':');
                k
            })
            .collect();
        let mut text = String::new();
        for (r, row) in self.rows.iter().enumerate() {
            if r > 0 {
                out.push(b',');
            }
            out.push(b'{');
            for (i, (k, v)) in keys.iter().zip(row).enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(k);
                write_value(out, v, &mut text);
            }
            out.push(b'}');
            if out.len() > max_bytes {
                return false;
            }
        }
        out.extend_from_slice(b"]}");
        out.len() <= max_bytes
    }

    /// [`write_json`](Self::write_json) into a fresh buffer.
    pub fn to_json_bytes(&self, style: JsonStyle) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.rows.len() * self.schema.len() * 24);
        self.write_json(style, &mut out);
        out
    }
}

fn keys(style: JsonStyle) -> (&'static str, &'static str, &'static str, &'static str) {
    match style {
        JsonStyle::Defender => ("Schema", "Results", "Name", "Type"),
        JsonStyle::Graph => ("schema", "results", "name", "type"),
    }
}

fn write_value(out: &mut Vec<u8>, v: &Value, text: &mut String) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Real(f) => {
            if f.is_finite() {
                let _ = write!(out, "{f:?}");
            } else {
                write_str(out, &v.to_text());
            }
        }
        Value::Str(s) => write_str(out, s),
        Value::DateTime(t) => {
            text.clear();
            format_datetime(*t, text);
            write_str(out, text);
        }
        Value::TimeSpan(t) => {
            text.clear();
            format_timespan(*t, text);
            write_str(out, text);
        }
        Value::Dynamic(j) => {
            let _ = serde_json::to_writer(&mut *out, &**j);
        }
    }
}

/// Writes a JSON string literal.
fn write_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let b = s.as_bytes();
    let mut run = 0;
    for (i, &c) in b.iter().enumerate() {
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&b[run..i]);
        if esc.is_empty() {
            let _ = write!(out, "\\u{c:04x}");
        } else {
            out.extend_from_slice(esc);
        }
        run = i + 1;
    }
    out.extend_from_slice(&b[run..]);
    out.push(b'"');
}
