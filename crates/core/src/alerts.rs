//! Alerts as their own calls: list, get and update on Graph's `security/alerts_v2` and on
//! Defender's `/api/alerts` (Defender for Endpoint's API, also served on the Defender XDR
//! host).
//!
//! The alert model is [`Alert`] (shared with the alerts inside an incident); what
//! differs per surface is the spelling of values and filter properties, and how a
//! comment is added: Defender takes `comment` in the PATCH body, Graph takes it as a POST
//! to the alert's comments, as for incidents.
//!
//! ```
//! use defender_core::alerts::{AlertFilter, AlertQuery, AlertStatus};
//! use defender_core::Surface;
//!
//! let q = AlertQuery {
//!     filter: AlertFilter::new().status(AlertStatus::New).severity("high"),
//!     top: Some(20),
//!     ..AlertQuery::default()
//! };
//! assert_eq!(
//!     q.path_and_query("/api/alerts", Surface::DefenderEndpoint),
//!     "/api/alerts?$filter=status%20eq%20%27New%27%20and%20severity%20eq%20%27High%27&$top=20"
//! );
//! assert_eq!(
//!     AlertFilter::new().status(AlertStatus::InProgress).render(Surface::Graph).unwrap(),
//!     "status eq 'inProgress'"
//! );
//! ```

use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

pub use crate::incidents::Alert;
use crate::incidents::{
    check_path_id, lenient_list, lenient_string, percent_encode, render_clauses, unsupported_field,
    value_text, Classification, Clause, Field, FilterOp, FilterValue,
};
use crate::surface::Surface;

/// An alert id (`da637551227677560813_-961444813`); kept as text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(transparent)]
pub struct AlertId(pub String);

impl<'de> Deserialize<'de> for AlertId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(AlertId(
            value_text(Value::deserialize(d)?).unwrap_or_default(),
        ))
    }
}

impl fmt::Display for AlertId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for AlertId {
    fn from(s: &str) -> Self {
        AlertId(s.to_owned())
    }
}

impl From<String> for AlertId {
    fn from(s: String) -> Self {
        AlertId(s)
    }
}

impl AlertId {
    /// Checks the id is safe to put in a URL path: letters, digits, `-`, `_`, `.`.
    pub fn check(&self) -> Result<&str, crate::Error> {
        check_path_id(&self.0, "an alert id")
    }
}

/// An alert's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AlertStatus {
    /// Not looked at yet.
    New,
    /// Being worked on.
    InProgress,
    /// Done.
    Resolved,
}

impl AlertStatus {
    /// The value as `surface` spells it (`InProgress` on Defender, `inProgress` on Graph).
    pub fn as_str(self, surface: Surface) -> &'static str {
        match (self, surface) {
            (AlertStatus::New, Surface::Graph) => "new",
            (AlertStatus::InProgress, Surface::Graph) => "inProgress",
            (AlertStatus::Resolved, Surface::Graph) => "resolved",
            (AlertStatus::New, _) => "New",
            (AlertStatus::InProgress, _) => "InProgress",
            (AlertStatus::Resolved, _) => "Resolved",
        }
    }
}

impl FromStr for AlertStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().replace(['-', '_'], "").as_str() {
            "new" => Ok(AlertStatus::New),
            "inprogress" => Ok(AlertStatus::InProgress),
            "resolved" => Ok(AlertStatus::Resolved),
            _ => Err(format!(
                "unknown alert status `{s}` (use New, InProgress or Resolved)"
            )),
        }
    }
}

/// The properties the alerts lists filter on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AlertField {
    /// `lastUpdateTime` (Defender) / `lastUpdateDateTime` (Graph).
    LastUpdateTime,
    /// `alertCreationTime` (Defender) / `createdDateTime` (Graph).
    CreatedTime,
    /// `status`.
    Status,
    /// `severity`.
    Severity,
    /// `assignedTo`.
    AssignedTo,
    /// `classification` (Graph only).
    Classification,
    /// `determination` (Graph only).
    Determination,
    /// `serviceSource` (Graph only).
    ServiceSource,
    /// `incidentId` (Defender only).
    IncidentId,
    /// `detectionSource` (Defender only).
    DetectionSource,
    /// `category` (Defender only).
    Category,
}

impl AlertField {
    /// Whether `surface` filters alerts on this field: Graph documents `assignedTo`,
    /// `classification`, `determination`, `createdDateTime`, `lastUpdateDateTime`,
    /// `severity`, `serviceSource` and `status` (GD security-list-alerts_v2.md); Defender
    /// `alertCreationTime`, `lastUpdateTime`, `incidentId`, `id`, `investigationId`,
    /// `assignedTo`, `detectionSource`, `lastEventTime`, `status`, `severity` and
    /// `category` (DD defender-endpoint/api/get-alerts.md).
    pub fn supported_on(self, surface: Surface) -> bool {
        use AlertField::*;
        match self {
            Classification | Determination | ServiceSource => surface == Surface::Graph,
            IncidentId | DetectionSource | Category => surface != Surface::Graph,
            LastUpdateTime | CreatedTime | Status | Severity | AssignedTo => true,
        }
    }

    /// The property's name on `surface`.
    pub fn name(self, surface: Surface) -> &'static str {
        let graph = surface == Surface::Graph;
        match self {
            AlertField::LastUpdateTime if graph => "lastUpdateDateTime",
            AlertField::LastUpdateTime => "lastUpdateTime",
            AlertField::CreatedTime if graph => "createdDateTime",
            AlertField::CreatedTime => "alertCreationTime",
            AlertField::Status => "status",
            AlertField::Severity => "severity",
            AlertField::AssignedTo => "assignedTo",
            AlertField::Classification => "classification",
            AlertField::Determination => "determination",
            AlertField::ServiceSource => "serviceSource",
            AlertField::IncidentId => "incidentId",
            AlertField::DetectionSource => "detectionSource",
            AlertField::Category => "category",
        }
    }
}

impl Field for AlertField {
    fn name(self, surface: Surface) -> &'static str {
        AlertField::name(self, surface)
    }
    fn supported_on(self, surface: Surface) -> bool {
        AlertField::supported_on(self, surface)
    }
}

/// A `$filter` for alerts, joined with `and`, with string values escaped.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AlertFilter {
    clauses: Vec<Clause<AlertField>>,
}

impl AlertFilter {
    /// An empty filter (every alert).
    pub fn new() -> AlertFilter {
        AlertFilter::default()
    }

    /// A filter written by hand in OData; sent as is, `and`-ed with the other clauses.
    pub fn raw(odata: impl Into<String>) -> AlertFilter {
        AlertFilter::new().and_raw(odata)
    }

    /// Adds a hand-written clause.
    pub fn and_raw(mut self, odata: impl Into<String>) -> AlertFilter {
        let s = odata.into();
        if !s.trim().is_empty() {
            self.clauses.push(Clause::Raw(s));
        }
        self
    }

    fn compare(mut self, field: AlertField, value: FilterValue) -> AlertFilter {
        self.clauses
            .push(Clause::Compare(field, FilterOp::Eq, value));
        self
    }

    /// `status eq ...`.
    pub fn status(self, status: AlertStatus) -> AlertFilter {
        self.compare(
            AlertField::Status,
            FilterValue::spelled(|s| status.as_str(s)),
        )
    }

    /// `severity eq ...`: `informational`, `low`, `medium` or `high`, spelled as the
    /// surface does (Graph lower case, Defender capitalised); other text is sent as given.
    pub fn severity(self, severity: &str) -> AlertFilter {
        let value = match severity.to_ascii_lowercase().as_str() {
            "informational" => FilterValue::Spelled {
                graph: "informational",
                defender: "Informational",
            },
            "low" => FilterValue::Spelled {
                graph: "low",
                defender: "Low",
            },
            "medium" => FilterValue::Spelled {
                graph: "medium",
                defender: "Medium",
            },
            "high" => FilterValue::Spelled {
                graph: "high",
                defender: "High",
            },
            _ => FilterValue::Text(severity.to_owned()),
        };
        self.compare(AlertField::Severity, value)
    }

    /// `assignedTo eq '...'`.
    pub fn assigned_to(self, who: &str) -> AlertFilter {
        self.compare(AlertField::AssignedTo, FilterValue::Text(who.to_owned()))
    }

    /// `classification eq ...` (Graph only).
    pub fn classification(self, classification: Classification) -> AlertFilter {
        self.compare(
            AlertField::Classification,
            FilterValue::spelled(|s| classification.as_str(s)),
        )
    }

    /// `determination eq '...'` (Graph only; sent as given).
    pub fn determination(self, determination: &str) -> AlertFilter {
        self.compare(
            AlertField::Determination,
            FilterValue::Text(determination.to_owned()),
        )
    }

    /// `serviceSource eq '...'` (Graph only; sent as given).
    pub fn service_source(self, source: &str) -> AlertFilter {
        self.compare(
            AlertField::ServiceSource,
            FilterValue::Text(source.to_owned()),
        )
    }

    /// `incidentId eq N` (Defender only: the id is a number there, sent unquoted).
    pub fn incident_id(mut self, id: u64) -> AlertFilter {
        self.clauses
            .push(Clause::Raw(format!("incidentId eq {id}")));
        self
    }

    /// `detectionSource eq '...'` (Defender only; sent as given).
    pub fn detection_source(self, source: &str) -> AlertFilter {
        self.compare(
            AlertField::DetectionSource,
            FilterValue::Text(source.to_owned()),
        )
    }

    /// `category eq '...'` (Defender only; sent as given).
    pub fn category(self, category: &str) -> AlertFilter {
        self.compare(AlertField::Category, FilterValue::Text(category.to_owned()))
    }

    /// Alerts updated at or after `t`.
    pub fn updated_since(self, t: SystemTime) -> AlertFilter {
        self.time(AlertField::LastUpdateTime, FilterOp::Ge, t)
    }

    /// Alerts created at or after `t`.
    pub fn created_since(self, t: SystemTime) -> AlertFilter {
        self.time(AlertField::CreatedTime, FilterOp::Ge, t)
    }

    /// A comparison of a time field.
    pub fn time(mut self, field: AlertField, op: FilterOp, t: SystemTime) -> AlertFilter {
        self.clauses
            .push(Clause::Compare(field, op, FilterValue::Time(t)));
        self
    }

    /// A field of this filter `surface` does not filter on, if any.
    pub fn unsupported_on(&self, surface: Surface) -> Option<AlertField> {
        unsupported_field(&self.clauses, surface)
    }

    /// True when it filters nothing.
    pub fn is_empty(&self) -> bool {
        self.clauses.is_empty()
    }

    /// The `$filter` value for `surface`, or `None` when empty.
    pub fn render(&self, surface: Surface) -> Option<String> {
        render_clauses(&self.clauses, surface)
    }
}

/// Defender's maximum page of alerts (`$top`, "the maximum value is 10,000", DD
/// defender-endpoint/api/get-alerts.md).
pub const DEFENDER_MAX_TOP: u32 = 10_000;

/// The page of alerts asked of Graph: `alerts_v2` documents no maximum, so the page is
/// Graph's incidents maximum, which Graph enforces elsewhere.
pub const GRAPH_MAX_TOP: u32 = 50;

/// The largest page of alerts asked of `surface`: one place for the default and the clamp.
pub fn max_top(surface: Surface) -> u32 {
    match surface {
        Surface::Graph => GRAPH_MAX_TOP,
        _ => DEFENDER_MAX_TOP,
    }
}

/// What to list: a filter and a page.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AlertQuery {
    /// The filter.
    pub filter: AlertFilter,
    /// Page size (`$top`), capped at [`max_top`]; the engine sends that maximum when
    /// this is `None`.
    pub top: Option<u32>,
    /// Alerts to skip (`$skip`).
    pub skip: Option<u32>,
    /// Defender: include each alert's evidence (`$expand=evidence`). Graph always
    /// includes `evidence` and ignores this.
    pub expand_evidence: bool,
}

impl AlertQuery {
    /// The path and query string for `surface`'s alerts collection at `path`.
    pub fn path_and_query(&self, path: &str, surface: Surface) -> String {
        let mut params = Vec::new();
        if let Some(f) = self.filter.render(surface) {
            params.push(format!("$filter={}", percent_encode(&f)));
        }
        if let Some(top) = self.top {
            params.push(format!("$top={}", top.clamp(1, max_top(surface))));
        }
        if let Some(skip) = self.skip.filter(|s| *s > 0) {
            params.push(format!("$skip={skip}"));
        }
        if self.expand_evidence && surface != Surface::Graph {
            params.push("$expand=evidence".to_owned());
        }
        if params.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{}", params.join("&"))
        }
    }
}

/// One page of an alerts listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct AlertPage {
    /// The alerts.
    #[serde(default, deserialize_with = "lenient_list")]
    pub value: Vec<Alert>,
    /// The link to the next page, when the server gives one.
    #[serde(
        rename = "@odata.nextLink",
        default,
        deserialize_with = "lenient_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub next_link: Option<String>,
    /// Fields nobody documented (`@odata.context`, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The change of `PATCH alerts/{id}`: only the fields set are sent. Defender takes the
/// comment in the same body (DD defender-endpoint/api/update-alert.md); Graph posts it
/// to the alert's comments (GD security-alert-post-comments.md).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AlertUpdate {
    /// New status.
    pub status: Option<AlertStatus>,
    /// New assignee.
    pub assigned_to: Option<String>,
    /// New classification.
    pub classification: Option<Classification>,
    /// New determination; sent as given.
    pub determination: Option<String>,
    /// A comment to add.
    pub comment: Option<String>,
}

impl AlertUpdate {
    /// True when nothing would change.
    pub fn is_empty(&self) -> bool {
        *self == AlertUpdate::default()
    }

    /// The PATCH body for `surface` (on Graph without the comment).
    pub fn to_json(&self, surface: Surface) -> Value {
        let mut m = Map::new();
        if let Some(s) = self.status {
            m.insert("status".into(), s.as_str(surface).into());
        }
        if let Some(a) = &self.assigned_to {
            m.insert("assignedTo".into(), a.clone().into());
        }
        if let Some(c) = self.classification {
            m.insert("classification".into(), c.as_str(surface).into());
        }
        if let Some(d) = &self.determination {
            m.insert("determination".into(), d.clone().into());
        }
        if let Some(c) = self.comment.as_ref().filter(|_| surface != Surface::Graph) {
            m.insert("comment".into(), c.clone().into());
        }
        Value::Object(m)
    }

    /// This update without its comment (what a Graph PATCH carries).
    pub fn without_comment(&self) -> AlertUpdate {
        AlertUpdate {
            comment: None,
            ..self.clone()
        }
    }

    /// Only this update's comment.
    pub fn only_comment(&self) -> AlertUpdate {
        AlertUpdate {
            comment: self.comment.clone(),
            ..AlertUpdate::default()
        }
    }

    /// Whether `alert` (read back after an update whose outcome is unknown) already shows
    /// every change of this update, by the rules of
    /// [`IncidentUpdate::is_applied`](crate::incidents::IncidentUpdate::is_applied).
    pub fn is_applied(&self, alert: &Alert, surface: Surface, since: SystemTime) -> bool {
        let same = crate::incidents::same_value;
        self.status
            .is_none_or(|s| same(s.as_str(surface), &alert.status))
            && self
                .classification
                .is_none_or(|c| same(c.as_str(surface), &alert.classification))
            && self
                .determination
                .as_deref()
                .is_none_or(|d| same(d, &alert.determination))
            && self
                .assigned_to
                .as_deref()
                .is_none_or(|a| same(a, &alert.assigned_to))
            && self
                .comment
                .as_deref()
                .is_none_or(|text| crate::incidents::has_comment(&alert.comments, text, since))
    }
}

/// What the update sets, in words: `status=Resolved, comment="contained"`.
impl fmt::Display for AlertUpdate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        if let Some(s) = self.status {
            parts.push(format!("status={}", s.as_str(Surface::DefenderEndpoint)));
        }
        if let Some(c) = self.classification {
            parts.push(format!(
                "classification={}",
                c.as_str(Surface::DefenderEndpoint)
            ));
        }
        if let Some(d) = &self.determination {
            parts.push(format!("determination={d:?}"));
        }
        if let Some(a) = &self.assigned_to {
            parts.push(format!("assignedTo={a:?}"));
        }
        if let Some(c) = &self.comment {
            parts.push(format!("comment={c:?}"));
        }
        f.write_str(&parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn filters_use_each_surface_s_names_and_spelling() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let f = AlertFilter::new()
            .status(AlertStatus::InProgress)
            .severity("HIGH")
            .assigned_to("o'brien@contoso.com")
            .created_since(t);
        assert_eq!(
            f.render(Surface::Graph).unwrap(),
            "status eq 'inProgress' and severity eq 'high' and assignedTo eq 'o''brien@contoso.com' and createdDateTime ge 2023-11-14T22:13:20Z"
        );
        assert_eq!(
            f.render(Surface::DefenderEndpoint).unwrap(),
            "status eq 'InProgress' and severity eq 'High' and assignedTo eq 'o''brien@contoso.com' and alertCreationTime ge 2023-11-14T22:13:20Z"
        );
        assert_eq!(AlertFilter::new().render(Surface::Graph), None);
    }

    #[test]
    fn fields_a_surface_does_not_filter_on_are_named() {
        let graph_only = AlertFilter::new().service_source("microsoftDefenderForEndpoint");
        assert_eq!(graph_only.unsupported_on(Surface::Graph), None);
        assert_eq!(
            graph_only.unsupported_on(Surface::DefenderEndpoint),
            Some(AlertField::ServiceSource)
        );
        let defender_only = AlertFilter::new().category("Execution");
        assert_eq!(
            defender_only.unsupported_on(Surface::Graph),
            Some(AlertField::Category)
        );
        assert_eq!(defender_only.unsupported_on(Surface::DefenderXdr), None);
    }

    #[test]
    fn the_page_is_clamped_per_surface() {
        let q = AlertQuery {
            top: Some(50_000),
            expand_evidence: true,
            ..AlertQuery::default()
        };
        assert_eq!(
            q.path_and_query("/api/alerts", Surface::DefenderEndpoint),
            "/api/alerts?$top=10000&$expand=evidence"
        );
        assert_eq!(
            q.path_and_query("/v1.0/security/alerts_v2", Surface::Graph),
            "/v1.0/security/alerts_v2?$top=50"
        );
    }

    #[test]
    fn updates_carry_the_comment_where_the_surface_takes_it() {
        let u = AlertUpdate {
            status: Some(AlertStatus::Resolved),
            classification: Some(Classification::FalsePositive),
            comment: Some("benign".into()),
            ..AlertUpdate::default()
        };
        assert_eq!(
            u.to_json(Surface::DefenderEndpoint),
            serde_json::json!({"status": "Resolved", "classification": "FalsePositive", "comment": "benign"})
        );
        assert_eq!(
            u.to_json(Surface::Graph),
            serde_json::json!({"status": "resolved", "classification": "falsePositive"})
        );
        assert!(u.without_comment().comment.is_none());
        assert_eq!(u.only_comment().comment.as_deref(), Some("benign"));
        assert_eq!(
            u.to_string(),
            "status=Resolved, classification=FalsePositive, comment=\"benign\""
        );
    }

    #[test]
    fn a_read_back_alert_shows_the_update_or_not() {
        let since = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let alert: Alert = serde_json::from_value(serde_json::json!({
            "id": "da1_2", "status": "resolved", "classification": "falsePositive",
            "comments": [{"comment": "benign", "createdByDisplayName": "a",
                          "createdDateTime": "2023-11-14T22:13:21Z"}]
        }))
        .unwrap();
        let u = AlertUpdate {
            status: Some(AlertStatus::Resolved),
            classification: Some(Classification::FalsePositive),
            comment: Some("benign".into()),
            ..AlertUpdate::default()
        };
        assert!(u.is_applied(&alert, Surface::Graph, since));
        // An older comment with the same text is not ours.
        assert!(!u.is_applied(&alert, Surface::Graph, since + Duration::from_secs(5)));
        let other = AlertUpdate {
            assigned_to: Some("someone".into()),
            ..AlertUpdate::default()
        };
        assert!(!other.is_applied(&alert, Surface::Graph, since));
        assert_eq!(alert.alert_id.as_deref(), Some("da1_2"));
    }

    #[test]
    fn ids_are_checked_before_they_reach_a_path() {
        assert!(AlertId::from("da637551227677560813_-961444813")
            .check()
            .is_ok());
        assert!(AlertId::from("../incidents").check().is_err());
        assert!(AlertId::from("").check().is_err());
    }
}
