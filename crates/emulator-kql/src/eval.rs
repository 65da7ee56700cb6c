//! Binding (name resolution, type checking, constant folding) and evaluation.

use std::cell::Cell;
use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;

use crate::data::{ColumnData, Dataset, Table};
use crate::dynamic;
use crate::enrich;
use crate::error::KqlError;
use crate::limits::{value_bytes, Budget, Limit};
use crate::output::{Column, QueryOutput};
use crate::parse::{
    Ast, AstKind, BinOp, ExpandItem, FuncDef, Item, JoinKey, JoinKind, Let, LetRhs, ListOp, OpKind,
    ParsePart, Parser, SortKey, Source, Src, StrOp, TabExpr, Union,
};
use crate::scalars;
use crate::value::{order_cmp, DataType, KeyVal, Value, TICKS_PER_DAY, TICKS_PER_MS};
use crate::RunOptions;

type Res<T> = Result<T, KqlError>;

// ---------------------------------------------------------------------------------------
// Bound expressions

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Func {
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
enum RegexUse {
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
enum CKind {
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
    kind: CKind,
    ty: DataType,
}

impl CExpr {
    fn lit(v: Value, ty: DataType) -> CExpr {
        CExpr {
            kind: CKind::Lit(v),
            ty,
        }
    }
    fn children(&self) -> Vec<&CExpr> {
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
    fn is_const(&self) -> bool {
        matches!(self.kind, CKind::Lit(_))
    }
    /// Whether evaluating this reads other rows (`prev`, `next`).
    fn reads_neighbours(&self) -> bool {
        matches!(self.kind, CKind::Func(Func::Prev | Func::Next, _))
            || self.children().iter().any(|c| c.reads_neighbours())
    }

    fn columns(&self, out: &mut Vec<usize>) {
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
trait Row {
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
struct Shifted<'r> {
    r: &'r dyn Row,
    d: i64,
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

struct NoRow;
impl Row for NoRow {
    fn get(&self, _: usize) -> Value {
        Value::Null
    }
}

/// A row where column `c` is `v` (used to pre-evaluate a predicate once per
/// dictionary entry).
struct OneCol<'v> {
    c: usize,
    v: &'v Value,
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

fn truth(v: &Value) -> u8 {
    match v {
        Value::Bool(false) => 0,
        Value::Bool(true) => 1,
        _ => 2,
    }
}
fn from_truth(t: u8) -> Value {
    match t {
        0 => Value::Bool(false),
        1 => Value::Bool(true),
        _ => Value::Null,
    }
}

fn eval<R: Row>(e: &CExpr, r: &R, bg: &Budget) -> Value {
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

fn and3(x: u8, y: u8) -> u8 {
    if x == 0 || y == 0 {
        0
    } else if x == 1 && y == 1 {
        1
    } else {
        2
    }
}
fn or3(x: u8, y: u8) -> u8 {
    if x == 1 || y == 1 {
        1
    } else if x == 0 && y == 0 {
        0
    } else {
        2
    }
}
fn not3(x: u8) -> u8 {
    match x {
        0 => 1,
        1 => 0,
        _ => 2,
    }
}

/// `v` converted to `ty` as `tolong()`, `todouble()`, `tobool()`, `todatetime()`,
/// `tostring()` do (strings are parsed); null when it does not convert.
fn convert(v: Value, ty: DataType) -> Value {
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
fn cast_only(v: Value, ty: DataType) -> Value {
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

fn call<R: Row>(f: Func, args: &[CExpr], r: &R, bg: &Budget, ty: DataType) -> Value {
    let a0 = || eval(&args[0], r, bg);
    let a1 = || eval(&args[1], r, bg);
    match f {
        Func::ToLower | Func::ToUpper => match a0() {
            Value::Str(s) => {
                // Case mapping can lengthen a string (`ß` -> `SS`): check what it made.
                let t = if f == Func::ToLower {
                    s.to_lowercase()
                } else {
                    s.to_uppercase()
                };
                if bg.string_ok(t.len()) {
                    Value::str(&t)
                } else {
                    Value::Null
                }
            }
            _ => Value::Null,
        },
        Func::StrLen => match a0() {
            Value::Str(s) => Value::Int(s.chars().count() as i64),
            _ => Value::Null,
        },
        Func::IsEmpty | Func::IsNotEmpty => {
            let empty = match a0() {
                Value::Null => true,
                Value::Str(s) => s.is_empty(),
                _ => false,
            };
            Value::Bool(empty == (f == Func::IsEmpty))
        }
        Func::IsNull | Func::IsNotNull => {
            Value::Bool(matches!(a0(), Value::Null) == (f == Func::IsNull))
        }
        Func::ToStr => match a0() {
            s @ Value::Str(_) => s,
            v => {
                let t = v.to_text();
                if bg.string_ok(t.len()) {
                    Value::str(&t)
                } else {
                    Value::Null
                }
            }
        },
        Func::Bin => bin(a0(), a1()),
        Func::StartOfDay => match a0() {
            Value::DateTime(t) => t
                .checked_sub(t.rem_euclid(TICKS_PER_DAY))
                .map_or(Value::Null, Value::DateTime),
            _ => Value::Null,
        },
        Func::Iff => match truth(&a0()) {
            1 => convert(a1(), ty),
            _ => convert(eval(&args[2], r, bg), ty),
        },
        Func::Case => {
            let mut pairs = args.chunks_exact(2);
            for p in pairs.by_ref() {
                if truth(&eval(&p[0], r, bg)) == 1 {
                    return convert(eval(&p[1], r, bg), ty);
                }
            }
            match pairs.remainder() {
                [e] => convert(eval(e, r, bg), ty),
                _ => Value::Null,
            }
        }
        Func::StrCat => {
            // Checked after every argument, so `strcat(a, a)` of strings at the limit
            // never builds more than twice the limit.
            let mut s = String::new();
            for a in args {
                eval(a, r, bg).write_text(&mut s);
                if !bg.string_ok(s.len()) {
                    return Value::Null;
                }
            }
            Value::str(&s)
        }
        Func::ParseJson => dynamic::parse_json(a0()),
        Func::ExtractJson => match (a0(), a1()) {
            (Value::Str(p), Value::Str(t)) => dynamic::extract_json(&p, &t),
            _ => Value::Null,
        },
        Func::ArrayLength => match dynamic::elements(&a0()) {
            Some(e) => Value::Int(e.len() as i64),
            None => Value::Null,
        },
        Func::Split => {
            let (Value::Str(s), Value::Str(d)) = (a0(), a1()) else {
                return Value::Null;
            };
            let parts = dynamic::split(&s, &d);
            match args.get(2).map(|a| eval(a, r, bg)) {
                None => dynamic::array(parts),
                Some(Value::Int(i)) => {
                    let picked = usize::try_from(i)
                        .ok()
                        .and_then(|i| parts.into_iter().nth(i));
                    dynamic::array(picked.into_iter().collect())
                }
                Some(_) => Value::Null,
            }
        }
        Func::StrCatArray => {
            let arr = a0();
            let (Some(items), d) = (dynamic::elements(&arr), a1()) else {
                return Value::Null;
            };
            let d = d.to_text();
            let mut s = String::new();
            for (i, j) in items.iter().enumerate() {
                if i > 0 {
                    s.push_str(&d);
                }
                dynamic::element_text(j, &mut s);
                if !bg.string_ok(s.len()) {
                    return Value::Null;
                }
            }
            Value::str(&s)
        }
        Func::PackArray => {
            let items: Vec<_> = args
                .iter()
                .map(|a| dynamic::to_json(&eval(a, r, bg)))
                .collect();
            let v = dynamic::array(items);
            if bg.string_ok(value_bytes(&v)) {
                v
            } else {
                Value::Null
            }
        }
        Func::BagPack => {
            let pairs = args
                .chunks_exact(2)
                .map(|p| {
                    (
                        eval(&p[0], r, bg).to_text(),
                        dynamic::to_json(&eval(&p[1], r, bg)),
                    )
                })
                .collect();
            let v = dynamic::bag(pairs);
            if bg.string_ok(value_bytes(&v)) {
                v
            } else {
                Value::Null
            }
        }
        Func::Index => dynamic::index(&a0(), &a1()),
        Func::ToLong | Func::ToReal | Func::ToBool | Func::ToDateTime => convert(a0(), ty),
        Func::Round => {
            let digits = args.get(1).map_or(Value::Int(0), |a| eval(a, r, bg));
            match (a0(), digits) {
                (Value::Int(i), _) => Value::Int(i),
                (Value::Real(x), Value::Int(d)) => {
                    let p = 10f64.powi(d.clamp(-300, 300) as i32);
                    Value::Real((x * p).round() / p)
                }
                _ => Value::Null,
            }
        }
        Func::DatetimeDiff => match (a0(), a1(), eval(&args[2], r, bg)) {
            (Value::Str(part), Value::DateTime(a), Value::DateTime(b)) => {
                scalars::datetime_diff(&part, a, b).map_or(Value::Null, Value::Int)
            }
            _ => Value::Null,
        },
        Func::DatetimeAdd => match (a0(), a1(), eval(&args[2], r, bg)) {
            (Value::Str(part), Value::Int(n), Value::DateTime(t)) => {
                scalars::datetime_add(&part, n, t).map_or(Value::Null, Value::DateTime)
            }
            _ => Value::Null,
        },
        Func::FormatDatetime => match (a0(), a1()) {
            (Value::DateTime(t), Value::Str(fmt)) if bg.string_ok(fmt.len() * 4) => {
                Value::str(&scalars::format_datetime(t, &fmt))
            }
            _ => Value::Null,
        },
        Func::Coalesce => args
            .iter()
            .map(|a| eval(a, r, bg))
            .find(|v| match v {
                Value::Null => false,
                Value::Str(s) => !s.is_empty(),
                _ => true,
            })
            .map_or(Value::Null, |v| convert(v, ty)),
        Func::ReplaceString => match (a0(), a1(), eval(&args[2], r, bg)) {
            (Value::Str(t), Value::Str(from), Value::Str(to)) => {
                if from.is_empty() {
                    return Value::Str(t);
                }
                let n = t.matches(&*from).count();
                let len = t.len() - n * from.len() + n * to.len();
                if bg.string_ok(len) {
                    Value::str(&t.replace(&*from, &to))
                } else {
                    Value::Null
                }
            }
            _ => Value::Null,
        },
        Func::Substring => {
            let len = args.get(2).map(|a| eval(a, r, bg));
            match (a0(), a1(), len) {
                (Value::Str(t), Value::Int(start), None) => {
                    Value::str(&scalars::substring(&t, start, None))
                }
                (Value::Str(t), Value::Int(start), Some(Value::Int(n))) => {
                    Value::str(&scalars::substring(&t, start, Some(n)))
                }
                _ => Value::Null,
            }
        }
        Func::IndexOf => {
            let start = args.get(2).map_or(Value::Int(0), |a| eval(a, r, bg));
            match (a0(), a1(), start) {
                (Value::Str(t), Value::Str(l), Value::Int(start)) => {
                    scalars::indexof(&t, &l, start).map_or(Value::Null, Value::Int)
                }
                _ => Value::Null,
            }
        }
        Func::CountOf => match (a0(), a1()) {
            (Value::Str(t), Value::Str(l)) => Value::Int(scalars::countof(&t, &l)),
            _ => Value::Null,
        },
        Func::DayOfWeek => match a0() {
            Value::DateTime(t) => {
                Value::TimeSpan((t.div_euclid(TICKS_PER_DAY) + 4).rem_euclid(7) * TICKS_PER_DAY)
            }
            _ => Value::Null,
        },
        Func::HourOfDay => match a0() {
            Value::DateTime(t) => Value::Int(t.rem_euclid(TICKS_PER_DAY) / (TICKS_PER_DAY / 24)),
            _ => Value::Null,
        },
        Func::Ipv4IsPrivate => match a0() {
            Value::Str(ip) => scalars::ipv4_is_private(&ip).map_or(Value::Null, Value::Bool),
            _ => Value::Null,
        },
        Func::Prev | Func::Next => {
            let n = match args.get(1).map(|a| &a.kind) {
                Some(CKind::Lit(Value::Int(n))) => *n,
                _ => 1,
            };
            let d = if f == Func::Prev {
                n.saturating_neg()
            } else {
                n
            };
            if r.exists_at(d) {
                convert(eval(&args[0], &Shifted { r, d }, bg), ty)
            } else {
                args.get(2)
                    .map_or(Value::Null, |a| convert(eval(a, r, bg), ty))
            }
        }
        Func::Base64DecodeToString => match a0() {
            Value::Str(t) => scalars::base64_decode(&t)
                .and_then(|b| String::from_utf8(b).ok())
                .map_or(Value::Null, |s| Value::str(&s)),
            _ => Value::Null,
        },
    }
}

/// A KQL rewrite pattern (`\\1` for a group) in the regex crate's syntax (`${1}`; a
/// literal `$` doubled).
fn kql_rewrite(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '$' => out.push_str("$$"),
            '\\' if chars.peek().is_some_and(char::is_ascii_digit) => {
                let d = chars.next().unwrap_or('0');
                out.push_str(&format!("${{{d}}}"));
            }
            c => out.push(c),
        }
    }
    out
}

/// Whether `name` matches `pattern`, where `*` stands for any run of characters.
fn glob(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

fn bin(v: Value, size: Value) -> Value {
    match (v, size) {
        (Value::DateTime(t), Value::TimeSpan(s)) if s > 0 => t
            .checked_sub(t.rem_euclid(s))
            .map_or(Value::Null, Value::DateTime),
        (Value::TimeSpan(t), Value::TimeSpan(s)) if s > 0 => t
            .checked_sub(t.rem_euclid(s))
            .map_or(Value::Null, Value::TimeSpan),
        (Value::Int(x), Value::Int(s)) if s > 0 => x
            .checked_sub(x.rem_euclid(s))
            .map_or(Value::Null, Value::Int),
        (x @ (Value::Int(_) | Value::Real(_)), s @ (Value::Int(_) | Value::Real(_))) => {
            let (x, s) = (as_f64(&x), as_f64(&s));
            if s > 0.0 {
                Value::Real((x / s).floor() * s)
            } else {
                Value::Null
            }
        }
        _ => Value::Null,
    }
}

fn as_f64(v: &Value) -> f64 {
    match v {
        Value::Int(i) => *i as f64,
        Value::Real(f) => *f,
        _ => f64::NAN,
    }
}

fn arith(op: BinOp, a: Value, b: Value) -> Value {
    use Value::*;
    let opt = |o: Option<i64>, f: fn(i64) -> Value| o.map_or(Null, f);
    match (op, a, b) {
        (_, Null, _) | (_, _, Null) => Null,
        (BinOp::Add, Int(x), Int(y)) => opt(x.checked_add(y), Int),
        (BinOp::Sub, Int(x), Int(y)) => opt(x.checked_sub(y), Int),
        (BinOp::Mul, Int(x), Int(y)) => opt(x.checked_mul(y), Int),
        (BinOp::Div, Int(x), Int(y)) => opt(x.checked_div(y), Int),
        (BinOp::Mod, Int(x), Int(y)) => opt(x.checked_rem(y), Int),
        (op, x @ (Int(_) | Real(_)), y @ (Int(_) | Real(_))) => {
            let (x, y) = (as_f64(&x), as_f64(&y));
            Real(match op {
                BinOp::Add => x + y,
                BinOp::Sub => x - y,
                BinOp::Mul => x * y,
                BinOp::Div => x / y,
                _ => x % y,
            })
        }
        (BinOp::Add, DateTime(x), TimeSpan(y)) | (BinOp::Add, TimeSpan(y), DateTime(x)) => {
            opt(x.checked_add(y), DateTime)
        }
        (BinOp::Sub, DateTime(x), TimeSpan(y)) => opt(x.checked_sub(y), DateTime),
        (BinOp::Sub, DateTime(x), DateTime(y)) => opt(x.checked_sub(y), TimeSpan),
        (BinOp::Add, TimeSpan(x), TimeSpan(y)) => opt(x.checked_add(y), TimeSpan),
        (BinOp::Sub, TimeSpan(x), TimeSpan(y)) => opt(x.checked_sub(y), TimeSpan),
        (BinOp::Div, TimeSpan(x), TimeSpan(y)) => Real(x as f64 / y as f64),
        (BinOp::Mul, TimeSpan(x), n @ (Int(_) | Real(_)))
        | (BinOp::Mul, n @ (Int(_) | Real(_)), TimeSpan(x)) => ts_f(x as f64 * as_f64(&n)),
        (BinOp::Div, TimeSpan(x), n @ (Int(_) | Real(_))) => ts_f(x as f64 / as_f64(&n)),
        _ => Null,
    }
}

fn ts_f(f: f64) -> Value {
    if f.is_finite() && f.abs() < 9.0e18 {
        Value::TimeSpan(f.round() as i64)
    } else {
        Value::Null
    }
}

/// Ordering of two comparable values (`None` for null, NaN or incomparable types).
pub(crate) fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    use Value::*;
    match (a, b) {
        (Int(x), Int(y)) => Some(x.cmp(y)),
        (Int(_) | Real(_), Int(_) | Real(_)) => as_f64(a).partial_cmp(&as_f64(b)),
        (Str(x), Str(y)) => Some(x.as_ref().cmp(y.as_ref())),
        (DateTime(x), DateTime(y)) | (TimeSpan(x), TimeSpan(y)) => Some(x.cmp(y)),
        (Bool(x), Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

fn cmp_values(op: BinOp, a: &Value, b: &Value) -> Value {
    if let BinOp::EqCi | BinOp::NeCi = op {
        return match (a, b) {
            (Value::Str(x), Value::Str(y)) => Value::Bool(eq_ci(x, y) == (op == BinOp::EqCi)),
            _ => Value::Null,
        };
    }
    match compare(a, b) {
        Some(o) => Value::Bool(cmp_holds(op, o)),
        None => Value::Null,
    }
}

fn cmp_holds(op: BinOp, o: Ordering) -> bool {
    match op {
        BinOp::Eq => o == Ordering::Equal,
        BinOp::Ne => o != Ordering::Equal,
        BinOp::Lt => o == Ordering::Less,
        BinOp::Le => o != Ordering::Greater,
        BinOp::Gt => o == Ordering::Greater,
        _ => o != Ordering::Less,
    }
}

// ---------------------------------------------------------------------------------------
// String operators (KQL semantics: case-insensitive unless `_cs`)

pub(crate) fn eq_ci(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        a.eq_ignore_ascii_case(b)
    } else {
        a.to_lowercase() == b.to_lowercase()
    }
}

fn is_term_char(c: char) -> bool {
    c.is_alphanumeric()
}

fn str_op(op: StrOp, cs: bool, h: &str, n: &str) -> bool {
    if cs {
        return str_op_exact(op, h, n);
    }
    if h.is_ascii() && n.is_ascii() {
        match op {
            StrOp::StartsWith => {
                return h.len() >= n.len()
                    && h.as_bytes()[..n.len()].eq_ignore_ascii_case(n.as_bytes())
            }
            StrOp::EndsWith => {
                return h.len() >= n.len()
                    && h.as_bytes()[h.len() - n.len()..].eq_ignore_ascii_case(n.as_bytes())
            }
            // Comparing every window is O(h * n): fine for a short needle, quadratic for
            // a long one, where a linear search over lower-cased copies takes over.
            StrOp::Contains if n.len() <= 32 => {
                return n.is_empty()
                    || h.as_bytes()
                        .windows(n.len())
                        .any(|w| w.eq_ignore_ascii_case(n.as_bytes()))
            }
            StrOp::Contains => {
                return h
                    .to_ascii_lowercase()
                    .contains(n.to_ascii_lowercase().as_str())
            }
            _ => {}
        }
    }
    str_op_exact(op, &h.to_lowercase(), &n.to_lowercase())
}

fn str_op_exact(op: StrOp, h: &str, n: &str) -> bool {
    match op {
        StrOp::Contains => h.contains(n),
        StrOp::StartsWith => h.starts_with(n),
        StrOp::EndsWith => h.ends_with(n),
        StrOp::Has | StrOp::HasPrefix | StrOp::HasSuffix => {
            if n.is_empty() {
                return true;
            }
            let (check_left, check_right) = match op {
                StrOp::Has => (true, true),
                StrOp::HasPrefix => (true, false),
                _ => (false, true),
            };
            let n_first = n.chars().next().is_some_and(is_term_char);
            let n_last = n.chars().next_back().is_some_and(is_term_char);
            h.match_indices(n).any(|(p, _)| {
                let left_ok = !check_left
                    || !n_first
                    || h[..p].chars().next_back().is_none_or(|c| !is_term_char(c));
                let right_ok = !check_right
                    || !n_last
                    || h[p + n.len()..]
                        .chars()
                        .next()
                        .is_none_or(|c| !is_term_char(c));
                left_ok && right_ok
            })
        }
    }
}

// ---------------------------------------------------------------------------------------
// Frames: the intermediate table flowing through the pipeline.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ColSrc {
    Table(usize),
    Extra(usize),
}

#[derive(Debug, Clone)]
struct FCol {
    name: String,
    ty: DataType,
    src: ColSrc,
}

/// Rows `0..len`; table columns are read through `sel` (row indices into the table),
/// computed columns live in `extra` (one vector per column).
struct Frame<'a> {
    table: Option<&'a Table>,
    sel: Vec<u32>,
    len: usize,
    cols: Vec<FCol>,
    extra: Vec<Vec<Value>>,
}

impl Frame<'_> {
    #[inline]
    fn value(&self, c: usize, i: usize) -> Value {
        match self.cols[c].src {
            ColSrc::Table(j) => match self.table {
                Some(t) => t.data[j].value(self.sel[i] as usize),
                None => Value::Null,
            },
            ColSrc::Extra(k) => self.extra[k][i].clone(),
        }
    }

    /// `e` over every row, charged to the budget.
    fn compute(&self, e: &CExpr, bg: &Budget) -> Res<Vec<Value>> {
        let mut out = Vec::with_capacity(self.len);
        for i in 0..self.len {
            bg.row()?;
            let v = eval(e, &FrameRow { f: self, i }, bg);
            bg.charge(value_bytes(&v));
            out.push(v);
        }
        bg.status()?;
        Ok(out)
    }

    fn retain(&mut self, keep: &[bool]) {
        if self.table.is_some() {
            self.sel = self
                .sel
                .iter()
                .zip(keep)
                .filter_map(|(s, k)| k.then_some(*s))
                .collect();
        }
        for col in &mut self.extra {
            *col = std::mem::take(col)
                .into_iter()
                .zip(keep)
                .filter_map(|(v, k)| k.then_some(v))
                .collect();
        }
        self.len = keep.iter().filter(|k| **k).count();
    }

    fn permute(&mut self, perm: &[u32]) {
        if self.table.is_some() {
            self.sel = perm.iter().map(|p| self.sel[*p as usize]).collect();
        }
        for col in &mut self.extra {
            *col = perm.iter().map(|p| col[*p as usize].clone()).collect();
        }
        self.len = perm.len();
    }

    fn truncate(&mut self, n: usize) {
        if n < self.len {
            self.sel.truncate(n);
            for col in &mut self.extra {
                col.truncate(n);
            }
            self.len = n;
        }
    }

    /// Drops computed columns no longer referenced.
    fn gc(&mut self) {
        let mut map = vec![usize::MAX; self.extra.len()];
        let mut kept = Vec::new();
        for c in &mut self.cols {
            if let ColSrc::Extra(k) = c.src {
                if map[k] == usize::MAX {
                    map[k] = kept.len();
                    kept.push(std::mem::take(&mut self.extra[k]));
                }
                c.src = ColSrc::Extra(map[k]);
            }
        }
        self.extra = kept;
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.cols.iter().position(|c| c.name == name)
    }

    /// A frame made only of computed columns.
    fn computed(cols: Vec<(String, DataType, Vec<Value>)>, len: usize) -> Frame<'static> {
        let mut f = Frame {
            table: None,
            sel: Vec::new(),
            len,
            cols: Vec::new(),
            extra: Vec::new(),
        };
        for (k, (name, ty, vals)) in cols.into_iter().enumerate() {
            f.cols.push(FCol {
                name,
                ty,
                src: ColSrc::Extra(k),
            });
            f.extra.push(vals);
        }
        f
    }
}

struct FrameRow<'f, 'a> {
    f: &'f Frame<'a>,
    i: usize,
}
impl FrameRow<'_, '_> {
    fn at(&self, d: i64) -> Option<usize> {
        let j = (self.i as i64).checked_add(d)?;
        usize::try_from(j).ok().filter(|j| *j < self.f.len)
    }
}
impl Row for FrameRow<'_, '_> {
    #[inline]
    fn get(&self, c: usize) -> Value {
        self.f.value(c, self.i)
    }
    fn get_at(&self, c: usize, d: i64) -> Value {
        self.at(d).map_or(Value::Null, |j| self.f.value(c, j))
    }
    fn exists_at(&self, d: i64) -> bool {
        self.at(d).is_some()
    }
}

// ---------------------------------------------------------------------------------------
// Fast filters for `where` over table columns.

enum Filter<'a> {
    /// Truth value per dictionary code of one string column (0 false, 1 true, 2 null).
    Mask {
        codes: &'a [u32],
        mask: Vec<u8>,
    },
    /// Truth value per boolean column value.
    BoolMask {
        vals: &'a [bool],
        mask: [u8; 2],
    },
    /// `column op constant` over an integer or datetime column.
    IntCmp {
        vals: &'a [i64],
        op: BinOp,
        rhs: i64,
    },
    And(Box<Filter<'a>>, Box<Filter<'a>>),
    Or(Box<Filter<'a>>, Box<Filter<'a>>),
    Not(Box<Filter<'a>>),
    Generic(CExpr),
}

fn flip(op: BinOp) -> BinOp {
    match op {
        BinOp::Lt => BinOp::Gt,
        BinOp::Le => BinOp::Ge,
        BinOp::Gt => BinOp::Lt,
        BinOp::Ge => BinOp::Le,
        o => o,
    }
}

impl<'a> Filter<'a> {
    fn build(e: &CExpr, f: &Frame<'a>, bg: &Budget) -> Filter<'a> {
        match &e.kind {
            CKind::And(a, b) => {
                return Filter::And(
                    Box::new(Filter::build(a, f, bg)),
                    Box::new(Filter::build(b, f, bg)),
                )
            }
            CKind::Or(a, b) => {
                return Filter::Or(
                    Box::new(Filter::build(a, f, bg)),
                    Box::new(Filter::build(b, f, bg)),
                )
            }
            CKind::Not(a) => return Filter::Not(Box::new(Filter::build(a, f, bg))),
            _ => {}
        }
        let Some(table) = f.table else {
            return Filter::Generic(e.clone());
        };
        let mut cols = Vec::new();
        e.columns(&mut cols);
        if e.reads_neighbours() {
            cols.clear();
        }
        if let [c] = cols[..] {
            if let ColSrc::Table(j) = f.cols[c].src {
                match &table.data[j] {
                    ColumnData::Str { dict, codes } if dict.len() <= f.len.max(64) => {
                        let mask = dict
                            .iter()
                            .map(|s| {
                                truth(&eval(
                                    e,
                                    &OneCol {
                                        c,
                                        v: &Value::Str(s.clone()),
                                    },
                                    bg,
                                ))
                            })
                            .collect();
                        return Filter::Mask { codes, mask };
                    }
                    ColumnData::Bool(vals) => {
                        let m = |b| {
                            truth(&eval(
                                e,
                                &OneCol {
                                    c,
                                    v: &Value::Bool(b),
                                },
                                bg,
                            ))
                        };
                        return Filter::BoolMask {
                            vals,
                            mask: [m(false), m(true)],
                        };
                    }
                    ColumnData::Int(vals) | ColumnData::DateTime(vals) => {
                        if let CKind::Cmp(op, l, r) = &e.kind {
                            let int_like = |v: &Value| match v {
                                Value::Int(i) if f.cols[c].ty != DataType::DateTime => Some(*i),
                                Value::DateTime(t) if f.cols[c].ty == DataType::DateTime => {
                                    Some(*t)
                                }
                                _ => None,
                            };
                            let cmp_op = !matches!(op, BinOp::EqCi | BinOp::NeCi);
                            match (&l.kind, &r.kind) {
                                (CKind::Col(_), CKind::Lit(v)) if cmp_op => {
                                    if let Some(rhs) = int_like(v) {
                                        return Filter::IntCmp { vals, op: *op, rhs };
                                    }
                                }
                                (CKind::Lit(v), CKind::Col(_)) if cmp_op => {
                                    if let Some(rhs) = int_like(v) {
                                        return Filter::IntCmp {
                                            vals,
                                            op: flip(*op),
                                            rhs,
                                        };
                                    }
                                }
                                _ => {}
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        Filter::Generic(e.clone())
    }

    #[inline]
    fn test(&self, f: &Frame<'_>, i: usize, bg: &Budget) -> u8 {
        match self {
            Filter::Mask { codes, mask } => mask[codes[f.sel[i] as usize] as usize],
            Filter::BoolMask { vals, mask } => mask[usize::from(vals[f.sel[i] as usize])],
            Filter::IntCmp { vals, op, rhs } => {
                u8::from(cmp_holds(*op, vals[f.sel[i] as usize].cmp(rhs)))
            }
            Filter::And(a, b) => {
                let x = a.test(f, i, bg);
                if x == 0 {
                    0
                } else {
                    and3(x, b.test(f, i, bg))
                }
            }
            Filter::Or(a, b) => {
                let x = a.test(f, i, bg);
                if x == 1 {
                    1
                } else {
                    or3(x, b.test(f, i, bg))
                }
            }
            Filter::Not(a) => not3(a.test(f, i, bg)),
            Filter::Generic(e) => truth(&eval(e, &FrameRow { f, i }, bg)),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Binding

struct Binder<'s, 'a> {
    ctx: &'s Ctx<'a>,
    src: &'s Src<'s>,
    scope: &'s Scope,
    cols: &'s [FCol],
    /// The parameters of the user function whose body is being bound, each bound to
    /// the caller's argument.
    params: &'s [(String, CExpr)],
    now: i64,
    op: &'s str,
    bg: &'s Budget,
}

fn type_err(what: String) -> KqlError {
    KqlError::Semantic(what)
}

/// The aggregation functions `summarize` runs.
pub(crate) const AGGREGATES: [&str; 18] = [
    "count",
    "countif",
    "dcount",
    "dcountif",
    "min",
    "max",
    "sum",
    "avg",
    "make_set",
    "makeset",
    "make_list",
    "makelist",
    "make_bag",
    "arg_max",
    "arg_min",
    "take_any",
    "percentile",
    "percentiles",
];

/// Functions of KQL (scalar and aggregation) that the emulator does not implement: a
/// call to one is [`KqlError::NotSupported`], a call to any other unknown name
/// [`KqlError::UnknownFunction`].
const KNOWN_FUNCTIONS: &[&str] = &[
    "abs",
    "acos",
    "any",
    "anyif",
    "array_concat",
    "array_index_of",
    "array_reverse",
    "array_slice",
    "array_sort_asc",
    "array_sort_desc",
    "array_sum",
    "asin",
    "atan",
    "avgif",
    "bag_keys",
    "bag_merge",
    "bag_remove_keys",
    "base64_decode_tostring",
    "base64_encode_tostring",
    "base64_decode_toarray",
    "bin_at",
    "binary_and",
    "binary_or",
    "binary_xor",
    "ceiling",
    "coalesce",
    "column_ifexists",
    "cos",
    "countof",
    "datetime_add",
    "datetime_diff",
    "datetime_part",
    "dayofmonth",
    "dayofweek",
    "dayofyear",
    "dcount_hll",
    "endofday",
    "endofmonth",
    "endofweek",
    "endofyear",
    "exp",
    "extract_json",
    "format_datetime",
    "format_timespan",
    "geo_info_from_ip_address",
    "getmonth",
    "getyear",
    "has_any_ipv4",
    "has_any_ipv4_prefix",
    "has_ipv4",
    "has_ipv4_prefix",
    "hash",
    "hash_sha256",
    "hash_md5",
    "hourofday",
    "indexof",
    "ipv4_compare",
    "ipv4_is_in_range",
    "ipv4_is_match",
    "ipv4_is_private",
    "ipv6_compare",
    "isascii",
    "isfinite",
    "isnan",
    "log",
    "log10",
    "make_datetime",
    "make_list_if",
    "make_list_with_nulls",
    "make_set_if",
    "make_timespan",
    "materialize",
    "max_of",
    "maxif",
    "min_of",
    "minif",
    "monthofyear",
    "new_guid",
    "next",
    "pack_all",
    "parse_command_line",
    "parse_ipv4",
    "parse_path",
    "parse_url",
    "parse_urlquery",
    "parse_user_agent",
    "parse_xml",
    "percentile",
    "percentiles",
    "pow",
    "prev",
    "rand",
    "range",
    "replace",
    "replace_regex",
    "replace_string",
    "reverse",
    "row_number",
    "set_difference",
    "set_has_element",
    "set_intersect",
    "set_union",
    "sign",
    "sin",
    "sqrt",
    "startofmonth",
    "startofweek",
    "startofyear",
    "stdev",
    "strcmp",
    "string_size",
    "strrep",
    "substring",
    "sumif",
    "take_anyif",
    "tan",
    "tohex",
    "totimespan",
    "translate",
    "trim",
    "trim_end",
    "trim_start",
    "unixtime_milliseconds_todatetime",
    "unixtime_seconds_todatetime",
    "url_decode",
    "url_encode",
    "variance",
    "week_of_year",
    "zip",
    "FileProfile",
    "DeviceFromIP",
    "AssignedIPAddresses",
];

impl<'a> Binder<'_, 'a> {
    fn bind(&self, a: &Ast) -> Res<CExpr> {
        let e = self.bind_inner(a)?;
        // Constant folding.
        if !e.is_const()
            && !matches!(e.kind, CKind::Col(_))
            && e.children().iter().all(|c| c.is_const())
        {
            let v = eval(&e, &NoRow, self.bg);
            self.bg.status()?;
            return Ok(CExpr::lit(v, e.ty));
        }
        Ok(e)
    }

    /// A binder for the same columns with another scope and parameters.
    fn with<'t>(&'t self, scope: &'t Scope, params: &'t [(String, CExpr)]) -> Binder<'t, 'a> {
        Binder {
            ctx: self.ctx,
            src: self.src,
            scope,
            cols: self.cols,
            params,
            now: self.now,
            op: self.op,
            bg: self.bg,
        }
    }

    /// The values of a list item that is a table (`in (T | project X)`, `in (SomeLet)`):
    /// the first column of its rows.
    fn table_values(&self, a: &Ast) -> Res<Option<(Vec<Value>, DataType)>> {
        let Some(t) = self.ctx.as_tabular(a, self.scope) else {
            return Ok(None);
        };
        let f = self.ctx.tabular(&t, self.scope)?;
        let Some(c) = f.cols.first() else {
            return Ok(Some((Vec::new(), DataType::String)));
        };
        let ty = c.ty;
        let mut vals = Vec::with_capacity(f.len);
        for i in 0..f.len {
            self.bg.row()?;
            let v = f.value(0, i);
            self.bg.charge(value_bytes(&v));
            vals.push(v);
        }
        Ok(Some((vals, ty)))
    }

    /// The constant values of an `in`/`has_any` list, arrays flattened.
    fn list_values(&self, list: &[Ast], want: DataType, strings: bool) -> Res<Vec<Value>> {
        let mut set = Vec::with_capacity(list.len());
        for item in list {
            if let Some((vals, ty)) = self.table_values(item)? {
                if !strings && !comparable(want, ty) {
                    return Err(cannot_compare(want, ty));
                }
                set.extend(vals);
                continue;
            }
            let v = self.bind(item)?;
            let CKind::Lit(val) = v.kind else {
                return Err(self.src.error_at(
                    item.start,
                    item.end,
                    "the list must hold constant values",
                ));
            };
            if let Some(items) = dynamic::elements(&val) {
                set.extend(items.iter().map(|j| Value::from_json(j.clone())));
                continue;
            }
            if !strings && !comparable(want, v.ty) {
                return Err(cannot_compare(want, v.ty));
            }
            set.push(val);
        }
        Ok(set)
    }

    fn bind_inner(&self, a: &Ast) -> Res<CExpr> {
        use DataType as T;
        Ok(match &a.kind {
            AstKind::Lit(v, t) => CExpr::lit(v.clone(), *t),
            AstKind::Name(n) => {
                if let Some(c) = self.cols.iter().position(|c| &c.name == n) {
                    CExpr {
                        kind: CKind::Col(c),
                        ty: self.cols[c].ty,
                    }
                } else if let Some((_, e)) = self.params.iter().rev().find(|(p, _)| p == n) {
                    e.clone()
                } else if let Some(Binding::Scalar(v, t)) = lookup(self.scope, n) {
                    CExpr::lit(v.clone(), *t)
                } else {
                    return Err(KqlError::UnknownColumn {
                        operator: self.op.to_string(),
                        name: n.clone(),
                    });
                }
            }
            AstKind::Neg(x) => {
                let x = self.bind(x)?;
                if !(x.ty.is_numeric() || x.ty == T::TimeSpan) {
                    return Err(type_err(format!(
                        "unary '-' cannot be applied to an argument of type {}",
                        x.ty.kql_name()
                    )));
                }
                CExpr {
                    ty: x.ty,
                    kind: CKind::Neg(Box::new(x)),
                }
            }
            AstKind::Binary(BinOp::Matches, l, r) => {
                let text = to_string_expr(self.bind(l)?);
                let re = self.regex(r)?;
                CExpr {
                    ty: T::Bool,
                    kind: CKind::Regex {
                        re,
                        usage: RegexUse::Matches,
                        text: Box::new(text),
                    },
                }
            }
            AstKind::Binary(op, l, r) => {
                let (l, r) = (self.bind(l)?, self.bind(r)?);
                self.binary(*op, l, r)?
            }
            AstKind::In {
                expr,
                list,
                op,
                negated,
            } => {
                let e = self.bind(expr)?;
                match op {
                    ListOp::In { ci } => {
                        if *ci && !matches!(e.ty, T::String | T::Dynamic) {
                            return Err(cannot_compare(e.ty, T::String));
                        }
                        let set = self.list_values(list, e.ty, false)?;
                        self.bg.charge(set.iter().map(value_bytes).sum());
                        self.bg.status()?;
                        CExpr {
                            ty: T::Bool,
                            kind: CKind::In {
                                e: Box::new(e),
                                set,
                                negated: *negated,
                                ci: *ci,
                            },
                        }
                    }
                    ListOp::HasAny | ListOp::HasAll => {
                        let terms = self
                            .list_values(list, T::String, true)?
                            .iter()
                            .map(|v| Arc::from(v.to_text()))
                            .collect();
                        CExpr {
                            ty: T::Bool,
                            kind: CKind::HasTerms {
                                e: Box::new(to_string_expr(e)),
                                terms,
                                all: *op == ListOp::HasAll,
                            },
                        }
                    }
                }
            }
            AstKind::Between {
                expr,
                lo,
                hi,
                negated,
            } => {
                let e = self.bind(expr)?;
                let lo = self.bind(lo)?;
                let mut hi = self.bind(hi)?;
                if e.ty == T::DateTime && lo.ty == T::DateTime && hi.ty == T::TimeSpan {
                    // `between (start .. span)` means `start .. start + span`.
                    hi = self.bind_arith(BinOp::Add, lo.clone(), hi)?;
                    if hi.children().iter().all(|c| c.is_const()) {
                        hi = CExpr::lit(eval(&hi, &NoRow, self.bg), hi.ty);
                    }
                }
                for b in [&lo, &hi] {
                    if !comparable(e.ty, b.ty) {
                        return Err(cannot_compare(e.ty, b.ty));
                    }
                }
                CExpr {
                    ty: T::Bool,
                    kind: CKind::Between {
                        e: Box::new(e),
                        lo: Box::new(lo),
                        hi: Box::new(hi),
                        negated: *negated,
                    },
                }
            }
            AstKind::Index(base, key) => {
                let base = self.bind(base)?;
                let key = self.bind(key)?;
                if base.ty != T::Dynamic {
                    return Err(type_err(format!(
                        "only a dynamic value can be indexed, not a {}",
                        base.ty.kql_name()
                    )));
                }
                if !matches!(key.ty, T::String | T::Int | T::Long | T::Dynamic) {
                    return Err(type_err(format!(
                        "a dynamic value is indexed by a string or an integer, not a {}",
                        key.ty.kql_name()
                    )));
                }
                CExpr {
                    ty: T::Dynamic,
                    kind: CKind::Func(Func::Index, vec![base, key]),
                }
            }
            AstKind::TypeOf(_) | AstKind::Star => {
                return Err(self
                    .src
                    .error_at(a.start, a.end, "not allowed in this position"))
            }
            AstKind::Tabular(_) => {
                return Err(self.src.error_at(
                    a.start,
                    a.end,
                    "a tabular expression where a scalar is expected (try toscalar())",
                ))
            }
            AstKind::Call(name, args) => self.call(name, args, a)?,
        })
    }

    /// A constant regular expression, compiled once with bounded size (the `regex`
    /// crate runs in time linear in the text, so only the compiled size needs a cap).
    fn regex(&self, a: &Ast) -> Res<Arc<regex::Regex>> {
        let e = self.bind(a)?;
        let CKind::Lit(Value::Str(p)) = &e.kind else {
            return Err(self.src.error_at(
                a.start,
                a.end,
                "the regular expression must be a constant string",
            ));
        };
        regex::RegexBuilder::new(p)
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map(Arc::new)
            .map_err(|e| {
                self.src
                    .error_at(a.start, a.end, format!("invalid regular expression: {e}"))
            })
    }

    fn binary(&self, op: BinOp, l: CExpr, r: CExpr) -> Res<CExpr> {
        use DataType as T;
        Ok(match op {
            BinOp::And | BinOp::Or => {
                for x in [&l, &r] {
                    if x.ty != T::Bool {
                        return Err(type_err(format!(
                            "the '{}' operator expects boolean arguments, got {}",
                            op.text(),
                            x.ty.kql_name()
                        )));
                    }
                }
                let (l, r) = (Box::new(l), Box::new(r));
                CExpr {
                    ty: T::Bool,
                    kind: if op == BinOp::And {
                        CKind::And(l, r)
                    } else {
                        CKind::Or(l, r)
                    },
                }
            }
            BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
                if !comparable(l.ty, r.ty) {
                    return Err(cannot_compare(l.ty, r.ty));
                }
                CExpr {
                    ty: T::Bool,
                    kind: CKind::Cmp(op, Box::new(l), Box::new(r)),
                }
            }
            BinOp::EqCi | BinOp::NeCi => {
                let stringy = |t: T| t == T::String || t == T::Dynamic;
                if !stringy(l.ty) || !stringy(r.ty) {
                    return Err(type_err(format!(
                        "the '{}' operator expects string arguments, got {} and {}",
                        op.text(),
                        l.ty.kql_name(),
                        r.ty.kql_name()
                    )));
                }
                CExpr {
                    ty: T::Bool,
                    kind: CKind::Cmp(op, Box::new(l), Box::new(r)),
                }
            }
            BinOp::Str { op, negated, cs } => CExpr {
                ty: T::Bool,
                kind: CKind::StrOp {
                    op,
                    negated,
                    cs,
                    l: Box::new(to_string_expr(l)),
                    r: Box::new(to_string_expr(r)),
                },
            },
            _ => self.bind_arith(op, l, r)?,
        })
    }

    fn bind_arith(&self, op: BinOp, l: CExpr, r: CExpr) -> Res<CExpr> {
        use DataType as T;
        let num = |a: T, b: T| {
            if a == T::Real || b == T::Real {
                T::Real
            } else if a == T::Int && b == T::Int {
                T::Int
            } else {
                T::Long
            }
        };
        let ty = match (op, l.ty, r.ty) {
            (_, a, b) if a.is_numeric() && b.is_numeric() => num(a, b),
            (BinOp::Add, T::DateTime, T::TimeSpan) | (BinOp::Add, T::TimeSpan, T::DateTime) => {
                T::DateTime
            }
            (BinOp::Sub, T::DateTime, T::TimeSpan) => T::DateTime,
            (BinOp::Sub, T::DateTime, T::DateTime) => T::TimeSpan,
            (BinOp::Add | BinOp::Sub, T::TimeSpan, T::TimeSpan) => T::TimeSpan,
            (BinOp::Div, T::TimeSpan, T::TimeSpan) => T::Real,
            (BinOp::Mul, T::TimeSpan, n) | (BinOp::Mul, n, T::TimeSpan) if n.is_numeric() => {
                T::TimeSpan
            }
            (BinOp::Div, T::TimeSpan, n) if n.is_numeric() => T::TimeSpan,
            (_, a, b) => {
                return Err(type_err(format!(
                    "the '{}' operator cannot be applied to arguments of types {} and {}",
                    op.text(),
                    a.kql_name(),
                    b.kql_name()
                )))
            }
        };
        Ok(CExpr {
            ty,
            kind: CKind::Arith(op, Box::new(l), Box::new(r)),
        })
    }

    fn call(&self, name: &str, args: &[Ast], a: &Ast) -> Res<CExpr> {
        use DataType as T;
        if let Some(Binding::Func(def, def_scope)) = lookup(self.scope, name) {
            return self.user_call(name, def, def_scope, args, a);
        }
        if AGGREGATES.contains(&name) {
            return Err(type_err(format!(
                "the aggregation function '{name}()' can only be used in 'summarize'"
            )));
        }
        if name == "__search_has" {
            return self.search_has(args);
        }
        let arity = match name {
            "now" => 0..=1,
            "replace_regex" | "replace" => 3..=3,
            "ago" | "not" | "tolower" | "toupper" | "strlen" | "isempty" | "isnotempty"
            | "isnull" | "isnotnull" | "tostring" | "startofday" | "parse_json" | "parsejson"
            | "todynamic" | "toobject" | "array_length" | "tolong" | "toint" | "todouble"
            | "toreal" | "tobool" | "toboolean" | "todatetime" | "toscalar" => 1..=1,
            "bin" | "floor" | "extractjson" | "strcat_array" => 2..=2,
            "round" => 1..=2,
            "split" => 2..=3,
            "datetime_diff" | "replace_string" => 3..=3,
            "format_datetime" => 2..=2,
            "countof" => 2..=3,
            "datetime_add" => 3..=3,
            "coalesce" => 2..=64,
            "substring" | "indexof" => 2..=3,
            "dayofweek"
            | "hourofday"
            | "ipv4_is_private"
            | "base64_decode_tostring"
            | "base64_decodestring" => 1..=1,
            "prev" | "next" => 1..=3,
            "extract" => 3..=4,
            "extract_all" => 2..=3,
            "iff" | "iif" => 3..=3,
            "case" => 3..=255,
            "strcat" | "pack_array" => 1..=64,
            "bag_pack" | "pack" => 2..=128,
            _ if KNOWN_FUNCTIONS.contains(&name) => {
                return Err(self.src.unsupported(a.start, a.end, format!("{name}()")))
            }
            _ => return Err(KqlError::UnknownFunction(name.to_string())),
        };
        if !arity.contains(&args.len()) {
            return Err(self.src.error_at(
                a.start,
                a.end,
                format!("function '{name}' expects {} argument(s)", arity.start()),
            ));
        }
        match name {
            "toscalar" => return self.toscalar(&args[0]),
            "extract" | "extract_all" => return self.bind_extract(name, args),
            "replace_regex" | "replace" => {
                // replace_regex(text, re, rewrite); the older replace(re, rewrite, text).
                let (t, r, w) = if name == "replace" {
                    (2, 0, 1)
                } else {
                    (0, 1, 2)
                };
                let re = self.regex(&args[r])?;
                let rewrite = match self.bind(&args[w])?.kind {
                    CKind::Lit(Value::Str(x)) => kql_rewrite(&x),
                    _ => {
                        return Err(self.src.error_at(
                            args[w].start,
                            args[w].end,
                            "expected a constant rewrite pattern",
                        ))
                    }
                };
                return Ok(CExpr {
                    ty: DataType::String,
                    kind: CKind::Regex {
                        re,
                        usage: RegexUse::Replace(rewrite),
                        text: Box::new(to_string_expr(self.bind(&args[t])?)),
                    },
                });
            }
            "countof" if args.len() == 3 => {
                match self.bind(&args[2])?.kind {
                    CKind::Lit(Value::Str(k)) if &*k == "regex" => {}
                    CKind::Lit(Value::Str(k)) if &*k == "normal" => {
                        return self.call(name, &args[..2], a);
                    }
                    _ => {
                        return Err(self.src.error_at(
                            args[2].start,
                            args[2].end,
                            "expected \"normal\" or \"regex\"",
                        ))
                    }
                }
                let re = self.regex(&args[1])?;
                return Ok(CExpr {
                    ty: DataType::Long,
                    kind: CKind::Regex {
                        re,
                        usage: RegexUse::Count,
                        text: Box::new(to_string_expr(self.bind(&args[0])?)),
                    },
                });
            }
            _ => {}
        }
        let args = args.iter().map(|x| self.bind(x)).collect::<Res<Vec<_>>>()?;
        let want = |i: usize, t: T| -> Res<()> {
            if args[i].ty == t || args[i].ty == T::Dynamic {
                Ok(())
            } else {
                Err(type_err(format!(
                    "function '{name}' expects argument {} of type {}, got {}",
                    i + 1,
                    t.kql_name(),
                    args[i].ty.kql_name()
                )))
            }
        };
        let f = |f: Func, ty: T, args: Vec<CExpr>| CExpr {
            kind: CKind::Func(f, args),
            ty,
        };
        let strings = |args: Vec<CExpr>| args.into_iter().map(to_string_expr).collect();
        Ok(match name {
            "now" if args.is_empty() => CExpr::lit(Value::DateTime(self.now), T::DateTime),
            "now" => {
                want(0, T::TimeSpan)?;
                let arg = args
                    .into_iter()
                    .next()
                    .unwrap_or(CExpr::lit(Value::Null, T::TimeSpan));
                self.bind_arith(
                    BinOp::Add,
                    CExpr::lit(Value::DateTime(self.now), T::DateTime),
                    arg,
                )?
            }
            "ago" => {
                want(0, T::TimeSpan)?;
                let arg = args
                    .into_iter()
                    .next()
                    .unwrap_or(CExpr::lit(Value::Null, T::TimeSpan));
                self.bind_arith(
                    BinOp::Sub,
                    CExpr::lit(Value::DateTime(self.now), T::DateTime),
                    arg,
                )?
            }
            "not" => {
                want(0, T::Bool)?;
                let mut args = args;
                CExpr {
                    ty: T::Bool,
                    kind: CKind::Not(Box::new(args.remove(0))),
                }
            }
            "tolower" => f(Func::ToLower, T::String, strings(args)),
            "toupper" => f(Func::ToUpper, T::String, strings(args)),
            "strlen" => f(Func::StrLen, T::Long, strings(args)),
            "isempty" => f(Func::IsEmpty, T::Bool, args),
            "isnotempty" => f(Func::IsNotEmpty, T::Bool, args),
            "isnull" => f(Func::IsNull, T::Bool, args),
            "isnotnull" => f(Func::IsNotNull, T::Bool, args),
            "tostring" => f(Func::ToStr, T::String, args),
            "startofday" => {
                want(0, T::DateTime)?;
                f(Func::StartOfDay, T::DateTime, args)
            }
            "bin" | "floor" => {
                let ty = match (args[0].ty, args[1].ty) {
                    (T::DateTime, T::TimeSpan) => T::DateTime,
                    (T::TimeSpan, T::TimeSpan) => T::TimeSpan,
                    (a, b) if a.is_numeric() && b.is_numeric() => {
                        if a == T::Real || b == T::Real {
                            T::Real
                        } else {
                            T::Long
                        }
                    }
                    (a, b) => {
                        return Err(type_err(format!(
                            "function '{name}' cannot be applied to arguments of types {} and {}",
                            a.kql_name(),
                            b.kql_name()
                        )))
                    }
                };
                f(Func::Bin, ty, args)
            }
            "iff" | "iif" => {
                want(0, T::Bool)?;
                let ty = unify(name, &[args[1].ty, args[2].ty])?;
                f(Func::Iff, ty, args)
            }
            "case" => {
                let mut types = Vec::new();
                for (i, a) in args.iter().enumerate() {
                    if i % 2 == 0 && i + 1 < args.len() {
                        want(i, T::Bool)?;
                    } else {
                        types.push(a.ty);
                    }
                }
                if args.len() % 2 == 0 {
                    return Err(type_err(
                        "function 'case' expects an odd number of arguments (the last is the else value)"
                            .to_string(),
                    ));
                }
                let ty = unify(name, &types)?;
                f(Func::Case, ty, args)
            }
            "parse_json" | "parsejson" | "todynamic" | "toobject" => {
                f(Func::ParseJson, T::Dynamic, args)
            }
            "extractjson" => f(Func::ExtractJson, T::String, strings(args)),
            "array_length" => f(Func::ArrayLength, T::Long, args),
            "split" => {
                let mut args = args;
                let idx = args.len().checked_sub(3).map(|_| args.remove(2));
                let mut args: Vec<CExpr> = strings(args);
                if let Some(i) = idx {
                    if !matches!(i.ty, T::Int | T::Long) {
                        return Err(type_err(
                            "function 'split' expects an integer index".to_string(),
                        ));
                    }
                    args.push(i);
                }
                f(Func::Split, T::Dynamic, args)
            }
            "strcat_array" => f(Func::StrCatArray, T::String, args),
            "pack_array" => f(Func::PackArray, T::Dynamic, args),
            "bag_pack" | "pack" => {
                if args.len() % 2 != 0 {
                    return Err(type_err(format!(
                        "function '{name}' expects key and value pairs"
                    )));
                }
                f(Func::BagPack, T::Dynamic, args)
            }
            "tolong" => f(Func::ToLong, T::Long, args),
            "toint" => f(Func::ToLong, T::Int, args),
            "todouble" | "toreal" => f(Func::ToReal, T::Real, args),
            "tobool" | "toboolean" => f(Func::ToBool, T::Bool, args),
            "todatetime" => f(Func::ToDateTime, T::DateTime, args),
            "round" => {
                if !args[0].ty.is_numeric() && args[0].ty != T::Dynamic {
                    return Err(type_err(format!(
                        "function 'round' expects a number, got {}",
                        args[0].ty.kql_name()
                    )));
                }
                let ty = args[0].ty;
                f(Func::Round, ty, args)
            }
            "datetime_diff" => {
                want(0, T::String)?;
                want(1, T::DateTime)?;
                want(2, T::DateTime)?;
                f(Func::DatetimeDiff, T::Long, args)
            }
            "format_datetime" => {
                want(0, T::DateTime)?;
                want(1, T::String)?;
                f(Func::FormatDatetime, T::String, args)
            }
            "coalesce" => {
                let types: Vec<T> = args.iter().map(|a| a.ty).collect();
                let ty = unify(name, &types)?;
                f(Func::Coalesce, ty, args)
            }
            "replace_string" => f(Func::ReplaceString, T::String, strings(args)),
            "substring" | "indexof" => {
                let mut args = args;
                let rest = args.split_off(if name == "substring" { 1 } else { 2 });
                for (i, a) in rest.iter().enumerate() {
                    if !matches!(a.ty, T::Int | T::Long | T::Dynamic) {
                        return Err(type_err(format!(
                            "function '{name}' expects argument {} of type long, got {}",
                            i + 1 + args.len(),
                            a.ty.kql_name()
                        )));
                    }
                }
                let mut args: Vec<CExpr> = strings(args);
                args.extend(rest);
                if name == "substring" {
                    f(Func::Substring, T::String, args)
                } else {
                    f(Func::IndexOf, T::Long, args)
                }
            }
            "countof" => f(Func::CountOf, T::Long, strings(args)),
            "dayofweek" | "hourofday" => {
                want(0, T::DateTime)?;
                if name == "dayofweek" {
                    f(Func::DayOfWeek, T::TimeSpan, args)
                } else {
                    f(Func::HourOfDay, T::Int, args)
                }
            }
            "ipv4_is_private" => f(Func::Ipv4IsPrivate, T::Bool, strings(args)),
            "base64_decode_tostring" | "base64_decodestring" => {
                f(Func::Base64DecodeToString, T::String, strings(args))
            }
            "datetime_add" => {
                want(0, T::String)?;
                if !matches!(args[1].ty, T::Int | T::Long | T::Dynamic) {
                    return Err(type_err(
                        "function 'datetime_add' expects an integer amount".to_string(),
                    ));
                }
                want(2, T::DateTime)?;
                f(Func::DatetimeAdd, T::DateTime, args)
            }
            "prev" | "next" => {
                if args.len() > 1 && !matches!(args[1].kind, CKind::Lit(Value::Int(n)) if n >= 0) {
                    return Err(type_err(format!(
                        "function '{name}' expects a non-negative integer constant offset"
                    )));
                }
                let ty = match args.get(2) {
                    Some(d) => unify(name, &[args[0].ty, d.ty])?,
                    None => args[0].ty,
                };
                let func = if name == "prev" {
                    Func::Prev
                } else {
                    Func::Next
                };
                f(func, ty, args)
            }
            _ => f(Func::StrCat, T::String, args),
        })
    }

    /// `search "term"`: true where any string column has the term (false for a row
    /// without string columns).
    fn search_has(&self, args: &[Ast]) -> Res<CExpr> {
        let term = self.bind(&args[0])?;
        let mut any: Option<CExpr> = None;
        for (c, col) in self.cols.iter().enumerate() {
            if col.ty != DataType::String {
                continue;
            }
            let has = CExpr {
                ty: DataType::Bool,
                kind: CKind::StrOp {
                    op: StrOp::Has,
                    negated: false,
                    cs: false,
                    l: Box::new(CExpr {
                        ty: DataType::String,
                        kind: CKind::Col(c),
                    }),
                    r: Box::new(term.clone()),
                },
            };
            any = Some(match any {
                None => has,
                Some(a) => CExpr {
                    ty: DataType::Bool,
                    kind: CKind::Or(Box::new(a), Box::new(has)),
                },
            });
        }
        Ok(any.unwrap_or(CExpr::lit(Value::Bool(false), DataType::Bool)))
    }

    /// `extract(re, group, text [, typeof(T)])`, `extract_all(re, [groups,] text)`.
    fn bind_extract(&self, name: &str, args: &[Ast]) -> Res<CExpr> {
        let re = self.regex(&args[0])?;
        let group = |a: &Ast| -> Res<usize> {
            match self.bind(a)?.kind {
                CKind::Lit(Value::Int(g)) if g >= 0 && (g as usize) < re.captures_len() => {
                    Ok(g as usize)
                }
                _ => Err(self.src.error_at(
                    a.start,
                    a.end,
                    "expected the number of a capture group of the regular expression",
                )),
            }
        };
        if name == "extract" {
            let g = group(&args[1])?;
            let text = to_string_expr(self.bind(&args[2])?);
            let ty = match args.get(3).map(|a| &a.kind) {
                None => DataType::String,
                Some(AstKind::TypeOf(t)) => *t,
                Some(_) => {
                    return Err(self
                        .src
                        .error_at(args[3].start, args[3].end, "expected typeof(T)"))
                }
            };
            return Ok(CExpr {
                ty,
                kind: CKind::Regex {
                    re,
                    usage: RegexUse::Extract(g),
                    text: Box::new(text),
                },
            });
        }
        let groups = if args.len() == 3 {
            let g = self.bind(&args[1])?;
            let CKind::Lit(v) = &g.kind else {
                return Err(self.src.error_at(
                    args[1].start,
                    args[1].end,
                    "expected a constant array of groups",
                ));
            };
            let items = dynamic::elements(v).unwrap_or_default();
            let mut out = Vec::new();
            for j in items {
                match j.as_u64() {
                    Some(n) if (n as usize) < re.captures_len() => out.push(n as usize),
                    _ => {
                        return Err(self.src.error_at(
                            args[1].start,
                            args[1].end,
                            "expected the numbers of capture groups",
                        ))
                    }
                }
            }
            out
        } else if re.captures_len() > 1 {
            (1..re.captures_len()).collect()
        } else {
            vec![0]
        };
        let text = to_string_expr(self.bind(&args[args.len() - 1])?);
        Ok(CExpr {
            ty: DataType::Dynamic,
            kind: CKind::Regex {
                re,
                usage: RegexUse::ExtractAll(groups),
                text: Box::new(text),
            },
        })
    }

    /// `toscalar(T | ...)`: the first column of the first row (null when empty).
    fn toscalar(&self, a: &Ast) -> Res<CExpr> {
        match self.table_values(a)? {
            Some((vals, ty)) => Ok(CExpr::lit(
                vals.into_iter().next().unwrap_or(Value::Null),
                ty,
            )),
            None => self.bind(a),
        }
    }

    /// A call of a user function in a scalar expression: its body bound with the
    /// parameters standing for the caller's arguments.
    fn user_call(
        &self,
        name: &str,
        def: &FuncDef,
        def_scope: &Scope,
        args: &[Ast],
        a: &Ast,
    ) -> Res<CExpr> {
        let _guard = self.ctx.enter_call()?;
        if args.len() > def.params.len() {
            return Err(self.src.error_at(
                a.start,
                a.end,
                format!("function '{name}' expects {} argument(s)", def.params.len()),
            ));
        }
        let mut params = Vec::new();
        for (i, p) in def.params.iter().enumerate() {
            if p.tabular {
                return Err(self
                    .src
                    .unsupported(a.start, a.end, "tabular function parameters"));
            }
            let e = match (args.get(i), &p.default) {
                (Some(x), _) => self.bind(x)?,
                (None, Some(d)) => self.with(def_scope, &[]).bind(d)?,
                (None, None) => {
                    return Err(self.src.error_at(
                        a.start,
                        a.end,
                        format!("function '{name}': no value for parameter '{}'", p.name),
                    ))
                }
            };
            params.push((p.name.clone(), e));
        }
        let scope = self.ctx.bind_lets(&def.lets, def_scope.clone())?;
        match &def.body {
            LetRhs::Expr(body) => self.with(&scope, &params).bind(body),
            _ => Err(self.src.error_at(
                a.start,
                a.end,
                format!("function '{name}' returns a table where a scalar is expected"),
            )),
        }
    }
}

/// The type of values that may come from any of `types` (the branches of `iff` and
/// `case`): one type, numbers widened to real, anything with a dynamic is dynamic.
fn unify(name: &str, types: &[DataType]) -> Res<DataType> {
    let mut ty = types[0];
    for &t in &types[1..] {
        ty = if t == ty {
            ty
        } else if t.is_numeric() && ty.is_numeric() {
            DataType::Real
        } else if t == DataType::Dynamic || ty == DataType::Dynamic {
            DataType::Dynamic
        } else {
            return Err(type_err(format!(
                "function '{name}': the branches have different types ({} and {})",
                ty.kql_name(),
                t.kql_name()
            )));
        };
    }
    Ok(ty)
}

/// The compiled size a regular expression of a query may have (the `regex` crate's
/// own default is 10 MiB; 1 MiB is ample for hunting patterns and keeps a hostile
/// `(a{1000}){1000}` from costing the process more).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

fn to_string_expr(e: CExpr) -> CExpr {
    if e.ty == DataType::String {
        e
    } else if let CKind::Lit(v) = &e.kind {
        let s = match v {
            Value::Str(_) => v.clone(),
            other => Value::str(&other.to_text()),
        };
        CExpr::lit(s, DataType::String)
    } else {
        CExpr {
            kind: CKind::Func(Func::ToStr, vec![e]),
            ty: DataType::String,
        }
    }
}

fn comparable(a: DataType, b: DataType) -> bool {
    a == b || (a.is_numeric() && b.is_numeric()) || a == DataType::Dynamic || b == DataType::Dynamic
}

fn cannot_compare(a: DataType, b: DataType) -> KqlError {
    type_err(format!(
        "Cannot compare values of types {} and {}. Try adding explicit casts",
        a.kql_name(),
        b.kql_name()
    ))
}

// ---------------------------------------------------------------------------------------
// Running a query: scopes, the context of one run, tabular expressions

/// What a name stands for.
pub(crate) enum Binding {
    Scalar(Value, DataType),
    /// A tabular `let`: evaluated where it is used, in the scope it was defined in.
    Tabular(Rc<TabExpr>, Scope),
    /// A user function and the scope it was defined in (its body sees only the names
    /// defined before it, so a function cannot call itself).
    Func(Rc<FuncDef>, Scope),
}

/// One name in scope, and the scope around it.
pub(crate) struct Env {
    parent: Scope,
    name: String,
    binding: Binding,
}

/// The names in scope: a persistent list, newest first, shared by what captured it.
pub(crate) type Scope = Option<Rc<Env>>;

fn lookup<'s>(scope: &'s Scope, name: &str) -> Option<&'s Binding> {
    let mut cur = scope.as_ref();
    while let Some(env) = cur {
        if env.name == name {
            return Some(&env.binding);
        }
        cur = env.parent.as_ref();
    }
    None
}

fn define(scope: Scope, name: &str, binding: Binding) -> Scope {
    Some(Rc::new(Env {
        parent: scope,
        name: name.to_string(),
        binding,
    }))
}

/// Everything one run of a query shares.
pub(crate) struct Ctx<'a> {
    data: &'a Dataset,
    src: &'a Src<'a>,
    opts: &'a RunOptions,
    now: i64,
    bg: &'a Budget,
    /// Rows read from tables (after the lookback cut), over every table reference.
    scanned: Cell<u64>,
    /// Nested evaluations of tabular `let`s and calls of user functions.
    calls: Cell<u32>,
    /// What the query did that the service would have done differently (offline).
    warnings: std::cell::RefCell<Vec<String>>,
}

/// Leaves one nested evaluation when dropped.
pub(crate) struct CallGuard<'c>(&'c Cell<u32>);
impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

pub(crate) fn run(query: &str, data: &Dataset, opts: &RunOptions) -> Res<QueryOutput> {
    let src = Src { text: query };
    let q = Parser::new(&src, opts.limits.max_nesting)?.parse_query()?;
    if q.operators > opts.limits.max_operators {
        return Err(KqlError::LimitExceeded(Limit::Operators));
    }
    let bg = Budget::new(opts.limits);
    let ctx = Ctx {
        data,
        src: &src,
        opts,
        now: opts.now_unix_ms.saturating_mul(TICKS_PER_MS),
        bg: &bg,
        scanned: Cell::new(0),
        calls: Cell::new(0),
        warnings: std::cell::RefCell::new(Vec::new()),
    };
    let scope = ctx.bind_lets(&q.lets, None)?;
    let frame = ctx.tabular(&q.body, &scope)?;

    let n = frame.len.min(opts.row_cap);
    let rows = (0..n)
        .map(|i| (0..frame.cols.len()).map(|c| frame.value(c, i)).collect())
        .collect();
    Ok(QueryOutput {
        schema: frame
            .cols
            .iter()
            .map(|c| Column {
                name: c.name.clone(),
                data_type: c.ty,
                type_name: c.ty.schema_name(),
            })
            .collect(),
        rows,
        rows_scanned: ctx.scanned.get(),
        operators: q.operators as u32,
        truncated: frame.len > opts.row_cap,
        warnings: ctx.warnings.take(),
    })
}

impl<'a> Ctx<'a> {
    fn binder<'s>(&'s self, scope: &'s Scope, cols: &'s [FCol], op: &'s str) -> Binder<'s, 'a> {
        Binder {
            ctx: self,
            src: self.src,
            scope,
            cols,
            params: &[],
            now: self.now,
            op,
            bg: self.bg,
        }
    }

    /// Enters a tabular `let` or a user function; a chain of them deeper than the
    /// nesting limit is refused like a deep expression.
    fn enter_call(&self) -> Res<CallGuard<'_>> {
        let d = self.calls.get() + 1;
        if d > self.opts.limits.max_nesting {
            return Err(KqlError::TooDeep(self.opts.limits.max_nesting));
        }
        self.calls.set(d);
        Ok(CallGuard(&self.calls))
    }

    /// Adds `lets` to `scope`, in order.
    fn bind_lets(&self, lets: &[Let], mut scope: Scope) -> Res<Scope> {
        for l in lets {
            let binding = match &l.rhs {
                LetRhs::Func(def) => Binding::Func(def.clone(), scope.clone()),
                LetRhs::Tabular(t) => Binding::Tabular(Rc::new(t.clone()), scope.clone()),
                LetRhs::Expr(ast) => match self.as_tabular(ast, &scope) {
                    Some(t) => Binding::Tabular(Rc::new(t), scope.clone()),
                    None => {
                        let e = self.binder(&scope, &[], "let").bind(ast)?;
                        let v = match e.kind {
                            CKind::Lit(v) => v,
                            _ => eval(&e, &NoRow, self.bg),
                        };
                        self.bg.status()?;
                        Binding::Scalar(v, e.ty)
                    }
                },
            };
            scope = define(scope, &l.name, binding);
        }
        Ok(scope)
    }

    /// `a` as a tabular expression, if it is one in `scope`: a parenthesised pipeline,
    /// the name of a table or tabular `let`, or a call of a function returning a table.
    fn as_tabular(&self, a: &Ast, scope: &Scope) -> Option<TabExpr> {
        let source = match &a.kind {
            AstKind::Tabular(t) => return Some((**t).clone()),
            AstKind::Call(n, args) if n == "materialize" && args.len() == 1 => {
                return self.as_tabular(&args[0], scope)
            }
            AstKind::Name(n) => {
                let tabular = match lookup(scope, n) {
                    Some(Binding::Tabular(..)) => true,
                    Some(Binding::Func(def, def_scope)) => {
                        def.params.iter().all(|p| p.default.is_some())
                            && self.returns_table(def, def_scope)
                    }
                    Some(Binding::Scalar(..)) => false,
                    None => self.data.table(n).is_some(),
                };
                if !tabular {
                    return None;
                }
                Source::Name {
                    name: n.clone(),
                    start: a.start,
                    end: a.end,
                }
            }
            AstKind::Call(n, args) => match lookup(scope, n) {
                Some(Binding::Func(def, def_scope)) if self.returns_table(def, def_scope) => {
                    Source::Call {
                        name: n.clone(),
                        args: args.clone(),
                        start: a.start,
                        end: a.end,
                    }
                }
                _ => return None,
            },
            _ => return None,
        };
        Some(TabExpr {
            source,
            ops: Vec::new(),
        })
    }

    fn returns_table(&self, def: &FuncDef, def_scope: &Scope) -> bool {
        match &def.body {
            LetRhs::Tabular(_) => true,
            LetRhs::Expr(e) => def.lets.is_empty() && self.as_tabular(e, def_scope).is_some(),
            LetRhs::Func(_) => false,
        }
    }

    fn tabular(&self, t: &TabExpr, scope: &Scope) -> Res<Frame<'a>> {
        let mut frame = self.source(&t.source, scope)?;
        for op in &t.ops {
            frame = self.apply(frame, op, scope)?;
            if frame.cols.len() > self.opts.limits.max_columns {
                return Err(KqlError::LimitExceeded(Limit::Columns));
            }
            self.bg.check_time();
            self.bg.status()?;
        }
        Ok(frame)
    }

    fn source(&self, s: &Source, scope: &Scope) -> Res<Frame<'a>> {
        match s {
            Source::Name { name, start, end } => {
                if name.contains('*') {
                    return Err(self.src.error_at(
                        *start,
                        *end,
                        "a wildcard table name is only allowed in 'union'",
                    ));
                }
                match lookup(scope, name) {
                    Some(Binding::Tabular(t, def_scope)) => {
                        let _guard = self.enter_call()?;
                        self.tabular(t, def_scope)
                    }
                    Some(Binding::Func(def, def_scope)) => {
                        self.call_tabular(name, def, def_scope, &[], scope, *start, *end)
                    }
                    Some(Binding::Scalar(..)) => {
                        Err(type_err(format!("'{name}' is a scalar value, not a table")))
                    }
                    None => match self.data.table(name) {
                        Some(t) => Ok(self.table_frame(t)),
                        None => Err(KqlError::UnknownTable(name.clone())),
                    },
                }
            }
            Source::Call {
                name,
                args,
                start,
                end,
            } => match lookup(scope, name) {
                Some(Binding::Func(def, def_scope)) => {
                    self.call_tabular(name, def, def_scope, args, scope, *start, *end)
                }
                _ if name == "AssignedIPAddresses" && (1..=2).contains(&args.len()) => {
                    let b = self.binder(scope, &[], "AssignedIPAddresses");
                    let device = match b.bind(&args[0])?.kind {
                        CKind::Lit(Value::Str(d)) => d,
                        _ => {
                            return Err(type_err(
                                "AssignedIPAddresses() expects a device id or name".to_string(),
                            ))
                        }
                    };
                    let at =
                        match args.get(1).map(|a| b.bind(a)).transpose()?.map(|e| e.kind) {
                            None => None,
                            Some(CKind::Lit(Value::DateTime(t))) => Some(t),
                            Some(_) => return Err(type_err(
                                "AssignedIPAddresses() expects a datetime as its second argument"
                                    .to_string(),
                            )),
                        };
                    let rows = enrich::assigned(&self.data.enrich, &device, at);
                    let n = rows.len();
                    let mut cols: Vec<(String, DataType, Vec<Value>)> = enrich::ASSIGNED
                        .iter()
                        .map(|(c, t)| ((*c).to_string(), *t, Vec::new()))
                        .collect();
                    for r in rows {
                        for (k, v) in r.into_iter().enumerate() {
                            cols[k].2.push(v);
                        }
                    }
                    Ok(Frame::computed(cols, n))
                }
                _ if KNOWN_FUNCTIONS.contains(&name.as_str()) || name == "AssignedIPAddresses" => {
                    Err(self.src.unsupported(*start, *end, format!("{name}()")))
                }
                _ => Err(KqlError::UnknownFunction(name.clone())),
            },
            Source::Union(u) => self.union(u, None, scope),
            Source::Data {
                cols,
                values,
                external,
                start,
                end,
            } => {
                if *external {
                    let w = "externaldata is not fetched by the emulator (it is offline): the \
                             declared columns are returned with no rows"
                        .to_string();
                    let mut ws = self.warnings.borrow_mut();
                    if !ws.contains(&w) {
                        ws.push(w);
                    }
                    let out = cols
                        .iter()
                        .map(|(n, t)| (n.clone(), *t, Vec::new()))
                        .collect();
                    return Ok(Frame::computed(out, 0));
                }
                if values.len() % cols.len().max(1) != 0 {
                    return Err(self.src.error_at(
                        *start,
                        *end,
                        "datatable: the number of values is not a multiple of the number of columns",
                    ));
                }
                let b = self.binder(scope, &[], "datatable");
                let mut out: Vec<(String, DataType, Vec<Value>)> = cols
                    .iter()
                    .map(|(n, t)| (n.clone(), *t, Vec::new()))
                    .collect();
                for (k, v) in values.iter().enumerate() {
                    let e = b.bind(v)?;
                    let CKind::Lit(x) = e.kind else {
                        return Err(self.src.error_at(
                            v.start,
                            v.end,
                            "datatable: values must be constants",
                        ));
                    };
                    let col = &mut out[k % cols.len()];
                    col.2.push(convert(x, col.1));
                }
                let n = values.len() / cols.len().max(1);
                self.bg
                    .charge(out.iter().flat_map(|c| c.2.iter()).map(value_bytes).sum());
                self.bg.status()?;
                Ok(Frame::computed(out, n))
            }
            Source::Print(items) => {
                let one = Frame::computed(Vec::new(), 1);
                let b = self.binder(scope, &[], "print");
                project(one, items, false, &b)
            }
            Source::Paren(t) => self.tabular(t, scope),
        }
    }

    /// The rows of `table` inside the lookback window.
    fn table_frame(&self, table: &'a Table) -> Frame<'a> {
        let stamps = table.timestamps();
        let lo = match self.opts.lookback_ms {
            Some(ms) => {
                let cut = self.now.saturating_sub(ms.saturating_mul(TICKS_PER_MS));
                stamps.partition_point(|t| *t < cut)
            }
            None => 0,
        };
        let hi = table.row_count();
        self.scanned.set(self.scanned.get() + (hi - lo) as u64);
        Frame {
            table: Some(table),
            sel: (lo as u32..hi as u32).collect(),
            len: hi - lo,
            cols: table
                .schema()
                .iter()
                .enumerate()
                .map(|(j, c)| FCol {
                    name: c.name.clone(),
                    ty: c.data_type,
                    src: ColSrc::Table(j),
                })
                .collect(),
            extra: Vec::new(),
        }
    }

    /// A user function called where a table is expected.
    #[allow(clippy::too_many_arguments)]
    fn call_tabular(
        &self,
        name: &str,
        def: &FuncDef,
        def_scope: &Scope,
        args: &[Ast],
        scope: &Scope,
        start: usize,
        end: usize,
    ) -> Res<Frame<'a>> {
        let _guard = self.enter_call()?;
        if args.len() > def.params.len() {
            return Err(self.src.error_at(
                start,
                end,
                format!("function '{name}' expects {} argument(s)", def.params.len()),
            ));
        }
        let mut inner = def_scope.clone();
        for (i, p) in def.params.iter().enumerate() {
            if p.tabular {
                return Err(self
                    .src
                    .unsupported(start, end, "tabular function parameters"));
            }
            let e = match (args.get(i), &p.default) {
                (Some(x), _) => self.binder(scope, &[], name).bind(x)?,
                (None, Some(d)) => self.binder(def_scope, &[], name).bind(d)?,
                (None, None) => {
                    return Err(self.src.error_at(
                        start,
                        end,
                        format!("function '{name}': no value for parameter '{}'", p.name),
                    ))
                }
            };
            let v = match e.kind {
                CKind::Lit(v) => v,
                _ => eval(&e, &NoRow, self.bg),
            };
            inner = define(inner, &p.name, Binding::Scalar(v, e.ty));
        }
        let inner = self.bind_lets(&def.lets, inner)?;
        let body = match &def.body {
            LetRhs::Tabular(t) => Some(t.clone()),
            LetRhs::Expr(e) => self.as_tabular(e, &inner),
            LetRhs::Func(_) => None,
        };
        match body {
            Some(t) => self.tabular(&t, &inner),
            None => Err(self.src.error_at(
                start,
                end,
                format!("function '{name}' returns a scalar where a table is expected"),
            )),
        }
    }

    /// `union` of `first` (the piped input, if any) and the items of `u`.
    fn union(&self, u: &Union, first: Option<Frame<'a>>, scope: &Scope) -> Res<Frame<'a>> {
        let mut inputs: Vec<(String, Frame<'a>)> = Vec::new();
        if let Some(f) = first {
            inputs.push(("union_arg0".to_string(), f));
        }
        for item in &u.items {
            match &item.source {
                Source::Name { name, .. } if item.ops.is_empty() && name.contains('*') => {
                    for t in self.data.tables() {
                        if glob(name, t.name()) {
                            inputs.push((t.name().to_string(), self.table_frame(t)));
                        }
                    }
                }
                Source::Name { name, .. } if item.ops.is_empty() => {
                    inputs.push((name.clone(), self.tabular(item, scope)?));
                }
                _ => {
                    let label = format!("union_arg{}", inputs.len());
                    inputs.push((label, self.tabular(item, scope)?));
                }
            }
        }
        if let Some(pred) = &u.filter {
            let op = crate::parse::Operator {
                name: "where".to_string(),
                kind: OpKind::Where(pred.clone()),
            };
            let mut kept = Vec::new();
            for (label, f) in inputs {
                match self.apply(f, &op, scope) {
                    Ok(f) if f.len > 0 => kept.push((label, f)),
                    Ok(_) | Err(KqlError::UnknownColumn { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            inputs = kept;
        }
        // Output columns: by name and type, in order of first appearance; a name with
        // two types becomes `name_type` for each (as the service does).
        let mut keys: Vec<(String, DataType)> = Vec::new();
        for (_, f) in &inputs {
            for c in &f.cols {
                if !keys.iter().any(|(n, t)| *n == c.name && *t == c.ty) {
                    keys.push((c.name.clone(), c.ty));
                }
            }
        }
        if u.inner {
            keys.retain(|(n, t)| {
                inputs
                    .iter()
                    .all(|(_, f)| f.cols.iter().any(|c| c.name == *n && c.ty == *t))
            });
        }
        let total: usize = inputs.iter().map(|(_, f)| f.len).sum();
        let mut out: Vec<(String, DataType, Vec<Value>)> = Vec::new();
        if let Some(ws) = &u.with_source {
            let mut vals = Vec::with_capacity(total);
            for (label, f) in &inputs {
                let v = Value::str(label);
                vals.extend(std::iter::repeat_n(v, f.len));
            }
            out.push((ws.clone(), DataType::String, vals));
        }
        for (name, ty) in &keys {
            let clash = keys.iter().filter(|(n, _)| n == name).count() > 1;
            let out_name = if clash {
                format!("{name}_{}", ty.kql_name())
            } else {
                name.clone()
            };
            let mut vals = Vec::with_capacity(total);
            for (_, f) in &inputs {
                match f.cols.iter().position(|c| c.name == *name && c.ty == *ty) {
                    Some(c) => {
                        for i in 0..f.len {
                            self.bg.row()?;
                            let v = f.value(c, i);
                            self.bg.charge(value_bytes(&v));
                            vals.push(v);
                        }
                    }
                    None => {
                        self.bg.charge(f.len * std::mem::size_of::<Value>());
                        self.bg.status()?;
                        vals.extend(std::iter::repeat_n(Value::Null, f.len));
                    }
                }
            }
            out.push((out_name, *ty, vals));
        }
        let cols: Vec<FCol> = out
            .iter()
            .map(|(n, t, _)| FCol {
                name: n.clone(),
                ty: *t,
                src: ColSrc::Extra(0),
            })
            .collect();
        check_unique(&cols, "union")?;
        Ok(Frame::computed(out, total))
    }
}

fn const_count(b: &Binder<'_, '_>, a: &Ast, what: &str) -> Res<usize> {
    match b.bind(a)?.kind {
        CKind::Lit(Value::Int(n)) if n >= 0 => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
        _ => Err(b.src.error_at(
            a.start,
            a.end,
            format!("'{what}' expects a non-negative integer constant"),
        )),
    }
}

fn default_name(e: &CExpr, cols: &[FCol], auto: &mut usize) -> String {
    match &e.kind {
        CKind::Col(c) => cols[*c].name.clone(),
        CKind::Func(Func::Bin, args) => match args.first().map(|a| &a.kind) {
            Some(CKind::Col(c)) => cols[*c].name.clone(),
            _ => {
                *auto += 1;
                format!("Column{auto}")
            }
        },
        _ => {
            *auto += 1;
            format!("Column{auto}")
        }
    }
}

fn check_unique(cols: &[FCol], op: &str) -> Res<()> {
    for (i, c) in cols.iter().enumerate() {
        if cols[..i].iter().any(|d| d.name == c.name) {
            return Err(type_err(format!(
                "'{op}' operator: the column '{}' is defined more than once",
                c.name
            )));
        }
    }
    Ok(())
}

/// `project` (`extend` false) and `extend` of `items` over `frame`.
fn project<'a>(
    mut frame: Frame<'a>,
    items: &[Item],
    extend: bool,
    b: &Binder<'_, '_>,
) -> Res<Frame<'a>> {
    let cols = b.cols;
    let mut new_cols = if extend { cols.to_vec() } else { Vec::new() };
    let mut auto = 0usize;
    for Item { name, expr } in items {
        let e = b.bind(expr)?;
        let name = match name {
            Some(n) => n.clone(),
            None => default_name(&e, cols, &mut auto),
        };
        let src = match e.kind {
            CKind::Col(c) => cols[c].src,
            _ => {
                frame.extra.push(frame.compute(&e, b.bg)?);
                ColSrc::Extra(frame.extra.len() - 1)
            }
        };
        let col = FCol {
            name,
            ty: e.ty,
            src,
        };
        match new_cols.iter().position(|c| c.name == col.name) {
            Some(p) if extend => new_cols[p] = col,
            _ => new_cols.push(col),
        }
        if new_cols.len() > b.bg.limits.max_columns {
            return Err(KqlError::LimitExceeded(Limit::Columns));
        }
    }
    check_unique(&new_cols, b.op)?;
    frame.cols = new_cols;
    frame.gc();
    Ok(frame)
}

/// Replaces the column named `name` (or appends one) with computed `vals`.
fn set_column(frame: &mut Frame<'_>, name: &str, ty: DataType, vals: Vec<Value>) {
    frame.extra.push(vals);
    let col = FCol {
        name: name.to_string(),
        ty,
        src: ColSrc::Extra(frame.extra.len() - 1),
    };
    match frame.index(name) {
        Some(p) => frame.cols[p] = col,
        None => frame.cols.push(col),
    }
}

impl<'a> Ctx<'a> {
    fn apply(
        &self,
        mut frame: Frame<'a>,
        op: &crate::parse::Operator,
        scope: &Scope,
    ) -> Res<Frame<'a>> {
        let (src, bg) = (self.src, self.bg);
        let cols = frame.cols.clone();
        let b = self.binder(scope, &cols, &op.name);
        match &op.kind {
            OpKind::Where(pred) => {
                let e = b.bind(pred)?;
                if e.ty != DataType::Bool {
                    return Err(type_err(format!(
                        "'{}' operator: the predicate must be a boolean expression, got {}",
                        op.name,
                        e.ty.kql_name()
                    )));
                }
                let filter = Filter::build(&e, &frame, bg);
                bg.status()?;
                let mut keep = Vec::with_capacity(frame.len);
                for i in 0..frame.len {
                    bg.row()?;
                    keep.push(filter.test(&frame, i, bg) == 1);
                }
                bg.status()?;
                drop(filter);
                frame.retain(&keep);
            }
            OpKind::Project(items) => return project(frame, items, false, &b),
            OpKind::Extend(items) => return project(frame, items, true, &b),
            OpKind::ProjectPick(patterns, keep) => {
                let mut order: Vec<usize> = Vec::new();
                for (p, s, e) in patterns {
                    let hits: Vec<usize> = (0..frame.cols.len())
                        .filter(|i| glob(p, &frame.cols[*i].name) && !order.contains(i))
                        .collect();
                    if hits.is_empty() && !p.contains('*') {
                        return Err(src.error_at(
                            *s,
                            *e,
                            format!(
                                "'{}' operator: Failed to resolve column named '{p}'",
                                op.name
                            ),
                        ));
                    }
                    order.extend(hits);
                }
                if *keep {
                    order.sort_unstable();
                } else {
                    let rest: Vec<usize> = (0..frame.cols.len())
                        .filter(|i| !order.contains(i))
                        .collect();
                    order.extend(rest);
                }
                let cols = std::mem::take(&mut frame.cols);
                frame.cols = order.into_iter().map(|i| cols[i].clone()).collect();
                frame.gc();
            }
            OpKind::ProjectAway(names) => {
                for (n, s, e) in names {
                    if n.contains('*') {
                        continue;
                    }
                    if frame.index(n).is_none() {
                        return Err(src.error_at(
                            *s,
                            *e,
                            format!(
                                "'project-away' operator: Failed to resolve column named '{n}'"
                            ),
                        ));
                    }
                }
                frame
                    .cols
                    .retain(|c| !names.iter().any(|(n, _, _)| glob(n, &c.name)));
                frame.gc();
            }
            OpKind::ProjectRename(pairs) => {
                for (new, old, s, e) in pairs {
                    let Some(i) = frame.index(old) else {
                        return Err(src.error_at(
                            *s,
                            *e,
                            format!(
                                "'project-rename' operator: Failed to resolve column named '{old}'"
                            ),
                        ));
                    };
                    frame.cols[i].name = new.clone();
                }
                check_unique(&frame.cols, &op.name)?;
            }
            OpKind::Take(n) => {
                let n = const_count(&b, n, &op.name)?;
                frame.truncate(n);
            }
            OpKind::Top(n, keys) => {
                let n = const_count(&b, n, &op.name)?;
                let perm = sort_perm(&frame, &b, keys, Some(n))?;
                frame.permute(&perm);
            }
            OpKind::Sort(keys) => {
                let perm = sort_perm(&frame, &b, keys, None)?;
                frame.permute(&perm);
            }
            OpKind::Count => {
                return Ok(Frame::computed(
                    vec![(
                        "Count".to_string(),
                        DataType::Long,
                        vec![Value::Int(frame.len as i64)],
                    )],
                    1,
                ))
            }
            OpKind::Distinct(items) => return summarize(&frame, &b, &[], items, false),
            OpKind::Summarize { aggs, by } => return summarize(&frame, &b, aggs, by, true),
            OpKind::Join { kind, right, on } => {
                let right = self.tabular(right, scope)?;
                return self.join(&frame, &right, *kind, on);
            }
            OpKind::Union(u) => return self.union(u, Some(frame), scope),
            OpKind::MvExpand { items, limit } => {
                return mv_expand(&frame, items, limit.as_ref(), &b)
            }
            OpKind::Parse { expr, pattern } => {
                let e = to_string_expr(b.bind(expr)?);
                let texts = frame.compute(&e, bg)?;
                let names: Vec<(&str, DataType)> = pattern
                    .iter()
                    .filter_map(|p| match p {
                        ParsePart::Col(n, t) => Some((n.as_str(), *t)),
                        _ => None,
                    })
                    .collect();
                let mut out: Vec<Vec<Value>> = vec![Vec::with_capacity(frame.len); names.len()];
                for t in &texts {
                    bg.row()?;
                    let found = match t {
                        Value::Str(s) => parse_pattern(s, pattern),
                        _ => None,
                    };
                    for (k, (_, ty)) in names.iter().enumerate() {
                        let v = match &found {
                            Some(vals) => vals[k].clone(),
                            None if *ty == DataType::String => Value::str(""),
                            None => Value::Null,
                        };
                        bg.charge(value_bytes(&v));
                        out[k].push(v);
                    }
                }
                bg.status()?;
                for ((name, ty), vals) in names.into_iter().zip(out) {
                    set_column(&mut frame, name, ty, vals);
                }
                frame.gc();
            }
            OpKind::Render => {}
            OpKind::Invoke {
                name,
                args,
                start,
                end,
            } => return self.invoke(frame, name, args, &b, (*start, *end)),
        }
        Ok(frame)
    }

    /// `invoke FileProfile([column [, limit]])` and `invoke DeviceFromIP([column])`:
    /// the enrichment columns added to each row (`FileProfile` looks up the first
    /// `limit` rows, 100 by default, at most 1,000).
    fn invoke(
        &self,
        mut frame: Frame<'a>,
        name: &str,
        args: &[Ast],
        b: &Binder<'_, 'a>,
        (start, end): (usize, usize),
    ) -> Res<Frame<'a>> {
        let world = &self.data.enrich;
        // The column argument: a name (`SHA1`) or a string (`"SHA1"`).
        let column = |i: usize, default: &str| -> Res<usize> {
            let (n, s, e) = match args.get(i).map(|a| (&a.kind, a.start, a.end)) {
                None => (default.to_string(), start, end),
                Some((AstKind::Name(n), s, e)) => (n.clone(), s, e),
                Some((AstKind::Lit(Value::Str(n), _), s, e)) => (n.to_string(), s, e),
                Some((_, s, e)) => {
                    return Err(self.src.error_at(s, e, "expected a column name"));
                }
            };
            frame.index(&n).ok_or_else(|| {
                self.src.error_at(
                    s,
                    e,
                    format!("'invoke' operator: Failed to resolve column named '{n}'"),
                )
            })
        };
        match name {
            "FileProfile" => {
                let c = column(0, "SHA1")?;
                let limit = match args.get(1) {
                    Some(a) => const_count(b, a, "FileProfile")?.clamp(1, 1_000),
                    None => 100,
                };
                let mut out: Vec<Vec<Value>> =
                    vec![Vec::with_capacity(frame.len); enrich::FILE_PROFILE.len()];
                for i in 0..frame.len {
                    self.bg.row()?;
                    let v = frame.value(c, i);
                    let hash = (i < limit).then(|| v.as_str().unwrap_or("").to_string());
                    for (k, x) in enrich::file_profile(world, hash.as_deref())
                        .into_iter()
                        .enumerate()
                    {
                        self.bg.charge(value_bytes(&x));
                        out[k].push(x);
                    }
                }
                self.bg.status()?;
                for ((n, ty), vals) in enrich::FILE_PROFILE.iter().zip(out) {
                    if frame.index(n).is_none() {
                        set_column(&mut frame, n, *ty, vals);
                    }
                }
                Ok(frame)
            }
            "DeviceFromIP" => {
                let c = column(0, "IP")?;
                let vals: Vec<Value> = (0..frame.len)
                    .map(|i| match frame.value(c, i) {
                        Value::Str(ip) => enrich::device_from_ip(world, &ip),
                        _ => Value::str(""),
                    })
                    .collect();
                set_column(&mut frame, "DeviceId", DataType::String, vals);
                Ok(frame)
            }
            _ => Err(self.src.unsupported(start, end, format!("invoke {name}()"))),
        }
    }

    /// `left | join kind=... (right) on ...`.
    fn join(
        &self,
        left: &Frame<'a>,
        right: &Frame<'a>,
        kind: JoinKind,
        on: &[JoinKey],
    ) -> Res<Frame<'a>> {
        let bg = self.bg;
        let mut lk = Vec::new();
        let mut rk = Vec::new();
        for k in on {
            let find = |f: &Frame<'_>, n: &str, side: &str| {
                f.index(n).ok_or_else(|| {
                    self.src.error_at(
                        k.start,
                        k.end,
                        format!("'join' operator: Failed to resolve column named '{n}' on the {side} side"),
                    )
                })
            };
            let (l, r) = (
                find(left, &k.left, "left")?,
                find(right, &k.right, "right")?,
            );
            if !comparable(left.cols[l].ty, right.cols[r].ty) {
                return Err(cannot_compare(left.cols[l].ty, right.cols[r].ty));
            }
            lk.push(l);
            rk.push(r);
        }
        let keys = |f: &Frame<'_>, cs: &[usize]| -> Res<Vec<Option<Vec<KeyVal>>>> {
            let mut out = Vec::with_capacity(f.len);
            for i in 0..f.len {
                bg.row()?;
                let key: Vec<KeyVal> = cs
                    .iter()
                    .map(|c| KeyVal(join_key(f.value(*c, i))))
                    .collect();
                bg.charge(key.iter().map(|k| value_bytes(&k.0)).sum());
                // A null key matches nothing.
                out.push((!key.iter().any(|k| matches!(k.0, Value::Null))).then_some(key));
            }
            bg.status()?;
            Ok(out)
        };
        let (lkeys, rkeys) = (keys(left, &lk)?, keys(right, &rk)?);
        let per_row = (left.cols.len() + right.cols.len()) * std::mem::size_of::<Value>();
        let pairs = crate::join::pairs(kind, &lkeys, &rkeys, &mut || {
            bg.charge(per_row);
            bg.row()
        })?;
        let (use_left, use_right) = match kind {
            JoinKind::LeftSemi | JoinKind::LeftAnti => (true, false),
            JoinKind::RightSemi | JoinKind::RightAnti => (false, true),
            _ => (true, true),
        };
        let mut out: Vec<(String, DataType, Vec<Value>)> = Vec::new();
        let mut gather = |f: &Frame<'_>, side: usize| -> Res<()> {
            for (c, col) in f.cols.iter().enumerate() {
                let mut name = col.name.clone();
                let mut n = 0;
                while out.iter().any(|(o, _, _)| *o == name) {
                    n += 1;
                    name = format!("{}{n}", col.name);
                }
                let mut vals = Vec::with_capacity(pairs.len());
                for p in &pairs {
                    bg.row()?;
                    let i = if side == 0 { p.0 } else { p.1 };
                    vals.push(i.map_or(Value::Null, |i| f.value(c, i)));
                }
                out.push((name, col.ty, vals));
            }
            Ok(())
        };
        if use_left {
            gather(left, 0)?;
        }
        if use_right {
            gather(right, 1)?;
        }
        bg.status()?;
        Ok(Frame::computed(out, pairs.len()))
    }
}

/// A join key with `Int` and `Real` made comparable (`1 == 1.0`).
fn join_key(v: Value) -> Value {
    match v {
        Value::Real(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Value::Int(f as i64),
        v => v,
    }
}

/// `mv-expand`: each row repeated once per element of the expanded arrays (in
/// parallel, the shorter ones padded with null; a null value gives one row, an empty
/// array none).
fn mv_expand<'a>(
    frame: &Frame<'a>,
    items: &[ExpandItem],
    limit: Option<&Ast>,
    b: &Binder<'_, '_>,
) -> Res<Frame<'a>> {
    let bg = b.bg;
    let limit = match limit {
        Some(a) => const_count(b, a, "mv-expand")?,
        None => usize::MAX,
    };
    let mut auto = 0;
    let mut bound = Vec::new();
    for it in items {
        let e = b.bind(&it.expr)?;
        let name = match &it.name {
            Some(n) => n.clone(),
            None => default_name(&e, b.cols, &mut auto),
        };
        bound.push((name, e, it.to));
    }
    let mut rows: Vec<Option<u32>> = Vec::new();
    let mut expanded: Vec<Vec<Value>> = vec![Vec::new(); bound.len()];
    for i in 0..frame.len {
        bg.row()?;
        let row = FrameRow { f: frame, i };
        let vals: Vec<Vec<Value>> = bound
            .iter()
            .map(|(_, e, to)| {
                let v = eval(e, &row, bg);
                let elems: Vec<Value> = match &v {
                    Value::Dynamic(j) => match &**j {
                        serde_json::Value::Array(a) => {
                            a.iter().map(|x| Value::from_json(x.clone())).collect()
                        }
                        serde_json::Value::Object(m) => m
                            .iter()
                            .map(|(k, x)| dynamic::bag(vec![(k.clone(), x.clone())]))
                            .collect(),
                        _ => vec![v.clone()],
                    },
                    _ => vec![v],
                };
                match to {
                    Some(t) => elems.into_iter().map(|x| cast_only(x, *t)).collect(),
                    None => elems,
                }
            })
            .collect();
        let n = vals.iter().map(Vec::len).max().unwrap_or(0).min(limit);
        for j in 0..n {
            bg.row()?;
            rows.push(Some(i as u32));
            for (k, v) in vals.iter().enumerate() {
                let x = v.get(j).cloned().unwrap_or(Value::Null);
                bg.charge(value_bytes(&x) + frame.cols.len() * std::mem::size_of::<Value>());
                expanded[k].push(x);
            }
        }
    }
    bg.status()?;
    let mut out: Vec<(String, DataType, Vec<Value>)> = Vec::new();
    for (c, col) in frame.cols.iter().enumerate() {
        let vals = rows
            .iter()
            .map(|i| i.map_or(Value::Null, |i| frame.value(c, i as usize)))
            .collect();
        out.push((col.name.clone(), col.ty, vals));
    }
    for ((name, _, to), vals) in bound.into_iter().zip(expanded) {
        let ty = to.unwrap_or(DataType::Dynamic);
        match out.iter().position(|(n, _, _)| *n == name) {
            Some(p) => out[p] = (name, ty, vals),
            None => out.push((name, ty, vals)),
        }
    }
    Ok(Frame::computed(out, rows.len()))
}

/// Matches `text` against a `parse` pattern (simple mode: each column takes the text up
/// to the first occurrence of the literal after it, the last one the rest; `*` skips
/// the same way). The values of the columns, or `None` when it does not match.
fn parse_pattern(text: &str, pattern: &[ParsePart]) -> Option<Vec<Value>> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    // The column (or `*`, as `None`) waiting for the next literal to end it.
    let mut pending: Option<Option<DataType>> = None;
    let finish = |out: &mut Vec<Value>, ty: Option<DataType>, s: &str| -> Option<()> {
        if let Some(ty) = ty {
            let v = convert(Value::str(s), ty);
            if matches!(v, Value::Null) && ty != DataType::String {
                return None;
            }
            out.push(v);
        }
        Some(())
    };
    for part in pattern {
        match part {
            ParsePart::Lit(l) => {
                let rest = &text[pos..];
                match pending.take() {
                    Some(ty) => {
                        let at = rest.find(l.as_str())?;
                        finish(&mut out, ty, &rest[..at])?;
                        pos += at + l.len();
                    }
                    None => {
                        if !rest.starts_with(l.as_str()) {
                            return None;
                        }
                        pos += l.len();
                    }
                }
            }
            ParsePart::Star => {
                if let Some(Some(ty)) = pending.take() {
                    finish(&mut out, Some(ty), "")?;
                }
                pending = Some(None);
            }
            ParsePart::Col(_, ty) => {
                if let Some(Some(prev)) = pending.take() {
                    finish(&mut out, Some(prev), "")?;
                }
                pending = Some(Some(*ty));
            }
        }
    }
    if let Some(Some(ty)) = pending {
        finish(&mut out, Some(ty), &text[pos..])?;
    }
    Some(out)
}

fn sort_perm(
    frame: &Frame<'_>,
    b: &Binder<'_, '_>,
    keys: &[SortKey],
    top: Option<usize>,
) -> Res<Vec<u32>> {
    let mut bound = Vec::new();
    for k in keys {
        let e = b.bind(&k.expr)?;
        let vals = frame.compute(&e, b.bg)?;
        bound.push((vals, k.asc, k.nulls_first.unwrap_or(k.asc)));
    }
    let cmp = |x: &u32, y: &u32| -> Ordering {
        for (vals, asc, nulls_first) in &bound {
            let (a, c) = (&vals[*x as usize], &vals[*y as usize]);
            let o = match (matches!(a, Value::Null), matches!(c, Value::Null)) {
                (true, true) => Ordering::Equal,
                (true, false) => {
                    if *nulls_first {
                        Ordering::Less
                    } else {
                        Ordering::Greater
                    }
                }
                (false, true) => {
                    if *nulls_first {
                        Ordering::Greater
                    } else {
                        Ordering::Less
                    }
                }
                _ => {
                    let o = order_cmp(a, c);
                    if *asc {
                        o
                    } else {
                        o.reverse()
                    }
                }
            };
            if o != Ordering::Equal {
                return o;
            }
        }
        x.cmp(y)
    };
    let mut perm: Vec<u32> = (0..frame.len as u32).collect();
    match top {
        Some(n) if n < perm.len() => {
            if n == 0 {
                perm.clear();
            } else {
                perm.select_nth_unstable_by(n - 1, cmp);
                perm.truncate(n);
                perm.sort_unstable_by(cmp);
            }
        }
        _ => perm.sort_unstable_by(cmp),
    }
    b.bg.check_time();
    b.bg.status()?;
    Ok(perm)
}

enum Acc {
    Count(i64),
    CountIf(i64),
    DCount(HashSet<KeyVal>),
    Min(Value),
    Max(Value),
    SumInt(i64),
    SumReal(f64),
    SumSpan(i64),
    Avg(f64, i64),
    /// `make_set`: the values seen (for uniqueness) and the array in first-seen order.
    Set(HashSet<KeyVal>, Vec<serde_json::Value>),
    List(Vec<serde_json::Value>),
    Bag(serde_json::Map<String, serde_json::Value>),
    /// `arg_max`/`arg_min`: the best key so far and the chosen columns of its row.
    Arg(Value, Vec<Value>),
    Any(Option<Value>),
    /// `percentile(s)`: every non-null value, ranked at the end.
    Values(Vec<Value>),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum AggKind {
    Count,
    CountIf,
    DCount,
    DCountIf,
    Min,
    Max,
    Sum,
    Avg,
    MakeSet(usize),
    MakeList(usize),
    MakeBag(usize),
    /// `arg_max` (`true`) or `arg_min`.
    Arg(bool),
    TakeAny,
    /// `percentile(x, p)` and `percentiles(x, p1, p2, ...)`: nearest rank.
    Percentiles,
}

struct Agg {
    kind: AggKind,
    /// The arguments: the value (and the predicate of the `*if` forms); for `arg_max`
    /// the key and then the columns to return.
    args: Vec<CExpr>,
    /// The output columns: one, or for `arg_max` the key and each returned column.
    outputs: Vec<(String, DataType)>,
    /// The percentages of `percentile(s)`, one per output.
    pcts: Vec<f64>,
}

impl Agg {
    fn init(&self) -> Acc {
        match self.kind {
            AggKind::Count => Acc::Count(0),
            AggKind::CountIf => Acc::CountIf(0),
            AggKind::DCount | AggKind::DCountIf => Acc::DCount(HashSet::new()),
            AggKind::Min => Acc::Min(Value::Null),
            AggKind::Max => Acc::Max(Value::Null),
            AggKind::Sum => match self.outputs[0].1 {
                DataType::Real => Acc::SumReal(0.0),
                DataType::TimeSpan => Acc::SumSpan(0),
                _ => Acc::SumInt(0),
            },
            AggKind::Avg => Acc::Avg(0.0, 0),
            AggKind::MakeSet(_) => Acc::Set(HashSet::new(), Vec::new()),
            AggKind::MakeList(_) => Acc::List(Vec::new()),
            AggKind::MakeBag(_) => Acc::Bag(serde_json::Map::new()),
            AggKind::Arg(_) => Acc::Arg(Value::Null, Vec::new()),
            AggKind::TakeAny => Acc::Any(None),
            AggKind::Percentiles => Acc::Values(Vec::new()),
        }
    }
}

/// The default `max_size` of `make_set`/`make_list`/`make_bag` (the service's, 1,048,576).
const MAKE_MAX: usize = 1 << 20;

fn bind_agg(b: &Binder<'_, '_>, item: &Item, by_names: &[String]) -> Res<Agg> {
    use DataType as T;
    let AstKind::Call(fname, args) = &item.expr.kind else {
        return Err(b.src.error_at(
            item.expr.start,
            item.expr.end,
            "summarize expects an aggregation function such as count()",
        ));
    };
    let wrong_args = |want: &str| {
        b.src.error_at(
            item.expr.start,
            item.expr.end,
            format!("'{fname}()' expects {want} argument(s)"),
        )
    };
    let max_size = |a: Option<&Ast>| -> Res<usize> {
        match a {
            None => Ok(MAKE_MAX),
            Some(a) => const_count(b, a, fname).map(|n| n.min(MAKE_MAX)),
        }
    };
    let (kind, nargs) = match fname.as_str() {
        "count" => (AggKind::Count, 0..=0),
        "countif" => (AggKind::CountIf, 1..=1),
        "dcount" => (AggKind::DCount, 1..=2),
        "dcountif" => (AggKind::DCountIf, 2..=3),
        "min" => (AggKind::Min, 1..=1),
        "max" => (AggKind::Max, 1..=1),
        "sum" => (AggKind::Sum, 1..=1),
        "avg" => (AggKind::Avg, 1..=1),
        "make_set" | "makeset" => (AggKind::MakeSet(max_size(args.get(1))?), 1..=2),
        "make_list" | "makelist" => (AggKind::MakeList(max_size(args.get(1))?), 1..=2),
        "make_bag" => (AggKind::MakeBag(max_size(args.get(1))?), 1..=2),
        "arg_max" => (AggKind::Arg(true), 2..=usize::MAX),
        "arg_min" => (AggKind::Arg(false), 2..=usize::MAX),
        "take_any" | "any" => (AggKind::TakeAny, 1..=1),
        "percentile" => (AggKind::Percentiles, 2..=2),
        "percentiles" => (AggKind::Percentiles, 2..=64),
        other if KNOWN_FUNCTIONS.contains(&other) => {
            return Err(b
                .src
                .unsupported(item.expr.start, item.expr.end, format!("{other}()")))
        }
        other => return Err(KqlError::UnknownFunction(other.to_string())),
    };
    if !nargs.contains(&args.len()) {
        return Err(wrong_args(&nargs.start().to_string()));
    }
    if let AggKind::Arg(max) = kind {
        return bind_arg(b, item, max, args, by_names);
    }
    if kind == AggKind::Percentiles {
        return bind_percentiles(b, item, args);
    }
    // The value and, for `*if`, the predicate; size and accuracy arguments are consts.
    let used = match kind {
        AggKind::Count => 0,
        AggKind::DCountIf => 2,
        _ => 1,
    };
    let bound = args[..used]
        .iter()
        .map(|a| b.bind(a))
        .collect::<Res<Vec<_>>>()?;
    let arg_ty = bound.first().map(|a| a.ty);
    let ty = match (kind, arg_ty) {
        (AggKind::Count | AggKind::CountIf | AggKind::DCount | AggKind::DCountIf, _) => T::Long,
        (AggKind::Min | AggKind::Max | AggKind::TakeAny, Some(t)) => t,
        (AggKind::Sum, Some(t)) if t == T::Real || t == T::TimeSpan => t,
        (AggKind::Sum, Some(t)) if t.is_numeric() => T::Long,
        (AggKind::Avg, Some(t)) if t.is_numeric() => T::Real,
        (AggKind::MakeSet(_) | AggKind::MakeList(_) | AggKind::MakeBag(_), Some(_)) => T::Dynamic,
        (_, t) => {
            return Err(type_err(format!(
                "'{fname}()' cannot be applied to an argument of type {}",
                t.map_or("none", |t| t.kql_name())
            )))
        }
    };
    let pred = match kind {
        AggKind::CountIf => bound.first(),
        AggKind::DCountIf => bound.get(1),
        _ => None,
    };
    if pred.is_some_and(|p| p.ty != T::Bool) {
        return Err(type_err(format!("'{fname}()' expects a boolean predicate")));
    }
    let name = match &item.name {
        Some(n) => n.clone(),
        None => {
            let prefix = match kind {
                AggKind::MakeSet(_) => "set",
                AggKind::MakeList(_) => "list",
                AggKind::MakeBag(_) => "bag",
                AggKind::TakeAny => "any",
                _ => fname.as_str(),
            };
            let suffix = match bound.first().map(|a| &a.kind) {
                Some(CKind::Col(c)) if kind != AggKind::CountIf => b.cols[*c].name.clone(),
                _ => String::new(),
            };
            format!("{prefix}_{suffix}")
        }
    };
    Ok(Agg {
        kind,
        args: bound,
        outputs: vec![(name, ty)],
        pcts: Vec::new(),
    })
}

/// `arg_max(key, cols...)` / `arg_min`: the key's column, then the columns asked for
/// (`*`: every input column but the `by` keys and the key).
fn bind_arg(
    b: &Binder<'_, '_>,
    item: &Item,
    max: bool,
    args: &[Ast],
    by_names: &[String],
) -> Res<Agg> {
    let key = b.bind(&args[0])?;
    let mut auto = 0;
    let key_name = match &item.name {
        Some(n) => n.clone(),
        None => default_name(&key, b.cols, &mut auto),
    };
    let mut outputs = vec![(key_name.clone(), key.ty)];
    let mut bound = vec![key];
    for a in &args[1..] {
        if let AstKind::Star = a.kind {
            for (c, col) in b.cols.iter().enumerate() {
                if col.name != key_name
                    && !by_names.contains(&col.name)
                    && !outputs.iter().any(|(n, _)| *n == col.name)
                {
                    outputs.push((col.name.clone(), col.ty));
                    bound.push(CExpr {
                        kind: CKind::Col(c),
                        ty: col.ty,
                    });
                }
            }
            continue;
        }
        let e = b.bind(a)?;
        let name = default_name(&e, b.cols, &mut auto);
        outputs.push((name, e.ty));
        bound.push(e);
    }
    Ok(Agg {
        kind: AggKind::Arg(max),
        args: bound,
        outputs,
        pcts: Vec::new(),
    })
}

/// `percentile(x, p)` / `percentiles(x, p1, ...)`: one output per percentage, named
/// `percentile_<x>_<p>` (a `.` in `p` written `_`), of `x`'s type.
fn bind_percentiles(b: &Binder<'_, '_>, item: &Item, args: &[Ast]) -> Res<Agg> {
    use DataType as T;
    let x = b.bind(&args[0])?;
    if !(x.ty.is_numeric() || matches!(x.ty, T::DateTime | T::TimeSpan)) {
        return Err(type_err(format!(
            "'percentile()' cannot be applied to an argument of type {}",
            x.ty.kql_name()
        )));
    }
    let base = match &x.kind {
        CKind::Col(c) => b.cols[*c].name.clone(),
        _ => String::new(),
    };
    let mut pcts = Vec::new();
    let mut outputs = Vec::new();
    for a in &args[1..] {
        let p = match b.bind(a)?.kind {
            CKind::Lit(Value::Int(i)) => i as f64,
            CKind::Lit(Value::Real(r)) => r,
            _ => f64::NAN,
        };
        if !(0.0..=100.0).contains(&p) {
            return Err(b.src.error_at(
                a.start,
                a.end,
                "a percentile must be a constant between 0 and 100",
            ));
        }
        let text = if p.fract() == 0.0 {
            format!("{}", p as i64)
        } else {
            format!("{p}").replace('.', "_")
        };
        let name = match (&item.name, args.len()) {
            (Some(n), 2) => n.clone(),
            _ => format!("percentile_{base}_{text}"),
        };
        outputs.push((name, x.ty));
        pcts.push(p);
    }
    Ok(Agg {
        kind: AggKind::Percentiles,
        args: vec![x],
        outputs,
        pcts,
    })
}

/// The nearest-rank percentile `p` of `sorted`: the smallest value with at least `p`%
/// of the values at or below it.
fn nearest_rank(sorted: &[Value], p: f64) -> Value {
    if sorted.is_empty() {
        return Value::Null;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].clone()
}

/// `Some(call)` if `a` is a call of an aggregation function.
fn is_agg_call(a: &Ast) -> bool {
    matches!(&a.kind, AstKind::Call(n, _) if AGGREGATES.contains(&n.as_str()) || matches!(n.as_str(), "any" | "makeset" | "makelist"))
}

/// `a` with each aggregation call in it replaced by the name of a hidden column
/// `__agg<k>`, the calls appended to `calls`.
fn lift_aggs(a: &Ast, calls: &mut Vec<Ast>) -> Ast {
    if is_agg_call(a) {
        calls.push(a.clone());
        return Ast {
            kind: AstKind::Name(format!("__agg{}", calls.len() - 1)),
            ..a.clone()
        };
    }
    let mut lift = |x: &Ast| Box::new(lift_aggs(x, calls));
    let kind = match &a.kind {
        AstKind::Neg(x) => AstKind::Neg(lift(x)),
        AstKind::Binary(op, l, r) => {
            let l = lift(l);
            AstKind::Binary(*op, l, lift(r))
        }
        AstKind::Index(x, k) => {
            let x = lift(x);
            AstKind::Index(x, lift(k))
        }
        AstKind::Between {
            expr,
            lo,
            hi,
            negated,
        } => {
            let expr = lift(expr);
            let lo = lift(lo);
            AstKind::Between {
                expr,
                lo,
                hi: lift(hi),
                negated: *negated,
            }
        }
        AstKind::In {
            expr,
            list,
            op,
            negated,
        } => AstKind::In {
            expr: lift(expr),
            list: list.clone(),
            op: *op,
            negated: *negated,
        },
        AstKind::Call(n, args) => AstKind::Call(
            n.clone(),
            args.iter().map(|x| lift_aggs(x, calls)).collect(),
        ),
        k => k.clone(),
    };
    Ast { kind, ..a.clone() }
}

fn summarize<'a>(
    frame: &Frame<'a>,
    b: &Binder<'_, '_>,
    items: &[Item],
    by: &[Item],
    is_summarize: bool,
) -> Res<Frame<'a>> {
    let mut auto = 0usize;
    let mut keys = Vec::new();
    for item in by {
        let e = b.bind(&item.expr)?;
        let name = match &item.name {
            Some(n) => n.clone(),
            None => default_name(&e, b.cols, &mut auto),
        };
        keys.push((name, e));
    }
    let by_names: Vec<String> = keys.iter().map(|(n, _)| n.clone()).collect();
    // Each item is an aggregation (its own columns) or an expression over hidden ones.
    let mut aggs = Vec::new();
    let mut exprs: Vec<(usize, String, Ast)> = Vec::new();
    for (k, item) in items.iter().enumerate() {
        if is_agg_call(&item.expr) {
            aggs.push(bind_agg(b, item, &by_names)?);
            continue;
        }
        let mut calls = Vec::new();
        let lifted = lift_aggs(&item.expr, &mut calls);
        if calls.is_empty() {
            // A scalar call: its own error (an unknown function) comes first.
            b.bind(&item.expr)?;
            return Err(b.src.error_at(
                item.expr.start,
                item.expr.end,
                "summarize expects an aggregation function such as count()",
            ));
        }
        let base = aggs.len();
        for (j, c) in calls.into_iter().enumerate() {
            let hidden = Item {
                name: Some(format!("__agg{j}")),
                expr: c,
            };
            aggs.push(bind_agg(b, &hidden, &by_names)?);
        }
        let name = item.name.clone().unwrap_or_else(|| {
            auto += 1;
            format!("Column{auto}")
        });
        exprs.push((k, name, lifted));
        // Hidden columns of this item are numbered from 0 within the item.
        let _ = base;
    }

    let mut groups: HashMap<Vec<KeyVal>, usize> = HashMap::new();
    let mut group_keys: Vec<Vec<KeyVal>> = Vec::new();
    let mut accs: Vec<Vec<Acc>> = Vec::new();
    if keys.is_empty() && is_summarize {
        group_keys.push(Vec::new());
        groups.insert(Vec::new(), 0);
        accs.push(aggs.iter().map(Agg::init).collect());
    }
    let mut buf: Vec<KeyVal> = Vec::with_capacity(keys.len());
    let bg = b.bg;
    for i in 0..frame.len {
        bg.row()?;
        let row = FrameRow { f: frame, i };
        buf.clear();
        buf.extend(keys.iter().map(|(_, e)| KeyVal(eval(e, &row, bg))));
        let g = match groups.get(buf.as_slice()) {
            Some(g) => *g,
            None => {
                // The key is held twice (map and list), with one accumulator per aggregate.
                bg.charge(2 * buf.iter().map(|k| value_bytes(&k.0)).sum::<usize>());
                bg.charge(aggs.len() * std::mem::size_of::<Acc>());
                let g = group_keys.len();
                groups.insert(buf.clone(), g);
                group_keys.push(buf.clone());
                accs.push(aggs.iter().map(Agg::init).collect());
                g
            }
        };
        for (acc, agg) in accs[g].iter_mut().zip(&aggs) {
            bg.charge(update(acc, agg, &row, bg));
        }
    }
    bg.status()?;
    let n = group_keys.len();
    let mut out: Vec<(String, DataType, Vec<Value>)> = keys
        .iter()
        .map(|(name, e)| (name.clone(), e.ty, Vec::with_capacity(n)))
        .collect();
    for gk in group_keys {
        for (k, v) in gk.into_iter().enumerate() {
            out[k].2.push(v.0);
        }
    }
    // Aggregate columns, per item: an item's own, or the hidden ones of an expression.
    let mut agg_cols: Vec<Vec<(String, DataType, Vec<Value>)>> = Vec::new();
    for (j, agg) in aggs.iter().enumerate() {
        let mut cols: Vec<(String, DataType, Vec<Value>)> = agg
            .outputs
            .iter()
            .map(|(name, ty)| (name.clone(), *ty, Vec::with_capacity(n)))
            .collect();
        for a in accs.iter_mut() {
            for (c, v) in finish(&mut a[j], agg).into_iter().enumerate() {
                cols[c].2.push(v);
            }
        }
        agg_cols.push(cols);
    }
    let mut agg_iter = agg_cols.into_iter();
    let mut expr_iter = exprs.into_iter().peekable();
    for (k, item) in items.iter().enumerate() {
        match expr_iter.peek() {
            Some((ek, _, _)) if *ek == k => {
                let (_, name, lifted) = expr_iter.next().unwrap_or_else(|| unreachable!());
                // The hidden columns of this expression, then the expression over them.
                let mut calls = Vec::new();
                lift_aggs(&item.expr, &mut calls);
                let mut hidden = out.clone();
                for _ in 0..calls.len() {
                    hidden.extend(agg_iter.next().unwrap_or_default());
                }
                let tmp = Frame::computed(hidden, n);
                let tb = b.ctx.binder(b.scope, &tmp.cols, b.op);
                let e = tb.bind(&lifted)?;
                let vals = tmp.compute(&e, bg)?;
                out.push((name, e.ty, vals));
            }
            _ => out.extend(agg_iter.next().unwrap_or_default()),
        }
    }
    let names: Vec<FCol> = out
        .iter()
        .map(|(n, t, _)| FCol {
            name: n.clone(),
            ty: *t,
            src: ColSrc::Extra(0),
        })
        .collect();
    check_unique(&names, b.op)?;
    Ok(Frame::computed(out, n))
}

/// Folds the row into `acc`; returns the bytes the accumulator now holds in addition.
fn update<R: Row>(acc: &mut Acc, agg: &Agg, row: &R, bg: &Budget) -> usize {
    let v = || agg.args.first().map_or(Value::Null, |e| eval(e, row, bg));
    match acc {
        Acc::Count(c) => *c += 1,
        Acc::CountIf(c) => *c += i64::from(matches!(v(), Value::Bool(true))),
        Acc::DCount(set) => {
            if agg.kind == AggKind::DCountIf
                && !matches!(eval(&agg.args[1], row, bg), Value::Bool(true))
            {
                return 0;
            }
            let v = v();
            if !matches!(v, Value::Null) {
                let bytes = value_bytes(&v);
                if set.insert(KeyVal(v)) {
                    return bytes;
                }
            }
        }
        Acc::Min(m) | Acc::Max(m) => {
            let want = if matches!(agg.kind, AggKind::Min) {
                Ordering::Less
            } else {
                Ordering::Greater
            };
            let v = v();
            if !matches!(v, Value::Null) && (matches!(m, Value::Null) || order_cmp(&v, m) == want) {
                *m = v;
            }
        }
        Acc::SumInt(s) => {
            if let Value::Int(i) = v() {
                *s = s.wrapping_add(i);
            }
        }
        Acc::SumReal(s) => {
            let v = v();
            if let Value::Int(_) | Value::Real(_) = v {
                *s += as_f64(&v);
            }
        }
        Acc::SumSpan(s) => {
            if let Value::TimeSpan(t) = v() {
                *s = s.wrapping_add(t);
            }
        }
        Acc::Avg(s, n) => {
            let v = v();
            if let Value::Int(_) | Value::Real(_) = v {
                *s += as_f64(&v);
                *n += 1;
            }
        }
        Acc::Set(seen, list) => {
            let AggKind::MakeSet(max) = agg.kind else {
                return 0;
            };
            let v = v();
            // A set of an array is the set of its elements.
            let items: Vec<Value> = match dynamic::elements(&v) {
                Some(e) => e.iter().map(|j| Value::from_json(j.clone())).collect(),
                None => vec![v],
            };
            let mut bytes = 0;
            for v in items {
                if list.len() >= max || matches!(v, Value::Null) {
                    break;
                }
                let j = dynamic::to_json(&v);
                let b = 2 * value_bytes(&v);
                if seen.insert(KeyVal(v)) {
                    list.push(j);
                    bytes += b;
                }
            }
            return bytes;
        }
        Acc::List(list) => {
            let AggKind::MakeList(max) = agg.kind else {
                return 0;
            };
            let v = v();
            let items: Vec<serde_json::Value> = match dynamic::elements(&v) {
                Some(e) => e.to_vec(),
                None if matches!(v, Value::Null) => Vec::new(),
                None => vec![dynamic::to_json(&v)],
            };
            let mut bytes = 0;
            for j in items {
                if list.len() >= max {
                    break;
                }
                bytes += dynamic::json_bytes(&j);
                list.push(j);
            }
            return bytes;
        }
        Acc::Bag(map) => {
            let AggKind::MakeBag(max) = agg.kind else {
                return 0;
            };
            if let Value::Dynamic(j) = v() {
                if let serde_json::Value::Object(m) = &*j {
                    let mut bytes = 0;
                    for (k, x) in m {
                        if map.len() >= max {
                            break;
                        }
                        if !map.contains_key(k) {
                            bytes += k.len() + dynamic::json_bytes(x);
                            map.insert(k.clone(), x.clone());
                        }
                    }
                    return bytes;
                }
            }
        }
        Acc::Arg(best, cols) => {
            let AggKind::Arg(max) = agg.kind else {
                return 0;
            };
            let k = v();
            let better = !matches!(k, Value::Null)
                && (matches!(best, Value::Null)
                    || order_cmp(&k, best)
                        == if max {
                            Ordering::Greater
                        } else {
                            Ordering::Less
                        });
            if better || (cols.is_empty() && !matches!(k, Value::Null)) {
                *best = k;
                *cols = agg.args[1..].iter().map(|e| eval(e, row, bg)).collect();
                return cols.iter().map(value_bytes).sum();
            }
            if cols.is_empty() && matches!(best, Value::Null) {
                // Every key so far null: the row is still the answer until a key is seen.
                *cols = agg.args[1..].iter().map(|e| eval(e, row, bg)).collect();
                return cols.iter().map(value_bytes).sum();
            }
        }
        Acc::Values(vals) => {
            let v = v();
            if !matches!(v, Value::Null) {
                vals.push(v);
                return 16;
            }
        }
        Acc::Any(slot) => {
            if slot.is_none() {
                let v = v();
                if !matches!(v, Value::Null) {
                    let b = value_bytes(&v);
                    *slot = Some(v);
                    return b;
                }
            }
        }
    }
    0
}

/// The output values of an accumulator (one per output column of its aggregation).
fn finish(acc: &mut Acc, agg: &Agg) -> Vec<Value> {
    let one = match acc {
        Acc::Count(c) | Acc::CountIf(c) => Value::Int(*c),
        Acc::DCount(s) => Value::Int(s.len() as i64),
        Acc::Min(v) | Acc::Max(v) => std::mem::replace(v, Value::Null),
        Acc::SumInt(s) => Value::Int(*s),
        Acc::SumReal(s) => Value::Real(*s),
        Acc::SumSpan(s) => Value::TimeSpan(*s),
        Acc::Avg(s, n) => {
            if *n == 0 {
                Value::Null
            } else {
                Value::Real(*s / *n as f64)
            }
        }
        Acc::Set(_, list) | Acc::List(list) => {
            dynamic::shared(serde_json::Value::Array(std::mem::take(list)))
        }
        Acc::Bag(map) => dynamic::shared(serde_json::Value::Object(std::mem::take(map))),
        Acc::Arg(best, cols) => {
            let mut out = vec![std::mem::replace(best, Value::Null)];
            out.extend(std::mem::take(cols));
            out.resize(agg.outputs.len(), Value::Null);
            return out;
        }
        Acc::Any(slot) => slot.take().unwrap_or(Value::Null),
        Acc::Values(vals) => {
            vals.sort_by(order_cmp);
            return agg.pcts.iter().map(|p| nearest_rank(vals, *p)).collect();
        }
    };
    vec![one]
}

/// Default hunting window: 30 days in milliseconds.
pub(crate) const THIRTY_DAYS_MS: i64 = 30 * TICKS_PER_DAY / TICKS_PER_MS;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_ops() {
        assert!(str_op(StrOp::Has, false, "cmd.exe /c whoami", "WHOAMI"));
        assert!(!str_op(StrOp::Has, false, "cmd.exe /c whoami", "who"));
        assert!(str_op(StrOp::Has, false, "C:\\Windows\\cmd.exe", "cmd.exe"));
        assert!(!str_op(StrOp::Has, false, "xcmd.exe", "cmd.exe"));
        assert!(str_op(StrOp::HasPrefix, false, "powershell -enc", "power"));
        assert!(str_op(StrOp::Contains, false, "PowerShell", "rsh"));
        assert!(!str_op(StrOp::Contains, true, "PowerShell", "rsh"));
        assert!(str_op(StrOp::StartsWith, false, "ÉCOLE", "éc"));
        assert!(str_op(StrOp::EndsWith, false, "file.EXE", ".exe"));
        assert!(!str_op(StrOp::EndsWith, false, "e", ".exe"));
        assert!(eq_ci("ÄB", "äb"));
    }
}
