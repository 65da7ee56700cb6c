//! Alerts as their own calls: Defender's `/api/alerts` (Defender for Endpoint's shape,
//! served on the Defender for Endpoint and Defender XDR hosts) and Graph's
//! `/security/alerts_v2`. The alerts live inside their incidents ([`Incident::alerts`]),
//! so an update here is what the incident's views show too.
//!
//! [`Incident::alerts`]: crate::incidents::Incident::alerts

use serde_json::{json, Map, Value};

use crate::filter::{Field, FieldValue};
use crate::incidents::{
    determination, graph_enum, one_of, string, string_or_null, unknown_property, Comment, Dialect,
};
use defender_core::timefmt::{format_rfc3339_ms, parse_rfc3339_ms};

/// An alert's statuses (DD defender-endpoint/api/update-alert.md; Graph spells them
/// `new`, `inProgress`, `resolved`, GD security-alert-update.md).
pub const STATUSES: [&str; 3] = ["New", "InProgress", "Resolved"];
/// The classifications an alert PATCH may set (DD update-alert.md lists the last three;
/// the alert entity and Graph's alertClassification also have `Unknown`).
pub const CLASSIFICATIONS: [&str; 4] = [
    "Unknown",
    "TruePositive",
    "InformationalExpectedActivity",
    "FalsePositive",
];

/// The keys of a Defender for Endpoint evidence, in the order of the documented example
/// (DD get-alerts.md, Example 2): the service sends them all, `null` where unused.
const EVIDENCE_KEYS: [&str; 23] = [
    "sha1",
    "sha256",
    "fileName",
    "filePath",
    "processId",
    "processCommandLine",
    "processCreationTime",
    "parentProcessId",
    "parentProcessCreationTime",
    "parentProcessFileName",
    "parentProcessFilePath",
    "ipAddress",
    "url",
    "registryKey",
    "registryHive",
    "registryValueType",
    "registryValue",
    "accountName",
    "domainName",
    "userSid",
    "aadUserId",
    "userPrincipalName",
    "detectionStatus",
];

/// One alert as the emulator keeps it: the Defender XDR shape its incident embeds
/// (DD api-list-incidents.md: `alertId`, `devices[]`, `entities[]`...), and its comments,
/// which that shape has no place for.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// The alert in Defender XDR's shape; always an object.
    pub xdr: Value,
    /// Comments from Defender's PATCH `comment` and Graph's comments route.
    pub comments: Vec<Comment>,
}

impl Alert {
    /// An alert from its Defender XDR shape, without comments.
    pub fn new(xdr: Value) -> Alert {
        Alert {
            xdr,
            comments: Vec::new(),
        }
    }

    /// The alert's id (`alertId`; `id` on the alert routes).
    pub fn id(&self) -> &str {
        self.xdr["alertId"].as_str().unwrap_or_default()
    }

    /// Defender for Endpoint's alert (DD defender-endpoint/api/alerts.md, get-alerts.md):
    /// `evidence` is filled only when `expand_evidence` (`$expand=evidence`) and is `[]`
    /// otherwise, as Example 1 of get-alerts.md shows it.
    pub fn to_mde(&self, tenant: &str, expand_evidence: bool) -> Value {
        let a = &self.xdr;
        let device = &a["devices"][0];
        let entities = a["entities"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        let related_user = entities.iter().find(|x| x["entityType"] == "User").map_or(
            Value::Null,
            |x| json!({"userName": x["accountName"], "domainName": x["domainName"]}),
        );
        let evidence: Vec<Value> = if expand_evidence {
            entities
                .iter()
                .map(|x| mde_evidence(x, &a["creationTime"]))
                .collect()
        } else {
            Vec::new()
        };
        json!({
            "id": a["alertId"],
            "incidentId": a["incidentId"],
            "investigationId": a["investigationId"],
            "assignedTo": a["assignedTo"],
            "severity": a["severity"],
            "status": a["status"],
            "classification": a["classification"],
            "determination": a["determination"],
            "investigationState": a["investigationState"],
            "detectionSource": a["detectionSource"],
            "detectorId": a["detectorId"],
            "category": a["category"],
            "threatFamilyName": a["threatFamilyName"],
            "title": a["title"],
            "description": a["description"],
            "alertCreationTime": a["creationTime"],
            "firstEventTime": a["firstActivity"],
            "lastEventTime": a["lastActivity"],
            "lastUpdateTime": a["lastUpdatedTime"],
            "resolvedTime": a["resolvedTime"],
            "machineId": device["mdatpDeviceId"],
            "computerDnsName": device["deviceDnsName"],
            "rbacGroupName": device["rbacGroupName"],
            "aadTenantId": tenant,
            "threatName": Value::Null,
            "mitreTechniques": a["mitreTechniques"],
            "relatedUser": related_user,
            "comments": self.comments.iter().map(Comment::to_xdr).collect::<Vec<_>>(),
            "evidence": evidence,
        })
    }

    /// Graph's `alerts_v2` shape (GD security-alert.md): `evidence[]` instead of XDR's
    /// `devices[]` and `entities[]`, with every property of the documented examples (GD
    /// security-list-alerts_v2.md, security-list-incidents.md Example 2), `null` where the
    /// XDR alert has nothing. The same shape as an incident's `$expand=alerts`.
    pub fn to_graph(&self, tenant: &str) -> Value {
        let a = &self.xdr;
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
        let incident_id = a["incidentId"]
            .as_i64()
            .map_or_else(String::new, |n| n.to_string());
        json!({
            "@odata.type": "#microsoft.graph.security.alert",
            "id": a["alertId"],
            "providerAlertId": a["alertId"],
            "incidentId": incident_id,
            "tenantId": tenant,
            "title": a["title"],
            "description": a["description"],
            "recommendedActions": "",
            "severity": e(&a["severity"]),
            "status": e(&a["status"]),
            // Graph's alertClassification and alertDetermination start at `unknown`.
            "classification": e(&a["classification"]),
            "determination": e(&a["determination"]),
            "serviceSource": e(&a["serviceSource"]),
            "detectionSource": e(&a["detectionSource"]),
            "detectorId": a["detectorId"],
            "category": a["category"],
            "assignedTo": a["assignedTo"],
            "alertWebUrl": format!(
                "https://security.microsoft.com/alerts/{}?tid={tenant}",
                self.id()
            ),
            "incidentWebUrl": format!(
                "https://security.microsoft.com/incidents/{incident_id}?tid={tenant}"
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
            "comments": self.comments.iter().map(|c| c.to_graph(false)).collect::<Vec<_>>(),
            "evidence": evidence,
            "systemTags": [],
        })
    }

    /// The value of `field` for `$filter`, in the dialect's spelling.
    pub fn filter_value(&self, field: Field, dialect: Dialect) -> FieldValue {
        let a = &self.xdr;
        let time = |k: &str| {
            FieldValue::Time(a[k].as_str().and_then(parse_rfc3339_ms).unwrap_or(i64::MIN))
        };
        let text = |k: &str| FieldValue::Text(a[k].as_str().map(str::to_owned));
        // Graph's enums (an unset classification is `unknown`); Defender's as stored.
        let spelled = |k: &str| match dialect {
            Dialect::Xdr => text(k),
            Dialect::Graph => FieldValue::Text(Some(graph_enum(a[k].as_str().unwrap_or("")))),
        };
        match field {
            Field::LastUpdate => time("lastUpdatedTime"),
            Field::Created => time("creationTime"),
            Field::LastEvent => time("lastActivity"),
            Field::Status => spelled("status"),
            Field::AssignedTo => text("assignedTo"),
            Field::Severity => spelled("severity"),
            Field::Classification => spelled("classification"),
            Field::Determination => spelled("determination"),
            Field::ServiceSource => spelled("serviceSource"),
            Field::DetectionSource => text("detectionSource"),
            Field::Category => text("category"),
            Field::Id => text("alertId"),
            Field::IncidentId => FieldValue::Number(a["incidentId"].as_i64()),
            Field::InvestigationId => FieldValue::Number(a["investigationId"].as_i64()),
        }
    }

    /// Applies a PATCH body (Defender's, DD update-alert.md, in the XDR dialect; Graph's,
    /// GD security-alert-update.md); the error is the 400 message. Nothing changes when
    /// the body is refused.
    pub fn apply_patch(
        &mut self,
        body: &Map<String, Value>,
        dialect: Dialect,
        author: &str,
        now_ms: i64,
    ) -> Result<(), String> {
        let mut status = None;
        let mut classification = None;
        let mut determination_ = None;
        let mut assigned: Option<Option<String>> = None;
        let mut comment = None;
        for (key, value) in body {
            // Defender's body parameters are case-sensitive (DD common-errors.md), so
            // `Status` is not `status` there; Graph's are its type's property names.
            match key.as_str() {
                "status" => status = Some(one_of(string(value, key)?, &STATUSES, key, dialect)?),
                "classification" => {
                    classification =
                        Some(one_of(string(value, key)?, &CLASSIFICATIONS, key, dialect)?)
                }
                "determination" => {
                    determination_ = Some(determination(string_or_null(value, key)?))
                }
                "assignedTo" => assigned = Some(string_or_null(value, key)?.map(str::to_owned)),
                "comment" if dialect == Dialect::Xdr => {
                    comment = string_or_null(value, key)?.map(str::to_owned)
                }
                // Graph's alert type has customDetails (a dictionary): accepted, not kept.
                "customDetails" if dialect == Dialect::Graph => {
                    if !matches!(value, Value::Object(_) | Value::Null) {
                        return Err("`customDetails` must be an object".into());
                    }
                }
                "@odata.type" if dialect == Dialect::Graph => {}
                other => {
                    return Err(match dialect {
                        Dialect::Graph => {
                            unknown_property(other, "microsoft.graph.security.alert")
                        }
                        // Ours: Defender documents the code, not this text.
                        Dialect::Xdr => format!(
                            "The property '{other}' does not exist or cannot be updated (the body parameters are case-sensitive: status, assignedTo, classification, determination, comment)"
                        ),
                    });
                }
            }
        }
        let now = Value::String(format_rfc3339_ms(now_ms));
        let Some(a) = self.xdr.as_object_mut() else {
            return Err("the alert cannot be updated".into());
        };
        if let Some(s) = status {
            let resolved = s == "Resolved";
            let was = a.get("status").and_then(Value::as_str) == Some("Resolved");
            a.insert("status".into(), s.into());
            if resolved && !was {
                a.insert("resolvedTime".into(), now.clone());
            } else if !resolved {
                a.insert("resolvedTime".into(), Value::Null);
            }
        }
        if let Some(c) = classification {
            a.insert("classification".into(), c.into());
        }
        if let Some(d) = determination_ {
            a.insert("determination".into(), d.into());
        }
        if let Some(to) = assigned {
            a.insert("assignedTo".into(), to.map_or(Value::Null, Value::String));
        }
        a.insert("lastUpdatedTime".into(), now);
        if let Some(c) = comment {
            self.add_comment(c, author, now_ms);
        }
        Ok(())
    }

    /// Appends a comment (Defender's PATCH `comment`, Graph's comments route) and touches
    /// the alert's last update time.
    pub fn add_comment(&mut self, comment: String, author: &str, now_ms: i64) {
        self.comments.push(Comment {
            comment,
            created_by: author.to_owned(),
            created_ms: now_ms,
        });
        if let Some(a) = self.xdr.as_object_mut() {
            a.insert(
                "lastUpdatedTime".into(),
                Value::String(format_rfc3339_ms(now_ms)),
            );
        }
    }
}

/// One XDR alert entity as Defender for Endpoint's evidence (DD get-alerts.md, Example 2).
fn mde_evidence(entity: &Value, created: &Value) -> Value {
    let mut out = Map::new();
    out.insert("entityType".into(), entity["entityType"].clone());
    out.insert("evidenceCreationTime".into(), created.clone());
    for k in EVIDENCE_KEYS {
        out.insert(k.to_owned(), entity.get(k).cloned().unwrap_or(Value::Null));
    }
    // Files and processes are what a detection detected.
    if matches!(entity["entityType"].as_str(), Some("Process" | "File")) {
        out.insert("detectionStatus".into(), "Detected".into());
    }
    Value::Object(out)
}
