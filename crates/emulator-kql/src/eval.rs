//! Binding (name resolution, type checking, constant folding) and evaluation.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};

use crate::data::{ColumnData, Dataset, Table};
use crate::error::KqlError;
use crate::limits::{value_bytes, Budget, Limit};
use crate::output::{Column, QueryOutput};
use crate::parse::{Ast, AstKind, BinOp, Item, OpKind, Parser, SortKey, Src, StrOp};
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
    Between {
        e: Box<CExpr>,
        lo: Box<CExpr>,
        hi: Box<CExpr>,
        negated: bool,
    },
    Func(Func, Vec<CExpr>),
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
            CKind::In { e, .. } => vec![e],
            CKind::Between { e, lo, hi, .. } => vec![e, lo, hi],
            CKind::Func(_, args) => args.iter().collect(),
        }
    }
    fn is_const(&self) -> bool {
        matches!(self.kind, CKind::Lit(_))
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
        CKind::Func(f, args) => call(*f, args, r, bg),
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

fn call<R: Row>(f: Func, args: &[CExpr], r: &R, bg: &Budget) -> Value {
    let a0 = || eval(&args[0], r, bg);
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
            v => Value::str(&v.to_text()),
        },
        Func::Bin => bin(a0(), eval(&args[1], r, bg)),
        Func::StartOfDay => match a0() {
            Value::DateTime(t) => t
                .checked_sub(t.rem_euclid(TICKS_PER_DAY))
                .map_or(Value::Null, Value::DateTime),
            _ => Value::Null,
        },
        Func::Iff => match truth(&a0()) {
            1 => eval(&args[1], r, bg),
            _ => eval(&args[2], r, bg),
        },
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
    }
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
impl Row for FrameRow<'_, '_> {
    #[inline]
    fn get(&self, c: usize) -> Value {
        self.f.value(c, self.i)
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

struct Binder<'s> {
    src: &'s Src<'s>,
    cols: &'s [FCol],
    lets: &'s [(String, Value, DataType)],
    now: i64,
    op: &'s str,
    bg: &'s Budget,
}

fn type_err(what: String) -> KqlError {
    KqlError::Semantic(what)
}

const AGGREGATES: [&str; 7] = ["count", "countif", "dcount", "min", "max", "sum", "avg"];

impl Binder<'_> {
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
                } else if let Some((_, v, t)) = self.lets.iter().rev().find(|(l, _, _)| l == n) {
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
            AstKind::Binary(op, l, r) => {
                let (l, r) = (self.bind(l)?, self.bind(r)?);
                self.binary(*op, l, r)?
            }
            AstKind::In {
                expr,
                list,
                negated,
                ci,
            } => {
                let e = self.bind(expr)?;
                let mut set = Vec::with_capacity(list.len());
                for item in list {
                    let v = self.bind(item)?;
                    let CKind::Lit(val) = v.kind else {
                        return Err(self.src.error_at(
                            item.start,
                            item.end,
                            "the 'in' operator needs constant values",
                        ));
                    };
                    if !comparable(e.ty, v.ty) || (*ci && e.ty != T::String) {
                        return Err(cannot_compare(e.ty, v.ty));
                    }
                    set.push(val);
                }
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
            AstKind::Call(name, args) => self.call(name, args, a)?,
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
                if l.ty != T::String || r.ty != T::String {
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
        if AGGREGATES.contains(&name) {
            return Err(type_err(format!(
                "the aggregation function '{name}()' can only be used in 'summarize'"
            )));
        }
        let arity = match name {
            "now" => 0..=0,
            "ago" | "not" | "tolower" | "toupper" | "strlen" | "isempty" | "isnotempty"
            | "isnull" | "isnotnull" | "tostring" | "startofday" => 1..=1,
            "bin" | "floor" => 2..=2,
            "iff" | "iif" => 3..=3,
            "strcat" => 1..=64,
            _ => return Err(KqlError::UnknownFunction(name.to_string())),
        };
        if !arity.contains(&args.len()) {
            return Err(self.src.error_at(
                a.start,
                a.end,
                format!("function '{name}' expects {} argument(s)", arity.start()),
            ));
        }
        let args = args.iter().map(|x| self.bind(x)).collect::<Res<Vec<_>>>()?;
        let want = |i: usize, t: T| -> Res<()> {
            if args[i].ty == t {
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
        Ok(match name {
            "now" => CExpr::lit(Value::DateTime(self.now), T::DateTime),
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
            "tolower" | "toupper" => {
                let arg = args.into_iter().map(to_string_expr).collect();
                let func = if name == "tolower" {
                    Func::ToLower
                } else {
                    Func::ToUpper
                };
                f(func, T::String, arg)
            }
            "strlen" => f(
                Func::StrLen,
                T::Long,
                args.into_iter().map(to_string_expr).collect(),
            ),
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
                let (a, b) = (args[1].ty, args[2].ty);
                let ty = if a == b {
                    a
                } else if a.is_numeric() && b.is_numeric() {
                    T::Real
                } else {
                    return Err(type_err(format!(
                        "function '{name}': the two branches have different types ({} and {})",
                        a.kql_name(),
                        b.kql_name()
                    )));
                };
                f(Func::Iff, ty, args)
            }
            _ => f(Func::StrCat, T::String, args),
        })
    }
}

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
    a == b || (a.is_numeric() && b.is_numeric())
}

fn cannot_compare(a: DataType, b: DataType) -> KqlError {
    type_err(format!(
        "Cannot compare values of types {} and {}. Try adding explicit casts",
        a.kql_name(),
        b.kql_name()
    ))
}

// ---------------------------------------------------------------------------------------
// Running a query

pub(crate) fn run(query: &str, data: &Dataset, opts: &RunOptions) -> Res<QueryOutput> {
    let src = Src { text: query };
    let q = Parser::new(&src, opts.limits.max_nesting)?.parse_query()?;
    let now = opts.now_unix_ms.saturating_mul(TICKS_PER_MS);
    let bg = Budget::new(opts.limits);
    if q.ops.len() > opts.limits.max_operators {
        return Err(KqlError::LimitExceeded(Limit::Operators));
    }

    let mut lets: Vec<(String, Value, DataType)> = Vec::new();
    for (name, ast) in &q.lets {
        let b = Binder {
            src: &src,
            cols: &[],
            lets: &lets,
            now,
            op: "let",
            bg: &bg,
        };
        let e = b.bind(ast)?;
        let v = match e.kind {
            CKind::Lit(v) => v,
            _ => eval(&e, &NoRow, &bg),
        };
        bg.status()?;
        lets.push((name.clone(), v, e.ty));
    }

    let (tname, ts, te) = &q.table;
    let Some(table) = data.table(tname) else {
        if lets.iter().any(|(l, _, _)| l == tname) {
            return Err(src.error_at(*ts, *te, "tabular let statements are not supported"));
        }
        return Err(KqlError::UnknownTable(tname.clone()));
    };
    let stamps = table.timestamps();
    let lo = match opts.lookback_ms {
        Some(ms) => {
            let cut = now.saturating_sub(ms.saturating_mul(TICKS_PER_MS));
            stamps.partition_point(|t| *t < cut)
        }
        None => 0,
    };
    let hi = table.row_count();
    let mut frame = Frame {
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
    };

    for op in &q.ops {
        frame = apply(frame, op, &src, &lets, now, &bg)?;
        if frame.cols.len() > opts.limits.max_columns {
            return Err(KqlError::LimitExceeded(Limit::Columns));
        }
        bg.check_time();
        bg.status()?;
    }

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
        rows_scanned: (hi - lo) as u64,
        operators: q.ops.len() as u32,
        truncated: frame.len > opts.row_cap,
    })
}

fn const_count(b: &Binder<'_>, a: &Ast, what: &str) -> Res<usize> {
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

fn apply<'a>(
    mut frame: Frame<'a>,
    op: &crate::parse::Operator,
    src: &Src<'_>,
    lets: &[(String, Value, DataType)],
    now: i64,
    bg: &Budget,
) -> Res<Frame<'a>> {
    let cols = frame.cols.clone();
    let b = Binder {
        src,
        cols: &cols,
        lets,
        now,
        op: &op.name,
        bg,
    };
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
        OpKind::Project(items) | OpKind::Extend(items) => {
            let extend = matches!(op.kind, OpKind::Extend(_));
            let mut new_cols = if extend { cols.clone() } else { Vec::new() };
            let mut auto = 0usize;
            for Item { name, expr } in items {
                let e = b.bind(expr)?;
                let name = match name {
                    Some(n) => n.clone(),
                    None => default_name(&e, &cols, &mut auto),
                };
                let src = match e.kind {
                    CKind::Col(c) => cols[c].src,
                    _ => {
                        frame.extra.push(frame.compute(&e, bg)?);
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
                if new_cols.len() > bg.limits.max_columns {
                    return Err(KqlError::LimitExceeded(Limit::Columns));
                }
            }
            check_unique(&new_cols, &op.name)?;
            frame.cols = new_cols;
            frame.gc();
        }
        OpKind::ProjectAway(names) => {
            for (n, s, e) in names {
                if frame.index(n).is_none() {
                    return Err(src.error_at(
                        *s,
                        *e,
                        format!("'project-away' operator: Failed to resolve column named '{n}'"),
                    ));
                }
            }
            frame
                .cols
                .retain(|c| !names.iter().any(|(n, _, _)| *n == c.name));
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
    }
    Ok(frame)
}

fn sort_perm(
    frame: &Frame<'_>,
    b: &Binder<'_>,
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
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum AggKind {
    Count,
    CountIf,
    DCount,
    Min,
    Max,
    Sum,
    Avg,
}

struct Agg {
    kind: AggKind,
    arg: Option<CExpr>,
    name: String,
    ty: DataType,
}

impl Agg {
    fn init(&self) -> Acc {
        match self.kind {
            AggKind::Count => Acc::Count(0),
            AggKind::CountIf => Acc::CountIf(0),
            AggKind::DCount => Acc::DCount(HashSet::new()),
            AggKind::Min => Acc::Min(Value::Null),
            AggKind::Max => Acc::Max(Value::Null),
            AggKind::Sum => match self.ty {
                DataType::Real => Acc::SumReal(0.0),
                DataType::TimeSpan => Acc::SumSpan(0),
                _ => Acc::SumInt(0),
            },
            AggKind::Avg => Acc::Avg(0.0, 0),
        }
    }
}

fn bind_agg(b: &Binder<'_>, item: &Item) -> Res<Agg> {
    use DataType as T;
    let AstKind::Call(fname, args) = &item.expr.kind else {
        return Err(b.src.error_at(
            item.expr.start,
            item.expr.end,
            "summarize expects an aggregation function such as count()",
        ));
    };
    let kind = match fname.as_str() {
        "count" => AggKind::Count,
        "countif" => AggKind::CountIf,
        "dcount" => AggKind::DCount,
        "min" => AggKind::Min,
        "max" => AggKind::Max,
        "sum" => AggKind::Sum,
        "avg" => AggKind::Avg,
        other => {
            return Err(
                if other.starts_with("make_") || other.starts_with("arg_") || other.ends_with("if")
                {
                    b.src.error_at(
                        item.expr.start,
                        item.expr.end,
                        format!("the aggregation '{other}()' is not supported by the emulator"),
                    )
                } else {
                    KqlError::UnknownFunction(other.to_string())
                },
            )
        }
    };
    let want = usize::from(kind != AggKind::Count);
    if args.len() != want {
        return Err(b.src.error_at(
            item.expr.start,
            item.expr.end,
            format!("'{fname}()' expects {want} argument(s)"),
        ));
    }
    let arg = args.first().map(|a| b.bind(a)).transpose()?;
    let arg_ty = arg.as_ref().map(|a| a.ty);
    let ty = match (kind, arg_ty) {
        (AggKind::Count | AggKind::CountIf | AggKind::DCount, _) => T::Long,
        (AggKind::Min | AggKind::Max, Some(t)) => t,
        (AggKind::Sum, Some(t)) if t == T::Real || t == T::TimeSpan => t,
        (AggKind::Sum, Some(t)) if t.is_numeric() => T::Long,
        (AggKind::Avg, Some(t)) if t.is_numeric() => T::Real,
        (_, t) => {
            return Err(type_err(format!(
                "'{fname}()' cannot be applied to an argument of type {}",
                t.map_or("none", |t| t.kql_name())
            )))
        }
    };
    if kind == AggKind::CountIf && arg_ty != Some(T::Bool) {
        return Err(type_err(
            "'countif()' expects a boolean predicate".to_string(),
        ));
    }
    let name = match &item.name {
        Some(n) => n.clone(),
        None => {
            let suffix = match arg.as_ref().map(|a| &a.kind) {
                Some(CKind::Col(c)) if kind != AggKind::CountIf => b.cols[*c].name.clone(),
                _ => String::new(),
            };
            format!("{fname}_{suffix}")
        }
    };
    Ok(Agg {
        kind,
        arg,
        name,
        ty,
    })
}

fn summarize<'a>(
    frame: &Frame<'a>,
    b: &Binder<'_>,
    aggs: &[Item],
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
    let aggs = aggs
        .iter()
        .map(|a| bind_agg(b, a))
        .collect::<Res<Vec<_>>>()?;

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
            let v = agg.arg.as_ref().map_or(Value::Null, |e| eval(e, &row, bg));
            bg.charge(update(acc, v));
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
    for (j, agg) in aggs.iter().enumerate() {
        let vals = accs.iter_mut().map(|a| finish(&mut a[j])).collect();
        out.push((agg.name.clone(), agg.ty, vals));
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
    let f = Frame::computed(out, n);
    Ok(Frame {
        table: None,
        sel: Vec::new(),
        len: f.len,
        cols: f.cols,
        extra: f.extra,
    })
}

/// Folds `v` into `acc`; returns the bytes the accumulator now holds in addition.
fn update(acc: &mut Acc, v: Value) -> usize {
    match acc {
        Acc::Count(c) => *c += 1,
        Acc::CountIf(c) => *c += i64::from(matches!(v, Value::Bool(true))),
        Acc::DCount(set) => {
            if !matches!(v, Value::Null) {
                let bytes = value_bytes(&v);
                if set.insert(KeyVal(v)) {
                    return bytes;
                }
            }
        }
        Acc::Min(m) => {
            if !matches!(v, Value::Null)
                && (matches!(m, Value::Null) || order_cmp(&v, m) == Ordering::Less)
            {
                *m = v;
            }
        }
        Acc::Max(m) => {
            if !matches!(v, Value::Null)
                && (matches!(m, Value::Null) || order_cmp(&v, m) == Ordering::Greater)
            {
                *m = v;
            }
        }
        Acc::SumInt(s) => {
            if let Value::Int(i) = v {
                *s = s.wrapping_add(i);
            }
        }
        Acc::SumReal(s) => {
            if let Value::Int(_) | Value::Real(_) = v {
                *s += as_f64(&v);
            }
        }
        Acc::SumSpan(s) => {
            if let Value::TimeSpan(t) = v {
                *s = s.wrapping_add(t);
            }
        }
        Acc::Avg(s, n) => {
            if let Value::Int(_) | Value::Real(_) = v {
                *s += as_f64(&v);
                *n += 1;
            }
        }
    }
    0
}

fn finish(acc: &mut Acc) -> Value {
    match acc {
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
    }
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
