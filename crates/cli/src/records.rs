//! Incidents and alerts on their way out, written once for both: `json` and `ndjson`
//! carry each record exactly as the API sent it (every field, unknown ones included,
//! under the body's names and with its JSON types); `table` and `csv` show summary
//! columns, which `--columns` chooses among the record's top-level fields.

use std::io::Write;
use std::path::PathBuf;

use defender_core::alerts::Alert;
use defender_core::incidents::Incident;
use defender_core::Error;
use futures_util::{Stream, StreamExt};
use serde_json::{Map, Value};

use crate::output::{Format, Formulas, Sink};
use crate::{Failure, Ui};

/// Where and how output is written: shared by every command that writes rows.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Destination {
    /// Write to this file instead of standard output.
    #[arg(long, short, value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// CSV: write cells as they are. By default a text cell beginning with =, +, -, @,
    /// a tab or a carriage return gets a leading ' so a spreadsheet shows it as text
    /// instead of running it as a formula (hunted values such as command lines and email
    /// subjects are chosen by attackers).
    #[arg(long)]
    pub csv_raw: bool,
}

impl Destination {
    /// A sink for `format` on the file or standard output; the terminal's width is used
    /// only when standard output is a terminal and the rows go there.
    pub fn sink(&self, format: Format) -> Result<Sink, Failure> {
        use std::io::IsTerminal;
        let (out, width): (Box<dyn Write + Send>, _) = match &self.output {
            Some(p) => {
                let file = std::fs::File::create(p)
                    .map_err(|e| Failure::write(format!("could not create {}", p.display()), e))?;
                (Box::new(std::io::BufWriter::new(file)), None)
            }
            None => {
                let width = std::io::stdout()
                    .is_terminal()
                    .then(|| console::Term::stdout().size_checked())
                    .flatten()
                    .map(|(_, w)| usize::from(w));
                (Box::new(std::io::BufWriter::new(std::io::stdout())), width)
            }
        };
        let formulas = if self.csv_raw {
            Formulas::Raw
        } else {
            Formulas::Escape
        };
        Ok(Sink::new(out, format, width, formulas))
    }
}

/// How incidents and alerts are written.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RecordOutput {
    #[command(flatten)]
    pub to: Destination,
    /// Table and CSV: these columns (top-level fields of the record, e.g.
    /// incidentId,severity,classification) instead of the summary.
    #[arg(long, value_delimiter = ',', value_name = "A,B,C")]
    pub columns: Vec<String>,
}

/// An incident or an alert.
pub(crate) trait Record: serde::Serialize {
    /// The summary columns of table and CSV, under the same names on every surface.
    const SUMMARY: &'static [&'static str];
    /// What the spinner counts.
    const NOUN: &'static str;
    /// The summary's values.
    fn summary(&self) -> Map<String, Value>;
}

impl Record for Incident {
    const SUMMARY: &'static [&'static str] = &[
        "incidentId",
        "incidentName",
        "status",
        "severity",
        "assignedTo",
        "lastUpdateTime",
    ];
    const NOUN: &'static str = "incidents";

    fn summary(&self) -> Map<String, Value> {
        let mut m = Map::new();
        let id = self.incident_id.as_ref().map(|x| x.0.clone());
        m.insert("incidentId".into(), text(&id));
        m.insert("incidentName".into(), text(&self.incident_name));
        m.insert("status".into(), text(&self.status));
        m.insert("severity".into(), text(&self.severity));
        m.insert("assignedTo".into(), text(&self.assigned_to));
        m.insert("lastUpdateTime".into(), text(&self.last_update_time));
        m
    }
}

impl Record for Alert {
    const SUMMARY: &'static [&'static str] = &[
        "id",
        "title",
        "status",
        "severity",
        "incidentId",
        "assignedTo",
        "created",
    ];
    const NOUN: &'static str = "alerts";

    fn summary(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("id".into(), text(&self.alert_id));
        m.insert("title".into(), text(&self.title));
        m.insert("status".into(), text(&self.status));
        m.insert("severity".into(), text(&self.severity));
        m.insert("incidentId".into(), text(&self.incident_id));
        m.insert("assignedTo".into(), text(&self.assigned_to));
        m.insert("created".into(), text(&self.creation_time));
        m
    }
}

fn text(v: &Option<String>) -> Value {
    v.clone().map(Value::String).unwrap_or(Value::Null)
}

/// Writes the records of `stream` as they come, at most `limit` of them; what was
/// fetched is written before an error is reported.
pub(crate) async fn write_all<R: Record>(
    ui: &Ui,
    stream: impl Stream<Item = Result<R, Error>>,
    limit: Option<usize>,
    format: Format,
    how: &RecordOutput,
) -> Result<(), Failure> {
    let columns = columns::<R>(format, how);
    let mut sink = how.to.sink(format)?;
    sink.header(&columns).map_err(Failure::output)?;
    let spinner = ui.spinner(&format!("listing {}", R::NOUN));
    let mut stream = std::pin::pin!(stream);
    let mut n = 0usize;
    let mut failure = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(record) => {
                sink.row(&columns, &row(&record, format)?)
                    .map_err(Failure::output)?;
                n += 1;
                spinner.set_message(format!("{n} {}", R::NOUN));
                if limit.is_some_and(|l| n >= l) {
                    break;
                }
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    spinner.finish_and_clear();
    sink.finish().map_err(Failure::output)?;
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// Writes one record (`get`, `update`): `json` as one object, `ndjson` as one line,
/// `table` and `csv` as a header and one row.
pub(crate) fn write_one<R: Record>(
    record: &R,
    format: Format,
    how: &RecordOutput,
) -> Result<(), Failure> {
    let mut sink = how.to.sink(format)?;
    if format == Format::Json {
        // One object, not an array of one: what `get` has always printed.
        let value = Value::Object(as_sent(record)?);
        return sink.document(&value).map_err(Failure::output);
    }
    let columns = columns::<R>(format, how);
    sink.header(&columns).map_err(Failure::output)?;
    sink.row(&columns, &row(record, format)?)
        .map_err(Failure::output)?;
    sink.finish().map_err(Failure::output)
}

/// The columns of table and CSV; none for JSON, which carries every field.
fn columns<R: Record>(format: Format, how: &RecordOutput) -> Vec<String> {
    match format {
        Format::Json | Format::Ndjson => Vec::new(),
        Format::Table | Format::Csv if !how.columns.is_empty() => how
            .columns
            .iter()
            .map(|c| c.trim().to_owned())
            .filter(|c| !c.is_empty())
            .collect(),
        Format::Table | Format::Csv => R::SUMMARY.iter().map(|c| c.to_string()).collect(),
    }
}

/// The record as JSON writes it, or for table and CSV as sent plus the summary's names
/// the surface lacks (Graph says `displayName` where the summary says `incidentName`).
fn row<R: Record>(record: &R, format: Format) -> Result<Map<String, Value>, Failure> {
    let mut m = as_sent(record)?;
    if matches!(format, Format::Table | Format::Csv) {
        for (k, v) in record.summary() {
            m.entry(k).or_insert(v);
        }
    }
    Ok(m)
}

/// The record as the API sent it: its names, its types, every field (the core models
/// keep how the body named and typed each field).
fn as_sent<R: Record>(record: &R) -> Result<Map<String, Value>, Failure> {
    match serde_json::to_value(record) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(Failure::internal(&format!(
            "a record serialized as {other} rather than an object"
        ))),
        Err(e) => Err(Failure::internal(&e)),
    }
}
