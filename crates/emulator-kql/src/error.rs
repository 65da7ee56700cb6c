//! The error type.

/// Why a query was rejected. The `Display` text is modelled on the real service's
/// messages; the emulator wraps it in a 400 `BadRequest` error envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KqlError {
    /// The text could not be parsed (or uses syntax this subset does not know).
    /// `line` is 1-based, `column` is the 1-based character position in that line.
    #[error("Query could not be parsed at '{token}' on line [{line},{column}]{}", hint_suffix(.hint))]
    Syntax {
        /// The offending token text (empty at the end of the query).
        token: String,
        /// 1-based line.
        line: u32,
        /// 1-based column (characters).
        column: u32,
        /// What was expected or is unsupported (may be empty).
        hint: String,
    },
    /// The pipeline source is not a known table.
    #[error("Failed to resolve table or column expression named '{0}'")]
    UnknownTable(String),
    /// A name in an expression is neither a column nor a `let` binding.
    #[error("'{operator}' operator: Failed to resolve scalar expression named '{name}'")]
    UnknownColumn {
        /// The operator the expression belongs to (`where`, `project`, ...).
        operator: String,
        /// The unresolved name.
        name: String,
    },
    /// A function this subset does not know.
    #[error("Unknown function: '{0}'.")]
    UnknownFunction(String),
    /// A type or usage error found while binding the query (e.g. comparing a string
    /// with a number).
    #[error("Semantic error: {0}")]
    Semantic(String),
    /// Valid KQL that this emulator does not implement: the limit is the emulator's,
    /// not the query's (the real service may well run it).
    #[error(
        "'{feature}' is valid KQL but not supported by this emulator (line [{line},{column}])"
    )]
    NotSupported {
        /// The operator, function or form, e.g. `mv-apply` or `make_series()`.
        feature: String,
        /// 1-based line where it appears.
        line: u32,
        /// 1-based column (characters).
        column: u32,
    },
    /// Expressions nest deeper than the evaluator allows.
    #[error("Query could not be parsed: the expression nesting exceeds {0} levels")]
    TooDeep(u32),
    /// The query went over one of the [`QueryLimits`](crate::QueryLimits) while it was
    /// evaluated; the message is the service's (see [`PREEMPTED`](crate::PREEMPTED)).
    #[error("{}", crate::PREEMPTED)]
    LimitExceeded(crate::Limit),
}

fn hint_suffix(hint: &str) -> String {
    if hint.is_empty() {
        String::new()
    } else {
        format!(" ({hint})")
    }
}
