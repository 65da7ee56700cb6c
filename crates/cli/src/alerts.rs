//! `defender alerts`: list, get and update alerts (Graph `alerts_v2`, Defender's
//! `/api/alerts`). JSON and NDJSON carry each alert as the API sent it, every field;
//! the table and CSV show a summary.

use std::time::SystemTime;

use clap::Subcommand;
use defender_async::Client;
use defender_core::alerts::{max_top, AlertFilter, AlertQuery, AlertStatus, AlertUpdate};
use defender_core::incidents::Classification;

use crate::output::OutputArgs;
use crate::records::{self, RecordColumns};
use crate::{parse_since, values, Failure, Ui};

#[derive(Debug, Subcommand)]
pub(crate) enum AlertsCommand {
    /// List alerts.
    List {
        /// A raw OData $filter, `and`-ed with the options below.
        #[arg(long)]
        filter: Option<String>,
        /// Only alerts with this status.
        #[arg(long, ignore_case = true, value_parser = values::alert_status())]
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
        #[arg(long, ignore_case = true, value_parser = values::classification())]
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
        #[command(flatten)]
        how: RecordColumns,
    },
    /// Show one alert, as the API sent it.
    Get {
        /// The alert id.
        id: String,
        #[command(flatten)]
        how: RecordColumns,
    },
    /// Update one alert (never sent twice: exit code 8 when the outcome is unknown).
    Update {
        /// The alert id.
        id: String,
        /// New status.
        #[arg(long, ignore_case = true, value_parser = values::alert_status())]
        status: Option<AlertStatus>,
        /// New assignee.
        #[arg(long)]
        assigned_to: Option<String>,
        /// New classification.
        #[arg(long, ignore_case = true, value_parser = values::classification())]
        classification: Option<Classification>,
        /// New determination.
        #[arg(long)]
        determination: Option<String>,
        /// A comment to add.
        #[arg(long)]
        comment: Option<String>,
        #[command(flatten)]
        how: RecordColumns,
    },
}

pub(crate) async fn alerts(
    client: &Client,
    ui: &Ui,
    out: &OutputArgs,
    cmd: AlertsCommand,
) -> Result<(), Failure> {
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
            how,
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
            let limit = (!all).then_some(top as usize);
            records::write_all(ui, client.alerts().list(query), limit, out, &how).await
        }
        AlertsCommand::Get { id, how } => {
            let alert = client.alerts().get(id.as_str()).await?;
            records::write_one(&alert, out, &how)
        }
        AlertsCommand::Update {
            id,
            status,
            assigned_to,
            classification,
            determination,
            comment,
            how,
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
            records::write_one(&alert, out, &how)
        }
    }
}
