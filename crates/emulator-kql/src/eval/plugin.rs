//! `evaluate` plugins: `bag_unpack`, the one published hunts use; any other plugin is
//! refused by the parser as valid KQL that the emulator does not run.

#[allow(unused_imports)]
use super::*;

use std::collections::BTreeMap;

/// `evaluate bag_unpack(Column [, Prefix])`: one column per key of the property bags
/// in `Column` (named `Prefix` + key, in the keys' sorted order), which replaces it; a
/// row without the key (or whose value is not a bag) has null there. A new column's type
/// is its values' one type (`long`, `real` when numbers mix, `string`, `bool`), else
/// `dynamic`.
pub(super) fn bag_unpack<'a>(
    frame: &Frame<'a>,
    args: &[Ast],
    b: &Binder<'_, '_>,
    (start, end): (usize, usize),
) -> Res<Frame<'a>> {
    let bg = b.bg;
    let (c, prefix) = match args {
        [col] => (col, String::new()),
        [col, p] => match eval(&b.bind(p)?, &NoRow, bg) {
            Value::Str(s) => (col, s.to_string()),
            _ => {
                return Err(b.src.error_at(
                    p.start,
                    p.end,
                    "bag_unpack(): the prefix must be a constant string",
                ))
            }
        },
        [] => {
            return Err(b
                .src
                .error_at(start, end, "bag_unpack(): expected a column"))
        }
        _ => {
            return Err(b.src.unsupported(
                start,
                end,
                "evaluate bag_unpack() with columnsConflict or ignoredProperties",
            ))
        }
    };
    let AstKind::Name(name) = &c.kind else {
        return Err(b
            .src
            .error_at(c.start, c.end, "bag_unpack(): expected a column name"));
    };
    let Some(ci) = frame.index(name) else {
        return Err(KqlError::UnknownColumn {
            operator: "evaluate".to_string(),
            name: name.clone(),
        });
    };
    if frame.cols[ci].ty != DataType::Dynamic {
        return Err(type_err(format!(
            "bag_unpack(): the column '{name}' must be dynamic, got {}",
            frame.cols[ci].ty.kql_name()
        )));
    }
    // Each key's values, one per row (null where the row lacks it).
    let mut keys: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for i in 0..frame.len {
        bg.row()?;
        let v = frame.value(ci, i);
        let Value::Dynamic(j) = &v else { continue };
        let Some(obj) = j.as_object() else { continue };
        for (k, x) in obj {
            let col = keys.entry(k.clone()).or_insert_with(|| {
                bg.charge(frame.len * std::mem::size_of::<Value>());
                vec![Value::Null; frame.len]
            });
            let x = Value::from_json(x.clone());
            bg.charge(value_bytes(&x));
            col[i] = x;
        }
        if frame.cols.len() + keys.len() > bg.limits.max_columns {
            return Err(KqlError::LimitExceeded(Limit::Columns));
        }
        bg.status()?;
    }
    let mut out: Vec<(String, DataType, Vec<Value>)> = Vec::new();
    for (c, col) in frame.cols.iter().enumerate() {
        if c != ci {
            out.push((
                col.name.clone(),
                col.ty,
                (0..frame.len).map(|i| frame.value(c, i)).collect(),
            ));
        }
    }
    for (k, vals) in keys {
        let name = format!("{prefix}{k}");
        if out.iter().any(|(n, _, _)| *n == name) {
            return Err(KqlError::Semantic(format!(
                "bag_unpack(): the column '{name}' already exists"
            )));
        }
        let (ty, vals) = unpacked_type(vals);
        out.push((name, ty, vals));
    }
    Ok(Frame::computed(out, frame.len))
}

/// The type of a column of values taken out of bags, and the values in that type.
fn unpacked_type(vals: Vec<Value>) -> (DataType, Vec<Value>) {
    let mut seen = (false, false, false, false, false); // int, real, str, bool, other
    for v in &vals {
        match v {
            Value::Null => {}
            Value::Int(_) => seen.0 = true,
            Value::Real(_) => seen.1 = true,
            Value::Str(_) => seen.2 = true,
            Value::Bool(_) => seen.3 = true,
            _ => seen.4 = true,
        }
    }
    match seen {
        (true, false, false, false, false) => (DataType::Long, vals),
        (_, true, false, false, false) => (
            DataType::Real,
            vals.into_iter()
                .map(|v| match v {
                    Value::Int(i) => Value::Real(i as f64),
                    v => v,
                })
                .collect(),
        ),
        (false, false, true, false, false) => (DataType::String, vals),
        (false, false, false, true, false) => (DataType::Bool, vals),
        _ => (DataType::Dynamic, vals),
    }
}
