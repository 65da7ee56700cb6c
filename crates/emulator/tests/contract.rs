//! The emulator's answers have the shape of the contract fixtures in
//! `crates/core/tests/fixtures/` (issue 13, "Contract fixtures"): every key a fixture has is
//! in the emulator's answer to the same call, with the same JSON type, at every depth.
//! Values are ours on both sides, so only shapes are compared. Keys the emulator adds are
//! allowed and printed, so drift is visible in `--nocapture` output.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;

use common::*;
use defender_emulator::{App, DEFAULT_CLIENT_ID, DEFAULT_SECRET, DEFAULT_TENANT};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Fixtures for calls the emulator does not serve at all.
const NOT_SERVED: &[(&str, &str)] = &[(
    "graph_error_lowercase_innererror.json",
    "Graph's generic error example (an upload range error); nothing the emulator serves answers it",
)];

/// Where the emulator's answer lacks something a fixture has, deliberately or for now:
/// `(fixture, path, reason)`. A difference at `path` (or under it) is printed, not failed;
/// each gap must still show, so a fixed gap fails the test until it is removed from here.
const KNOWN_GAPS: &[(&str, &str, &str)] = &[
    (
        "graph_hunt_capitalised_columns.json",
        "schema[0]",
        "the emulator answers runHuntingQuery with Example 1's lower-case `name`/`type` \
         columns; this later sample's `Name`/`Type` is a variant for the client's decoder",
    ),
    (
        "graph_incidents_list.json",
        "value[0].comments[0]",
        "Graph's incident example shows comments as `createdBy`/`createdTime`; the emulator \
         writes the alertComment type's `createdByDisplayName`/`createdDateTime`, as the \
         comments POST answers them",
    ),
    (
        "graph_incidents_list_expand_alerts.json",
        "value[0].comments[0]",
        "as graph_incidents_list.json: alertComment's property names, not the example's",
    ),
    (
        "graph_incidents_list_expand_alerts.json",
        "value[0].tags",
        "Example 2 shows the incident's tags as `tags`; the emulator writes the incident \
         type's `customTags`, as Example 1 and the PATCH do",
    ),
    (
        "graph_incident_get.json",
        "comments[0]",
        "as graph_incidents_list.json: alertComment's property names, not the example's",
    ),
];

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../core/tests/fixtures")
}

fn fixture(name: &str) -> Value {
    let path = fixtures_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} is not JSON: {e}"))
}

/// How a fixture and the emulator's answer differ in shape.
#[derive(Default)]
struct Diff {
    /// Keys or types the fixture has and the answer lacks: a real difference.
    missing: Vec<String>,
    /// Keys the answer has beyond the fixture: allowed, printed.
    extra: Vec<String>,
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// The key that tells the kinds of a polymorphic array's elements apart.
fn kind_of(v: &Value) -> Option<&str> {
    v.get("@odata.type")
        .or_else(|| v.get("entityType"))
        .and_then(Value::as_str)
}

/// Compares shapes: every fixture key must be in `actual` with the same type (`null` on
/// either side matches any value, but the key must be there); arrays compare their first
/// elements when both are non-empty, and, for arrays of kinds (`@odata.type`,
/// `entityType`), each kind of the fixture with the first element of that kind in
/// `actual`, when `actual` has one.
fn compare(path: &str, want: &Value, got: &Value, diff: &mut Diff) {
    match (want, got) {
        // A documented field may be null on either side: the fixture's null says nothing
        // of the type, and the emulator's is a value the field may take.
        (Value::Null, _) | (_, Value::Null) => {}
        (Value::Object(w), Value::Object(g)) => {
            for (k, wv) in w {
                let p = join(path, k);
                match g.get(k) {
                    Some(gv) => compare(&p, wv, gv, diff),
                    None => diff.missing.push(format!("{p} missing")),
                }
            }
            for k in g.keys().filter(|k| !w.contains_key(*k)) {
                diff.extra.push(join(path, k));
            }
        }
        (Value::Array(w), Value::Array(g)) => {
            if let (Some(w0), Some(g0)) = (w.first(), g.first()) {
                compare(&format!("{path}[0]"), w0, g0, diff);
            }
            let mut seen = BTreeSet::new();
            for we in w.iter().skip(1) {
                let Some(kind) = kind_of(we) else { continue };
                if Some(kind) == w.first().and_then(kind_of) || !seen.insert(kind) {
                    continue;
                }
                if let Some(ge) = g.iter().find(|ge| kind_of(ge) == Some(kind)) {
                    compare(&format!("{path}[{kind}]"), we, ge, diff);
                }
            }
        }
        _ if type_name(want) == type_name(got) => {}
        _ => diff.missing.push(format!(
            "{} is {} in the fixture, {} in the emulator's answer",
            if path.is_empty() { "(root)" } else { path },
            type_name(want),
            type_name(got)
        )),
    }
}

/// Whether the difference `message` is about `path` or something under it.
fn under(message: &str, path: &str) -> bool {
    message
        .strip_prefix(path)
        .is_some_and(|r| r.starts_with(['.', '[', ' ']))
}

/// Compares the emulator's answer with the fixture `name`, prints the keys the emulator
/// adds, and fails naming every path the answer lacks. A gap in [`KNOWN_GAPS`] must still
/// show.
fn check(name: &str, call: &str, got: &Value) {
    let want = fixture(name);
    let mut diff = Diff::default();
    compare("", &want, got, &mut diff);
    let extra: BTreeSet<&String> = diff.extra.iter().collect();
    if extra.is_empty() {
        println!("{name} ({call}): same keys");
    } else {
        println!("{name} ({call}): the emulator adds {extra:?}");
    }
    for (_, gap, reason) in KNOWN_GAPS.iter().filter(|(n, _, _)| *n == name) {
        let (known, rest): (Vec<String>, Vec<String>) = std::mem::take(&mut diff.missing)
            .into_iter()
            .partition(|m| under(m, gap));
        println!("{name}: known gap at {gap} ({reason}): {known:?}");
        assert!(
            !known.is_empty(),
            "{name} ({call}) now matches at {gap}: remove it from KNOWN_GAPS"
        );
        diff.missing = rest;
    }
    assert!(
        diff.missing.is_empty(),
        "{name} ({call}): the emulator's answer differs from the fixture:\n  {}",
        diff.missing.join("\n  ")
    );
}

fn roomy() -> defender_emulator::EmulatorBuilder {
    small().limits(
        "2021,incidents.calls=10000/1m,alerts.calls=10000/1m,hunting.calls=1000/1m,hunting.runtime=none"
            .parse()
            .unwrap(),
    )
}

const XDR_INCIDENTS: &str = "/api/incidents";
const GRAPH_INCIDENTS: &str = "/v1.0/security/incidents";
const MDE_ALERTS: &str = "/api/alerts";
const GRAPH_ALERTS: &str = "/v1.0/security/alerts_v2";
const HUNT_QUERY: &str =
    "DeviceProcessEvents | take 2 | project Timestamp, FileName, InitiatingProcessFileName";

/// An incident whose first alert has devices and entities and that has comments, so the
/// nested shapes get compared; the first incident when none has all of it.
async fn rich_incident(env: &Env, token: &str) -> String {
    let (s, v) = json(env.get(token, &format!("{XDR_INCIDENTS}?$top=100")).await).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let all = v["value"].as_array().expect("value");
    let non_empty = |v: &Value| v.as_array().is_some_and(|a| !a.is_empty());
    let rich = all.iter().find(|i| {
        non_empty(&i["comments"])
            && non_empty(&i["alerts"][0]["devices"])
            && non_empty(&i["alerts"][0]["entities"])
    });
    rich.or(all.first()).expect("an incident")["incidentId"].to_string()
}

#[test]
fn every_fixture_is_compared_or_listed() {
    let compared: BTreeSet<&str> = COMPARED.iter().copied().collect();
    let mut listed = BTreeSet::new();
    for (name, _) in NOT_SERVED {
        assert!(listed.insert(*name), "{name} is listed twice");
        assert!(
            !compared.contains(name),
            "{name} is compared and not served"
        );
    }
    for (name, _, _) in KNOWN_GAPS {
        assert!(
            compared.contains(name),
            "{name} is a known gap but not compared"
        );
    }
    let on_disk: BTreeSet<String> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    for name in &on_disk {
        assert!(
            compared.contains(name.as_str()) || listed.contains(name.as_str()),
            "{name} is neither compared by a test here nor in NOT_SERVED/KNOWN_GAPS"
        );
    }
    for name in compared.iter().chain(&listed) {
        assert!(on_disk.contains(*name), "{name} is not a fixture");
    }
}

/// The fixtures the tests below compare (known gaps included).
const COMPARED: &[&str] = &[
    "xdr_incidents_list.json",
    "xdr_incident_get.json",
    "xdr_incident_update.json",
    "graph_incidents_list.json",
    "graph_incidents_list_expand_alerts.json",
    "graph_incident_get.json",
    "graph_incident_comments_post.json",
    "graph_alerts_v2_list.json",
    "graph_alert_get.json",
    "mde_alerts_list.json",
    "xdr_hunt.json",
    "mde_hunt.json",
    "graph_hunt.json",
    "graph_hunt_capitalised_columns.json",
    "xdr_hunt_error_400_syntax.json",
    "mde_error_400.json",
    "mde_error_404.json",
    "xdr_error_401.json",
    "xdr_error_403.json",
    "xdr_error_429_per_minute.json",
    "xdr_error_429_per_hour.json",
    "xdr_error_429_again_in.json",
    "graph_error_400_top.json",
    "graph_error_400_preempted.json",
    "graph_error_401.json",
    "graph_error_403.json",
    "graph_error_404.json",
    "graph_error_429.json",
];

#[tokio::test]
async fn xdr_incidents_have_the_documented_shape() {
    let env = Env::start(roomy()).await;
    let token = env.token().await;
    let (s, v) = json(env.get(&token, XDR_INCIDENTS).await).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    check("xdr_incidents_list.json", "GET /api/incidents", &v);

    let id = rich_incident(&env, &token).await;
    let one = format!("{XDR_INCIDENTS}/{id}");
    let (s, v) = json(env.get(&token, &one).await).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    check("xdr_incident_get.json", &format!("GET {one}"), &v);

    let body = json!({
        "status": "Resolved",
        "assignedTo": "secop2@contoso.com",
        "classification": "TruePositive",
        "determination": "Malware",
        "tags": ["Yossi's playground", "Don't mess with the Zohan"],
        "comment": "pen testing",
    });
    let (s, v) = json(env.patch(&token, &one, &body).await).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    check("xdr_incident_update.json", &format!("PATCH {one}"), &v);
}

#[tokio::test]
async fn graph_incidents_have_the_documented_shape() {
    let env = Env::start(roomy()).await;
    let token = env.token().await;
    let (s, v) = json(env.get(&token, GRAPH_INCIDENTS).await).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    check("graph_incidents_list.json", "GET incidents", &v);

    let path = format!("{GRAPH_INCIDENTS}?$expand=alerts");
    let (s, v) = json(env.get(&token, &path).await).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    check(
        "graph_incidents_list_expand_alerts.json",
        "GET incidents?$expand=alerts",
        &v,
    );

    let id = rich_incident(&env, &token).await;
    let one = format!("{GRAPH_INCIDENTS}/{id}");
    let (s, v) = json(env.get(&token, &one).await).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    check("graph_incident_get.json", &format!("GET {one}"), &v);

    let body = json!({
        "@odata.type": "microsoft.graph.security.alertComment",
        "comment": "Demo for docs",
    });
    let (s, v) = json(
        env.post_json(&token, &format!("{one}/comments"), &body)
            .await,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    check(
        "graph_incident_comments_post.json",
        &format!("POST {one}/comments"),
        &v,
    );
}

#[tokio::test]
async fn alerts_have_the_documented_shape() {
    let env = Env::start(roomy()).await;
    let token = env.token().await;
    // A comment first, so the comments' shape gets compared too.
    let (_, v) = json(env.get(&token, &format!("{MDE_ALERTS}?$top=1")).await).await;
    let id = v["value"][0]["id"].as_str().expect("an alert").to_owned();
    let body = json!({"comment": "expected? checking with DBA team"});
    let (s, v) = json(
        env.patch(&token, &format!("{MDE_ALERTS}/{id}"), &body)
            .await,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // DD get-alerts.md, Example 2.
    let path = format!("{MDE_ALERTS}?$top=10&$expand=evidence");
    let (s, v) = json(env.get(&token, &path).await).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["value"][0]["id"], id.as_str());
    check("mde_alerts_list.json", &format!("GET {path}"), &v);

    let (s, v) = json(env.get(&token, GRAPH_ALERTS).await).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    check(
        "graph_alerts_v2_list.json",
        &format!("GET {GRAPH_ALERTS}"),
        &v,
    );

    let one = format!("{GRAPH_ALERTS}/{id}");
    let (s, v) = json(env.get(&token, &one).await).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    check("graph_alert_get.json", &format!("GET {one}"), &v);

    // The comments fixture is the alert page's example (GD security-alert-post-comments.md).
    let body = json!({
        "@odata.type": "microsoft.graph.security.alertComment",
        "comment": "Demo for docs",
    });
    let (s, v) = json(
        env.post_json(&token, &format!("{one}/comments"), &body)
            .await,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    check(
        "graph_incident_comments_post.json",
        &format!("POST {one}/comments"),
        &v,
    );
}

#[tokio::test]
async fn hunting_answers_have_the_documented_shape() {
    let env = Env::start(roomy()).await;
    let token = env.token().await;
    for (name, path, query) in [
        ("xdr_hunt.json", XDR_HUNT, HUNT_QUERY.to_owned()),
        ("mde_hunt.json", MDE_HUNT, format!("{HUNT_QUERY}, DeviceId")),
        ("graph_hunt.json", GRAPH_HUNT, HUNT_QUERY.to_owned()),
        (
            "graph_hunt_capitalised_columns.json",
            GRAPH_HUNT,
            HUNT_QUERY.to_owned(),
        ),
    ] {
        let (s, v) = json(env.hunt(&token, path, &query).await).await;
        assert_eq!(s, StatusCode::OK, "{path}: {v}");
        check(name, &format!("POST {path}"), &v);
    }

    // A KQL syntax error, and a query over the limits.
    let (s, v) = json(
        env.hunt(&token, XDR_HUNT, "DeviceProcessEvents | | take")
            .await,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    check("xdr_hunt_error_400_syntax.json", "POST a bad query", &v);
    let heavy = format!("AlertInfo{}", " | take 10".repeat(5_000));
    let (s, v) = json(env.hunt(&token, GRAPH_HUNT, &heavy).await).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    check("graph_error_400_preempted.json", "POST a heavy query", &v);

    // MDE's body is case-sensitive: `query` is an incorrect body.
    let (s, v) = json(
        env.post_json(&token, MDE_HUNT, &json!({"query": "AlertInfo | take 1"}))
            .await,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    check("mde_error_400.json", "POST {query} to MDE", &v);
}

#[tokio::test]
async fn refusals_have_the_documented_shape() {
    let env = Env::start(roomy()).await;
    let token = env.token().await;

    // 401: no token, and a token that is not one.
    for (name, method, path) in [
        ("xdr_error_401.json", reqwest::Method::GET, XDR_INCIDENTS),
        ("xdr_error_401.json", reqwest::Method::POST, MDE_HUNT),
        (
            "graph_error_401.json",
            reqwest::Method::GET,
            GRAPH_INCIDENTS,
        ),
    ] {
        for bearer in [None, Some("not-a-token")] {
            let mut req = env
                .http
                .request(method.clone(), format!("{}{path}", env.base));
            if let Some(b) = bearer {
                req = req.bearer_auth(b);
            }
            let (s, v) = json(req.send().await.unwrap()).await;
            assert_eq!(s, StatusCode::UNAUTHORIZED, "{path}: {v}");
            check(name, &format!("{method} {path} with token {bearer:?}"), &v);
        }
    }

    // 404: an unknown incident, an unknown MDE resource.
    for (name, path) in [
        ("graph_error_404.json", format!("{GRAPH_INCIDENTS}/99999")),
        ("mde_error_404.json", "/api/machines/4242".to_owned()),
        ("mde_error_404.json", format!("{XDR_INCIDENTS}/99999")),
    ] {
        let (s, v) = json(env.get(&token, &path).await).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}: {v}");
        check(name, &format!("GET {path}"), &v);
    }

    // Graph's page size.
    let path = format!("{GRAPH_INCIDENTS}?$top=100");
    let (s, v) = json(env.get(&token, &path).await).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    check("graph_error_400_top.json", &format!("GET {path}"), &v);
}

#[tokio::test]
async fn forbidden_has_the_documented_shape() {
    let env = Env::start(roomy().app(App::new(
        DEFAULT_TENANT,
        "reader",
        "s2",
        &["Incident.Read.All", "SecurityIncident.Read.All"],
    )))
    .await;
    let reader = env.token_of(DEFAULT_TENANT, "reader", "s2").await;
    let body = json!({"status": "Resolved"});
    for (name, path) in [
        ("xdr_error_403.json", format!("{XDR_INCIDENTS}/1001")),
        ("graph_error_403.json", format!("{GRAPH_INCIDENTS}/1001")),
    ] {
        let (s, v) = json(env.patch(&reader, &path, &body).await).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}: {v}");
        check(name, &format!("PATCH {path} without ReadWrite"), &v);
    }
}

#[tokio::test]
async fn throttling_has_the_documented_shape() {
    for (name, limits, again_in) in [
        (
            "xdr_error_429_per_minute.json",
            "2021,incidents.calls=1/1m",
            false,
        ),
        (
            "xdr_error_429_per_hour.json",
            "2021,incidents.calls=1/1h",
            false,
        ),
        (
            "xdr_error_429_again_in.json",
            "2021,incidents.calls=1/1m",
            true,
        ),
    ] {
        let env = Env::start(
            small()
                .limits(limits.parse().unwrap())
                .again_in_sentence(again_in),
        )
        .await;
        let token = env.token().await;
        let path = format!("{XDR_INCIDENTS}?$top=1");
        assert_eq!(env.get(&token, &path).await.status(), StatusCode::OK);
        let (s, v) = json(env.get(&token, &path).await).await;
        assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{name}: {v}");
        check(name, &format!("GET {path} over {limits}"), &v);
    }

    let env = Env::start(small().limits("2021,incidents.calls=1/1m".parse().unwrap())).await;
    let token = env
        .scoped_token(
            DEFAULT_TENANT,
            DEFAULT_CLIENT_ID,
            DEFAULT_SECRET,
            GRAPH_SCOPE,
        )
        .await;
    let path = format!("{GRAPH_INCIDENTS}?$top=1");
    assert_eq!(env.get(&token, &path).await.status(), StatusCode::OK);
    let (s, v) = json(env.get(&token, &path).await).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    check("graph_error_429.json", &format!("GET {path} over 1/1m"), &v);
}
