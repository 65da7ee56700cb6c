//! Sources of a tabular expression: tables, tabular `let`s, user functions, `union`,
//! `datatable`, `print`, `search`, `find` and the enrichment functions.

#[allow(unused_imports)]
use super::*;

impl<'a> Ctx<'a> {
    pub(super) fn binder<'s>(
        &'s self,
        scope: &'s Scope,
        cols: &'s [FCol],
        op: &'s str,
    ) -> Binder<'s, 'a> {
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
    pub(super) fn enter_call(&self) -> Res<CallGuard<'_>> {
        let d = self.calls.get() + 1;
        if d > self.opts.limits.max_nesting {
            return Err(KqlError::TooDeep(self.opts.limits.max_nesting));
        }
        self.calls.set(d);
        Ok(CallGuard(&self.calls))
    }

    /// Adds `lets` to `scope`, in order.
    pub(super) fn bind_lets(&self, lets: &[Let], mut scope: Scope) -> Res<Scope> {
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
    pub(super) fn as_tabular(&self, a: &Ast, scope: &Scope) -> Option<TabExpr> {
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

    pub(super) fn returns_table(&self, def: &FuncDef, def_scope: &Scope) -> bool {
        match &def.body {
            LetRhs::Tabular(_) => true,
            LetRhs::Expr(e) => def.lets.is_empty() && self.as_tabular(e, def_scope).is_some(),
            LetRhs::Func(_) => false,
        }
    }

    pub(super) fn tabular(&self, t: &TabExpr, scope: &Scope) -> Res<Frame<'a>> {
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

    pub(super) fn source(&self, s: &Source, scope: &Scope) -> Res<Frame<'a>> {
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
            Source::Range {
                name,
                from,
                to,
                step,
            } => self.range(name, (from, to, step), scope),
        }
    }

    /// The rows of `table` inside the lookback window.
    pub(super) fn table_frame(&self, table: &'a Table) -> Frame<'a> {
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
    pub(super) fn call_tabular(
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
    pub(super) fn union(
        &self,
        u: &Union,
        first: Option<Frame<'a>>,
        scope: &Scope,
    ) -> Res<Frame<'a>> {
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

impl<'a> Ctx<'a> {
    /// `range Name from a to b step s`: `a, a+s, ...` while not past `b` (counting down
    /// when `s` is negative), of `a`'s type (`real` if any of the three is).
    pub(super) fn range(
        &self,
        name: &str,
        (from, to, step): (&Ast, &Ast, &Ast),
        scope: &Scope,
    ) -> Res<Frame<'a>> {
        let bg = self.bg;
        let b = self.binder(scope, &[], "range");
        let mut vals = Vec::with_capacity(3);
        for a in [from, to, step] {
            let e = b.bind(a)?;
            vals.push((eval(&e, &NoRow, bg), a));
        }
        let bad = |a: &Ast, what: &str| {
            type_err(format!(
                "'range' operator: {what} must be a constant number, datetime or timespan (at '{}')",
                self.src.text.get(a.start..a.end).unwrap_or_default()
            ))
        };
        // Integers (`long`, datetime and timespan ticks) step exactly; reals as reals.
        let (ty, first, last, by) = match (&vals[0].0, &vals[1].0, &vals[2].0) {
            (Value::Int(a), Value::Int(z), Value::Int(s)) => (DataType::Long, *a, *z, *s),
            (Value::DateTime(a), Value::DateTime(z), Value::TimeSpan(s)) => {
                (DataType::DateTime, *a, *z, *s)
            }
            (Value::TimeSpan(a), Value::TimeSpan(z), Value::TimeSpan(s)) => {
                (DataType::TimeSpan, *a, *z, *s)
            }
            (
                a @ (Value::Int(_) | Value::Real(_)),
                z @ (Value::Int(_) | Value::Real(_)),
                s @ (Value::Int(_) | Value::Real(_)),
            ) => {
                return self.range_real(name, (as_f64(a), as_f64(z), as_f64(s)), step);
            }
            (a, z, _) => {
                let which = if !matches!(
                    a,
                    Value::Int(_) | Value::Real(_) | Value::DateTime(_) | Value::TimeSpan(_)
                ) {
                    (from, "from")
                } else if !matches!(
                    z,
                    Value::Int(_) | Value::Real(_) | Value::DateTime(_) | Value::TimeSpan(_)
                ) {
                    (to, "to")
                } else {
                    (step, "step")
                };
                return Err(bad(which.0, which.1));
            }
        };
        if by == 0 {
            return Err(self.src.error_at(
                step.start,
                step.end,
                "'range' operator: step must not be 0",
            ));
        }
        let span = i128::from(last) - i128::from(first);
        let n = if (span >= 0) == (by > 0) || span == 0 {
            span / i128::from(by) + 1
        } else {
            0
        };
        let n = self.range_rows(n)?;
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            bg.row()?;
            let x = (i128::from(first) + i128::from(by) * i as i128) as i64;
            out.push(match ty {
                DataType::DateTime => Value::DateTime(x),
                DataType::TimeSpan => Value::TimeSpan(x),
                _ => Value::Int(x),
            });
        }
        Ok(Frame::computed(vec![(name.to_string(), ty, out)], n))
    }

    fn range_real(
        &self,
        name: &str,
        (first, last, by): (f64, f64, f64),
        step: &Ast,
    ) -> Res<Frame<'a>> {
        if by == 0.0 || !by.is_finite() || !first.is_finite() || !last.is_finite() {
            return Err(self.src.error_at(
                step.start,
                step.end,
                "'range' operator: step must not be 0",
            ));
        }
        let span = last - first;
        let n = if span == 0.0 || (span > 0.0) == (by > 0.0) {
            // A little slack so that `0.1 to 0.3 step 0.1` ends at 0.3.
            (span / by + 1e-9).floor() as i128 + 1
        } else {
            0
        };
        let n = self.range_rows(n)?;
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            self.bg.row()?;
            out.push(Value::Real(first + by * i as f64));
        }
        Ok(Frame::computed(
            vec![(name.to_string(), DataType::Real, out)],
            n,
        ))
    }

    /// The number of rows of a `range`, charged to the memory budget before any is built:
    /// a range too long to hold is the service's "exceeded the allowed limits".
    fn range_rows(&self, n: i128) -> Res<usize> {
        let n = usize::try_from(n.max(0)).unwrap_or(usize::MAX);
        self.bg
            .charge(n.saturating_mul(std::mem::size_of::<Value>()));
        self.bg.status()?;
        Ok(n)
    }
}
