//! Incidents on both surfaces: filters, paging, get, patch.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

fn roomy() -> defender_emulator::EmulatorBuilder {
    small().limits("2021,incidents.calls=10000/1m".parse().unwrap())
}

#[tokio::test]
async fn xdr_list_pages_with_next_links() {
    let env = Env::start(roomy()).await;
    let token = env.token().await;
    let (s, v) = json(env.get(&token, "/api/incidents").await).await;
    assert_eq!(s, StatusCode::OK);
    assert!(v["@odata.context"]
        .as_str()
        .unwrap()
        .ends_with("/api/$metadata#Incidents"));
    assert_eq!(v["value"].as_array().unwrap().len(), 100);
    let first = &v["value"][0];
    for field in [
        "incidentId",
        "incidentUri",
        "redirectIncidentId",
        "incidentName",
        "createdTime",
        "lastUpdateTime",
        "assignedTo",
        "classification",
        "determination",
        "detectionSource",
        "status",
        "severity",
        "tags",
        "comments",
        "alerts",
    ] {
        assert!(first.get(field).is_some(), "{field} missing");
    }
    assert!(first["incidentId"].is_i64());
    let alert = &first["alerts"][0];
    for field in [
        "alertId",
        "incidentId",
        "serviceSource",
        "title",
        "severity",
        "mitreTechniques",
        "devices",
        "entities",
    ] {
        assert!(alert.get(field).is_some(), "alert {field} missing");
    }

    let (all, pages) = all_pages(&env, &token, "/api/incidents?$top=25").await;
    assert_eq!(all.len(), 120);
    assert_eq!(pages, 5);
    let ids: HashSet<i64> = all
        .iter()
        .map(|i| i["incidentId"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 120);
    let (s, v) = json(env.get(&token, "/api/incidents?$top=10&$skip=115").await).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["value"].as_array().unwrap().len(), 5);
    assert!(v.get("@odata.nextLink").is_none());
}

#[tokio::test]
async fn top_over_100_is_refused() {
    let env = Env::start(roomy()).await;
    let token = env.token().await;
    assert_eq!(
        env.get(&token, "/api/incidents?$top=100").await.status(),
        StatusCode::OK
    );
    for q in ["$top=101", "$top=-1", "$top=x", "$skip=-3"] {
        let (s, v) = json(env.get(&token, &format!("/api/incidents?{q}")).await).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{q}");
        envelope(&v, "BadRequest");
    }
    let (s, _) = json(env.get(&token, "/v1.0/security/incidents?$top=101").await).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn filters_on_the_documented_fields() {
    let env = Env::start(roomy()).await;
    let token = env.token().await;
    let (all, _) = all_pages(&env, &token, "/api/incidents").await;

    let (active, _) = all_pages(
        &env,
        &token,
        "/api/incidents?$filter=status%20eq%20'Active'",
    )
    .await;
    assert!(!active.is_empty());
    assert!(active.iter().all(|i| i["status"] == "Active"));
    assert_eq!(
        active.len(),
        all.iter().filter(|i| i["status"] == "Active").count()
    );

    let cut = "2025-12-20T00:00:00Z";
    let (recent, _) = all_pages(
        &env,
        &token,
        &format!("/api/incidents?$filter=lastUpdateTime+ge+{cut}&$top=7"),
    )
    .await;
    assert_eq!(
        recent.len(),
        all.iter()
            .filter(|i| i["lastUpdateTime"].as_str().unwrap() >= "2025-12-20")
            .count()
    );
    assert!(!recent.is_empty());

    let f = format!("(status eq 'Resolved' or status eq 'InProgress') and createdTime lt {cut} and assignedTo ne null");
    let (some, _) = all_pages(
        &env,
        &token,
        &format!("/api/incidents?$filter={}", urlenc(&f)),
    )
    .await;
    let expected = all
        .iter()
        .filter(|i| {
            (i["status"] == "Resolved" || i["status"] == "InProgress")
                && i["createdTime"].as_str().unwrap() < "2025-12-20"
                && !i["assignedTo"].is_null()
        })
        .count();
    assert_eq!(some.len(), expected);

    let f = "assignedTo eq 'alice@contoso.com'";
    let (alice, _) = all_pages(
        &env,
        &token,
        &format!("/api/incidents?$filter={}", urlenc(f)),
    )
    .await;
    assert!(alice.iter().all(|i| i["assignedTo"] == "alice@contoso.com"));

    for bad in [
        "severity eq 'High'",
        "status eq 'Active",
        "status eq Active",
        "lastUpdateTime ge yesterday",
        "(status eq 'Active'",
        "status eq 'Active' and",
        "lastUpdateDateTime ge 2025-01-01T00:00:00Z",
    ] {
        let (s, v) = json(
            env.get(&token, &format!("/api/incidents?$filter={}", urlenc(bad)))
                .await,
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");
        envelope(&v, "BadRequest");
    }
}

#[tokio::test]
async fn get_one_and_404() {
    let env = Env::start(roomy()).await;
    let token = env.token().await;
    let (s, v) = json(env.get(&token, "/api/incidents/1005").await).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["incidentId"], 1005);
    for missing in [
        "/api/incidents/99999",
        "/api/incidents/abc",
        "/v1.0/security/incidents/99999",
    ] {
        let (s, v) = json(env.get(&token, missing).await).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{missing}");
        envelope(&v, "NotFound");
    }
    let (s, v) = json(
        env.patch(&token, "/api/incidents/99999", &json!({"status": "Active"}))
            .await,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    envelope(&v, "NotFound");
}

#[tokio::test]
async fn patch_updates_and_persists() {
    let env = Env::start(roomy()).await;
    env.clock().advance(Duration::from_secs(3600));
    let token = env.token().await;
    let body = json!({
        "status": "Resolved",
        "assignedTo": "secops@contoso.com",
        "classification": "TruePositive",
        "determination": "SomethingTheDocsForgot",
        "tags": ["Emulated", "Patched"],
        "comment": "Closed by the playbook"
    });
    let (s, v) = json(env.patch(&token, "/api/incidents/1010", &body).await).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "Resolved");
    assert_eq!(v["classification"], "TruePositive");
    assert_eq!(v["determination"], "SomethingTheDocsForgot");
    assert_eq!(v["tags"], json!(["Emulated", "Patched"]));
    assert_eq!(v["lastUpdateTime"], "2026-01-01T01:00:00.000Z");
    let comments = v["comments"].as_array().unwrap();
    assert_eq!(
        comments.last().unwrap()["comment"],
        "Closed by the playbook"
    );

    let (_, again) = json(env.get(&token, "/api/incidents/1010").await).await;
    assert_eq!(without_context(again), v);
    // It now matches a filter on its new update time.
    let (s, list) = json(
        env.get(
            &token,
            "/api/incidents?$filter=lastUpdateTime%20ge%202026-01-01T00:30:00Z",
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["value"].as_array().unwrap().len(), 1);

    for bad in [
        json!({"status": "Closed"}),
        json!({"classification": "Maybe"}),
        json!({"tags": "not-a-list"}),
        json!({"status": 3}),
        json!({"noSuchField": 1}),
    ] {
        let (s, v) = json(env.patch(&token, "/api/incidents/1010", &bad).await).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");
        envelope(&v, "BadRequest");
    }
    // A rejected patch changes nothing.
    let (_, after) = json(env.get(&token, "/api/incidents/1010").await).await;
    assert_eq!(without_context(after), v);
    // PATCH wants JSON.
    let r = env
        .http
        .patch(format!("{}/api/incidents/1010", env.base))
        .bearer_auth(&token)
        .body(r#"{"status":"Active"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn graph_incidents_shape_filter_paging_and_patch() {
    let env = Env::start(roomy()).await;
    let token = env.token().await;
    let (s, v) = json(env.get(&token, "/v1.0/security/incidents?$top=3").await).await;
    assert_eq!(s, StatusCode::OK);
    assert!(v["@odata.context"]
        .as_str()
        .unwrap()
        .contains("$metadata#security/incidents"));
    assert!(v["@odata.nextLink"].as_str().unwrap().contains("$skip=3"));
    let i = &v["value"][0];
    assert!(i["id"].is_string());
    for field in [
        "displayName",
        "createdDateTime",
        "lastUpdateDateTime",
        "status",
        "severity",
        "classification",
        "determination",
        "customTags",
        "comments",
        "tenantId",
    ] {
        assert!(i.get(field).is_some(), "{field} missing");
    }
    assert_eq!(i["tenantId"], "emulator");
    assert!(i.get("alerts").is_none());

    let (all, _) = all_pages(&env, &token, "/v1.0/security/incidents").await;
    assert_eq!(all.len(), 120);
    let statuses: HashSet<&str> = all.iter().map(|i| i["status"].as_str().unwrap()).collect();
    assert!(
        statuses
            .iter()
            .all(|s| ["active", "resolved", "inProgress", "redirected"].contains(s)),
        "{statuses:?}"
    );

    let (ip, _) = all_pages(
        &env,
        &token,
        "/v1.0/security/incidents?$filter=status%20eq%20'inProgress'",
    )
    .await;
    assert!(!ip.is_empty());
    assert!(ip.iter().all(|i| i["status"] == "inProgress"));
    let (recent, _) = all_pages(&env, &token, "/v1.0/security/incidents?$filter=lastUpdateDateTime%20gt%202025-12-25T00:00:00Z%20and%20createdDateTime%20le%202026-01-01T00:00:00Z").await;
    assert!(recent
        .iter()
        .all(|i| i["lastUpdateDateTime"].as_str().unwrap() > "2025-12-25"));
    let (s, _) = json(
        env.get(
            &token,
            "/v1.0/security/incidents?$filter=lastUpdateTime%20gt%202025-12-25T00:00:00Z",
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    let (s, one) = json(
        env.get(&token, "/v1.0/security/incidents/1001?$expand=alerts")
            .await,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(one["id"], "1001");
    assert!(!one["alerts"].as_array().unwrap().is_empty());

    let (s, v) = json(
        env.patch(&token, "/v1.0/security/incidents/1001", &json!({"status": "resolved", "classification": "falsePositive", "determination": "clean", "customTags": ["x"]}))
            .await,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "resolved");
    assert_eq!(v["classification"], "falsePositive");
    assert_eq!(v["determination"], "clean");
    assert_eq!(v["customTags"], json!(["x"]));
    // The same incident seen through Defender XDR.
    let (_, x) = json(env.get(&token, "/api/incidents/1001").await).await;
    assert_eq!(x["status"], "Resolved");
    assert_eq!(x["classification"], "FalsePositive");
    let (s, _) = json(
        env.patch(
            &token,
            "/v1.0/security/incidents/1001",
            &json!({"status": "done"}),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn incidents_are_deterministic_per_seed() {
    let a = Env::start(roomy().seed(5)).await;
    let b = Env::start(roomy().seed(5)).await;
    let c = Env::start(roomy().seed(6)).await;
    let (ta, tb, tc) = (a.token().await, b.token().await, c.token().await);
    let (_, va) = json(a.get(&ta, "/api/incidents?$top=50").await).await;
    let (_, vb) = json(b.get(&tb, "/api/incidents?$top=50").await).await;
    let (_, vc) = json(c.get(&tc, "/api/incidents?$top=50").await).await;
    // The links name each server's own port; the incidents are the same.
    assert_eq!(va["value"], vb["value"]);
    assert_ne!(va["value"], vc["value"]);
}

/// An XDR GET's entity without its `@odata.context`: the PATCH answer, like the
/// documented one, has none.
fn without_context(mut v: Value) -> Value {
    let had = v.as_object_mut().and_then(|m| m.remove("@odata.context"));
    assert!(had.is_some(), "a GET names its entity type: {v}");
    v
}

/// `--churn`: on the emulator's clock, incidents change (their lastUpdateTime moves) and
/// new ones appear first in the list, shifting the later pages; the churn stops when told.
#[tokio::test]
async fn churn_changes_and_creates_incidents_on_the_clock() {
    let env = Env::start(roomy().churn(4.0).churn_for(Duration::from_secs(10))).await;
    let clock = env.clock();
    let token = env.token().await;
    let (before, _) = all_pages(&env, &token, "/api/incidents").await;
    let n = before.len();
    assert_eq!(env.emu.stats().churn_events, 0);
    let start = clock.unix_ms();
    clock.advance(Duration::from_secs(5));
    let (s, page) = json(env.get(&token, "/api/incidents?$top=5").await).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(env.emu.stats().churn_events, 20, "4 per second for 5 s");
    let (after, _) = all_pages(&env, &token, "/api/incidents").await;
    let m = after.len();
    assert!(m > n, "new incidents appeared: {n} then {m}");
    let newest_before = before[0]["incidentId"].as_i64().unwrap();
    assert!(page["value"][0]["incidentId"].as_i64().unwrap() > newest_before);
    let ids: Vec<i64> = after
        .iter()
        .map(|i| i["incidentId"].as_i64().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest-created first");
    let ms = |v: &Value, k: &str| {
        let t = v[k].as_str().unwrap();
        defender_core::timefmt::parse_rfc3339(t)
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    let changed = after
        .iter()
        .filter(|i| ms(i, "createdTime") < start && ms(i, "lastUpdateTime") >= start)
        .count();
    assert!(changed >= 5, "existing incidents changed: {changed}");
    // A filter on lastUpdateTime sees exactly the events so far.
    let since = defender_core::timefmt::format_rfc3339(
        std::time::UNIX_EPOCH + Duration::from_millis(start as u64),
    );
    let (recent, _) = all_pages(
        &env,
        &token,
        &format!(
            "/api/incidents?$filter={}",
            urlenc(&format!("lastUpdateTime ge {since}"))
        ),
    )
    .await;
    assert_eq!(recent.len(), changed + (m - n));
    // The churn stops after 10 s: 40 events, however long the clock runs.
    clock.advance(Duration::from_secs(60));
    let _ = env.get(&token, "/api/incidents?$top=1").await;
    assert_eq!(env.emu.stats().churn_events, 40);
}
