//! Frames, the intermediate table flowing through the pipeline, and the fast filters
//! `where` runs over table columns.

#[allow(unused_imports)]
use super::*;

// ---------------------------------------------------------------------------------------
// Frames: the intermediate table flowing through the pipeline.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ColSrc {
    Table(usize),
    Extra(usize),
}

#[derive(Debug, Clone)]
pub(super) struct FCol {
    pub(super) name: String,
    pub(super) ty: DataType,
    pub(super) src: ColSrc,
}

/// Rows `0..len`; table columns are read through `sel` (row indices into the table),
/// computed columns live in `extra` (one vector per column).
pub(super) struct Frame<'a> {
    pub(super) table: Option<&'a Table>,
    pub(super) sel: Vec<u32>,
    pub(super) len: usize,
    pub(super) cols: Vec<FCol>,
    pub(super) extra: Vec<Vec<Value>>,
}

impl Frame<'_> {
    #[inline]
    pub(super) fn value(&self, c: usize, i: usize) -> Value {
        match self.cols[c].src {
            ColSrc::Table(j) => match self.table {
                Some(t) => t.data[j].value(self.sel[i] as usize),
                None => Value::Null,
            },
            ColSrc::Extra(k) => self.extra[k][i].clone(),
        }
    }

    /// `e` over every row, charged to the budget.
    pub(super) fn compute(&self, e: &CExpr, bg: &Budget) -> Res<Vec<Value>> {
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

    pub(super) fn retain(&mut self, keep: &[bool]) {
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

    pub(super) fn permute(&mut self, perm: &[u32]) {
        if self.table.is_some() {
            self.sel = perm.iter().map(|p| self.sel[*p as usize]).collect();
        }
        for col in &mut self.extra {
            *col = perm.iter().map(|p| col[*p as usize].clone()).collect();
        }
        self.len = perm.len();
    }

    pub(super) fn truncate(&mut self, n: usize) {
        if n < self.len {
            self.sel.truncate(n);
            for col in &mut self.extra {
                col.truncate(n);
            }
            self.len = n;
        }
    }

    /// Drops computed columns no longer referenced.
    pub(super) fn gc(&mut self) {
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

    pub(super) fn index(&self, name: &str) -> Option<usize> {
        self.cols.iter().position(|c| c.name == name)
    }

    /// A frame made only of computed columns.
    pub(super) fn computed(
        cols: Vec<(String, DataType, Vec<Value>)>,
        len: usize,
    ) -> Frame<'static> {
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

pub(super) struct FrameRow<'f, 'a> {
    pub(super) f: &'f Frame<'a>,
    pub(super) i: usize,
}
impl FrameRow<'_, '_> {
    pub(super) fn at(&self, d: i64) -> Option<usize> {
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

pub(super) enum Filter<'a> {
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

pub(super) fn flip(op: BinOp) -> BinOp {
    match op {
        BinOp::Lt => BinOp::Gt,
        BinOp::Le => BinOp::Ge,
        BinOp::Gt => BinOp::Lt,
        BinOp::Ge => BinOp::Le,
        o => o,
    }
}

impl<'a> Filter<'a> {
    pub(super) fn build(e: &CExpr, f: &Frame<'a>, bg: &Budget) -> Filter<'a> {
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
    pub(super) fn test(&self, f: &Frame<'_>, i: usize, bg: &Budget) -> u8 {
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
