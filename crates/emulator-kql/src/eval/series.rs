//! `make-series`: per group of the `by` keys, one array per aggregation with an element
//! per `step` of the axis, from `from` (inclusive) to `to` (exclusive), `default` where
//! no row falls; and the axis itself as an array.
//!
//! The rows are binned (`(axis - from) / step`, floored), then aggregated by the `by`
//! keys and the bin with `summarize`'s own machinery, then laid out as arrays.

#[allow(unused_imports)]
use super::*;
use crate::parse::MakeSeries;

/// The name of the hidden bin column `summarize` groups by.
const BIN: &str = "__series_bin";

impl<'a> Ctx<'a> {
    /// `frame | make-series ...`.
    pub(super) fn make_series(
        &self,
        mut frame: Frame<'a>,
        ms: &MakeSeries,
        scope: &Scope,
        op: &str,
    ) -> Res<Frame<'a>> {
        let bg = self.bg;
        let cols = frame.cols.clone();
        let b = self.binder(scope, &cols, op);
        let axis = b.bind(&ms.axis)?;
        let ty = axis.ty;
        let step_ty = match ty {
            DataType::DateTime | DataType::TimeSpan => DataType::TimeSpan,
            DataType::Int | DataType::Long => DataType::Long,
            other => {
                return Err(type_err(format!(
                "'make-series' operator: the axis must be a datetime, timespan or integer, got {}",
                other.kql_name()
            )))
            }
        };
        let axis_name = match &ms.axis.kind {
            AstKind::Name(n) => n.clone(),
            _ => default_name(&axis, &cols, &mut 0),
        };
        // `from`, `to`, `step` and the defaults are constants.
        let constant = |a: &Ast, what: &str, want: DataType| -> Res<Value> {
            let e = b.bind(a)?;
            let v = eval(&e, &NoRow, bg);
            let fits = match want {
                DataType::Dynamic => true,
                t => point(&v, t).is_some(),
            };
            if !fits {
                return Err(b.src.error_at(
                    a.start,
                    a.end,
                    format!(
                        "'make-series' operator: {what} must be a constant {}",
                        want.kql_name()
                    ),
                ));
            }
            Ok(v)
        };
        let step_v = constant(&ms.step, "step", step_ty)?;
        let step = point(&step_v, step_ty).unwrap_or(0);
        if step <= 0 {
            return Err(b.src.error_at(
                ms.step.start,
                ms.step.end,
                "'make-series' operator: step must be positive",
            ));
        }
        let from = ms
            .from
            .as_ref()
            .map(|a| constant(a, "from", ty).map(|v| point(&v, ty).unwrap_or(0)))
            .transpose()?;
        let to = ms
            .to
            .as_ref()
            .map(|a| constant(a, "to", ty).map(|v| point(&v, ty).unwrap_or(0)))
            .transpose()?;
        let mut defaults = Vec::with_capacity(ms.aggs.len());
        for (_, d) in &ms.aggs {
            defaults.push(match d {
                Some(a) => dynamic::to_json(&constant(a, "default", DataType::Dynamic)?),
                // "If default = is omitted, then 0 is assumed."
                None => serde_json::Value::from(0),
            });
        }

        let xs: Vec<Option<i64>> = frame
            .compute(&axis, bg)?
            .iter()
            .map(|v| point(v, ty))
            .collect();
        // Without `from`/`to`: from the bin of the smallest axis value to the one after
        // the bin of the largest.
        let floor = |x: i64| x - x.rem_euclid(step);
        // No rows and no `from`: no bins (the output still has its columns).
        let from = from
            .or_else(|| xs.iter().flatten().min().map(|m| floor(*m)))
            .unwrap_or(0);
        let to = to.unwrap_or_else(|| {
            xs.iter()
                .flatten()
                .max()
                .map_or(from, |m| floor(*m).saturating_add(step))
        });
        let bins = if to > from {
            let span = i128::from(to) - i128::from(from);
            usize::try_from((span + i128::from(step) - 1) / i128::from(step)).unwrap_or(usize::MAX)
        } else {
            0
        };
        // The axis alone is an array of `bins` values: charged before it is built.
        bg.charge(bins.saturating_mul(std::mem::size_of::<serde_json::Value>()));
        bg.status()?;

        let idx: Vec<Value> = xs
            .iter()
            .map(|x| match x {
                Some(x) if *x >= from && *x < to => {
                    Value::Int(((i128::from(*x) - i128::from(from)) / i128::from(step)) as i64)
                }
                _ => Value::Null,
            })
            .collect();
        let keep: Vec<bool> = idx.iter().map(|v| !matches!(v, Value::Null)).collect();
        set_column(&mut frame, BIN, DataType::Long, idx);
        frame.retain(&keep);

        let items: Vec<Item> = ms.aggs.iter().map(|(i, _)| i.clone()).collect();
        let mut by = ms.by.clone();
        by.push(Item {
            name: Some(BIN.to_string()),
            expr: Ast {
                kind: AstKind::Name(BIN.to_string()),
                start: ms.axis.start,
                end: ms.axis.end,
                depth: 1,
            },
        });
        let cols2 = frame.cols.clone();
        let b2 = self.binder(scope, &cols2, op);
        let s = summarize(&frame, &b2, &items, &by, true)?;
        let nb = ms.by.len();
        if s.cols.len() != nb + 1 + ms.aggs.len() {
            return Err(b.src.unsupported(
                ms.axis.start,
                ms.axis.end,
                "make-series with an aggregation of several columns",
            ));
        }

        let mut groups: HashMap<Vec<KeyVal>, usize> = HashMap::new();
        let mut keys: Vec<Vec<KeyVal>> = Vec::new();
        let mut series: Vec<Vec<Vec<serde_json::Value>>> = Vec::new();
        let per_group = bins
            .saturating_mul(ms.aggs.len())
            .saturating_mul(std::mem::size_of::<serde_json::Value>());
        for r in 0..s.len {
            bg.row()?;
            let key: Vec<KeyVal> = (0..nb).map(|c| KeyVal(s.value(c, r))).collect();
            let g = match groups.get(&key) {
                Some(g) => *g,
                None => {
                    bg.charge(per_group);
                    bg.status()?;
                    let g = keys.len();
                    groups.insert(key.clone(), g);
                    keys.push(key);
                    series.push(defaults.iter().map(|d| vec![d.clone(); bins]).collect());
                    g
                }
            };
            let Some(i) = s
                .value(nb, r)
                .as_i64()
                .and_then(|i| usize::try_from(i).ok())
            else {
                continue;
            };
            for (k, arr) in series[g].iter_mut().enumerate() {
                if let Some(slot) = arr.get_mut(i) {
                    *slot = dynamic::to_json(&s.value(nb + 1 + k, r));
                }
            }
        }
        if keys.is_empty() && ms.nonempty && nb == 0 {
            keys.push(Vec::new());
            series.push(defaults.iter().map(|d| vec![d.clone(); bins]).collect());
        }
        let axis_vals = dynamic::array(
            (0..bins)
                .map(|i| {
                    let p = from.saturating_add((i as i64).saturating_mul(step));
                    dynamic::to_json(&make_point(p, ty))
                })
                .collect(),
        );
        let n = keys.len();
        let mut out: Vec<(String, DataType, Vec<Value>)> = (0..nb)
            .map(|c| (s.cols[c].name.clone(), s.cols[c].ty, Vec::with_capacity(n)))
            .collect();
        for key in keys {
            for (c, v) in key.into_iter().enumerate() {
                out[c].2.push(v.0);
            }
        }
        let mut arrays: Vec<Vec<Value>> = vec![Vec::with_capacity(n); ms.aggs.len()];
        for g in series {
            for (k, arr) in g.into_iter().enumerate() {
                arrays[k].push(dynamic::array(arr));
            }
        }
        for (k, vals) in arrays.into_iter().enumerate() {
            out.push((s.cols[nb + 1 + k].name.clone(), DataType::Dynamic, vals));
        }
        out.push((axis_name, DataType::Dynamic, vec![axis_vals; n]));
        let fcols: Vec<FCol> = out
            .iter()
            .map(|(name, ty, _)| FCol {
                name: name.clone(),
                ty: *ty,
                src: ColSrc::Extra(0),
            })
            .collect();
        check_unique(&fcols, op)?;
        Ok(Frame::computed(out, n))
    }
}

/// An axis value (or a `from`, `to`, `step`) of type `ty` as a number of ticks or an
/// integer.
fn point(v: &Value, ty: DataType) -> Option<i64> {
    match (ty, v) {
        (DataType::DateTime, Value::DateTime(t))
        | (DataType::TimeSpan, Value::TimeSpan(t))
        | (DataType::Int | DataType::Long, Value::Int(t)) => Some(*t),
        _ => None,
    }
}

fn make_point(p: i64, ty: DataType) -> Value {
    match ty {
        DataType::DateTime => Value::DateTime(p),
        DataType::TimeSpan => Value::TimeSpan(p),
        _ => Value::Int(p),
    }
}
