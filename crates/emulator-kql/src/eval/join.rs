//! The `join` operator over frames: keys, the pairs of `crate::join`, and the
//! output columns.

#[allow(unused_imports)]
use super::*;

impl<'a> Ctx<'a> {
    /// `left | join kind=... (right) on ...`.
    pub(super) fn join(
        &self,
        left: &Frame<'a>,
        right: &Frame<'a>,
        kind: JoinKind,
        on: &[JoinKey],
    ) -> Res<Frame<'a>> {
        self.join_frames(left, right, kind, on, false)
    }

    /// `left | lookup kind=leftouter|inner (right) on ...`: the join of that kind
    /// without the right side's key columns.
    pub(super) fn lookup(
        &self,
        left: &Frame<'a>,
        right: &Frame<'a>,
        kind: JoinKind,
        on: &[JoinKey],
    ) -> Res<Frame<'a>> {
        self.join_frames(left, right, kind, on, true)
    }

    fn join_frames(
        &self,
        left: &Frame<'a>,
        right: &Frame<'a>,
        kind: JoinKind,
        on: &[JoinKey],
        lookup: bool,
    ) -> Res<Frame<'a>> {
        let op = if lookup { "lookup" } else { "join" };
        let bg = self.bg;
        let mut lk = Vec::new();
        let mut rk = Vec::new();
        for k in on {
            let find = |f: &Frame<'_>, n: &str, side: &str| {
                f.index(n).ok_or_else(|| {
                    self.src.error_at(
                        k.start,
                        k.end,
                        format!("'{op}' operator: Failed to resolve column named '{n}' on the {side} side"),
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
                if lookup && side == 1 && rk.contains(&c) {
                    continue;
                }
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
pub(super) fn join_key(v: Value) -> Value {
    match v {
        Value::Real(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Value::Int(f as i64),
        v => v,
    }
}
