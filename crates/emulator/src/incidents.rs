//! Incidents: a deterministic set generated from the seed, their `$filter` values,
//! updates, and the Defender XDR and Graph shapes. Each incident holds its alerts
//! ([`crate::alerts`]), which the alert routes read and update in place.

use serde_json::{json, Map, Value};

use crate::alerts::Alert;
use crate::filter::{Field, FieldValue};
use crate::rng::Rng;
use defender_core::timefmt::format_rfc3339_ms;

/// The XDR incident statuses (DD api-update-incidents.md).
pub const STATUSES: [&str; 4] = ["Active", "Resolved", "InProgress", "Redirected"];
/// The XDR classifications a PATCH may set.
pub const CLASSIFICATIONS: [&str; 3] = [
    "TruePositive",
    "InformationalExpectedActivity",
    "FalsePositive",
];
/// The severities.
pub const SEVERITIES: [&str; 5] = ["UnSpecified", "Informational", "Low", "Medium", "High"];

/// Which service's spelling: Defender's (XDR and Defender for Endpoint: `InProgress`,
/// `lastUpdateTime`) or Graph's (`inProgress`, `lastUpdateDateTime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Defender XDR's and Defender for Endpoint's.
    Xdr,
    /// Microsoft Graph's.
    Graph,
}

/// The first generated incident id.
pub const FIRST_INCIDENT_ID: i64 = 1000;

/// One comment on an incident or an alert.
#[derive(Debug, Clone, PartialEq)]
pub struct Comment {
    /// The text.
    pub comment: String,
    /// Who wrote it.
    pub created_by: String,
    /// When, unix ms.
    pub created_ms: i64,
}

impl Comment {
    /// Defender's shape (DD api-list-incidents.md, get-alerts.md):
    /// `{comment, createdBy, createdTime}`.
    pub fn to_xdr(&self) -> Value {
        json!({
            "comment": self.comment,
            "createdBy": self.created_by,
            "createdTime": format_rfc3339_ms(self.created_ms),
        })
    }

    /// Graph's `alertComment` (GD security-alertcomment.md): `{comment,
    /// createdByDisplayName, createdDateTime}`, with its `@odata.type` first when `typed`
    /// (as the comments POST answers it).
    pub fn to_graph(&self, typed: bool) -> Value {
        let mut m = Map::new();
        if typed {
            m.insert(
                "@odata.type".into(),
                "#microsoft.graph.security.alertComment".into(),
            );
        }
        m.insert("comment".into(), self.comment.clone().into());
        m.insert(
            "createdByDisplayName".into(),
            self.created_by.clone().into(),
        );
        m.insert(
            "createdDateTime".into(),
            format_rfc3339_ms(self.created_ms).into(),
        );
        Value::Object(m)
    }
}

/// One incident as the emulator stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct Incident {
    /// `incidentId`.
    pub id: i64,
    /// `incidentName`.
    pub name: String,
    /// `createdTime`, unix ms.
    pub created_ms: i64,
    /// `lastUpdateTime`, unix ms.
    pub last_update_ms: i64,
    /// `assignedTo`.
    pub assigned_to: Option<String>,
    /// `classification` (XDR spelling).
    pub classification: String,
    /// `determination` (XDR spelling).
    pub determination: String,
    /// `detectionSource`.
    pub detection_source: String,
    /// `status` (XDR spelling).
    pub status: String,
    /// `severity` (XDR spelling).
    pub severity: String,
    /// `redirectIncidentId`.
    pub redirect_incident_id: Option<i64>,
    /// `tags`.
    pub tags: Vec<String>,
    /// `comments`.
    pub comments: Vec<Comment>,
    /// `alerts`, each kept in the XDR shape (devices and entities inside).
    pub alerts: Vec<Alert>,
}

const TITLES: [&str; 12] = [
    "Multi-stage incident involving Initial access & Execution",
    "Suspicious PowerShell command line",
    "Ransomware activity on one endpoint",
    "Email messages containing malicious URL removed after delivery",
    "Suspicious sign-in from an anonymous IP address",
    "Credential theft activity involving multiple users",
    "Suspicious process injection observed",
    "Unusual volume of file deletion",
    "Possible lateral movement via remote services",
    "Malware was detected in an email attachment",
    "Impossible travel activity",
    "Suspicious scheduled task creation",
];
const SOURCES: [&str; 5] = [
    "WindowsDefenderAtp",
    "OfficeATP",
    "MCAS",
    "AzureADIdentityProtection",
    "CustomDetection",
];
const SERVICE_SOURCES: [&str; 4] = [
    "MicrosoftDefenderForEndpoint",
    "MicrosoftDefenderForOffice365",
    "MicrosoftCloudAppSecurity",
    "AzureAdIdentityProtection",
];
const CATEGORIES: [&str; 6] = [
    "InitialAccess",
    "Execution",
    "Persistence",
    "CredentialAccess",
    "LateralMovement",
    "Exfiltration",
];
const ANALYSTS: [&str; 4] = [
    "alice@contoso.com",
    "bob@contoso.com",
    "carol@contoso.com",
    "secops-automation@contoso.com",
];
const DETERMINATIONS: [&str; 6] = [
    "NotAvailable",
    "Malware",
    "Phishing",
    "SecurityTesting",
    "Apt",
    "Other",
];
const TAGS: [&str; 5] = [
    "Ransomware",
    "Phishing",
    "VIP",
    "Lateral Movement",
    "Auto-triaged",
];
const TECHNIQUES: [&str; 6] = [
    "T1059.001",
    "T1566.001",
    "T1078",
    "T1021.001",
    "T1486",
    "T1053.005",
];
const DEVICES: [&str; 6] = [
    "ws-0141",
    "ws-0388",
    "srv-db-02",
    "laptop-ceo",
    "srv-web-01",
    "ws-1207",
];
const USERS: [&str; 5] = ["jdoe", "asmith", "mrossi", "kyamada", "admin-bk"];

/// Generates `count` incidents from `seed`, created over the 30 days before `anchor_ms`.
pub fn generate(seed: u64, count: usize, anchor_ms: i64) -> Vec<Incident> {
    let mut rng = Rng::new(seed, "incidents");
    let span_ms: i64 = 30 * 86_400_000;
    // Creation times ascending with the id.
    let mut created: Vec<i64> = (0..count)
        .map(|_| anchor_ms - span_ms + rng.below(span_ms as u64) as i64)
        .collect();
    created.sort_unstable();
    let mut out = Vec::with_capacity(count);
    for (i, created_ms) in created.into_iter().enumerate() {
        let id = FIRST_INCIDENT_ID + i as i64;
        let age = anchor_ms - created_ms;
        let last_update_ms = created_ms + rng.below(age.max(1) as u64) as i64;
        out.push(build(&mut rng, id, created_ms, last_update_ms));
    }
    out
}

/// One incident with its alerts, the rest of its fields drawn from `rng`.
pub(crate) fn build(rng: &mut Rng, id: i64, created_ms: i64, last_update_ms: i64) -> Incident {
    let status = match rng.below(10) {
        0..=4 => "Active",
        5..=7 => "Resolved",
        8 => "InProgress",
        _ => "Redirected",
    };
    let severity = *rng.pick(&SEVERITIES[1..]);
    let (classification, determination) = if status == "Resolved" {
        match rng.below(3) {
            0 => ("TruePositive", *rng.pick(&DETERMINATIONS[1..])),
            1 => ("FalsePositive", "Clean"),
            _ => ("InformationalExpectedActivity", "SecurityTesting"),
        }
    } else {
        ("Unknown", "NotAvailable")
    };
    let assigned_to = if rng.chance(0.6) {
        Some((*rng.pick(&ANALYSTS)).to_owned())
    } else {
        None
    };
    let title = *rng.pick(&TITLES);
    let detection_source = *rng.pick(&SOURCES);
    let mut tags = Vec::new();
    for _ in 0..rng.below(3) {
        let t = (*rng.pick(&TAGS)).to_owned();
        if !tags.contains(&t) {
            tags.push(t);
        }
    }
    let comments = (0..rng.below(3))
        .map(|k| Comment {
            comment: format!("Triage note {} for incident {id}", k + 1),
            created_by: (*rng.pick(&ANALYSTS)).to_owned(),
            created_ms: created_ms + (k as i64 + 1) * 60_000,
        })
        .collect();
    let alerts = (0..rng.range(1, 3))
        .map(|a| {
            let first = created_ms - rng.below(3_600_000) as i64;
            let device = *rng.pick(&DEVICES);
            let user = *rng.pick(&USERS);
            let device_json = json!({
                    "mdatpDeviceId": format!("{:040x}", u128::from(rng.next_u64()) << 32),
                    "aadDeviceId": Value::Null,
                    "deviceDnsName": format!("{device}.contoso.local"),
                    "osPlatform": "Windows10",
                    "version": "22H2",
                    "osProcessor": "x64",
                    "osBuild": 19045,
                    "healthStatus": "Active",
                    "riskScore": "High",
                    "rbacGroupName": "Default",
                    "rbacGroupId": 1,
                    "firstSeen": format_rfc3339_ms(created_ms - 90 * 86_400_000),
                    "tags": [],
                    "defenderAvStatus": "Updated",
                    "onboardingStatus": "Onboarded",
                    "vmMetadata": Value::Null,
                    "loggedOnUsers": [{"accountName": user, "domainName": "CONTOSO"}],
            });
            let entities_json = json!([
                    {"entityType": "User", "accountName": user, "domainName": "CONTOSO", "userPrincipalName": format!("{user}@contoso.com"), "remediationStatus": "None", "verdict": "Suspicious"},
                    {"entityType": "Process", "fileName": "powershell.exe", "filePath": "C:\\Windows\\System32\\WindowsPowerShell\\v1.0", "processId": rng.range(1000, 20_000), "processCommandLine": "powershell.exe -enc SQBFAFgA", "sha1": format!("{:040x}", u128::from(rng.next_u64())), "remediationStatus": "None", "verdict": "Malicious"},
                ])
                .as_array()
                .into_iter()
                .flatten()
                .map(documented_entity)
                .collect::<Vec<_>>();
            Alert::new(json!({
                "alertId": format!("da{:016x}_{}", rng.next_u64(), a),
                "incidentId": id,
                "serviceSource": rng.pick(&SERVICE_SOURCES),
                "creationTime": format_rfc3339_ms(created_ms),
                "lastUpdatedTime": format_rfc3339_ms(last_update_ms),
                "resolvedTime": if status == "Resolved" { Value::String(format_rfc3339_ms(last_update_ms)) } else { Value::Null },
                "firstActivity": format_rfc3339_ms(first),
                "lastActivity": format_rfc3339_ms(created_ms),
                "title": title,
                "description": format!("{title} was observed on {device}."),
                "category": rng.pick(&CATEGORIES),
                "status": if status == "Resolved" { "Resolved" } else { "New" },
                "severity": severity,
                "investigationId": rng.below(100_000),
                "investigationState": "PendingApproval",
                "classification": Value::Null,
                "determination": Value::Null,
                "detectionSource": detection_source,
                "detectorId": format!("{:08x}-0000-4000-8000-{:012x}", rng.next_u64() as u32, rng.next_u64() & 0xFFFF_FFFF_FFFF),
                "assignedTo": assigned_to,
                "actorName": Value::Null,
                "threatFamilyName": Value::Null,
                "mitreTechniques": [rng.pick(&TECHNIQUES)],
                "devices": [device_json],
                "entities": entities_json,
            }))
        })
        .collect();
    Incident {
        id,
        name: title.to_owned(),
        created_ms,
        last_update_ms,
        assigned_to,
        classification: classification.into(),
        determination: determination.into(),
        detection_source: detection_source.into(),
        status: status.into(),
        severity: severity.into(),
        redirect_incident_id: (status == "Redirected")
            .then(|| id.saturating_sub(1).max(FIRST_INCIDENT_ID)),
        tags,
        comments,
        alerts,
    }
}

/// The Graph spelling of an XDR enum value: `InProgress` -> `inProgress`,
/// `UnSpecified` -> `unknown`, `NotAvailable` -> `unknown`.
pub fn graph_enum(v: &str) -> String {
    match v {
        "UnSpecified" | "Unknown" | "NotAvailable" | "" => "unknown".into(),
        _ => {
            let mut c = v.chars();
            match c.next() {
                Some(f) => f.to_ascii_lowercase().to_string() + c.as_str(),
                None => String::new(),
            }
        }
    }
}

/// Every key of an alert entity, in the order of the documented example (DD
/// defender-xdr/api-list-incidents.md): the service sends them all, `null` where unused.
const ENTITY_KEYS: [&str; 31] = [
    "entityType",
    "sha1",
    "sha256",
    "fileName",
    "filePath",
    "processId",
    "processCommandLine",
    "processCreationTime",
    "parentProcessId",
    "parentProcessCreationTime",
    "ipAddress",
    "url",
    "accountName",
    "domainName",
    "userSid",
    "aadUserId",
    "userPrincipalName",
    "mailboxDisplayName",
    "mailboxAddress",
    "clusterBy",
    "sender",
    "recipient",
    "subject",
    "deliveryAction",
    "securityGroupId",
    "securityGroupName",
    "registryHive",
    "registryKey",
    "registryValueType",
    "registryValue",
    "deviceId",
];

/// `entity` with every documented key, `null` for those it does not set; keys beyond the
/// documented ones (`remediationStatus`, `verdict`) follow.
fn documented_entity(entity: &Value) -> Value {
    let mut out = Map::new();
    for k in ENTITY_KEYS {
        out.insert(k.to_owned(), entity.get(k).cloned().unwrap_or(Value::Null));
    }
    for (k, v) in entity.as_object().into_iter().flatten() {
        out.entry(k.clone()).or_insert_with(|| v.clone());
    }
    Value::Object(out)
}

impl Incident {
    /// The Defender XDR shape.
    pub fn to_xdr(&self) -> Value {
        json!({
            "incidentId": self.id,
            "incidentUri": format!("https://security.microsoft.com/incidents/{}?tid=emulator", self.id),
            "redirectIncidentId": self.redirect_incident_id,
            "incidentName": self.name,
            "createdTime": format_rfc3339_ms(self.created_ms),
            "lastUpdateTime": format_rfc3339_ms(self.last_update_ms),
            "assignedTo": self.assigned_to,
            "classification": self.classification,
            "determination": self.determination,
            "detectionSource": self.detection_source,
            "status": self.status,
            "severity": self.severity,
            "tags": self.tags,
            "comments": self.comments.iter().map(Comment::to_xdr).collect::<Vec<_>>(),
            "alerts": self.alerts.iter().map(|a| &a.xdr).collect::<Vec<_>>(),
        })
    }

    /// The Graph `security/incidents` shape (alerts only when expanded).
    pub fn to_graph(&self, tenant: &str, expand_alerts: bool) -> Value {
        let mut v = json!({
            "@odata.type": "#microsoft.graph.security.incident",
            "id": self.id.to_string(),
            "tenantId": tenant,
            "status": graph_enum(&self.status),
            "incidentWebUrl": format!("https://security.microsoft.com/incidents/{}?tid={tenant}", self.id),
            "redirectIncidentId": self.redirect_incident_id.map(|i| i.to_string()),
            "displayName": self.name,
            "createdDateTime": format_rfc3339_ms(self.created_ms),
            "lastUpdateDateTime": format_rfc3339_ms(self.last_update_ms),
            "assignedTo": self.assigned_to,
            "classification": graph_enum(&self.classification),
            "determination": graph_enum(&self.determination),
            "severity": graph_enum(&self.severity),
            "customTags": self.tags,
            "systemTags": [],
            "description": Value::Null,
            "summary": Value::Null,
            "comments": self.comments.iter().map(|c| c.to_graph(false)).collect::<Vec<_>>(),
        });
        if expand_alerts {
            let alerts: Vec<Value> = self.alerts.iter().map(|a| a.to_graph(tenant)).collect();
            if let Some(m) = v.as_object_mut() {
                m.insert("alerts".into(), Value::Array(alerts));
            }
        }
        v
    }

    /// The value of `field` for `$filter`, in the dialect's spelling.
    pub fn filter_value(&self, field: Field, dialect: Dialect) -> FieldValue {
        let spelled = |v: &str| {
            FieldValue::Text(Some(match dialect {
                Dialect::Xdr => v.to_owned(),
                Dialect::Graph => graph_enum(v),
            }))
        };
        match field {
            Field::LastUpdate => FieldValue::Time(self.last_update_ms),
            Field::Created => FieldValue::Time(self.created_ms),
            Field::Status => spelled(&self.status),
            Field::AssignedTo => FieldValue::Text(self.assigned_to.clone()),
            Field::Severity => spelled(&self.severity),
            Field::Classification => spelled(&self.classification),
            Field::Determination => spelled(&self.determination),
            Field::DetectionSource => spelled(&self.detection_source),
            Field::IncidentId => FieldValue::Number(Some(self.id)),
            // Properties of alerts only (no incident collection lets a filter name them).
            Field::Id
            | Field::InvestigationId
            | Field::LastEvent
            | Field::Category
            | Field::ServiceSource => FieldValue::Text(None),
        }
    }
}

// ---------------------------------------------------------------------------------------
// PATCH

/// A string property of a PATCH body, `None` for `null`; the error is the 400 message.
pub(crate) fn string_or_null<'a>(v: &'a Value, key: &str) -> Result<Option<&'a str>, String> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        _ => Err(format!("`{key}` must be a string")),
    }
}

/// A non-null string property of a PATCH body.
pub(crate) fn string<'a>(v: &'a Value, key: &str) -> Result<&'a str, String> {
    string_or_null(v, key)?.ok_or_else(|| format!("`{key}` may not be null"))
}

/// `s` as one of `allowed` (stored in Defender's spelling), compared in the dialect's
/// spelling and ignoring case; the error names the allowed values as the dialect spells
/// them.
pub(crate) fn one_of(
    s: &str,
    allowed: &[&'static str],
    key: &str,
    dialect: Dialect,
) -> Result<&'static str, String> {
    let spell = |v: &str| match dialect {
        Dialect::Xdr => v.to_owned(),
        Dialect::Graph => graph_enum(v),
    };
    allowed
        .iter()
        .find(|v| spell(v).eq_ignore_ascii_case(s))
        .copied()
        .ok_or_else(|| {
            let names: Vec<String> = allowed.iter().map(|v| spell(v)).collect();
            format!(
                "Invalid value '{s}' for {key} (allowed: {})",
                names.join(", ")
            )
        })
}

/// A determination as stored: Defender's spelling of any value (the documented lists
/// disagree across pages, API-FACTS section 3, so none is refused), `NotAvailable` for
/// none or `unknown`.
pub(crate) fn determination(s: Option<&str>) -> String {
    let mut c = s.unwrap_or("").chars();
    let canon = match c.next() {
        Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
        None => return "NotAvailable".to_owned(),
    };
    if canon == "Unknown" {
        "NotAvailable".to_owned()
    } else {
        canon
    }
}

/// The OData text ASP.NET answers (400) for a property the type `type_name` lacks, as
/// Graph sends it for a PATCH or POST body.
pub(crate) fn unknown_property(property: &str, type_name: &str) -> String {
    format!(
        "The property '{property}' does not exist on type '{type_name}'. Make sure to only use property names that are defined by the type or mark the type as open type."
    )
}

/// Applies a PATCH body to an incident; the error is the 400 message.
pub fn apply_patch(
    incident: &mut Incident,
    body: &Map<String, Value>,
    dialect: Dialect,
    author: &str,
    now_ms: i64,
) -> Result<(), String> {
    // Graph's classification also takes `unknown`.
    const GRAPH_CLASSIFICATIONS: [&str; 4] = [
        "Unknown",
        CLASSIFICATIONS[0],
        CLASSIFICATIONS[1],
        CLASSIFICATIONS[2],
    ];
    // Validate everything before changing anything.
    let mut status = None;
    let mut classification = None;
    let mut determination_ = None;
    let mut assigned: Option<Option<String>> = None;
    let mut tags = None;
    let mut comment = None;
    let mut name = None;
    let mut severity = None;
    for (key, value) in body {
        match key.as_str() {
            "status" => status = Some(one_of(string(value, key)?, &STATUSES, key, dialect)?),
            "classification" => {
                let allowed: &[&'static str] = match dialect {
                    Dialect::Xdr => &CLASSIFICATIONS,
                    Dialect::Graph => &GRAPH_CLASSIFICATIONS,
                };
                classification = Some(one_of(string(value, key)?, allowed, key, dialect)?);
            }
            "determination" => determination_ = Some(determination(string_or_null(value, key)?)),
            "assignedTo" => assigned = Some(string_or_null(value, key)?.map(str::to_owned)),
            "tags" | "customTags" if dialect == Dialect::Xdr || key == "customTags" => {
                let list = value
                    .as_array()
                    .ok_or(format!("`{key}` must be an array of strings"))?;
                let mut v = Vec::new();
                for t in list {
                    v.push(
                        t.as_str()
                            .ok_or(format!("`{key}` must be an array of strings"))?
                            .to_owned(),
                    );
                }
                tags = Some(v);
            }
            // XDR takes one comment in its PATCH (DD api-update-incidents.md); Graph has
            // a comments route instead and refuses the property below.
            "comment" if dialect == Dialect::Xdr => {
                comment = string_or_null(value, key)?.map(str::to_owned)
            }
            "displayName" if dialect == Dialect::Graph => {
                name = Some(string(value, key)?.to_owned());
            }
            "severity" if dialect == Dialect::Graph => {
                severity = Some(one_of(string(value, key)?, &SEVERITIES, key, dialect)?);
            }
            // Properties of Graph's incident type the emulator does not model: accepted
            // (they must be strings) and not kept.
            "description" | "summary" | "resolvingComment" if dialect == Dialect::Graph => {
                string_or_null(value, key)?;
            }
            "@odata.type" => {}
            other => {
                return Err(match dialect {
                    Dialect::Graph => unknown_property(other, "microsoft.graph.security.incident"),
                    Dialect::Xdr => {
                        format!("The property '{other}' does not exist or cannot be updated")
                    }
                });
            }
        }
    }
    if let Some(n) = name {
        incident.name = n;
    }
    if let Some(s) = severity {
        incident.severity = s.to_owned();
    }
    if let Some(s) = status {
        incident.status = s.to_owned();
    }
    if let Some(c) = classification {
        incident.classification = c.to_owned();
    }
    if let Some(d) = determination_ {
        incident.determination = d;
    }
    if let Some(a) = assigned {
        incident.assigned_to = a;
    }
    if let Some(t) = tags {
        incident.tags = t;
    }
    if let Some(c) = comment {
        add_comment(incident, c, author, now_ms);
    }
    incident.last_update_ms = now_ms.max(incident.last_update_ms);
    Ok(())
}

/// Appends a comment (XDR's PATCH `comment`, Graph's comments route) and touches the
/// incident's last update time.
pub fn add_comment(incident: &mut Incident, comment: String, author: &str, now_ms: i64) {
    incident.comments.push(Comment {
        comment,
        created_by: author.to_owned(),
        created_ms: now_ms,
    });
    incident.last_update_ms = now_ms.max(incident.last_update_ms);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic() {
        let a = generate(1, 50, 1_704_067_200_000);
        let b = generate(1, 50, 1_704_067_200_000);
        assert_eq!(a, b);
        assert_ne!(a, generate(2, 50, 1_704_067_200_000));
        assert!(a.windows(2).all(|w| w[0].created_ms <= w[1].created_ms));
        assert!(a
            .iter()
            .all(|i| i.last_update_ms >= i.created_ms && !i.alerts.is_empty()));
    }

    #[test]
    fn patch_validates_first() {
        let mut inc = generate(3, 1, 1_704_067_200_000).remove(0);
        let before = inc.clone();
        let body = json!({"status": "Resolved", "classification": "Bogus"});
        assert!(apply_patch(&mut inc, body.as_object().unwrap(), Dialect::Xdr, "a", 5).is_err());
        assert_eq!(inc, before);
        let body = json!({"status": "resolved", "classification": "TruePositive", "determination": "SomethingNew", "comment": "done", "tags": ["x"], "assignedTo": "me@x"});
        apply_patch(
            &mut inc,
            body.as_object().unwrap(),
            Dialect::Xdr,
            "app",
            i64::MAX / 2,
        )
        .unwrap();
        assert_eq!(inc.status, "Resolved");
        assert_eq!(inc.determination, "SomethingNew");
        assert_eq!(inc.comments.last().unwrap().comment, "done");
        assert_eq!(inc.last_update_ms, i64::MAX / 2);
    }
}
