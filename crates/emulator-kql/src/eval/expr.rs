//! Bound expressions (`CExpr`): what the binder compiles a scalar expression into,
//! the rows they are evaluated on, and their evaluation with null-aware logic.

#[allow(unused_imports)]
use super::*;

// ---------------------------------------------------------------------------------------
// Bound expressions

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Func {
    ToLower,
    ToUpper,
    StrLen,
    IsEmpty,
    IsNotEmpty,
    IsNull,
    IsNotNull,
    ToStr,
    Bin,
    StartOfDay,
    Iff,
    StrCat,
    /// `case(c1, v1, c2, v2, ..., else)`
    Case,
    ParseJson,
    ExtractJson,
    ArrayLength,
    /// `split(text, delimiter [, index])`
    Split,
    StrCatArray,
    PackArray,
    BagPack,
    /// `x[i]`, `x.y`
    Index,
    ToLong,
    ToReal,
    ToBool,
    ToDateTime,
    Round,
    /// `datetime_diff(part, a, b)`: period boundaries between `b` and `a`.
    DatetimeDiff,
    /// `format_datetime(dt, format)`
    FormatDatetime,
    /// `datetime_add(part, amount, dt)`
    DatetimeAdd,
    /// `coalesce(a, b, ...)`: the first non-null (non-empty string) argument.
    Coalesce,
    ReplaceString,
    /// `substring(text, start [, length])`, in characters.
    Substring,
    /// `indexof(text, lookup [, start])`, in characters, -1 when absent.
    IndexOf,
    /// `countof(text, search)`: occurrences, overlapping ones included.
    CountOf,
    /// Days since the last Sunday, as a timespan.
    DayOfWeek,
    HourOfDay,
    Ipv4IsPrivate,
    Base64DecodeToString,
    /// `prev(x [, offset [, default]])` (`Prev`) and `next(...)`: `x` on another row of
    /// the serialized input.
    Prev,
    Next,
}

/// What a compiled regular expression is used for.
#[derive(Debug, Clone)]
pub(super) enum RegexUse {
    /// `text matches regex re`
    Matches,
    /// `extract(re, group, text [, typeof(T)])`
    Extract(usize),
    /// `extract_all(re, [groups,] text)`: every match, the groups of each.
    ExtractAll(Vec<usize>),
    /// `replace_regex(text, re, rewrite)` / `replace(re, rewrite, text)`: the rewrite in
    /// the regex crate's syntax (`\1` becomes `${1}`).
    Replace(String),
    /// `countof(text, re, "regex")`: non-overlapping matches.
    Count,
}

#[derive(Debug, Clone)]
pub(super) enum CKind {
    Lit(Value),
    Col(usize),
    Neg(Box<CExpr>),
    Arith(BinOp, Box<CExpr>, Box<CExpr>),
    Cmp(BinOp, Box<CExpr>, Box<CExpr>),
    StrOp {
        op: StrOp,
        negated: bool,
        cs: bool,
        l: Box<CExpr>,
        r: Box<CExpr>,
    },
    And(Box<CExpr>, Box<CExpr>),
    Or(Box<CExpr>, Box<CExpr>),
    Not(Box<CExpr>),
    In {
        e: Box<CExpr>,
        set: Vec<Value>,
        negated: bool,
        ci: bool,
    },
    /// `has_any` (`all` false) and `has_all` over constant terms.
    HasTerms {
        e: Box<CExpr>,
        terms: Vec<Arc<str>>,
        all: bool,
    },
    Between {
        e: Box<CExpr>,
        lo: Box<CExpr>,
        hi: Box<CExpr>,
        negated: bool,
    },
    Func(Func, Vec<CExpr>),
    Regex {
        re: Arc<regex::Regex>,
        usage: RegexUse,
        text: Box<CExpr>,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct CExpr {
    pub(super) kind: CKind,
    pub(super) ty: DataType,
}

impl CExpr {
    pub(super) fn lit(v: Value, ty: DataType) -> CExpr {
        CExpr {
            kind: CKind::Lit(v),
            ty,
        }
    }
    pub(super) fn children(&self) -> Vec<&CExpr> {
        match &self.kind {
            CKind::Lit(_) | CKind::Col(_) => vec![],
            CKind::Neg(a) | CKind::Not(a) => vec![a],
            CKind::Arith(_, a, b) | CKind::Cmp(_, a, b) | CKind::And(a, b) | CKind::Or(a, b) => {
                vec![a, b]
            }
            CKind::StrOp { l, r, .. } => vec![l, r],
            CKind::In { e, .. } | CKind::HasTerms { e, .. } => vec![e],
            CKind::Regex { text, .. } => vec![text],
            CKind::Between { e, lo, hi, .. } => vec![e, lo, hi],
            CKind::Func(_, args) => args.iter().collect(),
        }
    }
    pub(super) fn is_const(&self) -> bool {
        matches!(self.kind, CKind::Lit(_))
    }
    /// Whether evaluating this reads other rows (`prev`, `next`).
    pub(super) fn reads_neighbours(&self) -> bool {
        matches!(self.kind, CKind::Func(Func::Prev | Func::Next, _))
            || self.children().iter().any(|c| c.reads_neighbours())
    }

    pub(super) fn columns(&self, out: &mut Vec<usize>) {
        if let CKind::Col(c) = self.kind {
            if !out.contains(&c) {
                out.push(c);
            }
        }
        for ch in self.children() {
            ch.columns(out);
        }
    }
}

/// Row access for evaluation.
pub(super) trait Row {
    fn get(&self, c: usize) -> Value;
    /// Column `c` of the row `d` rows away (`prev`/`next`); null where there is none.
    fn get_at(&self, _c: usize, _d: i64) -> Value {
        Value::Null
    }
    /// Whether there is a row `d` rows away.
    fn exists_at(&self, _d: i64) -> bool {
        false
    }
}

/// The row `d` rows away from another (what `prev(x)` and `next(x)` evaluate `x` on).
pub(super) struct Shifted<'r> {
    pub(super) r: &'r dyn Row,
    pub(super) d: i64,
}
impl Row for Shifted<'_> {
    fn get(&self, c: usize) -> Value {
        self.r.get_at(c, self.d)
    }
    fn get_at(&self, c: usize, d: i64) -> Value {
        self.r.get_at(c, self.d.saturating_add(d))
    }
    fn exists_at(&self, d: i64) -> bool {
        self.r.exists_at(self.d.saturating_add(d))
    }
}

pub(super) struct NoRow;
impl Row for NoRow {
    fn get(&self, _: usize) -> Value {
        Value::Null
    }
}

/// A row where column `c` is `v` (used to pre-evaluate a predicate once per
/// dictionary entry).
pub(super) struct OneCol<'v> {
    pub(super) c: usize,
    pub(super) v: &'v Value,
}
impl Row for OneCol<'_> {
    fn get(&self, c: usize) -> Value {
        if c == self.c {
            self.v.clone()
        } else {
            Value::Null
        }
    }
}

pub(super) fn truth(v: &Value) -> u8 {
    match v {
        Value::Bool(false) => 0,
        Value::Bool(true) => 1,
        _ => 2,
    }
}
pub(super) fn from_truth(t: u8) -> Value {
    match t {
        0 => Value::Bool(false),
        1 => Value::Bool(true),
        _ => Value::Null,
    }
}

pub(super) fn eval<R: Row>(e: &CExpr, r: &R, bg: &Budget) -> Value {
    match &e.kind {
        CKind::Lit(v) => v.clone(),
        CKind::Col(c) => r.get(*c),
        CKind::Neg(a) => match eval(a, r, bg) {
            Value::Int(i) => i.checked_neg().map_or(Value::Null, Value::Int),
            Value::Real(f) => Value::Real(-f),
            Value::TimeSpan(t) => t.checked_neg().map_or(Value::Null, Value::TimeSpan),
            _ => Value::Null,
        },
        CKind::Arith(op, a, b) => arith(*op, eval(a, r, bg), eval(b, r, bg)),
        CKind::Cmp(op, a, b) => cmp_values(*op, &eval(a, r, bg), &eval(b, r, bg)),
        CKind::StrOp {
            op,
            negated,
            cs,
            l,
            r: rr,
        } => match (eval(l, r, bg), eval(rr, r, bg)) {
            (Value::Str(h), Value::Str(n)) => Value::Bool(str_op(*op, *cs, &h, &n) != *negated),
            _ => Value::Null,
        },
        CKind::And(a, b) => {
            let x = truth(&eval(a, r, bg));
            if x == 0 {
                return Value::Bool(false);
            }
            let y = truth(&eval(b, r, bg));
            from_truth(and3(x, y))
        }
        CKind::Or(a, b) => {
            let x = truth(&eval(a, r, bg));
            if x == 1 {
                return Value::Bool(true);
            }
            let y = truth(&eval(b, r, bg));
            from_truth(or3(x, y))
        }
        CKind::Not(a) => from_truth(not3(truth(&eval(a, r, bg)))),
        CKind::In {
            e,
            set,
            negated,
            ci,
        } => {
            let v = eval(e, r, bg);
            if matches!(v, Value::Null) {
                return Value::Null;
            }
            let found = set.iter().any(|s| match (&v, s) {
                (Value::Str(a), Value::Str(b)) if *ci => eq_ci(a, b),
                _ => compare(&v, s) == Some(Ordering::Equal),
            });
            Value::Bool(found != *negated)
        }
        CKind::HasTerms { e, terms, all } => match eval(e, r, bg) {
            Value::Str(h) => {
                let has = |t: &Arc<str>| str_op(StrOp::Has, false, &h, t);
                Value::Bool(if *all {
                    terms.iter().all(has)
                } else {
                    terms.iter().any(has)
                })
            }
            _ => Value::Null,
        },
        CKind::Regex { re, usage, text } => {
            let Value::Str(s) = eval(text, r, bg) else {
                return Value::Null;
            };
            match usage {
                RegexUse::Matches => Value::Bool(re.is_match(&s)),
                RegexUse::Count => Value::Int(re.find_iter(&s).count() as i64),
                RegexUse::Replace(rewrite) => {
                    // Bounded: each match adds at most the rewrite plus its groups.
                    let n = re.find_iter(&s).count();
                    if !bg.string_ok(
                        s.len()
                            .saturating_add(n.saturating_mul(rewrite.len() + s.len().min(4096))),
                    ) {
                        return Value::Null;
                    }
                    let out = re.replace_all(&s, rewrite.as_str());
                    if bg.string_ok(out.len()) {
                        Value::str(&out)
                    } else {
                        Value::Null
                    }
                }
                RegexUse::Extract(g) => {
                    let v = re
                        .captures(&s)
                        .and_then(|c| c.get(*g))
                        .map_or(Value::Null, |m| Value::str(m.as_str()));
                    convert(v, e.ty)
                }
                RegexUse::ExtractAll(groups) => {
                    let mut out = Vec::new();
                    let mut bytes = 0usize;
                    for c in re.captures_iter(&s) {
                        let texts: Vec<serde_json::Value> = groups
                            .iter()
                            .map(|g| {
                                let t = c.get(*g).map_or("", |m| m.as_str());
                                bytes += 32 + t.len();
                                serde_json::Value::String(t.to_string())
                            })
                            .collect();
                        out.push(if groups.len() == 1 {
                            texts.into_iter().next().unwrap_or_default()
                        } else {
                            serde_json::Value::Array(texts)
                        });
                        if !bg.string_ok(bytes) {
                            return Value::Null;
                        }
                    }
                    if out.is_empty() {
                        Value::Null
                    } else {
                        dynamic::array(out)
                    }
                }
            }
        }
        CKind::Between { e, lo, hi, negated } => {
            let v = eval(e, r, bg);
            let (lo, hi) = (eval(lo, r, bg), eval(hi, r, bg));
            match (compare(&v, &lo), compare(&v, &hi)) {
                (Some(a), Some(b)) => {
                    Value::Bool((a != Ordering::Less && b != Ordering::Greater) != *negated)
                }
                _ => Value::Null,
            }
        }
        CKind::Func(f, args) => call(*f, args, r, bg, e.ty),
    }
}

pub(super) fn and3(x: u8, y: u8) -> u8 {
    if x == 0 || y == 0 {
        0
    } else if x == 1 && y == 1 {
        1
    } else {
        2
    }
}
pub(super) fn or3(x: u8, y: u8) -> u8 {
    if x == 1 || y == 1 {
        1
    } else if x == 0 && y == 0 {
        0
    } else {
        2
    }
}
pub(super) fn not3(x: u8) -> u8 {
    match x {
        0 => 1,
        1 => 0,
        _ => 2,
    }
}

/// `v` converted to `ty` as `tolong()`, `todouble()`, `tobool()`, `todatetime()`,
/// `tostring()` do (strings are parsed); null when it does not convert.
pub(super) fn convert(v: Value, ty: DataType) -> Value {
    use DataType as T;
    match (ty, v) {
        (_, Value::Null) => Value::Null,
        (T::String, v @ Value::Str(_)) => v,
        (T::String, v) => Value::str(&v.to_text()),
        (T::Dynamic, v) => v,
        (T::Int | T::Long, Value::Int(i)) => Value::Int(i),
        (T::Int | T::Long, Value::Real(f)) if f.is_finite() && f.abs() < 9.2e18 => {
            Value::Int(f.trunc() as i64)
        }
        (T::Int | T::Long, Value::Bool(b)) => Value::Int(i64::from(b)),
        (T::Int | T::Long, Value::DateTime(t) | Value::TimeSpan(t)) => Value::Int(t),
        (T::Int | T::Long, Value::Str(s)) => match s.trim().parse::<i64>() {
            Ok(i) => Value::Int(i),
            Err(_) => convert(convert(Value::Str(s), T::Real), ty),
        },
        (T::Real, Value::Real(f)) => Value::Real(f),
        (T::Real, Value::Int(i)) => Value::Real(i as f64),
        (T::Real, Value::Bool(b)) => Value::Real(f64::from(u8::from(b))),
        (T::Real, Value::Str(s)) => s.trim().parse::<f64>().map_or(Value::Null, Value::Real),
        (T::Bool, Value::Bool(b)) => Value::Bool(b),
        (T::Bool, Value::Int(i)) => Value::Bool(i != 0),
        (T::Bool, Value::Str(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => Value::Bool(true),
            "false" | "0" => Value::Bool(false),
            _ => Value::Null,
        },
        (T::DateTime, Value::DateTime(t)) => Value::DateTime(t),
        (T::DateTime, Value::Str(s)) => {
            crate::value::parse_datetime(&s).map_or(Value::Null, Value::DateTime)
        }
        (T::TimeSpan, Value::TimeSpan(t)) => Value::TimeSpan(t),
        (T::TimeSpan, Value::Str(s)) => {
            crate::value::parse_timespan_text(&s).map_or(Value::Null, Value::TimeSpan)
        }
        _ => Value::Null,
    }
}

/// `v` as `ty` without parsing (`mv-expand ... to typeof(T)`): a value of another
/// type is null.
pub(super) fn cast_only(v: Value, ty: DataType) -> Value {
    use DataType as T;
    match (ty, &v) {
        (T::Dynamic, _)
        | (T::String, Value::Str(_))
        | (T::Int | T::Long, Value::Int(_))
        | (T::Bool, Value::Bool(_)) => v,
        (T::Real, Value::Real(_) | Value::Int(_)) => convert(v, T::Real),
        (T::DateTime | T::TimeSpan, Value::Str(_)) => convert(v, ty),
        _ => Value::Null,
    }
}
