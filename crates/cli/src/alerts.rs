//! `defender alerts`: list, get and update alerts (Graph `alerts_v2`, Defender's
//! `/api/alerts`). JSON and NDJSON carry each alert as the API sent it, every field;
//! the table and CSV show a summary.

use std::io::Write;
use std::time::SystemTime;

use clap::Subcommand;
use defender_async::Client;
use defender_core::alerts::{max_top, Alert, AlertFilter, AlertQuery, AlertStatus, AlertUpdate};
use defender_core::incidents::Classification;
use futures_util::StreamExt;
use serde_json::{Map, Value};

use crate::output::Format;
use crate::{open_sink, parse_classification, parse_since, Failure, Ui};

fn parse_alert_status(s: &str) -> Result<AlertStatus, String> {
    s.parse()
}

#[derive(Debug, Subcommand)]
pub(crate) enum AlertsCommand {
    /// List alerts.
    List {
        /// A raw OData $filter, `and`-ed with the options below.
        #[arg(long)]
        filter: Option<String>,
        /// Only alerts with this status (New, InProgress, Resolved).
        #[arg(long, value_parser = parse_alert_status)]
        status: Option<AlertStatus>,
        /// Only alerts of this severity (informational, low, medium, high).
        #[arg(long)]
        severity: Option<String>,
        /// Only alerts assigned to this user.
        #[arg(long)]
        assigned_to: Option<String>,
        /// Only alerts updated since this time (RFC 3339) or span ago (e.g. 24h).
        #[arg(long, value_parser = parse_since)]
        updated_since: Option<SystemTime>,
        /// Only alerts with this classification (Graph only).
        #[arg(long, value_parser = parse_classification)]
        classification: Option<Classification>,
        /// Only alerts of this incident (Defender only).
        #[arg(long)]
        incident_id: Option<u64>,
        /// Only alerts from this product (Graph only, e.g. microsoftDefenderForEndpoint).
        #[arg(long)]
        service_source: Option<String>,
        /// Page size (default and at most: 10,000 on Defender, 50 on Graph).
        #[arg(long)]
        top: Option<u32>,
        /// Defender: include each alert's evidence (`--expand evidence`; Graph always
        /// includes it).
        #[arg(long, value_parser = ["evidence"])]
        expand: Option<String>,
        /// Every page, not just the first.
        #[arg(long)]
        all: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Write to this file instead of standard output.
        #[arg(long, short)]
        output: Option<std::path::PathBuf>,
    },
    /// Show one alert, as the API sent it.
    Get {
        /// The alert id.
        id: String,
        /// Output format (json or ndjson).
        #[arg(long, value_enum, default_value_t = Format::Json)]
        format: Format,
    },
    /// Update one alert (never sent twice: exit code 8 when the outcome is unknown).
    Update {
        /// The alert id.
        id: String,
        /// New status (New, InProgress, Resolved).
        #[arg(long, value_parser = parse_alert_status)]
        status: Option<AlertStatus>,
        /// New assignee.
        #[arg(long)]
        assigned_to: Option<String>,
        /// New classification (TruePositive, InformationalExpectedActivity, FalsePositive).
        #[arg(long, value_parser = parse_classification)]
        classification: Option<Classification>,
        /// New determination.
        #[arg(long)]
        determination: Option<String>,
        /// A comment to add.
        #[arg(long)]
        comment: Option<String>,
        /// Output format (json or ndjson).
        #[arg(long, value_enum, default_value_t = Format::Json)]
        format: Format,
    },
}

/// The summary columns of the table and CSV.
const COLUMNS: [&str; 7] = [
    "id",
    "title",
    "status",
    "severity",
    "incidentId",
    "assignedTo",
    "created",
];

pub(crate) async fn alerts(client: &Client, ui: &Ui, cmd: AlertsCommand) -> Result<(), Failure> {
    let surface = client.surface();
    match cmd {
        AlertsCommand::List {
            filter,
            status,
            severity,
            assigned_to,
            updated_since,
            classification,
            incident_id,
            service_source,
            top,
            expand,
            all,
            format,
            output,
        } => {
            let mut f = filter.map(AlertFilter::raw).unwrap_or_default();
            if let Some(s) = status {
                f = f.status(s);
            }
            if let Some(s) = &severity {
                f = f.severity(s);
            }
            if let Some(a) = &assigned_to {
                f = f.assigned_to(a);
            }
            if let Some(t) = updated_since {
                f = f.updated_since(t);
            }
            if let Some(c) = classification {
                f = f.classification(c);
            }
            if let Some(s) = &service_source {
                f = f.service_source(s);
            }
            if let Some(id) = incident_id {
                if surface == defender_core::Surface::Graph {
                    return Err(Failure::usage(
                        "Graph does not filter alerts on incidentId; use --api mde or xdr, or `defender incidents get ID` with --expand alerts",
                    ));
                }
                f = f.incident_id(id);
            }
            if let Some(field) = f.unsupported_on(surface) {
                return Err(Failure::usage(format!(
                    "{surface} does not filter alerts on {}",
                    field.name(surface)
                )));
            }
            let max = max_top(surface);
            let top = top.unwrap_or(max);
            if top == 0 || top > max {
                return Err(Failure::usage(format!(
                    "--top takes 1 to {max} on {surface} (the API's page size limit)"
                )));
            }
            let query = AlertQuery {
                filter: f,
                top: Some(top),
                skip: None,
                expand_evidence: expand.is_some(),
            };
            // JSON and NDJSON: every field the API sent, under its names; no columns.
            let columns: Vec<String> = match format {
                Format::Table | Format::Csv => COLUMNS.iter().map(|c| c.to_string()).collect(),
                Format::Json | Format::Ndjson => Vec::new(),
            };
            let mut sink = open_sink(&output, format)?;
            sink.header(&columns)
                .map_err(|e| Failure::io("could not write", e))?;
            let spinner = ui.spinner("listing alerts");
            let mut stream = std::pin::pin!(client.alerts().list(query));
            let mut n = 0usize;
            let mut failure = None;
            while let Some(item) = stream.next().await {
                match item {
                    Ok(alert) => {
                        let row = if columns.is_empty() {
                            as_sent(&alert)?
                        } else {
                            summary(&alert)
                        };
                        sink.row(&columns, &row)
                            .map_err(|e| Failure::io("could not write", e))?;
                        n += 1;
                        spinner.set_message(format!("{n} alerts"));
                        if !all && n >= top as usize {
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
            // What was fetched is written before any error is reported.
            sink.finish()
                .map_err(|e| Failure::io("could not write", e))?;
            match failure {
                Some(e) => Err(e.into()),
                None => Ok(()),
            }
        }
        AlertsCommand::Get { id, format } => {
            let alert = client.alerts().get(id.as_str()).await?;
            print_alert(&alert, format)
        }
        AlertsCommand::Update {
            id,
            status,
            assigned_to,
            classification,
            determination,
            comment,
            format,
        } => {
            let update = AlertUpdate {
                status,
                assigned_to,
                classification,
                determination,
                comment,
            };
            if update.is_empty() {
                return Err(Failure::usage(
                    "nothing to update: give --status, --assigned-to, --classification, --determination or --comment",
                ));
            }
            let alert = client.alerts().update(id.as_str(), update).await?;
            print_alert(&alert, format)
        }
    }
}

/// The alert as the API sent it: its names, its types, every field.
fn as_sent(alert: &Alert) -> Result<Map<String, Value>, Failure> {
    match serde_json::to_value(alert) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Ok(Map::new()),
        Err(e) => Err(Failure {
            code: 6,
            message: e.to_string(),
        }),
    }
}

/// The table's summary of an alert, the same on every surface.
fn summary(a: &Alert) -> Map<String, Value> {
    let s = |v: &Option<String>| v.clone().map(Value::String).unwrap_or(Value::Null);
    let mut m = Map::new();
    m.insert("id".into(), s(&a.alert_id));
    m.insert("title".into(), s(&a.title));
    m.insert("status".into(), s(&a.status));
    m.insert("severity".into(), s(&a.severity));
    m.insert("incidentId".into(), s(&a.incident_id));
    m.insert("assignedTo".into(), s(&a.assigned_to));
    m.insert("created".into(), s(&a.creation_time));
    m
}

fn print_alert(alert: &Alert, format: Format) -> Result<(), Failure> {
    let value = Value::Object(as_sent(alert)?);
    let text = match format {
        Format::Json | Format::Table => serde_json::to_string_pretty(&value),
        Format::Ndjson | Format::Csv => serde_json::to_string(&value),
    }
    .map_err(|e| Failure {
        code: 6,
        message: e.to_string(),
    })?;
    writeln!(std::io::stdout().lock(), "{text}").map_err(|e| Failure::io("could not write", e))
}
