//! `summarize`: aggregation functions, their accumulators, and expressions over
//! aggregates.

#[allow(unused_imports)]
use super::*;

pub(super) enum Acc {
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
pub(super) enum AggKind {
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

pub(super) struct Agg {
    pub(super) kind: AggKind,
    /// The arguments: the value (and the predicate of the `*if` forms); for `arg_max`
    /// the key and then the columns to return.
    pub(super) args: Vec<CExpr>,
    /// The output columns: one, or for `arg_max` the key and each returned column.
    pub(super) outputs: Vec<(String, DataType)>,
    /// The percentages of `percentile(s)`, one per output.
    pub(super) pcts: Vec<f64>,
}

impl Agg {
    pub(super) fn init(&self) -> Acc {
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
pub(super) const MAKE_MAX: usize = 1 << 20;

pub(super) fn bind_agg(b: &Binder<'_, '_>, item: &Item, by_names: &[String]) -> Res<Agg> {
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
pub(super) fn bind_arg(
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
pub(super) fn bind_percentiles(b: &Binder<'_, '_>, item: &Item, args: &[Ast]) -> Res<Agg> {
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
pub(super) fn nearest_rank(sorted: &[Value], p: f64) -> Value {
    if sorted.is_empty() {
        return Value::Null;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].clone()
}

/// `Some(call)` if `a` is a call of an aggregation function.
pub(super) fn is_agg_call(a: &Ast) -> bool {
    matches!(&a.kind, AstKind::Call(n, _) if AGGREGATES.contains(&n.as_str()) || matches!(n.as_str(), "any" | "makeset" | "makelist"))
}

/// `a` with each aggregation call in it replaced by the name of a hidden column
/// `__agg<k>`, the calls appended to `calls`.
pub(super) fn lift_aggs(a: &Ast, calls: &mut Vec<Ast>) -> Ast {
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

pub(super) fn summarize<'a>(
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
pub(super) fn update<R: Row>(acc: &mut Acc, agg: &Agg, row: &R, bg: &Budget) -> usize {
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
pub(super) fn finish(acc: &mut Acc, agg: &Agg) -> Vec<Value> {
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
