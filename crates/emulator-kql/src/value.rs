//! Scalar values, data types and the datetime/timespan text formats.

use std::cmp::Ordering;
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use defender_core::timefmt::{
    parse_datetime_ticks, parse_timespan_ticks, write_rfc3339_ticks, write_timespan_ticks, Fraction,
};
/// KQL datetimes and timespans are 100 ns ticks, as in .NET; the calendar and the text
/// forms are [`defender_core::timefmt`]'s.
pub use defender_core::timefmt::{TICKS_PER_DAY, TICKS_PER_MS, TICKS_PER_SEC};

/// The type of a column or expression, named as the hunting API names it in `Schema`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    /// `Boolean`
    Bool,
    /// `Int32`
    Int,
    /// `Int64`
    Long,
    /// `Double`
    Real,
    /// `String`
    String,
    /// `DateTime`
    DateTime,
    /// `TimeSpan`
    TimeSpan,
    /// `Object`: a KQL `dynamic` (an array, a property bag or any scalar).
    Dynamic,
}

impl DataType {
    /// The name used in the hunting response `Schema` (`"DateTime"`, `"Int64"`, ...).
    pub fn schema_name(self) -> &'static str {
        match self {
            DataType::Bool => "Boolean",
            DataType::Int => "Int32",
            DataType::Long => "Int64",
            DataType::Real => "Double",
            DataType::String => "String",
            DataType::DateTime => "DateTime",
            DataType::TimeSpan => "TimeSpan",
            DataType::Dynamic => "Object",
        }
    }

    /// The KQL name of the type (`"long"`, `"datetime"`, ...), used in error messages.
    pub fn kql_name(self) -> &'static str {
        match self {
            DataType::Bool => "bool",
            DataType::Int => "int",
            DataType::Long => "long",
            DataType::Real => "real",
            DataType::String => "string",
            DataType::DateTime => "datetime",
            DataType::TimeSpan => "timespan",
            DataType::Dynamic => "dynamic",
        }
    }

    pub(crate) fn is_numeric(self) -> bool {
        matches!(self, DataType::Int | DataType::Long | DataType::Real)
    }
}

/// One scalar value.
///
/// `Int` holds both `Int32` and `Int64` values (the column type tells them apart).
/// `DateTime` is 100-ns ticks since the Unix epoch (UTC); `TimeSpan` is a signed tick count.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A missing value (e.g. the result of integer division by zero).
    Null,
    /// A boolean.
    Bool(bool),
    /// An `Int32` or `Int64`.
    Int(i64),
    /// A `Double`.
    Real(f64),
    /// A string (interned: cloning is a reference-count increment).
    Str(Arc<str>),
    /// 100-ns ticks since 1970-01-01T00:00:00Z.
    DateTime(i64),
    /// A signed duration in 100-ns ticks.
    TimeSpan(i64),
    /// A `dynamic` array or property bag. Scalars taken out of one (`x.y`, `x[0]`) are
    /// the plain variants above; build one with [`Value::from_json`].
    Dynamic(Arc<serde_json::Value>),
}

impl Value {
    /// A string value.
    pub fn str(s: &str) -> Value {
        Value::Str(Arc::from(s))
    }

    /// The value of a JSON document: arrays and objects become [`Value::Dynamic`],
    /// scalars the plain variants (integers that fit `Int`, other numbers `Real`).
    pub fn from_json(j: serde_json::Value) -> Value {
        use serde_json::Value as J;
        match j {
            J::Null => Value::Null,
            J::Bool(b) => Value::Bool(b),
            J::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => n.as_f64().map_or(Value::Null, Value::Real),
            },
            J::String(s) => Value::str(&s),
            j @ (J::Array(_) | J::Object(_)) => Value::Dynamic(Arc::new(j)),
        }
    }

    /// A datetime value from Unix milliseconds.
    pub fn datetime_ms(unix_ms: i64) -> Value {
        Value::DateTime(unix_ms.saturating_mul(TICKS_PER_MS))
    }

    /// The string, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is an `Int`.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The text KQL's `tostring()` would produce (datetimes as ISO-8601, null as empty).
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        self.write_text(&mut s);
        s
    }

    pub(crate) fn write_text(&self, out: &mut String) {
        match self {
            Value::Null => {}
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Value::Real(f) => write_real(out, *f),
            Value::Str(s) => out.push_str(s),
            Value::DateTime(t) => format_datetime(*t, out),
            Value::TimeSpan(t) => format_timespan(*t, out),
            Value::Dynamic(j) => {
                let _ = write!(out, "{j}");
            }
        }
    }
}

pub(crate) fn write_real(out: &mut String, f: f64) {
    if f.is_nan() {
        out.push_str("NaN");
    } else if f.is_infinite() {
        out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
    } else {
        let _ = write!(out, "{f}");
    }
}

/// A total order over values used by `sort`, `top`, `min` and `max`: null sorts lowest,
/// numbers compare numerically across `Int`/`Real`, strings ordinally.
pub(crate) fn order_cmp(a: &Value, b: &Value) -> Ordering {
    fn rank(v: &Value) -> u8 {
        match v {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Int(_) | Value::Real(_) => 2,
            Value::Str(_) => 3,
            Value::DateTime(_) => 4,
            Value::TimeSpan(_) => 5,
            Value::Dynamic(_) => 6,
        }
    }
    match (a, b) {
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Int(x), Value::Int(y)) => x.cmp(y),
        (Value::Real(x), Value::Real(y)) => x.total_cmp(y),
        (Value::Int(x), Value::Real(y)) => (*x as f64).total_cmp(y),
        (Value::Real(x), Value::Int(y)) => x.total_cmp(&(*y as f64)),
        (Value::Str(x), Value::Str(y)) => x.as_ref().cmp(y.as_ref()),
        (Value::DateTime(x), Value::DateTime(y)) | (Value::TimeSpan(x), Value::TimeSpan(y)) => {
            x.cmp(y)
        }
        (Value::Dynamic(x), Value::Dynamic(y)) => x.to_string().cmp(&y.to_string()),
        _ => rank(a).cmp(&rank(b)),
    }
}

/// A value usable as a hash key (grouping in `summarize`/`distinct`, `dcount`).
#[derive(Debug, Clone)]
pub(crate) struct KeyVal(pub Value);

impl PartialEq for KeyVal {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Value::Real(a), Value::Real(b)) => canon_bits(*a) == canon_bits(*b),
            (a, b) => a == b,
        }
    }
}
impl Eq for KeyVal {}

fn canon_bits(f: f64) -> u64 {
    if f.is_nan() {
        f64::NAN.to_bits()
    } else if f == 0.0 {
        0
    } else {
        f.to_bits()
    }
}

impl Hash for KeyVal {
    fn hash<H: Hasher>(&self, h: &mut H) {
        match &self.0 {
            Value::Null => 0u8.hash(h),
            Value::Bool(b) => (1u8, b).hash(h),
            Value::Int(i) => (2u8, i).hash(h),
            Value::Real(f) => (3u8, canon_bits(*f)).hash(h),
            Value::Str(s) => (4u8, s.as_ref()).hash(h),
            Value::DateTime(t) => (5u8, t).hash(h),
            Value::TimeSpan(t) => (6u8, t).hash(h),
            Value::Dynamic(j) => (7u8, j.to_string()).hash(h),
        }
    }
}

/// Writes ticks as ISO-8601 UTC: `2024-02-01T08:00:00.1234567Z`; trailing zero fraction
/// digits are dropped (`2024-02-01T08:00:00Z` when the fraction is zero).
pub fn format_datetime(ticks: i64, out: &mut String) {
    write_rfc3339_ticks(out, ticks, Fraction::Trimmed);
}

/// Writes a timespan as KQL does: `[-][d.]hh:mm:ss[.fffffff]`, trailing zeros dropped.
pub fn format_timespan(ticks: i64, out: &mut String) {
    write_timespan_ticks(out, ticks, Fraction::Trimmed);
}

/// Parses the text inside `datetime(...)`: `2024-01-01`, `2024-01-01T08:00:00Z`,
/// `2024-01-01 08:00:00`, `2024-01-01T08:00`, with an optional fraction of up to 7 digits
/// and an optional trailing `Z`. Returns ticks since the Unix epoch.
pub fn parse_datetime(text: &str) -> Option<i64> {
    parse_datetime_ticks(text)
}

/// Ticks per unit for a timespan literal suffix (`d`, `h`, `m`, `s`, `ms`, ...).
pub(crate) fn timespan_unit(unit: &str) -> Option<i64> {
    Some(match unit {
        "d" | "day" | "days" => TICKS_PER_DAY,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3600 * TICKS_PER_SEC,
        "m" | "min" | "minute" | "minutes" => 60 * TICKS_PER_SEC,
        "s" | "sec" | "second" | "seconds" => TICKS_PER_SEC,
        "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => TICKS_PER_MS,
        "microsecond" | "microseconds" => 10,
        "tick" | "ticks" => 1,
        _ => return None,
    })
}

/// Parses the text inside `timespan(...)`: a literal like `1d`/`1.5h`, or `[d.]hh:mm[:ss[.f]]`.
pub(crate) fn parse_timespan_text(text: &str) -> Option<i64> {
    let t = text.trim();
    let (neg, t) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t),
    };
    let v = if t.contains(':') {
        parse_timespan_ticks(t)?
    } else {
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (n, unit) = t.split_at(split);
        let unit = timespan_unit(unit)?;
        scale_timespan(n, unit)?
    };
    Some(if neg { -v } else { v })
}

/// `n` (decimal digits, optional fraction) times `unit` ticks, or `None` on overflow.
pub(crate) fn scale_timespan(n: &str, unit: i64) -> Option<i64> {
    if n.is_empty() {
        return None;
    }
    if n.contains('.') {
        let f: f64 = n.parse().ok()?;
        let v = f * unit as f64;
        (v.is_finite() && v.abs() < 9.0e18).then_some(v.round() as i64)
    } else {
        n.parse::<i64>().ok()?.checked_mul(unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use defender_core::timefmt::{civil_from_days, days_from_civil};

    #[test]
    fn civil_roundtrip() {
        for z in [-800_000i64, -1, 0, 1, 19_000, 2_932_896] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
    }

    #[test]
    fn datetime_formats() {
        let t = parse_datetime("2024-02-01T08:00:00.1234567Z").unwrap();
        let mut s = String::new();
        format_datetime(t, &mut s);
        assert_eq!(s, "2024-02-01T08:00:00.1234567Z");
        assert_eq!(
            parse_datetime("2024-02-01 08:00:00"),
            parse_datetime("2024-02-01T08:00:00Z")
        );
        assert_eq!(parse_datetime("1970-01-01"), Some(0));
        assert_eq!(parse_datetime("2024-02-30"), None);
        assert_eq!(parse_datetime("2024-02-01T25:00:00Z"), None);
        let mut s = String::new();
        format_datetime(parse_datetime("2024-01-01T00:00:00.5").unwrap(), &mut s);
        assert_eq!(s, "2024-01-01T00:00:00.5Z");
    }

    #[test]
    fn timespan_formats() {
        let mut s = String::new();
        format_timespan(TICKS_PER_DAY + 2 * 3600 * TICKS_PER_SEC + 5, &mut s);
        assert_eq!(s, "1.02:00:00.0000005");
        assert_eq!(parse_timespan_text("1.5h"), Some(5400 * TICKS_PER_SEC));
        assert_eq!(
            parse_timespan_text("1.00:30:00"),
            Some(TICKS_PER_DAY + 1800 * TICKS_PER_SEC)
        );
        assert_eq!(parse_timespan_text("00:00:01.5"), Some(15_000_000));
    }
}
