//! `defender hunt --param NAME=VALUE`: values handed to a query as KQL `let` statements
//! put before it, quoted so that no value can change what the query does.
//!
//! | written                                   | prepended                                    |
//! |-------------------------------------------|----------------------------------------------|
//! | `--param user=alice`                      | `let user = "alice";` (always a string)      |
//! | `--param n:long=5`                        | `let n = 5;` (a whole number, checked)       |
//! | `--param r:real=0.5`                      | `let r = 0.5;`                               |
//! | `--param b:bool=true`                     | `let b = true;`                              |
//! | `--param t:datetime=2026-11-01T00:00:00Z` | `let t = datetime(2026-11-01T00:00:00Z);`    |
//! | `--param d:timespan=90m`                  | `let d = 5400s;`                             |
//!
//! A string is written between double quotes with `\` and `"` escaped, and a tab,
//! newline or carriage return as `\t`, `\n`, `\r`; other control characters are refused.
//! A name must be a KQL identifier (a letter or `_`, then letters, digits, `_`), not a
//! keyword, and not `_start` or `_end`, which `--timespan`, `--from` and `--to` bind.

use defender_core::limits::parse_duration;
use defender_core::timefmt::{format_rfc3339, parse_rfc3339};

/// One `--param`: a name and the KQL literal its value became.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Param {
    name: String,
    literal: String,
}

/// What a value may be written as, after `NAME:`.
const TYPES: &str = "string, long, real, bool, datetime, timespan";

/// Words KQL reserves, which cannot name a `let`.
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "not",
    "let",
    "set",
    "declare",
    "true",
    "false",
    "in",
    "between",
    "by",
    "on",
    "of",
    "with",
    "where",
    "project",
    "extend",
    "summarize",
    "take",
    "limit",
    "top",
    "sort",
    "order",
    "union",
    "search",
    "print",
    "datetime",
    "timespan",
    "dynamic",
    "real",
    "long",
    "int",
    "string",
    "bool",
    "guid",
    "decimal",
];

/// Parses `NAME=VALUE` or `NAME:TYPE=VALUE` (clap's value parser for `--param`).
pub(crate) fn parse(s: &str) -> Result<Param, String> {
    let (lhs, value) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not NAME=VALUE (or NAME:TYPE=VALUE)"))?;
    let (name, ty) = match lhs.split_once(':') {
        Some((n, t)) => (n.trim(), t.trim()),
        None => (lhs.trim(), "string"),
    };
    check_name(name)?;
    let bad = |what: &str| format!("{name}: `{value}` is not {what}");
    let literal = match ty {
        "string" => quoted(value).map_err(|e| format!("{name}: {e}"))?,
        "long" | "int" => value
            .trim()
            .parse::<i64>()
            .map_err(|_| bad("a whole number"))?
            .to_string(),
        "real" | "double" => {
            let r = value
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|r| r.is_finite())
                .ok_or_else(|| bad("a finite number"))?;
            let t = r.to_string();
            if t.contains('.') {
                t
            } else {
                format!("{t}.0")
            }
        }
        "bool" => value
            .trim()
            .parse::<bool>()
            .map_err(|_| bad("true or false"))?
            .to_string(),
        "datetime" => {
            let t = parse_rfc3339(value.trim())
                .ok_or_else(|| bad("a time such as 2026-11-01T00:00:00Z"))?;
            format!("datetime({})", format_rfc3339(t))
        }
        "timespan" => {
            let d = parse_duration(value.trim()).map_err(|_| bad("a span such as 90m or 1d"))?;
            if d.subsec_nanos() % 1_000_000 != 0 {
                return Err(bad("a span of whole milliseconds"));
            }
            match d.subsec_millis() {
                0 => format!("{}s", d.as_secs()),
                _ => format!("{}ms", d.as_millis()),
            }
        }
        other => return Err(format!("{name}: unknown type `{other}` (use {TYPES})")),
    };
    Ok(Param {
        name: name.to_owned(),
        literal,
    })
}

/// `query` with a `let` statement for each parameter before it, in the order given.
pub(crate) fn prepend(params: &[Param], query: &str) -> String {
    let mut out = String::new();
    for p in params {
        out.push_str(&format!("let {} = {};\n", p.name, p.literal));
    }
    out.push_str(query);
    out
}

fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let identifier = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !identifier {
        return Err(format!(
            "`{name}` is not a KQL name (a letter or _, then letters, digits or _)"
        ));
    }
    if KEYWORDS.contains(&name.to_ascii_lowercase().as_str()) {
        return Err(format!("`{name}` is a KQL keyword; choose another name"));
    }
    if name == "_start" || name == "_end" {
        return Err(format!(
            "`{name}` is bound by --timespan, --from and --to; choose another name"
        ));
    }
    Ok(())
}

/// `s` as a KQL string literal between double quotes.
fn quoted(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                return Err(format!(
                    "the value holds the control character {}, which a KQL string cannot carry",
                    c.escape_default()
                ))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(s: &str) -> String {
        parse(s).unwrap().literal
    }

    #[test]
    fn strings_are_quoted_and_escaped() {
        assert_eq!(lit("a=x"), "\"x\"");
        assert_eq!(lit("a=5"), "\"5\"", "a number stays a string unless typed");
        assert_eq!(lit(r#"a=C:\temp\"x" y"#), r#""C:\\temp\\\"x\" y""#);
        assert_eq!(lit("a=x=y"), "\"x=y\"", "the first = splits");
        assert_eq!(lit("a=l1\nl2\t"), "\"l1\\nl2\\t\"");
        assert!(parse("a=\u{1b}[2J").is_err());
    }

    #[test]
    fn typed_values_are_checked() {
        assert_eq!(lit("n:long=-5"), "-5");
        assert_eq!(lit("r:real=2"), "2.0");
        assert_eq!(lit("r:real=0.25"), "0.25");
        assert_eq!(lit("b:bool=true"), "true");
        assert_eq!(
            lit("t:datetime=2026-11-01T00:00:00Z"),
            "datetime(2026-11-01T00:00:00Z)"
        );
        assert_eq!(lit("d:timespan=90m"), "5400s");
        for bad in [
            "n:long=5; T",
            "n:long=1.5",
            "r:real=NaN",
            "b:bool=yes",
            "t:datetime=today",
            "x:guid=1",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_are_kql_identifiers() {
        for bad in [
            "", "1a", "a-b", "a b", "x;T", "let", "Where", "_start", "_end",
        ] {
            assert!(parse(&format!("{bad}=1")).is_err(), "{bad}");
        }
        assert!(parse("novalue").is_err());
        assert!(parse("_user2=1").is_ok());
    }

    #[test]
    fn statements_come_before_the_query_in_order() {
        let ps = [parse("a=x").unwrap(), parse("n:long=3").unwrap()];
        assert_eq!(
            prepend(&ps, "T | take n"),
            "let a = \"x\";\nlet n = 3;\nT | take n"
        );
        assert_eq!(prepend(&[], "T"), "T");
    }
}
