//! Tokenizer and recursive-descent parser for the KQL subset.

use crate::error::KqlError;
use crate::value::DataType;
use crate::value::{parse_datetime, parse_timespan_text, scale_timespan, timespan_unit, Value};

/// The default maximum expression nesting (parser recursion and tree depth), see
/// [`QueryLimits::max_nesting`](crate::QueryLimits::max_nesting).
pub const MAX_DEPTH: u32 = 100;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    Ident(String),
    Str(String),
    Int(i64),
    Real(f64),
    /// `None`: `timespan(null)`.
    TimeSpan(Option<i64>),
    /// `datetime(...)` with its parsed value (`None` for `datetime(null)`).
    DateTime(Option<i64>),
    Op(&'static str),
    Eof,
}

#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub tok: Tok,
    pub start: usize,
    pub end: usize,
}

const OPS: [&str; 26] = [
    "==", "!=", "<=", ">=", "=~", "!~", "..", "|", ",", "(", ")", ";", "=", "<", ">", "+", "-",
    "*", "/", "%", "[", "]", ".", "{", "}", ":",
];

/// Characters that are not Unicode white space but that editors and copy-paste leave
/// at the start of a query (a byte-order mark, zero-width spaces and joiners): skipped.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{feff}' | '\u{200b}'..='\u{200d}' | '\u{2060}')
}

/// Hyphenated operator names joined into one identifier.
const HYPHENATED: [&str; 12] = [
    "project-away",
    "sample-distinct",
    "top-nested",
    "top-hitters",
    "parse-kv",
    "project-rename",
    "project-keep",
    "project-reorder",
    "mv-expand",
    "mv-apply",
    "make-series",
    "parse-where",
];

/// `!`-prefixed word operators.
const NEGATED_WORDS: [&str; 12] = [
    "contains",
    "contains_cs",
    "has",
    "has_cs",
    "startswith",
    "startswith_cs",
    "endswith",
    "endswith_cs",
    "in",
    "between",
    "hasprefix",
    "hassuffix",
];

pub(crate) struct Src<'a> {
    pub text: &'a str,
}

impl Src<'_> {
    /// The 1-based line and column (in characters) of byte `start`, and the text of the
    /// token at `start..end` (at most 60 characters).
    fn locate(&self, start: usize, end: usize) -> (u32, u32, String) {
        let mut start = start.min(self.text.len());
        while !self.text.is_char_boundary(start) {
            start -= 1;
        }
        let mut end = end.clamp(start, self.text.len());
        while !self.text.is_char_boundary(end) {
            end += 1;
        }
        let before = &self.text[..start];
        let line = before.matches('\n').count() as u32 + 1;
        let line_start = before.rfind('\n').map_or(0, |p| p + 1);
        let column = self.text[line_start..start].chars().count() as u32 + 1;
        let token: String = self.text[start..end].chars().take(60).collect();
        (line, column, token)
    }

    pub fn error_at(&self, start: usize, end: usize, hint: impl Into<String>) -> KqlError {
        let (line, column, token) = self.locate(start, end);
        KqlError::Syntax {
            token,
            line,
            column,
            hint: hint.into(),
        }
    }

    /// Valid KQL at `start..end` that the emulator does not implement.
    pub fn unsupported(&self, start: usize, end: usize, feature: impl Into<String>) -> KqlError {
        let (line, column, _) = self.locate(start, end);
        KqlError::NotSupported {
            feature: feature.into(),
            line,
            column,
        }
    }
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == '$'
}
fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

pub(crate) fn lex(src: &Src<'_>) -> Result<Vec<Token>, KqlError> {
    let text = src.text;
    let b = text.as_bytes();
    let mut toks = Vec::new();
    let mut i = 0usize;
    let char_at = |i: usize| text[i..].chars().next().unwrap_or('\0');
    while i < b.len() {
        let c = char_at(i);
        if c.is_whitespace() || is_invisible(c) {
            i += c.len_utf8();
            continue;
        }
        if text[i..].starts_with("//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        let start = i;
        // Strings, including verbatim @'..' / @".."
        if c == '"' || c == '\'' || (c == '@' && matches!(b.get(i + 1), Some(b'"' | b'\''))) {
            let verbatim = c == '@';
            if verbatim {
                i += 1;
            }
            let q = b[i];
            i += 1;
            let mut s = String::new();
            loop {
                let Some(ch) = text[i..].chars().next() else {
                    return Err(src.error_at(start, text.len(), "unterminated string literal"));
                };
                i += ch.len_utf8();
                if ch as u32 == u32::from(q) {
                    if verbatim && b.get(i) == Some(&q) {
                        s.push(ch);
                        i += 1;
                        continue;
                    }
                    break;
                }
                if ch == '\n' {
                    return Err(src.error_at(start, i, "unterminated string literal"));
                }
                if ch == '\\' && !verbatim {
                    let backslash = i - 1;
                    let Some(e) = text[i..].chars().next() else {
                        return Err(src.error_at(start, text.len(), "unterminated string literal"));
                    };
                    i += e.len_utf8();
                    s.push(match e {
                        'n' => '\n',
                        't' => '\t',
                        'r' => '\r',
                        '0' => '\0',
                        '\\' | '\'' | '"' => e,
                        _ => return Err(src.error_at(backslash, i, "unknown escape sequence")),
                    });
                    continue;
                }
                s.push(ch);
            }
            toks.push(Token {
                tok: Tok::Str(s),
                start,
                end: i,
            });
            continue;
        }
        if c.is_ascii_digit() {
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            let mut real = false;
            if b.get(i) == Some(&b'.') && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
                real = true;
                i += 1;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
            }
            if matches!(b.get(i), Some(b'e' | b'E'))
                && (b.get(i + 1).is_some_and(u8::is_ascii_digit)
                    || (matches!(b.get(i + 1), Some(b'+' | b'-'))
                        && b.get(i + 2).is_some_and(u8::is_ascii_digit)))
            {
                real = true;
                i += 2;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
            }
            let num_end = i;
            while i < b.len() && is_ident_char(b[i] as char) {
                i += 1;
            }
            let num = &text[start..num_end];
            let unit = &text[num_end..i];
            let tok = if unit.is_empty() {
                if real {
                    num.parse::<f64>().ok().map(Tok::Real)
                } else {
                    num.parse::<i64>().ok().map(Tok::Int)
                }
            } else if num.contains(['e', 'E']) {
                None
            } else {
                timespan_unit(unit)
                    .and_then(|u| scale_timespan(num, u))
                    .map(|t| Tok::TimeSpan(Some(t)))
            };
            let Some(tok) = tok else {
                return Err(src.error_at(start, i, "invalid numeric or timespan literal"));
            };
            toks.push(Token { tok, start, end: i });
            continue;
        }
        if is_ident_start(c) || (c == '!' && b.get(i + 1).is_some_and(|x| x.is_ascii_alphabetic()))
        {
            i += 1;
            while i < b.len() && is_ident_char(b[i] as char) {
                i += 1;
            }
            // hyphenated operator names
            if b.get(i) == Some(&b'-') {
                let mut j = i + 1;
                while j < b.len() && is_ident_char(b[j] as char) {
                    j += 1;
                }
                if HYPHENATED.contains(&&text[start..j]) {
                    i = j;
                }
            }
            let mut word = text[start..i].to_string();
            if (word == "in" || word == "!in") && b.get(i) == Some(&b'~') {
                i += 1;
                word.push('~');
            }
            if let Some(w) = word.strip_prefix('!') {
                if !NEGATED_WORDS.contains(&w.trim_end_matches('~')) {
                    return Err(src.error_at(start, i, ""));
                }
            }
            // datetime(...) / timespan(...) take raw text.
            if word == "datetime" || word == "timespan" || word == "time" {
                let mut j = i;
                while j < b.len() && (b[j] == b' ' || b[j] == b'\t') {
                    j += 1;
                }
                if b.get(j) == Some(&b'(') {
                    let Some(close) = text[j..].find(')') else {
                        return Err(src.error_at(start, text.len(), "missing ')'"));
                    };
                    let inner = &text[j + 1..j + close];
                    let end = j + close + 1;
                    let tok = if word == "datetime" {
                        if inner.trim() == "null" {
                            Some(Tok::DateTime(None))
                        } else {
                            parse_datetime(inner).map(|t| Tok::DateTime(Some(t)))
                        }
                    } else {
                        if inner.trim() == "null" {
                            Some(Tok::TimeSpan(None))
                        } else {
                            parse_timespan_text(inner).map(|t| Tok::TimeSpan(Some(t)))
                        }
                    };
                    let Some(tok) = tok else {
                        return Err(src.error_at(
                            j + 1,
                            j + close,
                            format!("invalid {word} literal"),
                        ));
                    };
                    toks.push(Token { tok, start, end });
                    i = end;
                    continue;
                }
            }
            toks.push(Token {
                tok: Tok::Ident(word),
                start,
                end: i,
            });
            continue;
        }
        if let Some(op) = OPS.iter().find(|op| text[i..].starts_with(**op)) {
            i += op.len();
            toks.push(Token {
                tok: Tok::Op(op),
                start,
                end: i,
            });
            continue;
        }
        return Err(src.error_at(start, start + c.len_utf8(), ""));
    }
    toks.push(Token {
        tok: Tok::Eof,
        start: text.len(),
        end: text.len(),
    });
    Ok(toks)
}

// ---------------------------------------------------------------------------------------
// AST

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StrOp {
    Contains,
    Has,
    StartsWith,
    EndsWith,
    HasPrefix,
    HasSuffix,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    EqCi,
    NeCi,
    And,
    Or,
    Str {
        op: StrOp,
        negated: bool,
        cs: bool,
    },
    /// `matches regex`
    Matches,
}

impl BinOp {
    pub fn text(self) -> String {
        match self {
            BinOp::Add => "+".into(),
            BinOp::Sub => "-".into(),
            BinOp::Mul => "*".into(),
            BinOp::Div => "/".into(),
            BinOp::Mod => "%".into(),
            BinOp::Eq => "==".into(),
            BinOp::Ne => "!=".into(),
            BinOp::Lt => "<".into(),
            BinOp::Le => "<=".into(),
            BinOp::Gt => ">".into(),
            BinOp::Ge => ">=".into(),
            BinOp::EqCi => "=~".into(),
            BinOp::NeCi => "!~".into(),
            BinOp::And => "and".into(),
            BinOp::Or => "or".into(),
            BinOp::Matches => "matches regex".into(),
            BinOp::Str { op, negated, cs } => {
                let base = match op {
                    StrOp::Contains => "contains",
                    StrOp::Has => "has",
                    StrOp::StartsWith => "startswith",
                    StrOp::EndsWith => "endswith",
                    StrOp::HasPrefix => "hasprefix",
                    StrOp::HasSuffix => "hassuffix",
                };
                format!(
                    "{}{base}{}",
                    if negated { "!" } else { "" },
                    if cs { "_cs" } else { "" }
                )
            }
        }
    }
}

/// The operators that take a parenthesised list: `in`, `in~`, `has_any`, `has_all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListOp {
    In { ci: bool },
    HasAny,
    HasAll,
}

#[derive(Debug, Clone)]
pub(crate) struct Ast {
    pub kind: AstKind,
    /// Byte span in the query text.
    pub start: usize,
    pub end: usize,
    /// Height of this tree.
    pub depth: u32,
}

#[derive(Debug, Clone)]
pub(crate) enum AstKind {
    Name(String),
    Lit(Value, DataType),
    Neg(Box<Ast>),
    Binary(BinOp, Box<Ast>, Box<Ast>),
    In {
        expr: Box<Ast>,
        list: Vec<Ast>,
        op: ListOp,
        negated: bool,
    },
    Between {
        expr: Box<Ast>,
        lo: Box<Ast>,
        hi: Box<Ast>,
        negated: bool,
    },
    Call(String, Vec<Ast>),
    /// `x.y` (the key as a string literal) and `x[i]`, `x["y"]`.
    Index(Box<Ast>, Box<Ast>),
    /// `typeof(T)`, an argument of `extract()` and `mv-expand ... to`.
    TypeOf(DataType),
    /// `*` as an argument (`arg_max(Timestamp, *)`).
    Star,
    /// A tabular expression where a scalar is expected: `in (T | ...)`, `toscalar(...)`.
    Tabular(Box<TabExpr>),
}

/// `[name =] expr`
#[derive(Debug, Clone)]
pub(crate) struct Item {
    pub name: Option<String>,
    pub expr: Ast,
}

#[derive(Debug, Clone)]
pub(crate) struct SortKey {
    pub expr: Ast,
    pub asc: bool,
    pub nulls_first: Option<bool>,
}

/// The kinds of `join` (`innerunique` is the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JoinKind {
    InnerUnique,
    Inner,
    LeftOuter,
    RightOuter,
    FullOuter,
    LeftAnti,
    RightAnti,
    LeftSemi,
    RightSemi,
}

impl JoinKind {
    fn from_name(s: &str) -> Option<JoinKind> {
        Some(match s {
            "innerunique" => JoinKind::InnerUnique,
            "inner" => JoinKind::Inner,
            "leftouter" => JoinKind::LeftOuter,
            "rightouter" => JoinKind::RightOuter,
            "fullouter" | "outer" => JoinKind::FullOuter,
            "leftanti" | "anti" | "leftantisemi" => JoinKind::LeftAnti,
            "rightanti" | "rightantisemi" => JoinKind::RightAnti,
            "leftsemi" | "semi" => JoinKind::LeftSemi,
            "rightsemi" => JoinKind::RightSemi,
            _ => return None,
        })
    }
}

/// One `on` condition of a join: the left and right column names.
#[derive(Debug, Clone)]
pub(crate) struct JoinKey {
    pub left: String,
    pub right: String,
    pub start: usize,
    pub end: usize,
}

/// `union [withsource=Name] T1, (T2 | ...), Device*Events`.
#[derive(Debug, Clone)]
pub(crate) struct Union {
    pub with_source: Option<String>,
    /// `kind=inner`: only the columns every input has.
    pub inner: bool,
    /// `Source::Name` items may hold `*` wildcards.
    pub items: Vec<TabExpr>,
    /// `search`/`find`: a predicate applied to each input before the union; an input
    /// without the columns it names is left out, and so is one left with no rows.
    pub filter: Option<Ast>,
}

/// One piece of a `parse` pattern.
#[derive(Debug, Clone)]
pub(crate) enum ParsePart {
    Lit(String),
    Star,
    Col(String, DataType),
}

/// One column of `mv-expand`: `[name =] expr [to typeof(T)]`.
#[derive(Debug, Clone)]
pub(crate) struct ExpandItem {
    pub name: Option<String>,
    pub expr: Ast,
    pub to: Option<DataType>,
}

#[derive(Debug, Clone)]
pub(crate) enum OpKind {
    Where(Ast),
    Project(Vec<Item>),
    /// Column names or `*` patterns (`Initiating*`).
    ProjectAway(Vec<(String, usize, usize)>),
    /// `project-reorder` (false) and `project-keep` (true): names or `*` patterns.
    ProjectPick(Vec<(String, usize, usize)>, bool),
    ProjectRename(Vec<(String, String, usize, usize)>),
    Extend(Vec<Item>),
    Take(Ast),
    Top(Ast, Vec<SortKey>),
    Sort(Vec<SortKey>),
    Summarize {
        aggs: Vec<Item>,
        by: Vec<Item>,
    },
    Count,
    Distinct(Vec<Item>),
    Join {
        kind: JoinKind,
        right: Box<TabExpr>,
        on: Vec<JoinKey>,
    },
    Union(Union),
    MvExpand {
        items: Vec<ExpandItem>,
        limit: Option<Ast>,
    },
    Parse {
        expr: Ast,
        pattern: Vec<ParsePart>,
    },
    /// `render` only shapes a chart in the portal: the rows pass unchanged.
    Render,
    /// `invoke Name(args)`: an enrichment function applied to the rows.
    Invoke {
        name: String,
        args: Vec<Ast>,
        start: usize,
        end: usize,
    },
    /// `lookup kind=leftouter|inner (right) on ...`: a join that keeps the left rows
    /// and does not repeat the right key columns.
    Lookup {
        kind: JoinKind,
        right: Box<TabExpr>,
        on: Vec<JoinKey>,
    },
    MakeSeries(Box<MakeSeries>),
    /// `evaluate plugin(args)` (a plugin of `PLUGINS`).
    Evaluate {
        name: String,
        args: Vec<Ast>,
        start: usize,
        end: usize,
    },
}

/// `make-series`: one array per aggregation and group, one element per `step` of the
/// axis from `from` (inclusive) to `to` (exclusive).
#[derive(Debug, Clone)]
pub(crate) struct MakeSeries {
    /// The aggregations and their `default =` (0 when absent).
    pub aggs: Vec<(Item, Option<Ast>)>,
    pub axis: Ast,
    pub from: Option<Ast>,
    pub to: Option<Ast>,
    pub step: Ast,
    pub by: Vec<Item>,
    /// `kind=nonempty`: an empty input still gives one series of defaults (without `by`).
    pub nonempty: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct Operator {
    pub name: String,
    pub kind: OpKind,
}

/// Where a tabular expression's rows come from.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// A table, a tabular `let` or a function without arguments; in a `union` it may
    /// hold `*` wildcards.
    Name {
        name: String,
        start: usize,
        end: usize,
    },
    /// A user function called with arguments.
    Call {
        name: String,
        args: Vec<Ast>,
        start: usize,
        end: usize,
    },
    Union(Union),
    Print(Vec<Item>),
    Paren(Box<TabExpr>),
    /// `range Name from a to b step s`: one column of the values `a, a+s, ...` up to
    /// `b` inclusive.
    Range {
        name: String,
        from: Ast,
        to: Ast,
        step: Ast,
    },
    /// `datatable (a: T, ...) [v, ...]` and `externaldata (a: T, ...) [url, ...]`
    /// (`external`: the values are the URLs, never fetched).
    Data {
        cols: Vec<(String, DataType)>,
        values: Vec<Ast>,
        external: bool,
        start: usize,
        end: usize,
    },
}

/// A source followed by `|`-separated operators.
#[derive(Debug, Clone)]
pub(crate) struct TabExpr {
    pub source: Source,
    pub ops: Vec<Operator>,
}

/// One parameter of a user function: `name: type [= default]`, or `T: (*)` (tabular).
#[derive(Debug, Clone)]
pub(crate) struct Param {
    pub name: String,
    pub tabular: bool,
    pub default: Option<Ast>,
}

/// `let f = (params) { [let ...;] body };`
#[derive(Debug, Clone)]
pub(crate) struct FuncDef {
    pub params: Vec<Param>,
    pub lets: Vec<Let>,
    pub body: LetRhs,
}

/// The right-hand side of a `let` (and a function body). A scalar expression that is
/// only a name or a call may still be tabular (a table, a tabular `let`): the evaluator
/// decides, knowing the names in scope.
#[derive(Debug, Clone)]
pub(crate) enum LetRhs {
    Expr(Ast),
    Tabular(TabExpr),
    Func(std::rc::Rc<FuncDef>),
}

#[derive(Debug, Clone)]
pub(crate) struct Let {
    pub name: String,
    pub rhs: LetRhs,
}

#[derive(Debug, Clone)]
pub(crate) struct Query {
    pub lets: Vec<Let>,
    pub body: TabExpr,
    /// Pipeline operators in the whole query (every tabular expression counted).
    pub operators: usize,
}

/// The type named in `typeof(...)`, a `parse` column or a function parameter.
pub(crate) fn type_named(s: &str) -> Option<DataType> {
    Some(match s {
        "string" | "guid" => DataType::String,
        "long" => DataType::Long,
        "int" => DataType::Int,
        "real" | "double" | "decimal" => DataType::Real,
        "bool" | "boolean" => DataType::Bool,
        "datetime" | "date" => DataType::DateTime,
        "timespan" | "time" => DataType::TimeSpan,
        "dynamic" => DataType::Dynamic,
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------
// Parser

pub(crate) struct Parser<'a> {
    src: &'a Src<'a>,
    toks: Vec<Token>,
    pos: usize,
    depth: u32,
    max_depth: u32,
    operators: usize,
}

/// Query operators that are valid KQL but that the emulator does not run.
const UNSUPPORTED_OPS: [&str; 18] = [
    "parse-where",
    "parse-kv",
    "mv-apply",
    "as",
    "sample",
    "sample-distinct",
    "search",
    "find",
    "fork",
    "facet",
    "getschema",
    "top-nested",
    "top-hitters",
    "scan",
    "partition",
    "reduce",
    "consume",
    "externaldata",
];

/// Tabular sources that are valid KQL but that the emulator does not run.
const UNSUPPORTED_SOURCES: [&str; 4] = ["find", "search", "evaluate", "cluster"];

/// The `evaluate` plugins the emulator runs; any other is valid KQL it does not.
const PLUGINS: [&str; 1] = ["bag_unpack"];

/// The `name=value` parameters operators take (besides `hint.*`); any other `name =`
/// is a column assignment.
const OP_PARAMS: [&str; 8] = [
    "kind",
    "withsource",
    "isfuzzy",
    "bagexpansion",
    "with_itemindex",
    "flags",
    "decodeblocks",
    "bin_legacy",
];

type PResult<T> = Result<T, KqlError>;

impl<'a> Parser<'a> {
    /// A parser of `src` that refuses expressions nested deeper than `max_depth`.
    pub fn new(src: &'a Src<'a>, max_depth: u32) -> PResult<Parser<'a>> {
        Ok(Parser {
            src,
            toks: lex(src)?,
            pos: 0,
            depth: 0,
            max_depth,
            operators: 0,
        })
    }

    fn peek(&self) -> &Tok {
        &self.toks[self.pos].tok
    }
    fn peek_at(&self, k: usize) -> &Tok {
        &self.toks[(self.pos + k).min(self.toks.len() - 1)].tok
    }
    fn tok(&self) -> &Token {
        &self.toks[self.pos]
    }
    fn bump(&mut self) -> Token {
        let t = self.toks[self.pos].clone();
        if self.pos + 1 < self.toks.len() {
            self.pos += 1;
        }
        t
    }
    fn prev_end(&self) -> usize {
        if self.pos == 0 {
            0
        } else {
            self.toks[self.pos - 1].end
        }
    }
    fn err(&self, hint: impl Into<String>) -> KqlError {
        let t = self.tok();
        self.src.error_at(t.start, t.end, hint)
    }
    fn unsupported(&self, feature: impl Into<String>) -> KqlError {
        let t = self.tok();
        self.src.unsupported(t.start, t.end, feature)
    }
    fn is_op(&self, op: &str) -> bool {
        matches!(self.peek(), Tok::Op(o) if *o == op)
    }
    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Tok::Ident(s) if s == w)
    }
    fn expect_op(&mut self, op: &str) -> PResult<()> {
        if self.is_op(op) {
            self.bump();
            Ok(())
        } else {
            Err(self.err(format!("expected '{op}'")))
        }
    }
    fn expect_word(&mut self, w: &str) -> PResult<()> {
        if self.is_word(w) {
            self.bump();
            Ok(())
        } else {
            Err(self.err(format!("expected '{w}'")))
        }
    }
    fn ident(&mut self, what: &str) -> PResult<(String, usize, usize)> {
        match self.peek().clone() {
            Tok::Ident(s) if !s.starts_with('!') => {
                let t = self.bump();
                Ok((s, t.start, t.end))
            }
            // `['Column Name']`
            Tok::Op("[") if matches!(self.peek_at(1), Tok::Str(_)) => {
                let start = self.bump().start;
                let Tok::Str(s) = self.bump().tok else {
                    return Err(self.err(format!("expected {what}")));
                };
                self.expect_op("]")?;
                Ok((s, start, self.prev_end()))
            }
            _ => Err(self.err(format!("expected {what}"))),
        }
    }
    /// A column name or a pattern with `*` (`Initiating*`, `*Id`, `*`), with an
    /// optional `asc`/`desc` (of `project-reorder`, accepted and ignored).
    fn column_pattern(&mut self) -> PResult<(String, usize, usize)> {
        if matches!(self.peek(), Tok::Op("[")) {
            return self.ident("a column name");
        }
        let start = self.tok().start;
        let mut name = String::new();
        let mut end = start;
        while matches!(self.peek(), Tok::Ident(s) if !s.starts_with('!')) || self.is_op("*") {
            if !name.is_empty() && self.tok().start != end {
                break;
            }
            let t = self.bump();
            end = t.end;
            match t.tok {
                Tok::Ident(s) => name.push_str(&s),
                _ => name.push('*'),
            }
        }
        if name.is_empty() {
            return Err(self.err("expected a column name".to_string()));
        }
        if matches!(self.peek(), Tok::Ident(s) if s == "asc" || s == "desc") {
            self.bump();
        }
        Ok((name, start, end))
    }
    fn enter(&mut self) -> PResult<()> {
        self.depth += 1;
        if self.depth > self.max_depth {
            return Err(KqlError::TooDeep(self.max_depth));
        }
        Ok(())
    }

    /// Whether the tokens from here to the end of this expression (a `,`, `;` or closing
    /// bracket at this level) contain a `|` at this level: a tabular expression.
    fn looks_tabular(&self) -> bool {
        let mut depth = 0i32;
        for t in &self.toks[self.pos..] {
            match &t.tok {
                Tok::Op("(" | "[" | "{") => depth += 1,
                Tok::Op(")" | "]" | "}") => {
                    if depth == 0 {
                        return false;
                    }
                    depth -= 1;
                }
                Tok::Op("," | ";") if depth == 0 => return false,
                Tok::Op("|") if depth == 0 => return true,
                Tok::Eof => return false,
                _ => {}
            }
        }
        false
    }

    pub fn parse_query(&mut self) -> PResult<Query> {
        let lets = self.lets()?;
        if matches!(self.peek(), Tok::Eof) && !lets.is_empty() {
            return Err(self.err("expected a tabular expression after the let statements"));
        }
        let body = self.tabular()?;
        while self.is_op(";") {
            self.bump();
        }
        if !matches!(self.peek(), Tok::Eof) {
            return Err(self.err(""));
        }
        Ok(Query {
            lets,
            body,
            operators: self.operators,
        })
    }

    /// `let name = ...;` statements.
    fn lets(&mut self) -> PResult<Vec<Let>> {
        let mut lets = Vec::new();
        while self.is_word("let") {
            self.bump();
            let (name, _, _) = self.ident("a name after 'let'")?;
            self.expect_op("=")?;
            let rhs = if self.is_function_def() {
                LetRhs::Func(std::rc::Rc::new(self.function_def()?))
            } else {
                self.let_rhs()?
            };
            self.expect_op(";")?;
            lets.push(Let { name, rhs });
        }
        Ok(lets)
    }

    fn let_rhs(&mut self) -> PResult<LetRhs> {
        if self.looks_tabular() {
            return Ok(LetRhs::Tabular(self.tabular()?));
        }
        let data = matches!(self.peek(), Tok::Ident(w) if w == "datatable" || w == "externaldata")
            && matches!(self.peek_at(1), Tok::Op("("));
        if data || matches!(self.peek(), Tok::Ident(w) if w == "union" || w == "print") {
            return Ok(LetRhs::Tabular(self.tabular()?));
        }
        let e = self.expr()?;
        Ok(match e.kind {
            AstKind::Tabular(t) => LetRhs::Tabular(*t),
            _ => LetRhs::Expr(e),
        })
    }

    /// `(` followed by `)` `{`, or by `name :`.
    fn is_function_def(&self) -> bool {
        self.is_op("(")
            && matches!(
                (self.peek_at(1), self.peek_at(2)),
                (Tok::Op(")"), Tok::Op("{")) | (Tok::Ident(_), Tok::Op(":"))
            )
    }

    fn function_def(&mut self) -> PResult<FuncDef> {
        self.expect_op("(")?;
        let mut params = Vec::new();
        while !self.is_op(")") {
            let (name, _, _) = self.ident("a parameter name")?;
            self.expect_op(":")?;
            let tabular = if self.is_op("(") {
                // A tabular parameter's schema, `(*)` or `(A: string, ...)`: not checked.
                let mut depth = 0;
                loop {
                    match self.bump().tok {
                        Tok::Op("(") => depth += 1,
                        Tok::Op(")") => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        Tok::Eof => return Err(self.err("expected ')'")),
                        _ => {}
                    }
                }
                true
            } else {
                let (ty, _, _) = self.ident("a type")?;
                if type_named(&ty).is_none() {
                    self.pos -= 1;
                    return Err(self.err("unknown type"));
                }
                false
            };
            let default = if self.is_op("=") {
                self.bump();
                Some(self.expr()?)
            } else {
                None
            };
            params.push(Param {
                name,
                tabular,
                default,
            });
            if !self.is_op(",") {
                break;
            }
            self.bump();
        }
        self.expect_op(")")?;
        self.expect_op("{")?;
        let lets = self.lets()?;
        let body = self.let_rhs()?;
        while self.is_op(";") {
            self.bump();
        }
        self.expect_op("}")?;
        Ok(FuncDef { params, lets, body })
    }

    /// A source and its `|` operators.
    fn tabular(&mut self) -> PResult<TabExpr> {
        self.enter()?;
        let r = self.tabular_inner();
        self.depth -= 1;
        r
    }

    fn tabular_inner(&mut self) -> PResult<TabExpr> {
        let source = self.source()?;
        let mut ops = Vec::new();
        while self.is_op("|") {
            self.bump();
            ops.push(self.operator()?);
        }
        Ok(TabExpr { source, ops })
    }

    fn source(&mut self) -> PResult<Source> {
        let t = self.tok().clone();
        match t.tok {
            Tok::Op("(") => {
                self.bump();
                let inner = self.tabular()?;
                self.expect_op(")")?;
                Ok(Source::Paren(Box::new(inner)))
            }
            Tok::Ident(ref w) if w == "union" => {
                self.bump();
                Ok(Source::Union(self.union_body()?))
            }
            Tok::Ident(ref w) if w == "print" => {
                self.bump();
                Ok(Source::Print(self.items()?))
            }
            Tok::Ident(ref w)
                if (w == "datatable" || w == "externaldata")
                    && matches!(self.peek_at(1), Tok::Op("(")) =>
            {
                let external = w == "externaldata";
                self.bump();
                self.expect_op("(")?;
                let mut cols = Vec::new();
                loop {
                    let (name, _, _) = self.ident("a column name")?;
                    self.expect_op(":")?;
                    let (ty, s, e) = self.ident("a type")?;
                    let Some(ty) = type_named(&ty) else {
                        return Err(self.src.error_at(s, e, "unknown type"));
                    };
                    cols.push((name, ty));
                    if !self.is_op(",") {
                        break;
                    }
                    self.bump();
                }
                self.expect_op(")")?;
                self.expect_op("[")?;
                let mut values = Vec::new();
                while !self.is_op("]") {
                    values.push(self.expr()?);
                    if !self.is_op(",") {
                        break;
                    }
                    self.bump();
                }
                self.expect_op("]")?;
                // `with (format = "csv", ...)`: accepted, not used.
                if external && matches!(self.peek(), Tok::Ident(w) if w == "with") {
                    self.bump();
                    self.expect_op("(")?;
                    let mut depth = 1;
                    while depth > 0 {
                        match self.peek() {
                            Tok::Eof => return Err(self.err("expected ')'")),
                            Tok::Op("(") => depth += 1,
                            Tok::Op(")") => depth -= 1,
                            _ => {}
                        }
                        self.bump();
                    }
                }
                Ok(Source::Data {
                    cols,
                    values,
                    external,
                    start: t.start,
                    end: self.prev_end(),
                })
            }
            Tok::Ident(ref w) if w == "range" && matches!(self.peek_at(1), Tok::Ident(_)) => {
                self.bump();
                let (name, _, _) = self.ident("a column name")?;
                self.expect_word("from")?;
                let from = self.expr()?;
                self.expect_word("to")?;
                let to = self.expr()?;
                self.expect_word("step")?;
                let step = self.expr()?;
                Ok(Source::Range {
                    name,
                    from,
                    to,
                    step,
                })
            }
            Tok::Ident(ref w) if w == "search" || w == "find" => {
                let find = w == "find";
                self.bump();
                self.search_or_find(find)
            }
            Tok::Ident(ref w) if UNSUPPORTED_SOURCES.contains(&w.as_str()) => {
                Err(self.unsupported(w.clone()))
            }
            Tok::Ident(ref w) if w == "materialize" && matches!(self.peek_at(1), Tok::Op("(")) => {
                self.bump();
                self.bump();
                let inner = self.tabular()?;
                self.expect_op(")")?;
                Ok(Source::Paren(Box::new(inner)))
            }
            Tok::Ident(ref w) if !w.starts_with('!') && matches!(self.peek_at(1), Tok::Op("(")) => {
                let name = w.clone();
                self.bump();
                let args = self.call_args()?;
                Ok(Source::Call {
                    name,
                    args,
                    start: t.start,
                    end: self.prev_end(),
                })
            }
            Tok::Ident(_) | Tok::Op("[") => {
                let (name, start, end) = self.ident("a table name")?;
                Ok(Source::Name { name, start, end })
            }
            _ => Err(self.err("expected a table name")),
        }
    }

    /// `name = value` parameters of `join`, `union`, `mv-expand`, `parse` (`kind=inner`,
    /// `hint.strategy=shuffle`, `withsource=T`), names lower-cased with their values.
    fn op_params(&mut self) -> PResult<Vec<(String, String, usize, usize)>> {
        let mut out = Vec::new();
        while let Tok::Ident(first) = self.peek().clone() {
            let lower = first.to_ascii_lowercase();
            if !OP_PARAMS.contains(&lower.as_str()) && lower != "hint" {
                break;
            }
            // `a.b.c =`: count the dotted name's tokens before the `=`.
            let mut k = 1;
            while matches!(self.peek_at(k), Tok::Op("."))
                && matches!(self.peek_at(k + 1), Tok::Ident(_))
            {
                k += 2;
            }
            if !matches!(self.peek_at(k), Tok::Op("=")) {
                break;
            }
            let start = self.tok().start;
            let mut name = first.to_ascii_lowercase();
            self.bump();
            while self.is_op(".") {
                self.bump();
                if let Tok::Ident(s) = self.bump().tok {
                    name.push('.');
                    name.push_str(&s.to_ascii_lowercase());
                }
            }
            self.expect_op("=")?;
            let v = self.bump();
            let value = match v.tok {
                Tok::Ident(s) | Tok::Str(s) => s,
                Tok::Int(i) => i.to_string(),
                _ => return Err(self.src.error_at(v.start, v.end, "expected a value")),
            };
            out.push((name, value, start, v.end));
        }
        Ok(out)
    }

    /// `search [kind=...] [in (T, ...)] "term" | predicate` and
    /// `find [withsource=C] [in (T, ...)] where predicate [project c, ...]`: a union of
    /// the tables (every table when no `in`) filtered by the predicate, with the table's
    /// name in `$table` (`search`) or `source_` (`find`). A bare string searches every
    /// string column with `has`.
    fn search_or_find(&mut self, find: bool) -> PResult<Source> {
        let mut with_source = if find { "source_" } else { "$table" }.to_string();
        for (name, value, _, _) in self.op_params()? {
            if name == "withsource" && find {
                with_source = value;
            }
        }
        let mut items = Vec::new();
        if matches!(self.peek(), Tok::Ident(w) if w == "in")
            && matches!(self.peek_at(1), Tok::Op("("))
        {
            self.bump();
            self.bump();
            loop {
                let (name, start, end) = self.column_pattern()?;
                items.push(TabExpr {
                    source: Source::Name { name, start, end },
                    ops: Vec::new(),
                });
                if !self.is_op(",") {
                    break;
                }
                self.bump();
            }
            self.expect_op(")")?;
        } else {
            let t = self.tok().clone();
            items.push(TabExpr {
                source: Source::Name {
                    name: "*".to_string(),
                    start: t.start,
                    end: t.end,
                },
                ops: Vec::new(),
            });
        }
        if find {
            self.expect_word("where")?;
        }
        let pred = self.expr()?;
        let pred = match pred.kind {
            AstKind::Lit(Value::Str(_), _) => Ast {
                kind: AstKind::Call("__search_has".to_string(), vec![pred.clone()]),
                depth: pred.depth + 1,
                ..pred
            },
            _ => pred,
        };
        let union = Union {
            with_source: Some(with_source.clone()),
            inner: false,
            items,
            filter: Some(pred),
        };
        if find && matches!(self.peek(), Tok::Ident(w) if w == "project") {
            self.bump();
            let mut items = vec![Item {
                name: None,
                expr: Ast {
                    kind: AstKind::Name(with_source),
                    start: 0,
                    end: 0,
                    depth: 1,
                },
            }];
            items.extend(self.items()?);
            return Ok(Source::Paren(Box::new(TabExpr {
                source: Source::Union(union),
                ops: vec![Operator {
                    name: "project".to_string(),
                    kind: OpKind::Project(items),
                }],
            })));
        }
        Ok(Source::Union(union))
    }

    fn union_body(&mut self) -> PResult<Union> {
        let mut u = Union {
            with_source: None,
            inner: false,
            items: Vec::new(),
            filter: None,
        };
        for (name, value, s, e) in self.op_params()? {
            match name.as_str() {
                "withsource" => u.with_source = Some(value),
                "kind" if value == "inner" => u.inner = true,
                "kind" if value == "outer" => {}
                "kind" => return Err(self.src.error_at(s, e, "expected 'inner' or 'outer'")),
                _ => {}
            }
        }
        loop {
            let item = if self.is_op("(") {
                self.bump();
                let t = self.tabular()?;
                self.expect_op(")")?;
                t
            } else {
                // A name, possibly with `*` wildcards: adjacent identifier and `*` tokens.
                let start = self.tok().start;
                let mut name = String::new();
                let mut end = start;
                while matches!(self.peek(), Tok::Ident(_) | Tok::Op("*"))
                    && (name.is_empty() || self.tok().start == end)
                {
                    let t = self.bump();
                    match t.tok {
                        Tok::Ident(s) => name.push_str(&s),
                        _ => name.push('*'),
                    }
                    end = t.end;
                }
                if name.is_empty() {
                    return Err(self.err("expected a table name"));
                }
                TabExpr {
                    source: Source::Name { name, start, end },
                    ops: Vec::new(),
                }
            };
            u.items.push(item);
            if !self.is_op(",") {
                break;
            }
            self.bump();
        }
        Ok(u)
    }

    fn operator(&mut self) -> PResult<Operator> {
        let (name, _, _) = match self.peek() {
            Tok::Ident(_) => self.ident("an operator")?,
            _ => return Err(self.err("expected a query operator")),
        };
        self.operators += 1;
        let kind = match name.as_str() {
            "where" | "filter" => OpKind::Where(self.expr()?),
            "project" => OpKind::Project(self.items()?),
            "extend" => OpKind::Extend(self.items()?),
            "serialize" => OpKind::Extend(if self.is_op("|") || matches!(self.peek(), Tok::Eof) {
                Vec::new()
            } else {
                self.items()?
            }),
            "project-away" | "project-reorder" | "project-keep" => {
                let mut v = vec![self.column_pattern()?];
                while self.is_op(",") {
                    self.bump();
                    v.push(self.column_pattern()?);
                }
                match name.as_str() {
                    "project-away" => OpKind::ProjectAway(v),
                    n => OpKind::ProjectPick(v, n == "project-keep"),
                }
            }
            "project-rename" => {
                let mut v = Vec::new();
                loop {
                    let (new, _, _) = self.ident("a column name")?;
                    self.expect_op("=")?;
                    let (old, s, e) = self.ident("a column name")?;
                    v.push((new, old, s, e));
                    if !self.is_op(",") {
                        break;
                    }
                    self.bump();
                }
                OpKind::ProjectRename(v)
            }
            "take" | "limit" => OpKind::Take(self.expr()?),
            "top" => {
                let n = self.expr()?;
                self.expect_word("by")?;
                OpKind::Top(n, self.sort_keys()?)
            }
            "sort" | "order" => {
                self.expect_word("by")?;
                OpKind::Sort(self.sort_keys()?)
            }
            "summarize" => {
                self.op_params()?;
                let aggs = if self.is_word("by") {
                    Vec::new()
                } else {
                    self.items()?
                };
                let by = if self.is_word("by") {
                    self.bump();
                    self.items()?
                } else {
                    Vec::new()
                };
                if aggs.is_empty() && by.is_empty() {
                    return Err(self.err("expected an aggregation or 'by'"));
                }
                OpKind::Summarize { aggs, by }
            }
            "count" => OpKind::Count,
            "distinct" => OpKind::Distinct(self.items()?),
            "join" => self.join(false)?,
            "lookup" => self.join(true)?,
            "make-series" => self.make_series()?,
            "evaluate" => self.evaluate()?,
            "union" => OpKind::Union(self.union_body()?),
            // `mvexpand`: the old spelling, still in published hunts.
            "mv-expand" | "mvexpand" => self.mv_expand()?,
            "parse" => self.parse_op()?,
            "invoke" => {
                let (name, start, _) = self.ident("a function name")?;
                let args = self.call_args()?;
                OpKind::Invoke {
                    name,
                    args,
                    start,
                    end: self.prev_end(),
                }
            }
            "render" => {
                // Visualisation arguments: skipped up to the next operator.
                let mut depth = 0i32;
                loop {
                    match self.peek() {
                        Tok::Eof => break,
                        Tok::Op("|" | ";" | ")") if depth <= 0 => break,
                        Tok::Op("(") => depth += 1,
                        Tok::Op(")") => depth -= 1,
                        _ => {}
                    }
                    self.bump();
                }
                OpKind::Render
            }
            other if UNSUPPORTED_OPS.contains(&other) => {
                self.pos -= 1;
                return Err(self.unsupported(other));
            }
            _ => {
                self.pos -= 1;
                return Err(self.err("unknown query operator"));
            }
        };
        Ok(Operator { name, kind })
    }

    /// `join` and (`lookup` true) `lookup`, which takes only the kinds `leftouter` (its
    /// default) and `inner`.
    fn join(&mut self, lookup: bool) -> PResult<OpKind> {
        let mut kind = if lookup {
            JoinKind::LeftOuter
        } else {
            JoinKind::InnerUnique
        };
        for (name, value, s, e) in self.op_params()? {
            if name == "kind" {
                kind = match JoinKind::from_name(&value) {
                    Some(k @ (JoinKind::LeftOuter | JoinKind::Inner)) if lookup => k,
                    _ if lookup => {
                        return Err(self.src.error_at(s, e, "expected 'leftouter' or 'inner'"))
                    }
                    k => k.ok_or_else(|| self.src.error_at(s, e, "unknown join kind"))?,
                };
            }
            // `hint.*` and the rest change how the service runs a join, not its result.
        }
        let right = if self.is_op("(") {
            self.bump();
            let t = self.tabular()?;
            self.expect_op(")")?;
            t
        } else {
            TabExpr {
                source: self.source()?,
                ops: Vec::new(),
            }
        };
        if self.is_word("where") {
            return Err(self.unsupported("join ... where"));
        }
        self.expect_word("on")?;
        let mut on = Vec::new();
        loop {
            let e = self.expr()?;
            on.push(self.join_key(&e)?);
            if !self.is_op(",") {
                break;
            }
            self.bump();
        }
        let right = Box::new(right);
        Ok(if lookup {
            OpKind::Lookup { kind, right, on }
        } else {
            OpKind::Join { kind, right, on }
        })
    }

    /// `make-series [kind=nonempty] [Col =] Agg [default = v], ... on Axis
    /// (from a] [to b] step s | in range(a, b, s)) [by ...]`.
    fn make_series(&mut self) -> PResult<OpKind> {
        let mut nonempty = false;
        for (name, value, s, e) in self.op_params()? {
            if name == "kind" {
                if value != "nonempty" {
                    return Err(self.src.error_at(s, e, "expected 'nonempty'"));
                }
                nonempty = true;
            }
        }
        let mut aggs = Vec::new();
        loop {
            let item = self.item()?;
            let default = if self.is_word("default") && matches!(self.peek_at(1), Tok::Op("=")) {
                self.bump();
                self.bump();
                Some(self.expr()?)
            } else {
                None
            };
            aggs.push((item, default));
            if !self.is_op(",") {
                break;
            }
            self.bump();
        }
        self.expect_word("on")?;
        // `on Col in range(...)`: `in` there is not the list operator.
        let axis = if matches!(self.peek_at(1), Tok::Ident(w) if w == "in")
            && matches!(self.peek_at(2), Tok::Ident(w) if w == "range")
        {
            let (name, start, end) = self.ident("a column name")?;
            Ast {
                kind: AstKind::Name(name),
                start,
                end,
                depth: 1,
            }
        } else {
            self.expr()?
        };
        let (mut from, mut to) = (None, None);
        let step;
        if self.is_word("in") && matches!(self.peek_at(1), Tok::Ident(w) if w == "range") {
            self.bump();
            self.bump();
            self.expect_op("(")?;
            from = Some(self.expr()?);
            self.expect_op(",")?;
            to = Some(self.expr()?);
            self.expect_op(",")?;
            step = self.expr()?;
            self.expect_op(")")?;
        } else {
            if self.is_word("from") {
                self.bump();
                from = Some(self.expr()?);
            }
            if self.is_word("to") {
                self.bump();
                to = Some(self.expr()?);
            }
            self.expect_word("step")?;
            step = self.expr()?;
        }
        let by = if self.is_word("by") {
            self.bump();
            self.items()?
        } else {
            Vec::new()
        };
        Ok(OpKind::MakeSeries(Box::new(MakeSeries {
            aggs,
            axis,
            from,
            to,
            step,
            by,
            nonempty,
        })))
    }

    /// `evaluate [hint.* = ...] plugin(args)`: the plugins of [`PLUGINS`]; any other
    /// is valid KQL that the emulator does not run.
    fn evaluate(&mut self) -> PResult<OpKind> {
        self.op_params()?;
        let (name, start, end) = self.ident("a plugin name")?;
        if !self.is_op("(") {
            return Err(self.err("expected '('"));
        }
        if !PLUGINS.contains(&name.as_str()) {
            return Err(self
                .src
                .unsupported(start, end, format!("evaluate {name}()")));
        }
        let args = self.call_args()?;
        Ok(OpKind::Evaluate {
            name,
            args,
            start,
            end: self.prev_end(),
        })
    }

    /// `Col`, or `$left.A == $right.B` (either side first).
    fn join_key(&self, e: &Ast) -> PResult<JoinKey> {
        let side = |a: &Ast| -> Option<(bool, String)> {
            let AstKind::Index(base, key) = &a.kind else {
                return None;
            };
            let (AstKind::Name(b), AstKind::Lit(Value::Str(k), _)) = (&base.kind, &key.kind) else {
                return None;
            };
            match b.as_str() {
                "$left" => Some((true, k.to_string())),
                "$right" => Some((false, k.to_string())),
                _ => None,
            }
        };
        let (left, right) = match &e.kind {
            AstKind::Name(n) => (n.clone(), n.clone()),
            AstKind::Binary(BinOp::Eq, a, b) => match (side(a), side(b)) {
                (Some((true, l)), Some((false, r))) | (Some((false, r)), Some((true, l))) => (l, r),
                _ => {
                    return Err(self.src.error_at(
                        e.start,
                        e.end,
                        "expected '$left.Column == $right.Column'",
                    ))
                }
            },
            _ => {
                return Err(self.src.error_at(
                    e.start,
                    e.end,
                    "expected a column name or '$left.Column == $right.Column'",
                ))
            }
        };
        Ok(JoinKey {
            left,
            right,
            start: e.start,
            end: e.end,
        })
    }

    fn type_of(&mut self) -> PResult<DataType> {
        self.expect_word("typeof")?;
        self.expect_op("(")?;
        let (t, s, e) = self.ident("a type")?;
        let ty = type_named(&t).ok_or_else(|| self.src.error_at(s, e, "unknown type"))?;
        self.expect_op(")")?;
        Ok(ty)
    }

    fn mv_expand(&mut self) -> PResult<OpKind> {
        for (name, value, s, e) in self.op_params()? {
            match (name.as_str(), value.as_str()) {
                ("bagexpansion", "bag") | ("kind", "bag") => {}
                ("bagexpansion" | "kind" | "with_itemindex", _) => {
                    return Err(self
                        .src
                        .unsupported(s, e, format!("mv-expand {name}={value}")))
                }
                _ => {}
            }
        }
        let mut items = Vec::new();
        loop {
            let name = match (self.peek(), self.peek_at(1)) {
                (Tok::Ident(s), Tok::Op("=")) => {
                    let s = s.clone();
                    self.bump();
                    self.bump();
                    Some(s)
                }
                _ => None,
            };
            let expr = self.expr()?;
            let to = if self.is_word("to") {
                self.bump();
                Some(self.type_of()?)
            } else {
                None
            };
            items.push(ExpandItem { name, expr, to });
            if !self.is_op(",") {
                break;
            }
            self.bump();
        }
        let limit = if self.is_word("limit") {
            self.bump();
            Some(self.expr()?)
        } else {
            None
        };
        Ok(OpKind::MvExpand { items, limit })
    }

    fn parse_op(&mut self) -> PResult<OpKind> {
        for (name, value, s, e) in self.op_params()? {
            if name == "kind" && value != "simple" && value != "relaxed" {
                return Err(self.src.unsupported(s, e, format!("parse kind={value}")));
            }
        }
        let expr = self.expr()?;
        self.expect_word("with")?;
        let mut pattern = Vec::new();
        loop {
            match self.peek().clone() {
                Tok::Str(s) => {
                    self.bump();
                    pattern.push(ParsePart::Lit(s));
                }
                Tok::Op("*") => {
                    self.bump();
                    pattern.push(ParsePart::Star);
                }
                Tok::Ident(_) | Tok::Op("[") => {
                    let (name, _, _) = self.ident("a column name")?;
                    let ty = if self.is_op(":") {
                        self.bump();
                        let (t, s, e) = self.ident("a type")?;
                        type_named(&t).ok_or_else(|| self.src.error_at(s, e, "unknown type"))?
                    } else {
                        DataType::String
                    };
                    pattern.push(ParsePart::Col(name, ty));
                }
                _ => break,
            }
        }
        if pattern.is_empty() {
            return Err(self.err("expected a parse pattern"));
        }
        Ok(OpKind::Parse { expr, pattern })
    }

    fn items(&mut self) -> PResult<Vec<Item>> {
        let mut v = vec![self.item()?];
        while self.is_op(",") {
            self.bump();
            v.push(self.item()?);
        }
        Ok(v)
    }

    /// `[name =] expr`.
    fn item(&mut self) -> PResult<Item> {
        let name = match (self.peek(), self.peek_at(1)) {
            (Tok::Ident(s), Tok::Op("=")) if !s.starts_with('!') => {
                let s = s.clone();
                self.bump();
                self.bump();
                Some(s)
            }
            // `(A, B) = arg_max(...)` is not supported; `['a b'] = x` is.
            (Tok::Op("["), Tok::Str(_)) if matches!(self.peek_at(3), Tok::Op("=")) => {
                let (s, _, _) = self.ident("a column name")?;
                self.bump();
                Some(s)
            }
            _ => None,
        };
        let expr = self.expr()?;
        Ok(Item { name, expr })
    }

    fn sort_keys(&mut self) -> PResult<Vec<SortKey>> {
        let mut v = Vec::new();
        loop {
            let expr = self.expr()?;
            let mut asc = false;
            if self.is_word("asc") {
                asc = true;
                self.bump();
            } else if self.is_word("desc") {
                self.bump();
            }
            let mut nulls_first = None;
            if self.is_word("nulls") {
                self.bump();
                if self.is_word("first") {
                    nulls_first = Some(true);
                } else if self.is_word("last") {
                    nulls_first = Some(false);
                } else {
                    return Err(self.err("expected 'first' or 'last'"));
                }
                self.bump();
            }
            v.push(SortKey {
                expr,
                asc,
                nulls_first,
            });
            if !self.is_op(",") {
                break;
            }
            self.bump();
        }
        Ok(v)
    }

    // ---- expressions -------------------------------------------------------------------

    fn node(&self, kind: AstKind, start: usize, children: &[&Ast]) -> PResult<Ast> {
        let depth = 1 + children.iter().map(|c| c.depth).max().unwrap_or(0);
        if depth > self.max_depth {
            return Err(KqlError::TooDeep(self.max_depth));
        }
        Ok(Ast {
            kind,
            start,
            end: self.prev_end(),
            depth,
        })
    }

    pub fn expr(&mut self) -> PResult<Ast> {
        self.enter()?;
        let r = self.or_expr();
        self.depth -= 1;
        r
    }

    fn or_expr(&mut self) -> PResult<Ast> {
        let mut l = self.and_expr()?;
        while self.is_word("or") {
            self.bump();
            let r = self.and_expr()?;
            let start = l.start;
            l = self.binary(BinOp::Or, l, r, start)?;
        }
        Ok(l)
    }

    fn and_expr(&mut self) -> PResult<Ast> {
        let mut l = self.cmp_expr()?;
        while self.is_word("and") {
            self.bump();
            let r = self.cmp_expr()?;
            let start = l.start;
            l = self.binary(BinOp::And, l, r, start)?;
        }
        Ok(l)
    }

    fn binary(&self, op: BinOp, l: Ast, r: Ast, start: usize) -> PResult<Ast> {
        let depth = 1 + l.depth.max(r.depth);
        if depth > self.max_depth {
            return Err(KqlError::TooDeep(self.max_depth));
        }
        Ok(Ast {
            kind: AstKind::Binary(op, Box::new(l), Box::new(r)),
            start,
            end: self.prev_end(),
            depth,
        })
    }

    fn cmp_op(&self) -> Option<BinOp> {
        match self.peek() {
            Tok::Op(o) => Some(match *o {
                "==" => BinOp::Eq,
                "!=" => BinOp::Ne,
                "<" => BinOp::Lt,
                "<=" => BinOp::Le,
                ">" => BinOp::Gt,
                ">=" => BinOp::Ge,
                "=~" => BinOp::EqCi,
                "!~" => BinOp::NeCi,
                _ => return None,
            }),
            Tok::Ident(w) => {
                let (negated, w) = match w.strip_prefix('!') {
                    Some(rest) => (true, rest),
                    None => (false, w.as_str()),
                };
                let (base, cs) = match w.strip_suffix("_cs") {
                    Some(b) => (b, true),
                    None => (w, false),
                };
                let op = match base {
                    "contains" => StrOp::Contains,
                    "has" => StrOp::Has,
                    "startswith" => StrOp::StartsWith,
                    "endswith" => StrOp::EndsWith,
                    "hasprefix" if !cs => StrOp::HasPrefix,
                    "hassuffix" if !cs => StrOp::HasSuffix,
                    _ => return None,
                };
                Some(BinOp::Str { op, negated, cs })
            }
            _ => None,
        }
    }

    /// A parenthesised, comma-separated list of expressions (a tabular expression is
    /// allowed as an item: `in (T | project X)`).
    fn list(&mut self) -> PResult<Vec<Ast>> {
        self.expect_op("(")?;
        let mut list = Vec::new();
        if !self.is_op(")") {
            loop {
                list.push(self.list_item()?);
                if !self.is_op(",") {
                    break;
                }
                self.bump();
            }
        }
        self.expect_op(")")?;
        Ok(list)
    }

    fn list_item(&mut self) -> PResult<Ast> {
        if self.looks_tabular() {
            let start = self.tok().start;
            let t = self.tabular()?;
            return Ok(Ast {
                kind: AstKind::Tabular(Box::new(t)),
                start,
                end: self.prev_end(),
                depth: 1,
            });
        }
        if self.is_op("*") && matches!(self.peek_at(1), Tok::Op(")" | ",")) {
            let t = self.bump();
            return Ok(Ast {
                kind: AstKind::Star,
                start: t.start,
                end: t.end,
                depth: 1,
            });
        }
        self.expr()
    }

    fn cmp_expr(&mut self) -> PResult<Ast> {
        let mut l = self.add_expr()?;
        loop {
            let start = l.start;
            if let Some(op) = self.cmp_op() {
                self.bump();
                let r = self.add_expr()?;
                l = self.binary(op, l, r, start)?;
                continue;
            }
            let word = match self.peek() {
                Tok::Ident(w) => w.clone(),
                _ => break,
            };
            let list_op = match word.as_str() {
                "in" | "!in" => Some(ListOp::In { ci: false }),
                "in~" | "!in~" => Some(ListOp::In { ci: true }),
                "has_any" => Some(ListOp::HasAny),
                "has_all" => Some(ListOp::HasAll),
                _ => None,
            };
            if let Some(op) = list_op {
                self.bump();
                let list = self.list()?;
                let depth = 1 + list.iter().map(|a| a.depth).max().unwrap_or(0).max(l.depth);
                if depth > self.max_depth {
                    return Err(KqlError::TooDeep(self.max_depth));
                }
                l = Ast {
                    kind: AstKind::In {
                        expr: Box::new(l),
                        list,
                        op,
                        negated: word.starts_with('!'),
                    },
                    start,
                    end: self.prev_end(),
                    depth,
                };
                continue;
            }
            match word.as_str() {
                "matches" if matches!(self.peek_at(1), Tok::Ident(r) if r == "regex") => {
                    self.bump();
                    self.bump();
                    let r = self.add_expr()?;
                    l = self.binary(BinOp::Matches, l, r, start)?;
                }
                "between" | "!between" => {
                    self.bump();
                    self.expect_op("(")?;
                    let lo = self.expr()?;
                    self.expect_op("..")?;
                    let hi = self.expr()?;
                    self.expect_op(")")?;
                    let depth = 1 + lo.depth.max(hi.depth).max(l.depth);
                    if depth > self.max_depth {
                        return Err(KqlError::TooDeep(self.max_depth));
                    }
                    l = Ast {
                        kind: AstKind::Between {
                            expr: Box::new(l),
                            lo: Box::new(lo),
                            hi: Box::new(hi),
                            negated: word.starts_with('!'),
                        },
                        start,
                        end: self.prev_end(),
                        depth,
                    };
                }
                _ => break,
            }
        }
        Ok(l)
    }

    fn add_expr(&mut self) -> PResult<Ast> {
        let mut l = self.mul_expr()?;
        loop {
            let op = if self.is_op("+") {
                BinOp::Add
            } else if self.is_op("-") {
                BinOp::Sub
            } else {
                break;
            };
            self.bump();
            let r = self.mul_expr()?;
            let start = l.start;
            l = self.binary(op, l, r, start)?;
        }
        Ok(l)
    }

    fn mul_expr(&mut self) -> PResult<Ast> {
        let mut l = self.unary()?;
        loop {
            let op = if self.is_op("*") {
                BinOp::Mul
            } else if self.is_op("/") {
                BinOp::Div
            } else if self.is_op("%") {
                BinOp::Mod
            } else {
                break;
            };
            self.bump();
            let r = self.unary()?;
            let start = l.start;
            l = self.binary(op, l, r, start)?;
        }
        Ok(l)
    }

    fn unary(&mut self) -> PResult<Ast> {
        if self.is_op("-") || self.is_op("+") {
            let neg = self.is_op("-");
            let start = self.tok().start;
            self.bump();
            self.enter()?;
            let inner = self.unary();
            self.depth -= 1;
            let inner = inner?;
            if !neg {
                return Ok(inner);
            }
            // Fold negative numeric literals directly.
            if let AstKind::Lit(v, t) = &inner.kind {
                let folded = match v {
                    Value::Int(i) => i.checked_neg().map(Value::Int),
                    Value::Real(f) => Some(Value::Real(-f)),
                    Value::TimeSpan(x) => x.checked_neg().map(Value::TimeSpan),
                    _ => None,
                };
                if let Some(v) = folded {
                    return Ok(Ast {
                        kind: AstKind::Lit(v, *t),
                        start,
                        end: inner.end,
                        depth: 1,
                    });
                }
            }
            return self.node(AstKind::Neg(Box::new(inner.clone())), start, &[&inner]);
        }
        self.postfix()
    }

    /// A primary followed by `.member` and `[index]` accesses.
    fn postfix(&mut self) -> PResult<Ast> {
        let mut e = self.primary()?;
        loop {
            let start = e.start;
            let key = if self.is_op(".") {
                self.bump();
                let t = self.tok().clone();
                let name = match t.tok {
                    Tok::Ident(s) if !s.starts_with('!') => s,
                    Tok::Op("[") => {
                        // `x.['a b']`
                        let (s, _, _) = self.ident("a member name")?;
                        self.pos -= 1;
                        s
                    }
                    _ => return Err(self.err("expected a member name")),
                };
                self.bump();
                Ast {
                    kind: AstKind::Lit(Value::str(&name), DataType::String),
                    start: t.start,
                    end: t.end,
                    depth: 1,
                }
            } else if self.is_op("[") {
                self.bump();
                let k = self.expr()?;
                self.expect_op("]")?;
                k
            } else {
                break;
            };
            e = self.node(
                AstKind::Index(Box::new(e.clone()), Box::new(key.clone())),
                start,
                &[&e, &key],
            )?;
        }
        Ok(e)
    }

    fn call_args(&mut self) -> PResult<Vec<Ast>> {
        self.list()
    }

    fn primary(&mut self) -> PResult<Ast> {
        let t = self.tok().clone();
        let lit = |v: Value, ty: DataType| Ast {
            kind: AstKind::Lit(v, ty),
            start: t.start,
            end: t.end,
            depth: 1,
        };
        match &t.tok {
            Tok::Str(s) => {
                self.bump();
                Ok(lit(Value::str(s), DataType::String))
            }
            Tok::Int(i) => {
                self.bump();
                Ok(lit(Value::Int(*i), DataType::Long))
            }
            Tok::Real(f) => {
                self.bump();
                Ok(lit(Value::Real(*f), DataType::Real))
            }
            Tok::TimeSpan(x) => {
                self.bump();
                Ok(lit(
                    x.map_or(Value::Null, Value::TimeSpan),
                    DataType::TimeSpan,
                ))
            }
            Tok::DateTime(x) => {
                self.bump();
                Ok(lit(
                    x.map_or(Value::Null, Value::DateTime),
                    DataType::DateTime,
                ))
            }
            Tok::Op("(") => {
                self.bump();
                if self.looks_tabular() {
                    let inner = self.tabular()?;
                    self.expect_op(")")?;
                    return Ok(Ast {
                        kind: AstKind::Tabular(Box::new(inner)),
                        start: t.start,
                        end: self.prev_end(),
                        depth: 1,
                    });
                }
                let e = self.expr()?;
                self.expect_op(")")?;
                Ok(e)
            }
            Tok::Op("[") if matches!(self.peek_at(1), Tok::Str(_)) => {
                let (name, start, end) = self.ident("a column name")?;
                Ok(Ast {
                    kind: AstKind::Name(name),
                    start,
                    end,
                    depth: 1,
                })
            }
            Tok::Ident(w) if !w.starts_with('!') => {
                let w = w.clone();
                self.bump();
                match w.as_str() {
                    "true" => return Ok(lit(Value::Bool(true), DataType::Bool)),
                    "false" => return Ok(lit(Value::Bool(false), DataType::Bool)),
                    "dynamic" if self.is_op("(") => {
                        self.bump();
                        let v = self.json_value()?;
                        self.expect_op(")")?;
                        return Ok(Ast {
                            kind: AstKind::Lit(Value::from_json(v), DataType::Dynamic),
                            start: t.start,
                            end: self.prev_end(),
                            depth: 1,
                        });
                    }
                    "typeof" if self.is_op("(") => {
                        self.pos -= 1;
                        let ty = self.type_of()?;
                        return Ok(Ast {
                            kind: AstKind::TypeOf(ty),
                            start: t.start,
                            end: self.prev_end(),
                            depth: 1,
                        });
                    }
                    _ => {}
                }
                if self.is_op("(") {
                    let args = self.call_args()?;
                    let refs: Vec<&Ast> = args.iter().collect();
                    let depth = 1 + refs.iter().map(|a| a.depth).max().unwrap_or(0);
                    if depth > self.max_depth {
                        return Err(KqlError::TooDeep(self.max_depth));
                    }
                    return Ok(Ast {
                        kind: AstKind::Call(w, args),
                        start: t.start,
                        end: self.prev_end(),
                        depth,
                    });
                }
                Ok(Ast {
                    kind: AstKind::Name(w),
                    start: t.start,
                    end: t.end,
                    depth: 1,
                })
            }
            Tok::Eof => Err(self.err("unexpected end of query")),
            _ => Err(self.err("expected an expression")),
        }
    }

    /// The JSON-like text of a `dynamic(...)` literal: arrays, property bags (keys in
    /// either quote), strings, numbers, `true`, `false`, `null`, datetimes and timespans.
    fn json_value(&mut self) -> PResult<serde_json::Value> {
        use serde_json::Value as J;
        self.enter()?;
        let t = self.bump();
        let v = match t.tok {
            Tok::Op("[") => {
                let mut items = Vec::new();
                while !self.is_op("]") {
                    items.push(self.json_value()?);
                    if !self.is_op(",") {
                        break;
                    }
                    self.bump();
                }
                self.expect_op("]")?;
                J::Array(items)
            }
            Tok::Op("{") => {
                let mut map = serde_json::Map::new();
                while !self.is_op("}") {
                    let k = match self.bump().tok {
                        Tok::Str(s) | Tok::Ident(s) => s,
                        _ => {
                            self.pos -= 1;
                            return Err(self.err("expected a property name"));
                        }
                    };
                    self.expect_op(":")?;
                    map.insert(k, self.json_value()?);
                    if !self.is_op(",") {
                        break;
                    }
                    self.bump();
                }
                self.expect_op("}")?;
                J::Object(map)
            }
            Tok::Str(s) => J::String(s),
            Tok::Int(i) => J::from(i),
            Tok::Real(f) => serde_json::Number::from_f64(f).map_or(J::Null, J::Number),
            Tok::Op("-") => match self.bump().tok {
                Tok::Int(i) => J::from(i.wrapping_neg()),
                Tok::Real(f) => serde_json::Number::from_f64(-f).map_or(J::Null, J::Number),
                _ => {
                    self.pos -= 1;
                    return Err(self.err("expected a number"));
                }
            },
            Tok::Ident(w) if w == "true" => J::Bool(true),
            Tok::Ident(w) if w == "false" => J::Bool(false),
            Tok::Ident(w) if w == "null" => J::Null,
            Tok::DateTime(d) => d.map_or(J::Null, |d| J::String(Value::DateTime(d).to_text())),
            Tok::TimeSpan(x) => x.map_or(J::Null, |x| J::String(Value::TimeSpan(x).to_text())),
            _ => {
                return Err(self
                    .src
                    .error_at(t.start, t.end, "expected a dynamic literal value"))
            }
        };
        self.depth -= 1;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<Tok> {
        lex(&Src { text: s })
            .unwrap()
            .into_iter()
            .map(|t| t.tok)
            .collect()
    }

    #[test]
    fn lexes_operators_and_literals() {
        assert_eq!(
            toks("T | project-away A"),
            vec![
                Tok::Ident("T".into()),
                Tok::Op("|"),
                Tok::Ident("project-away".into()),
                Tok::Ident("A".into()),
                Tok::Eof
            ]
        );
        assert_eq!(
            toks("a !in~ (1) !contains 'x'")[1..3],
            [Tok::Ident("!in~".into()), Tok::Op("(")]
        );
        assert_eq!(toks("1..2")[..3], [Tok::Int(1), Tok::Op(".."), Tok::Int(2)]);
        assert_eq!(toks("1.5h")[0], Tok::TimeSpan(Some(54_000_000_000)));
        assert_eq!(toks("@'a\\b'")[0], Tok::Str("a\\b".into()));
        assert_eq!(toks("\"a\\\"b\"")[0], Tok::Str("a\"b".into()));
        assert_eq!(toks("// c\nx")[0], Tok::Ident("x".into()));
        assert_eq!(
            toks("datetime(1970-01-01 00:00:01)")[0],
            Tok::DateTime(Some(10_000_000))
        );
    }

    #[test]
    fn error_positions() {
        let e = lex(&Src {
            text: "T\n| where x == 'abc",
        })
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "Query could not be parsed at ''abc' on line [2,14] (unterminated string literal)"
        );
        let e = lex(&Src {
            text: "T | where 12abc",
        })
        .unwrap_err();
        assert!(e
            .to_string()
            .starts_with("Query could not be parsed at '12abc' on line [1,11]"));
    }
}
