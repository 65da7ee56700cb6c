//! Incidents and alerts on their way out, written once for both: `json` and `ndjson`
//! carry each record exactly as the API sent it (every field, unknown ones included,
//! under the body's names and with its JSON types); `table`, `csv` and `tsv` show summary
//! columns, which `--columns` chooses among the record's top-level fields.

use defender_core::alerts::Alert;
use defender_core::incidents::Incident;
use defender_core::Error;
use futures_util::{Stream, StreamExt};
use serde_json::{Map, Value};

use crate::output::{Format, OutputArgs};
use crate::{Failure, Ui};

/// The columns of incidents and alerts in table, CSV and TSV.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RecordColumns {
    /// Table, CSV and TSV: these columns (top-level fields of the record, e.g.
    /// incidentId,severity,classification) instead of the summary.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "A,B,C",
        help_heading = "Output"
    )]
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
    out: &OutputArgs,
    how: &RecordColumns,
) -> Result<(), Failure> {
    let format = out.format(Format::Table);
    let columns = columns::<R>(format, how);
    let mut sink = out.sink(format)?;
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
/// `table`, `csv` and `tsv` as a header and one row.
pub(crate) fn write_one<R: Record>(
    record: &R,
    out: &OutputArgs,
    how: &RecordColumns,
) -> Result<(), Failure> {
    let format = out.format(Format::Json);
    let mut sink = out.sink(format)?;
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

/// The columns of table, CSV and TSV; none for JSON, which carries every field.
fn columns<R: Record>(format: Format, how: &RecordColumns) -> Vec<String> {
    match format {
        Format::Json | Format::Ndjson => Vec::new(),
        Format::Table | Format::Csv | Format::Tsv if !how.columns.is_empty() => how
            .columns
            .iter()
            .map(|c| c.trim().to_owned())
            .filter(|c| !c.is_empty())
            .collect(),
        Format::Table | Format::Csv | Format::Tsv => {
            R::SUMMARY.iter().map(|c| c.to_string()).collect()
        }
    }
}

/// The record as JSON writes it, or for table, CSV and TSV as sent plus the summary's names
/// the surface lacks (Graph says `displayName` where the summary says `incidentName`).
fn row<R: Record>(record: &R, format: Format) -> Result<Map<String, Value>, Failure> {
    let mut m = as_sent(record)?;
    if matches!(format, Format::Table | Format::Csv | Format::Tsv) {
        for (k, v) in record.summary() {
            m.entry(k).or_insert(v);
        }
    }
    Ok(m)
}

/// The record as the API sent it: its names, its types, every field (the core models
/// keep how the body named and typed each field).
pub(crate) fn as_sent<R: Record>(record: &R) -> Result<Map<String, Value>, Failure> {
    match serde_json::to_value(record) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(Failure::internal(&format!(
            "a record serialized as {other} rather than an object"
        ))),
        Err(e) => Err(Failure::internal(&e)),
    }
}
