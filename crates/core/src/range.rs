//! Ranged hunts: one query over a time range, past the row cap, the 30-day window and
//! the running-time budget, every row once.
//!
//! The query names the window through two placeholders, `_start` and `_end`, bound by a
//! prepended `let` (`let _start = datetime(..); let _end = datetime(..);`). Write the
//! filter half-open so that a row on a boundary belongs to one window only:
//! `| where Timestamp >= _start and Timestamp < _end`. A query that starts with a table
//! name and names neither placeholder gets that filter inserted after the table name.
//!
//! [`RangePlan`] is sans-IO. The driver asks [`RangePlan::poll_window`] for windows to
//! run (at most `concurrency` at once; the engine's quotas decide when each is sent),
//! hands each result to [`RangePlan::handle_result`], and takes finished windows, in time
//! order, from [`RangePlan::poll_rows`]. A window that comes back at the row cap, or with
//! "result too large", is bisected and its halves run instead, down to `min_span`; a
//! window that is still at the cap then is handed out flagged `truncated`.
//!
//! The contract the driver relies on, for any range, any `min_span` (zero included) and
//! any split: the windows handed out by `poll_rows` tile `[from, to)` exactly (no gap, no
//! overlap, no empty window), in time order. A window is halved at whole milliseconds
//! from its start when it is at least 2 ms wide, else at whole 100 ns ticks (the finest
//! instant a bound query prints); a window narrower than two ticks is not split.
//!
//! Memory stays bounded whatever the range: `Split::Every` cuts its windows as they are
//! asked for (1 ms windows over 30 days are 2.6 billion calls, not 2.6 billion windows
//! held), and no new window starts while [`MAX_WAITING_PER_SLOT`] × `concurrency`
//! finished windows wait behind an earlier one that is still running.
//!
//! ```text
//!   [from ............................................ to)      Split::Auto: one window
//!   [from ................. mid)[mid ...................... to)  at the cap: bisect
//!   [from .... q1)[q1 ..... mid)[mid ...................... to)  and again, per window
//! ```
//!
//! ```
//! use defender_core::range::{RangeOptions, RangePlan, Split};
//! use defender_core::hunting::HuntResult;
//! use std::time::{Duration, UNIX_EPOCH};
//!
//! let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
//! let from = now - Duration::from_secs(4 * 86_400);
//! let opts = RangeOptions { split: Split::Every(Duration::from_secs(86_400)), ..RangeOptions::default() };
//! let (mut plan, warning) = RangePlan::new("DeviceProcessEvents | take 5", from, now, opts, now).unwrap();
//! assert!(warning.is_none());
//! let w = plan.poll_window().unwrap();
//! assert!(w.query.starts_with("let _start = datetime("));
//! assert!(w.query.contains("DeviceProcessEvents | where Timestamp >= _start and Timestamp < _end | take 5"));
//! plan.handle_result(w.start, Ok(HuntResult::default())).unwrap();
//! assert_eq!(plan.poll_rows().unwrap().start, from);
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, SystemTime};

use crate::error::Error;
use crate::hunting::{Column, HuntResult, Row};
use crate::timefmt::{format_rfc3339, parse_rfc3339};

/// How to split a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Split {
    /// Start with the whole range as one window; bisect any window at the row cap.
    #[default]
    Auto,
    /// One window, never split: a result at the cap is handed out flagged `truncated`.
    None,
    /// Windows of this span from the start; any at the row cap is bisected further.
    Every(Duration),
}

impl std::str::FromStr for Split {
    type Err = String;
    fn from_str(s: &str) -> Result<Split, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Split::Auto),
            "none" => Ok(Split::None),
            other => crate::limits::parse_duration(other)
                .ok()
                .filter(|d| !d.is_zero())
                .map(Split::Every)
                .ok_or_else(|| format!("`{s}` is not auto, none or a duration such as 1d")),
        }
    }
}

/// What to do with a range that starts before the data window (30 days).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lookback {
    /// Move the start into the window and warn.
    #[default]
    Clamp,
    /// Refuse the hunt.
    Refuse,
}

/// Options of a ranged hunt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeOptions {
    /// How to split.
    pub split: Split,
    /// Windows narrower than this are not bisected (default 1 s).
    pub min_span: Duration,
    /// Windows run at once (default 2); the engine's quotas still decide when each goes.
    pub concurrency: usize,
    /// The row cap (default 100,000): a result of this many rows was cut.
    pub row_cap: u64,
    /// How far back data is kept (default 30 days).
    pub lookback: Duration,
    /// What to do with a range that starts before it.
    pub on_lookback: Lookback,
}

impl Default for RangeOptions {
    fn default() -> Self {
        RangeOptions {
            split: Split::Auto,
            min_span: Duration::from_secs(1),
            concurrency: 2,
            row_cap: 100_000,
            lookback: Duration::from_secs(30 * 86_400),
            on_lookback: Lookback::Clamp,
        }
    }
}

impl RangeOptions {
    /// The defaults with the row cap and data window of `limits`' hunting group.
    pub fn for_limits(limits: &crate::limits::Limits) -> RangeOptions {
        let mut o = RangeOptions::default();
        if let Some(rows) = limits.hunting.rows {
            o.row_cap = rows;
        }
        if let Some(l) = limits.hunting.lookback {
            o.lookback = l;
        }
        o
    }
}

/// Why a ranged hunt cannot start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RangeError {
    /// `from` is not before `to`.
    #[error("the range is empty: its start must be before its end")]
    Empty,
    /// The range starts before the data window and the options say refuse.
    #[error("the range starts {} before the {}-day data window; start it later, or clamp", crate::limits::format_duration(*by), .lookback.as_secs() / 86_400)]
    BeforeLookback {
        /// By how much.
        by: Duration,
        /// The window.
        lookback: Duration,
    },
    /// The range ends before the data window.
    #[error("the whole range lies before the data window; there is no data to hunt")]
    NoData,
    /// The query names no window and does not start with a table name.
    #[error("the query must start with a table name (after any `let` statements) or `union`, or filter on _start and _end itself (`| where Timestamp >= _start and Timestamp < _end`)")]
    NeedsPlaceholders,
    /// The query names no window and starts with an operator the range cannot be put
    /// after (`search`, `find`, `print`...).
    #[error("a query starting with `{operator}` cannot be bound to a time range: start it with the tables to hunt (`union T1, T2 | search ...`, `T | search ...`), or filter on _start and _end yourself (`... | where Timestamp >= _start and Timestamp < _end`)")]
    Unscopable {
        /// The operator it starts with.
        operator: String,
    },
}

/// A warning the hunt started with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClampWarning {
    /// The start asked for.
    pub asked: SystemTime,
    /// The start used.
    pub used: SystemTime,
}

/// A window to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowRequest {
    /// Its start (its id).
    pub start: SystemTime,
    /// Its end (exclusive).
    pub end: SystemTime,
    /// The query bound to it.
    pub query: String,
}

/// A finished window's rows, handed out in time order.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowRows {
    /// Start (inclusive).
    pub start: SystemTime,
    /// End (exclusive).
    pub end: SystemTime,
    /// The schema (the hunt's first one).
    pub schema: Vec<Column>,
    /// The rows, sorted by `Timestamp` when the schema has one.
    pub rows: Vec<Row>,
    /// Still at the row cap at the minimum span: rows may be missing.
    pub truncated: bool,
}

/// Where a ranged hunt stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RangeProgress {
    /// Windows finished (handed out or ready).
    pub windows_done: usize,
    /// Windows in the plan now, cut or not yet (grows as windows are bisected).
    pub windows_total: usize,
    /// Bisections made.
    pub splits: usize,
    /// Rows handed out or ready.
    pub rows: u64,
    /// Running time charged for every window run, including the bisected ones.
    pub running_time: Duration,
    /// Windows handed out truncated.
    pub truncated_windows: usize,
}

#[derive(Debug)]
enum State {
    Pending,
    Running,
    Done(HuntResult),
}

#[derive(Debug)]
struct Window {
    end: SystemTime,
    state: State,
}

/// How many finished windows, per concurrent slot, may wait behind an earlier window that
/// is still running before the plan starts no new one: it bounds the rows held in memory
/// to about `MAX_WAITING_PER_SLOT × concurrency × row_cap`.
pub const MAX_WAITING_PER_SLOT: usize = 4;

/// The finest step a bound query can express: `format_rfc3339` prints 100 ns ticks.
const TICK: Duration = Duration::from_nanos(100);

/// The sans-IO plan of one ranged hunt. See the module docs.
///
/// Polls: [`poll_window`](RangePlan::poll_window) (a window to run),
/// [`poll_rows`](RangePlan::poll_rows) (a finished window, in order). Handler:
/// [`handle_result`](RangePlan::handle_result).
#[derive(Debug)]
pub struct RangePlan {
    query: String,
    opts: RangeOptions,
    /// The windows cut and not handed out yet, by start: pending, running or finished.
    windows: BTreeMap<SystemTime, Window>,
    /// `[uncut, to)` is not cut into windows yet (`Split::Every` cuts on demand).
    uncut: SystemTime,
    to: SystemTime,
    /// The width of an uncut window (`Split::Every`).
    every: Duration,
    running: usize,
    /// Finished windows waiting in `windows` behind an earlier one.
    waiting: usize,
    schema: Option<Vec<Column>>,
    progress: RangeProgress,
    ready: VecDeque<WindowRows>,
}

impl RangePlan {
    /// Plans `query` over `[from, to)`. `wall_now` places the data window.
    pub fn new(
        query: &str,
        from: SystemTime,
        to: SystemTime,
        opts: RangeOptions,
        wall_now: SystemTime,
    ) -> Result<(RangePlan, Option<ClampWarning>), RangeError> {
        if from >= to {
            return Err(RangeError::Empty);
        }
        // A minute inside the window, so the server's clock moving on does not push the
        // start out of it while the hunt runs.
        let oldest = wall_now.checked_sub(opts.lookback);
        let mut warning = None;
        let mut from = from;
        if let Some(oldest) = oldest
            .and_then(|o| o.checked_add(Duration::from_secs(60)))
            .filter(|o| from < *o)
        {
            if to <= oldest {
                return Err(RangeError::NoData);
            }
            match opts.on_lookback {
                Lookback::Refuse => {
                    let by = oldest.duration_since(from).unwrap_or_default();
                    return Err(RangeError::BeforeLookback {
                        by,
                        lookback: opts.lookback,
                    });
                }
                Lookback::Clamp => {
                    warning = Some(ClampWarning {
                        asked: from,
                        used: oldest,
                    });
                    from = oldest;
                }
            }
        }
        let query = bind_template(query)?;
        let range = to.duration_since(from).unwrap_or_default();
        // The whole range as one window, unless `Every` asks for narrower ones. A window
        // narrower than a tick would bind the same printed instant at both ends.
        let every = match opts.split {
            Split::Every(span) if !span.is_zero() => span.max(TICK),
            _ => range,
        };
        let windows_total = range.as_nanos().div_ceil(every.as_nanos().max(1));
        let progress = RangeProgress {
            windows_total: usize::try_from(windows_total).unwrap_or(usize::MAX),
            ..RangeProgress::default()
        };
        Ok((
            RangePlan {
                query,
                opts,
                windows: BTreeMap::new(),
                uncut: from,
                to,
                every,
                running: 0,
                waiting: 0,
                schema: None,
                progress,
                ready: VecDeque::new(),
            },
            warning,
        ))
    }

    /// The next window to run, in time order, while fewer than `concurrency` are running
    /// and fewer than [`MAX_WAITING_PER_SLOT`] × `concurrency` finished windows wait
    /// behind an earlier one. `None` says "not now": ask again after the next
    /// [`handle_result`](RangePlan::handle_result).
    #[must_use]
    pub fn poll_window(&mut self) -> Option<WindowRequest> {
        let slots = self.opts.concurrency.max(1);
        if self.running >= slots {
            return None;
        }
        // The first window of the plan may always run: it is what the waiting ones wait for.
        let head = self.windows.keys().next().copied();
        let full = self.waiting >= slots.saturating_mul(MAX_WAITING_PER_SLOT);
        // A pending window (a bisected half, or one to retry) lies before the uncut rest.
        let pending = self
            .windows
            .iter()
            .find(|(_, w)| matches!(w.state, State::Pending))
            .map(|(s, _)| *s);
        let start = match pending {
            Some(start) if !full || head == Some(start) => start,
            Some(_) => return None,
            None if self.uncut < self.to && (!full || head.is_none()) => {
                let start = self.uncut;
                let end = start
                    .checked_add(self.every)
                    .map_or(self.to, |e| e.min(self.to));
                self.windows.insert(
                    start,
                    Window {
                        end,
                        state: State::Pending,
                    },
                );
                self.uncut = end;
                start
            }
            None => return None,
        };
        // The window was found or inserted just above.
        let w = self.windows.get_mut(&start).expect("a window of the plan");
        w.state = State::Running;
        self.running += 1;
        Some(WindowRequest {
            start,
            end: w.end,
            query: bind(&self.query, start, w.end),
        })
    }

    /// A window's result. An error other than "result too large" ends the hunt: it is
    /// returned, and the rows already handed out stand.
    pub fn handle_result(
        &mut self,
        start: SystemTime,
        result: Result<HuntResult, Error>,
    ) -> Result<(), Error> {
        let Some(w) = self.windows.get_mut(&start) else {
            return Ok(());
        };
        if !matches!(w.state, State::Running) {
            return Ok(());
        }
        self.running -= 1;
        let end = w.end;
        let span = end.duration_since(start).unwrap_or_default();
        let mid = midpoint(start, end).filter(|_| {
            self.opts.split != Split::None && span >= self.opts.min_span.saturating_mul(2)
        });
        match (result, mid) {
            (Ok(r), mid) => {
                self.progress.running_time += r.running_time;
                let at_cap = r.truncated || r.rows.len() as u64 >= self.opts.row_cap;
                match mid {
                    Some(mid) if at_cap => self.bisect(start, mid, end),
                    _ => {
                        let mut r = r;
                        r.truncated = at_cap;
                        // Looked up above, and nothing removed it since.
                        self.windows.get_mut(&start).expect("looked up above").state =
                            State::Done(r);
                        self.waiting += 1;
                    }
                }
            }
            // Too much for one query: half the time range asks for half the work.
            (Err(Error::ResultTooLarge(_) | Error::Preempted(_)), Some(mid)) => {
                self.bisect(start, mid, end)
            }
            (Err(e), _) => {
                self.windows.get_mut(&start).expect("looked up above").state = State::Pending; // may be retried by the caller
                return Err(e);
            }
        }
        self.collect_ready();
        Ok(())
    }

    /// The next finished window, in time order.
    pub fn poll_rows(&mut self) -> Option<WindowRows> {
        self.ready.pop_front()
    }

    /// Every window ran and was handed out.
    pub fn is_done(&self) -> bool {
        self.windows.is_empty() && self.ready.is_empty() && self.uncut >= self.to
    }

    /// Where the hunt stands.
    pub fn progress(&self) -> RangeProgress {
        self.progress
    }

    /// What the plan still holds, in order, as (start, end): the windows cut and not
    /// handed out, then the part not cut yet as one entry. After the windows handed out,
    /// they tile the range. Its length is bounded (see the module docs), not the count of
    /// windows to come.
    pub fn windows(&self) -> Vec<(SystemTime, SystemTime)> {
        let cut = self.windows.iter().map(|(s, w)| (*s, w.end));
        let uncut = (self.uncut < self.to).then_some((self.uncut, self.to));
        cut.chain(uncut).collect()
    }

    /// Replaces the running window `[start, end)` with two pending halves; `mid` is from
    /// [`midpoint`], strictly inside, so neither half is empty nor reaches the next window.
    fn bisect(&mut self, start: SystemTime, mid: SystemTime, end: SystemTime) {
        debug_assert!(start < mid && mid < end);
        self.windows.insert(
            start,
            Window {
                end: mid,
                state: State::Pending,
            },
        );
        self.windows.insert(
            mid,
            Window {
                end,
                state: State::Pending,
            },
        );
        self.progress.splits += 1;
        self.progress.windows_total += 1;
    }

    /// Moves finished windows from the front of the plan to `ready`.
    fn collect_ready(&mut self) {
        while let Some(entry) = self.windows.first_entry() {
            if !matches!(entry.get().state, State::Done(_)) {
                break;
            }
            let (start, w) = entry.remove_entry();
            let State::Done(result) = w.state else {
                unreachable!("checked above")
            };
            self.waiting -= 1;
            if self.schema.is_none() && !result.schema.is_empty() {
                self.schema = Some(result.schema.clone());
            }
            let mut rows = result.rows;
            sort_by_timestamp(&mut rows);
            self.progress.windows_done += 1;
            self.progress.rows += rows.len() as u64;
            if result.truncated {
                self.progress.truncated_windows += 1;
            }
            self.ready.push_back(WindowRows {
                start,
                end: w.end,
                schema: self.schema.clone().unwrap_or(result.schema),
                rows,
                truncated: result.truncated,
            });
        }
    }
}

/// The instant that halves `[start, end)`, strictly inside it: whole milliseconds from
/// `start` when the window is 2 ms or wider (so bound queries stay short), else whole
/// 100 ns ticks. `None` for a window narrower than two ticks: its halves could not be told
/// apart in a bound query.
fn midpoint(start: SystemTime, end: SystemTime) -> Option<SystemTime> {
    let half = end.duration_since(start).ok()? / 2;
    [1_000_000, TICK.subsec_nanos()]
        .into_iter()
        .find_map(|grain| {
            let floor = Duration::new(half.as_secs(), half.subsec_nanos() / grain * grain);
            // 0 < floor <= half < span: strictly inside.
            (!floor.is_zero()).then(|| start + floor)
        })
}

/// Turns the user's query into a template over `_start` and `_end`: the one rule that
/// binds a query to a time range, for ranged hunts and for
/// [`HuntRequest::scoped`](crate::hunting::HuntRequest::scoped) alike.
///
/// - A query that names both placeholders is kept as it is.
/// - Leading comments and `let`, `set` and `declare` statements are kept as they are;
///   the rule applies to the tabular expression after them.
/// - That expression starting with a table name gets the filter after the name (a
///   let-bound name too: it must then have a `Timestamp` column); starting with
///   `union`, the filter goes after the union's operands (before its first `|`).
/// - Anything else is refused with what to write instead: `search` (its default scope
///   is every table, each window would scan them all: name the tables), `find`,
///   `print`, `range`, `datatable`, `evaluate` (no table's `Timestamp` to filter).
pub(crate) fn bind_template(query: &str) -> Result<String, RangeError> {
    const FILTER: &str = "| where Timestamp >= _start and Timestamp < _end";
    let q = query.trim();
    if names_window(q) {
        return Ok(q.to_owned());
    }
    let (head, body) = q.split_at(statements_end(q));
    let word_end = body
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(body.len());
    let first = &body[..word_end];
    match first {
        "union" => {
            let at = top_level(body, b'|').unwrap_or(body.len());
            // A newline, not a space: the operands may end in a `//` comment.
            let tail = &body[at..];
            let sep = if tail.is_empty() { "" } else { "\n" };
            Ok(format!(
                "{head}{}\n{FILTER}{sep}{tail}",
                body[..at].trim_end()
            ))
        }
        "search" | "find" | "print" | "range" | "datatable" | "evaluate" | "let" | "set"
        | "declare" => Err(RangeError::Unscopable {
            operator: first.to_owned(),
        }),
        _ if first.is_empty() || first.as_bytes()[0].is_ascii_digit() => {
            Err(RangeError::NeedsPlaceholders)
        }
        _ => Ok(format!("{head}{first} {FILTER}{}", &body[word_end..])),
    }
}

/// Where the leading comments and `let`/`set`/`declare` statements of `q` end.
fn statements_end(q: &str) -> usize {
    let mut at = 0;
    loop {
        let rest = &q[at..];
        let trimmed = rest.trim_start();
        at += rest.len() - trimmed.len();
        if trimmed.starts_with("//") {
            at += trimmed.find('\n').map_or(trimmed.len(), |n| n + 1);
            continue;
        }
        let word = trimmed
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .next()
            .unwrap_or("");
        if !matches!(word, "let" | "set" | "declare") {
            return at;
        }
        match top_level(trimmed, b';') {
            Some(semi) => at += semi + 1,
            // An unterminated statement: the caller refuses it by its first word.
            None => return at,
        }
    }
}

/// The first `byte` of `s` outside strings, comments and brackets.
fn top_level(s: &str, byte: u8) -> Option<usize> {
    let b = s.as_bytes();
    let (mut i, mut depth) = (0usize, 0usize);
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            q @ (b'"' | b'\'') => {
                // `@"..."` is verbatim: no escapes (a doubled quote reads as two strings).
                let verbatim = i > 0 && b[i - 1] == b'@';
                i += 1;
                while i < b.len() && b[i] != q {
                    i += if b[i] == b'\\' && !verbatim { 2 } else { 1 };
                }
            }
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            c if c == byte && depth == 0 => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Whether the query names both placeholders, `_start` and `_end`.
pub(crate) fn names_window(q: &str) -> bool {
    names(q, "_start") && names(q, "_end")
}

fn names(q: &str, ident: &str) -> bool {
    q.match_indices(ident).any(|(i, _)| {
        let before = q[..i].chars().next_back();
        let after = q[i + ident.len()..].chars().next();
        let word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        !word(before) && !word(after)
    })
}

pub(crate) fn bind(template: &str, start: SystemTime, end: SystemTime) -> String {
    format!(
        "let _start = datetime({}); let _end = datetime({});\n{template}",
        format_rfc3339(start),
        format_rfc3339(end)
    )
}

fn sort_by_timestamp(rows: &mut [Row]) {
    let key = |r: &Row| {
        r.get("Timestamp")
            .and_then(|v| v.as_str())
            .and_then(parse_rfc3339)
    };
    if rows.iter().any(|r| r.contains_key("Timestamp")) {
        rows.sort_by_key(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    fn rows(n: usize) -> HuntResult {
        HuntResult {
            rows: vec![Row::new(); n],
            ..HuntResult::default()
        }
    }

    #[test]
    fn templates() {
        assert_eq!(
            bind_template("DeviceEvents | take 1").unwrap(),
            "DeviceEvents | where Timestamp >= _start and Timestamp < _end | take 1"
        );
        let own = "T | where Timestamp between (_start .. _end)";
        assert_eq!(bind_template(own).unwrap(), own);
        // Leading comments and `let` statements (with `;` and `|` inside strings,
        // brackets and comments) stay before the table the filter follows.
        let q = "// recent logons\nlet who = \"a;b|c\"; let f = (x:long) { let y = x; y };\nDeviceLogonEvents | where AccountName == who";
        assert_eq!(
            bind_template(q).unwrap(),
            "// recent logons\nlet who = \"a;b|c\"; let f = (x:long) { let y = x; y };\nDeviceLogonEvents | where Timestamp >= _start and Timestamp < _end | where AccountName == who"
        );
        assert_eq!(
            bind_template("let s = @'C:\\'; // ; |\nT").unwrap(),
            "let s = @'C:\\'; // ; |\nT | where Timestamp >= _start and Timestamp < _end"
        );
        // A union: after its operands, on a line of its own (an operand may end in a
        // comment).
        assert_eq!(
            bind_template("union A, (B | where x == '|') // two\n| take 1").unwrap(),
            "union A, (B | where x == '|') // two\n| where Timestamp >= _start and Timestamp < _end\n| take 1"
        );
        assert_eq!(
            bind_template("union A, B").unwrap(),
            "union A, B\n| where Timestamp >= _start and Timestamp < _end"
        );
        for (q, op) in [
            ("search \"x\"", "search"),
            ("// c\nprint 1", "print"),
            ("let x = 1", "let"),
            ("let x = 1; find \"y\"", "find"),
        ] {
            assert_eq!(
                bind_template(q),
                Err(RangeError::Unscopable {
                    operator: op.into()
                }),
                "{q}"
            );
        }
        let search = bind_template("search \"x\"").unwrap_err().to_string();
        assert!(search.contains("union T1, T2 | search"), "{search}");
        assert_eq!(
            bind_template("let x = 1;"),
            Err(RangeError::NeedsPlaceholders)
        );
        assert_eq!(
            bind_template("| take 1"),
            Err(RangeError::NeedsPlaceholders)
        );
        assert!(!names("my_start_end", "_start"));
    }

    #[test]
    fn lookback_is_clamped_or_refused() {
        let now = t(100 * 86_400);
        let from = now - Duration::from_secs(45 * 86_400);
        let (plan, warning) = RangePlan::new("T", from, now, RangeOptions::default(), now).unwrap();
        let w = warning.unwrap();
        assert_eq!(
            w.used,
            now - Duration::from_secs(30 * 86_400) + Duration::from_secs(60)
        );
        assert_eq!(plan.windows()[0].0, w.used);
        let refuse = RangeOptions {
            on_lookback: Lookback::Refuse,
            ..RangeOptions::default()
        };
        assert!(matches!(
            RangePlan::new("T", from, now, refuse, now),
            Err(RangeError::BeforeLookback { .. })
        ));
        let old_end = now - Duration::from_secs(40 * 86_400);
        assert!(matches!(
            RangePlan::new("T", from, old_end, RangeOptions::default(), now),
            Err(RangeError::NoData)
        ));
        assert!(matches!(
            RangePlan::new("T", now, now, RangeOptions::default(), now),
            Err(RangeError::Empty)
        ));
    }

    #[test]
    fn bisects_at_the_cap_and_hands_out_in_order() {
        let opts = RangeOptions {
            row_cap: 10,
            concurrency: 4,
            ..RangeOptions::default()
        };
        let (mut p, _) = RangePlan::new("T", t(0), t(1000), opts, t(1000)).unwrap();
        let w = p.poll_window().unwrap();
        p.handle_result(w.start, Ok(rows(10))).unwrap();
        assert_eq!(p.progress().splits, 1);
        let a = p.poll_window().unwrap();
        let b = p.poll_window().unwrap();
        assert_eq!(
            (a.start, a.end, b.start, b.end),
            (t(0), t(500), t(500), t(1000))
        );
        // The later window finishes first; nothing is handed out before the earlier one.
        p.handle_result(b.start, Ok(rows(3))).unwrap();
        assert!(p.poll_rows().is_none());
        p.handle_result(a.start, Ok(rows(4))).unwrap();
        assert_eq!(p.poll_rows().unwrap().rows.len(), 4);
        assert_eq!(p.poll_rows().unwrap().rows.len(), 3);
        assert!(p.is_done());
        assert_eq!(p.progress().rows, 7);
    }

    #[test]
    fn stops_at_the_minimum_span() {
        let opts = RangeOptions {
            row_cap: 1,
            min_span: Duration::from_secs(400),
            ..RangeOptions::default()
        };
        let (mut p, _) = RangePlan::new("T", t(0), t(1000), opts, t(1000)).unwrap();
        let mut handed = Vec::new();
        while !p.is_done() {
            while let Some(w) = p.poll_window() {
                p.handle_result(w.start, Ok(rows(1))).unwrap();
            }
            while let Some(r) = p.poll_rows() {
                handed.push(r);
            }
        }
        assert_eq!(
            handed.len(),
            2,
            "1000 s bisected once; 500 s halves are below twice the minimum"
        );
        assert!(handed.iter().all(|w| w.truncated));
        assert_eq!(p.progress().truncated_windows, 2);
    }

    #[test]
    fn errors_end_the_hunt_and_too_large_splits() {
        let (mut p, _) =
            RangePlan::new("T", t(0), t(100), RangeOptions::default(), t(100)).unwrap();
        let w = p.poll_window().unwrap();
        p.handle_result(w.start, Err(Error::ResultTooLarge(Default::default())))
            .unwrap();
        assert_eq!(p.progress().splits, 1);
        let w = p.poll_window().unwrap();
        assert!(p.handle_result(w.start, Err(Error::Cancelled)).is_err());
    }

    #[test]
    fn a_preempted_window_splits_like_a_too_large_one() {
        let (mut p, _) =
            RangePlan::new("T", t(0), t(100), RangeOptions::default(), t(100)).unwrap();
        let w = p.poll_window().unwrap();
        p.handle_result(w.start, Err(Error::Preempted(Default::default())))
            .unwrap();
        assert_eq!(p.progress().splits, 1);
    }

    #[test]
    fn split_parses() {
        assert_eq!("auto".parse(), Ok(Split::Auto));
        assert_eq!("1d".parse(), Ok(Split::Every(Duration::from_secs(86_400))));
        assert!("0s".parse::<Split>().is_err());
        assert!("sometimes".parse::<Split>().is_err());
    }
}
