//! Output: the options every command shares (`-o/--output FORMAT`, `--out-file PATH`,
//! `--csv-raw`, as the Azure CLI and kubectl name them) and the formats: `table` sizes its
//! columns on the first rows and streams the rest, `csv`, `tsv` and `ndjson` stream rows
//! as they come, `json` is one document.
//!
//! What reaches a terminal or a spreadsheet is made safe at this one place: a table shows
//! control characters escaped (an ESC in a hunted command line cannot drive the
//! terminal), and a CSV or TSV cell a spreadsheet would run as a formula gets a leading
//! `'` unless `--csv-raw` is given.

use std::io::{self, Write};
use std::path::PathBuf;

use serde_json::{Map, Value};
use unicode_width::UnicodeWidthChar;

use crate::Failure;

/// The output options, global: they go before or after the subcommand.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Output")]
pub struct OutputArgs {
    /// The output format. Default: table for hunts and lists, json for get and update,
    /// ndjson for incidents sync, text (table) for limits.
    #[arg(
        short = 'o',
        long = "output",
        visible_alias = "format",
        global = true,
        value_enum,
        value_name = "FORMAT"
    )]
    pub format: Option<Format>,
    /// Write to this file instead of standard output.
    #[arg(long, global = true, value_name = "PATH")]
    pub out_file: Option<PathBuf>,
    /// CSV and TSV: write cells as they are. By default a text cell beginning with =, +,
    /// -, @, a tab or a carriage return gets a leading ' so a spreadsheet shows it as text
    /// instead of running it as a formula (hunted values such as command lines and email
    /// subjects are chosen by attackers).
    #[arg(long, global = true)]
    pub csv_raw: bool,
}

impl OutputArgs {
    /// The format asked for, or the command's `default`.
    pub fn format(&self, default: Format) -> Format {
        self.format.unwrap_or(default)
    }

    /// The file or standard output, and the terminal's width when the output is one.
    pub fn writer(&self) -> Result<(Box<dyn Write + Send>, Option<usize>), Failure> {
        use std::io::IsTerminal;
        match &self.out_file {
            Some(p) => {
                let file = std::fs::File::create(p)
                    .map_err(|e| Failure::write(format!("could not create {}", p.display()), e))?;
                Ok((Box::new(io::BufWriter::new(file)), None))
            }
            None => {
                let width = io::stdout()
                    .is_terminal()
                    .then(|| console::Term::stdout().size_checked())
                    .flatten()
                    .map(|(_, w)| usize::from(w));
                Ok((Box::new(io::BufWriter::new(io::stdout())), width))
            }
        }
    }

    /// A sink for the format asked for (else `default`) on the file or standard output.
    pub fn sink(&self, default: Format) -> Result<Sink, Failure> {
        let (out, width) = self.writer()?;
        let formulas = if self.csv_raw {
            Formulas::Raw
        } else {
            Formulas::Escape
        };
        Ok(Sink::new(out, self.format(default), width, formulas))
    }
}

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Columns that fit the terminal.
    #[value(alias = "text")]
    Table,
    /// Comma-separated values with a header row (RFC 4180).
    Csv,
    /// Tab-separated values with a header row, one line per row: no quoting; a
    /// backslash, tab, newline or carriage return in a cell is written \\, \t, \n, \r.
    Tsv,
    /// One JSON document: an array of rows.
    Json,
    /// One JSON object per line.
    Ndjson,
}

/// How CSV treats a cell that begins like a formula (`=`, `+`, `-`, `@`, tab, CR).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Formulas {
    /// Prefix it with `'`, so a spreadsheet shows it as text (OWASP's advice for CSV).
    Escape,
    /// Write it as it is.
    Raw,
}

/// Where rows go.
pub struct Sink {
    inner: Inner,
}

enum Inner {
    Csv {
        out: Box<csv::Writer<Box<dyn Write + Send>>>,
        formulas: Formulas,
    },
    Json {
        out: Box<dyn Write + Send>,
        first: bool,
    },
    Tsv {
        out: Box<dyn Write + Send>,
        formulas: Formulas,
    },
    Ndjson(Box<dyn Write + Send>),
    Table(Table),
}

impl Sink {
    /// A sink writing `format` to `out`; `width` is the terminal's, when `out` is one.
    pub fn new(
        out: Box<dyn Write + Send>,
        format: Format,
        width: Option<usize>,
        formulas: Formulas,
    ) -> Sink {
        let inner = match format {
            Format::Csv => Inner::Csv {
                out: Box::new(csv::Writer::from_writer(out)),
                formulas,
            },
            Format::Tsv => Inner::Tsv { out, formulas },
            Format::Json => Inner::Json { out, first: true },
            Format::Ndjson => Inner::Ndjson(out),
            Format::Table => Inner::Table(Table::new(out, width)),
        };
        Sink { inner }
    }

    /// The column names; called once, before any row.
    pub fn header(&mut self, columns: &[String]) -> io::Result<()> {
        match &mut self.inner {
            Inner::Csv { out, formulas } => {
                if columns.is_empty() {
                    return Ok(());
                }
                let cells: Vec<_> = columns.iter().map(|c| defuse(c, *formulas)).collect();
                out.write_record(cells.iter().map(|c| c.as_bytes()))
                    .map_err(csv_io)
            }
            Inner::Tsv { out, formulas } => {
                if columns.is_empty() {
                    return Ok(());
                }
                tsv_line(out, columns.iter().map(|c| defuse(c, *formulas)))
            }
            Inner::Json { out, .. } => write!(out, "["),
            Inner::Ndjson(_) => Ok(()),
            Inner::Table(t) => {
                t.columns = columns.iter().map(|c| shown(c)).collect();
                Ok(())
            }
        }
    }

    /// One row: `columns` in that order (JSON then adds whatever else the row carries).
    pub fn row(&mut self, columns: &[String], row: &Map<String, Value>) -> io::Result<()> {
        match &mut self.inner {
            Inner::Csv { out, formulas } => {
                let cells: Vec<_> = columns
                    .iter()
                    .map(|c| match row.get(c) {
                        Some(Value::String(s)) => defuse(s, *formulas),
                        other => std::borrow::Cow::Owned(cell(other)),
                    })
                    .collect();
                out.write_record(cells.iter().map(|c| c.as_bytes()))
                    .map_err(csv_io)
            }
            Inner::Tsv { out, formulas } => tsv_line(
                out,
                columns.iter().map(|c| match row.get(c) {
                    Some(Value::String(s)) => defuse(s, *formulas),
                    other => std::borrow::Cow::Owned(cell(other)),
                }),
            ),
            Inner::Ndjson(out) => writeln!(out, "{}", ordered(columns, row)),
            Inner::Json { out, first } => {
                if !*first {
                    write!(out, ",")?;
                }
                *first = false;
                write!(out, "\n  {}", ordered(columns, row))
            }
            Inner::Table(t) => t.row(columns.iter().map(|c| shown(&cell(row.get(c))))),
        }
    }

    /// Writes `value` as one pretty JSON document instead of an array of rows (a `get`);
    /// in any other format, nothing.
    pub fn document(self, value: &Value) -> io::Result<()> {
        match self.inner {
            Inner::Json { mut out, .. } => {
                serde_json::to_writer_pretty(&mut out, value)?;
                writeln!(out)?;
                out.flush()
            }
            _ => Ok(()),
        }
    }

    /// Writes what is held back and flushes.
    pub fn finish(self) -> io::Result<()> {
        match self.inner {
            Inner::Csv { mut out, .. } => out.flush(),
            Inner::Json { mut out, first } => {
                writeln!(out, "{}]", if first { "" } else { "\n" })?;
                out.flush()
            }
            Inner::Tsv { mut out, .. } | Inner::Ndjson(mut out) => out.flush(),
            Inner::Table(t) => t.finish(),
        }
    }
}

/// The csv crate's error as the I/O error it wraps, so a closed pipe stays one.
fn csv_io(e: csv::Error) -> io::Error {
    let message = e.to_string();
    match e.into_kind() {
        csv::ErrorKind::Io(e) => e,
        _ => io::Error::other(message),
    }
}

/// One TSV line: the cells escaped, joined by tabs.
fn tsv_line<'a>(
    out: &mut dyn Write,
    cells: impl Iterator<Item = std::borrow::Cow<'a, str>>,
) -> io::Result<()> {
    let mut line = String::new();
    for (i, c) in cells.enumerate() {
        if i > 0 {
            line.push('\t');
        }
        line.push_str(&tsv_escaped(&c));
    }
    line.push('\n');
    out.write_all(line.as_bytes())
}

/// A TSV cell: backslash, tab, newline and carriage return escaped, so that a tab
/// always separates cells and a newline always ends a row (the escapes of PostgreSQL's
/// text COPY and of `mlr --itsv`).
fn tsv_escaped(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains(['\\', '\t', '\n', '\r']) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A CSV or TSV text cell, with a leading `'` when a spreadsheet would run it as a
/// formula.
fn defuse(s: &str, formulas: Formulas) -> std::borrow::Cow<'_, str> {
    if formulas == Formulas::Escape && s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        std::borrow::Cow::Owned(format!("'{s}"))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// How many rows a table holds to size its columns; later rows are cut to those widths.
const TABLE_BATCH: usize = 1000;

/// A table: the first [`TABLE_BATCH`] rows size the columns (by display width, so CJK
/// and emoji align), then every row is written as it comes.
struct Table {
    out: Box<dyn Write + Send>,
    /// The terminal's width, to fit; none when not writing to a terminal.
    width: Option<usize>,
    columns: Vec<String>,
    held: Vec<Vec<String>>,
    /// Set once the header is written.
    widths: Option<Vec<usize>>,
}

impl Table {
    fn new(out: Box<dyn Write + Send>, width: Option<usize>) -> Table {
        Table {
            out,
            width,
            columns: Vec::new(),
            held: Vec::new(),
            widths: None,
        }
    }

    fn row(&mut self, cells: impl Iterator<Item = String>) -> io::Result<()> {
        let cells: Vec<String> = cells.collect();
        match &self.widths {
            Some(w) => {
                let line = line(&cells, w);
                writeln!(self.out, "{line}")
            }
            None => {
                self.held.push(cells);
                if self.held.len() >= TABLE_BATCH {
                    self.start()?;
                }
                Ok(())
            }
        }
    }

    /// Sizes the columns on the rows held, and writes the header and those rows.
    fn start(&mut self) -> io::Result<()> {
        if self.columns.is_empty() {
            self.widths = Some(Vec::new());
            return Ok(());
        }
        let mut widths: Vec<usize> = self.columns.iter().map(|c| width(c)).collect();
        for r in &self.held {
            for (w, v) in widths.iter_mut().zip(r) {
                *w = (*w).max(width(v));
            }
        }
        // Shrink the widest columns until the table fits the terminal.
        if let Some(total) = self.width {
            let sep = 2 * (widths.len() - 1);
            while widths.iter().sum::<usize>() + sep > total {
                let Some((i, w)) = widths.iter().copied().enumerate().max_by_key(|(_, w)| *w)
                else {
                    break;
                };
                if w <= 8 {
                    break;
                }
                widths[i] = w - 1;
            }
        }
        writeln!(self.out, "{}", line(&self.columns, &widths))?;
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        writeln!(self.out, "{}", rule.join("  "))?;
        for r in std::mem::take(&mut self.held) {
            writeln!(self.out, "{}", line(&r, &widths))?;
        }
        self.widths = Some(widths);
        Ok(())
    }

    fn finish(mut self) -> io::Result<()> {
        if self.widths.is_none() {
            self.start()?;
        }
        self.out.flush()
    }
}

/// One table line: each cell padded or cut (with `…`) to its column's display width.
fn line(cells: &[String], widths: &[usize]) -> String {
    let mut out = String::new();
    for (i, (v, &w)) in cells.iter().zip(widths).enumerate() {
        if i > 0 {
            out.push_str("  ");
        }
        let mut used = width(v);
        if used > w {
            used = 0;
            for c in v.chars() {
                let cw = c.width().unwrap_or(0);
                if used + cw + 1 > w {
                    break;
                }
                out.push(c);
                used += cw;
            }
            out.push('…');
            used += 1;
        } else {
            out.push_str(v);
        }
        out.extend(std::iter::repeat_n(' ', w.saturating_sub(used)));
    }
    out.trim_end().to_owned()
}

/// Display width in terminal columns.
fn width(s: &str) -> usize {
    s.chars().map(|c| c.width().unwrap_or(0)).sum()
}

/// Text for a terminal: control characters and the bidirectional overrides (which can
/// make a cell read differently from what it holds) shown escaped, e.g. `\u{1b}`.
fn shown(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let bidi = matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if c.is_control() || bidi {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A row as a JSON object in schema order (then anything else the row carries).
pub(crate) fn ordered(columns: &[String], row: &Map<String, Value>) -> String {
    let mut out = String::from("{");
    let mut first = true;
    let mut push = |k: &str, v: &Value| {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(&Value::String(k.to_owned()).to_string());
        out.push(':');
        out.push_str(&v.to_string());
    };
    for c in columns {
        push(c, row.get(c).unwrap_or(&Value::Null));
    }
    for (k, v) in row {
        if !columns.contains(k) {
            push(k, v);
        }
    }
    out.push('}');
    out
}

/// A value as text: strings as they are, null as nothing, the rest as JSON.
pub fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_are_defused_unless_raw() {
        for f in ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"] {
            assert_eq!(defuse(f, Formulas::Escape), format!("'{f}"));
            assert_eq!(defuse(f, Formulas::Raw), f);
        }
        assert_eq!(defuse("plain", Formulas::Escape), "plain");
        assert_eq!(defuse("a=b", Formulas::Escape), "a=b");
    }

    #[test]
    fn cells_are_cut_and_padded_by_display_width() {
        let widths = [4, 3];
        assert_eq!(line(&["日本".into(), "x".into()], &widths), "日本  x");
        // 日 is 2 columns, … one; one space pads the cell to 4.
        assert_eq!(line(&["日本語".into(), "x".into()], &widths), "日…   x");
        assert_eq!(line(&["abcdef".into(), "xy".into()], &widths), "abc…  xy");
        assert_eq!(width("🦀a"), 3);
    }

    #[test]
    fn tsv_cells_escape_what_would_split_them() {
        assert_eq!(tsv_escaped("plain"), "plain");
        assert_eq!(tsv_escaped("a\tb\nc\rd\\e"), "a\\tb\\nc\\rd\\\\e");
        let mut out = Vec::new();
        tsv_line(&mut out, ["x\ty".into(), "".into(), "z".into()].into_iter()).unwrap();
        assert_eq!(out, b"x\\ty\t\tz\n");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(shown("a\u{1b}[2Jb\n"), "a\\u{1b}[2Jb\\n");
        assert_eq!(shown("x\u{202e}y"), "x\\u{202e}y");
        assert_eq!(shown("日本 ok"), "日本 ok");
    }
}
