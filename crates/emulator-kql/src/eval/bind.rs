//! Binding: name resolution, type checking and constant folding of scalar
//! expressions into [`CExpr`]s.

#[allow(unused_imports)]
use super::*;

// ---------------------------------------------------------------------------------------
// Binding

pub(super) struct Binder<'s, 'a> {
    pub(super) ctx: &'s Ctx<'a>,
    pub(super) src: &'s Src<'s>,
    pub(super) scope: &'s Scope,
    pub(super) cols: &'s [FCol],
    /// The parameters of the user function whose body is being bound, each bound to
    /// the caller's argument.
    pub(super) params: &'s [(String, CExpr)],
    pub(super) now: i64,
    pub(super) op: &'s str,
    pub(super) bg: &'s Budget,
}

pub(super) fn type_err(what: String) -> KqlError {
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
pub(super) const KNOWN_FUNCTIONS: &[&str] = &[
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
    pub(super) fn bind(&self, a: &Ast) -> Res<CExpr> {
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
    pub(super) fn with<'t>(
        &'t self,
        scope: &'t Scope,
        params: &'t [(String, CExpr)],
    ) -> Binder<'t, 'a> {
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
    pub(super) fn table_values(&self, a: &Ast) -> Res<Option<(Vec<Value>, DataType)>> {
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
    pub(super) fn list_values(
        &self,
        list: &[Ast],
        want: DataType,
        strings: bool,
    ) -> Res<Vec<Value>> {
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

    pub(super) fn bind_inner(&self, a: &Ast) -> Res<CExpr> {
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
    pub(super) fn regex(&self, a: &Ast) -> Res<Arc<regex::Regex>> {
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

    pub(super) fn binary(&self, op: BinOp, l: CExpr, r: CExpr) -> Res<CExpr> {
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

    pub(super) fn bind_arith(&self, op: BinOp, l: CExpr, r: CExpr) -> Res<CExpr> {
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

    pub(super) fn call(&self, name: &str, args: &[Ast], a: &Ast) -> Res<CExpr> {
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
    pub(super) fn search_has(&self, args: &[Ast]) -> Res<CExpr> {
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
    pub(super) fn bind_extract(&self, name: &str, args: &[Ast]) -> Res<CExpr> {
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
    pub(super) fn toscalar(&self, a: &Ast) -> Res<CExpr> {
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
    pub(super) fn user_call(
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
pub(super) fn unify(name: &str, types: &[DataType]) -> Res<DataType> {
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
pub(super) const REGEX_SIZE_LIMIT: usize = 1 << 20;

pub(super) fn to_string_expr(e: CExpr) -> CExpr {
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

pub(super) fn comparable(a: DataType, b: DataType) -> bool {
    a == b || (a.is_numeric() && b.is_numeric()) || a == DataType::Dynamic || b == DataType::Dynamic
}

pub(super) fn cannot_compare(a: DataType, b: DataType) -> KqlError {
    type_err(format!(
        "Cannot compare values of types {} and {}. Try adding explicit casts",
        a.kql_name(),
        b.kql_name()
    ))
}
