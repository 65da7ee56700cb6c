//! Incidents: a deterministic set generated from the seed, OData `$filter`, paging,
//! updates, and the Defender XDR and Graph shapes.

use serde_json::{json, Map, Value};

use crate::rng::Rng;
use crate::time::{format_rfc3339, parse_rfc3339};

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

/// The first generated incident id.
pub const FIRST_INCIDENT_ID: i64 = 1000;

/// One comment on an incident.
#[derive(Debug, Clone, PartialEq)]
pub struct Comment {
    /// The text.
    pub comment: String,
    /// Who wrote it.
    pub created_by: String,
    /// When, unix ms.
    pub created_ms: i64,
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
    /// `alerts`, in the XDR shape (devices and entities inside).
    pub alerts: Vec<Value>,
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
                        "firstSeen": format_rfc3339(created_ms - 90 * 86_400_000),
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
                json!({
                    "alertId": format!("da{:016x}_{}", rng.next_u64(), a),
                    "incidentId": id,
                    "serviceSource": rng.pick(&SERVICE_SOURCES),
                    "creationTime": format_rfc3339(created_ms),
                    "lastUpdatedTime": format_rfc3339(last_update_ms),
                    "resolvedTime": if status == "Resolved" { Value::String(format_rfc3339(last_update_ms)) } else { Value::Null },
                    "firstActivity": format_rfc3339(first),
                    "lastActivity": format_rfc3339(created_ms),
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
                })
            })
            .collect();
        out.push(Incident {
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
        });
    }
    out
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
            "createdTime": format_rfc3339(self.created_ms),
            "lastUpdateTime": format_rfc3339(self.last_update_ms),
            "assignedTo": self.assigned_to,
            "classification": self.classification,
            "determination": self.determination,
            "detectionSource": self.detection_source,
            "status": self.status,
            "severity": self.severity,
            "tags": self.tags,
            "comments": self.comments.iter().map(|c| json!({
                "comment": c.comment, "createdBy": c.created_by, "createdTime": format_rfc3339(c.created_ms)
            })).collect::<Vec<_>>(),
            "alerts": self.alerts,
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
            "createdDateTime": format_rfc3339(self.created_ms),
            "lastUpdateDateTime": format_rfc3339(self.last_update_ms),
            "assignedTo": self.assigned_to,
            "classification": graph_enum(&self.classification),
            "determination": graph_enum(&self.determination),
            "severity": graph_enum(&self.severity),
            "customTags": self.tags,
            "systemTags": [],
            "description": Value::Null,
            "summary": Value::Null,
            "comments": self.comments.iter().map(|c| json!({
                "comment": c.comment, "createdByDisplayName": c.created_by, "createdDateTime": format_rfc3339(c.created_ms)
            })).collect::<Vec<_>>(),
        });
        if expand_alerts {
            let alerts: Vec<Value> = self
                .alerts
                .iter()
                .map(|a| self.graph_alert(a, tenant))
                .collect();
            v["alerts"] = Value::Array(alerts);
        }
        v
    }
}

impl Incident {
    /// Graph's comment collection of the incident (what the comments POST answers).
    pub fn graph_comments(&self) -> Vec<Value> {
        self.comments
            .iter()
            .map(|c| {
                json!({
                    "@odata.type": "#microsoft.graph.security.alertComment",
                    "comment": c.comment,
                    "createdByDisplayName": c.created_by,
                    "createdDateTime": format_rfc3339(c.created_ms),
                })
            })
            .collect()
    }

    /// One alert in Graph's `alerts_v2` shape (GD security-alert.md): `evidence[]`
    /// instead of XDR's `devices[]` and `entities[]`, with every property of the
    /// documented example (GD security-list-incidents.md, Example 2), `null` where the XDR
    /// alert has nothing.
    fn graph_alert(&self, a: &Value, tenant: &str) -> Value {
        let e = |v: &Value| graph_enum(v.as_str().unwrap_or(""));
        let opt_e = |v: &Value| {
            v.as_str()
                .map_or(Value::Null, |s| Value::String(graph_enum(s)))
        };
        let created = &a["creationTime"];
        let device_id = a["devices"][0]["mdatpDeviceId"].clone();
        let entities = a["entities"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        let user = entities
            .iter()
            .find(|x| x["entityType"] == "User")
            .map_or(Value::Null, |x| {
                json!({
                    "accountName": x["accountName"],
                    "domainName": x["domainName"],
                    "userSid": x["userSid"],
                    "azureAdUserId": x["aadUserId"],
                    "userPrincipalName": x["userPrincipalName"],
                    "displayName": x["accountName"],
                })
            });
        let mut evidence: Vec<Value> = Vec::new();
        for d in a["devices"].as_array().into_iter().flatten() {
            evidence.push(json!({
                "@odata.type": "#microsoft.graph.security.deviceEvidence",
                "createdDateTime": created,
                "verdict": "suspicious",
                "remediationStatus": "none",
                "remediationStatusDetails": Value::Null,
                "roles": [],
                "detailedRoles": [],
                "tags": [],
                "deviceDnsName": d["deviceDnsName"],
                "mdeDeviceId": d["mdatpDeviceId"],
                "azureAdDeviceId": d["aadDeviceId"],
                "osPlatform": d["osPlatform"],
                "osBuild": d["osBuild"],
                "version": d["version"],
                "healthStatus": e(&d["healthStatus"]),
                "riskScore": e(&d["riskScore"]),
                "rbacGroupId": d["rbacGroupId"],
                "rbacGroupName": d["rbacGroupName"],
                "onboardingStatus": opt_e(&d["onboardingStatus"]),
                "defenderAvStatus": opt_e(&d["defenderAvStatus"]),
                "firstSeenDateTime": d["firstSeen"],
                "ipInterfaces": [],
                "loggedOnUsers": d["loggedOnUsers"],
                "vmMetadata": d["vmMetadata"],
            }));
        }
        for x in entities {
            let common = json!({
                "createdDateTime": created,
                "verdict": e(&x["verdict"]),
                "remediationStatus": e(&x["remediationStatus"]),
                "remediationStatusDetails": Value::Null,
                "roles": [],
                "detailedRoles": [],
                "tags": [],
            });
            let mut ev = match x["entityType"].as_str() {
                Some("User") => json!({
                    "@odata.type": "#microsoft.graph.security.userEvidence",
                    "userAccount": user,
                }),
                Some("Process") => json!({
                    "@odata.type": "#microsoft.graph.security.processEvidence",
                    "processId": x["processId"],
                    "parentProcessId": x["parentProcessId"],
                    "processCommandLine": x["processCommandLine"],
                    "processCreationDateTime": x["processCreationTime"],
                    "parentProcessCreationDateTime": x["parentProcessCreationTime"],
                    "detectionStatus": "detected",
                    "mdeDeviceId": device_id,
                    "imageFile": {
                        "fileName": x["fileName"],
                        "filePath": x["filePath"],
                        "sha1": x["sha1"],
                        "sha256": x["sha256"],
                        "fileSize": Value::Null,
                        "filePublisher": Value::Null,
                        "signer": Value::Null,
                        "issuer": Value::Null,
                    },
                    "parentProcessImageFile": Value::Null,
                    "userAccount": user,
                }),
                _ => continue,
            };
            if let (Some(ev), Some(c)) = (ev.as_object_mut(), common.as_object()) {
                ev.extend(c.clone());
            }
            evidence.push(ev);
        }
        json!({
            "@odata.type": "#microsoft.graph.security.alert",
            "id": a["alertId"],
            "providerAlertId": a["alertId"],
            "incidentId": self.id.to_string(),
            "tenantId": tenant,
            "title": a["title"],
            "description": a["description"],
            "recommendedActions": "",
            "severity": e(&a["severity"]),
            "status": e(&a["status"]),
            "classification": opt_e(&a["classification"]),
            "determination": opt_e(&a["determination"]),
            "serviceSource": e(&a["serviceSource"]),
            "detectionSource": e(&a["detectionSource"]),
            "detectorId": a["detectorId"],
            "category": a["category"],
            "assignedTo": a["assignedTo"],
            "alertWebUrl": format!(
                "https://security.microsoft.com/alerts/{}?tid={tenant}",
                a["alertId"].as_str().unwrap_or_default()
            ),
            "incidentWebUrl": format!(
                "https://security.microsoft.com/incidents/{}?tid={tenant}",
                self.id
            ),
            "actorDisplayName": a["actorName"],
            "threatDisplayName": Value::Null,
            "threatFamilyName": a["threatFamilyName"],
            "createdDateTime": created,
            "lastUpdateDateTime": a["lastUpdatedTime"],
            "resolvedDateTime": a["resolvedTime"],
            "firstActivityDateTime": a["firstActivity"],
            "lastActivityDateTime": a["lastActivity"],
            "mitreTechniques": a["mitreTechniques"],
            "comments": [],
            "evidence": evidence,
        })
    }
}

// ---------------------------------------------------------------------------------------
// $filter

/// How much `$filter` the emulator parses before answering 400.
///
/// The real services parse `$filter` with ODataLib, which refuses a filter nested deeper
/// than its recursion limit ("The recursion limit has been exceeded.") and, behind ASP.NET
/// OData, one with more nodes than `MaxNodeCount`. The emulator keeps both bounds so a
/// hostile filter (60,000 `(`, or a million `or`s) is a 400, never a stack overflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilterLimits {
    /// Parentheses and `not`s nested inside one another (default 100).
    pub max_depth: usize,
    /// Comparisons, `and`s, `or`s and `not`s in one filter (default 1,000).
    pub max_nodes: usize,
}

impl Default for FilterLimits {
    fn default() -> Self {
        FilterLimits {
            max_depth: 100,
            max_nodes: 1000,
        }
    }
}

/// Which surface's field names a filter uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `lastUpdateTime`, `createdTime`, `status`, `assignedTo`.
    Xdr,
    /// `lastUpdateDateTime`, `createdDateTime`, `status`, `assignedTo`.
    Graph,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    LastUpdate,
    Created,
    Status,
    AssignedTo,
    // Graph only (GD security-list-incidents.md): compared in Graph's enum spelling.
    Severity,
    Classification,
    Determination,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Debug, Clone, PartialEq)]
enum Lit {
    Str(String),
    Time(i64),
    Null,
}

/// A parsed `$filter`.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// `field op literal`.
    Cmp(FieldCmp),
    /// Both.
    And(Box<Filter>, Box<Filter>),
    /// Either.
    Or(Box<Filter>, Box<Filter>),
    /// Negation.
    Not(Box<Filter>),
}

/// One comparison of a filter.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldCmp {
    field: Field,
    op: Op,
    lit: Lit,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    LParen,
    RParen,
}

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '(' {
            out.push(Tok::LParen);
            i += 1;
        } else if c == ')' {
            out.push(Tok::RParen);
            i += 1;
        } else if c == '\'' {
            let mut v = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err("unterminated string literal".into()),
                    Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                        v.push('\'');
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(c) => {
                        v.push(*c);
                        i += 1;
                    }
                }
            }
            out.push(Tok::Str(v));
        } else {
            let start = i;
            while i < chars.len() && !chars[i].is_whitespace() && !"()'".contains(chars[i]) {
                i += 1;
            }
            out.push(Tok::Word(chars[start..i].iter().collect()));
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    dialect: Dialect,
    limits: FilterLimits,
    depth: usize,
    nodes: usize,
}

/// A filter over one of the [`FilterLimits`]; its text is the whole 400 message.
const TOO_DEEP: &str =
    "The query specified in the URI is not valid. The recursion limit has been exceeded.";

impl Parser {
    fn peek_word(&self) -> Option<String> {
        match self.toks.get(self.pos) {
            Some(Tok::Word(w)) => Some(w.to_ascii_lowercase()),
            _ => None,
        }
    }

    /// Counts one node of the tree (and checks [`FilterLimits::max_nodes`]).
    fn node(&mut self) -> Result<(), String> {
        self.nodes += 1;
        if self.nodes > self.limits.max_nodes {
            return Err(format!(
                "The query specified in the URI is not valid. The node count limit of '{}' has been exceeded.",
                self.limits.max_nodes
            ));
        }
        Ok(())
    }

    /// Enters one level of nesting (and checks [`FilterLimits::max_depth`]); the caller
    /// leaves it with `self.depth -= 1`.
    fn enter(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > self.limits.max_depth {
            return Err(TOO_DEEP.into());
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Filter, String> {
        let mut left = self.and()?;
        while self.peek_word().as_deref() == Some("or") {
            self.pos += 1;
            self.node()?;
            let right = self.and()?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Filter, String> {
        let mut left = self.unary()?;
        while self.peek_word().as_deref() == Some("and") {
            self.pos += 1;
            self.node()?;
            let right = self.unary()?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Filter, String> {
        if self.peek_word().as_deref() == Some("not") {
            self.pos += 1;
            self.node()?;
            self.enter()?;
            let inner = self.unary();
            self.depth -= 1;
            return Ok(Filter::Not(Box::new(inner?)));
        }
        if self.toks.get(self.pos) == Some(&Tok::LParen) {
            self.pos += 1;
            self.enter()?;
            let inner = self.or();
            self.depth -= 1;
            let inner = inner?;
            if self.toks.get(self.pos) != Some(&Tok::RParen) {
                return Err("expected `)`".into());
            }
            self.pos += 1;
            return Ok(inner);
        }
        self.node()?;
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Filter, String> {
        let name = match self.toks.get(self.pos) {
            Some(Tok::Word(w)) => w.clone(),
            Some(t) => return Err(format!("expected a property name, found {t:?}")),
            None => return Err("expected a property name, found the end".into()),
        };
        self.pos += 1;
        let field = match (self.dialect, name.to_ascii_lowercase().as_str()) {
            (Dialect::Xdr, "lastupdatetime") | (Dialect::Graph, "lastupdatedatetime") => {
                Field::LastUpdate
            }
            (Dialect::Xdr, "createdtime") | (Dialect::Graph, "createddatetime") => Field::Created,
            (_, "status") => Field::Status,
            (_, "assignedto") => Field::AssignedTo,
            (Dialect::Graph, "severity") => Field::Severity,
            (Dialect::Graph, "classification") => Field::Classification,
            (Dialect::Graph, "determination") => Field::Determination,
            _ => {
                let allowed = match self.dialect {
                    Dialect::Xdr => "lastUpdateTime, createdTime, status, assignedTo",
                    Dialect::Graph => "lastUpdateDateTime, createdDateTime, status, assignedTo, severity, classification, determination",
                };
                return Err(format!(
                    "Could not find a property named '{name}' that can be filtered on (filterable: {allowed})"
                ));
            }
        };
        let op = match self.peek_word().as_deref() {
            Some("eq") => Op::Eq,
            Some("ne") => Op::Ne,
            Some("gt") => Op::Gt,
            Some("ge") => Op::Ge,
            Some("lt") => Op::Lt,
            Some("le") => Op::Le,
            _ => return Err(format!("expected eq, ne, gt, ge, lt or le after `{name}`")),
        };
        self.pos += 1;
        let lit = match self.toks.get(self.pos) {
            Some(Tok::Str(s)) => Lit::Str(s.clone()),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("null") => Lit::Null,
            Some(Tok::Word(w)) => match parse_rfc3339(w) {
                Some(ms) => Lit::Time(ms),
                None => return Err(format!("`{w}` is not a literal (quote strings: 'value')")),
            },
            _ => return Err(format!("expected a value after `{name}`")),
        };
        self.pos += 1;
        let lit = match (field, lit) {
            (Field::LastUpdate | Field::Created, Lit::Str(s)) => match parse_rfc3339(&s) {
                Some(ms) => Lit::Time(ms),
                None => return Err(format!("`{s}` is not a date-time for `{name}`")),
            },
            (Field::Status, Lit::Time(_)) => {
                return Err(format!("`{name}` takes a string literal"));
            }
            (
                Field::AssignedTo | Field::Severity | Field::Classification | Field::Determination,
                Lit::Time(_),
            ) => {
                return Err(format!("`{name}` takes a string literal"));
            }
            (_, l) => l,
        };
        if matches!(
            field,
            Field::Severity | Field::Classification | Field::Determination
        ) && !matches!(op, Op::Eq | Op::Ne)
        {
            return Err(format!(
                "`{name}` is an enumeration: compare it with eq or ne"
            ));
        }
        if field == Field::Status {
            if let Lit::Str(s) = &lit {
                if !STATUSES.iter().any(|v| v.eq_ignore_ascii_case(s)) {
                    return Err(format!("`{s}` is not a valid status"));
                }
            }
        }
        Ok(Filter::Cmp(FieldCmp { field, op, lit }))
    }
}

impl Filter {
    /// Parses a `$filter` in the given dialect within the default [`FilterLimits`]; the
    /// error is the 400 message.
    #[cfg(test)]
    pub fn parse(s: &str, dialect: Dialect) -> Result<Filter, String> {
        Filter::parse_within(s, dialect, FilterLimits::default())
    }

    /// Parses a `$filter` in the given dialect; the error is the 400 message. A filter
    /// over `limits` is refused before any recursion could exhaust the stack.
    pub fn parse_within(s: &str, dialect: Dialect, limits: FilterLimits) -> Result<Filter, String> {
        let toks = tokenize(s).map_err(|e| format!("Invalid filter clause: {e}"))?;
        if toks.is_empty() {
            return Err("Invalid filter clause: the filter is empty".into());
        }
        let mut p = Parser {
            toks,
            pos: 0,
            dialect,
            limits,
            depth: 0,
            nodes: 0,
        };
        let f = p.or().map_err(|e| {
            if e.starts_with("The query specified") {
                e
            } else {
                format!("Invalid filter clause: {e}")
            }
        })?;
        if p.pos != p.toks.len() {
            return Err(format!(
                "Invalid filter clause: unexpected {:?} after the expression",
                p.toks[p.pos]
            ));
        }
        Ok(f)
    }

    /// Whether an incident matches.
    pub fn matches(&self, i: &Incident) -> bool {
        match self {
            Filter::And(a, b) => a.matches(i) && b.matches(i),
            Filter::Or(a, b) => a.matches(i) || b.matches(i),
            Filter::Not(a) => !a.matches(i),
            Filter::Cmp(c) => {
                use std::cmp::Ordering;
                let ord: Option<Ordering> = match (c.field, &c.lit) {
                    (Field::LastUpdate, Lit::Time(t)) => Some(i.last_update_ms.cmp(t)),
                    (Field::Created, Lit::Time(t)) => Some(i.created_ms.cmp(t)),
                    (Field::Status, Lit::Str(s)) => {
                        Some(i.status.to_ascii_lowercase().cmp(&s.to_ascii_lowercase()))
                    }
                    (Field::AssignedTo, Lit::Str(s)) => i
                        .assigned_to
                        .as_ref()
                        .map(|a| a.to_ascii_lowercase().cmp(&s.to_ascii_lowercase())),
                    (Field::Severity, Lit::Str(s)) => Some(enum_cmp(&i.severity, s)),
                    (Field::Classification, Lit::Str(s)) => Some(enum_cmp(&i.classification, s)),
                    (Field::Determination, Lit::Str(s)) => Some(enum_cmp(&i.determination, s)),
                    (Field::AssignedTo, Lit::Null) => {
                        return match c.op {
                            Op::Eq => i.assigned_to.is_none(),
                            Op::Ne => i.assigned_to.is_some(),
                            _ => false,
                        }
                    }
                    _ => None,
                };
                match ord {
                    None => c.op == Op::Ne,
                    Some(o) => match c.op {
                        Op::Eq => o == Ordering::Equal,
                        Op::Ne => o != Ordering::Equal,
                        Op::Gt => o == Ordering::Greater,
                        Op::Ge => o != Ordering::Less,
                        Op::Lt => o == Ordering::Less,
                        Op::Le => o != Ordering::Greater,
                    },
                }
            }
        }
    }
}

/// Compares a stored (XDR-spelled) enum value with a Graph literal, in Graph's spelling.
fn enum_cmp(stored: &str, lit: &str) -> std::cmp::Ordering {
    graph_enum(stored)
        .to_ascii_lowercase()
        .cmp(&lit.to_ascii_lowercase())
}

// ---------------------------------------------------------------------------------------
// PATCH

/// Applies a PATCH body to an incident; the error is the 400 message.
pub fn apply_patch(
    incident: &mut Incident,
    body: &Map<String, Value>,
    dialect: Dialect,
    author: &str,
    now_ms: i64,
) -> Result<(), String> {
    fn as_str<'a>(v: &'a Value, key: &str) -> Result<Option<&'a str>, String> {
        match v {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s)),
            _ => Err(format!("`{key}` must be a string")),
        }
    }
    // Validate everything before changing anything.
    let mut status = None;
    let mut classification = None;
    let mut determination = None;
    let mut assigned: Option<Option<String>> = None;
    let mut tags = None;
    let mut comment = None;
    let mut name = None;
    let mut severity = None;
    for (key, value) in body {
        match key.as_str() {
            "status" => {
                let s = as_str(value, key)?.ok_or("`status` may not be null")?;
                let canon = STATUSES
                    .iter()
                    .find(|v| v.eq_ignore_ascii_case(s))
                    .ok_or_else(|| {
                        format!(
                            "Invalid value '{s}' for status (allowed: {})",
                            match dialect {
                                Dialect::Xdr => "Active, Resolved, InProgress, Redirected",
                                Dialect::Graph => "active, resolved, inProgress, redirected",
                            }
                        )
                    })?;
                status = Some((*canon).to_owned());
            }
            "classification" => {
                let s = as_str(value, key)?.ok_or("`classification` may not be null")?;
                let allowed_unknown =
                    dialect == Dialect::Graph && s.eq_ignore_ascii_case("unknown");
                let canon = if allowed_unknown {
                    "Unknown"
                } else {
                    CLASSIFICATIONS
                        .iter()
                        .find(|v| v.eq_ignore_ascii_case(s))
                        .ok_or_else(|| {
                            format!(
                                "Invalid value '{s}' for classification (allowed: {})",
                                match dialect {
                                    Dialect::Xdr =>
                                        "TruePositive, InformationalExpectedActivity, FalsePositive",
                                    Dialect::Graph =>
                                        "unknown, truePositive, informationalExpectedActivity, falsePositive",
                                }
                            )
                        })?
                };
                classification = Some(canon.to_owned());
            }
            "determination" => {
                let s = as_str(value, key)?.unwrap_or("NotAvailable");
                // Unknown values are accepted: the docs disagree on the lists.
                let mut c = s.chars();
                let canon = match c.next() {
                    Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                    None => "NotAvailable".to_owned(),
                };
                determination = Some(if canon == "Unknown" {
                    "NotAvailable".to_owned()
                } else {
                    canon
                });
            }
            "assignedTo" => assigned = Some(as_str(value, key)?.map(str::to_owned)),
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
                comment = as_str(value, key)?.map(str::to_owned)
            }
            "displayName" if dialect == Dialect::Graph => {
                let s = as_str(value, key)?.ok_or("`displayName` may not be null")?;
                name = Some(s.to_owned());
            }
            "severity" if dialect == Dialect::Graph => {
                let s = as_str(value, key)?.ok_or("`severity` may not be null")?;
                let canon = if s.eq_ignore_ascii_case("unknown") {
                    "UnSpecified"
                } else {
                    SEVERITIES[1..]
                        .iter()
                        .find(|v| v.eq_ignore_ascii_case(s))
                        .ok_or_else(|| {
                            format!(
                                "Invalid value '{s}' for severity (allowed: unknown, informational, low, medium, high)"
                            )
                        })?
                };
                severity = Some(canon.to_owned());
            }
            // Properties of Graph's incident type the emulator does not model: accepted
            // (they must be strings) and not kept.
            "description" | "summary" | "resolvingComment" if dialect == Dialect::Graph => {
                as_str(value, key)?;
            }
            "@odata.type" => {}
            other => {
                return Err(match dialect {
                    // The OData text ASP.NET answers for a property the type lacks.
                    Dialect::Graph => format!(
                        "The property '{other}' does not exist on type 'microsoft.graph.security.incident'. Make sure to only use property names that are defined by the type or mark the type as open type."
                    ),
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
        incident.severity = s;
    }
    if let Some(s) = status {
        incident.status = s;
    }
    if let Some(c) = classification {
        incident.classification = c;
    }
    if let Some(d) = determination {
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
    fn filters() {
        let inc = &generate(3, 1, 1_704_067_200_000)[0];
        let t = format_rfc3339(inc.created_ms);
        let ok = |f: &str| Filter::parse(f, Dialect::Xdr).unwrap().matches(inc);
        assert!(ok(&format!("createdTime ge {t}")));
        assert!(!ok(&format!("createdTime gt {t}")));
        assert!(ok(&format!("createdTime le '{t}'")));
        assert!(ok(&format!(
            "(status eq '{}' or assignedTo eq 'o''brien@x.com') and createdTime eq {t}",
            inc.status.to_ascii_lowercase()
        )));
        assert!(!ok("assignedTo eq 'o''brien@x.com'"));
        assert!(Filter::parse("status eq 'Nope'", Dialect::Xdr).is_err());
        assert!(Filter::parse("severity eq 'High'", Dialect::Xdr).is_err());
        assert!(Filter::parse("lastUpdateDateTime ge 2024-01-01T00:00:00Z", Dialect::Xdr).is_err());
        assert!(
            Filter::parse("lastUpdateDateTime ge 2024-01-01T00:00:00Z", Dialect::Graph).is_ok()
        );
        assert!(Filter::parse("status eq 'Active", Dialect::Xdr).is_err());
        assert!(Filter::parse("(status eq 'Active'", Dialect::Xdr).is_err());
        assert!(Filter::parse("status eq Active", Dialect::Xdr).is_err());
        assert!(Filter::parse("status eq 'Active' extra", Dialect::Xdr).is_err());
        assert!(Filter::parse("assignedTo eq 'o''brien@x.com'", Dialect::Xdr).is_ok());
    }

    #[test]
    fn filter_limits_refuse_deep_and_large_filters() {
        let limits = FilterLimits::default();
        let nested = |n: usize| format!("{}status eq 'Active'{}", "(".repeat(n), ")".repeat(n));
        assert!(Filter::parse(&nested(limits.max_depth), Dialect::Xdr).is_ok());
        assert_eq!(
            Filter::parse(&nested(limits.max_depth + 1), Dialect::Xdr),
            Err(TOO_DEEP.to_owned())
        );
        // Far past any stack: refused at the limit, long before the end of the text.
        assert_eq!(
            Filter::parse(&"(".repeat(60_000), Dialect::Xdr),
            Err(TOO_DEEP.to_owned())
        );
        assert_eq!(
            Filter::parse(&"not ".repeat(60_000), Dialect::Xdr),
            Err(TOO_DEEP.to_owned())
        );
        let chain = |n: usize| vec!["status eq 'Active'"; n].join(" or ");
        assert!(Filter::parse(&chain(500), Dialect::Graph).is_ok());
        let e = Filter::parse(&chain(20_000), Dialect::Graph).unwrap_err();
        assert!(e.contains("node count limit of '1000'"), "{e}");
        let tight = FilterLimits {
            max_depth: 2,
            max_nodes: 3,
        };
        assert!(Filter::parse_within("((status eq 'Active'))", Dialect::Xdr, tight).is_ok());
        assert!(Filter::parse_within("(((status eq 'Active')))", Dialect::Xdr, tight).is_err());
        assert!(Filter::parse_within(&chain(2), Dialect::Xdr, tight).is_ok());
        assert!(Filter::parse_within(&chain(3), Dialect::Xdr, tight).is_err());
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
