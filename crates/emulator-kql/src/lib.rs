//! # defender-emulator-kql
//!
//! The query engine behind the Defender API emulator's advanced-hunting endpoints: a
//! deterministic synthetic dataset of the common hunting tables and a small subset of KQL
//! that is really parsed and evaluated over it, so clients under test get genuine, stable
//! answers (and genuine syntax errors) without a tenant.
//!
//! It is a pure library: no IO, no threads. "Now" is passed in
//! ([`RunOptions::now_unix_ms`], [`DatasetConfig::anchor_unix_ms`]); the only clock it
//! reads is the monotonic one, to stop a query at [`QueryLimits::max_run_time`].
//!
//! - [`Dataset::generate`] builds every table of the Defender XDR advanced-hunting schema
//!   ([`TABLE_NAMES`]: the `Device*`, `DeviceTvm*`, `Email*`, `UrlClickEvents`,
//!   `Identity*`, `CloudAppEvents`, `Alert*` and `Behavior*` tables) with their documented
//!   column names and types, from one schema description (`src/schema.txt`) and a seed.
//!   The same devices, accounts, process ids, hashes, message and alert ids recur across
//!   tables, and three attack stories are planted (a phishing mail whose macro runs an
//!   encoded PowerShell that downloads a payload and schedules it; a Qakbot-like mail
//!   theft; an lsass dump followed by lateral logons), so hunting queries find rows.
//!   Event rows are sorted by `Timestamp` and span 40 days by default, so data older
//!   than the 30-day hunting window exists and must stay invisible; the snapshot tables
//!   without a `Timestamp` (`DeviceTvmSoftwareInventory`...) are always visible.
//! - [`run`] parses and evaluates a query, applying the lookback window and the row cap.
//! - [`QueryOutput::write_json`] writes the Defender (`Schema`/`Results`) or Graph
//!   (`schema`/`results`) response body.
//!
//! ## The KQL subset
//!
//! Statements: `let NAME = <scalar>;`, `let NAME = <tabular>;` and user functions
//! `let f = (a: string, n: long = 5) { <scalar or tabular body> };`. Then a source — a
//! table, a tabular `let`, a function call, `(...)`, `materialize(...)`, `print`,
//! `union [withsource=Col] [kind=inner|outer] T1, (T2 | ...), Device*Events`,
//! `search [in (T, ...)] "term"` or a predicate (`$table` names the source),
//! `find [withsource=C] [in (T, ...)] where ... [project ...]` (`source_`),
//! `range x from a to b step s` (numbers, datetimes or timespans; a range too long
//! to hold is the service's "exceeded the allowed limits"),
//! `datatable (c: T, ...) [...]`, `externaldata (c: T, ...) [...]` (no rows offline, and a
//! [`QueryOutput::warnings`] entry) or `AssignedIPAddresses(device [, at])` — and
//! `|`-separated operators: `where`, `project`, `project-away` (with `*` patterns),
//! `project-rename`, `project-reorder`, `project-keep`,
//! `extend`, `take`/`limit`, `top N by`, `sort by`/`order by` (`asc`/`desc`, default
//! `desc`), `summarize` (`count()`, `countif()`, `dcount()`, `dcountif()`, `min()`,
//! `max()`, `sum()`, `avg()`, `make_set()`/`makeset()`, `make_list()`/`makelist()`,
//! `make_bag()`, `arg_max()`/`arg_min()` (with `*`), `take_any()`, `percentile()`,
//! `percentiles()` (nearest rank), and expressions over
//! them such as `100.0 * countif(x) / count()`; optionally `by` keys), `count`,
//! `distinct`, `join` (every kind: `innerunique`, the default, `inner`, `leftouter`,
//! `rightouter`, `fullouter`, `leftanti`, `rightanti`, `leftsemi`, `rightsemi`; `on Col`
//! or `on $left.A == $right.B`; `hint.*` accepted and ignored), `lookup` (`leftouter`,
//! the default, and `inner`; the right side's key columns are not repeated),
//! `make-series` (`default =`, `on`, `from`/`to`/`step` or `in range(...)`, `by`,
//! `kind=nonempty`), `evaluate bag_unpack(col [, prefix])` (other plugins are
//! [`KqlError::NotSupported`]), `union`, `mv-expand`
//! (`to typeof(T)`, `limit N`), `parse ... with` (simple and relaxed), `serialize`,
//! `invoke FileProfile(...)` and `invoke DeviceFromIP(...)` (answered from the synthetic
//! world), `render` (ignored).
//!
//! Expressions: columns; string (`'..'`, `".."`, `@'..'`), integer, real, `true`/`false`,
//! `datetime(..)`, timespan (`1d`, `2h`, `30m`, `10s`, `100ms`, `timespan(..)`; both
//! also `(null)`) and
//! `dynamic([...])`/`dynamic({...})` literals; member access `x.y`, `x["y"]` and
//! indexing `x[i]` (negative from the end; a missing key is null); `ago()`, `now()`,
//! `bin()`, `tolower()`, `toupper()`, `strlen()`, `tostring()`, `tolong()`, `toint()`,
//! `todouble()`, `tobool()`, `todatetime()`, `round()`, `isempty()`, `isnotempty()`,
//! `isnull()`, `isnotnull()`, `startofday()`, `iff()`, `case()`, `strcat()`, `not()`,
//! `parse_json()`/`todynamic()`, `extractjson()`, `pack_array()`, `bag_pack()`/`pack()`,
//! `array_length()`, `split()`, `strcat_array()`, `extract()`, `extract_all()`,
//! `toscalar()`, `datetime_diff()`, `format_datetime()`, `dayofweek()`, `hourofday()`,
//! `coalesce()`, `replace_string()`, `substring()`, `indexof()`, `countof()`,
//! `ipv4_is_private()`, `base64_decode_tostring()`, `prev()`/`next()` (on the input's
//! order); arithmetic (`+ - * / %`, datetime ± timespan); comparisons; `=~`, `!~`,
//! `contains`, `has`, `startswith`, `endswith`, `hasprefix`, `hassuffix` (with `!` and
//! `_cs` variants; case-insensitive unless `_cs`); `has_any`, `has_all`, `matches regex`
//! (the `regex` crate's syntax); `in`, `!in`, `in~`, `!in~` (over constants, arrays and
//! tables: `in (SomeLet)`); `between (a .. b)` (inclusive); `and`, `or`, parentheses.
//!
//! Anything else is a [`KqlError`] whose message names what was not understood; valid
//! KQL the emulator does not implement is [`KqlError::NotSupported`] ("... is valid KQL
//! but not supported by this emulator"), so a user knows whose limit it is. The engine
//! never panics on any input.
//!
//! ## Limits
//!
//! A query runs inside [`QueryLimits`] ([`RunOptions::limits`]), so that no input can
//! exhaust the stack, the memory or the time of the process evaluating it:
//!
//! | limit | default | over it |
//! |---|---|---|
//! | expression nesting | 100 ([`MAX_DEPTH`]) | [`KqlError::TooDeep`] |
//! | pipeline operators | 200 | [`KqlError::LimitExceeded`]`(`[`Limit::Operators`]`)` |
//! | columns of any result | 1,000 | `LimitExceeded(Columns)` |
//! | bytes of a produced string (`strcat`, `toupper`...) | 1 MiB | `LimitExceeded(StringLength)` |
//! | bytes of materialised values | 512 MiB | `LimitExceeded(Memory)` |
//! | wall-clock evaluation time | 5 s | `LimitExceeded(RunTime)` |
//!
//! `LimitExceeded` prints the service's own message, [`PREEMPTED`] ("Query execution
//! has exceeded the allowed limits. The query execution was preempted...").
//!
//! ## Example
//!
//! ```
//! use defender_emulator_kql::{run, Dataset, DatasetConfig, JsonStyle, RunOptions};
//!
//! let now = 1_767_225_600_000; // 2026-01-01T00:00:00Z
//! let data = Dataset::generate(&DatasetConfig {
//!     rows_per_table: 5_000,
//!     anchor_unix_ms: now,
//!     ..DatasetConfig::default()
//! });
//! let opts = RunOptions { now_unix_ms: now, ..RunOptions::default() };
//! let out = run(
//!     "let _start = ago(7d);
//!      DeviceProcessEvents
//!      | where Timestamp >= _start and FileName =~ 'powershell.exe'
//!      | summarize Executions = count() by DeviceName
//!      | top 3 by Executions desc",
//!     &data,
//!     &opts,
//! )
//! .unwrap();
//! assert_eq!(out.schema[0].name, "DeviceName");
//! assert_eq!(out.schema[1].type_name, "Int64");
//! assert!(out.rows.len() <= 3);
//! assert_eq!(out.operators, 3);
//!
//! let body = out.to_json_bytes(JsonStyle::Defender);
//! assert!(body.starts_with(br#"{"Schema":[{"Name":"DeviceName","Type":"String"}"#));
//!
//! let err = run("DeviceProcessEvents | wher x", &data, &opts).unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     "Query could not be parsed at 'wher' on line [1,23] (unknown query operator)"
//! );
//! ```

mod data;
mod dynamic;
mod enrich;
mod error;
mod eval;
mod join;
mod limits;
mod output;
mod parse;
mod scalars;
mod value;

pub use data::{
    ColumnSchema, Dataset, DatasetConfig, Table, ENCODED_POWERSHELL, PHISH_IP, QAKBOT_IP,
    TABLE_NAMES,
};
pub use error::KqlError;
pub use limits::{Limit, QueryLimits, PREEMPTED};
pub use output::{value_to_json, Column, JsonStyle, QueryOutput};
pub use parse::MAX_DEPTH;
pub use value::{
    format_datetime, format_timespan, parse_datetime, DataType, Value, TICKS_PER_DAY, TICKS_PER_MS,
    TICKS_PER_SEC,
};

/// How to run a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOptions {
    /// "Now" in Unix milliseconds: used by `ago()`, `now()` and the lookback window.
    pub now_unix_ms: i64,
    /// Rows with `Timestamp < now - lookback` are invisible (not scanned, not returned).
    /// `None` disables the window. Default: 30 days.
    pub lookback_ms: Option<i64>,
    /// Results are silently cut to this many rows (and `truncated` is set). Default 100,000.
    pub row_cap: usize,
    /// What one query may cost (nesting, operators, columns, string and memory sizes,
    /// wall-clock time); over any of them, [`run`] fails with
    /// [`KqlError::LimitExceeded`] (or [`KqlError::TooDeep`] for nesting).
    pub limits: QueryLimits,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            now_unix_ms: 0,
            lookback_ms: Some(eval::THIRTY_DAYS_MS),
            row_cap: 100_000,
            limits: QueryLimits::default(),
        }
    }
}

/// Parses and evaluates `query` over `data`.
///
/// Errors are returned for any syntax this subset does not understand, unknown tables,
/// columns and functions, and type errors (e.g. comparing a string with a number); the
/// emulator maps them to a 400 `BadRequest`.
///
/// The returned [`QueryOutput::rows_scanned`] (rows of the source table inside the
/// lookback window) and [`QueryOutput::operators`] (pipeline operators) are what the
/// emulator uses to simulate execution time.
pub fn run(query: &str, data: &Dataset, opts: &RunOptions) -> Result<QueryOutput, KqlError> {
    eval::run(query, data, opts)
}
