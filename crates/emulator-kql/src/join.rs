//! Which rows a `join` pairs, for each kind, given the key of every row.
//!
//! A key is `None` when one of its columns is null: it matches nothing. The result
//! lists `(left row, right row)` pairs; a side that is absent (the unmatched rows of
//! an outer join) or not output (`leftsemi` keeps only left rows) is `None`. Rows come
//! in left order, matches of a left row in right order, and the unmatched right rows of
//! `rightouter`/`fullouter` last.

use std::collections::HashMap;

use crate::error::KqlError;
use crate::parse::JoinKind;
use crate::value::KeyVal;

type Key = Option<Vec<KeyVal>>;

/// A left row and a right row of the result (`None`: absent or not output).
pub(crate) type Pair = (Option<usize>, Option<usize>);

/// The row pairs of `kind` over rows with keys `left` and `right`. `emit` is called once
/// per pair before it is stored, to charge it against the query's limits; an error from
/// it stops the join.
pub(crate) fn pairs(
    kind: JoinKind,
    left: &[Key],
    right: &[Key],
    emit: &mut dyn FnMut() -> Result<(), KqlError>,
) -> Result<Vec<Pair>, KqlError> {
    fn index(rows: &[Key]) -> HashMap<&[KeyVal], Vec<usize>> {
        let mut m: HashMap<&[KeyVal], Vec<usize>> = HashMap::new();
        for (i, k) in rows.iter().enumerate() {
            if let Some(k) = k {
                m.entry(k.as_slice()).or_default().push(i);
            }
        }
        m
    }
    let mut out = Vec::new();
    let mut push = |p: Pair| -> Result<(), KqlError> {
        emit()?;
        out.push(p);
        Ok(())
    };
    match kind {
        JoinKind::RightSemi | JoinKind::RightAnti => {
            let l = index(left);
            for (j, k) in right.iter().enumerate() {
                let matched = k.as_ref().is_some_and(|k| l.contains_key(k.as_slice()));
                if matched == (kind == JoinKind::RightSemi) {
                    push((None, Some(j)))?;
                }
            }
        }
        _ => {
            let r = index(right);
            let mut right_used = vec![false; right.len()];
            let mut seen_left: HashMap<&[KeyVal], ()> = HashMap::new();
            for (i, k) in left.iter().enumerate() {
                let matches = k.as_ref().and_then(|k| r.get(k.as_slice()));
                match kind {
                    JoinKind::LeftSemi | JoinKind::LeftAnti => {
                        if matches.is_some() == (kind == JoinKind::LeftSemi) {
                            push((Some(i), None))?;
                        }
                        continue;
                    }
                    // One left row per key: the first.
                    JoinKind::InnerUnique => match k {
                        Some(k) if seen_left.insert(k.as_slice(), ()).is_none() => {}
                        _ => continue,
                    },
                    _ => {}
                }
                match matches {
                    Some(js) => {
                        for &j in js {
                            right_used[j] = true;
                            push((Some(i), Some(j)))?;
                        }
                    }
                    None if matches!(kind, JoinKind::LeftOuter | JoinKind::FullOuter) => {
                        push((Some(i), None))?;
                    }
                    None => {}
                }
            }
            if matches!(kind, JoinKind::RightOuter | JoinKind::FullOuter) {
                for (j, used) in right_used.iter().enumerate() {
                    if !used {
                        push((None, Some(j)))?;
                    }
                }
            }
        }
    }
    Ok(out)
}
