//! What one query may cost: the limits a hostile query hits before it can exhaust the
//! stack, the memory or the CPU of the process that evaluates it.
//!
//! The real service stops such a query with a 400 whose message is [`PREEMPTED`]; the
//! engine answers [`KqlError::LimitExceeded`](crate::KqlError::LimitExceeded) with the
//! [`Limit`] that was hit, and its `Display` is that same message.

use std::cell::Cell;
use std::time::{Duration, Instant};

use crate::error::KqlError;
use crate::value::Value;

/// The message of the real service for a query over its limits (quoted from a Defender
/// XDR hunting API answer in the Microsoft Tech Community thread "Hunting API error: Query
/// execution has exceeded the allowed limits"; Graph's `runHuntingQuery` answers the same).
pub const PREEMPTED: &str = "Query execution has exceeded the allowed limits. The query execution was preempted. This could possibly be due to high CPU and/or memory resource consumption. Optimize your query by following best practices and try again.";

/// The bounds of one query. Every field is data: the emulator takes them from its builder.
///
/// The service documents none of these numbers except the time (requests run "more than
/// three minutes" time out, Defender XDR; 200 s, Defender for Endpoint); the defaults
/// are the emulator's own, generous for any real hunting query and far below what
/// would hurt the machine the emulator runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryLimits {
    /// Expression nesting: parentheses, operators and calls inside one another
    /// (default [`MAX_DEPTH`](crate::MAX_DEPTH), 100). Deeper is a parse error.
    pub max_nesting: u32,
    /// Pipeline operators (`| where`, `| extend`...) in one query (default 200).
    pub max_operators: usize,
    /// Columns of any intermediate or final result (default 1,000).
    pub max_columns: usize,
    /// Bytes of any string a function produces (`strcat`, `tolower`...; default 1 MiB,
    /// the size at which Kusto truncates a string value on ingestion).
    pub max_string_bytes: usize,
    /// Bytes of values a query materialises: computed columns, sort keys, groups,
    /// distinct counts (default 512 MiB).
    pub max_memory_bytes: usize,
    /// Wall-clock evaluation time, checked every few hundred rows and after every
    /// operator (default 5 s; `None` for no limit).
    pub max_run_time: Option<Duration>,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            max_nesting: crate::MAX_DEPTH,
            max_operators: 200,
            max_columns: 1000,
            max_string_bytes: 1024 * 1024,
            max_memory_bytes: 512 * 1024 * 1024,
            max_run_time: Some(Duration::from_secs(5)),
        }
    }
}

/// Which of the [`QueryLimits`] a query went over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Limit {
    /// [`QueryLimits::max_operators`].
    Operators,
    /// [`QueryLimits::max_columns`].
    Columns,
    /// [`QueryLimits::max_string_bytes`].
    StringLength,
    /// [`QueryLimits::max_memory_bytes`].
    Memory,
    /// [`QueryLimits::max_run_time`].
    RunTime,
}

impl Limit {
    /// A short name (`operators`, `columns`, `string_length`, `memory`, `run_time`).
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Operators => "operators",
            Limit::Columns => "columns",
            Limit::StringLength => "string_length",
            Limit::Memory => "memory",
            Limit::RunTime => "run_time",
        }
    }
}

/// How often (in rows) evaluation looks at the clock.
const ROWS_PER_CLOCK_READ: u32 = 256;

/// The running account of one query against its limits. Evaluation functions take it
/// by shared reference (they cannot return errors per value), so a limit that trips
/// deep inside an expression is recorded here and turned into an error by the loop
/// that drives the rows ([`Budget::row`], [`Budget::status`]).
pub(crate) struct Budget {
    pub limits: QueryLimits,
    started: Instant,
    ticks: Cell<u32>,
    memory: Cell<usize>,
    tripped: Cell<Option<Limit>>,
}

impl Budget {
    pub fn new(limits: QueryLimits) -> Budget {
        Budget {
            limits,
            started: Instant::now(),
            ticks: Cell::new(0),
            memory: Cell::new(0),
            tripped: Cell::new(None),
        }
    }

    /// Records that `limit` was hit (the first one wins).
    pub fn trip(&self, limit: Limit) {
        if self.tripped.get().is_none() {
            self.tripped.set(Some(limit));
        }
    }

    /// Whether a produced string of `len` bytes is allowed; records the trip if not.
    pub fn string_ok(&self, len: usize) -> bool {
        if len > self.limits.max_string_bytes {
            self.trip(Limit::StringLength);
            false
        } else {
            true
        }
    }

    /// Charges materialised bytes.
    pub fn charge(&self, bytes: usize) {
        let m = self.memory.get().saturating_add(bytes);
        self.memory.set(m);
        if m > self.limits.max_memory_bytes {
            self.trip(Limit::Memory);
        }
    }

    /// Reads the clock (and records a trip past the time limit).
    pub fn check_time(&self) {
        if let Some(max) = self.limits.max_run_time {
            if self.started.elapsed() > max {
                self.trip(Limit::RunTime);
            }
        }
    }

    /// Called once per row by every loop over rows: reads the clock every
    /// [`ROWS_PER_CLOCK_READ`] rows, and fails once any limit has tripped.
    #[inline]
    pub fn row(&self) -> Result<(), KqlError> {
        let t = self.ticks.get().wrapping_add(1);
        self.ticks.set(t);
        if t % ROWS_PER_CLOCK_READ == 0 {
            self.check_time();
        }
        self.status()
    }

    /// Fails if any limit has tripped.
    #[inline]
    pub fn status(&self) -> Result<(), KqlError> {
        match self.tripped.get() {
            Some(l) => Err(KqlError::LimitExceeded(l)),
            None => Ok(()),
        }
    }
}

/// What a value costs in memory: the value itself and its string's bytes.
pub(crate) fn value_bytes(v: &Value) -> usize {
    std::mem::size_of::<Value>()
        + match v {
            Value::Str(s) => s.len(),
            Value::Dynamic(j) => crate::dynamic::json_bytes(j),
            _ => 0,
        }
}
