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
    TimeSpan(i64),
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

const OPS: [&str; 22] = [
    "==", "!=", "<=", ">=", "=~", "!~", "..", "|", ",", "(", ")", ";", "=", "<", ">", "+", "-",
    "*", "/", "%", "[", "]",
];

/// Hyphenated operator names joined into one identifier.
const HYPHENATED: [&str; 8] = [
    "project-away",
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
    pub fn error_at(&self, start: usize, end: usize, hint: impl Into<String>) -> KqlError {
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
        KqlError::Syntax {
            token,
            line,
            column,
            hint: hint.into(),
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
        if c.is_whitespace() {
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
                    .map(Tok::TimeSpan)
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
                        parse_timespan_text(inner).map(Tok::TimeSpan)
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
    Str { op: StrOp, negated: bool, cs: bool },
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
        negated: bool,
        ci: bool,
    },
    Between {
        expr: Box<Ast>,
        lo: Box<Ast>,
        hi: Box<Ast>,
        negated: bool,
    },
    Call(String, Vec<Ast>),
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

#[derive(Debug, Clone)]
pub(crate) enum OpKind {
    Where(Ast),
    Project(Vec<Item>),
    ProjectAway(Vec<(String, usize, usize)>),
    ProjectRename(Vec<(String, String, usize, usize)>),
    Extend(Vec<Item>),
    Take(Ast),
    Top(Ast, Vec<SortKey>),
    Sort(Vec<SortKey>),
    Summarize { aggs: Vec<Item>, by: Vec<Item> },
    Count,
    Distinct(Vec<Item>),
}

#[derive(Debug, Clone)]
pub(crate) struct Operator {
    pub name: String,
    pub kind: OpKind,
}

#[derive(Debug, Clone)]
pub(crate) struct Query {
    pub lets: Vec<(String, Ast)>,
    pub table: (String, usize, usize),
    pub ops: Vec<Operator>,
}

// ---------------------------------------------------------------------------------------
// Parser

pub(crate) struct Parser<'a> {
    src: &'a Src<'a>,
    toks: Vec<Token>,
    pos: usize,
    depth: u32,
    max_depth: u32,
}

const UNSUPPORTED_OPS: [&str; 22] = [
    "join",
    "union",
    "lookup",
    "parse",
    "parse-where",
    "mv-expand",
    "mv-apply",
    "make-series",
    "render",
    "evaluate",
    "invoke",
    "as",
    "serialize",
    "sample",
    "sample-distinct",
    "project-keep",
    "project-reorder",
    "search",
    "find",
    "fork",
    "facet",
    "getschema",
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
    fn ident(&mut self, what: &str) -> PResult<(String, usize, usize)> {
        match self.peek().clone() {
            Tok::Ident(s) if !s.starts_with('!') => {
                let t = self.bump();
                Ok((s, t.start, t.end))
            }
            _ => Err(self.err(format!("expected {what}"))),
        }
    }

    pub fn parse_query(&mut self) -> PResult<Query> {
        let mut lets = Vec::new();
        while self.is_word("let") {
            self.bump();
            let (name, _, _) = self.ident("a name after 'let'")?;
            self.expect_op("=")?;
            let e = self.expr()?;
            if !self.is_op(";") {
                return Err(
                    self.err("expected ';' after a let statement (only scalar lets are supported)")
                );
            }
            self.bump();
            lets.push((name, e));
        }
        let table = match self.peek().clone() {
            Tok::Ident(s) if !s.starts_with('!') => {
                let t = self.bump();
                (s, t.start, t.end)
            }
            Tok::Eof if self.pos > 0 => {
                return Err(self.err("expected a tabular expression after the let statements"))
            }
            _ => return Err(self.err("expected a table name")),
        };
        let mut ops = Vec::new();
        while self.is_op("|") {
            self.bump();
            ops.push(self.operator()?);
        }
        while self.is_op(";") {
            self.bump();
        }
        if !matches!(self.peek(), Tok::Eof) {
            return Err(self.err(""));
        }
        Ok(Query { lets, table, ops })
    }

    fn operator(&mut self) -> PResult<Operator> {
        let (name, _, _) = match self.peek() {
            Tok::Ident(_) => self.ident("an operator")?,
            _ => return Err(self.err("expected a query operator")),
        };
        let kind = match name.as_str() {
            "where" | "filter" => OpKind::Where(self.expr()?),
            "project" => OpKind::Project(self.items()?),
            "extend" => OpKind::Extend(self.items()?),
            "project-away" => {
                let mut v = vec![self.ident("a column name")?];
                while self.is_op(",") {
                    self.bump();
                    v.push(self.ident("a column name")?);
                }
                OpKind::ProjectAway(v)
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
                if !self.is_word("by") {
                    return Err(self.err("expected 'by'"));
                }
                self.bump();
                OpKind::Top(n, self.sort_keys()?)
            }
            "sort" | "order" => {
                if !self.is_word("by") {
                    return Err(self.err("expected 'by'"));
                }
                self.bump();
                OpKind::Sort(self.sort_keys()?)
            }
            "summarize" => {
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
            other if UNSUPPORTED_OPS.contains(&other) => {
                self.pos -= 1;
                return Err(self.err(format!(
                    "the '{other}' operator is not supported by the emulator"
                )));
            }
            _ => {
                self.pos -= 1;
                return Err(self.err("unknown query operator"));
            }
        };
        Ok(Operator { name, kind })
    }

    fn items(&mut self) -> PResult<Vec<Item>> {
        let mut v = Vec::new();
        loop {
            let name = match (self.peek(), self.peek_at(1)) {
                (Tok::Ident(s), Tok::Op("=")) if !s.starts_with('!') => {
                    let s = s.clone();
                    self.bump();
                    self.bump();
                    Some(s)
                }
                _ => None,
            };
            let expr = self.expr()?;
            v.push(Item { name, expr });
            if !self.is_op(",") {
                break;
            }
            self.bump();
        }
        Ok(v)
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

    fn enter(&mut self) -> PResult<()> {
        self.depth += 1;
        if self.depth > self.max_depth {
            return Err(KqlError::TooDeep(self.max_depth));
        }
        Ok(())
    }

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
            match word.as_str() {
                "in" | "!in" | "in~" | "!in~" => {
                    self.bump();
                    self.expect_op("(")?;
                    let mut list = Vec::new();
                    if !self.is_op(")") {
                        loop {
                            list.push(self.expr()?);
                            if !self.is_op(",") {
                                break;
                            }
                            self.bump();
                        }
                    }
                    self.expect_op(")")?;
                    let depth = 1 + list.iter().map(|a| a.depth).max().unwrap_or(0).max(l.depth);
                    if depth > self.max_depth {
                        return Err(KqlError::TooDeep(self.max_depth));
                    }
                    l = Ast {
                        kind: AstKind::In {
                            expr: Box::new(l),
                            list,
                            negated: word.starts_with('!'),
                            ci: word.ends_with('~'),
                        },
                        start,
                        end: self.prev_end(),
                        depth,
                    };
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
        self.primary()
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
                Ok(lit(Value::TimeSpan(*x), DataType::TimeSpan))
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
                let e = self.expr()?;
                self.expect_op(")")?;
                Ok(e)
            }
            Tok::Ident(w) if !w.starts_with('!') => {
                let w = w.clone();
                self.bump();
                match w.as_str() {
                    "true" => return Ok(lit(Value::Bool(true), DataType::Bool)),
                    "false" => return Ok(lit(Value::Bool(false), DataType::Bool)),
                    _ => {}
                }
                if self.is_op("(") {
                    self.bump();
                    let mut args = Vec::new();
                    if !self.is_op(")") {
                        loop {
                            args.push(self.expr()?);
                            if !self.is_op(",") {
                                break;
                            }
                            self.bump();
                        }
                    }
                    self.expect_op(")")?;
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
        assert_eq!(toks("1.5h")[0], Tok::TimeSpan(54_000_000_000));
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
