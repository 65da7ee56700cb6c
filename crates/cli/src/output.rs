//! Output formats: `table` fits the terminal, `csv` and `ndjson` stream rows as they come,
//! `json` is one document.

use std::io::{self, Write};

use serde_json::{Map, Value};

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Columns that fit the terminal.
    Table,
    /// Comma-separated values with a header row.
    Csv,
    /// One JSON document: an array of rows.
    Json,
    /// One JSON object per line.
    Ndjson,
}

/// Where rows go.
pub struct Sink {
    out: Box<dyn Write + Send>,
    format: Format,
    width: Option<usize>,
    columns: Vec<String>,
    /// Table rows are buffered to size the columns.
    table: Vec<Vec<String>>,
    first_json: bool,
}

impl Sink {
    pub fn new(out: Box<dyn Write + Send>, format: Format, width: Option<usize>) -> Sink {
        Sink {
            out,
            format,
            width,
            columns: Vec::new(),
            table: Vec::new(),
            first_json: true,
        }
    }

    pub fn header(&mut self, columns: &[String]) -> io::Result<()> {
        self.columns = columns.to_vec();
        match self.format {
            Format::Csv => {
                let line: Vec<String> = columns.iter().map(|c| csv_field(c)).collect();
                writeln!(self.out, "{}", line.join(","))
            }
            Format::Json => write!(self.out, "["),
            _ => Ok(()),
        }
    }

    pub fn row(&mut self, columns: &[String], row: &Map<String, Value>) -> io::Result<()> {
        match self.format {
            Format::Csv => {
                let line: Vec<String> = columns
                    .iter()
                    .map(|c| csv_field(&cell(row.get(c))))
                    .collect();
                writeln!(self.out, "{}", line.join(","))
            }
            Format::Ndjson => {
                writeln!(self.out, "{}", ordered(columns, row))
            }
            Format::Json => {
                if !self.first_json {
                    write!(self.out, ",")?;
                }
                self.first_json = false;
                write!(self.out, "\n  {}", ordered(columns, row))
            }
            Format::Table => {
                self.table
                    .push(columns.iter().map(|c| cell(row.get(c))).collect());
                Ok(())
            }
        }
    }

    pub fn finish(mut self) -> io::Result<()> {
        match self.format {
            Format::Json => writeln!(self.out, "{}]", if self.first_json { "" } else { "\n" })?,
            Format::Table => self.write_table()?,
            _ => {}
        }
        self.out.flush()
    }

    fn write_table(&mut self) -> io::Result<()> {
        let n = self.columns.len();
        if n == 0 {
            return Ok(());
        }
        let mut widths: Vec<usize> = self.columns.iter().map(|c| c.chars().count()).collect();
        for r in &self.table {
            for (i, v) in r.iter().enumerate() {
                widths[i] = widths[i].max(v.chars().count());
            }
        }
        // Shrink the widest columns until the table fits the terminal.
        if let Some(total) = self.width {
            let sep = 2 * (n - 1);
            while widths.iter().sum::<usize>() + sep > total {
                let (i, w) = widths
                    .iter()
                    .enumerate()
                    .max_by_key(|(_, w)| **w)
                    .map(|(i, w)| (i, *w))
                    .unwrap_or((0, 0));
                if w <= 8 {
                    break;
                }
                widths[i] = w - 1;
            }
        }
        let line = |vals: &[String]| -> String {
            let cells: Vec<String> = vals
                .iter()
                .zip(&widths)
                .map(|(v, w)| {
                    let len = v.chars().count();
                    if len > *w {
                        let cut: String = v.chars().take(w.saturating_sub(1)).collect();
                        format!("{cut}…")
                    } else {
                        format!("{v}{}", " ".repeat(w - len))
                    }
                })
                .collect();
            cells.join("  ").trim_end().to_owned()
        };
        writeln!(self.out, "{}", line(&self.columns))?;
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        writeln!(self.out, "{}", rule.join("  "))?;
        for r in &self.table {
            writeln!(self.out, "{}", line(r))?;
        }
        Ok(())
    }
}

/// A row as a JSON object in schema order (then anything else the row carries).
fn ordered(columns: &[String], row: &Map<String, Value>) -> String {
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
        Some(Value::String(s)) => s.replace(['\n', '\r', '\t'], " "),
        Some(other) => other.to_string(),
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_needs_it() {
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("plain"), "plain");
    }
}
