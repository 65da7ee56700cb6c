//! The tabular operators of a pipeline (`where`, `project`, `extend`, `sort`,
//! `mv-expand`, `parse`, `invoke`...), applied one after another to a frame.

#[allow(unused_imports)]
use super::*;

pub(super) fn const_count(b: &Binder<'_, '_>, a: &Ast, what: &str) -> Res<usize> {
    match b.bind(a)?.kind {
        CKind::Lit(Value::Int(n)) if n >= 0 => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
        _ => Err(b.src.error_at(
            a.start,
            a.end,
            format!("'{what}' expects a non-negative integer constant"),
        )),
    }
}

pub(super) fn default_name(e: &CExpr, cols: &[FCol], auto: &mut usize) -> String {
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

pub(super) fn check_unique(cols: &[FCol], op: &str) -> Res<()> {
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
pub(super) fn project<'a>(
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
pub(super) fn set_column(frame: &mut Frame<'_>, name: &str, ty: DataType, vals: Vec<Value>) {
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
    pub(super) fn apply(
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
            OpKind::Lookup { kind, right, on } => {
                let right = self.tabular(right, scope)?;
                return self.lookup(&frame, &right, *kind, on);
            }
            OpKind::MakeSeries(ms) => return self.make_series(frame, ms, scope, &op.name),
            OpKind::Evaluate {
                name,
                args,
                start,
                end,
            } => {
                return match name.as_str() {
                    "bag_unpack" => bag_unpack(&frame, args, &b, (*start, *end)),
                    _ => Err(src.unsupported(*start, *end, format!("evaluate {name}()"))),
                }
            }
        }
        Ok(frame)
    }

    /// `invoke FileProfile([column [, limit]])` and `invoke DeviceFromIP([column])`:
    /// the enrichment columns added to each row (`FileProfile` looks up the first
    /// `limit` rows, 100 by default, at most 1,000).
    pub(super) fn invoke(
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
}

/// `mv-expand`: each row repeated once per element of the expanded arrays (in
/// parallel, the shorter ones padded with null; a null value gives one row, an empty
/// array none).
pub(super) fn mv_expand<'a>(
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
pub(super) fn parse_pattern(text: &str, pattern: &[ParsePart]) -> Option<Vec<Value>> {
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

pub(super) fn sort_perm(
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
