//! Incidents: the models, the update body, the OData filter and paging.
//!
//! Models keep every field they do not know (`extra`) and never fail on a value of an
//! unexpected type: a real response carries undocumented fields, and a string field that
//! arrives as a number is kept as its text. Graph's names (`id`, `displayName`,
//! `createdDateTime`, ...) are read into the same fields as Defender XDR's. A model read
//! from a body writes back that body ([`Wire`]: the same names, numbers as numbers, no
//! field added); [`Incident::canonical`] writes Defender XDR's names on every surface.
//!
//! ```
//! use defender_core::incidents::{IncidentFilter, IncidentStatus};
//! use defender_core::Surface;
//! let f = IncidentFilter::new()
//!     .status(IncidentStatus::Active)
//!     .assigned_to("o'brien@contoso.com");
//! assert_eq!(
//!     f.render(Surface::DefenderXdr).unwrap(),
//!     "status eq 'Active' and assignedTo eq 'o''brien@contoso.com'"
//! );
//! assert_eq!(f.render(Surface::Graph).unwrap(), "status eq 'active' and assignedTo eq 'o''brien@contoso.com'");
//! ```

use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::surface::Surface;
use crate::timefmt::format_rfc3339;

/// An incident id: a number on Defender XDR, a string on Graph; kept as text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(transparent)]
pub struct IncidentId(pub String);

impl<'de> Deserialize<'de> for IncidentId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(IncidentId(
            value_text(Value::deserialize(d)?).unwrap_or_default(),
        ))
    }
}

impl fmt::Display for IncidentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<u64> for IncidentId {
    fn from(n: u64) -> Self {
        IncidentId(n.to_string())
    }
}

impl From<&str> for IncidentId {
    fn from(s: &str) -> Self {
        IncidentId(s.to_owned())
    }
}

impl IncidentId {
    /// Checks the id is safe to put in a URL path: letters, digits, `-`, `_`, `.`.
    pub fn check(&self) -> Result<&str, crate::Error> {
        check_path_id(&self.0, "an incident id")
    }
}

/// `s` when it is safe to put in a URL path (letters, digits, `-`, `_`, `.`; 1 to 128
/// bytes), else an [`Error::InvalidRequest`](crate::Error::InvalidRequest) naming `what`.
pub(crate) fn check_path_id<'a>(s: &'a str, what: &str) -> Result<&'a str, crate::Error> {
    if !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        Ok(s)
    } else {
        Err(crate::Error::InvalidRequest(format!("`{s}` is not {what}")))
    }
}

pub(crate) fn value_text(v: Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s),
        other => Some(other.to_string()),
    }
}

pub(crate) fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(value_text(Value::deserialize(d)?))
}

pub(crate) fn lenient_strings<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Array(items) => items.into_iter().filter_map(value_text).collect(),
        other => value_text(other).into_iter().collect(),
    })
}

pub(crate) fn lenient_list<'de, D: Deserializer<'de>, T: serde::de::DeserializeOwned>(
    d: D,
) -> Result<Vec<T>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Array(items) => items
            .into_iter()
            .filter_map(|v| serde_json::from_value(v).ok())
            .collect(),
        _ => Vec::new(),
    })
}

/// An incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(remote = "Self", rename_all = "camelCase")]
pub struct Incident {
    /// `incidentId` (Defender XDR) or `id` (Graph).
    #[serde(alias = "id", default)]
    pub incident_id: Option<IncidentId>,
    /// `incidentUri` / Graph's `incidentWebUrl`.
    #[serde(alias = "incidentWebUrl", default, deserialize_with = "lenient_string")]
    pub incident_uri: Option<String>,
    /// Set when the incident was merged into another.
    #[serde(default, deserialize_with = "lenient_string")]
    pub redirect_incident_id: Option<String>,
    /// `incidentName` / Graph's `displayName`.
    #[serde(alias = "displayName", default, deserialize_with = "lenient_string")]
    pub incident_name: Option<String>,
    /// `createdTime` / `createdDateTime`, as sent (ISO 8601).
    #[serde(
        alias = "createdDateTime",
        default,
        deserialize_with = "lenient_string"
    )]
    pub created_time: Option<String>,
    /// `lastUpdateTime` / `lastUpdateDateTime`, as sent.
    #[serde(
        alias = "lastUpdateDateTime",
        default,
        deserialize_with = "lenient_string"
    )]
    pub last_update_time: Option<String>,
    /// The assignee.
    #[serde(default, deserialize_with = "lenient_string")]
    pub assigned_to: Option<String>,
    /// `TruePositive`, `FalsePositive`, ... as sent.
    #[serde(default, deserialize_with = "lenient_string")]
    pub classification: Option<String>,
    /// As sent.
    #[serde(default, deserialize_with = "lenient_string")]
    pub determination: Option<String>,
    /// As sent.
    #[serde(default, deserialize_with = "lenient_string")]
    pub detection_source: Option<String>,
    /// `Active`, `Resolved`, ... as sent.
    #[serde(default, deserialize_with = "lenient_string")]
    pub status: Option<String>,
    /// `UnSpecified`, `Informational`, `Low`, `Medium`, `High`, as sent.
    #[serde(default, deserialize_with = "lenient_string")]
    pub severity: Option<String>,
    /// Tags (`tags`, Graph's `customTags`).
    #[serde(alias = "customTags", default, deserialize_with = "lenient_strings")]
    pub tags: Vec<String>,
    /// Comments.
    #[serde(default, deserialize_with = "lenient_list")]
    pub comments: Vec<Comment>,
    /// Alerts.
    #[serde(default, deserialize_with = "lenient_list")]
    pub alerts: Vec<Alert>,
    /// Fields nobody documented.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
    /// How the body named and typed the fields it had (see [`Wire`]).
    #[serde(skip)]
    pub wire: Wire,
}

/// A comment on an incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(remote = "Self", rename_all = "camelCase")]
pub struct Comment {
    /// The text.
    #[serde(default, deserialize_with = "lenient_string")]
    pub comment: Option<String>,
    /// Who wrote it.
    #[serde(default, deserialize_with = "lenient_string")]
    pub created_by: Option<String>,
    /// When (`createdTime` / `createdDateTime`).
    #[serde(
        alias = "createdDateTime",
        default,
        deserialize_with = "lenient_string"
    )]
    pub created_time: Option<String>,
    /// Fields nobody documented.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
    /// How the body named and typed the fields it had (see [`Wire`]).
    #[serde(skip)]
    pub wire: Wire,
}

/// An alert: inside an incident (Defender XDR's `alerts[]`, Graph's `$expand=alerts`) or
/// read on its own (Graph `alerts_v2`, Defender's `/api/alerts`). Graph's and Defender
/// for Endpoint's `evidence[]`, and every other field, are kept in `extra`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(remote = "Self", rename_all = "camelCase")]
pub struct Alert {
    /// `alertId` / `id`.
    #[serde(alias = "id", default, deserialize_with = "lenient_string")]
    pub alert_id: Option<String>,
    /// The incident it belongs to (a number on Defender, text on Graph; kept as text).
    #[serde(default, deserialize_with = "lenient_string")]
    pub incident_id: Option<String>,
    /// The assignee.
    #[serde(default, deserialize_with = "lenient_string")]
    pub assigned_to: Option<String>,
    /// The classification, as the surface spells it.
    #[serde(default, deserialize_with = "lenient_string")]
    pub classification: Option<String>,
    /// The determination, as the surface spells it.
    #[serde(default, deserialize_with = "lenient_string")]
    pub determination: Option<String>,
    /// Comments (Graph and Defender for Endpoint alerts carry them).
    #[serde(default, deserialize_with = "lenient_list")]
    pub comments: Vec<Comment>,
    /// The title.
    #[serde(default, deserialize_with = "lenient_string")]
    pub title: Option<String>,
    /// The description.
    #[serde(default, deserialize_with = "lenient_string")]
    pub description: Option<String>,
    /// The category.
    #[serde(default, deserialize_with = "lenient_string")]
    pub category: Option<String>,
    /// The status.
    #[serde(default, deserialize_with = "lenient_string")]
    pub status: Option<String>,
    /// The severity.
    #[serde(default, deserialize_with = "lenient_string")]
    pub severity: Option<String>,
    /// The product that raised it.
    #[serde(default, deserialize_with = "lenient_string")]
    pub service_source: Option<String>,
    /// When it was created (`creationTime`; Graph's `createdDateTime`; Defender for
    /// Endpoint's `alertCreationTime`).
    #[serde(
        alias = "createdDateTime",
        alias = "alertCreationTime",
        default,
        deserialize_with = "lenient_string"
    )]
    pub creation_time: Option<String>,
    /// MITRE ATT&CK techniques.
    #[serde(default, deserialize_with = "lenient_strings")]
    pub mitre_techniques: Vec<String>,
    /// Devices involved.
    #[serde(default, deserialize_with = "lenient_list")]
    pub devices: Vec<Device>,
    /// Entities involved.
    #[serde(default, deserialize_with = "lenient_list")]
    pub entities: Vec<Entity>,
    /// Everything else (`lastUpdatedTime`, `investigationState`, `actorName`, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
    /// How the body named and typed the fields it had (see [`Wire`]).
    #[serde(skip)]
    pub wire: Wire,
}

/// A device in an alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(remote = "Self", rename_all = "camelCase")]
pub struct Device {
    /// `mdatpDeviceId` / `deviceId`.
    #[serde(alias = "mdatpDeviceId", default, deserialize_with = "lenient_string")]
    pub device_id: Option<String>,
    /// The DNS name.
    #[serde(default, deserialize_with = "lenient_string")]
    pub device_dns_name: Option<String>,
    /// The OS platform.
    #[serde(default, deserialize_with = "lenient_string")]
    pub os_platform: Option<String>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
    /// How the body named and typed the fields it had (see [`Wire`]).
    #[serde(skip)]
    pub wire: Wire,
}

/// An entity in an alert (a file, a process, an IP, a user, a mailbox...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(remote = "Self", rename_all = "camelCase")]
pub struct Entity {
    /// `File`, `Process`, `Ip`, `User`, ...
    #[serde(default, deserialize_with = "lenient_string")]
    pub entity_type: Option<String>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
    /// How the body named and typed the fields it had (see [`Wire`]).
    #[serde(skip)]
    pub wire: Wire,
}

/// One page of an incidents listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct IncidentPage {
    /// The incidents.
    #[serde(default, deserialize_with = "lenient_list")]
    pub value: Vec<Incident>,
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
    /// The server's clock when it answered (its `Date` header), not part of the body:
    /// a sync bounds its windows by it rather than by the local clock.
    #[serde(skip)]
    pub server_date: Option<std::time::SystemTime>,
}

/// An incident's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IncidentStatus {
    /// Active.
    Active,
    /// Resolved.
    Resolved,
    /// In progress.
    InProgress,
    /// Merged into another incident.
    Redirected,
}

impl IncidentStatus {
    /// The value as `surface` spells it (`InProgress` on Defender XDR, `inProgress` on Graph).
    pub fn as_str(self, surface: Surface) -> &'static str {
        match (self, surface) {
            (IncidentStatus::Active, Surface::Graph) => "active",
            (IncidentStatus::Resolved, Surface::Graph) => "resolved",
            (IncidentStatus::InProgress, Surface::Graph) => "inProgress",
            (IncidentStatus::Redirected, Surface::Graph) => "redirected",
            (IncidentStatus::Active, _) => "Active",
            (IncidentStatus::Resolved, _) => "Resolved",
            (IncidentStatus::InProgress, _) => "InProgress",
            (IncidentStatus::Redirected, _) => "Redirected",
        }
    }
}

impl FromStr for IncidentStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().replace(['-', '_'], "").as_str() {
            "active" => Ok(IncidentStatus::Active),
            "resolved" => Ok(IncidentStatus::Resolved),
            "inprogress" => Ok(IncidentStatus::InProgress),
            "redirected" => Ok(IncidentStatus::Redirected),
            _ => Err(format!(
                "unknown status `{s}` (use Active, Resolved, InProgress or Redirected)"
            )),
        }
    }
}

/// An incident's classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Classification {
    /// A real threat.
    TruePositive,
    /// Expected activity, not malicious (Graph: `informationalExpectedActivity`).
    InformationalExpectedActivity,
    /// Not a threat.
    FalsePositive,
    /// Not yet set.
    Unknown,
}

impl Classification {
    /// The value as `surface` spells it.
    pub fn as_str(self, surface: Surface) -> &'static str {
        let pascal = match self {
            Classification::TruePositive => "TruePositive",
            Classification::InformationalExpectedActivity => "InformationalExpectedActivity",
            Classification::FalsePositive => "FalsePositive",
            Classification::Unknown => "Unknown",
        };
        if surface == Surface::Graph {
            match self {
                Classification::TruePositive => "truePositive",
                Classification::InformationalExpectedActivity => "informationalExpectedActivity",
                Classification::FalsePositive => "falsePositive",
                Classification::Unknown => "unknown",
            }
        } else {
            pascal
        }
    }
}

impl FromStr for Classification {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().replace(['-', '_'], "").as_str() {
            "truepositive" | "tp" => Ok(Classification::TruePositive),
            "informationalexpectedactivity" | "benignpositive" => Ok(Classification::InformationalExpectedActivity),
            "falsepositive" | "fp" => Ok(Classification::FalsePositive),
            "unknown" => Ok(Classification::Unknown),
            _ => Err(format!(
                "unknown classification `{s}` (use TruePositive, InformationalExpectedActivity or FalsePositive)"
            )),
        }
    }
}

/// The body of `PATCH incidents/{id}`: only the fields set are sent.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct IncidentUpdate {
    /// New status.
    pub status: Option<IncidentStatus>,
    /// New assignee.
    pub assigned_to: Option<String>,
    /// New classification.
    pub classification: Option<Classification>,
    /// New determination; the docs disagree on the values, so any is sent as is.
    pub determination: Option<String>,
    /// The full new list of tags.
    pub tags: Option<Vec<String>>,
    /// A comment to add.
    pub comment: Option<String>,
}

impl IncidentUpdate {
    /// True when nothing would change.
    pub fn is_empty(&self) -> bool {
        *self == IncidentUpdate::default()
    }

    /// The JSON body for `surface`.
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
        if let Some(t) = &self.tags {
            let key = if surface == Surface::Graph {
                "customTags"
            } else {
                "tags"
            };
            m.insert(key.into(), t.clone().into());
        }
        // Graph's incident has no `comment` property: comments are their own POST.
        if let Some(c) = self.comment.as_ref().filter(|_| surface != Surface::Graph) {
            m.insert("comment".into(), c.clone().into());
        }
        Value::Object(m)
    }

    /// The body of Graph's `POST /security/incidents/{id}/comments`, when the update
    /// carries a comment.
    pub fn graph_comment_body(&self) -> Option<Value> {
        self.comment.as_deref().map(alert_comment_body)
    }

    /// This update without its comment (what a Graph PATCH carries).
    pub fn without_comment(&self) -> IncidentUpdate {
        IncidentUpdate {
            comment: None,
            ..self.clone()
        }
    }

    /// Only this update's comment.
    pub fn only_comment(&self) -> IncidentUpdate {
        IncidentUpdate {
            comment: self.comment.clone(),
            ..IncidentUpdate::default()
        }
    }

    /// Whether `incident` (read back after an update whose outcome is unknown) already
    /// shows every change of this update: a status, classification, determination or
    /// assignee by value (as `surface` spells it, ignoring case), tags as the same set,
    /// and a comment by its text and a creation time not before `since` (comments
    /// without a readable time count: a duplicate is worse than a doubt).
    pub fn is_applied(&self, incident: &Incident, surface: Surface, since: SystemTime) -> bool {
        let same = same_value;
        if let Some(s) = self.status {
            if !same(s.as_str(surface), &incident.status) {
                return false;
            }
        }
        if let Some(c) = self.classification {
            if !same(c.as_str(surface), &incident.classification) {
                return false;
            }
        }
        if let Some(d) = &self.determination {
            if !same(d, &incident.determination) {
                return false;
            }
        }
        if let Some(a) = &self.assigned_to {
            if !same(a, &incident.assigned_to) {
                return false;
            }
        }
        if let Some(t) = &self.tags {
            let mut want: Vec<&str> = t.iter().map(String::as_str).collect();
            let mut have: Vec<&str> = incident.tags.iter().map(String::as_str).collect();
            want.sort_unstable();
            want.dedup();
            have.sort_unstable();
            have.dedup();
            if want != have {
                return false;
            }
        }
        if let Some(text) = &self.comment {
            if !has_comment(&incident.comments, text, since) {
                return false;
            }
        }
        true
    }
}

/// Graph's comment POST body (an `alertComment`, for incidents and alerts alike).
pub(crate) fn alert_comment_body(text: &str) -> Value {
    let mut m = Map::new();
    m.insert(
        "@odata.type".into(),
        "microsoft.graph.security.alertComment".into(),
    );
    m.insert("comment".into(), text.into());
    Value::Object(m)
}

/// Whether a read-back value `have` is `want`, ignoring case and surrounding blanks.
pub(crate) fn same_value(want: &str, have: &Option<String>) -> bool {
    have.as_deref()
        .is_some_and(|h| h.trim().eq_ignore_ascii_case(want.trim()))
}

/// Whether `comments` hold `text` written at or after `since` (a comment without a
/// readable time counts: a duplicate is worse than a doubt).
pub(crate) fn has_comment(comments: &[Comment], text: &str, since: SystemTime) -> bool {
    comments.iter().any(|c| {
        c.comment.as_deref() == Some(text)
            && c.created_time
                .as_deref()
                .and_then(crate::timefmt::parse_rfc3339)
                .is_none_or(|at| at >= since)
    })
}

/// What the update sets, in words: `status=Resolved, comment="contained"`.
impl fmt::Display for IncidentUpdate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        if let Some(s) = self.status {
            parts.push(format!("status={}", s.as_str(Surface::DefenderXdr)));
        }
        if let Some(c) = self.classification {
            parts.push(format!("classification={}", c.as_str(Surface::DefenderXdr)));
        }
        if let Some(d) = &self.determination {
            parts.push(format!("determination={d:?}"));
        }
        if let Some(a) = &self.assigned_to {
            parts.push(format!("assignedTo={a:?}"));
        }
        if let Some(t) = &self.tags {
            parts.push(format!("tags={t:?}"));
        }
        if let Some(c) = &self.comment {
            parts.push(format!("comment={c:?}"));
        }
        f.write_str(&parts.join(", "))
    }
}

/// Graph's answer to a comment POST: the incident's comments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CommentCollection {
    /// The comments, oldest first.
    #[serde(default, deserialize_with = "lenient_list")]
    pub value: Vec<Comment>,
    /// Fields nobody documented (`@odata.context`, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The four fields the incidents API filters on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FilterField {
    /// `lastUpdateTime` / `lastUpdateDateTime`.
    LastUpdateTime,
    /// `createdTime` / `createdDateTime`.
    CreatedTime,
    /// `status`.
    Status,
    /// `assignedTo`.
    AssignedTo,
    /// `severity` (Graph only).
    Severity,
    /// `classification` (Graph only).
    Classification,
    /// `determination` (Graph only).
    Determination,
}

impl FilterField {
    /// Whether `surface` filters incidents on this field: Defender XDR documents
    /// `lastUpdateTime`, `createdTime`, `status` and `assignedTo` only; Graph also takes
    /// `severity`, `classification` and `determination`.
    pub fn supported_on(self, surface: Surface) -> bool {
        match self {
            FilterField::Severity | FilterField::Classification | FilterField::Determination => {
                surface == Surface::Graph
            }
            _ => true,
        }
    }

    /// The property's name on `surface`.
    pub fn name(self, surface: Surface) -> &'static str {
        match (self, surface) {
            (FilterField::Severity, _) => "severity",
            (FilterField::Classification, _) => "classification",
            (FilterField::Determination, _) => "determination",
            (FilterField::LastUpdateTime, Surface::Graph) => "lastUpdateDateTime",
            (FilterField::CreatedTime, Surface::Graph) => "createdDateTime",
            (FilterField::LastUpdateTime, _) => "lastUpdateTime",
            (FilterField::CreatedTime, _) => "createdTime",
            (FilterField::Status, _) => "status",
            (FilterField::AssignedTo, _) => "assignedTo",
        }
    }
}

/// An OData comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FilterOp {
    /// `eq`
    Eq,
    /// `ne`
    Ne,
    /// `gt`
    Gt,
    /// `ge`
    Ge,
    /// `lt`
    Lt,
    /// `le`
    Le,
}

impl FilterOp {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            FilterOp::Eq => "eq",
            FilterOp::Ne => "ne",
            FilterOp::Gt => "gt",
            FilterOp::Ge => "ge",
            FilterOp::Lt => "lt",
            FilterOp::Le => "le",
        }
    }
}

/// A filterable property: its name on each surface.
pub(crate) trait Field: Copy {
    fn name(self, surface: Surface) -> &'static str;
    fn supported_on(self, surface: Surface) -> bool;
}

impl Field for FilterField {
    fn name(self, surface: Surface) -> &'static str {
        FilterField::name(self, surface)
    }
    fn supported_on(self, surface: Surface) -> bool {
        FilterField::supported_on(self, surface)
    }
}

/// One clause of a `$filter`: a comparison, or OData written by hand.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Clause<F> {
    Compare(F, FilterOp, FilterValue),
    Raw(String),
}

/// A compared value: text (quoted and escaped), an enum value spelled per surface
/// (Graph's camel case, Defender's Pascal case), or a time.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum FilterValue {
    Text(String),
    Spelled {
        graph: &'static str,
        defender: &'static str,
    },
    Time(SystemTime),
}

impl FilterValue {
    pub(crate) fn spelled(as_str: impl Fn(Surface) -> &'static str) -> FilterValue {
        FilterValue::Spelled {
            graph: as_str(Surface::Graph),
            defender: as_str(Surface::DefenderXdr),
        }
    }
}

/// The first field of `clauses` that `surface` does not filter on.
pub(crate) fn unsupported_field<F: Field>(clauses: &[Clause<F>], surface: Surface) -> Option<F> {
    clauses.iter().find_map(|c| match c {
        Clause::Compare(f, ..) if !f.supported_on(surface) => Some(*f),
        _ => None,
    })
}

/// `clauses` as one `$filter` value for `surface`, joined with `and`; `None` when empty.
pub(crate) fn render_clauses<F: Field>(clauses: &[Clause<F>], surface: Surface) -> Option<String> {
    if clauses.is_empty() {
        return None;
    }
    let several = clauses.len() > 1;
    let parts: Vec<String> = clauses
        .iter()
        .map(|c| match c {
            Clause::Raw(s) if several => format!("({s})"),
            Clause::Raw(s) => s.clone(),
            Clause::Compare(field, op, value) => {
                let v = match value {
                    FilterValue::Text(s) => format!("'{}'", s.replace('\'', "''")),
                    FilterValue::Spelled { graph, .. } if surface == Surface::Graph => {
                        format!("'{graph}'")
                    }
                    FilterValue::Spelled { defender, .. } => format!("'{defender}'"),
                    FilterValue::Time(t) => format_rfc3339(*t),
                };
                format!("{} {} {v}", field.name(surface), op.as_str())
            }
        })
        .collect();
    Some(parts.join(" and "))
}

/// A `$filter` for incidents, joined with `and`, with string values escaped.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct IncidentFilter {
    clauses: Vec<Clause<FilterField>>,
}

impl IncidentFilter {
    /// An empty filter (every incident).
    pub fn new() -> IncidentFilter {
        IncidentFilter::default()
    }

    /// A filter written by hand in OData; sent as is, `and`-ed with the other clauses.
    pub fn raw(odata: impl Into<String>) -> IncidentFilter {
        IncidentFilter::new().and_raw(odata)
    }

    /// Adds a hand-written clause.
    pub fn and_raw(mut self, odata: impl Into<String>) -> IncidentFilter {
        let s = odata.into();
        if !s.trim().is_empty() {
            self.clauses.push(Clause::Raw(s));
        }
        self
    }

    /// `status eq ...`.
    pub fn status(mut self, status: IncidentStatus) -> IncidentFilter {
        self.clauses.push(Clause::Compare(
            FilterField::Status,
            FilterOp::Eq,
            FilterValue::spelled(|s| status.as_str(s)),
        ));
        self
    }

    /// `assignedTo eq '...'`.
    pub fn assigned_to(mut self, who: &str) -> IncidentFilter {
        self.clauses.push(Clause::Compare(
            FilterField::AssignedTo,
            FilterOp::Eq,
            FilterValue::Text(who.to_owned()),
        ));
        self
    }

    /// `severity eq '...'` (Graph only: `informational`, `low`, `medium`, `high`).
    pub fn severity(mut self, severity: &str) -> IncidentFilter {
        self.clauses.push(Clause::Compare(
            FilterField::Severity,
            FilterOp::Eq,
            FilterValue::Text(severity.to_owned()),
        ));
        self
    }

    /// `classification eq '...'` (Graph only).
    pub fn classification(mut self, classification: Classification) -> IncidentFilter {
        self.clauses.push(Clause::Compare(
            FilterField::Classification,
            FilterOp::Eq,
            FilterValue::spelled(|s| classification.as_str(s)),
        ));
        self
    }

    /// `determination eq '...'` (Graph only; any value is sent as given).
    pub fn determination(mut self, determination: &str) -> IncidentFilter {
        self.clauses.push(Clause::Compare(
            FilterField::Determination,
            FilterOp::Eq,
            FilterValue::Text(determination.to_owned()),
        ));
        self
    }

    /// A field of this filter `surface` does not filter on, if any.
    pub fn unsupported_on(&self, surface: Surface) -> Option<FilterField> {
        unsupported_field(&self.clauses, surface)
    }

    /// `lastUpdateTime ge ...`.
    pub fn updated_since(self, t: SystemTime) -> IncidentFilter {
        self.time(FilterField::LastUpdateTime, FilterOp::Ge, t)
    }

    /// `createdTime ge ...`.
    pub fn created_since(self, t: SystemTime) -> IncidentFilter {
        self.time(FilterField::CreatedTime, FilterOp::Ge, t)
    }

    /// A comparison of a time field.
    pub fn time(mut self, field: FilterField, op: FilterOp, t: SystemTime) -> IncidentFilter {
        self.clauses
            .push(Clause::Compare(field, op, FilterValue::Time(t)));
        self
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

/// What to list: a filter and the page size (at most 100, the API's maximum).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct IncidentQuery {
    /// The filter.
    pub filter: IncidentFilter,
    /// Page size (`$top`), capped at the surface's maximum ([`max_top`]: 50 on Graph,
    /// 100 on Defender XDR); the engine sends that maximum when this is `None`.
    pub top: Option<u32>,
    /// Incidents to skip (`$skip`).
    pub skip: Option<u32>,
    /// Graph: include each incident's alerts (`$expand=alerts`; Graph lists incidents
    /// without them otherwise). Defender XDR always includes them and ignores this.
    pub expand_alerts: bool,
}

/// Defender XDR's maximum page size (`$top`, "at most 100", api-list-incidents).
pub const MAX_TOP: u32 = 100;

/// Graph's maximum page size for incidents: more is a 400 ("The limit of '50' for Top
/// query has been exceeded").
pub const GRAPH_MAX_TOP: u32 = 50;

/// The largest page `surface` serves: one place for the default and the clamp.
pub fn max_top(surface: Surface) -> u32 {
    match surface {
        Surface::Graph => GRAPH_MAX_TOP,
        _ => MAX_TOP,
    }
}

impl IncidentQuery {
    /// The path and query string for `surface`'s incidents collection at `path`.
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
        if self.expand_alerts && surface == Surface::Graph {
            params.push("$expand=alerts".to_owned());
        }
        if params.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{}", params.join("&"))
        }
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Incident {
    /// The incident as if built in code: written back with Defender XDR's names and every
    /// field, whichever surface it was read from (alerts, comments, devices and entities
    /// too). For output that must look the same on every surface.
    pub fn canonical(mut self) -> Incident {
        self.wire = Wire::default();
        for c in &mut self.comments {
            c.wire = Wire::default();
        }
        for a in &mut self.alerts {
            a.wire = Wire::default();
            for c in &mut a.comments {
                c.wire = Wire::default();
            }
            for d in &mut a.devices {
                d.wire = Wire::default();
            }
            for e in &mut a.entities {
                e.wire = Wire::default();
            }
        }
        self
    }
}

/// Serde for a model read and written through its [`Wire`]: read with the derived
/// (remote) impl and remember how the body named its fields; write the derived form and
/// restore those names with the model's field table.
macro_rules! wire_serde {
    ($($model:ident => $fields:ident),+ $(,)?) => {$(
        impl<'de> Deserialize<'de> for $model {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let map = Map::<String, Value>::deserialize(d)?;
                let wire = Wire::observe(&map);
                let mut model =
                    $model::deserialize(Value::Object(map)).map_err(serde::de::Error::custom)?;
                model.wire = wire;
                Ok(model)
            }
        }

        impl Serialize for $model {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let canonical = $model::serialize(self, serde_json::value::Serializer)
                    .map_err(serde::ser::Error::custom)?;
                self.wire.restore(canonical, $fields).serialize(s)
            }
        }
    )+};
}

wire_serde! {
    Incident => INCIDENT_FIELDS,
    Comment => COMMENT_FIELDS,
    Alert => ALERT_FIELDS,
    Device => DEVICE_FIELDS,
    Entity => ENTITY_FIELDS,
}

/// A model's typed fields: the name it writes, and the other names it reads.
type Fields = &'static [(&'static str, &'static [&'static str])];

const INCIDENT_FIELDS: Fields = &[
    ("incidentId", &["id"]),
    ("incidentUri", &["incidentWebUrl"]),
    ("redirectIncidentId", &[]),
    ("incidentName", &["displayName"]),
    ("createdTime", &["createdDateTime"]),
    ("lastUpdateTime", &["lastUpdateDateTime"]),
    ("assignedTo", &[]),
    ("classification", &[]),
    ("determination", &[]),
    ("detectionSource", &[]),
    ("status", &[]),
    ("severity", &[]),
    ("tags", &["customTags"]),
    ("comments", &[]),
    ("alerts", &[]),
];

const COMMENT_FIELDS: Fields = &[
    ("comment", &[]),
    ("createdBy", &[]),
    ("createdTime", &["createdDateTime"]),
];

const ALERT_FIELDS: Fields = &[
    ("alertId", &["id"]),
    ("incidentId", &[]),
    ("assignedTo", &[]),
    ("classification", &[]),
    ("determination", &[]),
    ("comments", &[]),
    ("title", &[]),
    ("description", &[]),
    ("category", &[]),
    ("status", &[]),
    ("severity", &[]),
    ("serviceSource", &[]),
    ("creationTime", &["createdDateTime", "alertCreationTime"]),
    ("mitreTechniques", &[]),
    ("devices", &[]),
    ("entities", &[]),
];

const DEVICE_FIELDS: Fields = &[
    ("deviceId", &["mdatpDeviceId"]),
    ("deviceDnsName", &[]),
    ("osPlatform", &[]),
];

const ENTITY_FIELDS: Fields = &[("entityType", &[])];

/// How a model was written on the wire, so that writing it back gives the body it was
/// read from: Graph's names stay Graph's (`id`, `displayName`, `createdDateTime`, ...),
/// a numeric id stays a number, and a field the body did not have is not added (unless
/// it was given a value since). A model built in code has none of this and writes every
/// field under Defender XDR's names.
///
/// The wire form is not part of the value: two models with the same fields are equal
/// however they were read.
#[derive(Debug, Clone, Default)]
pub struct Wire {
    /// Read from a body (else: built in code).
    read: bool,
    /// The keys the body had.
    keys: Vec<String>,
    /// The keys whose values were numbers.
    numbers: Vec<String>,
}

impl PartialEq for Wire {
    fn eq(&self, _: &Wire) -> bool {
        true
    }
}

impl Wire {
    fn observe(map: &Map<String, Value>) -> Wire {
        Wire {
            read: true,
            keys: map.keys().cloned().collect(),
            numbers: map
                .iter()
                .filter(|(_, v)| v.is_number())
                .map(|(k, _)| k.clone())
                .collect(),
        }
    }

    fn had(&self, key: &str) -> bool {
        self.keys.iter().any(|k| k == key)
    }

    /// Renames the canonical fields of `value` back to the names the body used.
    fn restore(&self, value: Value, fields: Fields) -> Value {
        let Value::Object(mut out) = value else {
            return value;
        };
        if !self.read {
            return Value::Object(out);
        }
        for (canonical, aliases) in fields {
            let Some(v) = out.remove(*canonical) else {
                continue;
            };
            let name = std::iter::once(*canonical)
                .chain(aliases.iter().copied())
                .find(|k| self.had(k));
            match name {
                // The body had no such field and the model was given none since.
                None if v.is_null() || v.as_array().is_some_and(Vec::is_empty) => {}
                None => {
                    out.insert((*canonical).to_owned(), v);
                }
                Some(name) => {
                    let v = match v {
                        Value::String(text) if self.numbers.iter().any(|n| n == name) => text
                            .parse::<u64>()
                            .map(Value::from)
                            .or_else(|_| text.parse::<i64>().map(Value::from))
                            .unwrap_or(Value::String(text)),
                        other => other,
                    };
                    out.insert(name.to_owned(), v);
                }
            }
        }
        Value::Object(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn graph_filters_on_severity_classification_and_determination() {
        let f = IncidentFilter::new()
            .severity("high")
            .classification(Classification::TruePositive)
            .determination("o'malware");
        assert_eq!(
            f.render(Surface::Graph).unwrap(),
            "severity eq 'high' and classification eq 'truePositive' and determination eq 'o''malware'"
        );
        assert_eq!(f.unsupported_on(Surface::Graph), None);
        assert_eq!(
            f.unsupported_on(Surface::DefenderXdr),
            Some(FilterField::Severity)
        );
        assert_eq!(
            IncidentFilter::new()
                .status(IncidentStatus::Active)
                .unsupported_on(Surface::DefenderXdr),
            None
        );
    }

    #[test]
    fn pages_are_clamped_per_surface() {
        let q = IncidentQuery {
            top: Some(100),
            ..IncidentQuery::default()
        };
        assert_eq!(
            q.path_and_query("/v1.0/security/incidents", Surface::Graph),
            "/v1.0/security/incidents?$top=50"
        );
        assert_eq!(
            q.path_and_query("/api/incidents", Surface::DefenderXdr),
            "/api/incidents?$top=100"
        );
        let expanded = IncidentQuery {
            expand_alerts: true,
            ..q
        };
        assert_eq!(
            expanded.path_and_query("/v1.0/security/incidents", Surface::Graph),
            "/v1.0/security/incidents?$top=50&$expand=alerts"
        );
        assert_eq!(
            expanded.path_and_query("/api/incidents", Surface::DefenderXdr),
            "/api/incidents?$top=100"
        );
    }

    #[test]
    fn decodes_xdr_and_graph_with_unknown_fields() {
        let xdr = br#"{"@odata.context":"x#Incidents","value":[{"incidentId":924565,"incidentName":"Ransomware","createdTime":"2020-09-06T14:46:57.0733333Z","lastUpdateTime":"2020-09-06T14:46:57.29Z","assignedTo":null,"status":"Active","severity":"High","tags":["a"],"comments":[{"comment":"c","createdBy":"me","createdTime":"2020-09-06T14:46:57Z"}],"alerts":[{"alertId":"da1","mitreTechniques":["T1059"],"devices":[{"mdatpDeviceId":"d1","osPlatform":"Windows10","newField":1}],"entities":[{"entityType":"File","sha1":"x"}],"actorName":null}],"brandNewField":{"x":1}}]}"#;
        let page: IncidentPage = serde_json::from_slice(xdr).unwrap();
        let inc = &page.value[0];
        assert_eq!(inc.incident_id, Some(IncidentId("924565".into())));
        assert_eq!(inc.alerts[0].devices[0].device_id.as_deref(), Some("d1"));
        assert!(inc.extra.contains_key("brandNewField"));
        assert_eq!(
            inc.alerts[0].entities[0].entity_type.as_deref(),
            Some("File")
        );
        let graph = br#"{"value":[{"id":"29","displayName":"x","createdDateTime":"2021-08-13T08:43:35.5533333Z","status":"active","customTags":["t"],"severity":5}],"@odata.nextLink":"https://graph.microsoft.com/v1.0/security/incidents?$skip=10"}"#;
        let page: IncidentPage = serde_json::from_slice(graph).unwrap();
        assert_eq!(page.value[0].incident_id.as_ref().unwrap().0, "29");
        assert_eq!(page.value[0].tags, vec!["t".to_owned()]);
        assert_eq!(page.value[0].severity.as_deref(), Some("5"));
        assert!(page.next_link.is_some());
    }

    #[test]
    fn filters_render_and_escape() {
        let t = UNIX_EPOCH + Duration::from_secs(1_706_774_400);
        let f = IncidentFilter::new()
            .updated_since(t)
            .and_raw("severity eq 'High'");
        assert_eq!(
            f.render(Surface::DefenderXdr).unwrap(),
            "lastUpdateTime ge 2024-02-01T08:00:00Z and (severity eq 'High')"
        );
        assert_eq!(
            f.render(Surface::Graph).unwrap(),
            "lastUpdateDateTime ge 2024-02-01T08:00:00Z and (severity eq 'High')"
        );
        let q = IncidentQuery {
            filter: IncidentFilter::new().assigned_to("a b&c"),
            top: Some(500),
            skip: Some(0),
            expand_alerts: false,
        };
        assert_eq!(
            q.path_and_query("/api/incidents", Surface::DefenderXdr),
            "/api/incidents?$filter=assignedTo%20eq%20%27a%20b%26c%27&$top=100"
        );
        assert_eq!(IncidentFilter::raw("  ").render(Surface::Graph), None);
    }

    #[test]
    fn update_bodies() {
        let u = IncidentUpdate {
            status: Some(IncidentStatus::Resolved),
            classification: Some(Classification::TruePositive),
            tags: Some(vec!["x".into()]),
            ..Default::default()
        };
        assert_eq!(
            u.to_json(Surface::DefenderXdr),
            serde_json::json!({"status":"Resolved","classification":"TruePositive","tags":["x"]})
        );
        assert_eq!(
            u.to_json(Surface::Graph),
            serde_json::json!({"status":"resolved","classification":"truePositive","customTags":["x"]})
        );
        assert!(IncidentUpdate::default().is_empty());
        assert!("in_progress".parse::<IncidentStatus>().is_ok());
        assert!("nope".parse::<Classification>().is_err());
    }

    #[test]
    fn a_model_writes_back_the_body_it_read() {
        let graph = br#"{"id":"41807","displayName":"x","customTags":["a"],"status":"active","comments":[{"comment":"c","createdDateTime":"t"}]}"#;
        let mut incident: Incident = serde_json::from_slice(graph).unwrap();
        assert_eq!(incident.incident_id, Some(IncidentId::from("41807")));
        let back = serde_json::to_value(&incident).unwrap();
        assert_eq!(back, serde_json::from_slice::<Value>(graph).unwrap());

        // Changed fields keep the body's names; a field given a value is added.
        incident.status = Some("resolved".into());
        incident.assigned_to = Some("me".into());
        let back = serde_json::to_value(&incident).unwrap();
        assert_eq!(back["status"], "resolved");
        assert_eq!(back["assignedTo"], "me");
        assert!(back.get("incidentId").is_none() && back.get("determination").is_none());

        // Defender XDR's numeric id stays a number.
        let xdr = br#"{"incidentId":924565,"alerts":[{"alertId":"a","incidentId":924565,"devices":[{"mdatpDeviceId":"d","osBuild":14393}]}]}"#;
        let incident: Incident = serde_json::from_slice(xdr).unwrap();
        assert_eq!(incident.incident_id, Some(IncidentId::from(924565)));
        assert_eq!(
            incident.alerts[0].devices[0].device_id.as_deref(),
            Some("d")
        );
        let back = serde_json::to_value(&incident).unwrap();
        assert_eq!(back, serde_json::from_slice::<Value>(xdr).unwrap());

        // Equal fields are equal models, however they were read.
        let built = Incident {
            incident_id: Some(IncidentId::from(924565)),
            ..Incident::default()
        };
        let read: Incident = serde_json::from_slice(br#"{"incidentId":924565}"#).unwrap();
        assert_eq!(built, read);
    }

    #[test]
    fn a_model_built_in_code_writes_every_field_with_defender_names() {
        let built = Incident {
            incident_id: Some(IncidentId::from("7")),
            ..Incident::default()
        };
        let v = serde_json::to_value(&built).unwrap();
        assert_eq!(v["incidentId"], "7");
        assert!(v["status"].is_null() && v["tags"] == serde_json::json!([]));

        let graph =
            br#"{"id":"41807","displayName":"x","alerts":[{"id":"a","createdDateTime":"t"}]}"#;
        let read: Incident = serde_json::from_slice(graph).unwrap();
        let v = serde_json::to_value(read.canonical()).unwrap();
        assert_eq!(v["incidentId"], "41807");
        assert_eq!(v["incidentName"], "x");
        assert_eq!(v["alerts"][0]["alertId"], "a");
        assert_eq!(v["alerts"][0]["creationTime"], "t");
        assert!(v["severity"].is_null());
    }

    #[test]
    fn ids_are_checked_before_they_reach_a_path() {
        assert!(IncidentId::from(42).check().is_ok());
        assert!(IncidentId::from("../admin").check().is_err());
        assert!(IncidentId::from("").check().is_err());
    }
}
