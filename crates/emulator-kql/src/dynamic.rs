//! `dynamic` values: JSON arrays and property bags, what is taken out of them (`x.y`,
//! `x[i]`, `extractjson`) and what builds them (`parse_json`, `pack_array`, `split`...).
//!
//! A value built here never nests deeper than [`MAX_JSON_DEPTH`]: `serde_json` drops,
//! compares and writes a value recursively, so an unbounded nesting built one
//! `pack_array` at a time would exhaust the stack; past the bound the result is null.

use std::sync::Arc;

use serde_json::Value as J;

use crate::output::value_to_json;
use crate::value::Value;

/// The deepest `dynamic` value a query can build: the nesting `serde_json` itself
/// accepts when it parses a document (128).
pub(crate) const MAX_JSON_DEPTH: usize = 128;

/// What a JSON value costs in memory, roughly: its strings' bytes and 32 bytes a node.
pub(crate) fn json_bytes(j: &J) -> usize {
    32 + match j {
        J::String(s) => s.len(),
        J::Array(a) => a.iter().map(json_bytes).sum(),
        J::Object(m) => m.iter().map(|(k, v)| k.len() + json_bytes(v)).sum(),
        _ => 0,
    }
}

fn depth(j: &J) -> usize {
    match j {
        J::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        J::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// A value as JSON, for storing inside a `dynamic`.
pub(crate) fn to_json(v: &Value) -> J {
    value_to_json(v)
}

/// `j` as a value, or null when it nests deeper than [`MAX_JSON_DEPTH`].
pub(crate) fn bounded(j: J) -> Value {
    if depth(&j) > MAX_JSON_DEPTH {
        Value::Null
    } else {
        Value::from_json(j)
    }
}

/// An array of `items`, or null if it would nest too deep.
pub(crate) fn array(items: Vec<J>) -> Value {
    bounded(J::Array(items))
}

/// The elements of an array value (`None` for anything else).
pub(crate) fn elements(v: &Value) -> Option<&[J]> {
    match v {
        Value::Dynamic(j) => j.as_array().map(Vec::as_slice),
        _ => None,
    }
}

/// `base[key]` and `base.key`: an array indexed by an integer (negative counts from the
/// end) or a bag by a string. A missing key, an index out of range or a base that is
/// neither is null, not an error (as in KQL).
pub(crate) fn index(base: &Value, key: &Value) -> Value {
    let Value::Dynamic(j) = base else {
        return Value::Null;
    };
    let found = match (&**j, key) {
        (J::Array(a), Value::Int(i)) => {
            let i = if *i < 0 {
                i64::try_from(a.len()).ok().and_then(|n| n.checked_add(*i))
            } else {
                Some(*i)
            };
            i.and_then(|i| usize::try_from(i).ok())
                .and_then(|i| a.get(i))
        }
        (J::Object(m), Value::Str(k)) => m.get(k.as_ref()),
        _ => None,
    };
    found.map_or(Value::Null, |j| Value::from_json(j.clone()))
}

/// `parse_json(text)`: the document a string holds; a string that is not JSON stays a
/// string, and a value that is not a string is returned as it is.
pub(crate) fn parse_json(v: Value) -> Value {
    match &v {
        Value::Str(s) => match serde_json::from_str::<J>(s) {
            Ok(j) => bounded(j),
            Err(_) => v,
        },
        _ => v,
    }
}

/// `extractjson(path, text)`: the element at a JSONPath of the form `$.a.b[0]['c']`, as a
/// string (null when the path or the text is not understood or nothing is there).
pub(crate) fn extract_json(path: &str, text: &str) -> Value {
    let Ok(doc) = serde_json::from_str::<J>(text) else {
        return Value::Null;
    };
    let Some(mut rest) = path.trim().strip_prefix('$') else {
        return Value::Null;
    };
    let mut cur = &doc;
    while !rest.is_empty() {
        let next = if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let (key, r) = r.split_at(end);
            rest = r;
            cur.get(key)
        } else if let Some(r) = rest.strip_prefix('[') {
            let Some(close) = r.find(']') else {
                return Value::Null;
            };
            let (inner, r) = r.split_at(close);
            rest = &r[1..];
            let inner = inner.trim();
            match inner.parse::<usize>() {
                Ok(i) => cur.get(i),
                Err(_) => cur.get(inner.trim_matches(|c| c == '\'' || c == '"')),
            }
        } else {
            return Value::Null;
        };
        match next {
            Some(n) => cur = n,
            None => return Value::Null,
        }
    }
    match cur {
        J::Null => Value::Null,
        J::String(s) => Value::str(s),
        other => Value::str(&other.to_string()),
    }
}

/// `split(text, delimiter)`: the parts, as a `dynamic` array of strings.
pub(crate) fn split(text: &str, delim: &str) -> Vec<J> {
    if delim.is_empty() {
        return vec![J::String(text.to_string())];
    }
    text.split(delim)
        .map(|p| J::String(p.to_string()))
        .collect()
}

/// A property bag of `pairs`, or null if it would nest too deep.
pub(crate) fn bag(pairs: Vec<(String, J)>) -> Value {
    bounded(J::Object(pairs.into_iter().collect()))
}

/// The text of an element of a `dynamic` (strings without their quotes).
pub(crate) fn element_text(j: &J, out: &mut String) {
    match j {
        J::Null => {}
        J::String(s) => out.push_str(s),
        other => out.push_str(&other.to_string()),
    }
}

/// A shared `dynamic` value of `j` (arrays and bags only; used by the aggregates).
pub(crate) fn shared(j: J) -> Value {
    Value::Dynamic(Arc::new(j))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_and_extract() {
        let v = parse_json(Value::str(r#"{"a":[1,"x",{"b":true}]}"#));
        let a = index(&v, &Value::str("a"));
        assert_eq!(index(&a, &Value::Int(1)), Value::str("x"));
        assert_eq!(index(&a, &Value::Int(-3)), Value::Int(1));
        assert_eq!(index(&a, &Value::Int(-4)), Value::Null);
        assert_eq!(index(&a, &Value::Int(3)), Value::Null);
        assert_eq!(index(&v, &Value::str("missing")), Value::Null);
        assert_eq!(
            extract_json("$.a[2].b", r#"{"a":[1,"x",{"b":true}]}"#),
            Value::str("true")
        );
        assert_eq!(
            extract_json("$['a'][1]", r#"{"a":[1,"x"]}"#),
            Value::str("x")
        );
        assert_eq!(extract_json("$.z", r#"{"a":1}"#), Value::Null);
        assert_eq!(parse_json(Value::str("not json")), Value::str("not json"));
    }

    #[test]
    fn nesting_is_bounded() {
        let mut j = J::Null;
        for _ in 0..MAX_JSON_DEPTH {
            j = J::Array(vec![j]);
        }
        assert!(matches!(bounded(j.clone()), Value::Dynamic(_)));
        assert_eq!(array(vec![j]), Value::Null);
    }
}
