//! Binding (name resolution, type checking, constant folding) and evaluation.
//!
//! A query is parsed, its `let`s bound into a [`Scope`], and its tabular body evaluated
//! into a `Frame` one operator at a time, inside the query's [`Budget`]. By concern:
//!
//! - `expr`: bound expressions (`CExpr`), the rows they read, and their evaluation;
//! - `scalar`: scalar functions, conversions, arithmetic, comparison, string operators;
//! - `bind`: names, types and constant folding, from the parser's `Ast` to a `CExpr`;
//! - `frame`: the intermediate table and the fast filters of `where`;
//! - `source`: tables, `let`s, user functions, `union`, `datatable`, `print`, `find`;
//! - `tabular`: the pipeline operators applied to a frame;
//! - `join`: `join` and `lookup` over frames (the pairing itself is `crate::join`);
//! - `series`: `make-series`;
//! - `plugin`: the `evaluate` plugins (`bag_unpack`);
//! - `aggregate`: `summarize` and its aggregation functions.
//!
//! This file holds what every part shares: the scope of names, the context of one
//! run, and [`run`] itself.

use std::cell::Cell;
use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;

use crate::data::{ColumnData, Dataset, Table};
use crate::dynamic;
use crate::enrich;
use crate::error::KqlError;
use crate::limits::{value_bytes, Budget, Limit};
use crate::output::{Column, QueryOutput};
use crate::parse::{
    Ast, AstKind, BinOp, ExpandItem, FuncDef, Item, JoinKey, JoinKind, Let, LetRhs, ListOp, OpKind,
    ParsePart, Parser, SortKey, Source, Src, StrOp, TabExpr, Union,
};
use crate::scalars;
use crate::value::{order_cmp, DataType, KeyVal, Value, TICKS_PER_DAY, TICKS_PER_MS};
use crate::RunOptions;

mod aggregate;
mod bind;
mod expr;
mod frame;
mod join;
mod plugin;
mod scalar;
mod series;
mod source;
mod tabular;

use aggregate::*;
use bind::*;
use expr::*;
use frame::*;
use plugin::*;
use scalar::*;
use tabular::*;

type Res<T> = Result<T, KqlError>;

// ---------------------------------------------------------------------------------------
// Running a query: scopes, the context of one run, tabular expressions

/// What a name stands for.
pub(crate) enum Binding {
    Scalar(Value, DataType),
    /// A tabular `let`: evaluated where it is used, in the scope it was defined in.
    Tabular(Rc<TabExpr>, Scope),
    /// A user function and the scope it was defined in (its body sees only the names
    /// defined before it, so a function cannot call itself).
    Func(Rc<FuncDef>, Scope),
}

/// One name in scope, and the scope around it.
pub(crate) struct Env {
    parent: Scope,
    name: String,
    binding: Binding,
}

/// The names in scope: a persistent list, newest first, shared by what captured it.
pub(crate) type Scope = Option<Rc<Env>>;

fn lookup<'s>(scope: &'s Scope, name: &str) -> Option<&'s Binding> {
    let mut cur = scope.as_ref();
    while let Some(env) = cur {
        if env.name == name {
            return Some(&env.binding);
        }
        cur = env.parent.as_ref();
    }
    None
}

fn define(scope: Scope, name: &str, binding: Binding) -> Scope {
    Some(Rc::new(Env {
        parent: scope,
        name: name.to_string(),
        binding,
    }))
}

/// Everything one run of a query shares.
pub(crate) struct Ctx<'a> {
    data: &'a Dataset,
    src: &'a Src<'a>,
    opts: &'a RunOptions,
    now: i64,
    bg: &'a Budget,
    /// Rows read from tables (after the lookback cut), over every table reference.
    scanned: Cell<u64>,
    /// Nested evaluations of tabular `let`s and calls of user functions.
    calls: Cell<u32>,
    /// What the query did that the service would have done differently (offline).
    warnings: std::cell::RefCell<Vec<String>>,
}

/// Leaves one nested evaluation when dropped.
pub(crate) struct CallGuard<'c>(&'c Cell<u32>);
impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

pub(crate) fn run(query: &str, data: &Dataset, opts: &RunOptions) -> Res<QueryOutput> {
    let src = Src { text: query };
    let q = Parser::new(&src, opts.limits.max_nesting)?.parse_query()?;
    if q.operators > opts.limits.max_operators {
        return Err(KqlError::LimitExceeded(Limit::Operators));
    }
    let bg = Budget::new(opts.limits);
    let ctx = Ctx {
        data,
        src: &src,
        opts,
        now: opts.now_unix_ms.saturating_mul(TICKS_PER_MS),
        bg: &bg,
        scanned: Cell::new(0),
        calls: Cell::new(0),
        warnings: std::cell::RefCell::new(Vec::new()),
    };
    let scope = ctx.bind_lets(&q.lets, None)?;
    let frame = ctx.tabular(&q.body, &scope)?;

    let n = frame.len.min(opts.row_cap);
    let rows = (0..n)
        .map(|i| (0..frame.cols.len()).map(|c| frame.value(c, i)).collect())
        .collect();
    Ok(QueryOutput {
        schema: frame
            .cols
            .iter()
            .map(|c| Column {
                name: c.name.clone(),
                data_type: c.ty,
                type_name: c.ty.schema_name(),
            })
            .collect(),
        rows,
        rows_scanned: ctx.scanned.get(),
        operators: q.operators as u32,
        truncated: frame.len > opts.row_cap,
        warnings: ctx.warnings.take(),
    })
}

/// Default hunting window: 30 days in milliseconds.
pub(crate) const THIRTY_DAYS_MS: i64 = 30 * TICKS_PER_DAY / TICKS_PER_MS;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_ops() {
        assert!(str_op(StrOp::Has, false, "cmd.exe /c whoami", "WHOAMI"));
        assert!(!str_op(StrOp::Has, false, "cmd.exe /c whoami", "who"));
        assert!(str_op(StrOp::Has, false, "C:\\Windows\\cmd.exe", "cmd.exe"));
        assert!(!str_op(StrOp::Has, false, "xcmd.exe", "cmd.exe"));
        assert!(str_op(StrOp::HasPrefix, false, "powershell -enc", "power"));
        assert!(str_op(StrOp::Contains, false, "PowerShell", "rsh"));
        assert!(!str_op(StrOp::Contains, true, "PowerShell", "rsh"));
        assert!(str_op(StrOp::StartsWith, false, "ÉCOLE", "éc"));
        assert!(str_op(StrOp::EndsWith, false, "file.EXE", ".exe"));
        assert!(!str_op(StrOp::EndsWith, false, "e", ".exe"));
        assert!(eq_ci("ÄB", "äb"));
    }
}
