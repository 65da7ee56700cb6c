//! Alerts as their own calls, on both surfaces, over HTTP: Defender's `/api/alerts`
//! (Defender for Endpoint's shape) and Graph's `/v1.0/security/alerts_v2`: lists, filters,
//! paging, `$expand=evidence`, get, update, comments, and the alerts quota group. The
//! alerts are those of the incidents, so an update shows in the incident's views too.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;
use defender_emulator::{DEFAULT_CLIENT_ID as C, DEFAULT_SECRET as S, DEFAULT_TENANT as T};
use reqwest::StatusCode;
use serde_json::{json, Value};

const MDE_ALERTS: &str = "/api/alerts";
const GRAPH_ALERTS: &str = "/v1.0/security/alerts_v2";

fn roomy() -> defender_emulator::EmulatorBuilder {
    small().limits(
        "2021,incidents.calls=10000/1m,alerts.calls=10000/1m"
            .parse()
            .unwrap(),
    )
}

/// Every alert of every incident, in Defender XDR's shape, by id.
async fn incident_alerts(env: &Env, token: &str) -> BTreeMap<String, Value> {
    let (incidents, _) = all_pages(env, token, "/api/incidents").await;
    let mut out = BTreeMap::new();
    for i in &incidents {
        for a in i["alerts"].as_array().unwrap() {
            let id = a["alertId"].as_str().unwrap().to_owned();
            assert!(
                out.insert(id, a.clone()).is_none(),
                "two alerts with one id"
            );
        }
    }
    out
}

fn ids(items: &[Value], key: &str) -> Vec<String> {
    items
        .iter()
        .map(|a| a[key].as_str().unwrap().to_owned())
        .collect()
}

/// Asserts no id repeats and returns them as a set.
fn distinct(ids: &[String]) -> BTreeSet<String> {
    let set: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(set.len(), ids.len(), "an alert was repeated");
    set
}

#[tokio::test]
async fn mde_list_pages_through_every_alert_once() {
    let env = Env::start(roomy()).await;
    let token = env.token().await;
    let every = incident_alerts(&env, &token).await;
    assert!(every.len() > 120, "{}", every.len());

    // The default page is the documented maximum, 10,000: everything, no next link.
    let (s, v) = json(env.get(&token, MDE_ALERTS).await).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["@odata.context"]
        .as_str()
        .unwrap()
        .ends_with("/api/$metadata#Alerts"));
    assert!(v.get("@odata.nextLink").is_none());
    let one_page = v["value"].as_array().unwrap().clone();
    assert_eq!(one_page.len(), every.len());

    let (paged, pages) = all_pages(&env, &token, &format!("{MDE_ALERTS}?$top=7")).await;
    assert_eq!(pages, every.len().div_ceil(7));
    let paged_ids = ids(&paged, "id");
    assert_eq!(distinct(&paged_ids), every.keys().cloned().collect());
    // The same order as one page: newest incident first.
    assert_eq!(paged_ids, ids(&one_page, "id"));
    let incident_ids: Vec<i64> = paged
        .iter()
        .map(|a| a["incidentId"].as_i64().unwrap())
        .collect();
    assert!(incident_ids.windows(2).all(|w| w[0] >= w[1]));

    let (s, v) = json(
        env.get(
            &token,
            &format!("{MDE_ALERTS}?$top=5&$skip={}", every.len() - 3),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["value"].as_array().unwrap().len(), 3);
    assert!(v.get("@odata.nextLink").is_none());

    // Defender for Endpoint's alert: every key of the documented example, `evidence` empty
    // without $expand.
    let a = &one_page[0];
    let xdr = &every[a["id"].as_str().unwrap()];
    for (mde, from) in [
        ("incidentId", "incidentId"),
        ("investigationId", "investigationId"),
        ("severity", "severity"),
        ("status", "status"),
        ("title", "title"),
        ("alertCreationTime", "creationTime"),
        ("firstEventTime", "firstActivity"),
        ("lastEventTime", "lastActivity"),
        ("lastUpdateTime", "lastUpdatedTime"),
        ("detectorId", "detectorId"),
        ("mitreTechniques", "mitreTechniques"),
    ] {
        assert_eq!(a[mde], xdr[from], "{mde}");
    }
    assert_eq!(a["machineId"], xdr["devices"][0]["mdatpDeviceId"]);
    assert_eq!(a["computerDnsName"], xdr["devices"][0]["deviceDnsName"]);
    assert_eq!(a["aadTenantId"], T);
    assert!(a["relatedUser"]["userName"].is_string(), "{a}");
    assert_eq!(a["evidence"], json!([]));
    assert!(a.get("devices").is_none() && a.get("entities").is_none());
}

#[tokio::test]
async fn mde_expand_evidence_fills_every_documented_key() {
    let env = Env::start(roomy()).await;
    let token = env.token().await;
    let (s, v) = json(
        env.get(&token, &format!("{MDE_ALERTS}?$top=3&$expand=evidence"))
            .await,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let next = v["@odata.nextLink"].as_str().unwrap();
    assert!(next.contains("$expand=evidence"), "{next}");
    for a in v["value"].as_array().unwrap() {
        let evidence = a["evidence"].as_array().unwrap();
        let kinds: Vec<&str> = evidence
            .iter()
            .map(|e| e["entityType"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["User", "Process"], "{a}");
        for e in evidence {
            assert_eq!(e.as_object().unwrap().len(), 25, "{e}");
            assert_eq!(e["evidenceCreationTime"], a["alertCreationTime"]);
        }
        assert_eq!(evidence[0]["accountName"], a["relatedUser"]["userName"]);
        assert!(evidence[0]["detectionStatus"].is_null());
        assert_eq!(evidence[1]["detectionStatus"], "Detected");
        assert_eq!(evidence[1]["fileName"], "powershell.exe");
    }
    // The next page keeps the expansion; the get takes it too.
    let (_, v) = json(env.get_url(&token, next).await).await;
    assert!(!v["value"][0]["evidence"].as_array().unwrap().is_empty());
    let id = v["value"][0]["id"].as_str().unwrap().to_owned();
    let (_, one) = json(
        env.get(&token, &format!("{MDE_ALERTS}/{id}?$expand=evidence"))
            .await,
    )
    .await;
    assert_eq!(one["evidence"].as_array().unwrap().len(), 2);
    let (_, one) = json(env.get(&token, &format!("{MDE_ALERTS}/{id}")).await).await;
    assert_eq!(one["evidence"], json!([]));
}

#[tokio::test]
async fn mde_filters_on_every_documented_property() {
    let env = Env::start(roomy()).await;
    let token = env.token().await;
    let (all, _) = all_pages(&env, &token, MDE_ALERTS).await;
    let some = &all[all.len() / 2];
    let cut = some["alertCreationTime"].as_str().unwrap();
    let event = some["lastEventTime"].as_str().unwrap();
    let updated = some["lastUpdateTime"].as_str().unwrap();
    let text = |a: &Value, k: &str| a[k].as_str().unwrap_or("").to_ascii_lowercase();
    type Pred<'a> = Box<dyn Fn(&Value) -> bool + 'a>;
    let cases: Vec<(String, Pred)> = vec![
        (
            format!("alertCreationTime ge {cut}"),
            Box::new(|a| a["alertCreationTime"].as_str().unwrap() >= cut),
        ),
        (
            format!("lastUpdateTime lt '{updated}'"),
            Box::new(|a| a["lastUpdateTime"].as_str().unwrap() < updated),
        ),
        (
            format!("lastEventTime le {event}"),
            Box::new(|a| a["lastEventTime"].as_str().unwrap() <= event),
        ),
        (
            format!("incidentId eq {}", some["incidentId"]),
            Box::new(|a| a["incidentId"] == some["incidentId"]),
        ),
        (
            format!("id eq '{}'", some["id"].as_str().unwrap()),
            Box::new(|a| a["id"] == some["id"]),
        ),
        (
            "investigationId ge 50000".into(),
            Box::new(|a| a["investigationId"].as_i64().unwrap() >= 50_000),
        ),
        (
            "assignedTo eq null".into(),
            Box::new(|a| a["assignedTo"].is_null()),
        ),
        (
            "InvestigationId lt 50000 and asSignedTo eq 'alice@contoso.com'".into(),
            Box::new(|a| {
                a["investigationId"].as_i64().unwrap() < 50_000
                    && a["assignedTo"] == "alice@contoso.com"
            }),
        ),
        (
            "detectionSource eq 'OfficeATP'".into(),
            Box::new(|a| a["detectionSource"] == "OfficeATP"),
        ),
        ("status eq 'new'".into(), Box::new(|a| a["status"] == "New")),
        (
            "severity eq 'High' or severity eq 'Low'".into(),
            Box::new(|a| a["severity"] == "High" || a["severity"] == "Low"),
        ),
        (
            "not (category eq 'Execution')".into(),
            Box::new(|a| text(a, "category") != "execution"),
        ),
    ];
    for (filter, keep) in cases {
        let (got, _) = all_pages(
            &env,
            &token,
            &format!("{MDE_ALERTS}?$top=40&$filter={}", urlenc(&filter)),
        )
        .await;
        let want: Vec<&Value> = all.iter().filter(|a| keep(a)).collect();
        assert!(
            !want.is_empty() && want.len() < all.len(),
            "{filter}: {}",
            want.len()
        );
        assert_eq!(
            ids(&got, "id"),
            ids(&want.into_iter().cloned().collect::<Vec<_>>(), "id"),
            "{filter}"
        );
    }
}

#[tokio::test]
async fn mde_get_update_and_the_incident_sees_it() {
    let env = Env::start(roomy()).await;
    env.clock().advance(Duration::from_secs(3600));
    let token = env.token().await;
    let new = urlenc("status eq 'New'");
    let (s, v) = json(
        env.get(
            &token,
            &format!("{MDE_ALERTS}?$top=1&$skip=10&$filter={new}"),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let listed = v["value"][0].clone();
    let id = listed["id"].as_str().unwrap().to_owned();
    let incident = listed["incidentId"].as_i64().unwrap();
    let one = format!("{MDE_ALERTS}/{id}");
    let (s, mut got) = json(env.get(&token, &one).await).await;
    assert_eq!(s, StatusCode::OK);
    assert!(got["@odata.context"]
        .as_str()
        .unwrap()
        .ends_with("/api/$metadata#Alerts/$entity"));
    got.as_object_mut().unwrap().remove("@odata.context");
    assert_eq!(got, listed);

    let body = json!({
        "status": "Resolved",
        "assignedTo": "secop2@contoso.com",
        "classification": "FalsePositive",
        "determination": "Malware",
        "comment": "Resolve my alert and assign to secop2",
    });
    let (s, v) = json(env.patch(&token, &one, &body).await).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["id"], id.as_str());
    assert_eq!(v["status"], "Resolved");
    assert_eq!(v["assignedTo"], "secop2@contoso.com");
    assert_eq!(v["classification"], "FalsePositive");
    assert_eq!(v["determination"], "Malware");
    assert_eq!(v["lastUpdateTime"], "2026-01-01T01:00:00.000Z");
    assert_eq!(v["resolvedTime"], "2026-01-01T01:00:00.000Z");
    let comments = v["comments"].as_array().unwrap();
    assert_eq!(comments.len(), 1);
    assert_eq!(
        comments[0],
        json!({
            "comment": "Resolve my alert and assign to secop2",
            "createdBy": "API-App:emulator-client",
            "createdTime": "2026-01-01T01:00:00.000Z",
        })
    );
    // The get answers the same alert.
    let (_, mut again) = json(env.get(&token, &one).await).await;
    again.as_object_mut().unwrap().remove("@odata.context");
    assert_eq!(again, v);

    // One comment per call: a second adds one, an update without a comment adds none.
    let (_, v) = json(env.patch(&token, &one, &json!({"comment": "second"})).await).await;
    assert_eq!(v["comments"].as_array().unwrap().len(), 2);
    let (_, v) = json(
        env.patch(&token, &one, &json!({"status": "InProgress"}))
            .await,
    )
    .await;
    assert_eq!(v["comments"].as_array().unwrap().len(), 2);
    assert_eq!(v["status"], "InProgress");
    assert!(v["resolvedTime"].is_null());

    // The incident holds the same alert: Defender XDR's view and Graph's $expand=alerts.
    let (_, inc) = json(env.get(&token, &format!("/api/incidents/{incident}")).await).await;
    let xdr = inc["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["alertId"] == id.as_str())
        .unwrap();
    assert_eq!(xdr["status"], "InProgress");
    assert_eq!(xdr["assignedTo"], "secop2@contoso.com");
    assert_eq!(xdr["classification"], "FalsePositive");
    assert_eq!(xdr["determination"], "Malware");
    let (_, inc) = json(
        env.get(
            &token,
            &format!("/v1.0/security/incidents/{incident}?$expand=alerts"),
        )
        .await,
    )
    .await;
    let graph = inc["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == id.as_str())
        .unwrap();
    assert_eq!(graph["status"], "inProgress");
    assert_eq!(graph["classification"], "falsePositive");
    assert_eq!(graph["determination"], "malware");
    assert_eq!(graph["assignedTo"], "secop2@contoso.com");
    assert_eq!(graph["lastUpdateDateTime"], "2026-01-01T01:00:00.000Z");
    assert_eq!(graph["comments"].as_array().unwrap().len(), 2);
    assert_eq!(graph["comments"][1]["comment"], "second");
}

#[tokio::test]
async fn both_defender_hosts_tokens_read_the_alerts() {
    let env = Env::start(roomy()).await;
    let mde = env.scoped_token(T, C, S, MDE_SCOPE).await;
    let xdr = env.scoped_token(T, C, S, XDR_SCOPE).await;
    let graph = env.scoped_token(T, C, S, GRAPH_SCOPE).await;
    let get = |token: &str, path: &str| {
        let r = env
            .http
            .get(format!("{}{path}", env.base))
            .bearer_auth(token);
        async move { json(r.send().await.unwrap()).await }
    };
    let one = format!("{MDE_ALERTS}?$top=1");
    let (s, by_mde) = get(&mde, &one).await;
    assert_eq!(s, StatusCode::OK, "{by_mde}");
    let (s, by_xdr) = get(&xdr, &one).await;
    assert_eq!(s, StatusCode::OK, "{by_xdr}");
    assert_eq!(by_mde, by_xdr);
    let (s, v) = get(&graph, GRAPH_ALERTS).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn graph_list_pages_filters_and_caps_its_pages() {
    let env = Env::start(roomy()).await;
    let token = env.token().await;
    let every = incident_alerts(&env, &token).await;
    assert!(every.len() > 200, "{}", every.len());

    let (s, v) = json(env.get(&token, GRAPH_ALERTS).await).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["@odata.context"]
        .as_str()
        .unwrap()
        .ends_with("/v1.0/$metadata#security/alerts_v2"));
    assert_eq!(v["value"].as_array().unwrap().len(), 200);
    // A $top far over any page is taken, and served in pages of 200.
    for top in ["1000", "100000", "99999999999999999999999"] {
        let (s, v) = json(env.get(&token, &format!("{GRAPH_ALERTS}?$top={top}")).await).await;
        assert_eq!(s, StatusCode::OK, "{top}: {v}");
        assert_eq!(v["value"].as_array().unwrap().len(), 200, "{top}");
        let next = v["@odata.nextLink"].as_str().unwrap();
        assert!(next.ends_with("$top=200&$skip=200"), "{next}");
    }
    let (paged, pages) = all_pages(&env, &token, &format!("{GRAPH_ALERTS}?$top=9")).await;
    assert_eq!(pages, every.len().div_ceil(9));
    assert_eq!(
        distinct(&ids(&paged, "id")),
        every.keys().cloned().collect()
    );
    let (mde, _) = all_pages(&env, &token, MDE_ALERTS).await;
    assert_eq!(
        ids(&paged, "id"),
        ids(&mde, "id"),
        "one order on both surfaces"
    );
    for a in &paged {
        assert_eq!(a["@odata.type"], "#microsoft.graph.security.alert");
        assert!(a["incidentId"].is_string());
        assert!(a["evidence"].as_array().is_some_and(|e| !e.is_empty()));
        assert!(a["systemTags"].is_array());
    }

    let some = &paged[paged.len() / 3];
    let created = some["createdDateTime"].as_str().unwrap();
    let updated = some["lastUpdateDateTime"].as_str().unwrap();
    type Pred<'a> = Box<dyn Fn(&Value) -> bool + 'a>;
    let cases: Vec<(String, Pred)> = vec![
        (
            "assignedTo eq 'bob@contoso.com'".into(),
            Box::new(|a| a["assignedTo"] == "bob@contoso.com"),
        ),
        (
            "classification eq 'unknown'".into(),
            Box::new(|a| a["classification"] == "unknown"),
        ),
        (
            "determination ne 'unknown'".into(),
            Box::new(|a| a["determination"] != "unknown"),
        ),
        (
            format!("createdDateTime gt {created}"),
            Box::new(|a| a["createdDateTime"].as_str().unwrap() > created),
        ),
        (
            format!("lastUpdateDateTime le {updated}"),
            Box::new(|a| a["lastUpdateDateTime"].as_str().unwrap() <= updated),
        ),
        (
            "severity eq 'high'".into(),
            Box::new(|a| a["severity"] == "high"),
        ),
        (
            "serviceSource eq 'microsoftDefenderForEndpoint'".into(),
            Box::new(|a| a["serviceSource"] == "microsoftDefenderForEndpoint"),
        ),
        (
            "status eq 'resolved' or status eq 'inProgress'".into(),
            Box::new(|a| a["status"] == "resolved" || a["status"] == "inProgress"),
        ),
    ];
    // Resolve one alert so classification and determination have values to find.
    let resolved = paged[1]["id"].as_str().unwrap();
    let (s, _) = json(
        env.patch(
            &token,
            &format!("{GRAPH_ALERTS}/{resolved}"),
            &json!({"classification": "truePositive", "determination": "malware"}),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (paged, _) = all_pages(&env, &token, &format!("{GRAPH_ALERTS}?$top=50")).await;
    for (filter, keep) in cases {
        let (got, _) = all_pages(
            &env,
            &token,
            &format!("{GRAPH_ALERTS}?$top=25&$filter={}", urlenc(&filter)),
        )
        .await;
        let want: Vec<Value> = paged.iter().filter(|a| keep(a)).cloned().collect();
        assert!(
            !want.is_empty() && want.len() < paged.len(),
            "{filter}: {}",
            want.len()
        );
        assert_eq!(ids(&got, "id"), ids(&want, "id"), "{filter}");
    }
}

#[tokio::test]
async fn graph_get_update_and_the_other_views_see_it() {
    let env = Env::start(roomy()).await;
    env.clock().advance(Duration::from_secs(60));
    let token = env.token().await;
    let (_, v) = json(
        env.get(&token, &format!("{GRAPH_ALERTS}?$top=1&$skip=4"))
            .await,
    )
    .await;
    let listed = v["value"][0].clone();
    let id = listed["id"].as_str().unwrap().to_owned();
    let one = format!("{GRAPH_ALERTS}/{id}");
    let (s, mut got) = json(env.get(&token, &one).await).await;
    assert_eq!(s, StatusCode::OK, "{got}");
    assert!(got["@odata.context"]
        .as_str()
        .unwrap()
        .ends_with("/v1.0/$metadata#security/alerts_v2/$entity"));
    got.as_object_mut().unwrap().remove("@odata.context");
    assert_eq!(got, listed);

    // GD security-alert-update.md's example, and customDetails.
    let body = json!({
        "assignedTo": "secAdmin@contoso.onmicrosoft.com",
        "classification": "truePositive",
        "determination": "malware",
        "status": "inProgress",
        "customDetails": {"playbook": "contain"},
    });
    let (s, v) = json(env.patch(&token, &one, &body).await).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["@odata.type"], "#microsoft.graph.security.alert");
    assert_eq!(v["id"], id.as_str());
    assert_eq!(v["status"], "inProgress");
    assert_eq!(v["classification"], "truePositive");
    assert_eq!(v["determination"], "malware");
    assert_eq!(v["assignedTo"], "secAdmin@contoso.onmicrosoft.com");
    assert_eq!(v["lastUpdateDateTime"], "2026-01-01T00:01:00.000Z");
    let (_, mut again) = json(env.get(&token, &one).await).await;
    again.as_object_mut().unwrap().remove("@odata.context");
    assert_eq!(again, v);
    // Defender's view of the same alert.
    let (_, mde) = json(env.get(&token, &format!("{MDE_ALERTS}/{id}")).await).await;
    assert_eq!(mde["status"], "InProgress");
    assert_eq!(mde["classification"], "TruePositive");
    assert_eq!(mde["determination"], "Malware");
    assert_eq!(mde["assignedTo"], "secAdmin@contoso.onmicrosoft.com");
    // The incident's $expand=alerts.
    let incident = v["incidentId"].as_str().unwrap();
    let (_, inc) = json(
        env.get(
            &token,
            &format!("/v1.0/security/incidents/{incident}?$expand=alerts"),
        )
        .await,
    )
    .await;
    let expanded = inc["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == id.as_str())
        .unwrap()
        .clone();
    assert_eq!(expanded, v, "the same shape and values as alerts_v2");
}

#[tokio::test]
async fn graph_comments_append_once_per_call() {
    let env = Env::start(roomy()).await;
    let token = env.token().await;
    let (_, v) = json(env.get(&token, &format!("{GRAPH_ALERTS}?$top=1")).await).await;
    let id = v["value"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(v["value"][0]["comments"], json!([]));
    let path = format!("{GRAPH_ALERTS}/{id}/comments");
    for n in 1..=3 {
        let body = json!({
            "@odata.type": "microsoft.graph.security.alertComment",
            "comment": format!("note {n}"),
        });
        let (s, v) = json(env.post_json(&token, &path, &body).await).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(
            v["@odata.context"].as_str().unwrap(),
            format!(
                "{}/v1.0/$metadata#security/alerts_v2('{id}')/comments",
                env.base
            )
        );
        let value = v["value"].as_array().unwrap();
        assert_eq!(value.len(), n);
        assert_eq!(
            value.last().unwrap(),
            &json!({
                "@odata.type": "#microsoft.graph.security.alertComment",
                "comment": format!("note {n}"),
                "createdByDisplayName": "API-App:emulator-client",
                "createdDateTime": "2026-01-01T00:00:00.000Z",
            })
        );
    }
    // The alert keeps them, on both surfaces.
    let (_, a) = json(env.get(&token, &format!("{GRAPH_ALERTS}/{id}")).await).await;
    let texts: Vec<&str> = a["comments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["comment"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["note 1", "note 2", "note 3"]);
    let (_, a) = json(env.get(&token, &format!("{MDE_ALERTS}/{id}")).await).await;
    assert_eq!(a["comments"].as_array().unwrap().len(), 3);
    assert_eq!(a["comments"][2]["createdBy"], "API-App:emulator-client");
    // Refused bodies add nothing.
    for bad in [
        json!({"comment": " "}),
        json!({"comment": "x", "text": "y"}),
    ] {
        let (s, _) = json(env.post_json(&token, &path, &bad).await).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");
    }
    let (_, a) = json(env.get(&token, &format!("{GRAPH_ALERTS}/{id}")).await).await;
    assert_eq!(a["comments"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn the_alerts_group_has_its_own_quota() {
    // The default limits: alerts 100 per minute, incidents 50 per minute.
    let env = Env::start(small()).await;
    let token = env.token().await;
    for n in 0..100 {
        let path = if n % 2 == 0 {
            format!("{MDE_ALERTS}?$top=1")
        } else {
            format!("{GRAPH_ALERTS}?$top=1")
        };
        assert_eq!(env.get(&token, &path).await.status(), StatusCode::OK, "{n}");
    }
    // The 101st alerts call in the minute: Defender's 429 on /api/alerts, Graph's on
    // alerts_v2, each with Retry-After.
    let r = env.get(&token, &format!("{MDE_ALERTS}?$top=1")).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers()["retry-after"], "60");
    let (_, v) = json(r).await;
    assert_eq!(
        envelope(&v, "429"),
        "API calls quota exceeded! maximum allowed 100 per 00:01:00 You can send requests again in 60 seconds."
    );
    assert_eq!(v["error"]["target"], T);
    let r = env.get(&token, &format!("{GRAPH_ALERTS}/x")).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let (_, v) = json(r).await;
    assert_eq!(envelope(&v, "TooManyRequests"), "Please retry again later.");
    // A PATCH and a comment are alerts calls too.
    let r = env
        .patch(&token, &format!("{MDE_ALERTS}/x"), &json!({}))
        .await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let r = env
        .post_json(
            &token,
            &format!("{GRAPH_ALERTS}/x/comments"),
            &json!({"comment": "c"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    // Incidents keep their own quota.
    assert_eq!(
        env.get(&token, "/api/incidents?$top=1").await.status(),
        StatusCode::OK
    );
    assert_eq!(
        env.get(&token, "/v1.0/security/incidents?$top=1")
            .await
            .status(),
        StatusCode::OK
    );
    let stats = env.emu.stats();
    let alerts = stats.keys.iter().find(|k| k.group == "alerts").unwrap();
    assert_eq!(alerts.requests, 104);
    assert_eq!(alerts.throttled, 4);
    assert_eq!(alerts.windows[0].used, 100.0);
    let incidents = stats.keys.iter().find(|k| k.group == "incidents").unwrap();
    assert_eq!(incidents.requests, 2);
    // The window frees up.
    env.clock().advance(Duration::from_secs(60));
    assert_eq!(
        env.get(&token, &format!("{MDE_ALERTS}?$top=1"))
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn hostile_alert_requests_get_answers_not_panics() {
    let env = Env::start(roomy()).await;
    let token = env.token().await;
    let (_, v) = json(env.get(&token, &format!("{MDE_ALERTS}?$top=1")).await).await;
    let id = v["value"][0]["id"].as_str().unwrap().to_owned();
    // Odd ids: 404s.
    let long = "a".repeat(4000);
    for odd in ["%00", "%FF%FE", "..", "'", "da%20x", long.as_str(), "-1"] {
        for base in [MDE_ALERTS, GRAPH_ALERTS] {
            let (s, _) = json(env.get(&token, &format!("{base}/{odd}")).await).await;
            assert_eq!(s, StatusCode::NOT_FOUND, "{base}/{odd}");
        }
    }
    // Bodies that are not what a PATCH takes.
    for base in [MDE_ALERTS, GRAPH_ALERTS] {
        let one = format!("{base}/{id}");
        for body in [
            "{",
            "[]",
            "null",
            "\"status\"",
            "{\"status\": 5}",
            "{\"assignedTo\": {}}",
        ] {
            let r = env
                .http
                .patch(format!("{}{one}", env.base))
                .bearer_auth(env.for_path(&token, &one).await)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{one} {body}");
        }
        let r = env
            .http
            .patch(format!("{}{one}", env.base))
            .bearer_auth(env.for_path(&token, &one).await)
            .header("content-type", "text/plain")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "{one}");
    }
    // Query options far out of range.
    for q in [
        "$skip=99999999999999999999999",
        "$top=0",
        "$skip=18446744073709551615&$top=10000",
    ] {
        for base in [MDE_ALERTS, GRAPH_ALERTS] {
            let (s, v) = json(env.get(&token, &format!("{base}?{q}")).await).await;
            assert_eq!(s, StatusCode::OK, "{base}?{q}: {v}");
            assert_eq!(v["value"], json!([]), "{base}?{q}");
            assert!(v.get("@odata.nextLink").is_none());
        }
    }
    let deep = format!("{}status eq 'New'{}", "(".repeat(5000), ")".repeat(5000));
    for base in [MDE_ALERTS, GRAPH_ALERTS] {
        let (s, v) = json(
            env.get(&token, &format!("{base}?$filter={}", urlenc(&deep)))
                .await,
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{base}");
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("recursion limit"));
    }
    // Still serving.
    let (s, _) = json(env.get(&token, &format!("{MDE_ALERTS}/{id}")).await).await;
    assert_eq!(s, StatusCode::OK);
}
