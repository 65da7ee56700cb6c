//! Scalar functions and operators: function calls, conversions, arithmetic,
//! comparison and KQL's string operators.

#[allow(unused_imports)]
use super::*;

pub(super) fn call<R: Row>(f: Func, args: &[CExpr], r: &R, bg: &Budget, ty: DataType) -> Value {
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
pub(super) fn kql_rewrite(text: &str) -> String {
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
pub(super) fn glob(pattern: &str, name: &str) -> bool {
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

pub(super) fn bin(v: Value, size: Value) -> Value {
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

pub(super) fn as_f64(v: &Value) -> f64 {
    match v {
        Value::Int(i) => *i as f64,
        Value::Real(f) => *f,
        _ => f64::NAN,
    }
}

pub(super) fn arith(op: BinOp, a: Value, b: Value) -> Value {
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

pub(super) fn ts_f(f: f64) -> Value {
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

pub(super) fn cmp_values(op: BinOp, a: &Value, b: &Value) -> Value {
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

pub(super) fn cmp_holds(op: BinOp, o: Ordering) -> bool {
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

pub(super) fn is_term_char(c: char) -> bool {
    c.is_alphanumeric()
}

pub(super) fn str_op(op: StrOp, cs: bool, h: &str, n: &str) -> bool {
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

pub(super) fn str_op_exact(op: StrOp, h: &str, n: &str) -> bool {
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
