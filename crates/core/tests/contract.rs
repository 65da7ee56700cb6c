//! Contract fixtures: each file in `tests/fixtures/` follows a documented example
//! response (`tests/fixtures/README.md` names the page each one follows). Core must
//! decode every one into its typed model with nothing lost.
//!
//! "Nothing lost" is checked exactly: the model written back must equal the fixture.
//! The incident, alert and comment models give back the very body they read (Graph's
//! names, numeric ids, absent fields absent); [`canonical`] applies the two renamings
//! left on purpose: a hunting response is written with Defender's capitalised names,
//! an error envelope with `innerError` however the body spelt it.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use defender_core::hunting::HuntResponse;
use defender_core::incidents::{Alert, Comment, Incident, IncidentPage};
use defender_core::limits::CallLimit;
use defender_core::stream::{DecodeEvent, RowDecoder};
use defender_core::throttle::Throttle;
use defender_core::ApiError;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn json_of(name: &str) -> Value {
    serde_json::from_slice(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// What a model reads a whole fixture as.
#[derive(Clone, Copy)]
enum Shape {
    IncidentPage,
    Incident,
    AlertPage,
    Alert,
    CommentPage,
    Hunt,
    Error,
}

/// A collection of any model: `{"value": [...], "@odata.nextLink"?, ...}`. Core has
/// typed pages only for incidents; alerts and comments are read through their item
/// models (`Alert`, `Comment`).
#[derive(Serialize, Deserialize)]
struct Page<T> {
    value: Vec<T>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

/// Every fixture, and what it is read as.
const FIXTURES: &[(&str, Shape)] = &[
    ("xdr_incidents_list.json", Shape::IncidentPage),
    ("xdr_incident_get.json", Shape::Incident),
    ("xdr_incident_update.json", Shape::Incident),
    ("graph_incidents_list.json", Shape::IncidentPage),
    (
        "graph_incidents_list_expand_alerts.json",
        Shape::IncidentPage,
    ),
    ("graph_incident_get.json", Shape::Incident),
    ("graph_incident_comments_post.json", Shape::CommentPage),
    ("graph_alerts_v2_list.json", Shape::AlertPage),
    ("graph_alert_get.json", Shape::Alert),
    ("mde_alerts_list.json", Shape::AlertPage),
    ("xdr_hunt.json", Shape::Hunt),
    ("mde_hunt.json", Shape::Hunt),
    ("graph_hunt.json", Shape::Hunt),
    ("graph_hunt_capitalised_columns.json", Shape::Hunt),
    ("xdr_hunt_error_400_syntax.json", Shape::Error),
    ("mde_error_400.json", Shape::Error),
    ("mde_error_404.json", Shape::Error),
    ("xdr_error_401.json", Shape::Error),
    ("xdr_error_403.json", Shape::Error),
    ("xdr_error_429_per_minute.json", Shape::Error),
    ("xdr_error_429_per_hour.json", Shape::Error),
    ("xdr_error_429_again_in.json", Shape::Error),
    ("graph_error_400_top.json", Shape::Error),
    ("graph_error_400_preempted.json", Shape::Error),
    ("graph_error_401.json", Shape::Error),
    ("graph_error_403.json", Shape::Error),
    ("graph_error_404.json", Shape::Error),
    ("graph_error_429.json", Shape::Error),
    ("graph_error_lowercase_innererror.json", Shape::Error),
];

fn through<T: DeserializeOwned + Serialize>(name: &str) -> Value {
    let model: T = serde_json::from_slice(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    serde_json::to_value(&model).unwrap()
}

/// The fixture read as its model and written back.
fn written_back(name: &str, shape: Shape) -> Value {
    match shape {
        Shape::IncidentPage => through::<IncidentPage>(name),
        Shape::Incident => through::<Incident>(name),
        Shape::AlertPage => through::<Page<Alert>>(name),
        Shape::Alert => through::<Alert>(name),
        Shape::CommentPage => through::<Page<Comment>>(name),
        Shape::Hunt => {
            let r = HuntResponse::from_slice(&fixture(name)).unwrap();
            serde_json::to_value(&r).unwrap()
        }
        Shape::Error => {
            let e = ApiError::from_body(&fixture(name))
                .unwrap_or_else(|| panic!("{name} is not an error envelope"));
            serde_json::from_slice(&e.to_body()).unwrap()
        }
    }
}

/// Renames `from` to `to` in `m`, when present.
fn rename(m: &mut Map<String, Value>, from: &str, to: &str) {
    if let Some(v) = m.remove(from) {
        m.insert(to.to_owned(), v);
    }
}

fn each(v: Option<&mut Value>, f: fn(&mut Map<String, Value>)) {
    if let Some(Value::Array(items)) = v {
        for item in items {
            if let Value::Object(m) = item {
                f(m);
            }
        }
    }
}

// Left alone: `HuntResponse` writes Defender's `Schema`/`Results` and
// `Name`/`Type` whatever the body used.
fn hunt(m: &mut Map<String, Value>) {
    rename(m, "schema", "Schema");
    rename(m, "results", "Results");
    each(m.get_mut("Schema"), |c| {
        rename(c, "name", "Name");
        rename(c, "type", "Type");
    });
}

fn error(m: &mut Map<String, Value>) {
    if let Some(Value::Object(e)) = m.get_mut("error") {
        rename(e, "innererror", "innerError");
    }
}

/// The fixture as the model writes it back: only the deliberate renamings applied.
fn canonical(v: &Value, shape: Shape) -> Value {
    let mut v = v.clone();
    let Value::Object(m) = &mut v else {
        panic!("a fixture is an object")
    };
    match shape {
        // The incident models remember the body's names and types (`incidents::Wire`).
        Shape::IncidentPage
        | Shape::Incident
        | Shape::AlertPage
        | Shape::Alert
        | Shape::CommentPage => {}
        Shape::Hunt => hunt(m),
        Shape::Error => error(m),
    }
    v
}

/// Every difference between two JSON values, by path.
fn diff(path: &str, want: &Value, got: &Value, out: &mut Vec<String>) {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (k, wv) in w {
                match g.get(k) {
                    Some(gv) => diff(&format!("{path}/{k}"), wv, gv, out),
                    None => out.push(format!("{path}/{k}: lost")),
                }
            }
            for k in g.keys().filter(|k| !w.contains_key(*k)) {
                out.push(format!("{path}/{k}: added"));
            }
        }
        (Value::Array(w), Value::Array(g)) if w.len() == g.len() => {
            for (i, (wv, gv)) in w.iter().zip(g).enumerate() {
                diff(&format!("{path}/{i}"), wv, gv, out);
            }
        }
        _ if want == got => {}
        _ => out.push(format!("{path}: {want} became {got}")),
    }
}

#[test]
fn every_fixture_decodes_with_nothing_lost() {
    let mut failures = Vec::new();
    for (name, shape) in FIXTURES {
        let want = canonical(&json_of(name), *shape);
        let got = written_back(name, *shape);
        let mut out = Vec::new();
        diff("", &want, &got, &mut out);
        if !out.is_empty() {
            failures.push(format!("{name}:\n  {}", out.join("\n  ")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_fixture_file_is_listed() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".json") {
            assert!(
                FIXTURES.iter().any(|(f, _)| *f == name),
                "{name} is not tested"
            );
            assert!(
                readme.contains(&format!("`{name}`")),
                "{name} has no source in README.md"
            );
        }
    }
}

#[test]
fn typed_fields_are_read_on_every_surface() {
    let xdr: IncidentPage = serde_json::from_slice(&fixture("xdr_incidents_list.json")).unwrap();
    let graph: IncidentPage =
        serde_json::from_slice(&fixture("graph_incidents_list_expand_alerts.json")).unwrap();
    let x = &xdr.value[1];
    let g = &graph.value[0];
    assert_eq!(x.incident_id.as_ref().unwrap().0, "7302");
    assert_eq!(g.incident_id.as_ref().unwrap().0, "41807");
    for i in [x, g] {
        assert!(i.incident_name.is_some() && i.created_time.is_some());
        assert!(i.last_update_time.is_some() && i.status.is_some());
        assert_eq!(i.alerts.len(), 1);
        let a = &i.alerts[0];
        assert!(a.alert_id.is_some() && a.creation_time.is_some() && a.service_source.is_some());
    }
    assert_eq!(
        x.alerts[0].devices[0].device_id.as_deref(),
        Some("0d3fcce0000000000000000000000000000000001")
    );
    assert_eq!(g.tags, ["Finance"]);
    assert_eq!(g.alerts[0].extra["evidence"].as_array().unwrap().len(), 4);
    assert_eq!(g.alerts[0].mitre_techniques, ["T1059.001"]);

    let get: Incident = serde_json::from_slice(&fixture("graph_incident_get.json")).unwrap();
    assert_eq!(get.tags, ["Finance"]);
    assert_eq!(get.extra["systemTags"], json!(["Defender Experts"]));

    let mde: Page<Alert> = serde_json::from_slice(&fixture("mde_alerts_list.json")).unwrap();
    assert_eq!(
        mde.value[0].creation_time.as_deref(),
        Some("2026-10-05T14:00:01.1000000Z")
    );
    let comments: Page<Comment> =
        serde_json::from_slice(&fixture("graph_incident_comments_post.json")).unwrap();
    assert_eq!(comments.value.len(), 2);
    assert!(comments.value.iter().all(|c| c.created_time.is_some()));
}

#[test]
fn the_streaming_decoder_reads_every_hunting_fixture_as_the_whole_body_decoder() {
    for name in [
        "xdr_hunt.json",
        "mde_hunt.json",
        "graph_hunt.json",
        "graph_hunt_capitalised_columns.json",
    ] {
        let body = fixture(name);
        let whole = HuntResponse::from_slice(&body).unwrap();
        for chunk in [1, 7, body.len()] {
            let mut dec = RowDecoder::new();
            let (mut schema, mut rows, mut stats) = (None, Vec::new(), None);
            for part in body.chunks(chunk) {
                dec.feed(part);
                while let Some(event) = dec.poll().unwrap() {
                    match event {
                        DecodeEvent::Schema(s) => schema = Some(s),
                        DecodeEvent::Row(r) => rows.push(r),
                        DecodeEvent::Stats(s) => stats = Some(s),
                    }
                }
            }
            dec.finish().unwrap();
            assert_eq!(schema.as_ref(), Some(&whole.schema), "{name}");
            assert_eq!(rows, whole.results, "{name}");
            assert_eq!(stats, whole.stats, "{name}");
            assert_eq!(dec.extra(), &whole.extra, "{name}");
        }
    }
    let xdr = HuntResponse::from_slice(&fixture("xdr_hunt.json")).unwrap();
    let stats = xdr.stats.unwrap();
    assert_eq!(stats.execution_time, Some(1.284003));
    assert!(stats.extra.contains_key("resource_usage"));
    assert!(stats.extra.contains_key("dataset_statistics"));
    assert!(HuntResponse::from_slice(&fixture("mde_hunt.json"))
        .unwrap()
        .stats
        .is_none());
}

#[test]
fn error_fixtures_keep_what_a_support_ticket_needs() {
    let defender = ApiError::from_body(&fixture("mde_error_404.json")).unwrap();
    assert_eq!(defender.code, "ResourceNotFound");
    assert!(defender.target.is_some());
    let graph = ApiError::from_body(&fixture("graph_error_401.json")).unwrap();
    let inner = graph.details.inner_error.as_ref().unwrap();
    assert!(inner.date.is_some() && inner.client_request_id.is_some());
    assert!(graph.to_string().contains(&format!(
        "(request id {})",
        inner.request_id.as_deref().unwrap()
    )));
    let lower = ApiError::from_body(&fixture("graph_error_lowercase_innererror.json")).unwrap();
    assert!(lower.request_id().is_some());
}

#[test]
fn the_documented_429_bodies_parse() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let headers = http::HeaderMap::new();
    let parse = |name: &str| Throttle::parse(&headers, &fixture(name), now);

    let minute = parse("xdr_error_429_per_minute.json");
    assert_eq!(
        minute.limit,
        Some(CallLimit {
            max: 45,
            per: Duration::from_secs(60)
        })
    );
    let hour = parse("xdr_error_429_per_hour.json");
    assert_eq!(
        hour.limit,
        Some(CallLimit {
            max: 1500,
            per: Duration::from_secs(3600)
        })
    );
    let again = parse("xdr_error_429_again_in.json");
    assert_eq!(
        again.limit,
        Some(CallLimit {
            max: 30,
            per: Duration::from_secs(60)
        })
    );
    assert_eq!(again.retry_after, Some(Duration::from_secs(8)));
    for t in [&minute, &hour, &again] {
        assert_eq!(t.error.as_ref().unwrap().code, "429");
        assert!(t.error.as_ref().unwrap().target.is_some());
    }

    let mut headers = http::HeaderMap::new();
    headers.insert("retry-after", "12".parse().unwrap());
    let graph = Throttle::parse(&headers, &fixture("graph_error_429.json"), now);
    assert_eq!(graph.retry_after, Some(Duration::from_secs(12)));
    assert_eq!(graph.message(), "Please retry again later.");
    assert!(graph.error.unwrap().details.inner_error.is_some());
}
