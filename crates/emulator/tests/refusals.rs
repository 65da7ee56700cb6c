//! The emulator refuses what the real services refuse, each in the service's own status
//! and body (issue 13): Graph's page size, PATCH properties, comments route, envelope and
//! `$expand`; token audiences; MDE's case-sensitive body; Graph's Timespan forms and
//! filters; and the alert routes' page size, unknown alerts, PATCH bodies, audiences and
//! permissions.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

const GRAPH_INCIDENTS: &str = "/v1.0/security/incidents";
const MDE_ALERTS: &str = "/api/alerts";
const GRAPH_ALERTS: &str = "/v1.0/security/alerts_v2";

fn roomy() -> defender_emulator::EmulatorBuilder {
    small().limits(
        "2021,incidents.calls=10000/1m,alerts.calls=10000/1m,hunting.calls=1000/1m,hunting.runtime=none"
            .parse()
            .unwrap(),
    )
}

/// Asserts Graph's error envelope and returns `(code, message)`.
fn graph_envelope(v: &Value) -> (String, String) {
    let e = &v["error"];
    let keys: Vec<&str> = e.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 3, "code, message, innerError only: {v}");
    let inner = e["innerError"].as_object().expect("innerError");
    for k in ["date", "request-id", "client-request-id"] {
        assert!(inner[k].is_string(), "{k}: {v}");
    }
    (
        e["code"].as_str().unwrap().to_owned(),
        e["message"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn graph_top_over_50_is_refused_in_odatas_words() {
    let env = Env::start(roomy()).await;
    let token = env.token().await;
    for top in [51, 100, 1000] {
        let (s, v) = json(
            env.get(&token, &format!("{GRAPH_INCIDENTS}?$top={top}"))
                .await,
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{top}");
        let (code, message) = graph_envelope(&v);
        assert_eq!(code, "");
        assert_eq!(
            message,
            format!("The query specified in the URI is not valid. The limit of '50' for Top query has been exceeded. The value from the incoming request is '{top}'.")
        );
    }
    let (s, v) = json(env.get(&token, &format!("{GRAPH_INCIDENTS}?$top=50")).await).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["value"].as_array().unwrap().len(), 50);
    // Without $top, a Graph page is 50 too.
    let (_, v) = json(env.get(&token, GRAPH_INCIDENTS).await).await;
    assert_eq!(v["value"].as_array().unwrap().len(), 50);
    assert!(v["@odata.nextLink"].as_str().unwrap().contains("$top=50"));
    // Defender XDR keeps its 100.
    let (s, v) = json(env.get(&token, "/api/incidents?$top=100").await).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["value"].as_array().unwrap().len(), 100);
    let (s, v) = json(env.get(&token, "/api/incidents?$top=101").await).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        envelope(&v, "BadRequest"),
        "The limit of '100' for Top query has been exceeded. The value from the incoming request is '101'."
    );
}

#[tokio::test]
async fn graph_patch_refuses_properties_the_incident_type_lacks() {
    let env = Env::start(roomy()).await;
    let token = env.token().await;
    let one = format!("{GRAPH_INCIDENTS}/1001");
    let (_, before) = json(env.get(&token, &one).await).await;
    for (property, body) in [
        ("comment", json!({"status": "resolved", "comment": "done"})),
        ("tags", json!({"tags": ["x"]})),
        ("incidentName", json!({"incidentName": "x"})),
    ] {
        let (s, v) = json(env.patch(&token, &one, &body).await).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{property}");
        let (code, message) = graph_envelope(&v);
        assert_eq!(code, "BadRequest");
        assert_eq!(
            message,
            format!("The property '{property}' does not exist on type 'microsoft.graph.security.incident'. Make sure to only use property names that are defined by the type or mark the type as open type.")
        );
    }
    let (_, after) = json(env.get(&token, &one).await).await;
    assert_eq!(before, after, "a refused PATCH changes nothing");
    // Every property of the type is accepted; those the emulator models are applied.
    let body = json!({
        "assignedTo": "soc@contoso.com",
        "classification": "truePositive",
        "determination": "malware",
        "status": "inProgress",
        "customTags": ["Triage"],
        "description": "accepted",
        "displayName": "Renamed incident",
        "severity": "high",
        "resolvingComment": "accepted",
        "summary": "accepted",
    });
    let (s, v) = json(env.patch(&token, &one, &body).await).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["displayName"], "Renamed incident");
    assert_eq!(v["severity"], "high");
    assert_eq!(v["status"], "inProgress");
    assert_eq!(v["classification"], "truePositive");
    assert_eq!(v["assignedTo"], "soc@contoso.com");
    assert_eq!(v["customTags"], json!(["Triage"]));
    let (s, v) = json(env.patch(&token, &one, &json!({"severity": "dire"})).await).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    graph_envelope(&v);
    // Defender XDR keeps `comment` in its PATCH.
    let (s, v) = json(
        env.patch(
            &token,
            "/api/incidents/1001",
            &json!({"comment": "xdr note", "tags": ["a"]}),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v["comments"].as_array().unwrap().last().unwrap()["comment"],
        "xdr note"
    );
}

#[tokio::test]
async fn graph_comments_route_appends_and_answers_the_collection() {
    let env = Env::start(roomy()).await;
    let token = env.token().await;
    let path = format!("{GRAPH_INCIDENTS}/1002/comments");
    let (_, inc) = json(env.get(&token, &format!("{GRAPH_INCIDENTS}/1002")).await).await;
    let had = inc["comments"].as_array().unwrap().len();
    let stats_before = env.emu.stats();
    let body = json!({"@odata.type": "microsoft.graph.security.alertComment", "comment": "Contained by playbook"});
    let (s, v) = json(env.post_json(&token, &path, &body).await).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["@odata.context"]
        .as_str()
        .unwrap()
        .ends_with("/v1.0/$metadata#Collection(microsoft.graph.security.alertComment)"));
    let value = v["value"].as_array().unwrap();
    assert_eq!(value.len(), had + 1);
    assert_eq!(
        value.last().unwrap(),
        &json!({
            "@odata.type": "#microsoft.graph.security.alertComment",
            "comment": "Contained by playbook",
            "createdByDisplayName": "API-App:emulator-client",
            "createdDateTime": "2026-01-01T00:00:00.000Z",
        })
    );
    // The incident keeps it.
    let (_, inc) = json(env.get(&token, &format!("{GRAPH_INCIDENTS}/1002")).await).await;
    assert_eq!(inc["comments"].as_array().unwrap().len(), had + 1);
    // It counts against the incidents quota.
    let incidents_requests = |s: &defender_emulator::Stats| {
        s.keys
            .iter()
            .find(|k| k.group == "incidents")
            .map_or(0, |k| k.requests)
    };
    assert_eq!(
        incidents_requests(&env.emu.stats()),
        incidents_requests(&stats_before) + 2
    );
    // No comment, an empty one, a property the type lacks: 400 in Graph's envelope.
    for bad in [
        json!({"@odata.type": "microsoft.graph.security.alertComment"}),
        json!({"comment": "  "}),
        json!({"comment": 5}),
        json!({"comment": "x", "text": "y"}),
    ] {
        let (s, v) = json(env.post_json(&token, &path, &bad).await).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(graph_envelope(&v).0, "BadRequest");
    }
    // An unknown incident: 404 in Graph's envelope.
    let (s, v) = json(
        env.post_json(&token, &format!("{GRAPH_INCIDENTS}/99999/comments"), &body)
            .await,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(graph_envelope(&v).0, "NotFound");
    // POST only.
    let r = env.get(&token, &path).await;
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn graph_comments_are_applied_before_a_truncated_answer() {
    let spec = defender_emulator::FaultSpec::parse("truncate=0.5,seed=7").unwrap();
    let env = Env::start(roomy().faults(spec)).await;
    let token = env.token().await;
    let token = env.for_path(&token, GRAPH_INCIDENTS).await;
    let one = format!("{}{GRAPH_INCIDENTS}/1003", env.base);
    // Reads until one answer comes whole.
    let read = || async {
        for _ in 0..64 {
            let r = env.http.get(&one).bearer_auth(&token).send().await;
            if let Ok(r) = r {
                if let Ok(b) = r.bytes().await {
                    return serde_json::from_slice::<Value>(&b).unwrap();
                }
            }
        }
        panic!("no whole answer in 64 tries");
    };
    let had = read().await["comments"].as_array().unwrap().len();
    let (mut cut, mut whole) = (0, 0);
    for n in 0..12 {
        let r = env
            .http
            .post(format!("{one}/comments"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(json!({"comment": format!("note {n}")}).to_string())
            .send()
            .await;
        let ok = match r {
            Ok(r) => r.bytes().await.is_ok(),
            Err(_) => false,
        };
        if ok {
            whole += 1;
        } else {
            cut += 1;
        }
    }
    assert!(cut > 0 && whole > 0, "cut {cut}, whole {whole}");
    // Every comment was written, whether its answer arrived whole or cut.
    let comments = read().await["comments"].as_array().unwrap().len();
    assert_eq!(comments, had + 12);
}

#[tokio::test]
async fn graph_errors_carry_graphs_envelope_and_request_ids() {
    let env = Env::start(roomy()).await;
    let token = env.token().await;
    let graph = env.for_path(&token, GRAPH_INCIDENTS).await;
    let r = env
        .http
        .get(format!("{}{GRAPH_INCIDENTS}/99999", env.base))
        .bearer_auth(&graph)
        .header("client-request-id", "my-correlation-42")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let request_id = r.headers()["request-id"].to_str().unwrap().to_owned();
    assert_eq!(r.headers()["client-request-id"], "my-correlation-42");
    let (_, v) = json(r).await;
    let (code, _) = graph_envelope(&v);
    assert_eq!(code, "NotFound");
    assert_eq!(v["error"]["innerError"]["request-id"], request_id.as_str());
    assert_eq!(
        v["error"]["innerError"]["client-request-id"],
        "my-correlation-42"
    );
    assert_eq!(request_id.len(), 36, "a uuid: {request_id}");
    // Without the header, the emulator makes one up.
    let r = env.get(&token, &format!("{GRAPH_INCIDENTS}/99999")).await;
    let echo = r.headers()["client-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let (_, v) = json(r).await;
    assert_eq!(v["error"]["innerError"]["client-request-id"], echo.as_str());
    // Graph's 401.
    let (s, v) = json(env.get("made-up", GRAPH_INCIDENTS).await).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(graph_envelope(&v).0, "InvalidAuthenticationToken");
    // Defender keeps its envelope.
    let (s, v) = json(env.get(&token, "/api/incidents/99999").await).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    envelope(&v, "NotFound");
    assert!(v["error"]["target"].is_string());
    assert!(v["error"].get("innerError").is_none());
    // @odata.context on Graph's list and get.
    let (_, v) = json(env.get(&token, &format!("{GRAPH_INCIDENTS}?$top=1")).await).await;
    assert!(v["@odata.context"]
        .as_str()
        .unwrap()
        .ends_with("/v1.0/$metadata#security/incidents"));
    let (_, v) = json(env.get(&token, &format!("{GRAPH_INCIDENTS}/1000")).await).await;
    assert!(v["@odata.context"]
        .as_str()
        .unwrap()
        .ends_with("/v1.0/$metadata#security/incidents/$entity"));
}

#[tokio::test]
async fn graph_alerts_only_when_expanded() {
    let env = Env::start(roomy()).await;
    let token = env.token().await;
    let (_, v) = json(env.get(&token, &format!("{GRAPH_INCIDENTS}?$top=5")).await).await;
    for i in v["value"].as_array().unwrap() {
        assert!(i.get("alerts").is_none(), "{i}");
    }
    let (_, v) = json(env.get(&token, &format!("{GRAPH_INCIDENTS}/1000")).await).await;
    assert!(v.get("alerts").is_none());
    let (_, v) = json(
        env.get(&token, &format!("{GRAPH_INCIDENTS}?$top=5&$expand=alerts"))
            .await,
    )
    .await;
    let (_, one) = json(
        env.get(&token, &format!("{GRAPH_INCIDENTS}/1000?$expand=alerts"))
            .await,
    )
    .await;
    let mut incidents = v["value"].as_array().unwrap().clone();
    incidents.push(one);
    for i in &incidents {
        let alerts = i["alerts"].as_array().expect("alerts when expanded");
        assert!(!alerts.is_empty());
        for a in alerts {
            for k in [
                "id",
                "title",
                "severity",
                "status",
                "serviceSource",
                "detectionSource",
                "category",
                "createdDateTime",
                "lastUpdateDateTime",
            ] {
                assert!(a[k].is_string(), "{k}: {a}");
            }
            assert_eq!(a["incidentId"], i["id"]);
            assert!(a["mitreTechniques"].is_array());
            assert!(a.get("devices").is_none() && a.get("entities").is_none());
            let evidence = a["evidence"].as_array().unwrap();
            let types: Vec<&str> = evidence
                .iter()
                .map(|e| e["@odata.type"].as_str().unwrap())
                .collect();
            assert!(
                types.contains(&"#microsoft.graph.security.deviceEvidence"),
                "{types:?}"
            );
            assert!(types.contains(&"#microsoft.graph.security.userEvidence"));
            assert!(types.contains(&"#microsoft.graph.security.processEvidence"));
        }
    }
}

#[tokio::test]
async fn a_token_for_one_api_is_refused_by_another() {
    use defender_emulator::{DEFAULT_CLIENT_ID as C, DEFAULT_SECRET as S, DEFAULT_TENANT as T};
    let env = Env::start(roomy()).await;
    let xdr = env.scoped_token(T, C, S, XDR_SCOPE).await;
    let mde = env.scoped_token(T, C, S, MDE_SCOPE).await;
    let graph = env.scoped_token(T, C, S, GRAPH_SCOPE).await;
    let send = |token: &str, path: &str| {
        let r = env
            .http
            .post(format!("{}{path}", env.base))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(json!({"Query": "AlertInfo | take 1"}).to_string());
        async move { json(r.send().await.unwrap()).await }
    };
    // Each token works on its own API.
    for (token, path) in [(&xdr, XDR_HUNT), (&mde, MDE_HUNT), (&graph, GRAPH_HUNT)] {
        assert_eq!(send(token, path).await.0, StatusCode::OK, "{path}");
    }
    // And is refused on the others with that service's 401.
    for (token, path) in [
        (&graph, XDR_HUNT),
        (&mde, XDR_HUNT),
        (&xdr, MDE_HUNT),
        (&graph, MDE_HUNT),
    ] {
        let (s, v) = send(token, path).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{path}");
        let m = envelope(&v, "Unauthorized");
        assert!(m.contains("audience"), "{m}");
        assert!(v["error"]["target"].is_string());
    }
    for token in [&xdr, &mde] {
        let (s, v) = send(token, GRAPH_HUNT).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        let (code, message) = graph_envelope(&v);
        assert_eq!(code, "InvalidAuthenticationToken");
        assert_eq!(
            message,
            "Access token validation failure. Invalid audience."
        );
    }
    let r = env
        .http
        .get(format!("{}/api/incidents?$top=1", env.base))
        .bearer_auth(&graph)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = env
        .http
        .get(format!("{}{GRAPH_INCIDENTS}?$top=1", env.base))
        .bearer_auth(&xdr)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Sovereign hosts map to the same APIs.
    for scope in [
        "https://graph.microsoft.us/.default",
        "https://dod-graph.microsoft.us/.default",
    ] {
        let t = env.scoped_token(T, C, S, scope).await;
        assert_eq!(send(&t, GRAPH_HUNT).await.0, StatusCode::OK, "{scope}");
    }
    let t = env
        .scoped_token(
            T,
            C,
            S,
            "https://api-gov.securitycenter.microsoft.us/.default",
        )
        .await;
    assert_eq!(send(&t, MDE_HUNT).await.0, StatusCode::OK);
    // A resource no API here serves, or two resources at once: the identity platform's 400.
    let r = env
        .token_request(T, C, S, "https://management.azure.com/.default")
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "invalid_resource");
    assert_eq!(v["error_codes"], json!([500011]));
    let r = env
        .token_request(T, C, S, &format!("{XDR_SCOPE} {GRAPH_SCOPE}"))
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error_codes"], json!([28000]));
}

#[tokio::test]
async fn mde_hunting_body_is_case_sensitive() {
    let env = Env::start(roomy()).await;
    let token = env.token().await;
    let q = "AlertInfo | take 1";
    for body in [json!({"query": q}), json!({"QUERY": q}), json!({})] {
        let (s, v) = json(env.post_json(&token, MDE_HUNT, &body).await).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(
            envelope(&v, "InvalidRequestBody"),
            "Request body is invalid. The body parameters are case-sensitive: send 'Query'."
        );
        assert!(v["error"]["target"].is_string());
    }
    let (s, _) = json(env.post_json(&token, MDE_HUNT, &json!({"Query": q})).await).await;
    assert_eq!(s, StatusCode::OK);
    // Defender XDR and Graph take either casing.
    for path in [XDR_HUNT, GRAPH_HUNT] {
        for body in [json!({"Query": q}), json!({"query": q})] {
            let (s, v) = json(env.post_json(&token, path, &body).await).await;
            assert_eq!(s, StatusCode::OK, "{path} {body}: {v}");
        }
    }
}

#[tokio::test]
async fn graph_timespan_takes_every_documented_form() {
    let env = Env::start(roomy().rows_per_table(2000)).await;
    let token = env.token().await;
    let count = |timespan: &str| {
        let body = json!({"Query": "DeviceProcessEvents | count", "Timespan": timespan});
        let env = &env;
        let token = &token;
        async move {
            let (s, v) = json(env.post_json(token, GRAPH_HUNT, &body).await).await;
            assert_eq!(s, StatusCode::OK, "{v}");
            v["results"][0]["Count"].as_i64().unwrap()
        }
    };
    // The emulator's clock stands at 2026-01-01T00:00:00Z.
    let p3d = count("P3D").await;
    let interval = count("2025-12-29T00:00:00Z/2026-01-01T00:00:00Z").await;
    let duration_end = count("P3D/2026-01-01T00:00:00Z").await;
    let start_only = count("2025-12-29T00:00:00Z").await;
    assert!(p3d > 0);
    assert_eq!(interval, p3d);
    assert_eq!(duration_end, p3d);
    assert_eq!(start_only, p3d, "a single start time runs until now");
    let earlier = count("P3D/2025-12-29T00:00:00Z").await;
    let earlier_interval = count("2025-12-26T00:00:00Z/2025-12-29T00:00:00Z").await;
    assert_eq!(earlier, earlier_interval);
    assert!(count("P30D").await >= p3d);
    let (s, v) = json(
        env.post_json(
            &token,
            GRAPH_HUNT,
            &json!({"Query": "DeviceProcessEvents | count", "Timespan": "last week"}),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(graph_envelope(&v).0, "BadRequest");
}

#[tokio::test]
async fn graph_filters_on_severity_classification_and_determination() {
    let env = Env::start(roomy()).await;
    let token = env.token().await;
    for (field, value) in [
        ("severity", "high"),
        ("classification", "truePositive"),
        ("classification", "unknown"),
        ("determination", "unknown"),
    ] {
        let url = format!("{GRAPH_INCIDENTS}?$top=50&$filter={field}%20eq%20'{value}'");
        let (s, v) = json(env.get(&token, &url).await).await;
        assert_eq!(s, StatusCode::OK, "{url}: {v}");
        let list = v["value"].as_array().unwrap();
        assert!(!list.is_empty(), "{url}");
        assert!(list.iter().all(|i| i[field] == value), "{url}");
        let url = format!("{GRAPH_INCIDENTS}?$top=50&$filter={field}%20ne%20'{value}'");
        let (_, v) = json(env.get(&token, &url).await).await;
        assert!(v["value"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i[field] != value));
    }
    let (s, v) = json(
        env.get(
            &token,
            &format!("{GRAPH_INCIDENTS}?$filter=severity%20gt%20'low'"),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    graph_envelope(&v);
    // Defender XDR still filters on its four fields only.
    for field in ["severity", "classification", "determination"] {
        let (s, v) = json(
            env.get(
                &token,
                &format!("/api/incidents?$filter={field}%20eq%20'High'"),
            )
            .await,
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{field}");
        let m = envelope(&v, "BadRequest");
        assert!(
            m.contains(&format!("Could not find a property named '{field}'")),
            "{m}"
        );
    }
}

/// The id of the `n`th alert of Defender's list.
async fn alert_id(env: &Env, token: &str, n: usize) -> String {
    let (s, v) = json(
        env.get(token, &format!("{MDE_ALERTS}?$top=1&$skip={n}"))
            .await,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["value"][0]["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn mde_alerts_top_over_10000_is_refused() {
    let env = Env::start(roomy()).await;
    let token = env.token().await;
    for top in ["10001", "50000", "99999999999999999999999"] {
        let (s, v) = json(env.get(&token, &format!("{MDE_ALERTS}?$top={top}")).await).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{top}");
        assert_eq!(
            envelope(&v, "ODataError"),
            format!("Invalid OData URI query: The limit of '10000' for Top query has been exceeded. The value from the incoming request is '{top}'.")
        );
        assert!(v["error"]["target"].is_string());
        assert!(v["error"].get("innerError").is_none());
    }
    let (s, _) = json(env.get(&token, &format!("{MDE_ALERTS}?$top=10000")).await).await;
    assert_eq!(s, StatusCode::OK);
    // The other query options' refusals are Defender for Endpoint's ODataError too.
    for q in [
        "$top=-1",
        "$skip=x",
        "$filter=title%20eq%20'x'",
        "$filter=incidentId%20eq%20'12'",
        "$filter=status%20eq%20'Active'",
    ] {
        let (s, v) = json(env.get(&token, &format!("{MDE_ALERTS}?{q}")).await).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{q}");
        envelope(&v, "ODataError");
    }
}

#[tokio::test]
async fn unknown_alerts_are_404_in_each_services_envelope() {
    let env = Env::start(roomy()).await;
    let token = env.token().await;
    let (s, v) = json(env.get(&token, &format!("{MDE_ALERTS}/da000_nope")).await).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(
        envelope(&v, "ResourceNotFound"),
        "Alert da000_nope was not found"
    );
    assert!(v["error"]["target"].is_string());
    let (s, v) = json(
        env.patch(
            &token,
            &format!("{MDE_ALERTS}/da000_nope"),
            &json!({"status": "New"}),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    envelope(&v, "ResourceNotFound");

    let (s, v) = json(env.get(&token, &format!("{GRAPH_ALERTS}/da000_nope")).await).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(
        graph_envelope(&v),
        (
            "NotFound".to_owned(),
            "Alert da000_nope was not found.".to_owned()
        )
    );
    let (s, v) = json(
        env.patch(
            &token,
            &format!("{GRAPH_ALERTS}/da000_nope"),
            &json!({"status": "new"}),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    graph_envelope(&v);
    let (s, v) = json(
        env.post_json(
            &token,
            &format!("{GRAPH_ALERTS}/da000_nope/comments"),
            &json!({"comment": "x"}),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    graph_envelope(&v);
    // An incident id is not an alert id.
    let (s, _) = json(env.get(&token, &format!("{MDE_ALERTS}/1000")).await).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn mde_alert_patch_refuses_unknown_properties_and_wrong_values() {
    let env = Env::start(roomy()).await;
    let token = env.token().await;
    let one = format!("{MDE_ALERTS}/{}", alert_id(&env, &token, 3).await);
    let (_, before) = json(env.get(&token, &one).await).await;
    for (body, detail) in [
        (
            json!({"Status": "Resolved"}),
            "The property 'Status' does not exist or cannot be updated (the body parameters are case-sensitive: status, assignedTo, classification, determination, comment)",
        ),
        (
            json!({"status": "Resolved", "tags": ["x"]}),
            "The property 'tags' does not exist or cannot be updated (the body parameters are case-sensitive: status, assignedTo, classification, determination, comment)",
        ),
        (
            json!({"status": "Active"}),
            "Invalid value 'Active' for status (allowed: New, InProgress, Resolved)",
        ),
        (
            json!({"status": "Resolved", "classification": "Bogus"}),
            "Invalid value 'Bogus' for classification (allowed: Unknown, TruePositive, InformationalExpectedActivity, FalsePositive)",
        ),
        (json!({"status": null}), "`status` may not be null"),
        (json!({"assignedTo": 5}), "`assignedTo` must be a string"),
        (json!({"comment": ["x"]}), "`comment` must be a string"),
    ] {
        let (s, v) = json(env.patch(&token, &one, &body).await).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(
            envelope(&v, "InvalidRequestBody"),
            format!("Request body is incorrect: {detail}"),
            "{body}"
        );
        assert!(v["error"]["target"].is_string());
    }
    // Malformed JSON is an incorrect body too.
    let r = env
        .http
        .patch(format!("{}{one}", env.base))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{\"status\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let (_, v) = json(r).await;
    envelope(&v, "InvalidRequestBody");
    let (_, after) = json(env.get(&token, &one).await).await;
    assert_eq!(before, after, "a refused PATCH changes nothing");
    // Every documented property is taken, in the documented spellings.
    for classification in [
        "TruePositive",
        "informationalExpectedActivity",
        "FALSEPOSITIVE",
        "Unknown",
    ] {
        let (s, v) = json(
            env.patch(&token, &one, &json!({"classification": classification}))
                .await,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{classification}: {v}");
        assert!(v["classification"]
            .as_str()
            .unwrap()
            .eq_ignore_ascii_case(classification));
    }
    for status in ["New", "InProgress", "Resolved"] {
        let (s, v) = json(env.patch(&token, &one, &json!({"status": status})).await).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["status"], status);
    }
}

#[tokio::test]
async fn graph_alert_patch_refuses_properties_the_alert_type_lacks() {
    let env = Env::start(roomy()).await;
    let token = env.token().await;
    let one = format!("{GRAPH_ALERTS}/{}", alert_id(&env, &token, 5).await);
    let (_, before) = json(env.get(&token, &one).await).await;
    for (property, body) in [
        ("comment", json!({"status": "resolved", "comment": "done"})),
        ("tags", json!({"tags": ["x"]})),
        ("customTags", json!({"customTags": ["x"]})),
        ("Status", json!({"Status": "resolved"})),
    ] {
        let (s, v) = json(env.patch(&token, &one, &body).await).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{property}");
        let (code, message) = graph_envelope(&v);
        assert_eq!(code, "BadRequest");
        assert_eq!(
            message,
            format!("The property '{property}' does not exist on type 'microsoft.graph.security.alert'. Make sure to only use property names that are defined by the type or mark the type as open type.")
        );
    }
    for (body, message) in [
        (
            json!({"status": "active"}),
            "Invalid value 'active' for status (allowed: new, inProgress, resolved)",
        ),
        (
            json!({"classification": "bogus"}),
            "Invalid value 'bogus' for classification (allowed: unknown, truePositive, informationalExpectedActivity, falsePositive)",
        ),
        (json!({"customDetails": "x"}), "`customDetails` must be an object"),
    ] {
        let (s, v) = json(env.patch(&token, &one, &body).await).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(graph_envelope(&v), ("BadRequest".to_owned(), message.to_owned()));
    }
    let (_, after) = json(env.get(&token, &one).await).await;
    assert_eq!(before, after, "a refused PATCH changes nothing");
}

#[tokio::test]
async fn alert_routes_check_audiences_and_permissions() {
    use defender_emulator::{
        App, DEFAULT_CLIENT_ID as C, DEFAULT_SECRET as S, DEFAULT_TENANT as T,
    };
    let env = Env::start(
        roomy()
            .app(App::new(
                T,
                "reader",
                "s2",
                &["Alert.Read.All", "SecurityAlert.Read.All"],
            ))
            .app(App::new(
                T,
                "incidents-only",
                "s3",
                &["Incident.ReadWrite.All", "SecurityIncident.ReadWrite.All"],
            )),
    )
    .await;
    let token = env.token().await;
    let id = alert_id(&env, &token, 0).await;
    let mde = env.scoped_token(T, C, S, MDE_SCOPE).await;
    let graph = env.scoped_token(T, C, S, GRAPH_SCOPE).await;
    let xdr = env.scoped_token(T, C, S, XDR_SCOPE).await;
    let send = |token: &str, path: &str| {
        let r = env
            .http
            .get(format!("{}{path}", env.base))
            .bearer_auth(token);
        async move { json(r.send().await.unwrap()).await }
    };
    // A Graph token on Defender's alerts: Defender's 401, naming both Defender tokens.
    let (s, v) = send(&graph, MDE_ALERTS).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(
        envelope(&v, "Unauthorized"),
        format!("The access token's audience is not valid for this API: it was issued for '{GRAPH_SCOPE}'; request a token for '{MDE_SCOPE}' or '{XDR_SCOPE}'.")
    );
    // Defender tokens on Graph's alerts: Graph's 401.
    for t in [&mde, &xdr] {
        let (s, v) = send(t, &format!("{GRAPH_ALERTS}/{id}")).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        assert_eq!(
            graph_envelope(&v),
            (
                "InvalidAuthenticationToken".to_owned(),
                "Access token validation failure. Invalid audience.".to_owned()
            )
        );
    }
    // Defender for Endpoint's token is not one for Defender XDR's incidents.
    let (s, _) = send(&mde, "/api/incidents?$top=1").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // Reading takes a read permission, updating a ReadWrite one.
    let reader = env.token_of(T, "reader", "s2").await;
    for path in [MDE_ALERTS.to_owned(), format!("{GRAPH_ALERTS}/{id}")] {
        let (s, _) = json(env.get(&reader, &path).await).await;
        assert_eq!(s, StatusCode::OK, "{path}");
    }
    let (s, v) = json(
        env.patch(
            &reader,
            &format!("{MDE_ALERTS}/{id}"),
            &json!({"status": "New"}),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(envelope(&v, "Forbidden").contains("Alert.ReadWrite.All"));
    let (s, v) = json(
        env.post_json(
            &reader,
            &format!("{GRAPH_ALERTS}/{id}/comments"),
            &json!({"comment": "x"}),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(graph_envelope(&v).1.contains("SecurityAlert.ReadWrite.All"));
    // Incident permissions are not alert permissions.
    let other = env.token_of(T, "incidents-only", "s3").await;
    for path in [MDE_ALERTS, GRAPH_ALERTS] {
        let (s, _) = json(env.get(&other, path).await).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}");
    }
    assert_eq!(
        env.get(&other, "/api/incidents?$top=1").await.status(),
        StatusCode::OK
    );
}
